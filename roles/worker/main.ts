/**
 * The worker role: registers with the balancer, runs the chunks it is pushed as child processes
 * that read their inputs through the worker's FUSE mount (fetched lazily from storage into a local
 * LRU cache), uploads their outputs to storage, reports the result to the master and frees the
 * slot at the balancer. Conventions: docs/architecture.md ("Worker program interface").
 *
 * This is the I/O shell of `ChunkLifecycle` (chunk_lifecycle.ts, pure), which decides every step
 * of a chunk's life: the shell feeds it what arrives (pushes, answers, the end of each effect,
 * the clock) and carries out its effects (fetch, mount, spawn in the sandbox, kill, upload,
 * clean up, report). Storage is reached only through `WorkerStorage` (storage_access.ts).
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
  type ChunkFinished,
  ChunkState as CS,
  ErrorCode,
  FailureCode as FC,
  type Message,
  MessageType,
  uuidToHex,
  uuidToString,
  type WorkerStatus,
} from "../../wire/mod.ts";
import { RequestError, RpcError } from "../../lib/rpc.ts";
import { createLogger, type Logger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { FuseMount, type FuseStats } from "../../fuse/mod.ts";
import { LeaderClient } from "../master/client.ts";
import { openWorkerStorage, type WorkerStorage } from "./storage_access.ts";
import { CacheIndex } from "./cache_index.ts";
import { heartbeatPeriod } from "./heartbeat.ts";
import {
  chunkKey,
  ChunkLifecycle,
  type FinishedAnswer,
  type LifecycleEffect,
  type LifecycleInput,
  LifecycleInvariantError,
  type StatusAnswer,
} from "./chunk_lifecycle.ts";
import { ChunkLogServer } from "./log_server.ts";
import { type ProgramFile, ProgramFiles } from "./program_files.ts";
import { isRealDir, OutputQuotaError, uploadOutputs } from "./outputs.ts";
import { type ProgramRun, type RunResult, startProgram } from "./runner.ts";
import { ChunkRun, ChunkSandbox } from "./chunk_sandbox.ts";
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
  /**
   * Storage endpoints (`,`-separated) used only when the masters know no storage node (nodes
   * that do not register); "" = none: the membership comes from the masters.
   */
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
  const need = (k: "data" | "balancer" | "masters"): string => {
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
    // Seeds only: the storage membership comes from the masters.
    storage: values.storage ?? "",
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

/** What the shell holds of a chunk while its effects run (its lifecycle is in the core). */
interface ChunkIo {
  log: Logger;
  held: Held;
  /** The program file it holds (released when it ends). */
  programFile: ProgramFile | null;
  /** Set while it waits for its program: stops the wait (cancel, shutdown). */
  onAbort: (() => void) | null;
  /** The slot's directory (unsandboxed: `scratch/`, `out/`, `stdout`, `stderr`). */
  dir: string | null;
  /** Its limits (sandboxed; resolved by `prepare`). */
  limits: ChunkLimits | null;
  /** The input directory the program sees. */
  inputDir: string;
  /** Its run in the slot's sandbox, once begun. */
  run: ChunkRun | null;
  /** Its program, once started. */
  program: ProgramRun | null;
  /** Where its outputs are. */
  outDir: string;
  /** How its program ended. */
  result: RunResult | null;
  /** Where its program's stdout and stderr go, once it started (served by `dsys logs`). */
  logs?: { stdout: string; stderr: string };
  /** The pending "it runs" report (sent only if it still runs after RUNNING_REPORT_DELAY_MS). */
  runningTimer?: ReturnType<typeof setTimeout>;
}

/**
 * How long a program runs before the masters are told it runs (`dsys status` shows it running,
 * `dsys logs` finds its worker). Most chunks of a busy job end sooner: for them the report (a
 * round trip to the leader and a ticket check there, per chunk) would be stale by the time it
 * could be read, and the final status says all. A longer chunk is shown running this much late.
 */
export const RUNNING_REPORT_DELAY_MS = 100;

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
  /** Where program files are (`#programs`: copied from the cache by the first chunk to run one). */
  #programsDir: string;
  #programs!: ProgramFiles;
  /** The chunk lifecycle (pure): which chunk is where, slots, reports, fencing. Slot i (handed
   * out by it) has the directory `<chunks>/slot-i`, and sandboxed its uid and cgroup.
   * Unsandboxed, the directory holds `scratch/`, `out/`, `stdout`, `stderr`, reused, emptied,
   * rather than created and deleted per chunk: on ext4 a create after many recent deletes scans
   * for an inode not recently freed, which profiling showed to be the worker's main cost per
   * trivial chunk (3 mkdirs + 2 files each time). Sandboxed, the chunk's files live on a tmpfs of
   * its own (`slot-i/fs`). */
  #core: ChunkLifecycle;
  /** What the effects of each chunk in the core hold, by chunk key. */
  #io = new Map<string, ChunkIo>();
  /** Inputs that arrived while the core was stepping (fed right after, in order). */
  #inputs: LifecycleInput[] = [];
  #stepping = false;
  /** The timer of the next report retry, and when it fires. */
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #retryAtMs = Infinity;
  /** The I/O of effects under way (a chunk's steps, reports): shutdown waits for all of it. */
  #sending = new Set<Promise<void>>();
  /** Waiters for the core to hold no chunk (close). */
  #idleWaiters: (() => void)[] = [];
  /** The slots' sandboxes; null with --no-sandbox. */
  #sandbox: ChunkSandbox | null = null;
  /** Input dir of chunks of jobs without inputs (empty, read-only, shared). */
  #emptyInputDir: string;
  #index: CacheIndex;
  #mount!: FuseMount;
  /** All of the worker's storage access (the mount's fetches, output uploads). */
  #storage!: WorkerStorage;
  #masters!: LeaderClient;
  #balancer!: BalancerClient;
  /** Chunks per job directory in the mount, so a job's directory goes when its last chunk ends. */
  #jobRefs = new Map<string, number>();
  #closing = false;
  #registered = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #registrations = 0;
  /** Serves the running chunks' logs (with --listen). */
  #logServer: ChunkLogServer | null = null;
  /** Where it does ("" = nowhere), as told to the balancer. */
  #logEndpoint = "";

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
    this.#core = new ChunkLifecycle(nodeId, opts.slots);
  }

  async start(): Promise<void> {
    // A worker listens only to serve its chunks' logs (--listen), and not at all without it.
    setUpNodeSecurity("worker", this.#opts.security ?? {}, this.#opts.listen, this.#log);
    if (this.#opts.listen) {
      this.#logServer = new ChunkLogServer({
        node: this.nodeId,
        log: this.#log,
        lookup: (job, chunkIndex) => {
          const c = this.#core.logTarget(job, chunkIndex);
          if (!c) return null;
          const logs = this.#io.get(c.key)?.logs;
          return {
            owner: c.req.owner ?? "",
            attempt: c.req.attempt,
            stdout: logs?.stdout ?? null,
            stderr: logs?.stderr ?? null,
          };
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
    this.#storage = openWorkerStorage(this.#opts.storage, this.#opts.masters, this.nodeId);
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
    this.#programs = new ProgramFiles(this.#programsDir, this.#mount);
    // --cache-bytes may be smaller than what an earlier run left in the cache.
    await this.#mount.enforceCacheLimit(this.#opts.cacheBytes);
  }

  stats(): WorkerStats {
    return {
      ...this.#core.stats(),
      registrations: this.#registrations,
      running: this.#core.size(),
      fuse: this.#mount.stats(),
    };
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
    const n = await this.#storage.getToFile(id, cachePath, this.#core.readCapFor(uuidToHex(id)));
    this.#log.debug("fetched", { file: uuidToHex(id), bytes: n });
    this.#opts.metrics?.fetched(n);
  }

  #onFetchError(id: Uint8Array, e: unknown): void {
    const hex = uuidToHex(id);
    const text = e instanceof Error ? e.message : String(e);
    this.#log.warn("fetch failed", { file: hex, error: text });
    this.#step({ kind: "fetch_error", file: hex, text });
  }

  // ------------------------------------------------------------------------------------------
  // Balancer: registration, heartbeats, worker_request

  async #balancerLoop(): Promise<void> {
    const own = this.#opts.heartbeatMs ?? 500;
    while (!this.#closing) {
      // What the balancer told us (docs/wire.md, worker_heartbeat); no answer: our own.
      let told: number | null = null;
      try {
        // Finishes first: a balancer that just took over must hear that a chunk it thinks
        // runs here ended before a registration or heartbeat says every slot is free (it would
        // run that chunk again).
        await this.#flushFinished();
        told = !this.#registered ? await this.#register() : await this.#heartbeat();
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
      const period = heartbeatPeriod(own, told);
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
    for (let head = this.#core.unackedHead(); head && !this.#closing;) {
      await this.#balancer.request(head, 2000).catch((e) => {
        // An error answer (stale, unknown worker) is an answer: retrying cannot help.
        if (!(e instanceof RpcError) || e.code === ErrorCode.Unavailable) throw e;
      });
      this.#step({ kind: "resent", report: head });
      head = this.#core.unackedHead();
    }
  }

  /** Registers; returns the heartbeat interval the balancer asks for (the reply's value). */
  async #register(): Promise<number> {
    const { snapshot, files } = await this.#index.full();
    const reply = await this.#balancer.request({
      type: MessageType.WorkerRegister,
      node: this.nodeId,
      slots: this.#opts.slots,
      freeSlots: this.#core.freeSlots(),
      files,
      label: this.#opts.label ?? `${hostname()}/${uuidToHex(this.nodeId).slice(0, 8)}`,
      endpoint: this.#logEndpoint,
    }, 2000);
    this.#index.commit(snapshot);
    this.#registered = true;
    this.#registrations++;
    this.#log.info("registered with balancer", { files: files.length });
    return reply.type === MessageType.Ok ? reply.value : 0;
  }

  /** Heartbeats; returns the interval the balancer asks for next (the reply's value). */
  async #heartbeat(): Promise<number> {
    const { snapshot, added, evicted } = await this.#index.delta();
    const reply = await this.#balancer.request({
      type: MessageType.WorkerHeartbeat,
      node: this.nodeId,
      slots: this.#opts.slots,
      freeSlots: this.#core.freeSlots(),
      added,
      evicted,
    }, 2000);
    // Only an acknowledged heartbeat moves the baseline, so a lost one is repeated in the next.
    this.#index.commit(snapshot);
    return reply.type === MessageType.Ok ? reply.value : 0;
  }

  /**
   * A push of the balancer: `worker_request` (answered at once: accepted, the slot taken, or
   * refused) or `job_cancel` (answered with how many chunks it stopped; each is killed with
   * every process of it, nothing is uploaded or reported to the masters, and the balancer hears
   * its slot is free).
   */
  #onRequest(m: Message): Message {
    if (m.type === MessageType.JobCancel) {
      const fx = this.#step({
        kind: "cancel",
        job: m.job,
        chunks: m.chunks.map((c) => c.chunkIndex),
      });
      const ack = fx.find((e) => e.kind === "cancel_ack");
      return { type: MessageType.Ok, node: this.nodeId, value: ack?.count ?? 0 };
    }
    if (m.type !== MessageType.WorkerRequest) {
      throw new RequestError(ErrorCode.WrongRole, `worker does not serve message type ${m.type}`);
    }
    const ack = this.#step({ kind: "place", req: m }).find((e) => e.kind === "ack");
    if (!ack) throw new LifecycleInvariantError("worker_request answered while the core stepped");
    return {
      type: MessageType.WorkerRequestAck,
      node: this.nodeId,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: m.attempt,
      accepted: ack.accepted,
      reason: ack.reason,
    };
  }

  // ------------------------------------------------------------------------------------------
  // The core and its effects

  /**
   * Feeds an input to the core and carries out its effects; returns them. An input that arrives
   * while effects are being carried out (one that ends synchronously) is fed right after, in
   * order, and gets [] here. An invariant the core finds broken is thrown on: a bug, which stops
   * the worker rather than run chunks on a state it cannot trust.
   */
  #step(input: LifecycleInput): LifecycleEffect[] {
    if (this.#stepping) {
      this.#inputs.push(input);
      return [];
    }
    this.#stepping = true;
    let first: LifecycleEffect[] | null = null;
    try {
      for (let next: LifecycleInput | undefined = input; next; next = this.#inputs.shift()) {
        const fx = this.#core.step(next);
        first ??= fx;
        for (const e of fx) this.#do(e);
      }
    } finally {
      this.#stepping = false;
    }
    this.#armRetry();
    return first ?? [];
  }

  /** Feeds an input from an effect that ended (after an await: never inside a step). */
  #feed(input: LifecycleInput): void {
    this.#step(input);
  }

  /** Sets the timer of the core's next due report retry (one timer for all). */
  #armRetry(): void {
    const due = this.#core.nextDueMs();
    if (due === null || due >= this.#retryAtMs) return;
    clearTimeout(this.#retryTimer);
    this.#retryAtMs = due;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#retryAtMs = Infinity;
      this.#step({ kind: "tick", nowMs: Date.now() });
    }, Math.max(0, due - Date.now()));
  }

  #ioOf(key: string): ChunkIo {
    let io = this.#io.get(key);
    if (!io) {
      io = {
        log: this.#log.child({ chunk: key }),
        held: { pinned: [], jobDir: null, uid: null },
        programFile: null,
        onAbort: null,
        dir: null,
        limits: null,
        inputDir: this.#emptyInputDir,
        run: null,
        program: null,
        outDir: "",
        result: null,
      };
      this.#io.set(key, io);
    }
    return io;
  }

  /** Runs an effect's I/O; what fails unexpectedly is logged (its chunk's effect handles its
   * own errors: this is a last resort), and a broken invariant stops the worker. */
  #task(key: string, body: () => Promise<void>): void {
    const p = body().catch((e) => {
      if (e instanceof LifecycleInvariantError) throw e;
      this.#log.error("chunk handling failed", { chunk: key, error: e });
    });
    this.#sending.add(p);
    p.finally(() => this.#sending.delete(p));
  }

  /** Carries out one effect of the core. */
  #do(e: LifecycleEffect): void {
    switch (e.kind) {
      case "ack":
        if (e.why === "new") {
          const r = this.#core.chunk(e.key)?.req;
          this.#log.info("chunk accepted", {
            job: r ? uuidToHex(r.job) : "",
            chunk: r?.chunkIndex ?? -1,
            attempt: r?.attempt ?? 0,
            epoch: e.epoch,
          });
        } else if (e.why === "fenced") {
          this.#log.warn("worker_request of an old balancer epoch refused", {
            epoch: e.epoch,
            newest: e.newest,
            chunk: e.key,
          });
        }
        return;
      case "cancel_ack":
        if (e.count > 0) {
          this.#log.info("chunks cancelled", { job: uuidToHex(e.job), chunks: e.count });
        }
        return;
      case "fetch_program":
        return this.#task(e.key, () => this.#fetchProgram(e.key));
      case "abort_fetch":
        this.#io.get(e.key)?.onAbort?.();
        return;
      case "prepare":
        return this.#task(e.key, () => this.#prepare(e.key, e.slot));
      case "spawn":
        return this.#task(e.key, () => this.#spawn(e.key, e.slot));
      case "kill":
        this.#io.get(e.key)?.program?.kill();
        return;
      case "report_running":
        return this.#reportRunning(e.key, e.status, e.timeoutMs);
      case "upload":
        return this.#task(e.key, () => this.#upload(e.key));
      case "clean_up":
        return this.#task(e.key, () => this.#cleanUp(e.key, e.slot, e.ended));
      case "send_status":
        return this.#task(e.key, () => this.#sendStatus(e.key, e.status, e.timeoutMs));
      case "send_lost":
        return this.#task(
          chunkKey(e.status),
          () => this.#masters.request(e.status, e.timeoutMs).then(() => {}, () => {}),
        );
      case "send_finished":
        return this.#task(
          chunkKey(e.report),
          () => this.#sendFinished(e.report, e.hadInputs, e.timeoutMs),
        );
      case "wake":
        this.#wake?.();
        return;
      case "forget":
        this.#io.delete(e.key);
        if (this.#core.size() === 0) { for (const w of this.#idleWaiters.splice(0)) w(); }
        return;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Running a chunk: the effects' I/O

  /** Gets the chunk's program file; a shutdown or cancel does not wait for the fetch (storage
   * may be slow or gone). */
  async #fetchProgram(key: string): Promise<void> {
    const io = this.#ioOf(key);
    const req = this.#core.chunk(key)!.req;
    const acquiring = this.#programs.acquire(req);
    let p: ProgramFile | null;
    try {
      p = await new Promise<ProgramFile | null>((resolve, reject) => {
        io.onAbort = () => resolve(null);
        acquiring.then(resolve, reject);
      });
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      io.log.warn("program unavailable", { program: uuidToHex(req.programId), error: text });
      return this.#feed({ kind: "program_failed", key, text });
    } finally {
      io.onAbort = null;
    }
    if (p === null) {
      // Stopped while fetching: the program is released whenever the fetch ends.
      acquiring.then((p) => this.#programs.release(p), () => {});
      return this.#feed({ kind: "program_failed", key, text: "stopped" });
    }
    io.programFile = p;
    this.#feed({ kind: "program_ready", key });
  }

  /** Tells the masters the chunk runs, once it has run for RUNNING_REPORT_DELAY_MS (one
   * best-effort try; not at all when it ended sooner: its final status follows at once). */
  #reportRunning(key: string, status: WorkerStatus, timeoutMs: number): void {
    const io = this.#ioOf(key);
    clearTimeout(io.runningTimer);
    const t = setTimeout(() => {
      io.runningTimer = undefined;
      if (this.#core.chunk(key)?.phase !== "running" || this.#closing) return;
      this.#masters.request(status, timeoutMs).catch(() => {});
    }, RUNNING_REPORT_DELAY_MS);
    Deno.unrefTimer(t);
    io.runningTimer = t;
  }

  /** Resolves the chunk's limits, makes its slot's directory, mounts its inputs. */
  async #prepare(key: string, slot: number): Promise<void> {
    await Promise.resolve(); // never inside the step that asked for it
    const io = this.#ioOf(key);
    const req = this.#core.chunk(key)!.req;
    // What ended it, fed once it has (a step's own failure is not mistaken for setup's).
    let ended: LifecycleInput = { kind: "prepared", key };
    try {
      io.dir = this.#takeDir(slot);
      const sb = this.#sandbox;
      // A sandboxed chunk's limits: refused before anything is set up when they are beyond
      // what this worker allows (errors are values: the chunk fails with Policy and the reason).
      if (sb) {
        const lim = resolveLimits(req, sb.policy);
        if (!lim.ok) {
          io.log.info("chunk refused by the worker's limits", { ...lim.refusal });
          ended = { kind: "prepare_failed", key, failure: FC.Policy, reason: lim.refusal.reason };
        } else io.limits = lim.limits;
      }
      // A job without inputs still gets an (empty, local, read-only) input dir, so the variable
      // is usable.
      if (ended.kind === "prepared" && req.inputFiles.length > 0) {
        const jobDir = uuidToString(req.job);
        this.#jobRefs.set(jobDir, (this.#jobRefs.get(jobDir) ?? 0) + 1);
        io.held.jobDir = jobDir;
        for (const f of req.inputFiles) {
          this.#opts.metrics?.input(f.size, this.#mount.cachePath(f.id));
          this.#mount.addFile({ path: `${jobDir}/${f.name}`, id: f.id, size: f.size });
          // Pinned while the chunk runs: its inputs must not be evicted between reads.
          this.#mount.pin(f.id);
          io.held.pinned.push(f.id);
        }
        io.inputDir = `${this.#mount.mountpoint}/${jobDir}`;
      }
    } catch (e) {
      // Setup failed (bad input name, disk full, …): still a definite result for the master.
      const text = e instanceof Error ? e.message : String(e);
      io.log.warn("chunk setup failed", { error: text });
      const reason = `worker could not run chunk: ${text}`;
      ended = { kind: "prepare_failed", key, failure: FC.Internal, reason };
    }
    if (ended.kind === "prepared") {
      io.log.debug("chunk started", {
        inputs: req.inputFiles.length,
        timeLimitMs: req.timeLimitMs,
      });
    }
    this.#feed(ended);
  }

  /** Starts the chunk's program in slot `slot` (its sandbox), then waits for its end. */
  async #spawn(key: string, slot: number): Promise<void> {
    const io = this.#ioOf(key);
    const req = this.#core.chunk(key)!.req;
    const dir = io.dir!;
    const programPath = io.programFile!.path;
    const jobDir = uuidToString(req.job);
    const inputDir = io.inputDir;
    const argument = new TextDecoder().decode(req.argument);
    const args = req.argument.length > 0 ? [argument] : [];
    const sb = this.#sandbox;
    const limits = io.limits;
    let program: ProgramRun;
    try {
      io.outDir = `${dir}/out`;
      if (sb && limits) {
        const run = io.run = await sb.begin(slot, limits);
        io.outDir = run.fs.out;
        if (io.held.jobDir !== null) {
          // The mount serves the job's directory to this slot's uid only while the chunk runs.
          this.#mount.allowUid(io.held.jobDir, sb.uid(slot));
          io.held.uid = sb.uid(slot);
        }
        const env = sandboxEnv({
          jobId: jobDir,
          chunkIndex: req.chunkIndex,
          chunkCount: req.numChunks,
          attempt: req.attempt,
          argument,
        });
        const jobInputs = io.held.jobDir !== null ? inputDir : null;
        io.logs = { stdout: run.fs.stdout, stderr: run.fs.stderr };
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
            DSYS_OUTPUT_DIR: io.outDir,
          },
          cwd: `${dir}/scratch`,
          timeLimitMs: req.timeLimitMs,
          stdoutPath: (io.logs = { stdout: `${dir}/stdout`, stderr: `${dir}/stderr` }).stdout,
          stderrPath: `${dir}/stderr`,
        });
      }
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      io.log.warn("chunk setup failed", { error: text });
      return this.#feed({ kind: "spawn_failed", key, text });
    }
    io.program = program;
    // A chunk stopped meanwhile is killed by the core's answer to this.
    this.#feed({ kind: "spawned", key, pid: program.pid });
    const r = await program.result;
    clearTimeout(io.runningTimer);
    io.result = r;
    const hit = io.run && !r.reapError ? io.run.finish(r.signal) : null;
    this.#feed({
      kind: "exited",
      key,
      end: {
        exitCode: r.exitCode,
        signal: r.signal,
        timedOut: r.timedOut,
        aborted: r.aborted,
        spawnError: r.spawnError,
        reapError: r.reapError,
        durationMs: r.durationMs,
        stderrTail: r.stderrTail,
        limitHit: hit,
      },
    });
  }

  /** Uploads the outputs of a chunk whose program ended. */
  async #upload(key: string): Promise<void> {
    const io = this.#ioOf(key);
    const req = this.#core.chunk(key)!.req;
    let ended: LifecycleInput;
    try {
      // Nothing of the chunk runs any more (its cgroup is empty): its tmpfs goes read-only for
      // everyone, so what is hashed and uploaded is exactly what it left.
      io.run?.seal();
      const stdoutPath = io.run ? io.run.fs.stdout : `${io.dir}/stdout`;
      const max = io.limits ? io.limits.diskBytes : Infinity;
      const outputs = await uploadOutputs(
        this.#storage,
        io.outDir,
        stdoutPath,
        io.result!.stdoutBytes,
        io.log,
        req.owner,
        max,
      );
      ended = { kind: "uploaded", key, outputs };
    } catch (e) {
      const quota = e instanceof OutputQuotaError;
      const text = e instanceof Error ? e.message : String(e);
      ended = { kind: "upload_failed", key, quota, text };
    }
    this.#feed(ended);
  }

  /** Gives back what the chunk holds: its sandbox run, mounts, pins, program file, slot. */
  async #cleanUp(key: string, slot: number | null, ended: WorkerStatus | null): Promise<void> {
    await Promise.resolve(); // never inside the step that asked for it
    const io = this.#ioOf(key);
    if (ended) {
      // A line per succeeded chunk is noise at hundreds of chunks a second (and costs every
      // process that handles the log stream): failures at info, successes at debug.
      (ended.state === CS.Succeeded ? io.log.debug : io.log.info)("chunk ended", {
        state: ended.state,
        exitCode: ended.exitCode,
        signal: ended.signal,
        failure: ended.failure,
        durationMs: ended.durationMs,
        outputs: ended.outputs.length,
      });
    }
    let usable = true;
    try {
      // The chunk's mounts go in the background; the slot's next chunk waits for that.
      io.run?.end(io.log);
      this.#release(io.held);
      if (io.programFile) this.#programs.release(io.programFile);
      if (io.dir !== null && slot !== null) {
        usable = await this.#returnDir(io.dir, slot, !!io.result?.reapError, io.log);
      }
      if (io.held.pinned.length > 0) this.#enforceCache();
    } catch (e) {
      io.log.error("chunk clean-up failed", { error: e });
    }
    const c = this.#core.chunk(key)!;
    this.#opts.metrics?.chunkEnded(c.aborted ? null : c.outcome, c.cancelled, c.aborted);
    if (c.cancelled) io.log.info("chunk cancelled: every process of it is gone", {});
    this.#feed({ kind: "cleaned", key, slotUsable: usable });
  }

  /** Sends a final worker_status; the core re-sends it (backoff) until a master answers. */
  async #sendStatus(key: string, status: WorkerStatus, timeoutMs: number): Promise<void> {
    const log = this.#io.get(key)?.log ?? this.#log;
    let answer: StatusAnswer = "acked";
    try {
      await this.#masters.request(status, timeoutMs);
    } catch (e) {
      if (!(e instanceof RpcError)) {
        log.error("worker_status could not be sent", { error: e });
        answer = "rejected";
      } else if (e.code !== ErrorCode.Unavailable && e.code !== ErrorCode.NotLeader) {
        // The master rejected it for good (e.g. stale attempt): retrying cannot help.
        log.warn("master rejected worker_status", { error: e });
        answer = "rejected";
      } else {
        if (this.#closing) {
          log.warn("shutting down before a master acknowledged the status", { error: e });
        } else log.info("worker_status not acknowledged yet; retrying", { error: e });
        answer = "retry";
      }
    }
    this.#feed({ kind: "status_answer", key, answer, nowMs: Date.now() });
  }

  /** Tells the balancer a chunk finished (its slot is free); kept by the core when it is away. */
  async #sendFinished(
    report: ChunkFinished,
    hadInputs: boolean,
    timeoutMs: number,
  ): Promise<void> {
    let answer: FinishedAnswer = "acked";
    try {
      await this.#balancer.request(report, timeoutMs);
    } catch (e) {
      // Away (or failing over): the balancer loop re-sends it before its next heartbeat, to
      // whichever balancer is primary by then.
      answer = e instanceof RpcError && e.code !== ErrorCode.Unavailable
        ? "rejected"
        : "unavailable";
    }
    this.#feed({ kind: "finished_answer", report, answer, hadInputs });
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
   * (`broken`) is taken out of use. False when the slot must not be used again. */
  async #returnDir(dir: string, slot: number, broken: boolean, log: Logger): Promise<boolean> {
    if (this.#sandbox) {
      if (!broken) return true;
      const usable = this.#opts.slots - this.#core.brokenSlots() - 1;
      log.error("slot taken out of use", { slot, usable });
      return false;
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
    return true;
  }

  /** Trims the cache to --cache-bytes. The mount does so after each fetch, but files pinned by a
   * running chunk are skipped then, so the bound is restored here once the chunk let go. */
  #enforceCache(): void {
    if (this.#closing) return;
    this.#mount.enforceCacheLimit(this.#opts.cacheBytes).catch((e) =>
      this.#log.warn("cache eviction failed", { error: e })
    );
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

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    // Kills what runs, stops program fetches, refuses new work; each chunk then ends through
    // its clean-up (reported lost to the masters, or cancelled to the balancer).
    this.#step({ kind: "shutdown" });
    this.#wake?.();
    if (this.#core.size() > 0) {
      await new Promise<void>((r) => this.#idleWaiters.push(r));
    }
    // The last reports (lost, chunk_finished) go out before the sockets close.
    while (this.#sending.size > 0) await Promise.allSettled([...this.#sending]);
    clearTimeout(this.#retryTimer);
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

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "worker"; // no --allow-sys: the id part of the label still tells workers apart
  }
}
