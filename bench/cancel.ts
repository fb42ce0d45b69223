/**
 * Cancel latency: from `dsys cancel` (the client's call) to the last process of the job's running
 * chunks gone, over N trials on a local cluster (secure, sandboxed workers). Each chunk leaves a
 * background child, one in a new session, and waits itself, as in tests/job_controls_test.ts.
 *
 * Baseline, in the same run: the same process shapes started directly on the host and killed by
 * pid (what a supervisor that already knows every pid does), from the kill to the last gone.
 *
 * `deno run -A bench/cancel.ts [--trials 20]`; under `deno task bench`,
 * DSYS_BENCH_CANCEL_TRIALS sets the same.
 * @module
 */
import { parseArgs } from "node:util";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import type { BenchRow } from "./types.ts";

/** Host pids whose command line is `sleep SECONDS`. */
function sleepers(seconds: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
      if (argv[0].endsWith("sleep") && argv[1] === String(seconds)) out.push(Number(e.name));
    } catch { /* gone meanwhile */ }
  }
  return out;
}

/** Polls `cond` every 5 ms until it holds; throws after `ms`. */
async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`cancel bench: no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Runs the benchmark; rows: median and max latency, dsys vs killing the pids directly. */
export async function runCancelBench(
  opts: { trials?: number; log?: (l: string) => void } = {},
): Promise<BenchRow[]> {
  const trials = opts.trials ?? Number(Deno.env.get("DSYS_BENCH_CANCEL_TRIALS") ?? "20");
  const log = opts.log ?? ((l: string) => console.error(l));
  const chunks = 4;
  const cluster = await LocalCluster.start({ workers: 2, slotsPerWorker: 2 });
  const client = new DsysClient(cluster.info, { deadlineMs: 60_000 });
  const dsys: number[] = [];
  const direct: number[] = [];
  try {
    for (let t = 0; t < trials; t++) {
      const marker = 70_000 + t * 7 + Math.floor(Math.random() * 7);
      const job = await client.submit({
        program: new TextEncoder().encode(
          `#!/bin/sh\nsleep ${marker} &\nsetsid sleep ${marker} &\nexec sleep ${marker}\n`,
        ),
        programName: "forever.sh",
        argument: "",
        chunks,
        inputs: [],
        timeLimitMs: 3_600_000,
      });
      await until("running chunks", () => sleepers(marker).length >= 3 * chunks, 60_000);
      const t0 = performance.now();
      await client.cancel(job);
      await until("end of the chunks' processes", () => sleepers(marker).length === 0, 30_000);
      dsys.push(performance.now() - t0);

      const base = marker + 100_000;
      const shells = Array.from({ length: chunks }, () =>
        new Deno.Command("sh", {
          args: ["-c", `sleep ${base} & setsid sleep ${base} & exec sleep ${base}`],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn());
      await until("baseline processes", () => sleepers(base).length >= 3 * chunks, 10_000);
      const t1 = performance.now();
      for (const pid of sleepers(base)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      await Promise.all(shells.map((s) => s.status));
      await until("end of the baseline processes", () => sleepers(base).length === 0, 10_000);
      direct.push(performance.now() - t1);
      log(
        `cancel trial ${t + 1}/${trials}: dsys ${dsys.at(-1)!.toFixed(0)} ms, direct ${
          direct.at(-1)!.toFixed(1)
        } ms`,
      );
    }
  } finally {
    await client.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
  }
  const row = (name: string, d: number, b: number): BenchRow => ({
    name,
    dsys: d,
    baseline: b,
    unit: "ms",
    ratio: b / d,
    goal: name.startsWith("median") ? "dsys <= 1,000 ms" : "info",
  });
  return [
    row(
      `median cancel latency, ${chunks} running chunks (${trials} trials)`,
      median(dsys),
      median(direct),
    ),
    row(`max cancel latency (${trials} trials)`, Math.max(...dsys), Math.max(...direct)),
  ];
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { trials: { type: "string" } } });
  const rows = await runCancelBench({ trials: values.trials ? Number(values.trials) : undefined });
  for (const r of rows) {
    console.log(`${r.name}: dsys ${r.dsys.toFixed(0)} ms, direct kill ${r.baseline.toFixed(1)} ms`);
  }
}
