/**
 * Balancer scale: a real balancer process (`roles/balancer/cli.ts`, lone, `--insecure` so that
 * thousands of simulated workers need no keys) and N simulated workers in this process (one
 * DEALER each, with its own routing id), registering and then heartbeating every 500 ms as
 * workers do. Measured: the balancer's CPU time per second while the cluster is idle, and per
 * heartbeat, from /proc. The baseline is the same measure with 16 workers in the same run: the
 * cost that does not grow with the cluster.
 *
 * `deno run -A bench/scale.ts [--workers 16,1000,4000] [--seconds 10]`; under `deno task bench`,
 * DSYS_BENCH_SCALE_WORKERS and DSYS_BENCH_SCALE_SECONDS set the same.
 * @module
 */
import { parseArgs } from "node:util";
import { RpcClient } from "../lib/rpc.ts";
import { MessageType, randomUuid } from "../wire/mod.ts";
import type { BenchRow } from "./types.ts";

/** utime + stime of a process, ms. */
function cpuMs(pid: number): number {
  const f = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) * 10; // clock ticks of 10 ms (USER_HZ 100)
}

/** One measured point: `workers` simulated workers, idle, for `seconds`. */
async function point(workers: number, seconds: number) {
  const dir = await Deno.makeTempDir({ prefix: "dsys-scale-" });
  const cli = new URL("../roles/balancer/cli.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "--listen", "tcp://127.0.0.1:0", "--data", dir, "--insecure"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let endpoint = "";
  let buf = "";
  while (!endpoint) {
    const { value, done } = await reader.read();
    if (done) throw new Error("balancer exited before listening");
    buf += value;
    const m = /"endpoint":"([^"]+)"/.exec(buf);
    if (m) endpoint = m[1];
  }
  const clients = Array.from({ length: workers }, () => {
    const id = randomUuid();
    return { id, c: new RpcClient(endpoint, { node: id, routingId: id, timeoutMs: 30_000 }) };
  });
  try {
    for (let i = 0; i < clients.length; i += 200) {
      await Promise.all(
        clients.slice(i, i + 200).map(({ id, c }) =>
          c.request({
            type: MessageType.WorkerRegister,
            node: id,
            slots: 4,
            freeSlots: 4,
            files: [],
            label: "sim",
          })
        ),
      );
    }
    let beats = 0;
    let stop = false;
    const loops = clients.map(async ({ id, c }, i) => {
      // Spread the heartbeats over the period, as independent workers would be.
      await new Promise((r) => setTimeout(r, (i * 500) / workers));
      while (!stop) {
        await c.request({
          type: MessageType.WorkerHeartbeat,
          node: id,
          slots: 4,
          freeSlots: 4,
          added: [],
          evicted: [],
        });
        beats++;
        await new Promise((r) => setTimeout(r, 500));
      }
    });
    await new Promise((r) => setTimeout(r, 2000)); // settle
    const b0 = beats, c0 = cpuMs(child.pid), t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const b1 = beats, c1 = cpuMs(child.pid), t1 = performance.now();
    stop = true;
    await Promise.all(loops);
    const secs = (t1 - t0) / 1000;
    return { cpuPerSec: (c1 - c0) / secs, beatsPerSec: (b1 - b0) / secs };
  } finally {
    await Promise.all(clients.map(({ c }) => c.close()));
    child.kill("SIGTERM");
    await child.status;
    await reader.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Runs the benchmark; rows per worker count, against 16 workers in the same run. */
export async function runScaleBench(
  opts: { workers?: number[]; seconds?: number; log?: (l: string) => void } = {},
): Promise<BenchRow[]> {
  const env = Deno.env.get("DSYS_BENCH_SCALE_WORKERS");
  const counts = opts.workers ?? (env ? env.split(",").map(Number) : [1000, 4000]);
  const seconds = opts.seconds ?? Number(Deno.env.get("DSYS_BENCH_SCALE_SECONDS") ?? "10");
  const log = opts.log ?? ((l: string) => console.error(l));
  const base = await point(16, seconds);
  log(
    `scale: 16 workers: ${base.cpuPerSec.toFixed(0)} ms/s CPU, ${base.beatsPerSec.toFixed(0)} hb/s`,
  );
  const rows: BenchRow[] = [];
  for (const n of counts) {
    const p = await point(n, seconds);
    log(
      `scale: ${n} workers: ${p.cpuPerSec.toFixed(0)} ms/s CPU, ${p.beatsPerSec.toFixed(0)} hb/s`,
    );
    rows.push({
      name: `balancer CPU while idle, ${n} workers (${p.beatsPerSec.toFixed(0)} heartbeats/s)`,
      dsys: p.cpuPerSec,
      baseline: base.cpuPerSec,
      unit: "ms CPU/s",
      ratio: base.cpuPerSec / Math.max(1, p.cpuPerSec),
      goal: "<= 100 ms/s at 10,000 workers",
    });
    rows.push({
      name: `balancer CPU per heartbeat, ${n} workers`,
      dsys: (p.cpuPerSec / p.beatsPerSec) * 1000,
      baseline: (base.cpuPerSec / base.beatsPerSec) * 1000,
      unit: "us",
      ratio: (base.cpuPerSec / base.beatsPerSec) / (p.cpuPerSec / p.beatsPerSec),
      goal: "flat (within 1.5x of 16 workers)",
    });
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { workers: { type: "string" }, seconds: { type: "string" } },
  });
  const rows = await runScaleBench({
    workers: values.workers?.split(",").map(Number),
    seconds: values.seconds ? Number(values.seconds) : undefined,
  });
  for (const r of rows) {
    console.log(`${r.name}: ${r.dsys.toFixed(1)} ${r.unit} (16 workers: ${r.baseline.toFixed(1)})`);
  }
}
