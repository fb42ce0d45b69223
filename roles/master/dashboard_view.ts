/**
 * What the dashboard shows, computed from a master's job table (pure: no I/O, no clock but the
 * `nowMs` given). Bounded: at most MAX_LISTED_JOBS jobs in the list, and one job's chunk grid as
 * a string of one state digit per chunk, so an update is at most a few MiB however big the
 * table is.
 */
import {
  ChunkState,
  FailureCode,
  type NodeEntry,
  NodeFlags,
  NodeRole,
  NodeState,
  uuidToHex,
} from "../../wire/mod.ts";
import { type JobRecord, JobTable } from "./job_table.ts";
import { parseDashboardDetail } from "./dashboard_leader.ts";

/** Jobs in the list, newest first. */
export const MAX_LISTED_JOBS = 200;
/** Nodes in the cluster view. */
export const MAX_LISTED_NODES = 1000;
/** Throughput samples kept (one per THROUGHPUT_PERIOD_MS: ten minutes). */
export const THROUGHPUT_SAMPLES = 600;
/** Time between throughput samples, ms. */
export const THROUGHPUT_PERIOD_MS = 1000;

/** One node of the cluster, as the masters' node list has it. */
export interface NodeSummary {
  role: string;
  name: string;
  endpoint: string;
  state: "alive" | "suspect" | "dead";
  /** The leading master, or the primary balancer. */
  lead: boolean;
  /** A worker's slots, and how many are free. */
  slots: number;
  freeSlots: number;
  detail: string;
}

const ROLE_NAMES: Record<number, string> = {
  [NodeRole.Master]: "master",
  [NodeRole.Balancer]: "balancer",
  [NodeRole.Storage]: "storage",
  [NodeRole.Worker]: "worker",
};
const STATE_NAMES: Record<number, NodeSummary["state"]> = {
  [NodeState.Alive]: "alive",
  [NodeState.Suspect]: "suspect",
  [NodeState.Dead]: "dead",
};

/** The node list's entries for the page, ordered by role (at most MAX_LISTED_NODES). */
export function nodeSummaries(entries: NodeEntry[]): NodeSummary[] {
  return entries
    .slice(0, MAX_LISTED_NODES)
    .map((n) => ({
      role: ROLE_NAMES[n.role] ?? `role ${n.role}`,
      name: n.name,
      endpoint: n.endpoint,
      state: STATE_NAMES[n.state] ?? "dead",
      lead: (n.flags & NodeFlags.Leader) !== 0,
      slots: n.slots,
      freeSlots: n.freeSlots,
      // A master's own dashboard URL (how followers find the leader's) is not news on the page.
      detail: n.role === NodeRole.Master && parseDashboardDetail(n.detail) !== null
        ? ""
        : n.detail.slice(0, 200),
    }))
    .sort((a, b) => a.role.localeCompare(b.role) || a.name.localeCompare(b.name));
}

/** Chunks of the table's jobs that reached a final state (succeeded, failed or cancelled). */
export function finishedChunks(table: JobTable): number {
  let n = 0;
  for (const j of table.jobs.values()) n += j.done + j.failed + j.cancelled;
  return n;
}

/**
 * Bytes of the outputs the table's finished chunks stored, kept up to date cheaply: a finished
 * job's total is computed once and remembered (its chunks are final), so each call walks only
 * the chunks of unfinished jobs.
 */
export class OutputBytes {
  #finished = new Map<string, number>();

  /** The outputs' bytes of every chunk of `table` with a result (succeeded or failed). */
  total(table: JobTable): number {
    let n = 0;
    for (const [hex, job] of table.jobs) {
      const known = this.#finished.get(hex);
      if (known !== undefined) {
        n += known;
        continue;
      }
      let bytes = 0;
      for (const c of job.chunks) for (const o of c.outputs) bytes += o.size;
      if (JobTable.isFinished(job)) this.#finished.set(hex, bytes);
      n += bytes;
    }
    // Jobs removed from the table are forgotten here too (bounded by the table).
    if (this.#finished.size > table.jobs.size) {
      for (const hex of this.#finished.keys()) if (!table.jobs.has(hex)) this.#finished.delete(hex);
    }
    return n;
  }
}

/**
 * A count's rise per sampling period, for the last THROUGHPUT_SAMPLES periods ({@link
 * finishedChunks}: chunks per second; {@link OutputBytes}: bytes per second). Never negative: jobs
 * removed from the table take their chunks and bytes with them, which is no throughput.
 */
export class ThroughputRing {
  #last: number | null = null;
  #values: number[] = [];

  /** Records the count now. */
  sample(finished: number): void {
    if (this.#last !== null) {
      this.#values.push(Math.max(0, finished - this.#last));
      if (this.#values.length > THROUGHPUT_SAMPLES) this.#values.shift();
    }
    this.#last = finished;
  }

  /** The samples, oldest first. */
  get values(): readonly number[] {
    return this.#values;
  }
}

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

/** One chunk in detail (`?job=ID&chunk=N`). */
export interface ChunkDetail {
  index: number;
  /** A ChunkState code. */
  state: number;
  attempt: number;
  exitCode: number;
  signal: number;
  /** The FailureCode's name ("" for none). */
  failure: string;
  durationMs: number;
  /** The worker's node id (hex), "" before one ran it. */
  worker: string;
  reason: string;
  /** The last bytes of its stderr, as text (at most STDERR_TAIL_CHARS). */
  stderrTail: string;
  outputs: { name: string; size: number; id: string }[];
  /** Earlier attempts that failed and were retried (the first MAX_HISTORY). */
  history: { attempt: number; failure: string; exitCode: number; reason: string }[];
}

/** Characters of a chunk's stderr tail shown. */
export const STDERR_TAIL_CHARS = 4096;
/** Earlier attempts of a chunk shown. */
export const MAX_HISTORY = 20;
/** Outputs of a chunk shown. */
export const MAX_OUTPUTS = 100;

const FAILURE_NAMES = new Map<number, string>(
  Object.entries(FailureCode).map(([k, v]) => [v as number, k]),
);
const failureName = (code: number) => code === 0 ? "" : FAILURE_NAMES.get(code) ?? `code ${code}`;

/** An update the page renders whole. */
export interface DashboardView {
  /** This master's Raft id or endpoint, and whether it leads (a follower's table may lag). */
  master: string;
  leader: boolean;
  /** This master's Raft term (0: a lone master). */
  term: number;
  jobs: JobSummary[];
  /** The job asked for (`?job=ID`), null when none or not found. */
  job: JobDetail | null;
  /** The chunk of that job asked for (`&chunk=N`), null when none or no such chunk. */
  chunk: ChunkDetail | null;
  /** The cluster's nodes (refreshed every few seconds while a page is open). */
  nodes: NodeSummary[];
  /** Chunks finished per second, oldest first (ThroughputRing). */
  chunksPerSecond: readonly number[];
  /** Bytes of outputs stored per second, oldest first (ThroughputRing of OutputBytes). */
  bytesPerSecond: readonly number[];
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

/** A chunk's state on the page: a queued one the leader knows runs is shown running. */
function shownState(state: number, runs: boolean): number {
  return state === ChunkState.Queued && runs ? ChunkState.Running : state;
}

/**
 * The view of `table` for a page showing job `jobHex` (or none) and its chunk `chunkIndex`;
 * `running`: the job's chunks the leader knows run (from their workers' running reports, kept
 * outside the table), by index, with the worker's node id.
 */
export function dashboardView(
  table: JobTable,
  master: string,
  leader: boolean,
  jobHex: string | null,
  nowMs: number,
  cluster: {
    nodes: NodeSummary[];
    chunksPerSecond: readonly number[];
    bytesPerSecond: readonly number[];
    term?: number;
  } = { nodes: [], chunksPerSecond: [], bytesPerSecond: [] },
  chunkIndex: number | null = null,
  running: ReadonlyMap<number, Uint8Array> = new Map(),
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
      grid: rec.chunks.map((c) => String(shownState(c.state, running.has(c.chunkIndex)))).join(""),
      attempts: rec.chunks.map((c) => String(Math.min(9, c.attempt))).join(""),
      failures: rec.chunks
        .filter((c) => c.state === ChunkState.Failed)
        .slice(0, 100)
        .map((c) => ({ chunk: c.chunkIndex, reason: c.reason.slice(0, 500) })),
    };
  }
  const c = rec && chunkIndex !== null ? rec.chunks[chunkIndex] : undefined;
  const runsOn = c && c.state === ChunkState.Queued ? running.get(c.chunkIndex) : undefined;
  const chunk: ChunkDetail | null = c
    ? {
      index: c.chunkIndex,
      state: shownState(c.state, runsOn !== undefined),
      attempt: c.attempt,
      exitCode: c.exitCode,
      signal: c.signal,
      failure: failureName(c.failure),
      durationMs: c.durationMs,
      worker: runsOn ? uuidToHex(runsOn) : c.worker.some((b) => b !== 0) ? uuidToHex(c.worker) : "",
      reason: c.reason.slice(0, 1000),
      stderrTail: new TextDecoder().decode(c.stderrTail).slice(-STDERR_TAIL_CHARS),
      outputs: c.outputs.slice(0, MAX_OUTPUTS).map((o) => ({
        name: o.name,
        size: o.size,
        id: uuidToHex(o.id),
      })),
      history: c.history.slice(0, MAX_HISTORY).map((h) => ({
        attempt: h.attempt,
        failure: failureName(h.failure),
        exitCode: h.exitCode,
        reason: h.reason.slice(0, 500),
      })),
    }
    : null;
  return { master, leader, jobs, job, chunk, ...cluster, term: cluster.term ?? 0 };
}
