/**
 * End-to-end throughput: N chunks of a trivial program through a local cluster vs `xargs -P S`
 * running the same per-chunk command line directly, S = total worker slots, in the same run.
 *
 * Also the CPU time per chunk of both (all processes, the programs included), read from
 * /proc: on a shared, loaded machine throughput swings with the neighbours' load, while the
 * CPU a chunk costs is what bounds throughput on a busy host and varies much less.
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
  const cluster = await LocalCluster.start({ ...opts, workers, slotsPerWorker: slots, dataDir });
  const client = new DsysClient(cluster.info);
  try {
    const pids = [...cluster.procs.values()].map((p) => p.child.pid);
    const clusterCpu = () => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
    const cpu0 = clusterCpu();
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
    // Cluster nodes and the programs their workers reaped; not this client process.
    const cpu = clusterCpu() - cpu0;
    if (s.state !== ChunkState.Succeeded) throw new Error(`bench job failed: ${s.failed} chunks`);
    return { secs, cpuMs: cpu };
  } finally {
    await client.close();
    await cluster.stop();
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
  const runs: Record<"xargs" | "secure" | "insecure" | "unsandboxed", Run[]> = {
    xargs: [],
    secure: [],
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
      const order = round % 2
        ? ["unsandboxed", "insecure", "secure"] as const
        : ["secure", "insecure", "unsandboxed"] as const;
      for (const what of ["xargs", ...order] as const) {
        const r = what === "xargs"
          ? await runXargs(dir, chunks, workers * slots)
          : await runDsys(dir, clusterOpts[what], chunks, workers, slots);
        runs[what].push(r);
        console.error(
          `  e2e bench: round ${round + 1} ${what}: ${(chunks / r.secs).toFixed(0)} chunks/s, ` +
            `${(r.cpuMs / chunks).toFixed(2)} CPU ms/chunk`,
        );
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const rate = (k: keyof typeof runs) => median(runs[k].map((r) => chunks / r.secs));
  const cpu = (k: keyof typeof runs) => median(runs[k].map((r) => r.cpuMs / chunks));
  const d = rate("secure"), b = rate("xargs"), i = rate("insecure"), u = rate("unsandboxed");
  const dc = cpu("secure"), bc = cpu("xargs"), ic = cpu("insecure"), uc = cpu("unsandboxed");
  return [{
    name: `end-to-end ${chunks} trivial chunks, ${workers}x${slots} slots`,
    dsys: d,
    baseline: b,
    unit: "chunks/s",
    ratio: d / b,
    goal: ">= 0.5x xargs",
  }, {
    name: `end-to-end CPU per chunk, all processes (programs included)`,
    dsys: dc,
    baseline: bc,
    unit: "ms/chunk",
    ratio: bc / dc,
    goal: "lower is better",
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
  console.log(markdownTable(rows, "xargs -P"));
}
