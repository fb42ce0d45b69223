/**
 * A master's metrics (`--metrics-listen`): its job table by state, read at scrape time, and its
 * Raft member's term, commit index, leader changes and commit and fsync latencies. The names
 * are listed in docs/operations.md, "What to watch".
 */
import {
  Counter,
  Gauge,
  Histogram,
  LATENCY_BUCKETS_SECONDS,
  type Registry,
} from "../../lib/metrics.ts";
import { ChunkState } from "../../wire/mod.ts";
import { type ApplyResult, JobTable } from "./job_table.ts";
import type { ReplicatedLog } from "./replicated_log.ts";
import type { RaftGroup } from "./raft_group.ts";

/** Chunk states by label value (the wire's ChunkState codes). */
const CHUNK_STATES = {
  queued: ChunkState.Queued,
  running: ChunkState.Running,
  lost: ChunkState.Lost,
  succeeded: ChunkState.Succeeded,
  failed: ChunkState.Failed,
  cancelled: ChunkState.Cancelled,
} as const;
const JOB_STATES = ["running", "succeeded", "failed", "cancelled"] as const;
const JOB_STATE_NAMES: Record<number, typeof JOB_STATES[number]> = {
  [ChunkState.Running]: "running",
  [ChunkState.Succeeded]: "succeeded",
  [ChunkState.Failed]: "failed",
  [ChunkState.Cancelled]: "cancelled",
};

/** What the Raft shell reports as it runs (RaftGroupOptions.metrics). */
export interface RaftMetrics {
  /** Seconds each durable write of a Ready (entries, hard state, snapshot; fsync'd) took. */
  fsyncSeconds: Histogram;
  /** Times this member saw the group's leader change to a new one. */
  leaderChanges: Counter;
}

/** The master's series; `raft` is handed to the Raft group, the rest read at scrape time. */
export class MasterMetrics {
  readonly raft: RaftMetrics;
  readonly commitSeconds: Histogram;
  readonly #jobs: Gauge;
  readonly #chunks: Gauge;
  readonly #term: Gauge;
  readonly #commitIndex: Gauge;
  readonly #appliedIndex: Gauge;
  readonly #isLeader: Gauge;

  constructor(registry: Registry) {
    this.#jobs = registry.gauge("dsys_master_jobs", "Jobs in the masters' table, by state.", {
      state: JOB_STATES,
    });
    this.#chunks = registry.gauge(
      "dsys_master_chunks",
      "Chunks of the jobs in the masters' table, by state.",
      { state: Object.keys(CHUNK_STATES) },
    );
    this.#term = registry.gauge("dsys_raft_term", "This member's current Raft term.");
    this.#commitIndex = registry.gauge(
      "dsys_raft_commit_index",
      "Highest log index this member knows to be committed.",
    );
    this.#appliedIndex = registry.gauge(
      "dsys_raft_applied_index",
      "Highest log index this member applied to its job table.",
    );
    this.#isLeader = registry.gauge("dsys_raft_leader", "1 while this master leads, else 0.");
    this.raft = {
      fsyncSeconds: registry.histogram(
        "dsys_raft_fsync_seconds",
        "Time to write and fsync one batch of Raft entries and hard state.",
        LATENCY_BUCKETS_SECONDS,
      ),
      leaderChanges: registry.counter(
        "dsys_raft_leader_changes_total",
        "Times this member saw a new Raft leader.",
      ),
    };
    this.commitSeconds = registry.histogram(
      "dsys_raft_commit_latency_seconds",
      "Time from proposing a command on the leader until it was committed and applied.",
      LATENCY_BUCKETS_SECONDS,
    );
  }

  /** Reads the table and the Raft member at every scrape (`table()`: the current table). */
  watch(registry: Registry, table: () => JobTable, log: ReplicatedLog, raft?: RaftGroup): void {
    registry.onCollect(() => {
      const jobs = { running: 0, succeeded: 0, failed: 0, cancelled: 0 };
      const chunks: Record<string, number> = {};
      for (const s of Object.keys(CHUNK_STATES)) chunks[s] = 0;
      for (const job of table().jobs.values()) {
        const state = JobTable.jobState(job);
        jobs[JOB_STATE_NAMES[state] ?? "running"]++;
        chunks.succeeded += job.done;
        chunks.failed += job.failed;
        chunks.cancelled += job.cancelled;
        if (JobTable.isFinished(job)) continue; // its chunks are all counted above
        for (const c of job.chunks) {
          if (c.state === ChunkState.Queued) chunks.queued++;
          else if (c.state === ChunkState.Running) chunks.running++;
          else if (c.state === ChunkState.Lost) chunks.lost++;
        }
      }
      for (const s of JOB_STATES) this.#jobs.set(jobs[s], { state: s });
      for (const [s, n] of Object.entries(chunks)) this.#chunks.set(n, { state: s });
      this.#isLeader.set(log.isLeader() ? 1 : 0);
      if (raft) {
        const st = raft.node.status();
        this.#term.set(st.term);
        this.#commitIndex.set(st.commit);
        this.#appliedIndex.set(raft.applied);
      }
    });
  }

  /** `inner`, with each committed proposal's latency observed. */
  timed(inner: ReplicatedLog): ReplicatedLog {
    return {
      propose: async (data: Uint8Array): Promise<ApplyResult> => {
        const t0 = performance.now();
        const r = await inner.propose(data);
        this.commitSeconds.observe((performance.now() - t0) / 1000);
        return r;
      },
      isLeader: () => inner.isLeader(),
      leaderEndpoint: () => inner.leaderEndpoint(),
      readBarrier: () => inner.readBarrier(),
      close: () => inner.close(),
    };
  }
}
