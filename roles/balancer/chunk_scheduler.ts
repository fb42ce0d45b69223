/**
 * The balancer's pure scheduling core: which chunk runs on which worker.
 *
 * No I/O and no clock of its own: every method that depends on time takes `nowMs`, so the same
 * sequence of calls always yields the same decisions (unit tests and the standby replay rely on
 * that). The I/O shell (service.ts) feeds it messages and carries out its decisions.
 *
 * Life of a chunk: `dispatch` queues it; `assign` picks a worker and marks it running there
 * (the slot is taken before the worker even sees the request, so two decisions never
 * overbook a worker); then `finished` frees it, `refused` puts it back in the queue to go
 * elsewhere, and a worker that stops heartbeating gets all its chunks requeued with attempt+1.
 * @module
 */
import { type FileEntry, type LimitFields, type Uuid, uuidToHex } from "../../wire/mod.ts";
import { MAX_TOLD_HEARTBEAT_MS } from "../worker/heartbeat.ts";
import { FreeHolders, FreeIndex } from "./free_index.ts";

/** Tunables of the scheduler. */
export interface SchedulerOptions {
  /** A worker with no register/heartbeat for this long is dead; its chunks are requeued. */
  deadAfterMs: number;
  /** A chunk a worker refused avoids that worker for this long (then may retry it). */
  refuseBackoffMs?: number;
  /**
   * A re-dispatch of a chunk that finished more than this long ago runs it again: the master
   * still lacks its result, so the worker's report was lost (the master keeps the first result).
   * 0 disables re-runs.
   */
  rerunFinishedAfterMs?: number;
  /**
   * A worker that heartbeats "all slots free" while chunks were placed on it at least this
   * long ago does not run them (its chunk_finished was lost, or the request never arrived):
   * they are requeued with attempt+1. Must exceed the worker_request ack timeout. 0 disables.
   */
  idleGraceMs?: number;
  /**
   * The heartbeat interval of a small cluster, ms (the workers' default `--heartbeat-ms`):
   * `deadAfterMs` is meant for it. Default 500.
   */
  heartbeatMs?: number;
  /**
   * Heartbeats per second the balancer asks of all its workers together (Nomad's
   * max_heartbeats_per_second): each register/heartbeat reply tells the worker to heartbeat
   * every max(heartbeatMs, workers / this) seconds (at most MAX_HEARTBEAT_MS), and a worker is
   * dead after max(deadAfterMs, DEAD_AFTER_INTERVALS × the interval it was told). 0: no
   * adaptation (every worker keeps its own interval). Default 2000.
   * (A worker told the base interval keeps exactly deadAfterMs.)
   */
  maxHeartbeatsPerSec?: number;
}

/** Longest heartbeat interval the balancer ever asks for, ms: what a worker accepts at most. */
export const MAX_HEARTBEAT_MS = MAX_TOLD_HEARTBEAT_MS;
/** A worker told a long interval is dead after this many intervals without a word. */
export const DEAD_AFTER_INTERVALS = 3;
/**
 * Placement looks at every free worker holding a chunk's inputs while there are at most this
 * many; beyond, at the first in free-slot order holding its largest input (see #bestWorker).
 */
export const LOCALITY_SCAN = 64;

/** The job-wide part of a chunk (shared by all chunks of a job). */
export interface JobInfo {
  job: Uuid;
  numChunks: number;
  timeLimitMs: number;
  /** File id of the program (workers fetch it from storage like an input). */
  programId: Uuid;
  /** Program size, bytes. */
  programSize: number;
  argument: Uint8Array;
  inputFiles: FileEntry[];
  /** Keyring name of the job's owner (job_dispatch `owner`; "" or absent in insecure mode). */
  owner?: string;
  /** The chunk limits the job asked for (job_dispatch's limit fields that are set). */
  limits?: LimitFields;
}

/**
 * The key a worker registered with (security on): the balancer answers FORBIDDEN to every
 * message about this worker's node id from another key, mints its tickets and read capabilities
 * for this key, and the standby gets it with the rest of the worker's state.
 */
export interface WorkerKey {
  /** Z85 CURVE public key. */
  publicKey: string;
  /** Its name on the keyring (for logs). */
  name: string;
}

/** One chunk waiting or running. */
export interface ChunkTask {
  jobKey: string;
  chunkIndex: number;
  attempt: number;
  /** Worker key -> time until which this chunk avoids that worker (it refused it); lazily made. */
  avoid: Map<string, number> | null;
  /** When it was last placed on a worker (0 while never placed). */
  placedAtMs: number;
  /** Key of the worker it is placed on; "" while queued. */
  worker: string;
}

/** What the scheduler knows of one worker. */
export interface WorkerInfo {
  /** Worker node uuid. */
  id: Uuid;
  /** Hex of `id`: the key used everywhere. */
  key: string;
  slots: number;
  /** Free slots the worker last reported (for display; scheduling uses `running`). */
  reportedFree: number;
  /** Hex ids of files in the worker's cache (reported, plus inputs of chunks it was given). */
  files: Set<string>;
  lastSeenMs: number;
  label: string;
  /**
   * Busy slots the worker reported beyond the chunks we placed there (it runs work this
   * balancer does not know: after a balancer restart or failover). They count as taken.
   */
  phantom: number;
  /** Chunks placed on it: chunk key -> task. */
  running: Map<string, ChunkTask>;
  /** Sequence number of its last assignment (round-robin tie break: oldest first). */
  lastAssignSeq: number;
  /** The key it registered with; null without security (insecure mode: no binding). */
  auth: WorkerKey | null;
  /** Where the worker serves its chunks' logs ("" = nowhere). */
  endpoint: string;
  /**
   * The heartbeat interval the worker was last told (ms; the base interval until told): its
   * dead-worker timeout follows from it.
   */
  heartbeatMs: number;
  /** Registration order (placement's last tie break; internal). */
  ord: number;
  /** Whether it is listed among the free holders of its files (internal: free slots > 0). */
  listed: boolean;
}

/** One placement decision: send `chunk` of `job` to `worker`. */
export interface Assignment {
  worker: WorkerInfo;
  job: JobInfo;
  chunkIndex: number;
  attempt: number;
}

/** A worker declared dead and what happened to its chunks. */
export interface DeadWorker {
  worker: WorkerInfo;
  /** Chunks put back in the queue (with their new attempt numbers). */
  requeued: { job: Uuid; chunkIndex: number; attempt: number }[];
}

/** Counts for logs, node lists and tests. */
export interface SchedulerStats {
  workers: number;
  slots: number;
  freeSlots: number;
  queued: number;
  running: number;
  finished: number;
  jobs: number;
}

/** Outcome of a dispatch: how many chunks were new and how many were duplicates. */
export interface DispatchResult {
  queued: number;
  ignored: number;
}

/** Plain-data form of a scheduler's whole state (see ChunkScheduler.exportState). */
export interface SchedulerState {
  opts: Required<SchedulerOptions>;
  workers: {
    id: Uuid;
    slots: number;
    reportedFree: number;
    files: string[];
    lastSeenMs: number;
    label: string;
    phantom: number;
    lastAssignSeq: number;
    running: string[];
    /** The registering key (absent: unbound, insecure mode). */
    auth?: WorkerKey | null;
    endpoint?: string;
    /** Heartbeat interval last told (absent: an older primary's snapshot; the base). */
    heartbeatMs?: number;
  }[];
  jobs: {
    key: string;
    info: JobInfo;
    /** Chunk indexes, front first. */
    queue: number[];
    runningCount: number;
    tasks: {
      chunkIndex: number;
      attempt: number;
      avoid: [string, number][];
      placedAtMs: number;
      worker: string;
    }[];
  }[];
  /** Per job key: [chunk index, attempt, state, atMs]. */
  finished: [string, [number, number, number, number][]][];
  /** [job key, chunk index, atMs] in finishing order (for pruning). */
  finishOrder: [string, number, number][];
  /** Cancelled chunks by job: [job key, cancelled at ms, chunk indices (none = all)]. */
  cancelled?: [string, number, number[]][];
  jobOrder: string[];
  jobCursor: number;
  assignSeq: number;
}

/** A request the scheduler cannot act on (unknown worker, bad chunk index). */
export class SchedulerError extends Error {
  /** "unknown_worker" | "bad_request". */
  readonly kind: "unknown_worker" | "bad_request";
  constructor(kind: "unknown_worker" | "bad_request", message: string) {
    super(message);
    this.name = "SchedulerError";
    this.kind = kind;
  }
}

interface JobEntry {
  info: JobInfo;
  /** Indexes into `inputs`, largest file first (ties: job order). */
  bySize: number[];
  queue: Deque<ChunkTask>;
  /** Chunks of this job currently on some worker. */
  runningCount: number;
  /** Every queued or running chunk of the job, by index (numbers: cheap for huge jobs). */
  tasks: Map<number, ChunkTask>;
  /** Hex ids of the input files with their sizes, computed once per job (locality checks). */
  inputs: { key: string; size: number }[];
}

function inputKeys(info: JobInfo): { key: string; size: number }[] {
  return info.inputFiles.map((f) => ({ key: uuidToHex(f.id), size: f.size }));
}

function bySize(inputs: { size: number }[]): number[] {
  return inputs.map((_, i) => i).sort((a, b) => inputs[b].size - inputs[a].size || a - b);
}

interface FinishedEntry {
  attempt: number;
  state: number;
  atMs: number;
}

/**
 * A queue with O(1) push at both ends and cheap removal near the front: job queues can hold a
 * million chunks, so Array shift/unshift/splice at the front (O(n)) are not an option.
 */
export class Deque<T> {
  /** Items pushed to the front, last = first in the queue. */
  #front: T[] = [];
  #back: (T | undefined)[] = [];
  #head = 0;

  /** Number of items. */
  get length(): number {
    return this.#front.length + this.#back.length - this.#head;
  }

  /** The i-th item from the front. */
  at(i: number): T {
    const f = this.#front.length;
    return i < f ? this.#front[f - 1 - i] : this.#back[this.#head + i - f] as T;
  }

  /** Appends at the back. */
  push(x: T): void {
    this.#back.push(x);
  }

  /** Inserts at the front. */
  unshift(x: T): void {
    this.#front.push(x);
  }

  /** Removes and returns the i-th item; O(i) (callers only look near the front). */
  removeAt(i: number): T {
    const f = this.#front.length;
    if (i < f) return this.#front.splice(f - 1 - i, 1)[0];
    const idx = this.#head + i - f;
    const x = this.#back[idx] as T;
    for (let j = idx; j > this.#head; j--) this.#back[j] = this.#back[j - 1];
    this.#back[this.#head] = undefined;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#back.length) {
      this.#back = this.#back.slice(this.#head);
      this.#head = 0;
    }
    return x;
  }

  /** All items, front to back. */
  toArray(): T[] {
    const out = this.#front.slice().reverse();
    for (let i = this.#head; i < this.#back.length; i++) out.push(this.#back[i] as T);
    return out;
  }

  /** A deque holding `items` in order. */
  static from<T>(items: T[]): Deque<T> {
    const d = new Deque<T>();
    d.#back = items.slice();
    return d;
  }
}

/** Slots of a worker the scheduler may still fill. */
export function freeOf(w: WorkerInfo): number {
  return Math.max(0, w.slots - w.running.size - w.phantom);
}

/** How long a cancel is remembered, ms. */
export const CANCEL_MEMORY_MS = 10 * 60_000;
/** Most jobs whose cancels are remembered at once. */
export const MAX_CANCELLED_JOBS = 10_000;

/** Key of a chunk: job hex + index. */
export function chunkKey(jobKey: string, chunkIndex: number): string {
  return `${jobKey}/${chunkIndex}`;
}

/** The balancer's scheduling state machine (see module doc). */
export class ChunkScheduler {
  /** Effective options (defaults filled in; a standby adopts its primary's on snapshot). */
  readonly opts: Required<SchedulerOptions>;
  #workers = new Map<string, WorkerInfo>();
  #jobs = new Map<string, JobEntry>();
  /** Round-robin order of jobs with queued chunks (keys; may hold stale ones, skipped). */
  #jobOrder: string[] = [];
  /** Members of #jobOrder, so a job is never listed twice. */
  #inOrder = new Set<string>();
  #jobCursor = 0;
  /** Finished chunks: job key -> chunk index -> result. */
  #finished = new Map<string, Map<number, FinishedEntry>>();
  #finishedCount = 0;
  /** Finishes in order, for pruning the oldest: [job key, chunk index, atMs]. */
  #finishOrder = new Deque<[string, number, number]>();
  #assignSeq = 0;
  /**
   * Cancelled chunks by job key (null = every chunk), oldest cancel first: never placed again,
   * whatever a late or stale dispatch says. Bounded: MAX_CANCELLED_JOBS, and forgotten
   * CANCEL_MEMORY_MS after the cancel (the masters stop dispatching a cancelled chunk at once,
   * and re-send a cancel for a minute).
   */
  #cancelled = new Map<string, { atMs: number; chunks: Set<number> | null }>();
  /** Workers with free slots in placement order. */
  #free = new FreeIndex<WorkerInfo>();
  /** Per file, the workers with free slots that hold it. */
  #holders = new FreeHolders<WorkerInfo>();
  /** Registrations so far (WorkerInfo.ord). */
  #ordSeq = 0;

  constructor(opts: SchedulerOptions) {
    this.opts = {
      refuseBackoffMs: 1000,
      rerunFinishedAfterMs: 30_000,
      idleGraceMs: 10_000,
      heartbeatMs: 500,
      maxHeartbeatsPerSec: 2000,
      ...opts,
    };
  }

  /**
   * The heartbeat interval to tell a worker now, ms (0: none, adaptation is off): the base
   * interval while the cluster is small, then growing with it so that all workers together
   * send about maxHeartbeatsPerSec (in steps of 100 ms, so that it does not change with every
   * registration).
   */
  heartbeatInterval(): number {
    const { heartbeatMs, maxHeartbeatsPerSec } = this.opts;
    if (maxHeartbeatsPerSec <= 0) return 0;
    const spread = Math.ceil((this.#workers.size * 1000) / maxHeartbeatsPerSec / 100) * 100;
    return Math.min(MAX_HEARTBEAT_MS, Math.max(heartbeatMs, spread));
  }

  /** How long worker `w` may stay silent before it is dead, ms. */
  deadAfter(w: WorkerInfo): number {
    // At the base interval deadAfterMs holds as configured (tests set it below 3 intervals).
    if (w.heartbeatMs <= this.opts.heartbeatMs) return this.opts.deadAfterMs;
    return Math.max(this.opts.deadAfterMs, DEAD_AFTER_INTERVALS * w.heartbeatMs);
  }

  /** Re-files `w` in the free-slot indexes after any change of its slots, work or files. */
  #reindex(w: WorkerInfo): void {
    const free = freeOf(w);
    this.#free.set(w, free, w.lastAssignSeq, w.ord);
    if (free > 0 || w.listed) {
      for (const f of w.files) this.#holders.set(f, w, free, w.lastAssignSeq, w.ord);
    }
    w.listed = free > 0;
  }

  /** Takes `w` out of both indexes (it leaves, or its file list is replaced). */
  #unindex(w: WorkerInfo): void {
    this.#free.delete(w);
    if (w.listed) { for (const f of w.files) this.#holders.delete(f, w); }
    w.listed = false;
  }

  #addFile(w: WorkerInfo, f: string): void {
    if (w.files.has(f)) return;
    w.files.add(f);
    if (w.listed) this.#holders.set(f, w, freeOf(w), w.lastAssignSeq, w.ord);
  }

  #dropFile(w: WorkerInfo, f: string): void {
    if (w.files.delete(f) && w.listed) this.#holders.delete(f, w);
  }

  // ------------------------------------------------------------------------------------------
  // Workers

  /**
   * A worker joins (or re-joins). A re-joining worker that reports all slots free has lost
   * whatever we thought it ran (it restarted), so those chunks are requeued with attempt+1.
   * `auth` is the key it registered with (the caller has checked it may take this node id);
   * it replaces any earlier one.
   */
  register(
    id: Uuid,
    slots: number,
    freeSlots: number,
    files: Uuid[],
    label: string,
    nowMs: number,
    auth: WorkerKey | null = null,
    endpoint = "",
  ): { requeued: DeadWorker["requeued"]; heartbeatMs: number } {
    const key = uuidToHex(id);
    let w = this.#workers.get(key);
    let requeued: DeadWorker["requeued"] = [];
    if (w && freeSlots >= slots && w.running.size > 0) requeued = this.#requeueAll(w, nowMs);
    if (!w) {
      w = {
        id: id.slice(),
        key,
        slots,
        reportedFree: freeSlots,
        files: new Set(),
        lastSeenMs: nowMs,
        label,
        running: new Map(),
        phantom: 0,
        lastAssignSeq: 0,
        auth: null,
        endpoint: "",
        heartbeatMs: this.opts.heartbeatMs,
        ord: ++this.#ordSeq,
        listed: false,
      };
      this.#workers.set(key, w);
    }
    w.endpoint = endpoint;
    w.auth = auth ? { publicKey: auth.publicKey, name: auth.name } : null;
    w.slots = slots;
    w.reportedFree = freeSlots;
    w.label = label;
    w.lastSeenMs = nowMs;
    // The register message lists the whole cache: replace, don't merge.
    this.#unindex(w);
    w.files = new Set(files.map(uuidToHex));
    w.phantom = Math.max(0, slots - freeSlots - w.running.size);
    this.#reindex(w);
    return { requeued, heartbeatMs: this.#tell(w) };
  }

  /** The interval to tell `w` in the reply (0: none), remembered for its dead timeout. */
  #tell(w: WorkerInfo): number {
    const ms = this.heartbeatInterval();
    // Told nothing, it keeps what it uses (the base interval, as far as we know).
    w.heartbeatMs = ms || this.opts.heartbeatMs;
    return ms;
  }

  /**
   * A heartbeat: liveness, capacity and cache delta. Throws unknown_worker if not registered.
   * Returns the chunks given up on because the worker reports itself idle (see idleGraceMs).
   */
  heartbeat(
    id: Uuid,
    slots: number,
    freeSlots: number,
    added: Uuid[],
    evicted: Uuid[],
    nowMs: number,
  ): { requeued: DeadWorker["requeued"]; heartbeatMs: number } {
    const w = this.#workers.get(uuidToHex(id));
    if (!w) {
      throw new SchedulerError("unknown_worker", `worker ${uuidToHex(id)} is not registered`);
    }
    w.slots = slots;
    w.reportedFree = freeSlots;
    w.lastSeenMs = nowMs;
    for (const f of evicted) this.#dropFile(w, uuidToHex(f));
    for (const f of added) this.#addFile(w, uuidToHex(f));
    let requeued: DeadWorker["requeued"] = [];
    if (freeSlots >= slots && w.running.size > 0 && this.opts.idleGraceMs > 0) {
      const stale = [...w.running.values()].filter((t) =>
        nowMs - t.placedAtMs >= this.opts.idleGraceMs
      );
      if (stale.length > 0) requeued = this.#requeue(w, stale);
    }
    // A report that lags our own bookkeeping can only undercount: never overbooks.
    w.phantom = Math.max(0, slots - freeSlots - w.running.size);
    this.#reindex(w);
    return { requeued, heartbeatMs: this.#tell(w) };
  }

  /** Marks a worker as seen now (any message from it proves it is alive). */
  touch(id: Uuid, nowMs: number): void {
    const w = this.#workers.get(uuidToHex(id));
    if (w) w.lastSeenMs = Math.max(w.lastSeenMs, nowMs);
  }

  /** The worker with this id, if registered. */
  worker(id: Uuid | string): WorkerInfo | undefined {
    return this.#workers.get(typeof id === "string" ? id : uuidToHex(id));
  }

  /** All registered workers. */
  workers(): WorkerInfo[] {
    return [...this.#workers.values()];
  }

  /** Declares dead every worker silent for deadAfterMs; their chunks are requeued (attempt+1). */
  reapDead(nowMs: number): DeadWorker[] {
    const dead: DeadWorker[] = [];
    for (const w of this.#workers.values()) {
      if (nowMs - w.lastSeenMs < this.deadAfter(w)) continue;
      dead.push({ worker: w, requeued: this.#requeueAll(w, nowMs) });
    }
    for (const d of dead) {
      this.#unindex(d.worker);
      this.#workers.delete(d.worker.key);
    }
    return dead;
  }

  /** Removes a worker now (e.g. it said goodbye); its chunks are requeued with attempt+1. */
  removeWorker(id: Uuid, nowMs: number): DeadWorker | null {
    const w = this.#workers.get(uuidToHex(id));
    if (!w) return null;
    const requeued = this.#requeueAll(w, nowMs);
    this.#unindex(w);
    this.#workers.delete(w.key);
    return { worker: w, requeued };
  }

  #requeueAll(w: WorkerInfo, _nowMs: number): DeadWorker["requeued"] {
    return this.#requeue(w, [...w.running.values()]);
  }

  #requeue(w: WorkerInfo, tasks: ChunkTask[]): DeadWorker["requeued"] {
    const out: DeadWorker["requeued"] = [];
    for (const t of tasks) {
      const ck = chunkKey(t.jobKey, t.chunkIndex);
      w.running.delete(ck);
      // A new attempt number, so a late chunk_finished of the lost attempt is recognised as stale.
      t.attempt++;
      t.worker = "";
      const job = this.#jobs.get(t.jobKey)!;
      job.runningCount--;
      this.#enqueue(job, t, true);
      out.push({ job: job.info.job, chunkIndex: t.chunkIndex, attempt: t.attempt });
    }
    this.#reindex(w);
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Jobs and chunks

  /**
   * Queues the chunks of a job_dispatch. Chunks already queued, running or finished are
   * ignored (the master re-sends dispatches until it has results), except a finished chunk
   * re-dispatched long after it finished (see rerunFinishedAfterMs).
   */
  dispatch(
    info: JobInfo,
    chunks: { chunkIndex: number; attempt: number }[],
    nowMs: number,
  ): DispatchResult {
    if (info.numChunks < 1) {
      throw new SchedulerError("bad_request", `job ${uuidToHex(info.job)}: num_chunks is 0`);
    }
    for (const c of chunks) {
      if (c.chunkIndex >= info.numChunks) {
        throw new SchedulerError(
          "bad_request",
          `job ${uuidToHex(info.job)}: chunk ${c.chunkIndex} >= num_chunks ${info.numChunks}`,
        );
      }
    }
    const jobKey = uuidToHex(info.job);
    let job = this.#jobs.get(jobKey);
    const fins = this.#finished.get(jobKey);
    let queued = 0;
    let ignored = 0;
    for (const c of chunks) {
      if (job?.tasks.has(c.chunkIndex) || this.#isCancelled(jobKey, c.chunkIndex)) {
        ignored++;
        continue;
      }
      const fin = fins?.get(c.chunkIndex);
      let attempt = c.attempt;
      if (fin) {
        // A newer attempt than the one that ended: the masters retry it (it failed there).
        const rerun = c.attempt > fin.attempt || (this.opts.rerunFinishedAfterMs > 0 &&
          nowMs - fin.atMs >= this.opts.rerunFinishedAfterMs);
        if (!rerun) {
          ignored++;
          continue;
        }
        attempt = Math.max(attempt, fin.attempt + 1);
        fins!.delete(c.chunkIndex);
        this.#finishedCount--;
        if (fins!.size === 0) this.#finished.delete(jobKey);
      }
      if (!job) {
        const inputs = inputKeys(info);
        job = {
          info: { ...info, job: info.job.slice() },
          inputs,
          bySize: bySize(inputs),
          queue: new Deque(),
          runningCount: 0,
          tasks: new Map(),
        };
        this.#jobs.set(jobKey, job);
      }
      const t: ChunkTask = {
        jobKey,
        chunkIndex: c.chunkIndex,
        attempt,
        avoid: null,
        placedAtMs: 0,
        worker: "",
      };
      job.tasks.set(c.chunkIndex, t);
      this.#enqueue(job, t, false);
      queued++;
    }
    return { queued, ignored };
  }

  /** Is chunk `chunkIndex` of the job with key `jobKey` cancelled? */
  #isCancelled(jobKey: string, chunkIndex: number): boolean {
    const c = this.#cancelled.get(jobKey);
    return c !== undefined && (c.chunks === null || c.chunks.has(chunkIndex));
  }

  /**
   * Cancels chunks of a job (`chunks` empty = all): queued ones leave the queue; running ones are
   * returned, so the caller can have their workers kill them. A running one stays placed (its
   * slot taken) until its worker reports it ended, but is never requeued, and nothing of the
   * cancelled chunks is placed again, whatever a later dispatch says.
   */
  cancel(
    job: Uuid,
    chunks: number[],
    nowMs: number,
  ): { worker: WorkerInfo; chunkIndex: number; attempt: number }[] {
    const jobKey = uuidToHex(job);
    const prev = this.#cancelled.get(jobKey);
    const set = chunks.length === 0 || prev?.chunks === null
      ? null
      : new Set([...(prev?.chunks ?? []), ...chunks]);
    this.#cancelled.delete(jobKey); // re-insert: the map's order is oldest cancel first
    this.#cancelled.set(jobKey, { atMs: nowMs, chunks: set });
    while (this.#cancelled.size > MAX_CANCELLED_JOBS) {
      this.#cancelled.delete(this.#cancelled.keys().next().value!);
    }
    const out: { worker: WorkerInfo; chunkIndex: number; attempt: number }[] = [];
    const je = this.#jobs.get(jobKey);
    if (!je) return out;
    for (const t of [...je.tasks.values()]) {
      if (!this.#isCancelled(jobKey, t.chunkIndex)) continue;
      const w = t.worker ? this.#workers.get(t.worker) : undefined;
      if (w) out.push({ worker: w, chunkIndex: t.chunkIndex, attempt: t.attempt });
      else {
        for (let i = 0; i < je.queue.length; i++) {
          if (je.queue.at(i) === t) {
            je.queue.removeAt(i);
            break;
          }
        }
        je.tasks.delete(t.chunkIndex);
      }
    }
    this.#maybeForgetJob(jobKey, je);
    return out;
  }

  #enqueue(job: JobEntry, t: ChunkTask, front: boolean): void {
    if (this.#isCancelled(t.jobKey, t.chunkIndex)) {
      // Requeued after a cancel (its worker died, refused it, …): it is over instead.
      job.tasks.delete(t.chunkIndex);
      this.#maybeForgetJob(t.jobKey, job);
      return;
    }
    // Retries go first: they already waited once.
    if (front) job.queue.unshift(t);
    else job.queue.push(t);
    if (!this.#inOrder.has(t.jobKey)) {
      this.#inOrder.add(t.jobKey);
      this.#jobOrder.push(t.jobKey);
    }
  }

  /**
   * A worker accepted a chunk. Returns false if the chunk is no longer placed there with that
   * attempt (it finished already, or was requeued): the worker then runs a stale attempt,
   * whose result the master deduplicates.
   */
  accepted(workerId: Uuid, job: Uuid, chunkIndex: number, attempt: number): boolean {
    return this.#placedOn(workerId, job, chunkIndex, attempt) !== null;
  }

  /**
   * A worker refused a chunk (ack accepted=false): it goes back to the front of its job's
   * queue and avoids that worker for refuseBackoffMs. Returns false if the refusal is stale.
   */
  refused(workerId: Uuid, job: Uuid, chunkIndex: number, attempt: number, nowMs: number): boolean {
    const hit = this.#placedOn(workerId, job, chunkIndex, attempt);
    if (!hit) return false;
    const { w, t, ck, je } = hit;
    w.running.delete(ck);
    this.#reindex(w);
    (t.avoid ??= new Map()).set(w.key, nowMs + this.opts.refuseBackoffMs);
    t.worker = "";
    je.runningCount--;
    // Same attempt: the worker never started it.
    this.#enqueue(je, t, true);
    return true;
  }

  /**
   * The request could not be confirmed (push timed out): the worker may or may not run it, so
   * it is treated like a lost attempt — requeued elsewhere with attempt+1.
   */
  unconfirmed(workerId: Uuid, job: Uuid, chunkIndex: number, attempt: number, nowMs: number) {
    const hit = this.#placedOn(workerId, job, chunkIndex, attempt);
    if (!hit) return false;
    const { w, t, ck, je } = hit;
    w.running.delete(ck);
    this.#reindex(w);
    t.attempt++;
    (t.avoid ??= new Map()).set(w.key, nowMs + this.opts.refuseBackoffMs);
    t.worker = "";
    je.runningCount--;
    this.#enqueue(je, t, true);
    return true;
  }

  /**
   * A chunk attempt ended on a worker (chunk_finished). Frees the slot. Returns false for a
   * stale report (an older attempt, or a chunk that is not on that worker), which is ignored.
   */
  finished(
    workerId: Uuid,
    job: Uuid,
    chunkIndex: number,
    attempt: number,
    state: number,
    nowMs: number,
  ): boolean {
    const hit = this.#placedOn(workerId, job, chunkIndex, attempt);
    if (!hit) {
      // Work we did not place there ended: one phantom slot is free again.
      const w = this.#workers.get(uuidToHex(workerId));
      if (w && w.phantom > 0) {
        w.phantom--;
        this.#reindex(w);
      }
      return false;
    }
    const { w, t, ck, je } = hit;
    w.running.delete(ck);
    this.#reindex(w);
    je.tasks.delete(chunkIndex);
    let fins = this.#finished.get(t.jobKey);
    if (!fins) this.#finished.set(t.jobKey, fins = new Map());
    fins.set(chunkIndex, { attempt, state, atMs: nowMs });
    this.#finishedCount++;
    this.#finishOrder.push([t.jobKey, chunkIndex, nowMs]);
    je.runningCount--;
    this.#maybeForgetJob(t.jobKey, je);
    return true;
  }

  /**
   * True when pruneFinished would forget something. Finished chunks are remembered only to
   * ignore re-dispatches; after 2 × rerunFinishedAfterMs a re-dispatch re-runs them anyway,
   * so keeping them longer would only grow memory. (Never with re-runs disabled.)
   */
  prunable(nowMs: number): boolean {
    const oldestCancel = this.#cancelled.values().next().value;
    if (oldestCancel && nowMs - oldestCancel.atMs >= CANCEL_MEMORY_MS) return true;
    if (this.opts.rerunFinishedAfterMs <= 0 || this.#finishOrder.length === 0) return false;
    return nowMs - this.#finishOrder.at(0)[2] >= 2 * this.opts.rerunFinishedAfterMs;
  }

  /** Forgets finished chunks older than 2 × rerunFinishedAfterMs; returns how many. */
  pruneFinished(nowMs: number): number {
    let n = 0;
    for (const [k, c] of this.#cancelled) {
      if (nowMs - c.atMs < CANCEL_MEMORY_MS) break; // oldest first
      this.#cancelled.delete(k);
    }
    // Finishes are in order, so the old ones are at the front. An entry whose chunk re-ran
    // since has a newer finish (or none): skip it.
    while (
      this.opts.rerunFinishedAfterMs > 0 && this.#finishOrder.length > 0 &&
      nowMs - this.#finishOrder.at(0)[2] >= 2 * this.opts.rerunFinishedAfterMs
    ) {
      const [jobKey, idx, at] = this.#finishOrder.removeAt(0);
      const fins = this.#finished.get(jobKey);
      if (fins?.get(idx)?.atMs !== at) continue;
      fins.delete(idx);
      if (fins.size === 0) this.#finished.delete(jobKey);
      this.#finishedCount--;
      n++;
    }
    return n;
  }

  #placedOn(workerId: Uuid, job: Uuid, chunkIndex: number, attempt: number) {
    const jobKey = uuidToHex(job);
    const je = this.#jobs.get(jobKey);
    const t = je?.tasks.get(chunkIndex);
    const wk = uuidToHex(workerId);
    if (!je || !t || t.worker !== wk || t.attempt !== attempt) return null;
    const w = this.#workers.get(wk);
    if (!w) return null;
    return { w, t, ck: chunkKey(jobKey, chunkIndex), je };
  }

  #maybeForgetJob(jobKey: string, je: JobEntry): void {
    // Drop the job's metadata once nothing of it is left to run; a later re-dispatch carries
    // it again.
    if (je.tasks.size === 0) this.#jobs.delete(jobKey);
  }

  // ------------------------------------------------------------------------------------------
  // Placement

  /**
   * Places as many queued chunks as free slots allow and returns the decisions (the chunks
   * are marked running on their workers at once). Workers silent for deadAfterMs get
   * nothing; declaring them dead (and requeueing their chunks) is reapDead's job, so the
   * caller sees every death.
   *
   * Fairness: one chunk per job per round, jobs in round-robin order, so a giant job cannot
   * starve a small one. Locality: a chunk goes to the worker holding the most bytes of its
   * input files; ties go to the worker with the most free slots, then to the one that was
   * given work least recently, then to the one registered first. When more than
   * LOCALITY_SCAN free workers hold its inputs, it goes to the first of those holding its
   * largest input in that same order (the smaller inputs are not weighed then). Every decision
   * is found through the free-slot indexes (the free holders of a file are indexed alike): its
   * cost does not grow with the cluster, only with the inputs and the workers' cached files.
   */
  assign(nowMs: number): Assignment[] {
    const out: Assignment[] = [];
    // Nothing queued (the common case: every heartbeat of an idle cluster calls this): no need
    // to count free slots over every worker.
    this.#compactOrder();
    if (this.#jobOrder.length === 0) return out;
    // An upper bound (silent workers count too): a round that places nothing ends the loop.
    let free = this.#free.totalFree;
    while (free > 0) {
      this.#compactOrder();
      if (this.#jobOrder.length === 0) break;
      let placedThisRound = 0;
      const n = this.#jobOrder.length;
      const start = this.#jobCursor % n;
      const round = [...this.#jobOrder.slice(start), ...this.#jobOrder.slice(0, start)];
      for (let i = 0; i < round.length && free > 0; i++) {
        const je = this.#jobs.get(round[i]);
        if (!je || je.queue.length === 0) continue;
        const a = this.#placeOne(je, nowMs);
        if (!a) continue;
        out.push(a);
        free--;
        placedThisRound++;
        // The next round (or next assign call) starts after the job served last.
        this.#jobCursor = (start + i + 1) % n;
      }
      if (placedThisRound === 0) break;
    }
    return out;
  }

  #compactOrder(): void {
    const order = this.#jobOrder;
    const alive = (k: string) => (this.#jobs.get(k)?.queue.length ?? 0) > 0;
    if (order.every(alive)) return;
    // Keep the rotation: the cursor moves to the first surviving job at or after it.
    let next: string | undefined;
    for (let i = 0; i < order.length && next === undefined; i++) {
      const k = order[(this.#jobCursor + i) % order.length];
      if (alive(k)) next = k;
    }
    this.#jobOrder = order.filter((k) => {
      if (alive(k)) return true;
      this.#inOrder.delete(k);
      return false;
    });
    this.#jobCursor = next === undefined ? 0 : this.#jobOrder.indexOf(next);
  }

  #alive(w: WorkerInfo, nowMs: number): boolean {
    return nowMs - w.lastSeenMs < this.deadAfter(w);
  }

  #placeOne(je: JobEntry, nowMs: number): Assignment | null {
    // Only a refused chunk can be unplaceable while slots are free; look a little further.
    const scan = Math.min(je.queue.length, 64);
    for (let qi = 0; qi < scan; qi++) {
      const t = je.queue.at(qi);
      const w = this.#bestWorker(je, t, nowMs);
      if (!w) continue;
      je.queue.removeAt(qi);
      const ck = chunkKey(t.jobKey, t.chunkIndex);
      w.running.set(ck, t);
      t.placedAtMs = nowMs;
      t.worker = w.key;
      w.lastAssignSeq = ++this.#assignSeq;
      je.runningCount++;
      // The worker fetches the inputs to run it, so it will hold them from now on.
      for (const f of je.inputs) this.#addFile(w, f.key);
      this.#reindex(w);
      return { worker: w, job: je.info, chunkIndex: t.chunkIndex, attempt: t.attempt };
    }
    return null;
  }

  #bestWorker(je: JobEntry, t: ChunkTask, nowMs: number): WorkerInfo | null {
    const ok = (w: WorkerInfo) => {
      if (!this.#alive(w, nowMs)) return false;
      const until = t.avoid?.get(w.key);
      return until === undefined || until <= nowMs;
    };
    const inputs = je.inputs;
    let holders = 0;
    for (const f of inputs) holders += this.#holders.of(f.key)?.size ?? 0;
    if (holders > 0 && holders <= LOCALITY_SCAN) {
      // Few candidates: weigh every one (a worker holding two inputs is looked at twice).
      let best: WorkerInfo | null = null;
      let bestBytes = -1;
      let bestFree = -1;
      for (const f of inputs) {
        for (const w of this.#holders.of(f.key)?.values() ?? []) {
          if (!ok(w)) continue;
          let bytes = 0;
          for (const g of inputs) if (w.files.has(g.key)) bytes += g.size;
          const free = freeOf(w);
          if (best === null || this.#ahead(w, bytes, free, best, bestBytes, bestFree)) {
            best = w;
            bestBytes = bytes;
            bestFree = free;
          }
        }
      }
      if (best) return best;
    } else if (holders > 0) {
      // Many: the first holder of the largest input (that has one) in placement order.
      for (const i of je.bySize) {
        const w = this.#holders.of(inputs[i].key)?.first(ok);
        if (w) return w;
      }
    }
    return this.#free.first(ok);
  }

  /** Does `w` (holding `bytes` of the inputs, `free` slots) come before `b` for a chunk? */
  #ahead(
    w: WorkerInfo,
    bytes: number,
    free: number,
    b: WorkerInfo,
    bBytes: number,
    bFree: number,
  ): boolean {
    if (bytes !== bBytes) return bytes > bBytes;
    if (free !== bFree) return free > bFree;
    if (w.lastAssignSeq !== b.lastAssignSeq) return w.lastAssignSeq < b.lastAssignSeq;
    return w.ord < b.ord;
  }

  // ------------------------------------------------------------------------------------------
  // Whole-state export/import (the standby's snapshot)

  /**
   * The complete internal state as plain data (Uint8Arrays for bytes). Importing it into a
   * fresh scheduler gives one that answers every later call exactly like this one: orders of
   * maps, queues and the round-robin cursors are kept, which the standby's replay relies on.
   */
  exportState(): SchedulerState {
    return {
      opts: { ...this.opts },
      workers: [...this.#workers.values()].map((w) => ({
        id: w.id,
        slots: w.slots,
        reportedFree: w.reportedFree,
        files: [...w.files],
        lastSeenMs: w.lastSeenMs,
        label: w.label,
        phantom: w.phantom,
        lastAssignSeq: w.lastAssignSeq,
        running: [...w.running.keys()],
        auth: w.auth,
        endpoint: w.endpoint,
        heartbeatMs: w.heartbeatMs,
      })),
      jobs: [...this.#jobs.entries()].map(([key, j]) => ({
        key,
        info: j.info,
        queue: j.queue.toArray().map((t) => t.chunkIndex),
        runningCount: j.runningCount,
        tasks: [...j.tasks.values()].map((t) => ({
          chunkIndex: t.chunkIndex,
          attempt: t.attempt,
          avoid: t.avoid ? [...t.avoid.entries()] : [],
          placedAtMs: t.placedAtMs,
          worker: t.worker,
        })),
      })),
      finished: [...this.#finished.entries()].map((
        [k, m],
      ) => [k, [...m.entries()].map(([i, f]) => [i, f.attempt, f.state, f.atMs])]),
      finishOrder: this.#finishOrder.toArray().map((x) => [...x]),
      cancelled: [...this.#cancelled.entries()].map((
        [k, c],
      ) => [k, c.atMs, c.chunks ? [...c.chunks] : []]),
      jobOrder: [...this.#jobOrder],
      jobCursor: this.#jobCursor,
      assignSeq: this.#assignSeq,
    };
  }

  /** Replaces this scheduler's whole state (and options) with an exported one. */
  importState(st: SchedulerState): void {
    Object.assign(this.opts, st.opts);
    this.#jobs = new Map();
    for (const j of st.jobs) {
      const tasks = new Map<number, ChunkTask>();
      for (const t of j.tasks) {
        tasks.set(t.chunkIndex, {
          ...t,
          jobKey: j.key,
          avoid: t.avoid.length > 0 ? new Map(t.avoid) : null,
        });
      }
      const task = (i: number) => {
        const t = tasks.get(i);
        if (!t) throw new SchedulerError("bad_request", `snapshot: chunk ${j.key}/${i} lost`);
        return t;
      };
      const inputs = inputKeys(j.info);
      this.#jobs.set(j.key, {
        info: j.info,
        inputs,
        bySize: bySize(inputs),
        queue: Deque.from(j.queue.map(task)),
        runningCount: j.runningCount,
        tasks,
      });
    }
    const task = (ck: string) => {
      const slash = ck.lastIndexOf("/");
      const t = this.#jobs.get(ck.slice(0, slash))?.tasks.get(Number(ck.slice(slash + 1)));
      if (!t) throw new SchedulerError("bad_request", `snapshot: chunk ${ck} has no task`);
      return t;
    };
    this.#workers = new Map();
    this.#free.clear();
    this.#holders.clear();
    this.#ordSeq = 0;
    for (const w of st.workers) {
      const key = uuidToHex(w.id);
      const running = new Map<string, ChunkTask>();
      for (const ck of w.running) running.set(ck, task(ck));
      this.#workers.set(key, {
        id: w.id,
        key,
        slots: w.slots,
        reportedFree: w.reportedFree,
        files: new Set(w.files),
        lastSeenMs: w.lastSeenMs,
        label: w.label,
        phantom: w.phantom,
        lastAssignSeq: w.lastAssignSeq,
        running,
        auth: w.auth ? { publicKey: w.auth.publicKey, name: w.auth.name } : null,
        endpoint: w.endpoint ?? "",
        heartbeatMs: w.heartbeatMs ?? this.opts.heartbeatMs,
        // Registration order is the snapshot's order (the map's): ties break alike.
        ord: ++this.#ordSeq,
        listed: false,
      });
    }
    for (const w of this.#workers.values()) this.#reindex(w);
    this.#finished = new Map();
    this.#finishedCount = 0;
    for (const [k, list] of st.finished) {
      const m = new Map<number, FinishedEntry>();
      for (const [i, attempt, state, atMs] of list) m.set(i, { attempt, state, atMs });
      this.#finished.set(k, m);
      this.#finishedCount += m.size;
    }
    this.#finishOrder = Deque.from(st.finishOrder.map((x) => [...x] as [string, number, number]));
    this.#cancelled = new Map(
      (st.cancelled ?? []).map((
        [k, atMs, list],
      ) => [k, { atMs, chunks: list.length > 0 ? new Set(list) : null }]),
    );
    this.#jobOrder = [...st.jobOrder];
    this.#inOrder = new Set(st.jobOrder);
    this.#jobCursor = st.jobCursor;
    this.#assignSeq = st.assignSeq;
  }

  // ------------------------------------------------------------------------------------------
  // Introspection

  /** Counters for logs, the node list and tests. */
  stats(): SchedulerStats {
    let slots = 0;
    let running = 0;
    let queued = 0;
    let free = 0;
    for (const w of this.#workers.values()) {
      slots += w.slots;
      running += w.running.size;
      free += freeOf(w);
    }
    for (const j of this.#jobs.values()) queued += j.queue.length;
    return {
      workers: this.#workers.size,
      slots,
      freeSlots: free,
      queued,
      running,
      finished: this.#finishedCount,
      jobs: this.#jobs.size,
    };
  }

  /** Where a chunk is: "queued", "running" (with worker key), "finished", or "unknown". */
  chunkState(
    job: Uuid,
    chunkIndex: number,
  ): { state: "queued" | "running" | "finished" | "unknown"; worker?: string; attempt?: number } {
    const jobKey = uuidToHex(job);
    const t = this.#jobs.get(jobKey)?.tasks.get(chunkIndex);
    if (t && t.worker === "") return { state: "queued", attempt: t.attempt };
    if (t) return { state: "running", worker: t.worker, attempt: t.attempt };
    const fin = this.#finished.get(jobKey)?.get(chunkIndex);
    if (fin) return { state: "finished", attempt: fin.attempt };
    return { state: "unknown" };
  }
}
