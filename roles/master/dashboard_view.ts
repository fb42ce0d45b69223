/**
 * What the dashboard shows, computed from a master's job table (pure: no I/O, no clock but the
 * `nowMs` given). Bounded: at most MAX_LISTED_JOBS jobs in the list, and one job's chunk grid as
 * a string of one state digit per chunk, so an update is at most a few MiB however big the
 * table is.
 */
import { ChunkState, uuidToHex } from "../../wire/mod.ts";
import { type JobRecord, JobTable } from "./job_table.ts";

/** Jobs in the list, newest first. */
export const MAX_LISTED_JOBS = 200;

/** One job in the list. */
export interface JobSummary {
  id: string;
  owner: string;
  program: string;
  /** A ChunkState code: 1 running, 2 succeeded, 3 failed, 5 cancelled. */
  state: number;
  chunks: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  ageMs: number;
}

/** One job in detail: the chunk grid and the chunks that failed. */
export interface JobDetail extends JobSummary {
  /** Chunk i's ChunkState code as the i-th character ("0" queued … "5" cancelled). */
  grid: string;
  /** Attempts per chunk so far, as for `grid` (capped at 9). */
  attempts: string;
  /** Failed chunks' index and reason (the first 100). */
  failures: { chunk: number; reason: string }[];
}

/** An update the page renders whole. */
export interface DashboardView {
  /** This master's Raft id or endpoint, and whether it leads (a follower's table may lag). */
  master: string;
  leader: boolean;
  jobs: JobSummary[];
  /** The job asked for (`?job=ID`), null when none or not found. */
  job: JobDetail | null;
}

function summary(job: JobRecord, nowMs: number): JobSummary {
  return {
    id: uuidToHex(job.spec.jobId),
    owner: job.spec.owner,
    program: job.spec.programName,
    state: JobTable.jobState(job),
    chunks: job.chunks.length,
    succeeded: job.done,
    failed: job.failed,
    cancelled: job.cancelled,
    ageMs: Math.max(0, nowMs - job.spec.submittedAtMs),
  };
}

/** The view of `table` for a page showing job `jobHex` (or none). */
export function dashboardView(
  table: JobTable,
  master: string,
  leader: boolean,
  jobHex: string | null,
  nowMs: number,
): DashboardView {
  const all = [...table.jobs.values()];
  const jobs = all
    .slice(-MAX_LISTED_JOBS)
    .reverse()
    .map((j) => summary(j, nowMs));
  let job: JobDetail | null = null;
  const rec = jobHex === null ? undefined : table.jobs.get(jobHex);
  if (rec) {
    job = {
      ...summary(rec, nowMs),
      grid: rec.chunks.map((c) => String(c.state)).join(""),
      attempts: rec.chunks.map((c) => String(Math.min(9, c.attempt))).join(""),
      failures: rec.chunks
        .filter((c) => c.state === ChunkState.Failed)
        .slice(0, 100)
        .map((c) => ({ chunk: c.chunkIndex, reason: c.reason.slice(0, 500) })),
    };
  }
  return { master, leader, jobs, job };
}
