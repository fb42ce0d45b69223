/**
 * Everything a worker needs of the storage tier, behind one small interface: fetch a file into
 * its cache (the FUSE mount's lazy fetch, program files) and store a chunk's outputs. The worker
 * makes its one `WorkerStorage` in `openWorkerStorage` and uses nothing else of storage, so a
 * client of several storage nodes (replicas) replaces the single-node `StorageClient` here alone.
 * @module
 */
import type { Uuid } from "../../wire/mod.ts";
import { type PutOptions, type ReadCap, StorageClient } from "../storage/client.ts";

/** What a worker does with storage (the methods of `StorageClient` it uses). */
export interface WorkerStorage {
  /** Streams file `id` to `path` (SHA-256 verified against the id, fsync'd, renamed into place
   * only then), with the read capability of a chunk that reads it; returns its length. */
  getToFile(id: Uuid, path: string, opts?: ReadCap): Promise<number>;
  /** Stores bytes held in memory (as `opts.owner`'s file); resolves once they are durable. */
  putBytes(data: Uint8Array, opts?: PutOptions): Promise<{ id: Uint8Array; size: number }>;
  /** Stores the file at `path` (as `opts.owner`'s file); resolves once it is durable. */
  putFile(path: string, opts?: PutOptions): Promise<{ id: Uint8Array; size: number }>;
  /** Closes the connections. */
  close(): Promise<void>;
}

/** The worker's storage: `endpoint` is its `--storage`; `node` the worker's node id. */
export function openWorkerStorage(endpoint: string, node: Uuid): WorkerStorage {
  return new StorageClient(endpoint, node);
}
