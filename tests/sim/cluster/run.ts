/**
 * One seed of the cluster simulation: 3 or 5 real masters (RaftGroup + FileStorage + JobTable +
 * MasterService), the balancer/worker stand-in and a few clients on the SimNet, a fault schedule
 * planned from the seed, the safety invariants after every step, and at the end the liveness
 * and history checks:
 *
 * - every acknowledged submission completes, every chunk with its one correct result;
 * - the client history (submissions, status reads) is linearizable (tests/sim/linearizability.ts);
 * - distinct submissions got distinct jobs;
 * - a chunk's result, once read, never changes (recorded once), and all masters hold the same
 *   result for it at the end;
 * - no member stopped itself and no error-level record was logged (no fault this simulation
 *   injects may cause either).
 *
 * The node set is a list of {@link SimNode}s (start/crash), so more roles can be plugged in.
 * @module
 */
import { checkHistory, type Operation } from "../linearizability.ts";
import { JobTable } from "../../../roles/master/job_table.ts";
import type { PlantedBug } from "../../../roles/master/service.ts";
import { ChunkState, uuidToHex } from "../../../wire/mod.ts";
import { CALM } from "../world/net.ts";
import { type Acked, type ExpectedOutputs, INPUT_ID, PROGRAM_ID, SimClient } from "./client.ts";
import { describeFault, type Fault, planFaults } from "./faults.ts";
import { fnv, SafetyChecker } from "./invariants.ts";
import { SimMaster, SimStorageTier } from "./master_node.ts";
import { expectedOutput, StandIn } from "./stand_in.ts";
import { type SimNode, World } from "./world.ts";
import type { Credentials } from "../../../lib/security.ts";
import { RaftStorageError } from "../../../roles/master/raft/storage.ts";

/**
 * The roles besides the masters and clients: the balancer/worker stand-in by default; the real
 * balancers and simulated workers plug in here (a factory per run, called once the masters exist).
 */
export interface Roles {
  /** Every node of these roles: started at 0, restarted at the heal. */
  nodes: SimNode[];
  /** Their host names (partitions cut them too). */
  hosts: string[];
  /** The nodes a "crash-balancer" fault picks from. */
  balancers: SimNode[];
  /** What every chunk's result must hold (null: any output; only success is checked). */
  expectedOutputs: ExpectedOutputs;
  /** Counters of these roles for the run's statistics. */
  stats?: () => Record<string, number>;
}

/** Makes the {@link Roles} of one run. */
export type RolesFactory = (world: World, masterEndpoints: string[]) => Roles;

/** The default roles: tests/sim/cluster/stand_in.ts. */
export const standInRoles: RolesFactory = (world, endpoints) => {
  const s = new StandIn(world, endpoints);
  return {
    nodes: [s],
    hosts: ["b1", "w1"],
    balancers: [s],
    expectedOutputs: (job, chunk) => uuidToHex(expectedOutput(job, chunk).id),
    stats: () => ({ statusNotFound: s.notFound }),
  };
};

/** Options of one run. */
export interface ClusterSimOptions {
  /** Masters in the group (3 or 5). Default: 3, or 5 for one seed in four. */
  masters?: number;
  /** Clients submitting and reading. */
  clients?: number;
  /** Virtual ms of workload (with faults); then everything heals and the cluster settles. */
  workloadMs?: number;
  /** Virtual ms the cluster gets after the workload to finish every acknowledged job. */
  settleMs?: number;
  /** Faults planned (default: 1-4, from the seed). */
  faults?: number;
  /** Test-only bugs planted in the masters. */
  bugs?: PlantedBug[];
  /** Snapshot every this many entries (default: 20-60 from the seed: compaction exercised). */
  snapshotEvery?: number;
  /** The other roles (default {@link standInRoles}). */
  roles?: RolesFactory;
  /** The masters' keys and cluster secret (default null: insecure, no ticket checks). */
  masterAuth?: Credentials | null;
}

/** What one run found. */
export interface ClusterSimResult {
  seed: number;
  ok: boolean;
  violations: string[];
  /** The fault schedule, one line per fault. */
  schedule: string[];
  /** The run's trace (same seed, same trace: exact replay). */
  trace: string[];
  stats: Record<string, number>;
}

/** Runs one seed; see module doc. */
export async function runClusterSeed(
  seed: number,
  o: ClusterSimOptions = {},
): Promise<ClusterSimResult> {
  const world = new World(seed);
  const nMasters = o.masters ?? (world.rand() < 0.25 ? 5 : 3);
  const nClients = o.clients ?? 2;
  const workloadMs = o.workloadMs ?? 1500;
  const settleMs = o.settleMs ?? 12_000;
  const nFaults = o.faults ?? world.int(1, 4);
  const snapshotEvery = o.snapshotEvery ?? world.int(10, 40);
  const bugs = new Set(o.bugs ?? []);

  const names = Array.from({ length: nMasters }, (_, i) => `m${i + 1}`);
  const endpoints = names.map((n) => `tcp://${n}:7100`);
  const tier = new SimStorageTier(world);
  tier.add(PROGRAM_ID, 100);
  tier.add(INPUT_ID, 1000);
  let fatal = 0;
  /** Masters an injected fsync error is meant to stop, and the one whose disk had a bit flipped. */
  const eio = new Set<string>();
  let flipped = "";
  const masters = names.map((n) =>
    new SimMaster(world, n, {
      peers: names.map((m) => `${m}@tcp://${m}:7100`),
      tier,
      bugs,
      snapshotEvery,
      auth: o.masterAuth ?? null,
      onFatal: (name, e, kind) => {
        fatal++;
        if (kind !== "storage" || !eio.has(name)) {
          world.violate(`${name} stopped itself (${kind}): ${e}`);
          return;
        }
        // The process exits (roles/master/main.ts: exit 70) and is restarted by its supervisor.
        world.note(`${name} stopped on the injected fsync error`);
        const m = byName.get(name)!;
        clock.setTimeout(() => {
          if (m.up) m.crash();
          restartLater(m, 100);
        }, 1);
      },
    })
  );
  // Clock drift: a master in three runs 4 % slow to 4 % fast (its timers, its wall clock). Not
  // more: the balancer lease is safe only while clock rates agree within the holder's 10 %
  // margin (roles/master/lease.ts), and 1.04 / 0.96 stays inside it; a wider drift would make
  // the simulation find a double primary the design rules out by assumption.
  let drifting = 0;
  for (const m of masters) {
    if (world.rand() < 0.3) {
      m.host.setClockRate(0.96 + world.rand() * 0.08);
      drifting++;
    }
  }
  const roles = (o.roles ?? standInRoles)(world, endpoints);
  const history: Operation[] = [];
  const everyone: Acked[] = [];
  const clients = Array.from(
    { length: nClients },
    (_, i) =>
      new SimClient(world, `c${i + 1}`, endpoints, history, everyone, roles.expectedOutputs),
  );
  const nodes: SimNode[] = [...masters, ...roles.nodes];
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const others = [...roles.hosts, ...clients.map((c) => c.name)];
  const faults = planFaults(seed, names, others, workloadMs, nFaults);
  const schedule = faults.map(describeFault);
  const counts: Record<string, number> = {};

  const checker = new SafetyChecker(world, masters);
  const clock = world.clock;
  const net = world.net;

  /** The live master leading in the highest term, if any. */
  const leader = (): SimMaster | undefined => {
    let best: SimMaster | undefined;
    for (const m of masters) {
      if (m.up && m.raft!.isLeader() && (!best || m.raft!.term > best.raft!.term)) best = m;
    }
    return best;
  };
  const restartLater = (n: SimNode, ms: number) => {
    clock.setTimeout(() => {
      if (!n.up) {
        world.note(`restart ${n.name}`);
        void n.start();
      }
    }, ms);
  };
  const cutLater = (pairs: [string, string][], ms: number) => {
    for (const [a, b] of pairs) net.cut(a, b);
    clock.setTimeout(() => {
      for (const [a, b] of pairs) net.uncut(a, b);
    }, ms);
  };
  const fromMasters = (t: string, both: boolean): [string, string][] =>
    names.filter((n) => n !== t).flatMap((n) =>
      both ? [[t, n], [n, t]] as [string, string][] : [[t, n]] as [string, string][]
    );

  const apply = (f: Fault) => {
    let target = f.target;
    if (f.kind === "crash-leader" || f.kind === "isolate-leader") {
      // No leader right now (an election is on): the fault hits a master at random instead.
      target = leader()?.name ?? names[world.int(0, names.length - 1)];
    }
    counts[f.kind] = (counts[f.kind] ?? 0) + 1;
    world.note(`fault ${f.kind} ${target}`);
    switch (f.kind) {
      case "crash":
      case "crash-leader": {
        const n = byName.get(target)!;
        if (!n.up) return;
        n.crash();
        restartLater(n, f.durationMs);
        return;
      }
      case "crash-balancer": {
        const up = roles.balancers.filter((b) => b.up);
        if (up.length === 0) return;
        const b = up[world.int(0, up.length - 1)];
        world.note(`crash ${b.name}`);
        b.crash();
        restartLater(b, f.durationMs);
        return;
      }
      case "isolate":
      case "isolate-leader":
        return cutLater(fromMasters(target, true), f.durationMs);
      case "one-way":
        return cutLater(fromMasters(target, false), f.durationMs);
      case "isolate-all": {
        const all = [...names, ...others].filter((n) => n !== target);
        return cutLater(all.flatMap((n) => [[target, n], [n, target]]), f.durationMs);
      }
      case "split": {
        const side = new Set(f.side);
        const rest = [...names, ...others].filter((n) => !side.has(n));
        const pairs: [string, string][] = [];
        for (const a of side) for (const b of rest) pairs.push([a, b], [b, a]);
        return cutLater(pairs, f.durationMs);
      }
      case "lossy":
        net.faults = { ...CALM, ...f.net };
        clock.setTimeout(() => net.faults = { ...CALM }, f.durationMs);
        return;
      case "fsync-eio":
        eio.add(target);
        masters.find((m) => m.name === target)!.disk.failSync(1);
        return;
      case "bit-flip": {
        if (flipped) return; // one member's disk only: the others keep the group alive
        const m = masters.find((m) => m.name === target)!;
        let names: string[] = [];
        try {
          names = m.disk.durableNames(m.dir);
        } catch {
          // no durable directory yet
        }
        const wal = names.filter((n) => /^wal-[0-9a-f]+\.log$/.test(n)).sort();
        // The newest segment's last record is cut like a torn write when corrupt (the known
        // hole of FileStorage, docs/testing.md "Storage faults"): flip elsewhere.
        const files = [...wal.slice(0, -1), ...names.filter((n) => n === "snapshot.bin")];
        if (files.length === 0) return world.note(`bit-flip ${target}: nothing sealed yet`);
        const file = files[world.int(0, files.length - 1)];
        try {
          const at = m.disk.flipBit(`${m.dir}/${file}`);
          world.note(`bit flipped in ${m.dir}/${file} at ${at.offset}.${at.bit}`);
        } catch (e) {
          return world.note(`bit-flip ${target}: ${e}`);
        }
        flipped = m.name;
        if (m.up) m.crash();
        restartLater(m, 50);
        return;
      }
      case "storage-flaky":
        tier.failRate = 0.5;
        clock.setTimeout(() => tier.failRate = 0, f.durationMs);
        return;
    }
  };

  for (const n of nodes) clock.setTimeout(() => void n.start(), 0);
  for (const c of clients) clock.setTimeout(() => void c.start(workloadMs), 0);
  for (const f of faults) clock.setTimeout(() => apply(f), f.at);
  // The workload's end: every fault undone, every node up, a calm network.
  clock.setTimeout(() => {
    world.note("heal");
    net.heal();
    net.faults = { ...CALM };
    tier.failRate = 0;
    for (const n of nodes) if (!n.up) void n.start();
  }, workloadMs);

  const stop = () => world.violations.length > 0;
  let steps = 0;
  try {
    steps += await clock.run(workloadMs, { afterStep: () => checker.check(), until: stop });
    // Settle: each client reads its acknowledged jobs until all are complete.
    let settled = false;
    const settle = async () => {
      // Until every acknowledged job was read complete (a submission in flight at the end of
      // the workload may still be acknowledged: wait for the clients' loops to end too).
      while (clock.monotonic() < workloadMs + settleMs) {
        const c = clients.find((c) => c.acked.some((a) => a.completedAt === null));
        const restarting = masters.some((m) => !m.up && m.startError === null);
        if (!c && clients.every((c) => !c.up) && !restarting) break;
        if (!c) {
          await sleepOn(clients[0], 50);
          continue;
        }
        const a = c.acked.find((a) => a.completedAt === null)!;
        if (!(await c.readStatus(a))) await sleepOn(c, 100);
      }
      settled = true;
    };
    clock.setTimeout(() => void settle(), 1);
    steps += await clock.run(workloadMs + settleMs, {
      afterStep: () => checker.check(),
      until: () => settled || stop(),
    });
  } catch (e) {
    world.violate(`the simulation threw: ${e instanceof Error ? e.stack : e}`);
  }

  // Final checks.
  const acked = clients.flatMap((c) => c.acked);
  if (world.violations.length === 0) {
    for (const a of acked) {
      if (a.completedAt === null) {
        world.violate(
          `acknowledged job ${a.jobHex} (${a.client} seq ${a.seq}) did not complete within ` +
            `${settleMs} ms of the heal`,
        );
      }
    }
    const jobs = new Map<string, string>();
    for (const a of acked) {
      const other = jobs.get(a.jobHex);
      if (other) {
        world.violate(`job ${a.jobHex} acknowledged for ${other} and ${a.client}/${a.seq}`);
      }
      jobs.set(a.jobHex, `${a.client}/${a.seq}`);
    }
    const lin = checkHistory(history);
    if (!lin.ok && !lin.timedOut) world.violate(`history not linearizable at key ${lin.key}`);
    if (lin.timedOut) counts.linTimeouts = 1;
    // Every master that is up holds, for every finished chunk, the one correct result.
    for (const m of masters) {
      const t = m.table;
      if (!t) continue;
      for (const a of acked) {
        const job = t.get(a.job);
        if (!job) continue; // a member still catching up
        for (const c of job.chunks) {
          if (c.state === ChunkState.Queued || c.state === ChunkState.Running) continue;
          const want = roles.expectedOutputs?.(a.jobHex, c.chunkIndex);
          const got = c.outputs.map((x) => uuidToHex(x.id)).join(",");
          if (c.state !== ChunkState.Succeeded || (want !== undefined && got !== want)) {
            world.violate(
              `${m.name}: ${a.jobHex}/${c.chunkIndex} recorded state ${c.state} ${got}`,
            );
          }
        }
        if (JobTable.isFinished(job) && job.done !== job.chunks.length) {
          world.violate(`${m.name}: ${a.jobHex} finished with ${job.done}/${job.chunks.length}`);
        }
      }
    }
    for (const e of world.errors) {
      if (eio.has(e.node) && e.msg.startsWith("raft storage failed")) continue;
      world.violate(`error logged by ${e.node} at ${e.at} ms: ${e.msg}`);
    }
    for (const m of masters) {
      if (m.up) continue;
      // A member whose disk was corrupted must refuse to start (and be replaced by an operator).
      if (m.name === flipped && m.startError instanceof RaftStorageError) {
        counts.refusedCorruptDisk = (counts.refusedCorruptDisk ?? 0) + 1;
        continue;
      }
      world.violate(`${m.name} is down at the end: ${m.startError ?? "?"}`);
    }
  }
  const historyDigest = fnv(new TextEncoder().encode(JSON.stringify(history)));
  world.note(
    `end steps ${steps} acked ${acked.length} digests ${checker.digests} history ${historyDigest}`,
  );
  return {
    seed,
    ok: world.violations.length === 0,
    violations: world.violations,
    schedule,
    trace: world.trace,
    stats: {
      masters: nMasters,
      drifting,
      steps,
      virtualMs: clock.monotonic(),
      acked: acked.length,
      unacked: clients.reduce((s, c) => s + c.unacked, 0),
      chunks: acked.reduce((s, a) => s + a.chunks, 0),
      reads: clients.reduce((s, c) => s + c.reads, 0),
      ops: history.length,
      maxTerm: checker.maxTerm,
      fatal,
      netSent: net.stats.sent,
      netDropped: net.stats.dropped + net.stats.cut,
      netDuplicated: net.stats.duplicated,
      ...diskStats(masters),
      ...roles.stats?.(),
      ...Object.fromEntries(Object.entries(counts).map(([k, v]) => [`fault:${k}`, v])),
    },
  };
}

/** What the masters' disks did: crashes, lost/torn/garbled writes, failed syncs. */
function diskStats(masters: SimMaster[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of masters) {
    for (const f of m.disk.log) out[`disk:${f.kind}`] = (out[`disk:${f.kind}`] ?? 0) + 1;
  }
  return out;
}

function sleepOn(c: SimClient, ms: number): Promise<void> {
  return new Promise((r) => c.host.clock.setTimeout(r, ms));
}

/** The lines a failing seed prints: the seed, how to replay it, the schedule, the violations. */
export function report(r: ClusterSimResult, opts = ""): string {
  return [
    `FAIL cluster sim seed ${r.seed}: replay with deno task sim --cluster --seed ${r.seed}${opts}`,
    ...r.violations.map((v) => `  violation: ${v}`),
    "  fault schedule:",
    ...r.schedule.map((s) => `    ${s}`),
    `  stats: ${JSON.stringify(r.stats)}`,
  ].join("\n");
}
