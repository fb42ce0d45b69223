/**
 * The worker role: registers with the balancer, runs the chunks it is pushed as child processes
 * that read their inputs through the worker's FUSE mount (fetched lazily from storage into a local
 * LRU cache), uploads their outputs to storage, reports the result to the master and frees the
 * slot at the balancer. Conventions: docs/architecture.md ("Worker program interface").
 * @module
 */

import { BalancerClient } from "../balancer/client.ts";
import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import {
  SECURITY_FLAGS,
  type SecurityOptions,
  securityOptions,
  setUpNodeSecurity,
} from "../../lib/node_security.ts";
import { resolve } from "node:path";
import {
  type ChunkState,
  ChunkState as CS,
  ErrorCode,
  type FailureCode,
  FailureCode as FC,
  type FileEntry,
  type JobCancel,
  type Message,
  MessageType,
  uuidEquals,
  uuidToHex,
  uuidToString,
  type WorkerRequest,
  type WorkerStatus,
} from "../../wire/mod.ts";
import { RequestError, RpcError } from "../../lib/rpc.ts";
import { createLogger, type Logger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { FuseMount, type FuseStats } from "../../fuse/mod.ts";
import { LeaderClient } from "../master/client.ts";
import { type ReadCap, StorageClient } from "../storage/client.ts";
import { CAP_BYTES } from "../../lib/capability.ts";
import { CacheIndex } from "./cache_index.ts";
import { ChunkLogServer } from "./log_server.ts";
import { type ProgramRun, type RunResult, startProgram } from "./runner.ts";
import { ChunkRun, ChunkSandbox, type LimitHit } from "./chunk_sandbox.ts";
import { type ChunkLimits, DEFAULT_POLICY, type LimitPolicy, resolveLimits } from "./limits.ts";
import { INSIDE, sandboxEnv } from "./sandbox.ts";
import { SANDBOX_FLAGS, sandboxOptions } from "./sandbox_flags.ts";
import type { WorkerMetrics } from "./metrics.ts";

/** Options of a worker node (`dsys run --role worker …`). */
export interface WorkerOptions {
  /** Where chunk results and cache use are counted (`--metrics-listen`). */
  metrics?: WorkerMetrics;
  /** Where to serve the running chunks' logs (`dsys logs`); absent: nowhere. */
  listen?: string;
  /** Data directory: node id, file cache (`cache/`), per-chunk scratch dirs (`chunks/`). */
  data: string;
  /** Balancer ROUTER endpoint. */
  balancer: string;
  /** Storage ROUTER endpoint. */
  storage: string;
  /** Master endpoints (any order; NOT_LEADER redirects are followed). */
  masters: string[];
  /** Chunks run at the same time. */
  slots: number;
  /** Bound of the input cache, bytes (files in use by a running chunk may exceed it). */
  cacheBytes: number;
  /** Where the FUSE mount of job inputs lives. */
  mount: string;
  /** Heartbeat period, ms (default 500). */
  heartbeatMs?: number;
  /** Longest download of one input before its readers get EIO, ms (default 300000). */
  fetchTimeoutMs?: number;
  /** Label shown in node lists (default hostname/short id). */
  label?: string;
  /** Logger (default: JSON lines on stderr). */
  log?: Logger;
  /** Keys (`--key`, `--keyring`) or `--insecure`. */
  security?: SecurityOptions;
  /** Run every chunk in the sandbox (default). False (`--no-sandbox`): chunks run as the
   * worker's own user and see all it sees; for trusted clusters only, and logged loudly. */
  sandbox?: boolean;
  /** Per-slot uids of sandboxed chunks, FIRST..FIRST+count-1 (`--sandbox-uids FIRST-LAST`). */
  sandboxUids?: { first: number; count: number };
  /** Per-chunk limit defaults and maxima (`--default-*`, `--max-*`, `--allow-host-network`). */
  limits?: LimitPolicy;
  /** Host-wide lock directory of the sandbox uids (default /run/dsys-sandbox). */
  sandboxLockDir?: string;
  /** Every chunk in a sandbox of its own (`--cold-sandbox`) rather than its slot's warm one. */
  coldSandbox?: boolean;
}

/** Counters of a worker, for tests and diagnostics. */
export interface WorkerStats {
  /** Chunks accepted since start. */
  accepted: number;
  /** worker_requests refused (no free slot / shutting down). */
  refused: number;
  /** Chunks whose status the master acknowledged. */
  reported: number;
  /** Chunks running now. */
  running: number;
  /** Registrations acknowledged by the balancer (> 1 after a balancer restart). */
  registrations: number;
  /** worker_requests refused for an older balancer epoch than one already seen (fencing). */
  fenced: number;
  /** Counters of the FUSE mount. */
  fuse: FuseStats;
}

/** A running worker node. */
export interface WorkerNode {
  /** Always "": a worker binds no socket of its own (it only connects DEALERs). */
  endpoint: string;
  /** The worker's node id (kept in `<data>/node-id`). */
  nodeId: Uint8Array;
  /** Current counters. */
  stats(): WorkerStats;
  /** Stops accepting, kills running programs, unmounts, closes sockets. */
  close(): Promise<void>;
}

/** A worker failure with the ids involved in its message. */
export class WorkerError extends Error {
  /** Creates an error; the message should name the job/chunk or file ids concerned. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WorkerError";
  }
}

/** Parses `--data --balancer --storage --masters --slots --cache-bytes --mount` and the optional
 * `--listen` (where chunk logs are served), `--heartbeat-ms`, `--fetch-timeout-ms`, `--label`, and the sandbox and
 * limit flags of roles/worker/sandbox_flags.ts. */
export function parseWorkerArgs(args: string[]): WorkerOptions {
  const { values } = parseArgs({
    args,
    options: {
      role: { type: "string" },
      listen: { type: "string" },
      data: { type: "string" },
      balancer: { type: "string" },
      storage: { type: "string" },
      masters: { type: "string" },
      slots: { type: "string", default: "2" },
      "cache-bytes": { type: "string", default: String(1 << 30) },
      mount: { type: "string" },
      "heartbeat-ms": { type: "string", default: "500" },
      "fetch-timeout-ms": { type: "string", default: "300000" },
      label: { type: "string" },
      ...SECURITY_FLAGS,
      ...SANDBOX_FLAGS,
    },
    strict: true,
  });
  const need = (k: "data" | "balancer" | "storage" | "masters"): string => {
    const v = values[k];
    if (!v) throw new WorkerError(`worker: --${k} is required`);
    return v;
  };
  const int = (k: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new WorkerError(`worker: --${k} must be an integer >= ${min}, got ${v}`);
    }
    return n;
  };
  const data = need("data");
  return {
    listen: values.listen,
    data,
    balancer: need("balancer"),
    storage: need("storage"),
    masters: need("masters").split(",").map((s) => s.trim()).filter((s) => s),
    slots: int("slots", values.slots!, 1),
    cacheBytes: int("cache-bytes", values["cache-bytes"]!, 0),
    mount: values.mount ?? `${data}/mnt`,
    heartbeatMs: int("heartbeat-ms", values["heartbeat-ms"]!, 10),
    fetchTimeoutMs: int("fetch-timeout-ms", values["fetch-timeout-ms"]!, 100),
    label: values.label,
    security: securityOptions(values),
    ...sandboxOptions(values),
  };
}

/** What a chunk holds in the mount and must give back when it ends. */
interface Held {
  pinned: Uint8Array[];
  jobDir: string | null;
  /** The slot uid the mount lets into `jobDir` for this chunk (sandboxed). */
  uid: number | null;
}

interface Chunk {
  key: string;
  req: WorkerRequest;
  program: ProgramRun | null;
  aborted: boolean;
  done: Promise<void>;
  /** Errors of fetches of this chunk's inputs, by id hex (set by the mount's error hook). */
  fetchErrors: Map<string, string>;
  /** The program file this chunk holds (released when it ends). */
  programFile: ProgramFile | null;
  /** Set while the chunk waits for its program: stops the wait when the worker shuts down. */
  onAbort: (() => void) | null;
  /** Cancelled by the masters (job_cancel): killed, and not reported to them. */
  cancelled?: boolean;
  /** Where its program's stdout and stderr go, once it started (served by `dsys logs`). */
  logs?: { stdout: string; stderr: string };
  /** Set when the chunk's slot cannot be used again (its processes or tmpfs would not go). */
  slotBroken?: boolean;
}

const enc = new TextEncoder();
/** Outputs up to this size are read into memory and uploaded in one piece: cheaper per file
 * than streaming (no chunk-sized read buffer, one read). */
const SMALL_OUTPUT_BYTES = 1 << 20;
/** Program files kept ready to run when no chunk uses them (written once per program id). */
const PROGRAM_FILES_KEPT = 16;
/** Writes of a program file before giving up when each is changed before it could run. */
const PROGRAM_WRITE_TRIES = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a worker: mounts, registers with the balancer and serves worker_requests. */
export async function runWorker(opts: WorkerOptions): Promise<WorkerNode> {
  const w = new Worker(opts, await loadOrCreateNodeId(opts.data));
  await w.start();
  return w;
}

class Worker implements WorkerNode {
  readonly endpoint: string;
  readonly nodeId: Uint8Array;
  #opts: WorkerOptions;
  #log: Logger;
  #cacheDir: string;
  #chunksDir: string;
  /** Program files by program id (hex), copied from the cache by the first chunk to run one. */
  #programsDir: string;
  #programs = new Map<string, ProgramFile>();
  #programSeq = 0;
  /** Slots not in use, by index. Slot i has the directory `<chunks>/slot-i`, and sandboxed its
   * uid and cgroup. Unsandboxed, the directory holds `scratch/`, `out/`, `stdout`, `stderr`,
   * reused, emptied, rather than created and deleted per chunk: on ext4 a create after many
   * recent deletes scans for an inode not recently freed, which profiling showed to be the
   * worker's main cost per trivial chunk (3 mkdirs + 2 files each time). Sandboxed, the chunk's
   * files live on a tmpfs of its own (`slot-i/fs`). */
  #freeSlotIds: number[] = [];
  /** Slots taken out of use (their processes or tmpfs would not go). */
  #brokenSlots = 0;
  /** The slots' sandboxes; null with --no-sandbox. */
  #sandbox: ChunkSandbox | null = null;
  /** Input dir of chunks of jobs without inputs (empty, read-only, shared). */
  #emptyInputDir: string;
  #index: CacheIndex;
  #mount!: FuseMount;
  #storage!: StorageClient;
  #masters!: LeaderClient;
  #balancer!: BalancerClient;
  #chunks = new Map<string, Chunk>();
  /** Chunks per job directory in the mount, so a job's directory goes when its last chunk ends. */
  #jobRefs = new Map<string, number>();
  #closing = false;
  #registered = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #stats = { accepted: 0, refused: 0, reported: 0, registrations: 0, fenced: 0 };
  /** Serves the running chunks' logs (with --listen). */
  #logServer: ChunkLogServer | null = null;
  /** Where it does ("" = nowhere), as told to the balancer. */
  #logEndpoint = "";
  /** chunk_finished reports not acknowledged yet (bounded: MAX_UNACKED_FINISHES). */
  #unacked: Message[] = [];
  /** Newest balancer lease epoch seen on a worker_request (older ones are refused). */
  #epoch = 0;

  constructor(opts: WorkerOptions, nodeId: Uint8Array) {
    this.#opts = opts;
    this.nodeId = nodeId;
    this.endpoint = "";
    this.#log = opts.log ?? createLogger("worker", uuidToHex(nodeId));
    // Absolute: the paths handed to programs (DSYS_OUTPUT_DIR) must not depend on their cwd.
    const data = resolve(opts.data);
    this.#cacheDir = `${data}/cache`;
    this.#chunksDir = `${data}/chunks`;
    this.#programsDir = `${this.#chunksDir}/.programs`;
    this.#emptyInputDir = `${this.#chunksDir}/.empty-input`;
    this.#index = new CacheIndex(this.#cacheDir);
  }

  async start(): Promise<void> {
    // A worker listens only to serve its chunks' logs (--listen), and not at all without it.
    setUpNodeSecurity("worker", this.#opts.security ?? {}, this.#opts.listen, this.#log);
    if (this.#opts.listen) {
      this.#logServer = new ChunkLogServer({
        node: this.nodeId,
        log: this.#log,
        lookup: (job, chunkIndex) => {
          for (const c of this.#chunks.values()) {
            if (c.cancelled || c.req.chunkIndex !== chunkIndex || !uuidEquals(c.req.job, job)) {
              continue;
            }
            return {
              owner: c.req.owner ?? "",
              attempt: c.req.attempt,
              stdout: c.logs?.stdout ?? null,
              stderr: c.logs?.stderr ?? null,
            };
          }
          return null;
        },
      });
      this.#logEndpoint = this.#logServer.bind(this.#opts.listen);
    }
    await Deno.mkdir(this.#cacheDir, { recursive: true });
    // The cache and the chunks' directories are the worker's alone: no chunk's sandbox shows
    // them, and no other user of the host needs them either.
    await Deno.chmod(this.#cacheDir, 0o700);
    // Scratch dirs of chunks that were running when the previous process died: nobody owns them
    // (their tmpfs, if it died sandboxed, are unmounted first so the removal stays on our disk).
    ChunkSandbox.unmountStale(this.#chunksDir);
    await Deno.remove(this.#chunksDir, { recursive: true }).catch(() => {});
    await Deno.mkdir(this.#chunksDir, { recursive: true, mode: 0o700 });
    await Deno.chmod(this.#chunksDir, 0o700);
    this.#freeSlotIds = Array.from(
      { length: this.#opts.slots },
      (_, i) => this.#opts.slots - 1 - i,
    );
    if (this.#opts.sandbox === false) {
      this.#log.warn(
        "SANDBOX DISABLED (--no-sandbox): chunks run as this worker's own user and see all it " +
          "sees (its keys, cache, data directory, other jobs' files, the network); for trusted " +
          "clusters only",
        { uid: Deno.uid() },
      );
    } else {
      try {
        this.#sandbox = await ChunkSandbox.setUp({
          nodeHex: uuidToHex(this.nodeId),
          slots: this.#opts.slots,
          chunksDir: this.#chunksDir,
          uids: this.#opts.sandboxUids,
          lockDir: this.#opts.sandboxLockDir,
          policy: this.#opts.limits ?? DEFAULT_POLICY,
          hide: [this.#opts.security?.key, this.#opts.security?.keyring, this.#opts.data]
            .filter((p): p is string => !!p),
          log: this.#log,
          cold: this.#opts.coldSandbox,
        });
      } catch (e) {
        throw new WorkerError(
          `worker ${uuidToHex(this.nodeId)}: the chunk sandbox cannot be set up: ${
            e instanceof Error ? e.message : e
          }`,
          { cause: e },
        );
      }
    }
    await Deno.mkdir(this.#programsDir);
    await Deno.mkdir(this.#emptyInputDir);
    await Deno.chmod(this.#emptyInputDir, 0o555);
    await this.#index.removeTemps();
    this.#storage = new StorageClient(this.#opts.storage, this.nodeId);
    try {
      await this.#connect();
    } catch (e) {
      // Leave nothing behind (a mount, sockets keeping the process alive) when start-up fails.
      await this.#mount?.unmount().catch(() => {});
      await this.#sandbox?.close().catch(() => {});
      await Promise.allSettled([
        this.#storage.close(),
        this.#balancer?.close(),
        this.#masters?.close(),
      ]);
      throw new WorkerError(`worker ${uuidToHex(this.nodeId)} failed to start: ${e}`, { cause: e });
    }
    this.#loop = this.#balancerLoop();
    this.#log.info("worker started", {
      balancer: this.#opts.balancer,
      storage: this.#opts.storage,
      masters: this.#opts.masters.join(","),
      slots: this.#opts.slots,
      mount: this.#mount.mountpoint,
    });
  }

  async #connect(): Promise<void> {
    this.#mount = await FuseMount.mount({
      mountpoint: this.#opts.mount,
      cacheDir: this.#cacheDir,
      cacheMaxBytes: this.#opts.cacheBytes,
      // Bounds one whole download (and a reader's wait for it): generous, inputs can be large.
      fetchTimeoutMs: this.#opts.fetchTimeoutMs ?? 300_000,
      fetch: (id, path) => this.#fetch(id, path),
      onFetchError: (id, e) => this.#onFetchError(id, e),
    });
    this.#masters = new LeaderClient(this.#opts.masters, { node: this.nodeId });
    // Primary first, then the standby: requests move on when one stops answering.
    this.#balancer = new BalancerClient(this.#opts.balancer.split(",").map((s) => s.trim()), {
      // No re-registration on a switch: a standby that took over knows us (the primary
      // replicates its workers), and registering with all slots free would make it re-run
      // what it thinks runs here. One that does not know us answers NOT_FOUND, and we register.
      node: this.nodeId,
      timeoutMs: 5000,
      // A stable routing id lets the balancer address pushes by our node id, even across
      // reconnects of this socket.
      routingId: this.nodeId,
      onRequest: (m) => this.#onRequest(m),
      log: this.#log,
    });
    // --cache-bytes may be smaller than what an earlier run left in the cache.
    await this.#mount.enforceCacheLimit(this.#opts.cacheBytes);
  }

  stats(): WorkerStats {
    return { ...this.#stats, running: this.#chunks.size, fuse: this.#mount.stats() };
  }

  // ------------------------------------------------------------------------------------------
  // Cache: fetch callback of the mount

  async #fetch(id: Uint8Array, cachePath: string): Promise<void> {
    // A file already there (cached by an earlier run, or changed on disk since this process
    // verified it) is served again only if it still holds the id's bytes.
    const had = await fileHasId(cachePath, id);
    if (had === true) {
      this.#log.debug("cache file verified", { file: uuidToHex(id) });
      return;
    }
    if (had === false) {
      this.#log.warn("cache file does not match its id; fetching it again", {
        file: uuidToHex(id),
      });
      await Deno.remove(cachePath).catch(() => {});
    }
    // getToFile verifies the SHA-256 against the id and renames into place only then: the cache
    // outlives this process and is addressed by content, so wrong bytes must never get in.
    const n = await this.#storage.getToFile(id, cachePath, this.#readCap(id));
    this.#log.debug("fetched", { file: uuidToHex(id), bytes: n });
    this.#opts.metrics?.fetched(n);
  }

  /**
   * A read capability for file `id` from a chunk running here that has it as an input (storage
   * serves a worker key only with one; any chunk's will do, the one good longest is taken).
   * None without security, or when no running chunk reads the file.
   */
  #readCap(id: Uint8Array): ReadCap {
    const hex = uuidToHex(id);
    let best: ReadCap = {};
    for (const c of this.#chunks.values()) {
      const { caps, programCap, capExpiryMs = 0 } = c.req;
      if ((best.capExpiryMs ?? -1) >= capExpiryMs) continue;
      if (programCap?.length === CAP_BYTES && uuidToHex(c.req.programId) === hex) {
        best = { cap: programCap.slice(), capExpiryMs };
        continue;
      }
      if (!caps) continue;
      const i = c.req.inputFiles.findIndex((f) => uuidToHex(f.id) === hex);
      if (i < 0 || caps.length < CAP_BYTES * (i + 1)) continue;
      best = { cap: caps.slice(CAP_BYTES * i, CAP_BYTES * (i + 1)), capExpiryMs };
    }
    return best;
  }

  #onFetchError(id: Uint8Array, e: unknown): void {
    const hex = uuidToHex(id);
    const text = e instanceof Error ? e.message : String(e);
    this.#log.warn("fetch failed", { file: hex, error: text });
    for (const c of this.#chunks.values()) {
      const uses = uuidToHex(c.req.programId) === hex ||
        c.req.inputFiles.some((f) => uuidToHex(f.id) === hex);
      if (uses) c.fetchErrors.set(hex, text);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Balancer: registration, heartbeats, worker_request

  #freeSlots(): number {
    return Math.max(0, this.#opts.slots - this.#brokenSlots - this.#chunks.size);
  }

  async #balancerLoop(): Promise<void> {
    const period = this.#opts.heartbeatMs ?? 500;
    while (!this.#closing) {
      try {
        // Finishes first: a balancer that just took over must hear that a chunk it thinks
        // runs here ended before a registration or heartbeat says every slot is free (it would
        // run that chunk again).
        await this.#flushFinished();
        if (!this.#registered) await this.#register();
        else await this.#heartbeat();
      } catch (e) {
        if (this.#closing) break;
        // Any error answer (NOT_FOUND after a balancer restart, …) means the balancer does not
        // know us as we think: register again. A timeout may be a dead balancer: keep
        // heartbeating, the restarted one will answer NOT_FOUND.
        const timeout = e instanceof RpcError && e.code === ErrorCode.Unavailable;
        if (!timeout && this.#registered) {
          this.#log.info("balancer lost our registration; registering again", { error: e });
          this.#registered = false;
          continue;
        }
        this.#log.debug("balancer request failed", { error: e });
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, period);
        this.#wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.#wake = null;
    }
  }

  /** Sends the chunk_finished reports no balancer acknowledged yet, oldest first. */
  async #flushFinished(): Promise<void> {
    while (this.#unacked.length > 0 && !this.#closing) {
      await this.#balancer.request(this.#unacked[0], 2000).catch((e) => {
        // An error answer (stale, unknown worker) is an answer: retrying cannot help.
        if (!(e instanceof RpcError) || e.code === ErrorCode.Unavailable) throw e;
      });
      this.#unacked.shift();
    }
  }

  async #register(): Promise<void> {
    const { snapshot, files } = await this.#index.full();
    await this.#balancer.request({
      type: MessageType.WorkerRegister,
      node: this.nodeId,
      slots: this.#opts.slots,
      freeSlots: this.#freeSlots(),
      files,
      label: this.#opts.label ?? `${hostname()}/${uuidToHex(this.nodeId).slice(0, 8)}`,
      endpoint: this.#logEndpoint,
    }, 2000);
    this.#index.commit(snapshot);
    this.#registered = true;
    this.#stats.registrations++;
    this.#log.info("registered with balancer", { files: files.length });
  }

  async #heartbeat(): Promise<void> {
    const { snapshot, added, evicted } = await this.#index.delta();
    await this.#balancer.request({
      type: MessageType.WorkerHeartbeat,
      node: this.nodeId,
      slots: this.#opts.slots,
      freeSlots: this.#freeSlots(),
      added,
      evicted,
    }, 2000);
    // Only an acknowledged heartbeat moves the baseline, so a lost one is repeated in the next.
    this.#index.commit(snapshot);
  }

  /**
   * `job_cancel` pushed by the balancer: kills every process of the job's chunks it names (all
   * when none are named). Each such chunk ends through the abort path: its processes are killed
   * (the sandbox empties the slot's cgroup), nothing is uploaded or reported to the masters, and
   * the balancer hears the slot is free.
   */
  #cancel(m: JobCancel): Message {
    const want = new Set(m.chunks.map((c) => c.chunkIndex));
    let n = 0;
    for (const c of this.#chunks.values()) {
      if (!uuidEquals(c.req.job, m.job) || (want.size > 0 && !want.has(c.req.chunkIndex))) {
        continue;
      }
      if (c.cancelled) continue;
      c.cancelled = true;
      c.aborted = true;
      c.program?.kill();
      c.onAbort?.();
      n++;
    }
    if (n > 0) this.#log.info("chunks cancelled", { job: uuidToHex(m.job), chunks: n });
    return { type: MessageType.Ok, node: this.nodeId, value: n };
  }

  #onRequest(m: Message): Message {
    if (m.type === MessageType.JobCancel) return this.#cancel(m);
    if (m.type !== MessageType.WorkerRequest) {
      throw new RequestError(ErrorCode.WrongRole, `worker does not serve message type ${m.type}`);
    }
    const key = chunkKey(m);
    const ack = (accepted: boolean, reason: string): Message => ({
      type: MessageType.WorkerRequestAck,
      node: this.nodeId,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: m.attempt,
      accepted,
      reason,
    });
    // Fencing: a push from an older lease epoch than one already seen comes from a deposed
    // primary (paused or partitioned while its successor took over): its placement is stale.
    const epoch = m.epoch ?? 0;
    if (epoch < this.#epoch) {
      this.#stats.refused++;
      this.#stats.fenced++;
      this.#log.warn("worker_request of an old balancer epoch refused", {
        epoch,
        newest: this.#epoch,
        chunk: key,
      });
      return ack(false, `stale balancer epoch ${epoch} (newest seen ${this.#epoch})`);
    }
    this.#epoch = epoch;
    // A retried push of a chunk we already run must not start it twice.
    if (this.#chunks.has(key)) return ack(true, "");
    if (this.#closing) {
      this.#stats.refused++;
      return ack(false, "worker shutting down");
    }
    if (this.#chunks.size >= this.#opts.slots) {
      this.#stats.refused++;
      return ack(false, `no free slot (${this.#opts.slots} of ${this.#opts.slots} busy)`);
    }
    const chunk: Chunk = {
      key,
      req: m,
      program: null,
      aborted: false,
      done: Promise.resolve(),
      fetchErrors: new Map(),
      programFile: null,
      onAbort: null,
    };
    this.#chunks.set(key, chunk);
    this.#stats.accepted++;
    this.#log.info("chunk accepted", {
      job: uuidToHex(m.job),
      chunk: m.chunkIndex,
      attempt: m.attempt,
      epoch,
    });
    chunk.done = this.#runChunk(chunk).catch((e) => {
      this.#log.error("chunk handling failed", { chunk: key, error: e });
      return false;
    }).then((told) => {
      this.#freeSlot(chunk);
      // Heartbeat now rather than at the next period when the balancer did not hear
      // chunk_finished (the free slot) or when the chunk had inputs (the cache changed: newly
      // cached files steer placement, and a file cached and evicted between two periodic
      // heartbeats would never be announced). For a chunk without inputs whose chunk_finished
      // was acknowledged it would only cost a round trip and a cache scan.
      if (!told || chunk.req.inputFiles.length > 0) this.#wake?.();
    });
    return ack(true, "");
  }

  // ------------------------------------------------------------------------------------------
  // Running a chunk

  /** Runs a chunk to its reported end; true when the balancer acknowledged chunk_finished. */
  async #runChunk(c: Chunk): Promise<boolean> {
    const req = c.req;
    const log = this.#log.child({ chunk: c.key });
    const held: Held = { pinned: [], jobDir: null, uid: null };
    let status: WorkerStatus | null;
    let dir: string | null = null;
    const slot = this.#freeSlotIds.pop();
    try {
      if (slot === undefined) {
        throw new WorkerError("no usable slot (a slot's processes or tmpfs would not go)");
      }
      dir = this.#takeDir(slot);
      status = await this.#execute(c, dir, slot, held, log);
    } catch (e) {
      // Setup failed (bad input name, disk full, …): still a definite result for the master.
      const text = e instanceof Error ? e.message : String(e);
      log.warn("chunk setup failed", { error: text });
      const why = `worker could not run chunk: ${text}`;
      status = bareStatus(this.nodeId, req, CS.Failed, FC.Internal, why);
    } finally {
      this.#release(held);
      if (c.programFile) this.#releaseProgram(c.programFile);
    }
    if (dir !== null && slot !== undefined) await this.#returnDir(dir, slot, c, log);
    if (held.pinned.length > 0) this.#enforceCache();
    this.#opts.metrics?.chunkEnded(status, c.cancelled, c.aborted);
    if (c.cancelled) {
      // The masters decided already (the chunk is cancelled there): only the slot is news.
      log.info("chunk cancelled: every process of it is gone", {});
      return await this.#finishedAtBalancer(c, CS.Cancelled);
    }
    if (c.aborted) {
      // Shutting down: say so at once (best effort) so the master re-dispatches the chunk
      // without waiting for our heartbeats to time out.
      const lost = bareStatus(this.nodeId, req, CS.Lost, FC.WorkerLost, "worker shutting down");
      await this.#masters.request(lost, 1000).catch(() => {});
      return false;
    }
    return status ? await this.#report(status, c, log) : false;
  }

  /** Slot `slot`'s directory; unsandboxed with empty `scratch/` and `out/` for one chunk. */
  #takeDir(slot: number): string {
    const dir = `${this.#chunksDir}/slot-${slot}`;
    if (this.#sandbox || isRealDir(dir)) return dir;
    // Synchronous: three mkdirs, once per slot, cheaper than async ops on the thread pool.
    Deno.mkdirSync(dir);
    Deno.mkdirSync(`${dir}/scratch`);
    Deno.mkdirSync(`${dir}/out`);
    return dir;
  }

  /** Gives slot `slot` back. Unsandboxed, empties the chunk's `scratch/` and `out/` (the
   * program's process group is gone by now) and keeps the directory for the next chunk; a
   * directory that cannot be emptied is dropped (the next chunk of the slot makes a new one).
   * Sandboxed, the chunk's tmpfs is gone already; a slot whose processes or tmpfs would not go
   * is taken out of use. */
  async #returnDir(dir: string, slot: number, c: Chunk, log: Logger): Promise<void> {
    if (this.#sandbox) {
      if (c.slotBroken) {
        this.#brokenSlots++;
        log.error("slot taken out of use", { slot, usable: this.#opts.slots - this.#brokenSlots });
      } else this.#freeSlotIds.push(slot);
      return;
    }
    try {
      // The program could have replaced any of these (e.g. `out` by a symlink to `/`): emptying
      // through a symlink, or a spawn truncating `stdout` through one, would hit files outside
      // the slot. Such a directory is dropped instead (removal does not follow symlinks).
      if (
        !isRealDir(dir) || !isRealDir(`${dir}/scratch`) || !isRealDir(`${dir}/out`) ||
        !isFileOrAbsent(`${dir}/stdout`) || !isFileOrAbsent(`${dir}/stderr`)
      ) {
        throw new WorkerError(`chunk directory ${dir} was altered by its program`);
      }
      for (const sub of ["scratch", "out"]) {
        // Synchronous listing: usually one getdents of an empty directory. Whatever is there is
        // removed asynchronously: a chunk may leave many or large files, and deleting those must
        // not stall the event loop (heartbeats, the other slots).
        for (const e of Deno.readDirSync(`${dir}/${sub}`)) {
          await Deno.remove(`${dir}/${sub}/${e.name}`, { recursive: true });
        }
      }
      // stdout and stderr stay: the next spawn truncates them.
      if (this.#closing) await Deno.remove(dir, { recursive: true });
    } catch (e) {
      log.warn("could not empty chunk directory; dropping it", { dir, error: e });
      await Deno.remove(dir, { recursive: true }).catch(() => {
        /* gone, or the next start wipes it */
      });
    }
    // Only now: the next chunk of the slot must find the directory emptied (or gone).
    this.#freeSlotIds.push(slot);
  }

  /**
   * The chunk's program as a file to run: a program is a cached file by id. The first chunk to
   * run a program id fetches it like an input (the mount's lazy, verified fetch into the cache,
   * with the request's read capability) and copies it out of the cache to a file of mode 0755;
   * later chunks, of any job, with the same id run that file. A file found changed (a program
   * rewrote itself: inode, size or mtime differ) is never run again: the next chunk gets a new
   * copy of the (untouched) cached file. Each call must be paired with `#releaseProgram`; throws
   * when the program cannot be fetched.
   */
  async #acquireProgram(req: WorkerRequest): Promise<ProgramFile> {
    const key = uuidToHex(req.programId);
    for (let tries = 1;; tries++) {
      let p = this.#programs.get(key);
      if (p?.written && !unchanged(p)) {
        this.#dropProgram(p);
        p = undefined;
      }
      if (!p) {
        const path = `${this.#programsDir}/${key}.${this.#programSeq++}`;
        const fresh: ProgramFile = {
          key,
          path,
          size: req.programSize,
          users: 0,
          ino: null,
          mtimeMs: -1,
          written: false,
          dropped: false,
          ready: Promise.resolve(),
        };
        fresh.ready = this.#writeProgram(fresh, req.programId);
        // A failed fetch leaves nothing behind: the next chunk tries again.
        fresh.ready.catch(() => this.#dropProgram(fresh));
        this.#programs.set(key, p = fresh);
      } else {
        // Most recently used last: eviction takes the oldest first.
        this.#programs.delete(key);
        this.#programs.set(key, p);
      }
      p.users++;
      try {
        await p.ready;
      } catch (e) {
        this.#releaseProgram(p);
        throw e;
      }
      // Another chunk may have run (and rewritten) it while this one waited for the write.
      if (unchanged(p)) return p;
      this.#dropProgram(p);
      this.#releaseProgram(p);
      if (tries >= PROGRAM_WRITE_TRIES) {
        throw new WorkerError(`program file ${p.path} changed ${tries} times before it could run`);
      }
    }
  }

  /** Fetches program `id` into the cache (unless cached) and copies it to `p.path`, 0755. */
  async #writeProgram(p: ProgramFile, id: Uint8Array): Promise<void> {
    this.#mount.pin(id); // not evicted between the fetch and the copy
    try {
      await this.#mount.prefetch(id);
      // Copied, not linked: a program that rewrites its own file must not touch the cache.
      // Written under a temporary name and renamed: the final path is never open for writing.
      const tmp = `${p.path}.tmp`;
      await Deno.copyFile(this.#mount.cachePath(id), tmp);
      await Deno.chmod(tmp, 0o755); // the umask may have dropped bits at create
      const st = await Deno.lstat(tmp);
      if (st.size !== p.size) {
        await Deno.remove(tmp).catch(() => {});
        throw new WorkerError(
          `program file ${p.key} has ${st.size} bytes in the cache, the job says ${p.size}`,
        );
      }
      await Deno.rename(tmp, p.path);
      p.ino = st.ino;
      p.mtimeMs = mtimeOf(st);
      p.written = true;
    } finally {
      try {
        this.#mount.unpin(id);
      } catch { /* unmounted during shutdown */ }
    }
  }

  /** Never hands out `p` again; its file goes once no chunk runs it. */
  #dropProgram(p: ProgramFile): void {
    if (this.#programs.get(p.key) === p) this.#programs.delete(p.key);
    p.dropped = true;
    if (p.users === 0) removeQuietly(p.path);
  }

  #releaseProgram(p: ProgramFile): void {
    if (p.users > 0) p.users--;
    if (p.dropped && p.users === 0) removeQuietly(p.path);
    if (this.#programs.size <= PROGRAM_FILES_KEPT) return;
    for (const q of this.#programs.values()) {
      if (this.#programs.size <= PROGRAM_FILES_KEPT) break;
      if (q.users === 0 && q.written) this.#dropProgram(q);
    }
  }

  /** Trims the cache to --cache-bytes. The mount does so after each fetch, but files pinned by a
   * running chunk are skipped then, so the bound is restored here once the chunk let go. */
  #enforceCache(): void {
    if (this.#closing) return;
    this.#mount.enforceCacheLimit(this.#opts.cacheBytes).catch((e) =>
      this.#log.warn("cache eviction failed", { error: e })
    );
  }

  /** Frees a chunk's slot (idempotent; a newer chunk under the same key is left alone). */
  #freeSlot(c: Chunk): void {
    if (this.#chunks.get(c.key) === c) this.#chunks.delete(c.key);
  }

  /** Unpins a chunk's inputs and drops its job's mount directory after the job's last chunk. */
  #release(held: Held): void {
    if (held.jobDir !== null && held.uid !== null) {
      try {
        this.#mount.disallowUid(held.jobDir, held.uid);
      } catch { /* unmounted during shutdown */ }
    }
    for (const id of held.pinned) {
      try {
        this.#mount.unpin(id);
      } catch { /* unmounted during shutdown */ }
    }
    const jobDir = held.jobDir;
    if (jobDir === null) return;
    const n = (this.#jobRefs.get(jobDir) ?? 1) - 1;
    if (n > 0) {
      this.#jobRefs.set(jobDir, n);
      return;
    }
    this.#jobRefs.delete(jobDir);
    try {
      this.#mount.removePath(jobDir);
    } catch { /* unmounted during shutdown */ }
  }

  /** Sets up, runs and uploads one chunk; returns its final status, or null when aborted. */
  async #execute(
    c: Chunk,
    dir: string,
    slot: number,
    held: Held,
    log: Logger,
  ): Promise<WorkerStatus | null> {
    const req = c.req;
    const jobDir = uuidToString(req.job);
    const acquiring = this.#acquireProgram(req);
    try {
      // A shutdown does not wait for a program fetch (storage may be slow or gone).
      c.programFile = await new Promise<ProgramFile | null>((resolve, reject) => {
        c.onAbort = () => resolve(null);
        if (c.aborted) resolve(null);
        acquiring.then(resolve, reject);
      });
    } catch (e) {
      if (this.#closing) c.aborted = true;
      if (c.aborted) return null;
      const hex = uuidToHex(req.programId);
      const text = c.fetchErrors.get(hex) ?? (e instanceof Error ? e.message : String(e));
      log.warn("program unavailable", { program: hex, error: text });
      return bareStatus(
        this.nodeId,
        req,
        CS.Failed,
        FC.InputUnavailable,
        `program file ${hex} could not be fetched: ${text}`,
      );
    } finally {
      c.onAbort = null;
    }
    if (c.programFile === null) {
      // Aborted while fetching: the program is released whenever the fetch ends.
      acquiring.then((p) => this.#releaseProgram(p), () => {});
      c.aborted = true;
      return null;
    }
    const programPath = c.programFile.path;
    const sb = this.#sandbox;
    // A sandboxed chunk's limits: refused before anything is set up when they are beyond what
    // this worker allows (errors are values: the chunk fails with Policy and the reason).
    let limits: ChunkLimits | null = null;
    if (sb) {
      const lim = resolveLimits(req, sb.policy);
      if (!lim.ok) {
        log.info("chunk refused by the worker's limits", { ...lim.refusal });
        return bareStatus(this.nodeId, req, CS.Failed, FC.Policy, lim.refusal.reason);
      }
      limits = lim.limits;
    }

    // A job without inputs still gets an (empty, local, read-only) input dir, so the variable
    // is usable.
    let inputDir = this.#emptyInputDir;
    if (req.inputFiles.length > 0) {
      this.#jobRefs.set(jobDir, (this.#jobRefs.get(jobDir) ?? 0) + 1);
      held.jobDir = jobDir;
      for (const f of req.inputFiles) {
        this.#opts.metrics?.input(f.size, this.#mount.cachePath(f.id));
        this.#mount.addFile({ path: `${jobDir}/${f.name}`, id: f.id, size: f.size });
        // Pinned while the chunk runs: its inputs must not be evicted between reads.
        this.#mount.pin(f.id);
        held.pinned.push(f.id);
      }
      inputDir = `${this.#mount.mountpoint}/${jobDir}`;
    }
    log.debug("chunk started", { inputs: req.inputFiles.length, timeLimitMs: req.timeLimitMs });
    const argument = new TextDecoder().decode(req.argument);
    const args = req.argument.length > 0 ? [argument] : [];
    if (this.#closing) c.aborted = true;
    if (c.aborted) return null;
    let run: ChunkRun | null = null;
    try {
      let program: ProgramRun;
      let outDir = `${dir}/out`;
      if (sb && limits) {
        run = await sb.begin(slot, limits);
        outDir = run.fs.out;
        if (held.jobDir !== null) {
          // The mount serves the job's directory to this slot's uid only while the chunk runs.
          this.#mount.allowUid(held.jobDir, sb.uid(slot));
          held.uid = sb.uid(slot);
        }
        const env = sandboxEnv({
          jobId: jobDir,
          chunkIndex: req.chunkIndex,
          chunkCount: req.numChunks,
          attempt: req.attempt,
          argument,
        });
        const jobInputs = held.jobDir !== null ? inputDir : null;
        c.logs = { stdout: run.fs.stdout, stderr: run.fs.stderr };
        program = run.warm
          ? await run.startWarm(programPath, args, jobInputs, env, req.timeLimitMs)
          : await startProgram({
            programPath,
            args,
            env,
            cwd: INSIDE.tmp,
            timeLimitMs: req.timeLimitMs,
            stdoutPath: run.fs.stdout,
            stderrPath: run.fs.stderr,
            sandbox: run.runSpec(programPath, args, jobInputs),
          });
        run.watch(() => program.stop());
      } else {
        program = await startProgram({
          programPath,
          args,
          env: {
            PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
            HOME: `${dir}/scratch`,
            TMPDIR: `${dir}/scratch`,
            DSYS_JOB_ID: jobDir,
            DSYS_CHUNK_INDEX: String(req.chunkIndex),
            DSYS_CHUNK_COUNT: String(req.numChunks),
            DSYS_ATTEMPT: String(req.attempt),
            DSYS_ARG: argument,
            DSYS_INPUT_DIR: inputDir,
            DSYS_OUTPUT_DIR: outDir,
          },
          cwd: `${dir}/scratch`,
          timeLimitMs: req.timeLimitMs,
          stdoutPath: (c.logs = { stdout: `${dir}/stdout`, stderr: `${dir}/stderr` }).stdout,
          stderrPath: `${dir}/stderr`,
        });
      }
      c.program = program;
      if (c.aborted) program.kill();
      if (program.pid !== 0) {
        // Lets `dsys status` show the chunk as running. One best-effort try, not awaited: the
        // final status (retried until acknowledged) is what counts.
        const running = bareStatus(this.nodeId, req, CS.Running, FC.None, "");
        this.#masters.request(running, 2000).catch(() => {});
      }
      const r = await program.result;
      const hit: LimitHit | null = run && !r.reapError ? run.finish(r.signal) : null;
      if (r.reapError) c.slotBroken = true;
      if (r.aborted || c.aborted) {
        c.aborted = true;
        return null;
      }
      let [state, failure, reason] = resultOf(r, req, hit, c.fetchErrors);
      let outputs: FileEntry[] = [];
      if (!r.spawnError && !r.reapError) {
        try {
          // Nothing of the chunk runs any more (its cgroup is empty): its tmpfs goes read-only
          // for everyone, so what is hashed and uploaded is exactly what it left.
          run?.seal();
          const stdoutPath = run ? run.fs.stdout : `${dir}/stdout`;
          const max = limits ? limits.diskBytes : Infinity;
          outputs = await this.#uploadOutputs(
            outDir,
            stdoutPath,
            r.stdoutBytes,
            log,
            req.owner,
            max,
          );
        } catch (e) {
          state = CS.Failed;
          const quota = e instanceof OutputQuotaError;
          failure = quota ? FC.OutputQuota : FC.OutputFailed;
          reason =
            (quota ? e.message : `output upload failed: ${e instanceof Error ? e.message : e}`) +
            (reason ? ` (${reason})` : "");
          outputs = [];
        }
      }
      // A line per succeeded chunk is noise at hundreds of chunks a second (and costs every
      // process that handles the log stream): failures at info, successes at debug.
      (state === CS.Succeeded ? log.debug : log.info)("chunk ended", {
        state,
        exitCode: r.exitCode,
        signal: r.signal,
        failure,
        durationMs: r.durationMs,
        outputs: outputs.length,
      });
      return {
        type: MessageType.WorkerStatus,
        node: this.nodeId,
        job: req.job,
        state,
        chunkIndex: req.chunkIndex,
        attempt: req.attempt,
        exitCode: r.exitCode,
        signal: r.signal,
        failure,
        durationMs: r.durationMs,
        outputs,
        stderrTail: r.stderrTail,
        reason,
        ...ticketOf(req),
      };
    } finally {
      // The chunk's mounts go in the background; the slot's next chunk waits for that.
      run?.end(log);
    }
  }

  /** Uploads every regular file in `outDir` (and stdout when non-empty), stored as the job
   * owner's files (`owner` of the worker_request; none without security). More than
   * `maxBytes` in all (sparse files can claim sizes their tmpfs never held) is refused. */
  async #uploadOutputs(
    outDir: string,
    stdoutPath: string,
    stdoutBytes: number,
    log: Logger,
    owner: string | undefined,
    maxBytes: number,
  ): Promise<FileEntry[]> {
    const files: { name: string; path: string }[] = [];
    if (!isRealDir(outDir)) {
      // Replaced by a symlink (or a file): never upload what it points at.
      throw new WorkerError(`output directory ${outDir} is no longer a directory`);
    }
    // Synchronous listing: usually an empty directory, one getdents instead of async ops.
    const walk = (rel: string) => {
      const abs = rel ? `${outDir}/${rel}` : outDir;
      const names = [...Deno.readDirSync(abs)];
      names.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of names) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        // Symlinks are skipped on purpose: they could point at any file of the worker.
        if (e.isFile) files.push({ name: r, path: `${outDir}/${r}` });
        else if (e.isDirectory) walk(r);
      }
    };
    walk("");
    if (stdoutBytes > 0) {
      if (files.some((f) => f.name === "stdout")) {
        log.warn("program left a file named stdout; captured stdout not uploaded");
      } else files.unshift({ name: "stdout", path: stdoutPath });
    }
    const sizes = files.map((f) => Deno.statSync(f.path).size);
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total > maxBytes) {
      throw new OutputQuotaError(
        `outputs of ${total} bytes in all exceed its disk limit of ${maxBytes} bytes`,
      );
    }
    const out: FileEntry[] = [];
    for (const [i, f] of files.entries()) {
      // Either way the call resolves only once storage has the file durably.
      const small = sizes[i] <= SMALL_OUTPUT_BYTES;
      const put = owner ? { owner } : {};
      const r = small
        ? await this.#storage.putBytes(Deno.readFileSync(f.path), put)
        : await this.#storage.putFile(f.path, put);
      out.push({ id: r.id, size: r.size, name: f.name });
    }
    return out;
  }

  /** Sends the final worker_status until a master acknowledges it, then frees the slot and
   * sends chunk_finished to the balancer; true when the balancer acknowledged that. */
  async #report(status: WorkerStatus, c: Chunk, log: Logger): Promise<boolean> {
    let backoff = 200;
    for (;;) {
      try {
        await this.#masters.request(status, 30_000);
        this.#stats.reported++;
        break;
      } catch (e) {
        if (!(e instanceof RpcError)) {
          log.error("worker_status could not be sent", { error: e });
          break;
        }
        if (e.code !== ErrorCode.Unavailable && e.code !== ErrorCode.NotLeader) {
          // The master rejected it for good (e.g. stale attempt): retrying cannot help.
          log.warn("master rejected worker_status", { error: e });
          break;
        }
        if (this.#closing) {
          log.warn("shutting down before a master acknowledged the status", { error: e });
          return false;
        }
        log.info("worker_status not acknowledged yet; retrying", { error: e });
        await sleep(backoff);
        backoff = Math.min(2000, backoff * 2);
      }
    }
    return await this.#finishedAtBalancer(c, status.state);
  }

  /** Frees the chunk's slot and tells the balancer (re-sent later if it is away). */
  async #finishedAtBalancer(c: Chunk, state: ChunkState): Promise<boolean> {
    // Free before telling the balancer: it may push the next chunk as soon as it reads this.
    this.#freeSlot(c);
    const fin: Message = {
      type: MessageType.ChunkFinished,
      node: this.nodeId,
      job: c.req.job,
      chunkIndex: c.req.chunkIndex,
      attempt: c.req.attempt,
      state,
    };
    try {
      await this.#balancer.request(fin, 2000);
      return true;
    } catch (e) {
      if (e instanceof RpcError && e.code !== ErrorCode.Unavailable) return false;
      // The balancer is away (or failing over): the balancer loop re-sends it before its
      // next heartbeat, to whichever balancer is primary by then.
      this.#unacked.push(fin);
      if (this.#unacked.length > MAX_UNACKED_FINISHES) this.#unacked.shift();
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const c of this.#chunks.values()) {
      c.aborted = true;
      c.program?.kill();
      c.onAbort?.();
    }
    this.#wake?.();
    await Promise.allSettled([...this.#chunks.values()].map((c) => c.done));
    await this.#loop;
    // Every chunk has ended (its cgroup emptied): the cgroups and uid claims can go.
    await this.#sandbox?.close().catch((e) => this.#log.warn("sandbox close failed", { error: e }));
    await this.#mount.unmount().catch((e) => this.#log.warn("unmount failed", { error: e }));
    await this.#logServer?.close();
    await Promise.allSettled([
      this.#balancer.close(),
      this.#masters.close(),
      this.#storage.close(),
    ]);
    this.#log.info("worker stopped");
  }
}

/** A program's file on this worker, shared by every chunk that runs that program id. */
interface ProgramFile {
  /** Program id (hex). */
  key: string;
  path: string;
  /** Bytes it must have (worker_request.program_size). */
  size: number;
  /** Chunks running it (or waiting for it to be written) now. */
  users: number;
  /** Inode and mtime when written: a changed file is not reused. */
  ino: number | null;
  mtimeMs: number;
  /** True once `path` holds the program. */
  written: boolean;
  /** Not handed out any more; the file is removed once `users` is 0. */
  dropped: boolean;
  /** Settles when the write ends (rejects when the program could not be fetched). */
  ready: Promise<void>;
}

function mtimeOf(st: Deno.FileInfo): number {
  return st.mtime?.getTime() ?? -1;
}

/** True while the program file is still the one written (same inode, size, mtime). */
function unchanged(p: ProgramFile): boolean {
  try {
    const st = Deno.lstatSync(p.path);
    return st.isFile && st.ino === p.ino && st.size === p.size && mtimeOf(st) === p.mtimeMs;
  } catch {
    return false;
  }
}

/** True when `path` is a directory itself, not a symlink to one. */
function isRealDir(path: string): boolean {
  try {
    return Deno.lstatSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** True when `path` is a regular file (not a symlink) or does not exist. */
function isFileOrAbsent(path: string): boolean {
  try {
    return Deno.lstatSync(path).isFile;
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
}

/** Whether the file at `path` holds the bytes of file id `id` (the first 16 bytes of their
 * SHA-256); null when there is no file. */
async function fileHasId(path: string, id: Uint8Array): Promise<boolean | null> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const h = createHash("sha256");
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      h.update(buf.subarray(0, n));
    }
    const digest = new Uint8Array(h.digest());
    return id.length === 16 && digest.subarray(0, 16).every((b, i) => b === id[i]);
  } finally {
    f.close();
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* already gone */ }
}

/**
 * Most unacknowledged chunk_finished reports kept: beyond that the oldest are dropped, and the
 * balancer learns of those chunks' end from idle heartbeats (idleGraceMs) instead.
 */
const MAX_UNACKED_FINISHES = 1024;

function chunkKey(m: { job: Uint8Array; chunkIndex: number; attempt: number }): string {
  return `${uuidToString(m.job)}/${m.chunkIndex}/${m.attempt}`;
}

/** The outputs of a chunk claim more bytes than its disk limit allows. */
class OutputQuotaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OutputQuotaError";
  }
}

/** State, failure and reason of a chunk whose program ran: a limit it went over first (the
 * kernel's record of it is exact), then how the program ended. */
function resultOf(
  r: RunResult,
  req: WorkerRequest,
  hit: LimitHit | null,
  fetchErrors: Map<string, string>,
): [ChunkState, FailureCode, string] {
  if (r.reapError) {
    return [CS.Failed, FC.Internal, `processes of the chunk would not go: ${r.reapError}`];
  }
  if (hit) return [CS.Failed, hit.failure, hit.reason];
  if (r.spawnError) return [CS.Failed, FC.SpawnFailed, `spawn failed: ${r.spawnError}`];
  if (r.timedOut) {
    return [CS.Failed, FC.Timeout, `killed after ${req.timeLimitMs} ms time limit`];
  }
  if (r.signal === 0 && r.exitCode === 0) return [CS.Succeeded, FC.None, ""];
  let [failure, reason]: [FailureCode, string] = r.signal !== 0
    ? [FC.Signal, `killed by signal ${r.signal}`]
    : [FC.ExitCode, `exit code ${r.exitCode}`];
  if (fetchErrors.size > 0) {
    // The program most likely failed because an input read gave EIO.
    const [id, text] = fetchErrors.entries().next().value!;
    failure = FC.InputUnavailable;
    reason = `input file ${id} could not be fetched: ${text} (program: ${reason})`;
  }
  return [CS.Failed, failure, reason];
}

/** A worker_status without a program result (setup failure, running, lost). */
function bareStatus(
  node: Uint8Array,
  req: WorkerRequest,
  state: ChunkState,
  failure: FailureCode,
  reason: string,
): WorkerStatus {
  return {
    type: MessageType.WorkerStatus,
    node,
    job: req.job,
    state,
    chunkIndex: req.chunkIndex,
    attempt: req.attempt,
    exitCode: 0,
    signal: 0,
    failure,
    durationMs: 0,
    outputs: [],
    stderrTail: enc.encode(""),
    reason,
    ...ticketOf(req),
  };
}

/** The placement ticket of a chunk's worker_request, for every worker_status about it (the
 * masters accept a status only with the ticket minted for this worker's key). */
function ticketOf(req: WorkerRequest): Pick<WorkerStatus, "ticket"> {
  return req.ticket && req.ticket.length > 0 ? { ticket: req.ticket } : {};
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "worker"; // no --allow-sys: the id part of the label still tells workers apart
  }
}
