/**
 * The storage client stub lives with its role (roles/storage/client.ts); this re-export keeps the
 * client folder's own imports short.
 * @module
 */
export * from "../roles/storage/client.ts";
