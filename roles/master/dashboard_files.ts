/**
 * The bytes behind the dashboard's chunk links (dashboard.ts serves them): a stored file
 * streamed from the storage tier, and what a running chunk's worker has of its log.
 *
 * Both are streamed, never held whole: a file in pieces of the tier client's chunk size (the
 * dashboard's own ReplicatedStorage, small chunks and window), each handed on once the HTTP
 * side asked for more; a log in `chunk_log` pieces of at most 64 KiB. The master reads a file
 * with a read capability it mints for its own key (it holds the cluster secret, like the
 * balancer that mints them for workers: storage lets a master read only so), and a log as a
 * master key, which the worker's log server lets read any chunk's log.
 * @module
 */
import { readCapability } from "../../lib/capability.ts";
import type { Clock } from "../../lib/clock.ts";
import { joinNamedEndpoint } from "../../lib/named_endpoint.ts";
import { RpcError } from "../../lib/rpc.ts";
import type { Dial } from "../../lib/transport.ts";
import type { ReplicatedStorage } from "../storage/replicated_client.ts";
import {
  ErrorCode,
  MessageType,
  type NodeEntry,
  NodeRole,
  type Uuid,
  uuidToHex,
} from "../../wire/mod.ts";

/** How long a capability the master mints for one of its reads is good, ms. */
const CAP_LIFETIME_MS = 10 * 60_000;
/** How long one `chunk_log_request` may take, ms. */
const LOG_REQUEST_MS = 10_000;

/** Options of {@link ChunkFiles}. */
export interface ChunkFilesOptions {
  node: Uint8Array;
  /** The dashboard's storage tier client. */
  storage: ReplicatedStorage;
  /** This master's cluster secret and Z85 public key (undefined: insecure, no capability). */
  secret?: { clusterSecret: Uint8Array; publicKey: string };
  /** The cluster's nodes (to find a worker's log endpoint). */
  nodes: () => Promise<NodeEntry[]>;
  dial: Dial;
  clock: Clock;
}

/** Streams a chunk's files and logs for the dashboard; see module doc. */
export class ChunkFiles {
  #o: ChunkFilesOptions;

  constructor(o: ChunkFilesOptions) {
    this.#o = o;
  }

  /**
   * Stored file `id` of `size` bytes (as the job table has it), streamed from storage. The
   * stream errors (the HTTP response is cut short of its Content-Length) if the tier fails, the
   * length differs or the whole file does not verify.
   */
  file(id: Uuid, size: number): ReadableStream<Uint8Array> {
    const cap = this.#o.secret
      ? (() => {
        const expiry = this.#o.clock.now() + CAP_LIFETIME_MS;
        return {
          cap: readCapability(this.#o.secret.clusterSecret, this.#o.secret.publicKey, id, expiry),
          capExpiryMs: expiry,
        };
      })()
      : {};
    return pushStream(async (push) => {
      await this.#o.storage.getToSink(
        id,
        (len) => {
          if (len !== size) throw new Error(`file ${uuidToHex(id)} is ${len} bytes, not ${size}`);
        },
        (_off, data) => push(data.slice()),
        cap,
      );
    });
  }

  /**
   * What worker `worker` has now of a running chunk's log (`stream` 1 stdout, 2 stderr), from
   * its start to the length it had at the first read; null when the worker is not listed or
   * does not run the chunk (any more).
   */
  async runningLog(
    worker: Uuid,
    job: Uuid,
    chunkIndex: number,
    stream: 1 | 2,
  ): Promise<ReadableStream<Uint8Array> | null> {
    const hex = uuidToHex(worker);
    const n = (await this.#o.nodes()).find((e) =>
      e.role === NodeRole.Worker && uuidToHex(e.id) === hex && e.endpoint !== ""
    );
    if (!n) return null;
    // The entry's name is the worker's key name: CURVE then expects exactly that key.
    const ch = this.#o.dial(joinNamedEndpoint(n.name || undefined, n.endpoint), {
      node: this.#o.node,
      serverRole: "worker",
      timeoutMs: LOG_REQUEST_MS,
    });
    const read = async (offset: number) => {
      const r = await ch.request({
        type: MessageType.ChunkLogRequest,
        node: this.#o.node,
        job,
        chunkIndex,
        stream,
        offset,
        maxLength: 0,
      });
      if (r.type !== MessageType.ChunkLog) throw new Error(`unexpected reply type ${r.type}`);
      return r;
    };
    let first;
    try {
      first = await read(0);
    } catch (e) {
      await ch.close();
      if (e instanceof RpcError && e.code === ErrorCode.NotFound) return null;
      throw e;
    }
    const total = first.totalLength;
    return pushStream(async (push) => {
      try {
        let offset = first.data.length;
        await push(first.data.slice());
        while (offset < total) {
          const r = await read(offset);
          // A new attempt (a retry) writes a new log: what was read belongs to the old one.
          if (r.attempt !== first.attempt || r.data.length === 0) break;
          const piece = r.data.subarray(0, Math.min(r.data.length, total - offset));
          offset += piece.length;
          await push(piece.slice());
        }
      } catch (e) {
        // The chunk ended (its log went) between two reads: what was read is what there is.
        if (!(e instanceof RpcError && e.code === ErrorCode.NotFound)) throw e;
      } finally {
        await ch.close();
      }
    });
  }
}

/**
 * A stream fed by `run`'s `push` calls: each push waits until the reader wants more, so at most
 * one piece waits in the stream; cancelling the stream makes the next push throw, which ends
 * `run`; an error of `run` errors the stream.
 */
export function pushStream(
  run: (push: (data: Uint8Array) => Promise<void>) => Promise<void>,
): ReadableStream<Uint8Array> {
  let wake: (() => void) | null = null;
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    start(ctrl) {
      const push = async (data: Uint8Array) => {
        if (cancelled) throw new Error("the reader went away");
        if (data.length > 0) ctrl.enqueue(data);
        while (!cancelled && (ctrl.desiredSize ?? 0) <= 0) {
          await new Promise<void>((r) => wake = r);
        }
        if (cancelled) throw new Error("the reader went away");
      };
      run(push).then(() => {
        if (!cancelled) ctrl.close();
      }, (e) => {
        if (!cancelled) ctrl.error(e);
      });
    },
    pull() {
      wake?.();
      wake = null;
    },
    cancel() {
      cancelled = true;
      wake?.();
      wake = null;
    },
  }, { highWaterMark: 1 });
}
