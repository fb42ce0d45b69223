/**
 * The masters' client stub lives with its role (roles/master/client.ts); this re-export keeps the
 * client folder's own imports short.
 * @module
 */
export * from "../roles/master/client.ts";
