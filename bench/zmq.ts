/**
 * ZeroMQ benchmark: dsys's wire/zmq (Deno FFI) against Node.js + zeromq.js 6.8.0, same
 * machine, same run, same protocol, every client and peer in its own process on loopback TCP.
 *
 * - round trips/s: a DEALER sends 64 B and waits for the ROUTER peer's echo, one at a time;
 * - 64 B msgs/s: a DEALER pipelines 64-byte messages to a ROUTER sink (then one flush echo);
 * - 1 MiB MB/s: the same with 1 MiB messages.
 *
 * `deno run -A bench/zmq.ts` prints a markdown table; bench/main.ts calls runZmqBench().
 * The Node side (bench/node_zmq/) is npm-installed into bench/.node/ on first use.
 *
 * @module
 */

import process from "node:process";
import { Socket } from "../wire/zmq/mod.ts";
import type { BenchRow } from "./types.ts";

/** One benchmark result (shared shape of every dsys benchmark). */
export type { BenchRow };

const SELF = new URL(import.meta.url).pathname;
const NODE_SRC = new URL("./node_zmq/", import.meta.url).pathname;
const NODE_DIR = new URL("./.node/", import.meta.url).pathname;
const NODE_SCRIPT = `${NODE_SRC}zmq_bench.cjs`;

// Protocol shared with bench/node_zmq/zmq_bench.cjs (first byte of the only frame).
const E = 0x45, S = 0x53, F = 0x46;

interface Measurement {
  ops: number;
  seconds: number;
  /** CPU seconds (user + system, all threads) the client process spent in the timed part. */
  cpu: number;
}

// ---- the dsys peer and client (run as subprocesses of the bench) ---------------------------

/** Socket options of the zero-copy variant (opt-in in dsys; zeromq.js does it by default). */
const ZERO_COPY = { zeroCopyRecvMin: 65536, zeroCopySendMin: 65536 };

async function peer(zeroCopy: boolean): Promise<void> {
  const router = new Socket("ROUTER", zeroCopy ? ZERO_COPY : {});
  console.log(`READY ${router.bind("tcp://127.0.0.1:*")}`);
  const done = new TextEncoder().encode("done");
  for await (const [id, body] of router) {
    const kind = body[0];
    if (kind === E) await router.send([id, body]);
    else if (kind === F) await router.send([id, done]);
  }
}

async function client(
  endpoint: string,
  test: string,
  n: number,
  size: number,
  zeroCopy: boolean,
): Promise<void> {
  const dealer = new Socket("DEALER", zeroCopy ? ZERO_COPY : {});
  dealer.connect(endpoint);
  const probe = new Uint8Array(64).fill(E);
  for (let i = 0; i < 200; i++) {
    await dealer.send(probe);
    await dealer.receive();
  }
  let seconds: number;
  const cpu0 = process.cpuUsage();
  if (test === "rt") {
    const msg = new Uint8Array(size).fill(E);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      await dealer.send(msg);
      await dealer.receive();
    }
    seconds = (performance.now() - t0) / 1000;
  } else {
    const msg = new Uint8Array(size).fill(S);
    const flush = new Uint8Array([F]);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await dealer.send(msg);
    await dealer.send(flush);
    await dealer.receive();
    seconds = (performance.now() - t0) / 1000;
  }
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({ ops: n, seconds, cpu: (cpu.user + cpu.system) / 1e6 }));
  dealer.close();
}

// ---- orchestration --------------------------------------------------------------------------

/** "dsys-zc" is dsys with the zero-copy socket options. */
type Impl = "dsys" | "dsys-zc" | "node";

function command(impl: Impl, args: string[], stdout: "piped" | "null"): Deno.ChildProcess {
  const [cmd, full] = impl === "node"
    ? ["node", [NODE_SCRIPT, ...args]]
    : [Deno.execPath(), ["run", "-A", SELF, ...args, ...(impl === "dsys-zc" ? ["zc"] : [])]];
  return new Deno.Command(cmd, {
    args: full,
    stdin: "null",
    stdout,
    stderr: "inherit",
    env: { NODE_PATH: `${NODE_DIR}node_modules` },
  }).spawn();
}

interface RunningPeer {
  endpoint: string;
  stop(): Promise<void>;
}

async function startPeer(impl: Impl): Promise<RunningPeer> {
  const child = command(impl, impl === "node" ? ["peer"] : ["--peer"], "piped");
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${impl} zmq bench peer exited before READY: ${text}`);
    text += value;
  }
  const [tag, endpoint] = text.split("\n")[0].split(" ");
  if (tag !== "READY") throw new Error(`${impl} zmq bench peer printed ${text}`);
  return {
    endpoint,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
    },
  };
}

async function runClient(
  impl: Impl,
  endpoint: string,
  test: string,
  n: number,
  size: number,
): Promise<Measurement> {
  const args = [endpoint, test, String(n), String(size)];
  const child = command(
    impl,
    impl === "node" ? ["client", ...args] : ["--client", ...args],
    "piped",
  );
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`${impl} zmq bench client ${test} failed: ${text}`);
  return JSON.parse(text.split("\n").at(-1)!) as Measurement;
}

/** Installs zeromq.js into bench/.node/ (gitignored) unless it is already there. */
async function ensureNodeBaseline(): Promise<void> {
  try {
    await Deno.stat(`${NODE_DIR}node_modules/zeromq/package.json`);
    return;
  } catch {
    // not installed yet
  }
  await Deno.mkdir(NODE_DIR, { recursive: true });
  await Deno.copyFile(`${NODE_SRC}package.json`, `${NODE_DIR}package.json`);
  const out = await new Deno.Command("npm", {
    args: ["install", "--no-audit", "--no-fund", "--silent"],
    cwd: NODE_DIR,
    stdin: "null",
  }).output();
  if (!out.success) {
    throw new Error(
      `npm install of zeromq@6.8.0 into ${NODE_DIR} failed: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
}

interface Case {
  name: string;
  test: "rt" | "stream";
  n: number;
  size: number;
  unit: string;
  /** The dsys variant measured (Node.js + zeromq.js always runs its defaults). */
  impl: "dsys" | "dsys-zc";
  goal: string;
}

const CASES: Case[] = [
  {
    name: "zmq round trips (64 B, DEALER->ROUTER echo)",
    test: "rt",
    n: 20_000,
    size: 64,
    unit: "rt/s",
    impl: "dsys",
    goal: ">= 1.0x Node",
  },
  {
    name: "zmq pipelined 64 B messages",
    test: "stream",
    n: 500_000,
    size: 64,
    unit: "msgs/s",
    impl: "dsys",
    goal: ">= 2x Node",
  },
  {
    name: "zmq pipelined 1 MiB messages (zero-copy opt-in)",
    test: "stream",
    n: 1_000,
    size: 1 << 20,
    unit: "MB/s",
    impl: "dsys-zc",
    goal: ">= 1.0x Node",
  },
  {
    name: "zmq pipelined 1 MiB messages (default: one copy each way)",
    test: "stream",
    n: 1_000,
    size: 1 << 20,
    unit: "MB/s",
    impl: "dsys",
    goal: "(information)",
  },
];

/** Reported number (higher is better): per second, or MB (10^6 bytes) per second. */
function value(c: Case, m: Measurement): number {
  return c.unit === "MB/s" ? m.ops * c.size / 1e6 / m.seconds : m.ops / m.seconds;
}

/** Rounds per case; each implementation's best round counts (the machine is shared). */
const ROUNDS = 3;

/** Runs the ZeroMQ benchmark (dsys vs Node.js + zeromq.js) and returns one row per case. */
export async function runZmqBench(): Promise<BenchRow[]> {
  await ensureNodeBaseline();
  const rows: BenchRow[] = [];
  const peers = {
    "dsys": await startPeer("dsys"),
    "dsys-zc": await startPeer("dsys-zc"),
    "node": await startPeer("node"),
  };
  try {
    for (const c of CASES) {
      let dsys = 0, node = 0;
      let dsysCpu = Infinity, nodeCpu = Infinity;
      for (let round = 0; round < ROUNDS; round++) {
        // Alternate who goes first so drifting load on the shared machine hits both alike.
        const order = round % 2 ? [c.impl, "node"] as const : ["node", c.impl] as const;
        for (const impl of order) {
          const m = await runClient(impl, peers[impl].endpoint, c.test, c.n, c.size);
          const v = value(c, m);
          console.error(`  zmq bench: ${c.name} [${impl}] ${Math.round(v)} ${c.unit}`);
          const cpuPerOp = m.cpu / m.ops * 1e6;
          if (impl === "node") {
            node = Math.max(node, v);
            nodeCpu = Math.min(nodeCpu, cpuPerOp);
          } else {
            dsys = Math.max(dsys, v);
            dsysCpu = Math.min(dsysCpu, cpuPerOp);
          }
        }
      }
      rows.push({
        name: c.name,
        dsys,
        baseline: node,
        unit: c.unit,
        ratio: dsys / node,
        goal: c.goal,
      });
      if (c.test === "rt") {
        // Wall-clock round trips swing with the load of the shared machine; CPU per round
        // trip is the steadier cost measure. Lower is better, so ratio = Node / dsys.
        rows.push({
          name: "zmq round trip: client CPU per round trip (lower is better)",
          dsys: dsysCpu,
          baseline: nodeCpu,
          unit: "us CPU",
          ratio: nodeCpu / dsysCpu,
          goal: "(information)",
        });
      }
    }
  } finally {
    for (const p of Object.values(peers)) await p.stop();
  }
  return rows;
}

/** Renders rows as a markdown table (baseline = Node.js + zeromq.js). */
export function zmqMarkdown(rows: BenchRow[]): string {
  const fmt = (n: number) => n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1);
  return [
    "| benchmark | dsys | Node.js + zeromq.js | unit | ratio | goal |",
    "|---|---:|---:|---|---:|---|",
    ...rows.map((r) =>
      `| ${r.name} | ${fmt(r.dsys)} | ${fmt(r.baseline)} | ${r.unit} | ${
        r.ratio.toFixed(2)
      }x | ${r.goal} |`
    ),
  ].join("\n");
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "--peer") {
    await peer(rest[0] === "zc");
  } else if (mode === "--client") {
    const [endpoint, test, n, size, zc] = rest;
    await client(endpoint, test, Number(n), Number(size), zc === "zc");
  } else if (mode === undefined) {
    console.log(zmqMarkdown(await runZmqBench()));
  } else {
    console.error(`bench/zmq.ts: unknown arguments ${Deno.args.join(" ")}`);
    Deno.exit(2);
  }
}
