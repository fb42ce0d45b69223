/**
 * Everything a worker needs of the storage tier, behind one small interface: fetch a file into
 * its cache (the FUSE mount's lazy fetch, program files) and store a chunk's outputs. The worker
 * makes its one `WorkerStorage` in `openWorkerStorage` and uses nothing else of storage: the
 * storage tier's client (`ReplicatedStorage`: reads fail over between replicas, outputs go to R
 * nodes), with the membership from the masters.
 * @module
 */
import type { Uuid } from "../../wire/mod.ts";
import type { PutOptions, ReadCap } from "../storage/client.ts";
import { ReplicatedStorage } from "../storage/replicated_client.ts";
import { MasterMembership } from "../storage/membership.ts";

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

/**
 * The worker's storage: the storage nodes the masters list (`masters`: its `--masters`), or, while
 * they list none, `seeds` (its `--storage`, `,`-separated; may be ""); `node` is its node id.
 */
export function openWorkerStorage(seeds: string, masters: string[], node: Uuid): WorkerStorage {
  return new ReplicatedStorage(
    new MasterMembership(masters, node, { seeds: seeds.split(",").filter((e) => e) }),
    node,
    // An output waits for R storage nodes this long (one restarting) before the chunk fails.
    { putDeadlineMs: 120_000 },
  );
}
