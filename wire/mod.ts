/**
 * dsys binary wire protocol (docs/wire.md): message types, `encode`/`decode`, UUID helpers.
 * @module
 */

export * from "./errors.ts";
export * from "./uuid.ts";
export * from "./messages.ts";
export { decode, encode, errorReply, fixedFieldValues, peekType, wireErrorReply } from "./codec.ts";
