/**
 * Balancer scale: a real balancer process (`roles/balancer/cli.ts`, lone, `--insecure` so that
 * thousands of simulated workers need no keys) and N simulated workers in this process (one
 * DEALER each, with its own routing id) that behave like roles/worker/main.ts towards the
 * balancer: register, heartbeat at the interval each reply tells them (roles/worker/heartbeat.ts),
 * their own 500 ms when a request fails, register again on NOT_FOUND, ack every worker_request
 * and report it finished at once. Half of them hold the job's input file. Per point:
 *
 * - **idle**: the balancer's CPU per second (from /proc) while every worker heartbeats;
 * - **memory**: its RSS; per worker = the growth over the smallest point;
 * - **placement**: a job of CHUNKS chunks (input: the file half the workers hold) dispatched as
 *   a master would, run to the end; CPU per chunk = (CPU during the job - idle rate × its
 *   duration) / CHUNKS;
 * - **failover**: the balancer is killed (SIGKILL) and a new one started on the same port
 *   (what a lone balancer's restart, or a standby that lost its state, looks like to workers);
 *   time from its `listening` line until every worker is registered again.
 *
 * Ratios are against the smallest point (4 workers) in the same run; the goals (issue 13): CPU
 * per chunk within 1.5x of 4 workers at 10,000; idle <= 100 ms/s at 10,000; re-registration of
 * 10,000 <= 10 s.
 *
 * `deno run -A bench/scale.ts [--workers 4,1000,4000,10000] [--seconds 6]`; under `deno task
 * bench`, DSYS_BENCH_SCALE_WORKERS and DSYS_BENCH_SCALE_SECONDS set the same. 10,000 DEALERs
 * need ~2 fds each here and ~1 in the balancer: the open-file limit is raised with prlimit(1)
 * when it is lower (root, or a hard limit that allows it).
 * @module
 */
import { parseArgs } from "node:util";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { heartbeatPeriod } from "../roles/worker/heartbeat.ts";
import { ChunkState, ErrorCode, type Message, MessageType, randomUuid } from "../wire/mod.ts";
import { ChunkScheduler } from "../roles/balancer/chunk_scheduler.ts";
import type { BenchRow } from "./types.ts";

/** Chunks of the placement job (at 10,000 workers × 4 slots: all in the first wave). */
const CHUNKS = 4000;
const SLOTS = 4;
/** The simulated workers' own heartbeat interval (the real worker's default). */
const OWN_HEARTBEAT_MS = 500;
/** The heartbeat budget of the extra point (the balancer's default is 2,000/s). */
const LOW_BUDGET = 1000;

/** utime + stime of a process, ms. */
function cpuMs(pid: number): number {
  const f = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) * 10; // clock ticks of 10 ms (USER_HZ 100)
}

/** CPU ms per thread (tid/name) of a process. */
function threads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const f = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
      const name = f.slice(f.indexOf("(") + 1, f.lastIndexOf(")"));
      const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
      out.set(`${e.name}/${name}`, (Number(rest[11]) + Number(rest[12])) * 10);
    } catch { /* gone */ }
  }
  return out;
}

/** Resident set of a process, MiB. */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The 1-minute load average. */
function load(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
}

interface Balancer {
  child: Deno.ChildProcess;
  endpoint: string;
  stop(): Promise<void>;
}

async function startBalancer(listen: string, dir: string, budget?: number): Promise<Balancer> {
  const cli = new URL("../roles/balancer/cli.ts", import.meta.url).pathname;
  // DSYS_BENCH_SCALE_PROF=DIR: the balancers write V8 CPU profiles there (stopped by SIGTERM
  // instead of SIGKILL then, so that they do).
  const prof = Deno.env.get("DSYS_BENCH_SCALE_PROF");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(prof ? ["--cpu-prof", `--cpu-prof-dir=${prof}`] : []),
      cli,
      "--listen",
      listen,
      "--data",
      dir,
      "--insecure",
      ...(budget !== undefined ? ["--max-heartbeats-per-sec", String(budget)] : []),
    ],
    stdin: "null",
    stdout: "piped",
    // DSYS_BENCH_SCALE_LOG=FILE: the balancers' logs (warnings and errors) go there.
    stderr: Deno.env.get("DSYS_BENCH_SCALE_LOG") ? "piped" : "null",
    env: { DSYS_LOG: "warn" },
  }).spawn();
  const logFile = Deno.env.get("DSYS_BENCH_SCALE_LOG");
  if (logFile) {
    const f = Deno.openSync(logFile, { create: true, append: true });
    child.stderr.pipeTo(f.writable).catch(() => {});
  }
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
  // Keep draining stdout so the balancer never blocks on a full pipe.
  const drain = (async () => {
    while (!(await reader.read().catch(() => ({ done: true }))).done) { /* discard */ }
  })();
  return {
    child,
    endpoint,
    async stop() {
      try {
        child.kill(prof ? "SIGTERM" : "SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await reader.cancel().catch(() => {});
      await drain;
    },
  };
}

/** A simulated worker: the balancer-facing loop of roles/worker/main.ts, nothing else. */
class SimWorker {
  readonly id = randomUuid();
  readonly c: RpcClient;
  registered = false;
  registrations = 0;
  beats = 0;
  #stop = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #running = 0;

  constructor(endpoint: string, readonly files: Uint8Array[], private onFinish: () => void) {
    this.c = new RpcClient(endpoint, {
      node: this.id,
      routingId: this.id,
      timeoutMs: 2000,
      onRequest: (m) => this.#push(m),
    });
  }

  /** A push can arrive before the reply that freed its slot has been handled: clamp. */
  #free(): number {
    return Math.max(0, SLOTS - this.#running);
  }

  #push(m: Message): Message | null {
    if (m.type !== MessageType.WorkerRequest) return null;
    this.#running++;
    // Finishes at once (after the ack is on its way), as an instant chunk would; re-sent
    // until acknowledged, as the real worker does.
    const report = {
      type: MessageType.ChunkFinished,
      node: this.id,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: m.attempt,
      state: ChunkState.Succeeded,
    } as const;
    const send = (): void => {
      this.c.request(report).then(() => {
        this.#running--;
        this.onFinish();
      }, (e) => {
        if (this.#stop) return;
        if (e instanceof RpcError && e.code === ErrorCode.Unavailable) setTimeout(send, 100);
        else this.#running--;
      });
    };
    queueMicrotask(send);
    return {
      type: MessageType.WorkerRequestAck,
      node: this.id,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: m.attempt,
      accepted: true,
      reason: "",
    };
  }

  async register(): Promise<number> {
    const r = await this.c.request({
      type: MessageType.WorkerRegister,
      node: this.id,
      slots: SLOTS,
      freeSlots: this.#free(),
      files: this.files,
      label: "sim",
    });
    this.registered = true;
    this.registrations++;
    return r.type === MessageType.Ok ? r.value : 0;
  }

  /** Heartbeats from now on, first after `delayMs` (spread, as independent workers are). */
  start(delayMs: number, toldMs: number): void {
    this.#loop = (async () => {
      let told: number | null = toldMs;
      await this.#sleep(delayMs);
      while (!this.#stop) {
        try {
          if (!this.registered) told = await this.register();
          else {
            const r = await this.c.request({
              type: MessageType.WorkerHeartbeat,
              node: this.id,
              slots: SLOTS,
              freeSlots: this.#free(),
              added: [],
              evicted: [],
            });
            this.beats++;
            told = r.type === MessageType.Ok ? r.value : 0;
          }
        } catch (e) {
          told = null;
          const timeout = e instanceof RpcError && e.code === ErrorCode.Unavailable;
          if (!timeout && this.registered) {
            this.registered = false; // NOT_FOUND: the balancer does not know us
            continue;
          }
        }
        await this.#sleep(heartbeatPeriod(OWN_HEARTBEAT_MS, told));
      }
    })();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.#wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  async close(): Promise<void> {
    this.#stop = true;
    this.#wake?.();
    await this.#loop;
    await this.c.close();
  }
}

/** One measured point. */
interface Point {
  workers: number;
  /** Heartbeat interval the balancer told, ms. */
  intervalMs: number;
  idleCpuPerSec: number;
  beatsPerSec: number;
  rssMiB: number;
  cpuPerChunkMs: number;
  jobSeconds: number;
  /** Seconds from the new balancer's listening line to every worker registered. */
  reregisterSeconds: number;
  /** Seconds until half of them were. */
  reregisterHalfSeconds: number;
  /** How many did within the deadline (120 s). */
  reregistered: number;
  load: string;
  /** --max-heartbeats-per-sec given to the balancer (undefined: its default). */
  budget?: number;
  /** Idle CPU ms/s by thread kind (js, zmq-io, pool, v8, other). */
  byThread: Record<string, number>;
}

async function waitUntil(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`scale: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Simulated workers per host process: 2 fds each (socket + mailbox) under a 20,000 limit. */
const PER_HOST = 4000;

/** What a host process reports (one JSON line every 100 ms, and on each command done). */
interface HostStats {
  registered: number;
  beats: number;
  finished: number;
  /** Workers that registered again since the last `mark`. */
  again: number;
  /** The interval the last registration was told (after `register`). */
  told?: number;
}

/** A process running simulated workers (this file with --host), driven over stdin/stdout. */
class Host {
  stats: HostStats = { registered: 0, beats: 0, finished: 0, again: 0 };
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #done: Promise<void>;
  #acks = 0;
  #exited = false;

  constructor(endpoint: string, count: number, first: number, file: string) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(import.meta.url).pathname,
        "--host",
        endpoint,
        "--count",
        String(count),
        "--first",
        String(first),
        "--file",
        file,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#done = (async () => {
      let buf = "";
      for await (const t of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += t;
        let k;
        while ((k = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, k);
          buf = buf.slice(k + 1);
          const m = JSON.parse(line) as HostStats & { ack?: boolean };
          if (m.ack) this.#acks++;
          this.stats = m;
        }
      }
      this.#exited = true;
    })();
  }

  /** Sends a command and waits until the host says it is done. */
  async command(cmd: Record<string, unknown>, timeoutMs = 300_000): Promise<HostStats> {
    const want = this.#acks + 1;
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
    await waitUntil(`host command ${cmd.cmd}`, () => {
      if (this.#acks < want && this.#exited) throw new Error("scale: a worker host exited");
      return this.#acks >= want;
    }, timeoutMs);
    return this.stats;
  }

  async close(): Promise<void> {
    await this.command({ cmd: "quit" }, 60_000).catch(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* already gone */ }
    });
    await this.#writer.close().catch(() => {});
    await this.#child.status;
    await this.#done.catch(() => {});
  }
}

/** The --host side: `count` simulated workers, every other one (by global index) holding `file`. */
async function runHost(endpoint: string, count: number, first: number, fileHex: string) {
  const file = Uint8Array.from(fileHex.match(/../g)!.map((h) => parseInt(h, 16)));
  let finished = 0;
  const sims = Array.from(
    { length: count },
    (_, i) => new SimWorker(endpoint, (first + i) % 2 === 0 ? [file] : [], () => finished++),
  );
  let mark = sims.map(() => 0);
  let told = 0;
  const stats = (extra: Record<string, unknown> = {}) =>
    console.log(JSON.stringify({
      registered: sims.reduce((n, s) => n + (s.registrations > 0 ? 1 : 0), 0),
      beats: sims.reduce((n, s) => n + s.beats, 0),
      finished,
      again: sims.reduce((n, s, i) => n + (s.registrations > mark[i] ? 1 : 0), 0),
      told,
      ...extra,
    }));
  const timer = setInterval(() => stats(), 100);
  let buf = "";
  for await (const t of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buf += t;
    let k;
    while ((k = buf.indexOf("\n")) >= 0) {
      const cmd = JSON.parse(buf.slice(0, k));
      buf = buf.slice(k + 1);
      if (cmd.cmd === "register") {
        // A registration that times out on a loaded machine is sent again, as a worker does.
        const once = async (s: SimWorker): Promise<number> => {
          for (let tries = 1;; tries++) {
            try {
              return await s.register();
            } catch (e) {
              if (tries >= 30) throw e;
            }
          }
        };
        for (let i = 0; i < sims.length; i += 500) {
          const r = await Promise.all(
            sims.slice(i, i + 500).map(async (s, k) => {
              const t = await once(s);
              // Heartbeats start right away, as a worker's do, spread over its period.
              s.start((((first + i + k) % 997) / 997) * heartbeatPeriod(OWN_HEARTBEAT_MS, t), t);
              return t;
            }),
          );
          told = r[r.length - 1];
        }
      } else if (cmd.cmd === "mark") {
        mark = sims.map((s) => s.registrations);
      } else if (cmd.cmd === "quit") {
        clearInterval(timer);
        await Promise.all(sims.map((s) => s.close()));
        stats({ ack: true });
        return;
      }
      stats({ ack: true });
    }
  }
  clearInterval(timer);
  await Promise.all(sims.map((s) => s.close()));
}

async function point(workers: number, seconds: number, budget?: number): Promise<Point> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-scale-" });
  let bal = await startBalancer("tcp://127.0.0.1:0", dir, budget);
  const endpoint = bal.endpoint;
  const file = randomUuid();
  const fileHex = [...file].map((b) => b.toString(16).padStart(2, "0")).join("");
  const hosts: Host[] = [];
  for (let first = 0; first < workers; first += PER_HOST) {
    hosts.push(new Host(endpoint, Math.min(PER_HOST, workers - first), first, fileHex));
  }
  const sum = (f: (s: HostStats) => number) => hosts.reduce((n, h) => n + f(h.stats), 0);
  const master = new RpcClient(endpoint, { node: randomUuid(), timeoutMs: 30_000 });
  try {
    // One host after the other: the last registration is told the full cluster's interval.
    let told = 0;
    for (const h of hosts) told = (await h.command({ cmd: "register" })).told ?? 0;
    const period = heartbeatPeriod(OWN_HEARTBEAT_MS, told);
    await new Promise((r) => setTimeout(r, period + 1000)); // settle: everyone told the same
    const th0 = threads(bal.child.pid);
    const b0 = sum((s) => s.beats), c0 = cpuMs(bal.child.pid), t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const b1 = sum((s) => s.beats), c1 = cpuMs(bal.child.pid), t1 = performance.now();
    // Where the idle CPU goes, by thread kind: the JS thread, libzmq's I/O thread, Deno's
    // blocking pool (the reactor's waits), V8's helpers (GC).
    const byThread: Record<string, number> = {};
    for (const [k, v] of threads(bal.child.pid)) {
      const name = k.slice(k.indexOf("/") + 1);
      const kind = name.startsWith("ZMQ")
        ? "zmq-io"
        : name.startsWith("tokio")
        ? "pool"
        : name.startsWith("V8")
        ? "v8"
        : name === "deno"
        ? "js"
        : "other";
      byThread[kind] = (byThread[kind] ?? 0) + (v - (th0.get(k) ?? 0));
    }
    const idleSecs = (t1 - t0) / 1000;
    const idleCpuPerSec = (c1 - c0) / idleSecs;
    for (const k of Object.keys(byThread)) byThread[k] /= idleSecs;
    const rss = rssMiB(bal.child.pid);

    // Placement: one job, as the master dispatches it.
    const f0 = sum((s) => s.finished);
    const c2 = cpuMs(bal.child.pid), t2 = performance.now();
    await master.request({
      type: MessageType.JobDispatch,
      node: master.node,
      job: randomUuid(),
      numChunks: CHUNKS,
      timeLimitMs: 0,
      programId: randomUuid(),
      programSize: 10,
      argument: new Uint8Array(0),
      inputFiles: [{ id: file, size: 1 << 20, name: "in" }],
      chunks: Array.from({ length: CHUNKS }, (_, i) => ({ chunkIndex: i, attempt: 1 })),
    });
    await waitUntil(
      "the job's chunks to finish",
      () => sum((s) => s.finished) - f0 >= CHUNKS,
      300_000,
    );
    const c3 = cpuMs(bal.child.pid), t3 = performance.now();
    const jobSeconds = (t3 - t2) / 1000;
    const cpuPerChunkMs = Math.max(0, c3 - c2 - idleCpuPerSec * jobSeconds) / CHUNKS;

    // Failover: a new balancer, same port, knows nobody. Each worker registers again once a
    // heartbeat is answered NOT_FOUND, like the real worker.
    const port = new URL(endpoint.replace("tcp://", "http://")).port;
    await Promise.all(hosts.map((h) => h.command({ cmd: "mark" })));
    await bal.stop();
    bal = await startBalancer(`tcp://127.0.0.1:${port}`, dir, budget);
    const t4 = performance.now();
    let half = 0;
    // Not all within the deadline is a result too (reported as the deadline and how many).
    const again = await waitUntil("every worker to register again", () => {
      const n = sum((s) => s.again);
      if (!half && n >= workers / 2) half = performance.now();
      return n >= workers;
    }, 120_000).then(() => workers, () => sum((s) => s.again));
    const t5 = performance.now();
    return {
      workers,
      intervalMs: period,
      idleCpuPerSec,
      beatsPerSec: (b1 - b0) / idleSecs,
      rssMiB: rss,
      cpuPerChunkMs,
      jobSeconds,
      reregisterSeconds: (t5 - t4) / 1000,
      reregisterHalfSeconds: half ? (half - t4) / 1000 : NaN,
      reregistered: again,
      load: load(),
      budget,
      byThread,
    };
  } finally {
    await Promise.all(hosts.map((h) => h.close()));
    await master.close();
    await bal.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * The scheduler alone (no I/O): ms of this process's time per placed chunk for the same job on
 * `workers` workers (half hold the input), placed and finished to the end, best of 3.
 */
function schedulerPerChunkMs(workers: number): number {
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const s = new ChunkScheduler({ deadAfterMs: 1e9 });
    const file = randomUuid();
    for (let i = 0; i < workers; i++) {
      s.register(randomUuid(), SLOTS, SLOTS, i % 2 === 0 ? [file] : [], "sim", 0);
    }
    const job = {
      job: randomUuid(),
      numChunks: CHUNKS,
      timeLimitMs: 0,
      programId: randomUuid(),
      programSize: 10,
      argument: new Uint8Array(0),
      inputFiles: [{ id: file, size: 1 << 20, name: "in" }],
    };
    const t0 = performance.now();
    s.dispatch(job, Array.from({ length: CHUNKS }, (_, i) => ({ chunkIndex: i, attempt: 1 })), 0);
    let done = 0;
    for (let now = 1; done < CHUNKS; now++) {
      const out = s.assign(now);
      if (out.length === 0) throw new Error("scale: the scheduler placed nothing");
      for (const a of out) {
        s.finished(a.worker.id, job.job, a.chunkIndex, a.attempt, ChunkState.Succeeded, now);
        done++;
      }
    }
    best = Math.min(best, (performance.now() - t0) / CHUNKS);
  }
  return best;
}

/** Runs the benchmark; rows per worker count, against the smallest count in the same run. */
export async function runScaleBench(
  opts: { workers?: number[]; seconds?: number; log?: (l: string) => void } = {},
): Promise<BenchRow[]> {
  const env = Deno.env.get("DSYS_BENCH_SCALE_WORKERS");
  const counts = opts.workers ?? (env ? env.split(",").map(Number) : [4, 1000, 4000, 10_000]);
  const seconds = opts.seconds ?? Number(Deno.env.get("DSYS_BENCH_SCALE_SECONDS") ?? "6");
  const log = opts.log ?? ((l: string) => console.error(l));
  const points: Point[] = [];
  // The largest count once more with half the default heartbeat budget: the knob trades idle
  // CPU against detection and re-registration time (docs/scale.md).
  const runs: [number, number | undefined][] = counts.map((n) => [n, undefined]);
  if (counts.length > 1) runs.push([Math.max(...counts), LOW_BUDGET]);
  for (const [n, budget] of runs) {
    const p = await point(n, seconds, budget);
    points.push(p);
    log(
      `scale: ${n} workers${budget ? ` (--max-heartbeats-per-sec ${budget})` : ""} ` +
        `(load ${p.load}): heartbeat every ${p.intervalMs} ms, idle ` +
        `${p.idleCpuPerSec.toFixed(0)} ms/s CPU at ${p.beatsPerSec.toFixed(0)} hb/s, RSS ` +
        `${p.rssMiB.toFixed(0)} MiB, ${p.cpuPerChunkMs.toFixed(3)} ms CPU per chunk ` +
        `(${CHUNKS} in ${p.jobSeconds.toFixed(1)} s), re-registered after a restart in ` +
        `${p.reregisterSeconds.toFixed(1)} s (${p.reregistered} of them; half in ` +
        `${p.reregisterHalfSeconds.toFixed(1)} s); ` +
        `idle CPU by thread (ms/s): ${
          Object.entries(p.byThread).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ")
        }`,
    );
  }
  const base = points[0];
  const rows: BenchRow[] = [];
  const schedBase = schedulerPerChunkMs(base.workers);
  for (const n of counts.slice(1)) {
    const ms = schedulerPerChunkMs(n);
    log(`scale: scheduler alone, ${n} workers: ${(ms * 1000).toFixed(1)} us per chunk`);
    rows.push({
      name: `scheduler alone (no I/O): time per placed chunk, ${
        n.toLocaleString("en-US")
      } workers (vs ${base.workers})`,
      dsys: ms * 1000,
      baseline: schedBase * 1000,
      unit: "us",
      ratio: schedBase / Math.max(1e-9, ms),
      goal: ">= 0.67x (flat within 1.5x)",
    });
  }
  for (const p of points.slice(1)) {
    const n = p.workers.toLocaleString("en-US") +
      (p.budget ? ` at --max-heartbeats-per-sec ${p.budget}` : "");
    rows.push({
      name: `balancer CPU per placed chunk, ${n} workers (vs ${base.workers})`,
      dsys: p.cpuPerChunkMs,
      baseline: base.cpuPerChunkMs,
      unit: "ms",
      ratio: base.cpuPerChunkMs / Math.max(1e-6, p.cpuPerChunkMs),
      goal: ">= 0.67x (flat within 1.5x)",
    });
    rows.push({
      name: `balancer CPU while idle, ${n} workers (heartbeat every ${p.intervalMs} ms, ` +
        `${p.beatsPerSec.toFixed(0)}/s)`,
      dsys: p.idleCpuPerSec,
      baseline: 100,
      unit: "ms CPU/s",
      ratio: 100 / Math.max(1, p.idleCpuPerSec),
      goal: ">= 1.0x (<= 100 ms/s, 10% of a core)",
    });
    rows.push({
      name: `all ${n} workers registered again after a balancer restart` +
        (p.reregistered < p.workers ? ` (only ${p.reregistered} within 120 s)` : ""),
      dsys: p.reregisterSeconds,
      baseline: 10,
      unit: "s",
      ratio: 10 / Math.max(0.001, p.reregisterSeconds),
      goal: ">= 1.0x (<= 10 s)",
    });
    rows.push({
      name: `balancer memory per worker, ${n} workers (RSS ${p.rssMiB.toFixed(0)} MiB; ` +
        `baseline: the RSS with ${base.workers})`,
      dsys: ((p.rssMiB - base.rssMiB) * 1024) / (p.workers - base.workers),
      baseline: base.rssMiB * 1024,
      unit: "KiB",
      ratio: 1,
      goal: "stated",
    });
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      workers: { type: "string" },
      seconds: { type: "string" },
      // Internal: run simulated workers for a parent bench process.
      host: { type: "string" },
      count: { type: "string" },
      first: { type: "string" },
      file: { type: "string" },
    },
  });
  if (values.host) {
    await runHost(values.host, Number(values.count), Number(values.first), values.file!);
    Deno.exit(0);
  }
  const rows = await runScaleBench({
    workers: values.workers?.split(",").map(Number),
    seconds: values.seconds ? Number(values.seconds) : undefined,
  });
  for (const r of rows) {
    console.log(`${r.name}: ${r.dsys.toFixed(3)} ${r.unit} (baseline ${r.baseline.toFixed(3)})`);
  }
}
