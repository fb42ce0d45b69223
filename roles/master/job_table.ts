/**
 * The masters' replicated state machine: every live job (accepted, running, or finished and not
 * yet removed) with each chunk's result, the exactly-once client sessions, and how many jobs
 * refer to each file.
 *
 * Pure and deterministic: it changes only through `apply` of committed commands, in log order,
 * so every master that applies the same log holds the same table. No clocks, no I/O; times come
 * inside the commands (stamped by the leader that proposed them). A finished job leaves only
 * through a `remove` command, which the leader proposes once the job has been finished for the
 * retention (`--job-retention`), or for `dsys rm`: the table holds no history beyond that.
 */
import { FileRefs } from "./file_refs.ts";
import {
  type AttemptRecord,
  type ChunkRecord,
  ChunkState,
  FailureCode,
  type FileEntry,
  type LimitFields,
  uuidToHex as hex,
  type WorkerStatus,
} from "../../wire/mod.ts";

/** A job as submitted; immutable once accepted. */
export interface JobSpec {
  jobId: Uint8Array;
  clientId: Uint8Array;
  seq: number;
  programName: string;
  /** File id of the program (stored like an input, owned by the submitter). */
  programId: Uint8Array;
  /** Program size in bytes, as storage reported it at submission. */
  programSize: number;
  argument: Uint8Array;
  numChunks: number;
  timeLimitMs: number;
  inputs: FileEntry[];
  submittedAtMs: number;
  /**
   * The keyring name of the user whose key submitted it ("" in an insecure cluster): only that
   * user, or an admin, may see the job and its outputs.
   */
  owner: string;
  /** The chunk limits it asked for (job_submit's limit fields that are set; none: defaults). */
  limits?: LimitFields;
  /** Times each failed chunk runs again (its own budget; backoff between). Default 0. */
  retries?: number;
  /** Once this many chunks failed for good, the rest are cancelled. 0 (default) = never. */
  maxFailedChunks?: number;
}

/** First retry backoff, ms; it doubles with each failed attempt of the chunk, up to the max. */
export const RETRY_BACKOFF_MS = 1000;
/** Longest retry backoff, ms. */
export const MAX_RETRY_BACKOFF_MS = 60_000;

/** The backoff before retry number `n` (1 = the first retry) of a chunk, ms. */
export function retryBackoffMs(n: number): number {
  return Math.min(MAX_RETRY_BACKOFF_MS, RETRY_BACKOFF_MS * 2 ** Math.min(30, Math.max(0, n - 1)));
}

/** A command of the replicated log. */
export type Command =
  | { kind: "submit"; spec: JobSpec }
  | { kind: "report"; status: WorkerStatus; atMs: number }
  /** Removes these jobs, those of them that are finished (others are left as they are). */
  | { kind: "remove"; jobIds: Uint8Array[] }
  /** Grants the primary balancer lease (the leader's decision, see roles/master/lease.ts). */
  | { kind: "lease"; lease: BalancerLeaseRecord }
  /** Cancels these chunks of a job (none listed: all); final ones stay as they are. */
  | { kind: "cancel"; jobId: Uint8Array; chunks: number[]; reason: string; atMs: number }
  /**
   * Sets chunk records of a job as they were (snapshots only: replaying every report of a job
   * with retries and `maxFailedChunks` in another order could stop it at another chunk).
   */
  | {
    kind: "restore";
    jobId: Uint8Array;
    chunks: ChunkRecord[];
    finishedAtMs: number;
    cancelledAtMs: number;
  }
  /** `user` keeps these files (`dsys put`), or no longer does (`unkeep`: `dsys rm FILE`). */
  | {
    kind: "keep";
    user: string;
    unkeep: boolean;
    replicas: number;
    files: FileEntry[];
    atMs: number;
  }
  /** Deletes these files, those of them nothing references (file_refs.ts). */
  | { kind: "delete"; files: Uint8Array[]; atMs: number };

/**
 * Who may act as the primary balancer. Only the grant of a new epoch is a command: the leader
 * times the lease and confirms renewals without logging them (roles/master/lease.ts), so the
 * log holds one entry per change of primary, not one per renewal.
 */
export interface BalancerLeaseRecord {
  /** Increases by one with every grant; workers refuse pushes of an older epoch. */
  epoch: number;
  /** The holder's node id. */
  holder: Uint8Array;
  /** The holder's advertised endpoint (where masters dispatch and standbys sync). */
  endpoint: string;
  /** Lease length, ms: replicated, so every leader times the lease alike. */
  durationMs: number;
}

/** What applying a command produced. */
export type ApplyResult =
  /** `refused`: why the job was not accepted (it names a file the cluster deleted). */
  | { kind: "submitted"; jobId: Uint8Array; duplicate: boolean; refused?: string }
  | { kind: "reported"; accepted: boolean; jobDone: boolean }
  /** How many of the command's jobs it removed (the others were gone or not finished). */
  | { kind: "removed"; removed: number }
  /** Whether the grant took effect (its epoch was the next one). */
  | { kind: "leased"; granted: boolean }
  /** How many chunks the cancel stopped (0: all were final already, or no such job). */
  | { kind: "cancelled"; cancelled: number; jobDone: boolean; found: boolean }
  | { kind: "restored" }
  /** How many keeps were added or removed; null: refused (over the keep limits). */
  | { kind: "kept"; changed: number | null }
  /** The files (hex) the delete tombstoned. */
  | { kind: "deleted"; files: string[] };

/** A job with its chunks. */
export interface JobRecord {
  spec: JobSpec;
  chunks: ChunkRecord[];
  done: number;
  failed: number;
  /** Chunks cancelled (by `cancel`, or by the job's `maxFailedChunks`). */
  cancelled: number;
  finishedAtMs: number;
  /** When the last cancel of this job was applied (the leader's clock; 0 = never). */
  cancelledAtMs: number;
}

function newChunk(chunkIndex: number): ChunkRecord {
  return {
    chunkIndex,
    state: ChunkState.Queued,
    attempt: 0,
    exitCode: 0,
    signal: 0,
    failure: FailureCode.None,
    durationMs: 0,
    outputs: [],
    stderrTail: new Uint8Array(0),
    reason: "",
    retryAtMs: 0,
    history: [],
    worker: new Uint8Array(16),
  };
}

/** The files a job's spec refers to: its program and inputs (outputs are counted per chunk). */
function specFiles(spec: JobSpec): Uint8Array[] {
  return [spec.programId, ...spec.inputs.map((f) => f.id)];
}

function isFinal(state: number): boolean {
  return state === ChunkState.Succeeded || state === ChunkState.Failed ||
    state === ChunkState.Cancelled;
}

/** The session-table key of a client id of an owner. */
export function sessionKey(owner: string, clientId: Uint8Array): string {
  return `${owner}/${hex(clientId)}`;
}

/**
 * One client's exactly-once session: its jobs still in the table, in submission order (so in
 * increasing `seq`), and the sequence number and job of the newest of them.
 *
 * Sessions are bounded by the jobs: a session is exactly what its live jobs say, and it ends
 * when its last job is removed. Why this and not "the last sequence with a timestamp, dropped
 * after the retention": (1) a session then never ends while one of its jobs is still in the
 * table, so a retry is recognised for at least as long as the job it would duplicate can be
 * seen (its whole run plus the retention), and the number of sessions never exceeds the number
 * of jobs; (2) it needs no clock and no command of its own, because removing a job is already
 * one; (3) it keeps snapshots exact with no extra record: a snapshot is the live jobs' submits
 * (snapshot.ts), and replaying those rebuilds each session as it is here. A session that
 * remembered the sequence of a removed job could not be rebuilt from them (a master restored
 * from a snapshot would then accept a retry its peers call a duplicate). The price: once a
 * client's jobs are all removed (finished for the retention, or `dsys rm`), a retry of one of
 * its submissions creates a new job; and if only the newest was removed, the session falls back
 * to the newest remaining one, so a retry of the removed submission creates a new job too.
 * Retries come within a client's timeout (seconds), far inside any sensible retention.
 */
export interface Session {
  /** Sequence number of the newest live job (a submission with seq <= this is a retry). */
  seq: number;
  /** That job's id. */
  jobId: Uint8Array;
  /** The session's live jobs, oldest first. */
  jobs: JobSpec[];
}

/** The job table: live jobs by id, the exactly-once session of each client, file references. */
export class JobTable {
  /** Jobs by hex id, in submission order. */
  readonly jobs = new Map<string, JobRecord>();
  /**
   * Per session (owner + client id, see {@linkcode sessionKey}): the newest sequence number
   * applied and the job it created, while any of the session's jobs is live ({@linkcode Session}).
   * Keyed by owner too, so a client id seen in another user's status can never be replayed to
   * learn or shadow that user's jobs.
   */
  readonly sessions = new Map<string, Session>();
  /**
   * What keeps each file alive (file_refs.ts): references from live jobs (one for a job's
   * program, one per input, one per output of each of its finished chunks; taken when a job or a
   * chunk's result is accepted, released when the job is removed), users' keeps, and tombstones
   * of files the cluster deleted. Rebuilt by replaying a snapshot's commands like everything else.
   */
  readonly files = new FileRefs();

  /** References from live jobs per file (hex id); a file no live job names has no entry. */
  get fileRefs(): ReadonlyMap<string, number> {
    return this.files.jobRefs;
  }
  /** The primary balancer lease, null until the first grant. */
  lease: BalancerLeaseRecord | null = null;

  /** Applies one committed command; deterministic. */
  apply(cmd: Command): ApplyResult {
    switch (cmd.kind) {
      case "submit":
        return this.#submit(cmd.spec);
      case "report":
        return this.#report(cmd.status, cmd.atMs);
      case "remove":
        return this.#remove(cmd.jobIds);
      case "lease":
        return this.#grant(cmd.lease);
      case "cancel":
        return this.#cancel(cmd.jobId, cmd.chunks, cmd.reason, cmd.atMs);
      case "restore":
        return this.#restore(cmd);
      case "keep":
        return {
          kind: "kept",
          changed: cmd.unkeep
            ? this.files.unkeep(cmd.user, cmd.files.map((f) => f.id))
            : this.files.keep(cmd.user, cmd.files, cmd.replicas, cmd.atMs),
        };
      case "delete":
        return { kind: "deleted", files: this.files.delete(cmd.files, cmd.atMs) };
    }
  }

  #cancel(jobId: Uint8Array, chunks: number[], reason: string, atMs: number): ApplyResult {
    const job = this.jobs.get(hex(jobId));
    if (!job) return { kind: "cancelled", cancelled: 0, jobDone: false, found: false };
    const was = JobTable.isFinished(job);
    let n = 0;
    const targets = chunks.length > 0 ? chunks : job.chunks.map((c) => c.chunkIndex);
    for (const i of targets) {
      const c = job.chunks[i];
      if (!c || isFinal(c.state)) continue;
      job.chunks[i] = { ...c, state: ChunkState.Cancelled, reason, retryAtMs: 0 };
      job.cancelled++;
      n++;
    }
    if (n > 0) job.cancelledAtMs = atMs;
    const jobDone = !was && JobTable.isFinished(job);
    if (jobDone) job.finishedAtMs = atMs;
    return { kind: "cancelled", cancelled: n, jobDone, found: true };
  }

  #restore(cmd: Extract<Command, { kind: "restore" }>): ApplyResult {
    const job = this.jobs.get(hex(cmd.jobId));
    if (!job) return { kind: "restored" };
    for (const r of cmd.chunks) {
      const old = job.chunks[r.chunkIndex];
      if (!old) continue;
      this.#count(job, old, -1);
      job.chunks[r.chunkIndex] = r;
      this.#count(job, r, 1);
    }
    job.finishedAtMs = cmd.finishedAtMs;
    job.cancelledAtMs = cmd.cancelledAtMs;
    return { kind: "restored" };
  }

  /** Adds (+1) or removes (-1) a chunk record's part of the job's counters and file references. */
  #count(job: JobRecord, c: ChunkRecord, d: 1 | -1): void {
    if (c.state === ChunkState.Succeeded) job.done += d;
    else if (c.state === ChunkState.Failed) job.failed += d;
    else if (c.state === ChunkState.Cancelled) job.cancelled += d;
    if (c.state === ChunkState.Succeeded || c.state === ChunkState.Failed) {
      for (const o of c.outputs) this.#ref(o.id, d);
    }
  }

  #grant(l: BalancerLeaseRecord): ApplyResult {
    // Only the next epoch: two grants proposed at once (a leader change in between) cannot both
    // win, and a replayed old grant changes nothing.
    if (l.epoch !== (this.lease?.epoch ?? 0) + 1) return { kind: "leased", granted: false };
    this.lease = { ...l, holder: l.holder.slice() };
    return { kind: "leased", granted: true };
  }

  /** The job with this id, if any. */
  get(jobId: Uint8Array): JobRecord | undefined {
    return this.jobs.get(hex(jobId));
  }

  #submit(spec: JobSpec): ApplyResult {
    const client = sessionKey(spec.owner, spec.clientId);
    const session = this.sessions.get(client);
    // A retried submission (same client, same or older seq) returns the job it already made
    // (the newest one if that submission's own job is gone).
    if (session && spec.seq <= session.seq) {
      const same = session.jobs.findLast((j) => j.seq === spec.seq) ?? session;
      return { kind: "submitted", jobId: same.jobId, duplicate: true };
    }
    const key = hex(spec.jobId);
    // The leader picks job ids at random: one already in the table is never a new job.
    if (this.jobs.has(key)) return { kind: "submitted", jobId: spec.jobId, duplicate: true };
    // A file deleted since the leader checked it exists: the job would read bytes being deleted.
    const gone = specFiles(spec).find((id) => this.files.isDeleted(hex(id)));
    if (gone) {
      return {
        kind: "submitted",
        jobId: spec.jobId,
        duplicate: false,
        refused: `file ${hex(gone)} was deleted (nothing referred to it for the grace period)`,
      };
    }
    this.jobs.set(key, {
      spec,
      chunks: Array.from({ length: spec.numChunks }, (_, i) => newChunk(i)),
      done: 0,
      failed: 0,
      cancelled: 0,
      finishedAtMs: 0,
      cancelledAtMs: 0,
    });
    for (const id of specFiles(spec)) this.#ref(id, 1);
    if (session) {
      session.jobs.push(spec);
      session.seq = spec.seq;
      session.jobId = spec.jobId;
    } else this.sessions.set(client, { seq: spec.seq, jobId: spec.jobId, jobs: [spec] });
    return { kind: "submitted", jobId: spec.jobId, duplicate: false };
  }

  #remove(jobIds: Uint8Array[]): ApplyResult {
    let removed = 0;
    for (const id of jobIds) {
      const key = hex(id);
      const job = this.jobs.get(key);
      // Only a finished job can be removed (a running one first needs cancelling).
      if (!job || !JobTable.isFinished(job)) continue;
      this.jobs.delete(key);
      removed++;
      for (const f of specFiles(job.spec)) this.#ref(f, -1);
      for (const c of job.chunks) for (const o of c.outputs) this.#ref(o.id, -1);
      const sk = sessionKey(job.spec.owner, job.spec.clientId);
      const s = this.sessions.get(sk);
      const i = s ? s.jobs.indexOf(job.spec) : -1;
      if (!s || i < 0) continue;
      s.jobs.splice(i, 1);
      const newest = s.jobs.at(-1);
      if (!newest) this.sessions.delete(sk);
      else {
        s.seq = newest.seq;
        s.jobId = newest.jobId;
      }
    }
    return { kind: "removed", removed };
  }

  #ref(file: Uint8Array, delta: number): void {
    this.files.ref(file, delta);
  }

  #report(s: WorkerStatus, atMs: number): ApplyResult {
    const rejected: ApplyResult = { kind: "reported", accepted: false, jobDone: false };
    const job = this.jobs.get(hex(s.job));
    // Only a result (succeeded or failed) is a report: cancelling is the masters' decision.
    const result = s.state === ChunkState.Succeeded || s.state === ChunkState.Failed;
    if (!job || s.chunkIndex >= job.chunks.length || !result) return rejected;
    const c = job.chunks[s.chunkIndex];
    // The first final result wins: a chunk re-run after a lost worker may report twice.
    if (isFinal(c.state)) return rejected;
    // A failure of an attempt that is already in the history (the worker repeated its report),
    // or older than it, changes nothing; a success of any attempt is a success.
    const lastFailed = c.history.at(-1)?.attempt ?? 0;
    if (s.state === ChunkState.Failed && s.attempt <= lastFailed) return rejected;
    const retries = job.spec.retries ?? 0;
    if (
      s.state === ChunkState.Failed && c.history.length < retries &&
      s.failure !== FailureCode.Policy
    ) {
      // Retried: this attempt's outcome joins the history, the chunk waits for its backoff.
      const a: AttemptRecord = {
        attempt: s.attempt,
        state: s.state,
        exitCode: s.exitCode,
        signal: s.signal,
        failure: s.failure,
        durationMs: s.durationMs,
        atMs,
        reason: s.reason,
      };
      const history = [...c.history, a];
      job.chunks[s.chunkIndex] = {
        ...c,
        attempt: s.attempt,
        history,
        retryAtMs: atMs + retryBackoffMs(history.length),
        worker: s.node,
        reason: `attempt ${s.attempt} failed (${s.reason}); retry ${history.length} of ${retries}`,
      };
      return { kind: "reported", accepted: true, jobDone: false };
    }
    job.chunks[s.chunkIndex] = {
      chunkIndex: s.chunkIndex,
      state: s.state,
      attempt: s.attempt,
      exitCode: s.exitCode,
      signal: s.signal,
      failure: s.failure,
      durationMs: s.durationMs,
      outputs: s.outputs,
      stderrTail: s.stderrTail,
      reason: s.reason,
      retryAtMs: 0,
      history: c.history,
      worker: s.node,
    };
    this.#count(job, job.chunks[s.chunkIndex], 1);
    // Its outputs were just written (again): live, whatever the cluster deleted before.
    for (const o of s.outputs) this.files.revive(hex(o.id));
    let jobDone = JobTable.isFinished(job);
    const max = job.spec.maxFailedChunks ?? 0;
    if (!jobDone && s.state === ChunkState.Failed && max > 0 && job.failed >= max) {
      // Stop early: the rest is cancelled in the same command, so every master agrees on which.
      const r = this.#cancel(
        job.spec.jobId,
        [],
        `job stopped: ${job.failed} chunks failed (--max-failed-chunks ${max})`,
        atMs,
      );
      jobDone = r.kind === "cancelled" && r.jobDone;
    }
    if (jobDone) job.finishedAtMs = atMs;
    return { kind: "reported", accepted: true, jobDone };
  }

  /** Is every chunk of the job final (succeeded, failed or cancelled)? */
  static isFinished(job: JobRecord): boolean {
    return job.done + job.failed + job.cancelled === job.chunks.length;
  }

  /**
   * The job's summary state (a ChunkState code): Running until every chunk is final; then
   * Failed if any chunk failed, else Cancelled if any was cancelled, else Succeeded.
   */
  static jobState(job: JobRecord): number {
    if (!JobTable.isFinished(job)) return ChunkState.Running;
    if (job.failed > 0) return ChunkState.Failed;
    return job.cancelled > 0 ? ChunkState.Cancelled : ChunkState.Succeeded;
  }

  /** Chunks not yet final (queued, running, or waiting for a retry). */
  static unfinishedChunks(job: JobRecord): number[] {
    const out: number[] = [];
    for (const c of job.chunks) if (!isFinal(c.state)) out.push(c.chunkIndex);
    return out;
  }

  /**
   * The chunks to (re-)dispatch at `nowMs`, with their attempt numbers: every chunk not yet final
   * whose retry backoff (if any) has passed. A retry runs as the attempt after the failed one,
   * so a balancer that saw that attempt end knows to run the chunk again.
   */
  static dispatchable(job: JobRecord, nowMs: number): { chunkIndex: number; attempt: number }[] {
    const out: { chunkIndex: number; attempt: number }[] = [];
    for (const c of job.chunks) {
      if (isFinal(c.state) || c.retryAtMs > nowMs) continue;
      const attempt = c.history.length > 0 ? c.attempt + 1 : Math.max(1, c.attempt);
      out.push({ chunkIndex: c.chunkIndex, attempt });
    }
    return out;
  }
}
