/**
 * The masters' replicated state machine: every job ever accepted and every chunk's result.
 *
 * Pure and deterministic: it changes only through `apply` of committed commands, in log order,
 * so every master that applies the same log holds the same table. No clocks, no I/O; times come
 * inside the commands (stamped by the leader that proposed them).
 */
import {
  type ChunkRecord,
  ChunkState,
  FailureCode,
  type FileEntry,
  uuidToHex as hex,
  type WorkerStatus,
} from "../../wire/mod.ts";

/** A job as submitted; immutable once accepted. */
export interface JobSpec {
  jobId: Uint8Array;
  clientId: Uint8Array;
  seq: number;
  programName: string;
  program: Uint8Array;
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
}

/** A command of the replicated log. */
export type Command =
  | { kind: "submit"; spec: JobSpec }
  | { kind: "report"; status: WorkerStatus; atMs: number };

/** What applying a command produced. */
export type ApplyResult =
  | { kind: "submitted"; jobId: Uint8Array; duplicate: boolean }
  | { kind: "reported"; accepted: boolean; jobDone: boolean };

/** A job with its chunks. */
export interface JobRecord {
  spec: JobSpec;
  chunks: ChunkRecord[];
  done: number;
  failed: number;
  finishedAtMs: number;
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
  };
}

function isFinal(state: number): boolean {
  return state === ChunkState.Succeeded || state === ChunkState.Failed;
}

/** The session-table key of a client id of an owner. */
export function sessionKey(owner: string, clientId: Uint8Array): string {
  return `${owner}/${hex(clientId)}`;
}

/** The job table: jobs by id and the exactly-once session of each client. */
export class JobTable {
  /** Jobs by hex id, in submission order. */
  readonly jobs = new Map<string, JobRecord>();
  /**
   * Per session (owner + client id, see {@linkcode sessionKey}): the highest sequence number
   * applied and the job it created. Keyed by owner too, so a client id seen in another user's
   * status can never be replayed to learn or shadow that user's jobs.
   */
  readonly sessions = new Map<string, { seq: number; jobId: Uint8Array }>();

  /** Applies one committed command; deterministic. */
  apply(cmd: Command): ApplyResult {
    return cmd.kind === "submit" ? this.#submit(cmd.spec) : this.#report(cmd.status, cmd.atMs);
  }

  /** The job with this id, if any. */
  get(jobId: Uint8Array): JobRecord | undefined {
    return this.jobs.get(hex(jobId));
  }

  #submit(spec: JobSpec): ApplyResult {
    const client = sessionKey(spec.owner, spec.clientId);
    const session = this.sessions.get(client);
    // A retried submission (same client, same or older seq) returns the job it already made.
    if (session && spec.seq <= session.seq) {
      return { kind: "submitted", jobId: session.jobId, duplicate: true };
    }
    const key = hex(spec.jobId);
    if (!this.jobs.has(key)) {
      this.jobs.set(key, {
        spec,
        chunks: Array.from({ length: spec.numChunks }, (_, i) => newChunk(i)),
        done: 0,
        failed: 0,
        finishedAtMs: 0,
      });
    }
    this.sessions.set(client, { seq: spec.seq, jobId: spec.jobId });
    return { kind: "submitted", jobId: spec.jobId, duplicate: false };
  }

  #report(s: WorkerStatus, atMs: number): ApplyResult {
    const rejected: ApplyResult = { kind: "reported", accepted: false, jobDone: false };
    const job = this.jobs.get(hex(s.job));
    if (!job || s.chunkIndex >= job.chunks.length || !isFinal(s.state)) return rejected;
    const c = job.chunks[s.chunkIndex];
    // The first final result wins: a chunk re-run after a lost worker may report twice.
    if (isFinal(c.state)) return rejected;
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
    };
    if (s.state === ChunkState.Succeeded) job.done++;
    else job.failed++;
    const jobDone = job.done + job.failed === job.chunks.length;
    if (jobDone) job.finishedAtMs = atMs;
    return { kind: "reported", accepted: true, jobDone };
  }

  /** The job's summary state (a ChunkState code: Running, Succeeded or Failed). */
  static jobState(job: JobRecord): number {
    if (job.done + job.failed < job.chunks.length) return ChunkState.Running;
    return job.failed > 0 ? ChunkState.Failed : ChunkState.Succeeded;
  }

  /** Chunks not yet finished, for (re-)dispatch to the balancer. */
  static unfinishedChunks(job: JobRecord): number[] {
    const out: number[] = [];
    for (const c of job.chunks) if (!isFinal(c.state)) out.push(c.chunkIndex);
    return out;
  }
}
