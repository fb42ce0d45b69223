/**
 * End-to-end throughput: N chunks of a trivial program through a local cluster vs `xargs -P S`
 * running the same per-chunk command line directly, S = total worker slots, in the same run.
 *
 * Also the CPU time per chunk of both (all processes, the programs included), read from
 * /proc: on a shared, loaded machine throughput swings with the neighbours' load, while the
 * CPU a chunk costs is what bounds throughput on a busy host and varies much less.
 */
import { LocalCluster } from "../client/local_cluster.ts";
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

/** Runs the end-to-end benchmark. */
export async function runE2eBench(chunks = 2000, workers = 4, slots = 2): Promise<BenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-bench-e2e-" });
  await Deno.writeTextFile(`${dir}/prog.sh`, PROGRAM);
  await Deno.chmod(`${dir}/prog.sh`, 0o755);
  await Deno.mkdir(`${dir}/xargs-out`);
  // Baseline: the same program per chunk with its environment and stdout captured to a file.
  const xargsCpu0 = cpuMs("self");
  const t0 = performance.now();
  const xargs = await new Deno.Command("sh", {
    args: [
      "-c",
      `seq 0 ${chunks - 1} | xargs -P ${workers * slots} -I{} sh -c ` +
      `'DSYS_CHUNK_INDEX={} DSYS_CHUNK_COUNT=${chunks} ${dir}/prog.sh > ${dir}/xargs-out/{}'`,
    ],
  }).output();
  const xargsSecs = (performance.now() - t0) / 1000;
  // Our own CPU is idle while we wait: the delta is xargs and every process it waited for.
  const xargsCpuMs = cpuMs("self") - xargsCpu0;
  if (!xargs.success) {
    throw new Error(`xargs baseline failed: ${new TextDecoder().decode(xargs.stderr)}`);
  }

  const cluster = await LocalCluster.start({
    workers,
    slotsPerWorker: slots,
    dataDir: `${dir}/cluster`,
  });
  const client = new DsysClient(cluster.info);
  try {
    const pids = [...cluster.procs.values()].map((p) => p.child.pid);
    const clusterCpu = () => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
    const cpu0 = clusterCpu();
    const t1 = performance.now();
    const job = await client.submit({
      program: new TextEncoder().encode(PROGRAM),
      programName: "prog.sh",
      argument: "",
      chunks,
      inputs: [],
      timeLimitMs: 60_000,
    });
    const s = await client.waitForJob(job, () => {}, 100);
    const dsysSecs = (performance.now() - t1) / 1000;
    // Cluster nodes and the programs their workers reaped; not this client process.
    const dsysCpuMs = clusterCpu() - cpu0;
    if (s.state !== ChunkState.Succeeded) throw new Error(`bench job failed: ${s.failed} chunks`);
    const d = chunks / dsysSecs, b = chunks / xargsSecs;
    return [{
      name: `end-to-end ${chunks} trivial chunks, ${workers}x${slots} slots`,
      dsys: d,
      baseline: b,
      unit: "chunks/s",
      ratio: d / b,
      goal: ">= 0.5x xargs",
    }, {
      name: `end-to-end CPU per chunk, all processes (programs included)`,
      dsys: dsysCpuMs / chunks,
      baseline: xargsCpuMs / chunks,
      unit: "ms/chunk",
      ratio: xargsCpuMs / dsysCpuMs,
      goal: "lower is better",
    }];
  } finally {
    await client.close();
    await cluster.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  console.log(markdownTable(await runE2eBench(), "xargs -P"));
}
