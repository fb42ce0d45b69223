/**
 * The invariants a chaos run is checked against once the faults have healed and every job has
 * had time to finish. Each check returns violations as values; an empty list is a pass.
 * @module
 */
import { checkHistory, type Operation } from "../sim/linearizability.ts";
import { ChunkState, type JobStatusResponse, uuidToHex } from "../../wire/mod.ts";
import { chunkValue, expectedStdout, type History, type SubmitRecord } from "./workload.ts";
import type { BalancerEvent, LogFacts, Run } from "./logs.ts";

/** The invariants, by name. */
export type Invariant =
  /** Every acknowledged job finishes, every chunk succeeded. */
  | "job-completes"
  /** Every chunk's recorded output is what the program computes from its input. */
  | "result-correct"
  /** One job per submission: retries and resends name it, no other job appears. */
  | "job-once"
  /** No chunk ran again without a fault or balancer decision that allows it. */
  | "runs-bounded"
  /** Submissions, status and list reads are linearizable (tests/sim's checker). */
  | "linearizable"
  /** Only the nodes the harness killed exited before the end; all stopped cleanly. */
  | "no-crash"
  /** No FUSE mount, chunk program or node process is left once the cluster stopped. */
  | "nothing-left"
  /** The harness itself could not do what the schedule said (a restart failed). */
  | "harness";

/** One broken invariant. */
export interface Violation {
  invariant: Invariant;
  detail: string;
  fields?: Record<string, unknown>;
}

/** A time a node was killed, paused or cut off by the harness (ms since the epoch). */
export interface Disturbance {
  node: string;
  kind: "kill" | "pause" | "cut";
  from: number;
  to: number;
  /** cut: the other end. */
  peer?: string;
}

/** The final status of each acknowledged job (by job id hex), null when none was read. */
export type FinalStatus = Map<string, JobStatusResponse | null>;

/**
 * Jobs and results: every acknowledged job finished with every chunk succeeded; each stdout is
 * exactly what the program prints for that job, chunk and input (`outputs`: file id hex to
 * bytes, or the error reading it).
 */
export function checkJobs(
  h: History,
  finals: FinalStatus,
  outputs: Map<string, Uint8Array | string>,
): Violation[] {
  const v: Violation[] = [];
  const dec = new TextDecoder();
  for (const s of h.submits) {
    if (!s.job) continue;
    const f = finals.get(s.job) ?? null;
    if (!f) {
      v.push({ invariant: "job-completes", detail: `job ${s.job} (${s.tag}): no final status` });
      continue;
    }
    if (f.state !== ChunkState.Succeeded) {
      v.push({
        invariant: "job-completes",
        detail: `job ${s.job} (${s.tag}) ended in state ${f.state}: ${f.done} done, ` +
          `${f.failed} failed, ${f.running} running, ${f.queued} queued of ${f.numChunks}`,
        fields: {
          failed: f.chunks.filter((c) => c.state === ChunkState.Failed).map((c) => ({
            chunk: c.chunkIndex,
            attempt: c.attempt,
            reason: c.reason,
            stderr: dec.decode(c.stderrTail),
          })),
        },
      });
    }
    if (f.numChunks !== s.chunks) {
      v.push({
        invariant: "result-correct",
        detail: `job ${s.job} has ${f.numChunks} chunks, submitted with ${s.chunks}`,
      });
      continue;
    }
    for (const c of f.chunks) {
      if (c.state !== ChunkState.Succeeded) continue;
      const out = c.outputs.find((o) => o.name === "stdout");
      const want = expectedStdout(s, c.chunkIndex);
      if (!out) {
        v.push({
          invariant: "result-correct",
          detail: `job ${s.job} chunk ${c.chunkIndex}: no stdout output`,
        });
        continue;
      }
      const got = outputs.get(uuidToHex(out.id));
      const text = got instanceof Uint8Array ? dec.decode(got) : `<unreadable: ${got}>`;
      if (text !== want) {
        v.push({
          invariant: "result-correct",
          detail: `job ${s.job} chunk ${c.chunkIndex} attempt ${c.attempt}: stdout ` +
            `${JSON.stringify(text)}, expected ${JSON.stringify(want)}`,
        });
      }
    }
  }
  return v;
}

/**
 * One job per submission: distinct submissions were acknowledged with distinct jobs, resends
 * of a submission named its job, and a user's job list holds only jobs of acknowledged
 * submissions (beyond those, at most as many unknown jobs as submissions never acknowledged).
 */
export function checkJobOnce(h: History): Violation[] {
  const v: Violation[] = [];
  const byJob = new Map<string, SubmitRecord>();
  for (const s of h.submits) {
    if (!s.job) continue;
    const other = byJob.get(s.job);
    if (other) {
      v.push({
        invariant: "job-once",
        detail: `submissions ${other.tag} and ${s.tag} were both acknowledged as job ${s.job}`,
      });
    }
    byJob.set(s.job, s);
    for (const r of s.resends) {
      if (r.job !== s.job) {
        v.push({
          invariant: "job-once",
          detail: `submission ${s.tag} (client ${s.client}, seq ${s.seq}) was acknowledged as ` +
            `job ${s.job}, and sent again as job ${r.job}`,
        });
      }
    }
  }
  for (const l of h.listReads) {
    const unacked = h.submits.filter((s) => s.user === l.user && !s.job).length;
    const unknown = l.jobs.filter((j) => byJob.get(j)?.user !== l.user);
    if (unknown.length > unacked) {
      v.push({
        invariant: "job-once",
        detail: `${l.user}'s job list holds ${unknown.length} jobs no acknowledged submission ` +
          `named (${unknown.slice(0, 5).join(", ")}), with ${unacked} never acknowledged`,
      });
    }
  }
  return v;
}

/**
 * The history as register operations for tests/sim's linearizability checker:
 * - `sub/<client>/<seq>`: the submission writes its job id (from its first send to its first
 *   acknowledgement); resends, status reads of the job (NOT_FOUND reads nothing) and the user's
 *   list reads (listed or not) read it.
 * - `chunk/<job>/<i>`: the chunk's final result is written by some worker at an unknown time
 *   after the submission (the checker's "never returned" write: it may take effect at any time
 *   after its call); every status read reads it (unfinished reads nothing). A read that saw a
 *   result, followed by one that saw none or another, is not linearizable.
 */
export function historyOperations(h: History, finals: FinalStatus): Operation[] {
  const ops: Operation[] = [];
  const byJob = new Map<string, SubmitRecord>();
  for (const s of h.submits) {
    if (!s.job || s.ret === null) continue;
    byJob.set(s.job, s);
    const key = `sub/${s.client}/${s.seq}`;
    ops.push({ client: s.user, key, kind: "put", value: s.job, call: s.call, ret: s.ret });
    for (const r of s.resends) {
      ops.push({ client: s.user, key, kind: "get", value: r.job, call: r.call, ret: r.ret });
    }
  }
  for (const l of h.listReads) {
    const listed = new Set(l.jobs);
    for (const s of byJob.values()) {
      if (s.user !== l.user) continue;
      ops.push({
        client: l.user,
        key: `sub/${s.client}/${s.seq}`,
        kind: "get",
        value: listed.has(s.job!) ? s.job : null,
        call: l.call,
        ret: l.ret,
      });
    }
  }
  const written = new Map<string, string>();
  for (const r of h.statusReads) {
    const s = byJob.get(r.job);
    if (!s) continue;
    ops.push({
      client: r.user,
      key: `sub/${s.client}/${s.seq}`,
      kind: "get",
      value: r.found ? r.job : null,
      call: r.call,
      ret: r.ret,
    });
    if (!r.found) continue;
    r.chunks.forEach((value, i) => {
      const key = `chunk/${r.job}/${i}`;
      if (value !== null && !written.has(key)) written.set(key, value);
      ops.push({ client: r.user, key, kind: "get", value, call: r.call, ret: r.ret });
    });
  }
  // The write of each chunk's result: the final one, or else the first one any read saw.
  for (const [job, s] of byJob) {
    const f = finals.get(job);
    for (let i = 0; i < s.chunks; i++) {
      const key = `chunk/${job}/${i}`;
      const c = f?.chunks[i];
      const value = (c && chunkValue(c)) ?? written.get(key) ?? null;
      if (value === null) continue;
      ops.push({ client: "workers", key, kind: "put", value, call: s.call, ret: Infinity });
    }
  }
  return ops;
}

/** Linearizability of the client-visible history (see `historyOperations`). */
export function checkLinearizable(h: History, finals: FinalStatus): Violation[] {
  const ops = historyOperations(h, finals);
  const r = checkHistory(ops);
  if (r.ok) {
    return r.timedOut
      ? [{
        invariant: "linearizable",
        detail: "the linearizability search gave up (too many states): inconclusive",
      }]
      : [];
  }
  const t0 = Math.min(...ops.map((o) => o.call));
  const lines = ops.filter((o) => o.key === r.key).sort((a, b) => a.call - b.call).map((o) =>
    `  ${o.client} ${o.kind} ${JSON.stringify(o.value)} [${((o.call - t0) / 1000).toFixed(3)}s, ${
      o.ret === Infinity ? "never" : ((o.ret - t0) / 1000).toFixed(3) + "s"
    }]`
  );
  return [{
    invariant: "linearizable",
    detail: `history of ${r.key} is not linearizable:\n${lines.join("\n")}`,
  }];
}

/** Why a chunk ran again, as counted in the summary. */
export type RerunReason =
  /** The earlier run's worker was killed, paused or cut off meanwhile. */
  | "worker-fault"
  /** A balancer did not hear back from a push of it in time (`unconfirmed`). */
  | "unconfirmed-push"
  /** A balancer declared the earlier run's worker dead (or idle) with no fault on it. */
  | "worker-declared-dead"
  /**
   * A later epoch's primary placed it, and that balancer had been killed, paused or cut off
   * since shortly before the earlier run: it may not have followed the placement.
   */
  | "takeover-unsynced";

/** What the run-count check found. */
export interface RunReport {
  violations: Violation[];
  runs: number;
  chunks: number;
  reruns: Record<RerunReason, number>;
}

/**
 * No chunk ran more often than its attempts allow: every run after a chunk's first (in the
 * workers' `chunk accepted` records) needs a reason (see RerunReason) between the earlier run
 * and it. Also each chunk's recorded attempt is one a worker accepted.
 */
export function checkRuns(
  facts: LogFacts,
  disturbances: Disturbance[],
  h: History,
  finals: FinalStatus,
): RunReport {
  const report: RunReport = {
    violations: [],
    runs: 0,
    chunks: 0,
    reruns: {
      "worker-fault": 0,
      "unconfirmed-push": 0,
      "worker-declared-dead": 0,
      "takeover-unsynced": 0,
    },
  };
  const ours = new Set(h.submits.map((s) => s.job).filter((j) => j !== null));
  const byChunk = new Map<string, Run[]>();
  for (const r of facts.runs) {
    if (!ours.has(r.job)) continue;
    const k = `${r.job}/${r.chunk}`;
    let l = byChunk.get(k);
    if (!l) byChunk.set(k, l = []);
    l.push(r);
    report.runs++;
  }
  report.chunks = byChunk.size;
  /** A kill or pause of `node`, or a cut between it and a node `peer` accepts, in [from, to]. */
  const disturbed = (node: string, from: number, to: number, peer = (_: string) => true) =>
    disturbances.some((d) =>
      d.from <= to && d.to >= from &&
      (d.kind === "cut"
        ? (d.node === node && peer(d.peer!)) || (d.peer === node && peer(d.node))
        : d.node === node)
    );
  // A worker's chunks move only when a balancer loses it: cuts from masters or storage do not
  // count (it keeps its slot, heartbeats and retries its report).
  const balancer = (name: string) => name.startsWith("balancer");
  const workerName = (id?: string) => (id && facts.workerIds.get(id)) ?? "";
  // Which balancer held which epoch (a renewed lease after a restart logs the same epoch).
  const primaries = facts.balancer.filter((e) => e.kind === "primary");
  // Slack for the order of records of different processes on one clock, ms.
  const slack = 1_000;
  for (const [k, runs] of byChunk) {
    runs.sort((a, b) => a.at - b.at);
    for (let i = 1; i < runs.length; i++) {
      const prev = runs[i - 1], cur = runs[i];
      const inWindow = (e: BalancerEvent) => e.at >= prev.at - slack && e.at <= cur.at + slack;
      let reason: RerunReason | null = null;
      if (disturbed(prev.worker, prev.at, cur.at, balancer)) reason = "worker-fault";
      else if (
        facts.balancer.some((e) =>
          e.kind === "unconfirmed" && `${e.job}/${e.chunk}` === k && inWindow(e)
        )
      ) reason = "unconfirmed-push";
      else if (
        facts.balancer.some((e) =>
          (e.kind === "dead" || e.kind === "idle-requeue") &&
          workerName(e.worker) === prev.worker && inWindow(e)
        )
      ) reason = "worker-declared-dead";
      else if (cur.epoch > prev.epoch) {
        const took = primaries.find((e) => e.epoch === cur.epoch);
        if (took && disturbed(took.balancer, prev.at - 2_000, took.at)) {
          reason = "takeover-unsynced";
        }
      }
      if (reason) {
        report.reruns[reason]++;
        continue;
      }
      report.violations.push({
        invariant: "runs-bounded",
        detail: `chunk ${k} ran again with nothing that allows it: ${fmtRun(prev)}, then ${
          fmtRun(cur)
        }`,
        fields: { runs: runs.map(fmtRun) },
      });
    }
  }
  for (const [job, f] of finals) {
    if (!f) continue;
    for (const c of f.chunks) {
      if (c.state !== ChunkState.Succeeded && c.state !== ChunkState.Failed) continue;
      const runs = byChunk.get(`${job}/${c.chunkIndex}`) ?? [];
      if (!runs.some((r) => r.attempt === c.attempt)) {
        report.violations.push({
          invariant: "runs-bounded",
          detail: `chunk ${job}/${c.chunkIndex}: the result of attempt ${c.attempt} is recorded, ` +
            `but no worker accepted that attempt (accepted: ${
              runs.map((r) => r.attempt).join(",") || "none"
            })`,
        });
      }
    }
  }
  return report;
}

function fmtRun(r: Run): string {
  return `${r.worker} attempt ${r.attempt} epoch ${r.epoch} at ${new Date(r.at).toISOString()}`;
}
