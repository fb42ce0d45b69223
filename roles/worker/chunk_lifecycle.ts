/**
 * The worker's pure core: the life of every chunk attempt placed on this worker, from the
 * balancer's `worker_request` to the last report about it.
 *
 * No I/O, no timers, no clock: the shell (main.ts) feeds it inputs (`step`) — what arrived from
 * the network, and how each effect it carried out ended — and carries out the effects it
 * returns (fetch the program, mount inputs, spawn in the sandbox, kill, upload, clean up, send
 * reports). Time enters only as `nowMs` of the inputs that need it, so a sequence of inputs
 * always yields the same effects (tests/worker_core_test.ts drives it without processes).
 *
 * Life of a chunk attempt (one per `job/chunk/attempt` key):
 *
 * ```
 * place ─▶ fetching ─program_ready─▶ preparing ─prepared─▶ starting ─spawned─▶ running
 *             │ program_failed          │ prepare_failed      │ spawn_failed      │ exited
 *             ▼                         ▼                     ▼                   ▼
 *          cleaning ◀───────────────────────────────────────────────────────── uploading
 *             │ cleaned                                          (uploaded / upload_failed)
 *             ├─ cancelled: chunk_finished CANCELLED to the balancer, nothing to the masters
 *             ├─ aborted (shutdown): worker_status LOST, best effort
 *             └─▶ reporting ─status_answer acked/rejected─▶ chunk_finished to the balancer
 *                    └ retry: re-sent at nowMs + backoff (tick), until acknowledged
 * ```
 *
 * A chunk holds one of the worker's slots from `place` until the masters answered its report
 * (what the balancer is told is free); the slot's directory and sandbox (`slot`) from `place`
 * until `cleaned`. The invariants below are checked after every step (`#check`): a violation is a
 * bug of this core or of its shell, never bad input, and throws `LifecycleInvariantError`.
 * @module
 */
import { CAP_BYTES } from "../../lib/capability.ts";
import {
  type ChunkFinished,
  type ChunkState,
  ChunkState as CS,
  type FailureCode,
  FailureCode as FC,
  type FileEntry,
  MessageType,
  type Uuid,
  uuidEquals,
  uuidToHex,
  uuidToString,
  type WorkerRequest,
  type WorkerStatus,
} from "../../wire/mod.ts";

/**
 * Most unacknowledged chunk_finished reports kept: beyond that the oldest are dropped, and the
 * balancer learns of those chunks' end from idle heartbeats (its idleGraceMs) instead.
 */
export const MAX_UNACKED_FINISHES = 1024;
/**
 * Finished chunk attempts remembered (oldest forgotten first): a repeated push of one of them
 * is answered from here (accepted, its chunk_finished sent again) instead of running it again,
 * so one attempt never ends twice with different outcomes. Far above what a balancer re-pushes:
 * it re-pushes only attempts it still thinks run here.
 */
export const MAX_FINISHED_KEPT = 4096;
/** First wait before a worker_status the masters did not acknowledge is sent again, ms. */
export const REPORT_BACKOFF_MIN_MS = 200;
/** Longest wait between two sends of an unacknowledged worker_status, ms (doubling up to it). */
export const REPORT_BACKOFF_MAX_MS = 2000;
/** Timeout of one send of a final worker_status, ms. */
export const STATUS_TIMEOUT_MS = 30_000;
/** Timeout of the best-effort running report, ms. */
export const RUNNING_TIMEOUT_MS = 2000;
/** Timeout of the lost report at shutdown, ms (shutdown does not wait long for it). */
export const LOST_TIMEOUT_MS = 1000;
/** Timeout of one chunk_finished to the balancer, ms. */
export const FINISHED_TIMEOUT_MS = 2000;

if (!(REPORT_BACKOFF_MIN_MS > 0 && REPORT_BACKOFF_MIN_MS <= REPORT_BACKOFF_MAX_MS)) {
  throw new Error("chunk_lifecycle: report backoff bounds out of order");
}
if (!(MAX_FINISHED_KEPT >= MAX_UNACKED_FINISHES)) {
  // A re-pushed attempt whose chunk_finished is still queued must still be known as finished.
  throw new Error("chunk_lifecycle: MAX_FINISHED_KEPT must be >= MAX_UNACKED_FINISHES");
}

/** Where a chunk attempt is in its life (see the module comment). */
export type Phase =
  | "fetching"
  | "preparing"
  | "starting"
  | "running"
  | "uploading"
  | "cleaning"
  | "reporting";

/** How a chunk's program ended, as the shell measured it (runner.ts RunResult + limits). */
export interface ProgramEnd {
  /** Exit code; 0 when killed by a signal or never started. */
  exitCode: number;
  /** Signal that killed it, 0 if none. */
  signal: number;
  /** The time limit killed it. */
  timedOut: boolean;
  /** It was killed because of a `kill` effect (cancel, shutdown). */
  aborted: boolean;
  /** It could not be started at all. */
  spawnError?: string;
  /** Its processes would not go (the slot is unsafe to reuse). */
  reapError?: string;
  /** Wall-clock run time, ms. */
  durationMs: number;
  /** Last bytes of its stderr. */
  stderrTail: Uint8Array;
  /** The limit it went over first (the kernel's record), if any. */
  limitHit: { failure: FailureCode; reason: string } | null;
}

/** How the masters answered a final worker_status. */
export type StatusAnswer =
  /** Committed. */
  | "acked"
  /** Not now (timeout, no leader): send it again later. */
  | "retry"
  /** Refused for good (e.g. a stale attempt): sending it again cannot help. */
  | "rejected";

/** How the balancer answered a chunk_finished. */
export type FinishedAnswer =
  | "acked"
  /** No answer (balancer away or failing over): kept and re-sent before the next heartbeat. */
  | "unavailable"
  /** An error answer (stale, unknown worker): an answer all the same. */
  | "rejected";

/** What the core is told: network messages, and how the effects it asked for ended. */
export type LifecycleInput =
  /** The balancer pushed a worker_request (answered by one `ack` effect). */
  | { kind: "place"; req: WorkerRequest }
  /** The balancer pushed a job_cancel: these chunks of the job (all when empty) (one `cancel_ack`). */
  | { kind: "cancel"; job: Uuid; chunks: number[] }
  /** The worker stops: running chunks are killed, nothing new is accepted. */
  | { kind: "shutdown" }
  /** Time passed: due report retries go out. */
  | { kind: "tick"; nowMs: number }
  /** A fetch of file `file` (hex id) failed; chunks reading it may fail because of it. */
  | { kind: "fetch_error"; file: string; text: string }
  /** `fetch_program` ended: the program file is ready to run. */
  | { kind: "program_ready"; key: string }
  /** `fetch_program` ended without a program (fetch failed, or stopped by `abort_fetch`). */
  | { kind: "program_failed"; key: string; text: string }
  /** `prepare` ended: limits resolved, the slot's directory and the job's inputs are there. */
  | { kind: "prepared"; key: string }
  /** `prepare` failed (limits beyond policy, a bad input name, a full disk…). */
  | { kind: "prepare_failed"; key: string; failure: FailureCode; reason: string }
  /** `spawn` ended: the program runs (`pid` 0 when it could not start; its end follows). */
  | { kind: "spawned"; key: string; pid: number }
  /** `spawn` threw (the sandbox could not be set up): there is no program. */
  | { kind: "spawn_failed"; key: string; text: string }
  /** The program of a spawned chunk ended. */
  | { kind: "exited"; key: string; end: ProgramEnd }
  /** `upload` ended: every output is stored. */
  | { kind: "uploaded"; key: string; outputs: FileEntry[] }
  /** `upload` failed (`quota`: the outputs claim more than the disk limit). */
  | { kind: "upload_failed"; key: string; quota: boolean; text: string }
  /** `clean_up` ended; `slotUsable` false takes the slot out of use for good. */
  | { kind: "cleaned"; key: string; slotUsable: boolean }
  /** The masters answered a `send_status`. */
  | { kind: "status_answer"; key: string; answer: StatusAnswer; nowMs: number }
  /** The balancer answered a `send_finished` (`hadInputs` as in the effect). */
  | { kind: "finished_answer"; report: ChunkFinished; answer: FinishedAnswer; hadInputs: boolean }
  /** The balancer answered (acked or rejected) the re-send of `unackedHead()`. */
  | { kind: "resent"; report: ChunkFinished };

/** What the core asks the shell to do. */
export type LifecycleEffect =
  /** Answer the worker_request of a `place` (exactly one per `place`). */
  | {
    kind: "ack";
    key: string;
    accepted: boolean;
    reason: string;
    /** Why, for the log: "new", "duplicate" (runs here already), "finished" (ran here),
     * "fenced" (older epoch), "closing", "full". */
    why: "new" | "duplicate" | "finished" | "fenced" | "closing" | "full";
    /** Epoch of the request and newest epoch seen (for the fenced log line). */
    epoch: number;
    newest: number;
  }
  /** Answer a `cancel`: how many chunks it stopped. */
  | { kind: "cancel_ack"; job: Uuid; count: number }
  /** Get the chunk's program file (fetch into the cache, copy out); then program_ready/failed. */
  | { kind: "fetch_program"; key: string }
  /** Stop waiting for the program: answer program_failed now (the fetch may go on). */
  | { kind: "abort_fetch"; key: string }
  /** Resolve limits, make slot `slot`'s directory, mount the inputs; then prepared/failed. */
  | { kind: "prepare"; key: string; slot: number }
  /** Start the program in slot `slot`'s sandbox; then spawned (then exited) or spawn_failed. */
  | { kind: "spawn"; key: string; slot: number }
  /** Kill every process of the chunk (idempotent); its `exited` follows. */
  | { kind: "kill"; key: string }
  /** Tell the masters it runs (one try, not awaited; no input back), if it still runs a moment
   * later (the shell's RUNNING_REPORT_DELAY_MS). */
  | { kind: "report_running"; key: string; status: WorkerStatus; timeoutMs: number }
  /** Upload its outputs; then uploaded/upload_failed. */
  | { kind: "upload"; key: string }
  /** Give back what it holds (mounts, pins, program file, slot `slot`'s directory); then
   * cleaned. `ended`: its program's outcome, for the log (null when it did not run or was
   * aborted). */
  | { kind: "clean_up"; key: string; slot: number | null; ended: WorkerStatus | null }
  /** Send the final worker_status to the masters; then status_answer. */
  | { kind: "send_status"; key: string; status: WorkerStatus; timeoutMs: number }
  /** Tell the masters it is lost (shutdown), best effort (no input back). */
  | { kind: "send_lost"; status: WorkerStatus; timeoutMs: number }
  /** Send chunk_finished to the balancer; then finished_answer with `hadInputs`. */
  | { kind: "send_finished"; report: ChunkFinished; hadInputs: boolean; timeoutMs: number }
  /** Heartbeat now rather than at the next period (the balancer must hear of a free slot or a
   * changed cache). */
  | { kind: "wake" }
  /** The chunk left the core: drop what the shell keeps of it. */
  | { kind: "forget"; key: string };

/** One chunk attempt on this worker. */
export interface ChunkAttempt {
  /** `job/chunk/attempt`. */
  readonly key: string;
  /** The worker_request that placed it. */
  readonly req: WorkerRequest;
  /** Where it is. */
  phase: Phase;
  /** The slot (directory, sandbox) it holds until cleaned; null once given back or when none
   * was usable. */
  slot: number | null;
  /** Stopped by job_cancel: killed, not reported to the masters. */
  cancelled: boolean;
  /** Stopped (cancel or shutdown): its program must not start, or is killed. */
  aborted: boolean;
  /** Its final status, once known (not reported while aborted). */
  outcome: WorkerStatus | null;
  /** Whether `outcome` comes from a run of its program (logged as "chunk ended"). */
  ran: boolean;
  /** Errors of fetches of its files, by file id hex. */
  fetchErrors: Map<string, string>;
  /** A send_status is out, waiting for its answer. */
  statusInFlight: boolean;
  /** When the next send_status is due (-1: none is waiting). */
  retryAtMs: number;
  /** The wait after the next unanswered send, ms. */
  backoffMs: number;
}

/** Counters of the core (WorkerStats). */
export interface LifecycleStats {
  /** Chunks accepted since start. */
  accepted: number;
  /** worker_requests refused (no free slot / shutting down / fenced). */
  refused: number;
  /** Chunks whose final status the masters acknowledged. */
  reported: number;
  /** worker_requests refused for an older balancer epoch than one already seen. */
  fenced: number;
}

/** A broken invariant of the lifecycle: a bug of the core or of the shell that drives it. */
export class LifecycleInvariantError extends Error {
  /** Creates the error; `message` says which invariant and the chunk concerned. */
  constructor(message: string) {
    super(message);
    this.name = "LifecycleInvariantError";
  }
}

/** Cheap production assertion: a false `cond` is a bug, never input. */
function invariant(cond: boolean, message: () => string): asserts cond {
  if (!cond) throw new LifecycleInvariantError(message());
}

/** The key of a chunk attempt: `job-uuid/chunk/attempt`. */
export function chunkKey(m: { job: Uint8Array; chunkIndex: number; attempt: number }): string {
  return `${uuidToString(m.job)}/${m.chunkIndex}/${m.attempt}`;
}

const enc = new TextEncoder();

/** A read capability for a file (none: insecure cluster, or no running chunk reads it). */
export interface ReadCapFound {
  cap?: Uint8Array;
  capExpiryMs?: number;
}

/** The chunk lifecycle of one worker (see the module comment). */
export class ChunkLifecycle {
  readonly #node: Uuid;
  readonly #slots: number;
  /** Chunks on this worker, by key (each holds one of the `#slots`). */
  #chunks = new Map<string, ChunkAttempt>();
  /** Slot indexes not held by a chunk (the last is taken first). */
  #freeSlotIds: number[];
  /** Slots taken out of use (their processes or tmpfs would not go). */
  #brokenSlots = 0;
  /** chunk_finished reports no balancer acknowledged, oldest first (≤ MAX_UNACKED_FINISHES). */
  #unacked: ChunkFinished[] = [];
  /** Final state of attempts that finished here, oldest first (≤ MAX_FINISHED_KEPT). */
  #finished = new Map<string, ChunkState>();
  /** Newest balancer lease epoch seen on a worker_request (older ones are refused). */
  #epoch = 0;
  #closing = false;
  #stats: LifecycleStats = { accepted: 0, refused: 0, reported: 0, fenced: 0 };
  #out: LifecycleEffect[] = [];

  /** A core for worker `node` with `slots` slots (indexes 0..slots-1). */
  constructor(node: Uuid, slots: number) {
    invariant(Number.isSafeInteger(slots) && slots >= 1, () => `slots must be >= 1: ${slots}`);
    this.#node = node;
    this.#slots = slots;
    this.#freeSlotIds = Array.from({ length: slots }, (_, i) => slots - 1 - i);
  }

  /** Applies one input; returns the effects to carry out, in order. */
  step(input: LifecycleInput): LifecycleEffect[] {
    this.#out = [];
    switch (input.kind) {
      case "place":
        this.#place(input.req);
        break;
      case "cancel":
        this.#cancel(input.job, input.chunks);
        break;
      case "shutdown":
        this.#shutdown();
        break;
      case "tick":
        this.#tick(input.nowMs);
        break;
      case "fetch_error":
        for (const c of this.#chunks.values()) {
          if (usesFile(c.req, input.file)) c.fetchErrors.set(input.file, input.text);
        }
        break;
      case "program_ready":
      case "program_failed":
        this.#programDone(input);
        break;
      case "prepared":
      case "prepare_failed":
        this.#prepareDone(input);
        break;
      case "spawned":
      case "spawn_failed":
        this.#spawnDone(input);
        break;
      case "exited":
        this.#exited(input.key, input.end);
        break;
      case "uploaded":
      case "upload_failed":
        this.#uploadDone(input);
        break;
      case "cleaned":
        this.#cleaned(input.key, input.slotUsable);
        break;
      case "status_answer":
        this.#statusAnswer(input.key, input.answer, input.nowMs);
        break;
      case "finished_answer":
        this.#finishedAnswer(input.report, input.answer, input.hadInputs);
        break;
      case "resent": {
        const i = this.#unacked.indexOf(input.report);
        if (i >= 0) this.#unacked.splice(i, 1);
        break;
      }
      default: {
        const never: never = input;
        invariant(false, () => `unknown lifecycle input ${JSON.stringify(never)}`);
      }
    }
    this.#check();
    const out = this.#out;
    this.#out = [];
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Queries (no effects)

  /** The chunk with `key`, if it is on this worker (read it, do not change it). */
  chunk(key: string): Readonly<ChunkAttempt> | undefined {
    return this.#chunks.get(key);
  }

  /** Every chunk on this worker. */
  chunks(): IterableIterator<Readonly<ChunkAttempt>> {
    return this.#chunks.values();
  }

  /** Chunks on this worker (each holds a slot). */
  size(): number {
    return this.#chunks.size;
  }

  /** Slots free, as told to the balancer. */
  freeSlots(): number {
    return Math.max(0, this.#slots - this.#brokenSlots - this.#chunks.size);
  }

  /** Slots taken out of use. */
  brokenSlots(): number {
    return this.#brokenSlots;
  }

  /** True once `shutdown` was applied. */
  closing(): boolean {
    return this.#closing;
  }

  /** Counters. */
  stats(): LifecycleStats {
    return { ...this.#stats };
  }

  /** The oldest chunk_finished no balancer acknowledged (re-send it, then `resent`). */
  unackedHead(): ChunkFinished | undefined {
    return this.#unacked[0];
  }

  /** How many chunk_finished reports wait for a balancer. */
  unackedCount(): number {
    return this.#unacked.length;
  }

  /** When the next report retry is due (feed `tick` then), or null when none waits. */
  nextDueMs(): number | null {
    let due: number | null = null;
    for (const c of this.#chunks.values()) {
      if (c.retryAtMs >= 0 && (due === null || c.retryAtMs < due)) due = c.retryAtMs;
    }
    return due;
  }

  /** The final state of an attempt that finished here, if still remembered. */
  finishedState(key: string): ChunkState | undefined {
    return this.#finished.get(key);
  }

  /** The chunk whose logs `dsys logs JOB --chunk N` reads: one of the job's not cancelled. */
  logTarget(job: Uuid, chunkIndex: number): Readonly<ChunkAttempt> | null {
    for (const c of this.#chunks.values()) {
      if (!c.cancelled && c.req.chunkIndex === chunkIndex && uuidEquals(c.req.job, job)) return c;
    }
    return null;
  }

  /**
   * A read capability for file `idHex` from a chunk here that has it as its program or an input
   * (storage serves a worker key only with one; any chunk's will do, the one good longest is
   * taken). None without security, or when no chunk here reads the file.
   */
  readCapFor(idHex: string): ReadCapFound {
    let best: ReadCapFound = {};
    for (const c of this.#chunks.values()) {
      const { caps, programCap, capExpiryMs = 0 } = c.req;
      if ((best.capExpiryMs ?? -1) >= capExpiryMs) continue;
      if (programCap?.length === CAP_BYTES && uuidToHex(c.req.programId) === idHex) {
        best = { cap: programCap.slice(), capExpiryMs };
        continue;
      }
      if (!caps) continue;
      const i = c.req.inputFiles.findIndex((f) => uuidToHex(f.id) === idHex);
      if (i < 0 || caps.length < CAP_BYTES * (i + 1)) continue;
      best = { cap: caps.slice(CAP_BYTES * i, CAP_BYTES * (i + 1)), capExpiryMs };
    }
    return best;
  }

  /** Throws LifecycleInvariantError when an invariant does not hold (run after every step). */
  check(): void {
    this.#check();
  }

  // ------------------------------------------------------------------------------------------
  // Inputs from the network

  #place(req: WorkerRequest): void {
    const key = chunkKey(req);
    const epoch = req.epoch ?? 0;
    const ack = (
      accepted: boolean,
      why: Extract<LifecycleEffect, { kind: "ack" }>["why"],
      reason = "",
    ) => this.#emit({ kind: "ack", key, accepted, reason, why, epoch, newest: this.#epoch });
    // Fencing: a push from an older lease epoch than one already seen comes from a deposed
    // primary (paused or partitioned while its successor took over): its placement is stale.
    if (epoch < this.#epoch) {
      this.#stats.refused++;
      this.#stats.fenced++;
      ack(false, "fenced", `stale balancer epoch ${epoch} (newest seen ${this.#epoch})`);
      return;
    }
    this.#epoch = epoch;
    // A retried push of a chunk we already run must not start it twice.
    if (this.#chunks.has(key)) return ack(true, "duplicate");
    // Nor one that ran here already: its end is told again instead (the balancer pushed it
    // again because it did not hear of it; the masters have its status, or refused it).
    const done = this.#finished.get(key);
    if (done !== undefined) {
      ack(true, "finished");
      this.#emit({
        kind: "send_finished",
        report: this.#finishedReport(req, done),
        hadInputs: false,
        timeoutMs: FINISHED_TIMEOUT_MS,
      });
      return;
    }
    if (this.#closing) {
      this.#stats.refused++;
      return ack(false, "closing", "worker shutting down");
    }
    if (this.#chunks.size >= this.#slots) {
      this.#stats.refused++;
      return ack(false, "full", `no free slot (${this.#slots} of ${this.#slots} busy)`);
    }
    const slot = this.#freeSlotIds.pop() ?? null;
    const c: ChunkAttempt = {
      key,
      req,
      phase: "fetching",
      slot,
      cancelled: false,
      aborted: false,
      outcome: null,
      ran: false,
      fetchErrors: new Map(),
      statusInFlight: false,
      retryAtMs: -1,
      backoffMs: REPORT_BACKOFF_MIN_MS,
    };
    this.#chunks.set(key, c);
    this.#stats.accepted++;
    ack(true, "new");
    if (slot === null) {
      // Every slot not taken out of use is held by a chunk still cleaning up: a definite result
      // all the same (the masters retry it elsewhere if the job allows).
      const why = "worker could not run chunk: no usable slot (a slot's processes or tmpfs " +
        "would not go)";
      c.outcome = this.#bare(req, CS.Failed, FC.Internal, why);
      this.#toCleaning(c);
      return;
    }
    this.#emit({ kind: "fetch_program", key });
  }

  /** job_cancel: stops the job's chunks named (all when none are); counts those it stopped. */
  #cancel(job: Uuid, chunks: number[]): void {
    const want = new Set(chunks);
    let count = 0;
    for (const c of this.#chunks.values()) {
      if (!uuidEquals(c.req.job, job) || (want.size > 0 && !want.has(c.req.chunkIndex))) continue;
      if (c.cancelled) continue;
      c.cancelled = true;
      this.#abort(c);
      count++;
    }
    this.#emit({ kind: "cancel_ack", job, count });
  }

  #shutdown(): void {
    this.#closing = true;
    for (const c of this.#chunks.values()) this.#abort(c);
  }

  /** Stops a chunk: its program never starts, or is killed; its end is not reported. */
  #abort(c: ChunkAttempt): void {
    if (c.aborted) return;
    c.aborted = true;
    if (c.phase === "fetching") this.#emit({ kind: "abort_fetch", key: c.key });
    else if (c.phase === "running") this.#emit({ kind: "kill", key: c.key });
    // starting: killed when `spawned` arrives; later phases: nothing runs any more.
  }

  #tick(nowMs: number): void {
    for (const c of this.#chunks.values()) {
      if (c.phase !== "reporting" || c.statusInFlight || c.retryAtMs < 0) continue;
      if (c.retryAtMs > nowMs) continue;
      c.retryAtMs = -1;
      this.#sendStatus(c);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Inputs from the shell: how an effect ended

  #get(key: string, phase: Phase, input: string): ChunkAttempt {
    const c = this.#chunks.get(key);
    invariant(c !== undefined, () => `${input} for chunk ${key}, which is not on this worker`);
    invariant(c.phase === phase, () => `${input} for chunk ${key} in phase ${c.phase}`);
    return c;
  }

  #programDone(
    i: Extract<LifecycleInput, { kind: "program_ready" | "program_failed" }>,
  ): void {
    const c = this.#get(i.key, "fetching", i.kind);
    if (c.aborted) return this.#toCleaning(c);
    if (i.kind === "program_failed") {
      const hex = uuidToHex(c.req.programId);
      const text = c.fetchErrors.get(hex) ?? i.text;
      const reason = `program file ${hex} could not be fetched: ${text}`;
      c.outcome = this.#bare(c.req, CS.Failed, FC.InputUnavailable, reason);
      return this.#toCleaning(c);
    }
    invariant(c.slot !== null, () => `chunk ${c.key} fetched its program without a slot`);
    c.phase = "preparing";
    this.#emit({ kind: "prepare", key: c.key, slot: c.slot });
  }

  #prepareDone(i: Extract<LifecycleInput, { kind: "prepared" | "prepare_failed" }>): void {
    const c = this.#get(i.key, "preparing", i.kind);
    if (i.kind === "prepare_failed") {
      c.outcome = this.#bare(c.req, CS.Failed, i.failure, i.reason);
      return this.#toCleaning(c);
    }
    // A cancelled (or shut down) chunk never starts.
    if (c.aborted) return this.#toCleaning(c);
    invariant(c.slot !== null, () => `chunk ${c.key} prepared without a slot`);
    c.phase = "starting";
    this.#emit({ kind: "spawn", key: c.key, slot: c.slot });
  }

  #spawnDone(i: Extract<LifecycleInput, { kind: "spawned" | "spawn_failed" }>): void {
    const c = this.#get(i.key, "starting", i.kind);
    if (i.kind === "spawn_failed") {
      const why = `worker could not run chunk: ${i.text}`;
      c.outcome = this.#bare(c.req, CS.Failed, FC.Internal, why);
      return this.#toCleaning(c);
    }
    c.phase = "running";
    // Cancelled (or shut down) while it was being started: it goes at once.
    if (c.aborted) return this.#emit({ kind: "kill", key: c.key });
    if (i.pid !== 0) {
      // Lets `dsys status` show the chunk as running. One best-effort try: the final status
      // (re-sent until acknowledged) is what counts.
      const status = this.#bare(c.req, CS.Running, FC.None, "");
      this.#emit({ kind: "report_running", key: c.key, status, timeoutMs: RUNNING_TIMEOUT_MS });
    }
  }

  #exited(key: string, end: ProgramEnd): void {
    const c = this.#get(key, "running", "exited");
    if (end.aborted) c.aborted = true;
    if (c.aborted) return this.#toCleaning(c);
    const [state, failure, reason] = resultOf(end, c.req, c.fetchErrors);
    c.outcome = {
      type: MessageType.WorkerStatus,
      node: this.#node,
      job: c.req.job,
      state,
      chunkIndex: c.req.chunkIndex,
      attempt: c.req.attempt,
      exitCode: end.exitCode,
      signal: end.signal,
      failure,
      durationMs: end.durationMs,
      outputs: [],
      stderrTail: end.stderrTail,
      reason,
      ...ticketOf(c.req),
    };
    c.ran = true;
    // Nothing to upload when it never started or its processes would not go.
    if (end.spawnError || end.reapError) return this.#toCleaning(c);
    c.phase = "uploading";
    this.#emit({ kind: "upload", key });
  }

  #uploadDone(i: Extract<LifecycleInput, { kind: "uploaded" | "upload_failed" }>): void {
    const c = this.#get(i.key, "uploading", i.kind);
    const o = c.outcome;
    invariant(o !== null, () => `chunk ${c.key} uploaded without an outcome`);
    if (i.kind === "uploaded") {
      o.outputs = i.outputs;
    } else {
      o.state = CS.Failed;
      o.failure = i.quota ? FC.OutputQuota : FC.OutputFailed;
      o.reason = (i.quota ? i.text : `output upload failed: ${i.text}`) +
        (o.reason ? ` (${o.reason})` : "");
      o.outputs = [];
    }
    this.#toCleaning(c);
  }

  #toCleaning(c: ChunkAttempt): void {
    c.phase = "cleaning";
    const ended = c.ran && !c.aborted ? c.outcome : null;
    this.#emit({ kind: "clean_up", key: c.key, slot: c.slot, ended });
  }

  #cleaned(key: string, slotUsable: boolean): void {
    const c = this.#get(key, "cleaning", "cleaned");
    if (c.slot !== null) {
      if (slotUsable) this.#freeSlotIds.push(c.slot);
      else this.#brokenSlots++;
      c.slot = null;
    }
    if (c.cancelled) {
      // The masters decided already (the chunk is cancelled there): only the slot is news.
      return this.#finish(c, CS.Cancelled);
    }
    if (c.aborted) {
      // Shutting down: say so at once (best effort) so the master re-dispatches the chunk
      // without waiting for our heartbeats to time out.
      this.#chunks.delete(c.key);
      const status = this.#bare(c.req, CS.Lost, FC.WorkerLost, "worker shutting down");
      this.#emit({ kind: "send_lost", status, timeoutMs: LOST_TIMEOUT_MS });
      this.#emit({ kind: "forget", key: c.key });
      this.#emit({ kind: "wake" });
      return;
    }
    invariant(c.outcome !== null, () => `chunk ${c.key} cleaned up without an outcome`);
    c.phase = "reporting";
    this.#sendStatus(c);
  }

  #sendStatus(c: ChunkAttempt): void {
    const o = c.outcome;
    invariant(
      o !== null && o.state !== CS.Running && o.state !== CS.Lost,
      () => `chunk ${c.key} reported without a final outcome`,
    );
    c.statusInFlight = true;
    this.#emit({ kind: "send_status", key: c.key, status: o, timeoutMs: STATUS_TIMEOUT_MS });
  }

  #statusAnswer(key: string, answer: StatusAnswer, nowMs: number): void {
    const c = this.#get(key, "reporting", "status_answer");
    invariant(c.statusInFlight, () => `status_answer for chunk ${key} with no status out`);
    c.statusInFlight = false;
    const o = c.outcome!;
    if (answer === "acked") {
      this.#stats.reported++;
      return this.#finish(c, o.state);
    }
    if (answer === "rejected") return this.#finish(c, o.state);
    if (this.#closing) {
      // Shutting down before a master acknowledged it: the masters learn of the chunk from the
      // balancer (its worker is gone), and it runs again.
      this.#chunks.delete(c.key);
      this.#emit({ kind: "forget", key: c.key });
      this.#emit({ kind: "wake" });
      return;
    }
    c.retryAtMs = nowMs + c.backoffMs;
    c.backoffMs = Math.min(REPORT_BACKOFF_MAX_MS, c.backoffMs * 2);
  }

  /** The chunk has ended for good: its slot is free, the balancer is told. */
  #finish(c: ChunkAttempt, state: ChunkState): void {
    invariant(
      state === CS.Succeeded || state === CS.Failed || state === CS.Cancelled,
      () => `chunk ${c.key} finished in state ${state}`,
    );
    invariant(!this.#finished.has(c.key), () => `chunk ${c.key} finished twice`);
    // Free before telling the balancer: it may push the next chunk as soon as it reads this.
    this.#chunks.delete(c.key);
    this.#finished.set(c.key, state);
    if (this.#finished.size > MAX_FINISHED_KEPT) {
      this.#finished.delete(this.#finished.keys().next().value!);
    }
    this.#emit({
      kind: "send_finished",
      report: this.#finishedReport(c.req, state),
      hadInputs: c.req.inputFiles.length > 0,
      timeoutMs: FINISHED_TIMEOUT_MS,
    });
    this.#emit({ kind: "forget", key: c.key });
  }

  #finishedAnswer(report: ChunkFinished, answer: FinishedAnswer, hadInputs: boolean): void {
    if (answer === "unavailable") {
      // The balancer is away (or failing over): re-sent before the next heartbeat, to
      // whichever balancer is primary by then.
      this.#unacked.push(report);
      if (this.#unacked.length > MAX_UNACKED_FINISHES) this.#unacked.shift();
    }
    // Heartbeat now rather than at the next period when the balancer did not hear of the free
    // slot, or when the chunk had inputs (the cache changed: newly cached files steer placement,
    // and a file cached and evicted between two periodic heartbeats would never be announced).
    if (answer !== "acked" || hadInputs) this.#emit({ kind: "wake" });
  }

  // ------------------------------------------------------------------------------------------
  // Helpers

  #emit(e: LifecycleEffect): void {
    if (e.kind === "spawn") {
      const c = this.#chunks.get(e.key);
      // The invariants the rest rely on, asserted where they matter.
      invariant(c !== undefined && !c.aborted, () => `spawn of stopped chunk ${e.key}`);
      for (const o of this.#chunks.values()) {
        invariant(
          o === c || o.slot !== e.slot,
          () => `spawn of ${e.key} in slot ${e.slot}, held by ${o.key}`,
        );
      }
    }
    if (e.kind === "send_finished") {
      const known = this.#finished.get(chunkKey(e.report));
      invariant(
        known === e.report.state,
        () => `chunk_finished of ${chunkKey(e.report)} as ${e.report.state}, recorded ${known}`,
      );
    }
    this.#out.push(e);
  }

  #finishedReport(req: WorkerRequest, state: ChunkState): ChunkFinished {
    return {
      type: MessageType.ChunkFinished,
      node: this.#node,
      job: req.job,
      chunkIndex: req.chunkIndex,
      attempt: req.attempt,
      state,
    };
  }

  /** A worker_status without a program result (setup failure, running, lost). */
  #bare(req: WorkerRequest, state: ChunkState, failure: FailureCode, reason: string): WorkerStatus {
    return {
      type: MessageType.WorkerStatus,
      node: this.#node,
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

  #check(): void {
    const n = this.#chunks.size;
    invariant(n <= this.#slots, () => `${n} chunks on a worker of ${this.#slots} slots`);
    invariant(
      this.#unacked.length <= MAX_UNACKED_FINISHES,
      () => `${this.#unacked.length} unacknowledged chunk_finished kept`,
    );
    invariant(this.#finished.size <= MAX_FINISHED_KEPT, () => "finished attempts unbounded");
    const held = new Set<number>();
    let holders = 0;
    for (const c of this.#chunks.values()) {
      invariant(!this.#finished.has(c.key), () => `chunk ${c.key} runs again after it finished`);
      invariant(!c.cancelled || c.aborted, () => `cancelled chunk ${c.key} not stopped`);
      invariant(!this.#closing || c.aborted, () => `chunk ${c.key} not stopped at shutdown`);
      const late = c.phase === "reporting";
      invariant(
        !late || (c.outcome !== null && c.slot === null),
        () => `chunk ${c.key} reporting without an outcome or still holding its slot`,
      );
      invariant(
        !c.statusInFlight || (late && c.retryAtMs < 0),
        () => `chunk ${c.key}: status out while ${c.phase} or waiting for a retry`,
      );
      if (c.slot === null) continue;
      invariant(
        Number.isInteger(c.slot) && c.slot >= 0 && c.slot < this.#slots && !held.has(c.slot),
        () => `slot ${c.slot} of chunk ${c.key} out of range or held twice`,
      );
      held.add(c.slot);
      holders++;
    }
    for (const s of this.#freeSlotIds) {
      invariant(!held.has(s), () => `slot ${s} both free and held`);
      held.add(s);
    }
    const accounted = holders + this.#freeSlotIds.length + this.#brokenSlots;
    invariant(
      held.size === holders + this.#freeSlotIds.length && accounted === this.#slots,
      () =>
        `slots: ${holders} held + ${this.#freeSlotIds.length} free + ` +
        `${this.#brokenSlots} broken != ${this.#slots}`,
    );
  }
}

/** True when chunk `req` reads file `hex` (its program or an input). */
function usesFile(req: WorkerRequest, hex: string): boolean {
  return uuidToHex(req.programId) === hex || req.inputFiles.some((f) => uuidToHex(f.id) === hex);
}

/** State, failure and reason of a chunk whose program ran: a limit it went over first (the
 * kernel's record of it is exact), then how the program ended. */
export function resultOf(
  r: ProgramEnd,
  req: WorkerRequest,
  fetchErrors: Map<string, string>,
): [ChunkState, FailureCode, string] {
  if (r.reapError) {
    return [CS.Failed, FC.Internal, `processes of the chunk would not go: ${r.reapError}`];
  }
  if (r.limitHit) return [CS.Failed, r.limitHit.failure, r.limitHit.reason];
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

/** The placement ticket of a chunk's worker_request, for every worker_status about it (the
 * masters accept a status only with the ticket minted for this worker's key). */
function ticketOf(req: WorkerRequest): Pick<WorkerStatus, "ticket"> {
  return req.ticket && req.ticket.length > 0 ? { ticket: req.ticket } : {};
}
