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
 *
 * Every key has one write, so a history of it is linearizable iff the write can take effect
 * after the latest start of a read that saw nothing and before the earliest return of a read
 * that saw the value (within the write's own interval), and no read saw another value. So of
 * the reads of nothing only the one that started last matters, of those of one value only the
 * one that returned first: the others are left out, which keeps an hour's list reads (every
 * read names every job) tractable without changing the verdict.
 */
export function historyOperations(h: History, finals: FinalStatus): Operation[] {
  const byJob = new Map<string, SubmitRecord>();
  /**
   * Per key: its write (null: not known yet), the read of nothing that started last, and per
   * value read the read of it that returned first.
   */
  const keys = new Map<string, { put: Operation | null; reads: Operation[]; first: Operation[] }>();
  const entry = (key: string) => {
    let e = keys.get(key);
    if (!e) keys.set(key, e = { put: null, reads: [], first: [] });
    return e;
  };
  /** Reads are sorted out once the writes are known: kept here meanwhile (per key, compact). */
  const read = (client: string, key: string, value: string | null, call: number, ret: number) => {
    const e = entry(key);
    const op: Operation = { client, key, kind: "get", value, call, ret };
    if (value === null) {
      if (e.reads.length === 0) e.reads.push(op);
      else if (call > e.reads[0].call) e.reads[0] = op;
    } else {
      // Of reads of one value, only the earliest return is kept (module doc); a second value
      // is kept apart: the write is known only later.
      const same = e.first.find((o) => o.value === value);
      if (!same) e.first.push(op);
      else if (ret < same.ret) e.first[e.first.indexOf(same)] = op;
    }
  };
  for (const s of h.submits) {
    if (!s.job || s.ret === null) continue;
    byJob.set(s.job, s);
    const key = `sub/${s.client}/${s.seq}`;
    entry(key).put = { client: s.user, key, kind: "put", value: s.job, call: s.call, ret: s.ret };
    for (const r of s.resends) read(s.user, key, r.job, r.call, r.ret);
  }
  const byUser = new Map<string, SubmitRecord[]>();
  for (const s of byJob.values()) {
    let l = byUser.get(s.user);
    if (!l) byUser.set(s.user, l = []);
    l.push(s);
  }
  for (const l of h.listReads) {
    const listed = new Set(l.jobs);
    for (const s of byUser.get(l.user) ?? []) {
      const value = listed.has(s.job!) ? s.job : null;
      read(l.user, `sub/${s.client}/${s.seq}`, value, l.call, l.ret);
    }
  }
  for (const r of h.statusReads) {
    const s = byJob.get(r.job);
    if (!s) continue;
    read(r.user, `sub/${s.client}/${s.seq}`, r.found ? r.job : null, r.call, r.ret);
    if (!r.found) continue;
    r.chunks.forEach((value, i) => read(r.user, `chunk/${r.job}/${i}`, value, r.call, r.ret));
  }
  // The write of each chunk's result: the final one, or else the one the first read saw.
  for (const [job, s] of byJob) {
    const f = finals.get(job);
    for (let i = 0; i < s.chunks; i++) {
      const key = `chunk/${job}/${i}`;
      const e = keys.get(key);
      const c = f?.chunks[i];
      const seen = e?.first.toSorted((a, b) => a.ret - b.ret)[0]?.value ?? null;
      const value = (c && chunkValue(c)) ?? seen;
      if (value === null) continue;
      entry(key).put = { client: "workers", key, kind: "put", value, call: s.call, ret: Infinity };
    }
  }
  const ops: Operation[] = [];
  for (const e of keys.values()) {
    if (e.put) ops.push(e.put);
    ops.push(...e.reads, ...e.first);
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
  /** The earlier run's worker was killed or paused, or cut from a balancer, meanwhile. */
  | "worker-fault"
  /** A balancer did not hear back from a push of it in time (`unconfirmed`). */
  | "unconfirmed-push"
  /**
   * Another primary term placed it, and its balancer had been killed, paused or cut off since
   * shortly before the earlier run (so it may not have followed that placement), while the other
   * balancer, which might have, was disturbed too or was the one that placed it (two faults).
   */
  | "takeover-unsynced"
  /** A balancer declared the earlier run's worker dead (or idle with chunks placed long ago). */
  | "worker-declared-dead";

/**
 * Known bugs of dsys that the run-count check names instead of failing on, each with how it is
 * recognised. Remove an entry once its bug is fixed: its re-runs then fail the check again.
 */
export const KNOWN_BUGS = {
  "restarted-primary-renews":
    "a primary balancer killed and restarted within its lease (original flags: same node id, " +
    "same endpoint) has the lease renewed by the masters under the same epoch " +
    "(roles/master/lease.ts LeaseTimer.decide: 'The holder (also one that restarted and lost " +
    "its epoch ...) keeps the lease it has') and places with an empty scheduler while the " +
    "standby that holds the replicated state stays standby: chunks running on workers are " +
    "placed again under the same attempt and epoch (fencing cannot tell), and the standby then " +
    "pulls the empty snapshot. Recognised: the later run's primary term is a new process of " +
    "the balancer the harness killed, under the same epoch as the earlier run's term",
} as const;

/** A known bug's name. */
export type KnownBug = keyof typeof KNOWN_BUGS;

/** What the run-count check found. */
export interface RunReport {
  violations: Violation[];
  runs: number;
  chunks: number;
  reruns: Record<RerunReason, number>;
  /** Re-runs explained only by a known bug, per bug. */
  knownBugs: Partial<Record<KnownBug, number>>;
  /** Workers declared dead with no fault on them or on the balancer (worth a look). */
  unexplainedDeaths: string[];
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
      "takeover-unsynced": 0,
      "worker-declared-dead": 0,
    },
    knownBugs: {},
    unexplainedDeaths: [],
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
  const disturbed = (
    node: string,
    from: number,
    to: number,
    peer = (_: string) => true,
    kinds: Disturbance["kind"][] = ["kill", "pause", "cut"],
  ) =>
    disturbances.some((d) =>
      d.from <= to && d.to >= from && kinds.includes(d.kind) &&
      (d.kind === "cut"
        ? (d.node === node && peer(d.peer!)) || (d.peer === node && peer(d.node))
        : d.node === node)
    );
  // A worker's chunks move only when a balancer loses it: cuts from masters or storage do not
  // count (it keeps its slot, heartbeats and retries its report).
  const isBalancer = (name: string) => name.startsWith("balancer");
  const otherBalancer = (name: string) => name === "balancer" ? "balancer2" : "balancer";
  const workerName = (id?: string) => (id && facts.workerIds.get(id)) ?? "";
  // Primary terms: each "lease held" record starts one (a renewal after a restart too).
  const terms = facts.balancer.filter((e) => e.kind === "primary");
  const termOf = (r: Run): BalancerEvent | undefined =>
    terms.findLast((t) => t.epoch === r.epoch && t.at <= r.at);
  // Slack for the order of records of different processes on one clock, ms.
  const slack = 1_000;
  // A run starts when its push arrives, which may be up to the push timeout (5 s) after the
  // balancer placed it (a push held up by a cut is accepted once it heals): what happened to the
  // worker or the placement in that time before the run counts too.
  const pushed = 5_000 + slack;
  for (const [k, runs] of byChunk) {
    runs.sort((a, b) => a.at - b.at);
    for (let i = 1; i < runs.length; i++) {
      const prev = runs[i - 1], cur = runs[i];
      const inWindow = (e: BalancerEvent) => e.at >= prev.at - pushed && e.at <= cur.at + slack;
      const oldT = termOf(prev), newT = termOf(cur);
      let reason: RerunReason | null = null;
      let bug: KnownBug | null = null;
      if (disturbed(prev.worker, prev.at - pushed, cur.at, isBalancer)) reason = "worker-fault";
      else if (
        // A push of it went unconfirmed: the balancer gave up on it and placed a new attempt,
        // but the push may still arrive, any time later (a cut heals, TCP retransmits). So the
        // earlier run's may have been unconfirmed (the new attempt is the later run), or the
        // later run's (it is the late push, run after the new attempt).
        facts.balancer.some((e) =>
          e.kind === "unconfirmed" && `${e.job}/${e.chunk}` === k && e.at <= cur.at + slack &&
          (workerName(e.worker) === prev.worker || workerName(e.worker) === cur.worker)
        )
      ) reason = "unconfirmed-push";
      else if (oldT && newT && oldT !== newT) {
        const from = prev.at - 2_000;
        if (
          newT.epoch === oldT.epoch && newT.balancer === oldT.balancer &&
          disturbed(newT.balancer, oldT.at, newT.at, undefined, ["kill"])
        ) bug = "restarted-primary-renews";
        else if (
          disturbed(newT.balancer, from, newT.at) &&
          (newT.balancer !== oldT.balancer ||
            disturbed(otherBalancer(newT.balancer), from, newT.at))
        ) reason = "takeover-unsynced";
      }
      if (!reason && !bug) {
        const death = facts.balancer.find((e) =>
          (e.kind === "dead" || e.kind === "idle-requeue") &&
          workerName(e.worker) === prev.worker && inWindow(e)
        );
        if (death) reason = "worker-declared-dead";
      }
      if (bug) {
        report.knownBugs[bug] = (report.knownBugs[bug] ?? 0) + 1;
        continue;
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
  for (const e of facts.balancer) {
    if (e.kind !== "dead" && e.kind !== "idle-requeue") continue;
    const w = workerName(e.worker);
    const before = e.at - 15_000;
    if (disturbed(w, before, e.at, isBalancer) || disturbed(e.balancer, before, e.at)) continue;
    report.unexplainedDeaths.push(
      `${e.balancer} declared ${w || e.worker} ${e.kind} at ${new Date(e.at).toISOString()}`,
    );
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
