/**
 * Serves the logs of a worker's running chunks (`chunk_log_request`) on a ROUTER of its own, so
 * `dsys logs -f` reads a chunk's stdout and stderr from the worker that runs it: log bytes go
 * worker -> client, never through a balancer or a master.
 *
 * What is served is the chunk's own stdout and stderr files, as the program writes them (on the
 * chunk's tmpfs when sandboxed): bounded by the chunk's disk limit, gone with the chunk. Only the
 * job's owner (or an admin, or a master for its dashboard) may read them; rpc has already checked
 * that the sender is a client or master key. A chunk that ended is not here any more: its stdout
 * is an output on storage and its stderr tail in the masters' record (`dsys logs` reads those).
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import { RequestError, RpcServer } from "../../lib/rpc.ts";
import type { Identity } from "../../lib/security.ts";
import { type ChunkLog, ErrorCode, type Message, MessageType, uuidToHex } from "../../wire/mod.ts";

/** Default and largest read, bytes. */
export const MAX_LOG_READ = 64 * 1024;

/** A running chunk as the log server sees it. */
export interface LoggedChunk {
  /** Keyring name of the job's owner ("" insecure). */
  owner: string;
  attempt: number;
  /** Paths of its stdout and stderr files, null until the program started. */
  stdout: string | null;
  stderr: string | null;
}

/** Options of a ChunkLogServer. */
export interface ChunkLogServerOptions {
  node: Uint8Array;
  log: Logger;
  /** The running chunk `chunkIndex` of `job`, if it runs here. */
  lookup: (job: Uint8Array, chunkIndex: number) => LoggedChunk | null;
}

/** The worker's log ROUTER; see module doc. */
export class ChunkLogServer {
  #o: ChunkLogServerOptions;
  #server: RpcServer;

  constructor(o: ChunkLogServerOptions) {
    this.#o = o;
    this.#server = new RpcServer({
      node: o.node,
      log: o.log,
      handler: (m, _peer, from) => this.#handle(m, from),
    });
  }

  /** Binds `endpoint` (port 0 = any) and returns the bound one. */
  bind(endpoint: string): string {
    return this.#server.bind(endpoint);
  }

  async #handle(m: Message, from: Identity | null): Promise<Message> {
    if (m.type !== MessageType.ChunkLogRequest) {
      throw new RequestError(
        ErrorCode.WrongRole,
        `a worker serves chunk logs only, not type ${m.type}`,
      );
    }
    const what = `chunk ${m.chunkIndex} of job ${uuidToHex(m.job)}`;
    const c = this.#o.lookup(m.job, m.chunkIndex);
    if (!c) throw new RequestError(ErrorCode.NotFound, `${what} does not run on this worker`);
    // A master (its dashboard's log links) is trusted with every job, like an admin.
    if (from !== null && from.role !== "master" && !from.admin && from.name !== c.owner) {
      throw new RequestError(ErrorCode.Forbidden, `${what} is not yours`);
    }
    const path = m.stream === 2 ? c.stderr : c.stdout;
    const want = Math.min(m.maxLength || MAX_LOG_READ, MAX_LOG_READ);
    let data = new Uint8Array(0);
    let total = 0;
    if (path) {
      try {
        using f = await Deno.open(path, { read: true });
        total = (await f.stat()).size;
        if (m.offset < total) {
          await f.seek(m.offset, Deno.SeekMode.Start);
          const buf = new Uint8Array(Math.min(want, total - m.offset));
          let got = 0;
          while (got < buf.length) {
            const n = await f.read(buf.subarray(got));
            if (n === null) break;
            got += n;
          }
          data = buf.subarray(0, got);
        }
      } catch (e) {
        // The chunk ended (and its files went) between the lookup and the read.
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    const reply: ChunkLog = {
      type: MessageType.ChunkLog,
      node: this.#o.node,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: c.attempt,
      offset: m.offset,
      totalLength: total,
      running: this.#o.lookup(m.job, m.chunkIndex) !== null,
      data,
    };
    return reply;
  }

  /** Stops serving. */
  async close(): Promise<void> {
    await this.#server.close();
  }
}
