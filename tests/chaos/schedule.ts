/**
 * The fault schedule of a chaos run: a pure function of the seed, the run's length and the
 * cluster's node names, so a failing run's schedule can be printed and replayed exactly. What a
 * schedule cannot fix in advance is which node leads at the time (a fault aimed at "the leader
 * master" or "the primary balancer" is resolved when it fires) and how the real processes
 * interleave with it: a replay repeats the faults, not the run.
 * @module
 */
import { mulberry32 } from "../../roles/master/raft/mod.ts";

/** A node of the cluster under test, as the planner sees it. */
export interface NodeSpec {
  name: string;
  role: "master" | "balancer" | "storage" | "worker";
}

/** Whom a fault hits: a named node, or whoever leads when it fires. */
export type FaultTarget =
  | { kind: "node"; name: string }
  | { kind: "leader" }
  | { kind: "primary-balancer" };

/** How the network is cut (between nodes; clients reach every node throughout). */
export type PartitionShape =
  /** Two groups that cannot reach each other either way. */
  | "symmetric"
  /** Packets from `a` to `b` are dropped; `b` to `a` still arrive. */
  | "one-way"
  /** The leader master (resolved when it fires) cut from every other node, both ways. */
  | "leader-isolated";

/** One planned fault. Times are ms from the start of the fault phase. */
export type PlannedFault =
  & { n: number; atMs: number; durationMs: number }
  & (
    /** kill -9, then a restart with the original flags `durationMs` later. */
    | { kind: "kill"; target: FaultTarget }
    /** SIGSTOP, then SIGCONT `durationMs` later. */
    | { kind: "pause"; target: FaultTarget }
    /** A cut healed `durationMs` later; `a`/`b` are empty for leader-isolated. */
    | { kind: "partition"; shape: PartitionShape; a: string[]; b: string[] }
  );

/** Knobs of the planner (defaults: the long run's). */
export interface PlanOptions {
  /** Gap between the starts of two faults, ms: uniform in [min, max]. */
  gapMs?: [number, number];
  /** A killed node stays down this long, ms. */
  downMs?: [number, number];
  /** A long pause (longer than the election and dead-worker timeouts), ms. */
  longPauseMs?: [number, number];
  /** A short pause (a GC stall, a slow disk), ms. */
  shortPauseMs?: [number, number];
  /** A partition lasts this long, ms. */
  partitionMs?: [number, number];
  /** At most this many nodes are killed or paused at once. */
  maxProcessFaults?: number;
}

const DEFAULTS: Required<PlanOptions> = {
  gapMs: [2_000, 9_000],
  downMs: [200, 5_000],
  // The election timeout is 300-600 ms, the balancer's dead-worker timeout 5 s and its lease
  // 3 s: a long pause outlasts all three, so the node is replaced while it sleeps.
  longPauseMs: [6_000, 11_000],
  shortPauseMs: [300, 2_500],
  partitionMs: [3_000, 12_000],
  maxProcessFaults: 2,
};

/**
 * Plans faults for `runMs` from `seed`. Kinds come from a shuffled bag (two kills, a
 * pause, a partition) and partition shapes from a bag of the three, so every 4 faults hold each
 * kind and every 12 each shape; a third of kills and pauses aim at the leader master or the
 * primary balancer. No node gets a second kill or pause while one is planned on it, at most
 * `maxProcessFaults` are planned at once, and partitions do not overlap.
 */
export function planFaults(
  seed: number,
  runMs: number,
  nodes: NodeSpec[],
  opts: PlanOptions = {},
): PlannedFault[] {
  const o = { ...DEFAULTS, ...opts };
  const rnd = mulberry32(seed ^ 0xc4a05);
  const uniform = ([lo, hi]: [number, number]) => Math.round(lo + rnd() * (hi - lo));
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  const shuffled = <T>(xs: T[]): T[] => {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  };
  const bag = <T>(items: T[]) => {
    let cur: T[] = [];
    return () => {
      if (cur.length === 0) cur = shuffled(items);
      return cur.pop()!;
    };
  };
  const nextKind = bag<"kill" | "pause" | "partition">(["kill", "kill", "pause", "partition"]);
  const nextShape = bag<PartitionShape>(["symmetric", "one-way", "leader-isolated"]);
  const names = nodes.map((n) => n.name);
  /** Per node, until when a planned kill or pause keeps it busy. */
  const busyUntil = new Map<string, number>();
  /** Until when aimed-at-the-leader faults are planned (their node is unknown: count apart). */
  const leaderBusy: number[] = [];
  let partitionUntil = 0;
  const out: PlannedFault[] = [];
  let t = uniform(o.gapMs);
  while (t < runMs) {
    const kind = nextKind();
    const n = out.length + 1;
    if (kind === "partition") {
      // Wait out the previous partition: one cut at a time keeps "healed" meaningful.
      t = Math.max(t, partitionUntil + 500);
      if (t >= runMs) break;
      const shape = nextShape();
      const durationMs = uniform(o.partitionMs);
      let a: string[] = [], b: string[] = [];
      if (shape !== "leader-isolated") {
        // A random side of 1 .. half the nodes against the rest (or a subset of it, one-way).
        const order = shuffled(names);
        const k = 1 + Math.floor(rnd() * Math.floor(order.length / 2));
        a = order.slice(0, k).sort();
        b = order.slice(k).sort();
        if (shape === "one-way" && rnd() < 0.5) [a, b] = [b, a];
      }
      out.push({ n, atMs: t, durationMs, kind, shape, a, b });
      partitionUntil = t + durationMs;
    } else {
      const durationMs = kind === "kill"
        ? uniform(o.downMs)
        : rnd() < 0.75
        ? uniform(o.longPauseMs)
        : uniform(o.shortPauseMs);
      const active = [...busyUntil.values(), ...leaderBusy].filter((u) => u > t).length;
      if (active < o.maxProcessFaults) {
        const r = rnd();
        let target: FaultTarget | null = null;
        if (r < 1 / 6) target = { kind: "leader" };
        else if (r < 1 / 3) target = { kind: "primary-balancer" };
        else {
          const free = names.filter((x) => (busyUntil.get(x) ?? 0) <= t);
          if (free.length > 0) target = { kind: "node", name: pick(free) };
        }
        if (target) {
          // A restart or resume takes a while on a loaded machine: keep a margin after it.
          const until = t + durationMs + 2_000;
          if (target.kind === "node") busyUntil.set(target.name, until);
          else leaderBusy.push(until);
          out.push({ n, atMs: t, durationMs, kind, target });
        }
      }
    }
    t += uniform(o.gapMs);
  }
  return out;
}

/** One line per fault, as printed with a failure (and readable by a person replaying it). */
export function formatPlan(plan: PlannedFault[]): string {
  return plan.map(describeFault).join("\n");
}

/** A fault as one line: `#3 +12.4s pause m2 for 7.1s`. */
export function describeFault(f: PlannedFault): string {
  const at = `#${f.n} +${(f.atMs / 1000).toFixed(1)}s`;
  const dur = `${(f.durationMs / 1000).toFixed(1)}s`;
  if (f.kind === "partition") {
    const what = f.shape === "leader-isolated"
      ? "leader master | everyone else"
      : f.shape === "one-way"
      ? `${f.a.join(",")} -> ${f.b.join(",")} dropped`
      : `${f.a.join(",")} | ${f.b.join(",")}`;
    return `${at} partition ${f.shape} (${what}) for ${dur}`;
  }
  const who = f.target.kind === "node"
    ? f.target.name
    : f.target.kind === "leader"
    ? "<leader master>"
    : "<primary balancer>";
  return `${at} ${f.kind === "kill" ? "kill -9" : "pause"} ${who} for ${dur}`;
}
