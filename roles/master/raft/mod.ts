/**
 * Public entry point of the dsys Raft library: the pure core ({@link RawNode}), its types and
 * errors. Storage (`storage.ts`) and the message codec (`codec.ts`) are separate modules so the
 * core stays free of I/O.
 */
export * from "./types.ts";
export * from "./raft.ts";
export { RaftLog } from "./log.ts";
