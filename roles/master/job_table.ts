/**
 * The masters' replicated state machine: every job ever accepted and every chunk's result.
 *
 * Pure and deterministic: it changes only through `apply` of committed commands, in log order,
 * so every master that applies the same log holds the same table. No clocks, no I/O; times come
 * inside the commands (stamped by the leader that proposed them).
 */

/** One input file of a job, as it appears by `name` in the worker's FUSE mount. */
export interface JobInput {
  id: Uint8Array;
  name: string;
  size: number;
}

/** An output file a chunk wrote, stored on a storage node. */
export interface ChunkOutput {
  id: Uint8Array;
  name: string;
  size: number;
}

/** A job as submitted; immutable once accepted. */
export interface JobSpec {
  jobId: Uint8Array;
  clientId: Uint8Array;
  seq: bigint;
  programName: string;
  program: Uint8Array;
  argument: Uint8Array;
  numChunks: number;
  timeLimitMs: number;
  inputs: JobInput[];
  submittedAtMs: number;
}

/** Life of a chunk as the masters record it. */
export type ChunkState = "pending" | "running" | "succeeded" | "failed";

/** The recorded state of one chunk. */
export interface ChunkRecord {
  state: ChunkState;
  attempt: number;
  exitCode: number;
  reason: string;
  stderrTail: Uint8Array;
  outputs: ChunkOutput[];
  durationMs: number;
  worker: string;
  finishedAtMs: number;
}

/** A chunk's final (or running) report, as committed from a worker_status. */
export interface ChunkReport {
  jobId: Uint8Array;
  chunk: number;
  attempt: number;
  state: ChunkState;
  exitCode: number;
  reason: string;
  stderrTail: Uint8Array;
  outputs: ChunkOutput[];
  durationMs: number;
  worker: string;
  atMs: number;
}

/** A command of the replicated log. */
export type Command =
  | { kind: "submit"; spec: JobSpec }
  | { kind: "report"; report: ChunkReport };

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

/** Summary state of a job. */
export type JobState = "running" | "succeeded" | "failed";

/** The hex form of an id: used as map key. */
export function hex(id: Uint8Array): string {
  let s = "";
  for (let i = 0; i < id.length; i++) s += id[i].toString(16).padStart(2, "0");
  return s;
}

function newChunk(): ChunkRecord {
  return {
    state: "pending",
    attempt: 0,
    exitCode: 0,
    reason: "",
    stderrTail: new Uint8Array(0),
    outputs: [],
    durationMs: 0,
    worker: "",
    finishedAtMs: 0,
  };
}

/** The job table: jobs by id and the exactly-once session of each client. */
export class JobTable {
  readonly jobs = new Map<string, JobRecord>();
  /** Per client: the highest sequence number applied and the job it created. */
  readonly sessions = new Map<string, { seq: bigint; jobId: Uint8Array }>();
  /** Index of the last applied log entry (set by the consensus shell). */
  appliedIndex = 0;

  /** Applies one committed command; deterministic. */
  apply(cmd: Command): ApplyResult {
    if (cmd.kind === "submit") return this.#submit(cmd.spec);
    return this.#report(cmd.report);
  }

  #submit(spec: JobSpec): ApplyResult {
    const client = hex(spec.clientId);
    const session = this.sessions.get(client);
    // A retried submission (same client, same or older seq) returns the job it already made.
    if (session && spec.seq <= session.seq) {
      return { kind: "submitted", jobId: session.jobId, duplicate: true };
    }
    const key = hex(spec.jobId);
    if (!this.jobs.has(key)) {
      this.jobs.set(key, {
        spec,
        chunks: Array.from({ length: spec.numChunks }, newChunk),
        done: 0,
        failed: 0,
        finishedAtMs: 0,
      });
    }
    this.sessions.set(client, { seq: spec.seq, jobId: spec.jobId });
    return { kind: "submitted", jobId: spec.jobId, duplicate: false };
  }

  #report(r: ChunkReport): ApplyResult {
    const job = this.jobs.get(hex(r.jobId));
    if (!job || r.chunk < 0 || r.chunk >= job.chunks.length) {
      return { kind: "reported", accepted: false, jobDone: false };
    }
    const c = job.chunks[r.chunk];
    // The first final result wins: a chunk re-run after a lost worker may report twice.
    if (c.state === "succeeded" || c.state === "failed") {
      return { kind: "reported", accepted: false, jobDone: false };
    }
    if (r.state === "running" || r.state === "pending") {
      if (r.attempt < c.attempt) return { kind: "reported", accepted: false, jobDone: false };
      c.state = r.state;
      c.attempt = r.attempt;
      c.worker = r.worker;
      return { kind: "reported", accepted: true, jobDone: false };
    }
    Object.assign(c, {
      state: r.state,
      attempt: r.attempt,
      exitCode: r.exitCode,
      reason: r.reason,
      stderrTail: r.stderrTail,
      outputs: r.outputs,
      durationMs: r.durationMs,
      worker: r.worker,
      finishedAtMs: r.atMs,
    });
    if (r.state === "succeeded") job.done++;
    else job.failed++;
    const jobDone = job.done + job.failed === job.chunks.length;
    if (jobDone) job.finishedAtMs = r.atMs;
    return { kind: "reported", accepted: true, jobDone };
  }

  /** The job's summary state. */
  static jobState(job: JobRecord): JobState {
    if (job.done + job.failed < job.chunks.length) return "running";
    return job.failed > 0 ? "failed" : "succeeded";
  }

  /** Chunks not yet finished, for (re-)dispatch to the balancer. */
  static unfinishedChunks(job: JobRecord): number[] {
    const out: number[] = [];
    job.chunks.forEach((c, i) => {
      if (c.state !== "succeeded" && c.state !== "failed") out.push(i);
    });
    return out;
  }
}
