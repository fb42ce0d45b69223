/**
 * End-to-end throughput: N chunks of a trivial program through a local cluster vs `xargs -P S`
 * running the same per-chunk command line directly, S = total worker slots, in the same run;
 * and vs Dask distributed (Debian's `python3-distributed`, installed here when missing: the
 * peer a user would pick), a LocalCluster of as many worker processes x threads as the dsys
 * cluster has workers x slots, one subprocess per task running the same program.
 *
 * Also the CPU time per chunk of each (all processes, the programs included), read from
 * /proc: on a shared, loaded machine throughput swings with the neighbours' load, while the
 * CPU a chunk costs is what bounds throughput on a busy host and varies much less. Each dsys run
 * also prints (stderr) its CPU per chunk by role and by thread: where the chunk's CPU goes.
 *
 * And what security costs end to end: the same job on a secure cluster (every connection
 * CURVE, the default) against an insecure one (`--insecure`), measured in the same rounds; and
 * what the chunk sandbox costs (bubblewrap namespaces, a cgroup and a tmpfs per chunk, the
 * default): the secure cluster against the same with `--no-sandbox` workers.
 */
import { parseArgs } from "node:util";
import { LocalCluster, type LocalClusterOptions } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ChunkState } from "../wire/mod.ts";
import { type BenchRow, markdownTable } from "./types.ts";

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on Linux). */
const TICKS_PER_S = 100;

/** CPU ms of a process: its own user+system time plus that of its waited-for children. */
function cpuMs(pid: number | "self"): number {
  const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after "(comm) ": state is #3, so utime/stime/cutime/cstime (#14..#17) are 11..14.
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000 / TICKS_PER_S;
}

/** The live child pids of `pid` (every thread's), [] once it is gone. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      const c = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim();
      if (c) out.push(...c.split(" ").map(Number));
    }
  } catch { /* gone meanwhile */ }
  return out;
}

/**
 * CPU ms of `pid`'s whole live process tree (itself included), each process with its reaped
 * children. A worker's warm sandboxes (bwrap, dsys-exec) live as long as the worker and reap its
 * chunks' programs: their CPU shows only here, never in the worker's own `cutime`.
 */
function treeCpuMs(pid: number): Map<number, number> {
  const m = new Map<number, number>();
  const walk = (p: number) => {
    try {
      m.set(p, cpuMs(p));
    } catch {
      return; // exited meanwhile: its CPU is in its parent's cutime once reaped
    }
    for (const k of childrenOf(p)) walk(k);
  };
  walk(pid);
  return m;
}

/**
 * A cgroup of the bench's own that a cluster's processes start in (every process they fork
 * stays in it or below: the workers' slot cgroups are made under their own), so its CPU counter
 * covers all of them, the sandboxed programs included: a warm slot's dsys-exec lets the kernel
 * reap its chunks (SIGCHLD ignored), so their CPU is in no process's `cutime`. Linux, root:
 * cgroup v1's cpuacct hierarchy or cgroup v2; null when neither is writable.
 */
class CpuCgroup {
  readonly dir: string;
  readonly #v2: boolean;

  private constructor(dir: string, v2: boolean) {
    this.dir = dir;
    this.#v2 = v2;
  }

  /** Makes a fresh cgroup, or null when this host has none the bench may create. */
  static make(): CpuCgroup | null {
    const mounts = Deno.readTextFileSync("/proc/self/mountinfo").split("\n").map((l) => {
      const [pre, post] = l.split(" - ");
      return { point: pre?.split(" ")[4], fs: post?.split(" ")[0], opts: post?.split(" ")[2] };
    });
    const v1 = mounts.find((m) => m.fs === "cgroup" && m.opts?.split(",").includes("cpuacct"));
    const v2 = mounts.find((m) => m.fs === "cgroup2");
    const base = v1?.point ?? v2?.point;
    if (!base) return null;
    // Not `dsys-*`: workers remove sibling cgroups of that name they take for a dead worker's.
    const dir = `${base}/bench-e2e-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
    try {
      Deno.mkdirSync(dir);
      return new CpuCgroup(dir, !v1);
    } catch {
      return null;
    }
  }

  /** The command prefix that moves a process into a cgroup `name` of its own below this one
   * (as on a host of its own: workers clean up sibling cgroups they take for stale), then execs
   * the rest. */
  prefix(name: string): string[] {
    const d = `${this.dir}/${name}`;
    return ["sh", "-c", `mkdir -p ${d} && echo $$ > ${d}/cgroup.procs && exec "$@"`, "sh"];
  }

  /** CPU ms of every process that is or was in it (or in `sub`, a cgroup below it given as a
   * relative path) and in their descendant cgroups. */
  usageMs(sub = ""): number {
    const d = sub ? `${this.dir}/${sub}` : this.dir;
    if (!this.#v2) return Number(Deno.readTextFileSync(`${d}/cpuacct.usage`)) / 1e6;
    const t = Deno.readTextFileSync(`${d}/cpu.stat`);
    return Number(/^usage_usec (\d+)$/m.exec(t)?.[1] ?? NaN) / 1e3;
  }

  /** Relative paths of the cgroups below `sub` whose name matches `re` (a worker's slots). */
  find(sub: string, re: RegExp): string[] {
    const out: string[] = [];
    const walk = (rel: string) => {
      try {
        for (const e of Deno.readDirSync(`${this.dir}/${rel}`)) {
          if (!e.isDirectory) continue;
          if (re.test(e.name)) out.push(`${rel}/${e.name}`);
          walk(`${rel}/${e.name}`);
        }
      } catch { /* removed meanwhile */ }
    };
    walk(sub);
    return out;
  }

  /** Removes it and what is left below it (once its processes are gone), best effort. */
  remove(): void {
    const rm = (d: string) => {
      try {
        for (const e of Deno.readDirSync(d)) if (e.isDirectory) rm(`${d}/${e.name}`);
        Deno.removeSync(d);
      } catch { /* busy or gone: the host's next boot clears it */ }
    };
    rm(this.dir);
  }
}

/** CPU ms by role (its processes' cgroups; a worker's slot cgroups, i.e. its sandboxes and the
 * programs, apart) and by thread name (`/proc/<pid>/task`: the JS thread is `deno`). */
interface ByProcess {
  roles: Map<string, number>;
  threads: Map<string, number>;
}

/** A snapshot of `ByProcess` of a cluster whose processes each run in a cgroup below `cg`. */
function byProcess(cg: CpuCgroup, cluster: LocalCluster): ByProcess {
  const roles = new Map<string, number>(), threads = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const p of cluster.procs.values()) {
    try {
      const slots = cg.find(p.name, /^slot-\d+$/).reduce((a, d) => a + cg.usageMs(d), 0);
      add(roles, p.role, cg.usageMs(p.name) - slots);
      if (p.role === "worker") add(roles, "sandboxes+programs", slots);
      for (const t of Deno.readDirSync(`/proc/${p.child.pid}/task`)) {
        const st = Deno.readTextFileSync(`/proc/${p.child.pid}/task/${t.name}/stat`);
        const comm = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")")).replace(/\d+$/, "N");
        const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
        add(threads, `${p.role} ${comm}`, (Number(f[11]) + Number(f[12])) * 1000 / TICKS_PER_S);
      }
    } catch { /* a thread or cgroup gone meanwhile */ }
  }
  return { roles, threads };
}

/** One line: CPU ms per chunk by role, then the threads that took >= 0.1 ms per chunk. */
function describeByProcess(a: ByProcess, b: ByProcess, chunks: number): string {
  const per = (x: Map<string, number>, y: Map<string, number>, min: number) =>
    [...y].map(([k, v]) => [k, (v - (x.get(k) ?? 0)) / chunks] as const)
      .filter(([, v]) => v >= min).sort((p, q) => q[1] - p[1])
      .map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
  return `CPU ms/chunk by role: ${per(a.roles, b.roles, 0)}; by thread: ${
    per(a.threads, b.threads, 0.1)
  }`;
}

/** CPU ms spent by the trees of `pids` between two `treeCpuMs` snapshots (new pids from 0). */
function treeDelta(before: Map<number, number>[], after: Map<number, number>[]): number {
  let sum = 0;
  after.forEach((a, i) => {
    for (const [pid, ms] of a) sum += ms - (before[i].get(pid) ?? 0);
    // Gone meanwhile: its whole life is in its parent's cutime now, its past counted before.
    for (const [pid, ms] of before[i]) if (!a.has(pid)) sum -= ms;
  });
  return sum;
}

const PROGRAM = '#!/bin/sh\necho "chunk $DSYS_CHUNK_INDEX of $DSYS_CHUNK_COUNT"\n';

/** One timed job on a fresh cluster: its wall time and the CPU all cluster processes spent. */
interface Run {
  secs: number;
  cpuMs: number;
}

/** The xargs baseline: the same program per chunk with its environment, stdout to a file. */
async function runXargs(dir: string, chunks: number, parallel: number): Promise<Run> {
  const out = await Deno.makeTempDir({ dir, prefix: "xargs-out-" });
  const cpu0 = cpuMs("self");
  const t0 = performance.now();
  const xargs = await new Deno.Command("sh", {
    args: [
      "-c",
      `seq 0 ${chunks - 1} | xargs -P ${parallel} -I{} sh -c ` +
      `'DSYS_CHUNK_INDEX={} DSYS_CHUNK_COUNT=${chunks} ${dir}/prog.sh > ${out}/{}'`,
    ],
  }).output();
  const secs = (performance.now() - t0) / 1000;
  // Our own CPU is idle while we wait: the delta is xargs and every process it waited for.
  const cpu = cpuMs("self") - cpu0;
  if (!xargs.success) {
    throw new Error(`xargs baseline failed: ${new TextDecoder().decode(xargs.stderr)}`);
  }
  await Deno.remove(out, { recursive: true });
  return { secs, cpuMs: cpu };
}

/**
 * The Dask baseline's driver (python3): a LocalCluster of `workers` processes x `threads`,
 * `chunks` tasks each running the program in a subprocess with the chunk's environment and its
 * stdout to a file (as xargs does), gathered. Prints one JSON line: the wall time from the first
 * submission to the last result, and the CPU of this process (client and scheduler) and of
 * every process of the cluster (nannies, workers, the programs they reaped) over that time.
 */
const DASK_DRIVER = `
import json, logging, os, subprocess, sys, time
import psutil
from distributed import Client, LocalCluster

prog, out, chunks, workers, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def run(i):
    env = dict(os.environ, DSYS_CHUNK_INDEX=str(i), DSYS_CHUNK_COUNT=str(chunks))
    with open(f"{out}/{i}", "wb") as f:
        subprocess.run([prog], env=env, stdout=f, check=True)
    return i

def cpu():
    # Processes that exit are in their parent's children times once reaped.
    ms = {}
    me = psutil.Process()
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            ms[p.pid] = (t.user + t.system + t.children_user + t.children_system) * 1000
        except psutil.Error:
            pass
    return ms

if __name__ == "__main__":
    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(workers)
        c0 = cpu()
        t0 = time.monotonic()
        done = client.gather(client.map(run, range(chunks), pure=False))
        secs = time.monotonic() - t0
        c1 = cpu()
        assert sorted(done) == list(range(chunks))
        used = sum(v - c0.get(k, 0) for k, v in c1.items()) - sum(v for k, v in c0.items() if k not in c1)
        print(json.dumps({"secs": secs, "cpuMs": used}))
`;

/** Debian's python3, where `python3-distributed` lives (a `python3` earlier on PATH, e.g. a
 * pyenv shim, would not see it). */
const PYTHON = "/usr/bin/python3";

/** Installs Debian's python3-distributed when `import distributed` fails (the bench runs as
 * root on Debian; the test suite never needs it). */
async function ensureDask(): Promise<void> {
  const probe = () =>
    new Deno.Command(PYTHON, { args: ["-c", "import distributed, psutil"], stderr: "null" })
      .output().then((o) => o.success, () => false);
  if (await probe()) return;
  console.error("  e2e bench: installing python3-distributed (Dask baseline)");
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  for (
    const args of [["update", "-q"], [
      "install",
      "-y",
      "-q",
      "--no-install-recommends",
      "python3-distributed",
    ]]
  ) {
    const o = await new Deno.Command("apt-get", { args, env, stdout: "null" }).output();
    if (!o.success) {
      throw new Error(`apt-get ${args.join(" ")} failed: ${new TextDecoder().decode(o.stderr)}`);
    }
  }
  if (!(await probe())) {
    throw new Error("python3-distributed installed but `import distributed` fails");
  }
}

/** The Dask baseline: the same program per chunk as a Dask task's subprocess. */
async function runDask(
  dir: string,
  chunks: number,
  workers: number,
  threads: number,
): Promise<Run> {
  const out = await Deno.makeTempDir({ dir, prefix: "dask-out-" });
  try {
    const o = await new Deno.Command(PYTHON, {
      args: ["-c", DASK_DRIVER, `${dir}/prog.sh`, out, `${chunks}`, `${workers}`, `${threads}`],
      cwd: dir,
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(o.stdout).trim();
    if (!o.success) {
      throw new Error(`Dask baseline failed: ${new TextDecoder().decode(o.stderr).slice(-2000)}`);
    }
    const r = JSON.parse(text.slice(text.lastIndexOf("\n") + 1)) as Run;
    return { secs: r.secs, cpuMs: r.cpuMs };
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

/**
 * The dsys workload: a fresh local cluster started with `opts` (secure by default, or
 * `insecure: true`), one job of `chunks` trivial chunks, then the cluster is stopped.
 */
async function runDsys(
  dir: string,
  opts: Pick<LocalClusterOptions, "insecure" | "extraArgs">,
  chunks: number,
  workers: number,
  slots: number,
): Promise<Run> {
  const dataDir = await Deno.makeTempDir({ dir, prefix: "cluster-" });
  const cg = CpuCgroup.make();
  const placement = cg
    ? (name: string) => ({ host: "127.0.0.1", prefix: cg.prefix(name) })
    : undefined;
  let cluster: LocalCluster;
  try {
    cluster = await LocalCluster.start({
      ...opts,
      workers,
      slotsPerWorker: slots,
      dataDir,
      placement,
    });
  } catch (e) {
    cg?.remove();
    throw e;
  }
  const client = new DsysClient(cluster.info);
  try {
    const pids = [...cluster.procs.values()].map((p) => p.child.pid);
    // Without a cgroup of our own: the processes' trees (sandboxed programs not counted).
    const cg0 = cg?.usageMs() ?? 0;
    const by0 = cg ? byProcess(cg, cluster) : null;
    const tree0 = cg ? [] : pids.map(treeCpuMs);
    const t0 = performance.now();
    const job = await client.submit({
      program: new TextEncoder().encode(PROGRAM),
      programName: "prog.sh",
      argument: "",
      chunks,
      inputs: [],
      timeLimitMs: 60_000,
    });
    const s = await client.waitForJob(job, () => {}, 100);
    const secs = (performance.now() - t0) / 1000;
    // Cluster nodes, their sandboxes and the programs they reaped; not this client process.
    const cpu = cg ? cg.usageMs() - cg0 : treeDelta(tree0, pids.map(treeCpuMs));
    if (cg && by0) console.error(`    ${describeByProcess(by0, byProcess(cg, cluster), chunks)}`);
    if (s.state !== ChunkState.Succeeded) throw new Error(`bench job failed: ${s.failed} chunks`);
    return { secs, cpuMs: cpu };
  } finally {
    await client.close();
    await cluster.stop();
    cg?.remove();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

/** Median of a non-empty list. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Rounds of the benchmark; each row reports the median round. */
const ROUNDS = 3;

/**
 * Runs the end-to-end benchmark: per round xargs, then a secure (CURVE, the default) and an
 * insecure (`--insecure`) cluster, the two taking turns going first; rows are medians.
 */
export async function runE2eBench(
  chunks = 2000,
  workers = 4,
  slots = 2,
  rounds = ROUNDS,
): Promise<BenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-bench-e2e-" });
  await Deno.writeTextFile(`${dir}/prog.sh`, PROGRAM);
  await Deno.chmod(`${dir}/prog.sh`, 0o755);
  await ensureDask();
  const kinds = ["xargs", "secure", "dask", "insecure", "unsandboxed"] as const;
  type Kind = typeof kinds[number];
  const runs: Record<Kind, Run[]> = {
    xargs: [],
    secure: [],
    dask: [],
    insecure: [],
    unsandboxed: [],
  };
  const clusterOpts: Record<string, Pick<LocalClusterOptions, "insecure" | "extraArgs">> = {
    secure: {},
    insecure: { insecure: true },
    unsandboxed: { extraArgs: { worker: ["--no-sandbox"] } },
  };
  try {
    for (let round = 0; round < rounds; round++) {
      // Interleaved, the order reversed every other round: a drift in the neighbours' load
      // does not favour whoever always goes first.
      const order = round % 2 ? [...kinds].reverse() : kinds;
      for (const what of order) {
        const r = what === "xargs"
          ? await runXargs(dir, chunks, workers * slots)
          : what === "dask"
          ? await runDask(dir, chunks, workers, slots)
          : await runDsys(dir, clusterOpts[what], chunks, workers, slots);
        runs[what].push(r);
        console.error(
          `  e2e bench: round ${round + 1} ${what}: ${(chunks / r.secs).toFixed(0)} chunks/s, ` +
            `${(r.cpuMs / chunks).toFixed(2)} CPU ms/chunk, load ${Deno.loadavg()[0].toFixed(2)}`,
        );
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const rate = (k: Kind) => median(runs[k].map((r) => chunks / r.secs));
  const cpu = (k: Kind) => median(runs[k].map((r) => r.cpuMs / chunks));
  /** The range of the per-round ratios of `k` against `base` (each round's pair). */
  const spread = (k: Kind, base: Kind, cpuRatio = false) => {
    const rs = runs[k].map((r, j) =>
      cpuRatio ? runs[base][j].cpuMs / r.cpuMs : runs[base][j].secs / r.secs
    );
    return `${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)}`;
  };
  const d = rate("secure"), b = rate("xargs"), i = rate("insecure"), u = rate("unsandboxed");
  const k = rate("dask");
  const dc = cpu("secure"), bc = cpu("xargs"), ic = cpu("insecure"), uc = cpu("unsandboxed");
  const kc = cpu("dask");
  return [{
    name: `end-to-end ${chunks} trivial chunks, ${workers}x${slots} slots`,
    dsys: d,
    baseline: b,
    unit: "chunks/s",
    ratio: d / b,
    goal: ">= 0.5x xargs",
    spread: spread("secure", "xargs"),
  }, {
    name: `end-to-end CPU per chunk, all processes (programs included)`,
    dsys: dc,
    baseline: bc,
    unit: "ms/chunk",
    ratio: bc / dc,
    goal: "dsys <= 3 ms",
    spread: spread("secure", "xargs", true),
  }, {
    name: `end-to-end vs Dask distributed (LocalCluster ${workers} procs x ${slots} threads, ` +
      `a subprocess per task), ${chunks} chunks`,
    dsys: d,
    baseline: k,
    unit: "chunks/s",
    ratio: d / k,
    goal: ">= 1.25x Dask",
    spread: spread("secure", "dask"),
  }, {
    name: `end-to-end CPU per chunk, dsys vs Dask distributed (all processes)`,
    dsys: dc,
    baseline: kc,
    unit: "ms/chunk",
    ratio: kc / dc,
    goal: "lower is better",
    spread: spread("secure", "dask", true),
  }, {
    name: `end-to-end secure (CURVE) vs --insecure cluster, ${chunks} chunks`,
    dsys: d,
    baseline: i,
    unit: "chunks/s",
    ratio: d / i,
    goal: ">= 0.9x insecure",
  }, {
    name: `end-to-end CPU per chunk, secure vs --insecure cluster`,
    dsys: dc,
    baseline: ic,
    unit: "ms/chunk",
    ratio: ic / dc,
    goal: "lower is better",
  }, {
    name: `end-to-end sandboxed vs --no-sandbox workers, ${chunks} chunks`,
    dsys: d,
    baseline: u,
    unit: "chunks/s",
    ratio: d / u,
    goal: ">= 0.8x unsandboxed",
  }, {
    name: `end-to-end CPU per chunk, sandboxed vs --no-sandbox workers`,
    dsys: dc,
    baseline: uc,
    unit: "ms/chunk",
    ratio: uc / dc,
    goal: "lower is better",
  }];
}

if (import.meta.main) {
  // `deno run -A bench/e2e.ts [--chunks 2000] [--rounds 3]`
  console.error(`load average at start: ${Deno.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  const { values } = parseArgs({
    args: Deno.args,
    options: { chunks: { type: "string" }, rounds: { type: "string" } },
  });
  const rows = await runE2eBench(
    values.chunks ? Number(values.chunks) : undefined,
    undefined,
    undefined,
    values.rounds ? Number(values.rounds) : undefined,
  );
  console.log(markdownTable(rows, "baseline"));
  console.log(`\nload average at the end: ${Deno.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
}
