/**
 * `dsys logs JOB --chunk N [-f] [--stderr]`: a chunk's output as it is written, then as stored.
 *
 * While the chunk runs, its bytes come from the worker running it (`chunk_log_request` to the
 * worker the masters' status names, at the endpoint their node list gives): never through a
 * master or a balancer. A retry is a new attempt, possibly on another worker: its log starts
 * again from the beginning, announced by a marker. Once the chunk has ended, the rest comes from
 * what the masters recorded: its stored `stdout` output (whole; what was already shown is
 * skipped), or its stderr tail.
 * @module
 */
import { joinNamedEndpoint } from "../lib/named_endpoint.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import {
  type ChunkRecord,
  ChunkState,
  ErrorCode,
  MessageType,
  NodeRole,
  type Uuid,
  uuidToHex,
} from "../wire/mod.ts";
import type { DsysClient } from "./commands.ts";

/** Something `dsys logs` prints. */
export type LogPiece =
  /** Bytes of attempt `attempt`'s log. */
  | { kind: "data"; attempt: number; data: Uint8Array }
  /** Attempt `attempt` started (a retry, or the first one seen). */
  | { kind: "attempt"; attempt: number }
  /** The chunk ended; nothing follows. */
  | { kind: "end"; chunk: ChunkRecord };

/** Options of {@linkcode chunkLogs}. */
export interface ChunkLogsOptions {
  /** Keep going until the chunk ends (`-f`); otherwise stop at what exists now. */
  follow: boolean;
  /** 1 = stdout (default), 2 = stderr. */
  stream?: 1 | 2;
  /** Pause between reads that found nothing new, ms. */
  pollMs?: number;
}

const FINAL: number[] = [ChunkState.Succeeded, ChunkState.Failed, ChunkState.Cancelled];
const isNil = (id: Uint8Array) => id.every((b) => b === 0);

/** The log of chunk `chunkIndex` of `job`, piece by piece; see module doc. */
export async function* chunkLogs(
  client: DsysClient,
  job: Uuid,
  chunkIndex: number,
  o: ChunkLogsOptions,
): AsyncGenerator<LogPiece> {
  const stream = o.stream ?? 1;
  const workers = new Map<string, RpcClient>();
  let attempt = -1;
  let offset = 0;
  try {
    for (;;) {
      const s = await client.status(job);
      const c = s.chunks[chunkIndex];
      if (!c) throw new RpcError(ErrorCode.BadRequest, `job has no chunk ${chunkIndex}`, "");
      if (FINAL.includes(c.state)) {
        yield* finalPieces(client, c, stream, attempt, offset);
        return;
      }
      let progressed = false;
      if (c.state === ChunkState.Running && !isNil(c.worker)) {
        const w = await workerClient(client, workers, c.worker);
        const r = w
          ? await w.request({
            type: MessageType.ChunkLogRequest,
            node: client.node,
            job,
            chunkIndex,
            stream,
            offset,
            maxLength: 0,
          }).catch((e) => {
            // It ended (or moved) between the status and the read: the next status says how.
            if (e instanceof RpcError && e.code === ErrorCode.NotFound) return null;
            throw e;
          })
          : null;
        if (r && r.type === MessageType.ChunkLog) {
          if (r.attempt !== attempt) {
            // A new attempt (a retry): its log starts at 0.
            const stale = offset !== 0;
            attempt = r.attempt;
            offset = 0;
            yield { kind: "attempt", attempt };
            // That read was of the new attempt's log at the old attempt's offset: read again.
            if (stale) continue;
          }
          if (r.data.length > 0) {
            yield { kind: "data", attempt, data: r.data };
            offset += r.data.length;
            progressed = true;
          }
          if (!o.follow && offset >= r.totalLength) return;
        }
      } else if (!o.follow) return; // queued, or waiting for a retry: nothing to show yet
      if (!progressed) await new Promise((res) => setTimeout(res, o.pollMs ?? 200));
    }
  } finally {
    await Promise.all([...workers.values()].map((w) => w.close()));
  }
}

/** What is left to show of a chunk that ended. */
async function* finalPieces(
  client: DsysClient,
  c: ChunkRecord,
  stream: 1 | 2,
  shownAttempt: number,
  shown: number,
): AsyncGenerator<LogPiece> {
  // Shown bytes were of the attempt that ended only if the attempt numbers agree.
  const skip = shownAttempt === c.attempt ? shown : 0;
  if (shownAttempt !== c.attempt) yield { kind: "attempt", attempt: c.attempt };
  let bytes: Uint8Array = new Uint8Array(0);
  if (stream === 2) bytes = c.stderrTail;
  else {
    const out = c.outputs.find((f) => f.name === "stdout");
    if (out) bytes = await client.storage.getBytes(out.id);
  }
  if (bytes.length > skip) yield { kind: "data", attempt: c.attempt, data: bytes.subarray(skip) };
  yield { kind: "end", chunk: c };
}

/** A client of the worker with node id `id`, from the masters' node list (null: not listed). */
async function workerClient(
  client: DsysClient,
  cache: Map<string, RpcClient>,
  id: Uint8Array,
): Promise<RpcClient | null> {
  const key = uuidToHex(id);
  const known = cache.get(key);
  if (known) return known;
  const n = (await client.nodes()).find((e) =>
    e.role === NodeRole.Worker && uuidToHex(e.id) === key && e.endpoint !== ""
  );
  if (!n) return null;
  // The entry's name is the worker's key name (the one it registered with): CURVE then expects
  // exactly that key at the endpoint.
  const c = new RpcClient(joinNamedEndpoint(n.name || undefined, n.endpoint), {
    node: client.node,
    auth: client.credentials,
    serverRole: "worker",
    timeoutMs: 10_000,
  });
  cache.set(key, c);
  return c;
}
