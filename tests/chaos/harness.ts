/**
 * The chaos harness: a real cluster (3 masters, 2 balancers, 2 storage nodes, 4 workers; every
 * node a process of its own, secure, in its own network namespace when the machine allows it),
 * the workload of ./workload.ts, and the faults of a seeded schedule (./schedule.ts): kill -9 and
 * restart with the original flags, SIGSTOP/SIGCONT, network cuts. Once the schedule has run and
 * everything is healed, every job must finish, and ./checker.ts checks the invariants.
 * @module
 */
import { type ClusterProcess, LocalCluster } from "../../client/local_cluster.ts";
import { DsysClient } from "../../client/commands.ts";
import { NodeFlags, NodeRole, uuidToHex } from "../../wire/mod.ts";
import { terminate } from "../../wire/zmq/mod.ts";
import { within } from "../wait.ts";
import {
  checkJobOnce,
  checkJobs,
  checkLinearizable,
  checkRuns,
  type Disturbance,
  type FinalStatus,
  KNOWN_BUGS,
  type KnownBug,
  type RerunReason,
  type Violation,
} from "./checker.ts";
import { logFacts } from "./logs.ts";
import { NetLab } from "./netns.ts";
import {
  describeFault,
  formatPlan,
  type NodeSpec,
  planFaults,
  type PlannedFault,
  type PlanOptions,
} from "./schedule.ts";
import { type History, Workload } from "./workload.ts";

/** Options of a chaos run. */
export interface ChaosOptions {
  seed: number;
  /** Length of the fault phase, ms. */
  faultMs: number;
  /** Prints a line: faults with their time, progress. Default: console.log. */
  say?: (line: string) => void;
  /** Planner knobs (gaps, durations). */
  plan?: PlanOptions;
  /** Put nodes in network namespaces and cut links (default true; needs root and iproute2). */
  netns?: boolean;
  /** Keep the data directory (logs) even when every invariant holds. */
  keep?: boolean;
  /** After the faults, how long all acknowledged jobs get to finish, ms (default 240 s). */
  drainMs?: number;
}

/** What was done, per fault kind (`skipped`: its target was busy, down or unknown). */
export interface FaultCounts {
  kill: Record<string, number>;
  pause: Record<string, number>;
  partition: Record<string, number>;
  skipped: number;
}

/** The outcome of a run. */
export interface ChaosReport {
  seed: number;
  faultMs: number;
  plan: PlannedFault[];
  /** Whether nodes ran in network namespaces (else partitions were skipped). */
  netns: boolean;
  counts: FaultCounts;
  jobs: { submitted: number; acknowledged: number; chunks: number; runs: number };
  reruns: Record<RerunReason, number>;
  /** Re-runs explained only by a known, named bug of dsys (checker.ts KNOWN_BUGS). */
  knownBugs: Partial<Record<KnownBug, number>>;
  reads: { status: number; list: number; resends: number; submitAttempts: number };
  violations: Violation[];
  /** Worth knowing but not a broken invariant (error-level log records, no netns). */
  notes: string[];
  /** Where the logs are (kept when a violation was found or `keep`), else null. */
  dataDir: string | null;
  wallMs: number;
}

const NODES: NodeSpec[] = [
  { name: "m1", role: "master" },
  { name: "m2", role: "master" },
  { name: "m3", role: "master" },
  { name: "balancer", role: "balancer" },
  { name: "balancer2", role: "balancer" },
  { name: "storage", role: "storage" },
  { name: "storage2", role: "storage" },
  { name: "worker1", role: "worker" },
  { name: "worker2", role: "worker" },
  { name: "worker3", role: "worker" },
  { name: "worker4", role: "worker" },
];
const USERS = ["alice", "bob", "carol"];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs one chaos run; see module doc. Never throws for a broken invariant: see `violations`. */
export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const say = o.say ?? ((l: string) => console.log(l));
  const wall0 = performance.now();
  const plan = planFaults(o.seed, o.faultMs, NODES, o.plan);
  const violations: Violation[] = [];
  const notes: string[] = [];
  const counts: FaultCounts = { kill: {}, pause: {}, partition: {}, skipped: 0 };
  const disturbances: Disturbance[] = [];
  const bump = (r: Record<string, number>, k: string) => r[k] = (r[k] ?? 0) + 1;

  let lab: NetLab | null = null;
  if (o.netns ?? true) {
    const stale = await NetLab.removeStale();
    if (stale.length) notes.push(`removed network namespaces of earlier runs: ${stale.join(" ")}`);
    const made = await NetLab.create(NODES.map((n) => n.name));
    if (made instanceof NetLab) lab = made;
    else {
      notes.push(
        `no network namespaces (${made.command.join(" ")}: ${made.stderr.trim()}): ` +
          "partitions are skipped, nodes run on loopback",
      );
    }
  }
  for (const n of notes) say(`chaos: ${n}`);

  const cluster = await LocalCluster.start({
    masters: 3,
    standbyBalancer: true,
    // Two storage nodes, every file on both (the masters' default R with two nodes).
    storageNodes: 2,
    workers: 4,
    slotsPerWorker: 2,
    users: USERS,
    ...(lab
      ? { placement: (name: string) => ({ host: lab!.ip(name), prefix: lab!.prefix(name) }) }
      : {}),
  }).catch(async (e) => {
    await lab?.destroy();
    throw e;
  });
  say(`chaos: cluster up, data and logs in ${cluster.dataDir}`);
  active = { cluster, lab, stopping: () => stopping = true };
  const admin = new DsysClient(cluster.info, { deadlineMs: 5_000 });
  /** Processes the harness stopped on purpose (their exit is not a crash). */
  const expected = new WeakSet<ClusterProcess>();
  /** Set by emergencyStop: every exit from then on is expected. */
  let stopping = false;
  /** Restarts of crashed nodes under way. */
  const revivals: Promise<unknown>[] = [];
  const watch = (p: ClusterProcess) => {
    p.exited.then((st) => {
      if (expected.has(p) || stopping) return;
      violations.push({
        invariant: "no-crash",
        detail: `${p.name} exited on its own (code ${st.code}, signal ${st.signal})`,
      });
      say(`${stamp()} CRASH ${p.name} exited on its own (code ${st.code}, signal ${st.signal})`);
      // Brought back, so the remaining jobs can finish and the other invariants still say
      // something; a fault planned on it meanwhile is skipped.
      if (cluster.procs.get(p.name) !== p || state.get(p.name) !== "up") return;
      cluster.procs.delete(p.name);
      state.set(p.name, "down");
      revivals.push(restart(p.name, p).then((ok) => state.set(p.name, ok ? "up" : "down")));
    });
  };
  for (const p of cluster.procs.values()) watch(p);
  /** Node state as the faults left it. */
  const state = new Map<string, "up" | "down" | "paused">(NODES.map((n) => [n.name, "up"]));
  let t0 = performance.now();
  const stamp = () => {
    const now = new Date().toISOString().slice(11, 23);
    return `${now} +${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s`;
  };

  const workload = new Workload({
    cluster: cluster.info,
    users: USERS.map((name) => ({ name, key: `${cluster.keysDir}/${name}.key` })),
    seed: o.seed,
    say: (l) => say(`${stamp()} ${l}`),
  });
  const restart = async (name: string, proc: ClusterProcess): Promise<boolean> => {
    for (let i = 0; i < 5; i++) {
      // Stopping (emergencyStop): a fault still under way must not bring its node back.
      if (stopping) return false;
      try {
        const p = await cluster.restart(name, proc);
        watch(p);
        if (stopping) await cluster.kill(name, "SIGTERM");
        return true;
      } catch (e) {
        say(`${stamp()} restart of ${name} failed (try ${i + 1}): ${(e as Error).message}`);
        await sleep(1_000);
      }
    }
    violations.push({ invariant: "harness", detail: `${name} could not be restarted` });
    return false;
  };
  /** The running master that leads now, or null (none known within a few seconds). */
  const leader = async (): Promise<string | null> => {
    const end = performance.now() + 10_000;
    while (performance.now() < end) {
      try {
        const nodes = await admin.nodes();
        const l = nodes.find((n) => n.role === NodeRole.Master && (n.flags & NodeFlags.Leader));
        if (l && state.get(l.name) === "up") return l.name;
      } catch { /* an election, or the leader is the one cut off */ }
      await sleep(200);
    }
    return null;
  };
  const primary = async (): Promise<string | null> => {
    const end = performance.now() + 10_000;
    while (performance.now() < end) {
      try {
        const nodes = await admin.nodes();
        const b = nodes.find((n) => n.role === NodeRole.Balancer && (n.flags & NodeFlags.Leader));
        for (const p of cluster.procs.values()) {
          if (
            b && p.role === "balancer" && p.endpoint === b.endpoint && state.get(p.name) === "up"
          ) {
            return p.name;
          }
        }
      } catch { /* masters busy */ }
      await sleep(200);
    }
    return null;
  };

  const runFault = async (f: PlannedFault): Promise<void> => {
    const line = describeFault(f);
    if (f.kind === "partition") {
      if (!lab) {
        counts.skipped++;
        say(`${stamp()} ${line}: skipped (no network namespaces)`);
        return;
      }
      let pairs: [string, string][];
      let shape: string = f.shape;
      if (f.shape === "leader-isolated") {
        const l = await leader();
        if (!l) {
          counts.skipped++;
          say(`${stamp()} ${line}: skipped (no leader found)`);
          return;
        }
        shape = `leader-isolated (${l})`;
        pairs = NODES.filter((n) => n.name !== l).flatMap((n) =>
          [[l, n.name], [n.name, l]] as [string, string][]
        );
      } else {
        pairs = f.a.flatMap((x) => f.b.map((y) => [x, y] as [string, string]));
        if (f.shape === "symmetric") pairs = pairs.flatMap(([x, y]) => [[x, y], [y, x]]);
      }
      bump(counts.partition, f.shape);
      const from = Date.now();
      say(`${stamp()} ${line}: cut ${shape}`);
      for (const [x, y] of pairs) {
        const e = await lab.cut(x, y);
        if (e) violations.push({ invariant: "harness", detail: `cut ${x}->${y}: ${e.stderr}` });
      }
      await sleep(f.durationMs);
      for (const [x, y] of pairs) {
        const e = await lab.uncut(x, y);
        if (e) violations.push({ invariant: "harness", detail: `heal ${x}->${y}: ${e.stderr}` });
      }
      const to = Date.now();
      for (const [x, y] of pairs) disturbances.push({ node: x, peer: y, kind: "cut", from, to });
      say(`${stamp()} #${f.n} healed`);
      return;
    }
    let name: string | null;
    let why = "";
    if (f.target.kind === "node") {
      // Busy with a fault aimed at the leader: this one waits for it, so that named faults
      // always happen (the CI test counts on them).
      name = f.target.name;
      const end = performance.now() + 30_000;
      while (state.get(name) !== "up" && performance.now() < end) await sleep(100);
    } else if (f.target.kind === "leader") [name, why] = [await leader(), " (leader master)"];
    else [name, why] = [await primary(), " (primary balancer)"];
    if (!name || state.get(name) !== "up" || !cluster.procs.has(name)) {
      counts.skipped++;
      say(`${stamp()} ${line}: skipped (${name ? `${name} is ${state.get(name)}` : "no target"})`);
      return;
    }
    const role = NODES.find((n) => n.name === name)!.role;
    const proc = cluster.procs.get(name)!;
    const from = Date.now();
    if (f.kind === "kill") {
      bump(counts.kill, f.target.kind === "node" ? role : f.target.kind);
      state.set(name, "down");
      expected.add(proc);
      say(`${stamp()} #${f.n} kill -9 ${name}${why} (pid ${proc.child.pid})`);
      await cluster.kill(name, "SIGKILL");
      await sleep(f.durationMs);
      const ok = await restart(name, proc);
      state.set(name, ok ? "up" : "down");
      say(
        `${stamp()} #${f.n} restarted ${name}${
          ok ? ` (pid ${cluster.procs.get(name)!.child.pid})` : ": FAILED"
        }`,
      );
    } else {
      bump(counts.pause, f.target.kind === "node" ? role : f.target.kind);
      state.set(name, "paused");
      say(`${stamp()} #${f.n} SIGSTOP ${name}${why} for ${(f.durationMs / 1000).toFixed(1)}s`);
      proc.child.kill("SIGSTOP");
      await sleep(f.durationMs);
      proc.child.kill("SIGCONT");
      state.set(name, "up");
      say(`${stamp()} #${f.n} SIGCONT ${name}`);
    }
    disturbances.push({ node: name, kind: f.kind, from, to: Date.now() });
  };

  let failure: unknown = null;
  try {
    workload.start();
    // Faults start once the cluster has taken a first job, so start-up is not mistaken for them.
    await within(
      120_000,
      "a first acknowledged submission",
      (async () => {
        while (workload.acknowledged === 0) await sleep(100);
      })(),
    );
    t0 = performance.now();
    say(
      `${stamp()} chaos: seed ${o.seed}, ${plan.length} faults over ${
        (o.faultMs / 1000).toFixed(0)
      }s${lab ? "" : " (no partitions)"}`,
    );
    const running: Promise<void>[] = [];
    for (const f of plan) {
      const wait = t0 + f.atMs - performance.now();
      if (wait > 0) await sleep(wait);
      running.push(
        runFault(f).catch((e) => {
          violations.push({ invariant: "harness", detail: `fault #${f.n}: ${e}` });
        }),
      );
    }
    const left = t0 + o.faultMs - performance.now();
    if (left > 0) await sleep(left);
    await Promise.all(running);
    // Each fault undid itself; crashed nodes are back.
    await Promise.all(revivals);
    if (lab) {
      for (const e of await lab.healAll()) {
        violations.push({ invariant: "harness", detail: `heal: ${e.stderr}` });
      }
    }
    say(
      `${stamp()} faults over; ${workload.acknowledged} jobs acknowledged; waiting for them to finish`,
    );
    workload.stopSubmitting();
    const drainMs = o.drainMs ?? 240_000;
    const drained = await within(drainMs, "every acknowledged job to finish", workload.drain())
      .then(() => true, () => false);
    if (!drained) {
      workload.abort();
      await workload.drain();
    }
    const { finals, outputs } = await workload.finalReads(120_000);
    say(`${stamp()} all jobs ${drained ? "finished" : "NOT finished"}; stopping the cluster`);
    const h = workload.history;
    // Everything the checks read besides the logs, for tests/chaos/recheck.ts.
    await Deno.writeTextFile(
      `${cluster.dataDir}/chaos-dump.json`,
      encodeDump({ seed: o.seed, history: h, finals, outputs, disturbances }),
    );
    for (const e of h.errors) {
      violations.push({ invariant: "job-completes", detail: `${e.user}: ${e.what}: ${e.error}` });
    }
    violations.push(...checkJobs(h, finals, outputs));
    violations.push(...checkJobOnce(h));
    violations.push(...checkLinearizable(h, finals));

    // Stop: SIGTERM, with a grace a loaded machine cannot run out of; each must exit 0.
    await admin.close();
    const procs = [...cluster.procs.values()];
    for (const p of procs) expected.add(p);
    await cluster.stop(30_000);
    for (const p of procs) {
      const st = await p.exited;
      if (st.code !== 0) {
        violations.push({
          invariant: "no-crash",
          detail:
            `${p.name} did not stop cleanly on SIGTERM (code ${st.code}, signal ${st.signal})`,
        });
      }
    }
    violations.push(...await leftovers(cluster.dataDir, lab));

    const facts = await logFacts(`${cluster.dataDir}/logs`);
    const runs = checkRuns(facts, disturbances, h, finals);
    violations.push(...runs.violations);
    const byMsg = new Map<string, number>();
    for (const r of facts.errors) {
      const k = `${r.name.replace(/\d+$/, "")}: ${r.rec.msg}`;
      byMsg.set(k, (byMsg.get(k) ?? 0) + 1);
    }
    for (const [k, n] of byMsg) notes.push(`error-level log records: ${n} x ${k}`);
    for (const g of facts.garbage.slice(0, 5)) {
      notes.push(`non-JSON log line in ${g.name}: ${g.line}`);
    }
    for (const d of runs.unexplainedDeaths) notes.push(`no fault explains: ${d}`);

    const keep = o.keep || violations.length > 0;
    const report: ChaosReport = {
      seed: o.seed,
      faultMs: o.faultMs,
      plan,
      netns: lab !== null,
      counts,
      jobs: {
        submitted: h.submits.length,
        acknowledged: h.submits.filter((s) => s.job).length,
        chunks: runs.chunks,
        runs: runs.runs,
      },
      reruns: runs.reruns,
      knownBugs: runs.knownBugs,
      reads: {
        status: h.statusReads.length,
        list: h.listReads.length,
        resends: h.submits.reduce((n, s) => n + s.resends.length, 0),
        submitAttempts: h.submits.reduce((n, s) => n + s.attempts, 0),
      },
      violations,
      notes,
      dataDir: keep ? cluster.dataDir : null,
      wallMs: performance.now() - wall0,
    };
    if (!keep) await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
    return report;
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    if (failure) {
      // Something threw: leave nothing running (every process resumed first, so it can stop).
      for (const p of cluster.procs.values()) {
        try {
          p.child.kill("SIGCONT");
        } catch { /* gone */ }
        expected.add(p);
      }
      workload.abort();
      await admin.close().catch(() => {});
      await cluster.stop(10_000).catch(() => {});
      say(
        `chaos: aborted; logs in ${cluster.dataDir}; schedule of seed ${o.seed}:\n${
          formatPlan(plan)
        }`,
      );
    }
    active = null;
    await lab?.destroy();
    await terminate();
  }
}

/** The run in progress, for `emergencyStop`. */
let active: { cluster: LocalCluster; lab: NetLab | null; stopping: () => void } | null = null;

/**
 * Stops the run in progress at once (the CLI calls it on SIGINT/SIGTERM): every node resumed
 * and stopped, the namespaces removed. The data directory is kept.
 */
export async function emergencyStop(): Promise<void> {
  const a = active;
  if (!a) return;
  a.stopping();
  for (const p of a.cluster.procs.values()) {
    try {
      p.child.kill("SIGCONT");
    } catch { /* gone */ }
  }
  // Workers get the time to unmount; a restart that was under way is stopped by the next round.
  for (let round = 0; round < 3 && a.cluster.procs.size > 0; round++) {
    await a.cluster.stop(30_000).catch(() => {});
    await new Promise((r) => setTimeout(r, 1_000));
  }
  await a.lab?.destroy();
  console.log(`chaos: stopped; logs in ${a.cluster.dataDir}/logs`);
}

/**
 * What is left once the cluster stopped: mounts under the data directory (FUSE, chunk tmpfs),
 * processes that name it (node processes, unsandboxed chunks: their TMPDIR is there), that are
 * in a worker's chunk cgroups (sandboxed chunks, in namespaces of their own) or in the lab's
 * namespaces, and the workers' cgroup directories (`dsys-<node>`, removed at a clean stop).
 * Polls for up to 30 s, since a chunk program orphaned by a killed worker may still be
 * finishing its last second; whatever is there at the deadline is left behind.
 */
async function leftovers(dataDir: string, lab: NetLab | null): Promise<Violation[]> {
  const cgroups: string[] = [];
  for (const n of NODES) {
    if (n.role !== "worker") continue;
    const id = await Deno.readFile(`${dataDir}/${n.name}/node-id`).catch(() => null);
    if (id) cgroups.push(`dsys-${uuidToHex(id).slice(0, 12)}`);
  }
  const look = async (): Promise<string[]> => {
    const found: string[] = [];
    const mounts = await Deno.readTextFile("/proc/self/mountinfo");
    for (const line of mounts.split("\n")) {
      const point = line.split(" ")[4];
      if (point && point.startsWith(dataDir)) {
        found.push(`mount ${point} (${line.split(" - ")[1]})`);
      }
    }
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
      for (const f of ["cmdline", "environ", "cgroup"]) {
        const text = await Deno.readTextFile(`/proc/${e.name}/${f}`).catch(() => "");
        const inCgroup = f === "cgroup" && cgroups.some((c) => text.includes(`/${c}/`));
        if (text.includes(dataDir) || inCgroup) {
          const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => ""))
            .replaceAll("\0", " ").trim();
          found.push(
            `process ${e.name}${inCgroup ? " (in a chunk cgroup)" : ""}: ${cmd.slice(0, 200)}`,
          );
          break;
        }
      }
    }
    for (const n of NODES) {
      for (const pid of await lab?.pids(n.name) ?? []) {
        found.push(`process ${pid} in ${n.name}'s netns`);
      }
    }
    for (const dir of cgroupDirs("/sys/fs/cgroup", cgroups, 8)) found.push(`cgroup ${dir}`);
    return [...new Set(found)];
  };
  let last: string[] = [];
  const end = performance.now() + 30_000;
  while (performance.now() < end) {
    last = await look();
    if (last.length === 0) return [];
    await sleep(500);
  }
  return last.map((l) => ({ invariant: "nothing-left" as const, detail: `left behind: ${l}` }));
}

/** Directories named one of `names` under `root`, at most `depth` levels down. */
function cgroupDirs(root: string, names: string[], depth: number): string[] {
  const out: string[] = [];
  const walk = (dir: string, d: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory || e.isSymlink) continue;
      if (names.includes(e.name)) out.push(`${dir}/${e.name}`);
      else if (d > 0) walk(`${dir}/${e.name}`, d - 1);
    }
  };
  walk(root, depth);
  return out;
}

/** The report as the summary line and, when an invariant broke, everything needed to replay. */
export function formatReport(r: ChaosReport): string {
  const fmt = (x: Record<string, number>) =>
    Object.entries(x).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const total = (x: Record<string, number>) => Object.values(x).reduce((a, b) => a + b, 0);
  const lines = [
    `chaos seed ${r.seed}: ${
      r.violations.length === 0 ? "OK" : `FAILED (${r.violations.length} violations)`
    }` +
    ` in ${(r.wallMs / 1000).toFixed(0)}s; faults over ${(r.faultMs / 1000).toFixed(0)}s: ` +
    `kills ${total(r.counts.kill)} (${fmt(r.counts.kill)}), pauses ${total(r.counts.pause)} (${
      fmt(r.counts.pause)
    }), partitions ${total(r.counts.partition)} (${
      fmt(r.counts.partition)
    }), skipped ${r.counts.skipped}; ` +
    `jobs ${r.jobs.acknowledged}/${r.jobs.submitted} acknowledged, ${r.jobs.chunks} chunks, ${r.jobs.runs} runs ` +
    `(re-runs: ${fmt(r.reruns)}); reads: ${r.reads.status} status, ${r.reads.list} list, ` +
    `${r.reads.resends} resends, ${r.reads.submitAttempts} submit attempts`,
  ];
  for (const [bug, n] of Object.entries(r.knownBugs)) {
    lines.push(`  KNOWN BUG ${bug} (not fixed): ${n} re-runs: ${KNOWN_BUGS[bug as KnownBug]}`);
  }
  for (const n of r.notes) lines.push(`  note: ${n}`);
  if (r.dataDir) lines.push(`  logs: ${r.dataDir}/logs`);
  if (r.violations.length > 0) {
    for (const v of r.violations.slice(0, 50)) {
      lines.push(
        `  VIOLATION ${v.invariant}: ${v.detail}${v.fields ? " " + JSON.stringify(v.fields) : ""}`,
      );
    }
    if (r.violations.length > 50) lines.push(`  ... ${r.violations.length - 50} more`);
    lines.push(`  replay: deno task chaos --seed ${r.seed} --minutes ${r.faultMs / 60_000}`);
    lines.push(`  schedule:\n${formatPlan(r.plan).replace(/^/gm, "    ")}`);
  }
  return lines.join("\n");
}

/** What `chaos-dump.json` in a run's data directory holds. */
export interface ChaosDump {
  seed: number;
  history: History;
  finals: FinalStatus;
  outputs: Map<string, Uint8Array | string>;
  disturbances: Disturbance[];
}

/** JSON with byte arrays as `{"$hex": …}` and maps as `{"$map": [[k, v], …]}`. */
export function encodeDump(d: ChaosDump): string {
  return JSON.stringify(d, (_k, v) => {
    if (v instanceof Uint8Array) {
      return { $hex: Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("") };
    }
    if (v instanceof Map) return { $map: [...v] };
    return v;
  });
}

/** The inverse of `encodeDump`. */
export function decodeDump(text: string): ChaosDump {
  return JSON.parse(text, (_k, v) => {
    if (v && typeof v === "object" && typeof v.$hex === "string") {
      return new Uint8Array((v.$hex.match(/../g) ?? []).map((x: string) => parseInt(x, 16)));
    }
    if (v && typeof v === "object" && Array.isArray(v.$map)) return new Map(v.$map);
    return v;
  });
}
