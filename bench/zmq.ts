/**
 * ZeroMQ benchmark: dsys's wire/zmq (Deno FFI) against Node.js + zeromq.js 6.8.0, same
 * machine, same run, same protocol, every client and peer in its own process on loopback TCP.
 *
 * - round trips/s: a DEALER sends 64 B and waits for the ROUTER peer's echo, one at a time;
 * - 64 B msgs/s: a DEALER pipelines 64-byte messages to a ROUTER sink (then one flush echo);
 * - 1 MiB MB/s: the same with 1 MiB messages, with the options lib/rpc.ts's sockets use (what
 *   every dsys node runs) and with a bare Socket's defaults.
 *
 * The CURVE rows measure what encryption costs dsys: the same dsys sockets with CURVE on (a
 * server and a client keypair, a ZAP handler in the peer process that accepts the client's key;
 * the options a dsys node's RpcServer uses: ZAP domain "dsys", ZAP_ENFORCE_DOMAIN, User-Id on
 * every received message) against the same sockets without CURVE.
 *
 * `deno run -A bench/zmq.ts` prints a markdown table; bench/main.ts calls runZmqBench().
 * The Node side (bench/node_zmq/) is npm-installed into bench/.node/ on first use.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import {
  curveKeypair,
  type Received,
  Socket,
  type SocketOptions,
  z85Encode,
  ZapHandler,
} from "../wire/zmq/mod.ts";
import { ZAP_DOMAIN } from "../lib/security.ts";
import { RPC_SOCKET_OPTIONS } from "../lib/rpc.ts";
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

/**
 * Socket variant of a dsys peer or client process: a bare Socket's defaults, the options of
 * lib/rpc.ts's sockets (zero-copy sends; what dsys nodes use), or CURVE.
 */
type Variant = "plain" | "rpc" | "curve";

/**
 * CURVE keys of the "curve" variant, Z85, in the environment of the bench's children (each
 * gets the secret key of its own side only). Made fresh by every bench run.
 */
const CURVE_ENV = "DSYS_ZMQ_BENCH_CURVE";
interface CurveKeys {
  serverPublic: string;
  serverSecret?: string;
  clientPublic: string;
  clientSecret?: string;
}

function curveKeys(): CurveKeys {
  const text = Deno.env.get(CURVE_ENV);
  if (!text) throw new Error(`bench/zmq.ts: curve variant without ${CURVE_ENV}`);
  return JSON.parse(text) as CurveKeys;
}

/** The peer's (server's) socket options: what lib/rpc.ts's RpcServer sets for CURVE. */
function peerOptions(variant: Variant): SocketOptions {
  if (variant === "rpc") return RPC_SOCKET_OPTIONS;
  if (variant === "plain") return {};
  const k = curveKeys();
  return {
    curveServer: true,
    curvePublicKey: k.serverPublic,
    curveSecretKey: k.serverSecret,
    zapDomain: ZAP_DOMAIN,
    zapEnforceDomain: true,
    peerUserId: true,
  };
}

/** The client's socket options: what lib/rpc.ts's RpcClient sets for CURVE. */
function clientOptions(variant: Variant): SocketOptions {
  if (variant === "rpc") return RPC_SOCKET_OPTIONS;
  if (variant === "plain") return {};
  const k = curveKeys();
  return {
    curveServerKey: k.serverPublic,
    curvePublicKey: k.clientPublic,
    curveSecretKey: k.clientSecret,
  };
}

async function peer(variant: Variant): Promise<void> {
  let zap: ZapHandler | undefined;
  let userId: string | undefined;
  if (variant === "curve") {
    // Like a dsys node: the process's ZAP handler is up before the socket accepts a handshake
    // and lets in exactly the keys it knows (here: the client's).
    userId = curveKeys().clientPublic;
    zap = new ZapHandler((req) =>
      req.domain === ZAP_DOMAIN && req.mechanism === "CURVE" && req.publicKey &&
        z85Encode(req.publicKey) === userId
        ? { ok: true, userId: userId! }
        : { ok: false, reason: "key not accepted" }
    );
  }
  const router = new Socket("ROUTER", peerOptions(variant));
  console.log(`READY ${router.bind("tcp://127.0.0.1:*")}`);
  const done = new TextEncoder().encode("done");
  for await (const msg of router) {
    const frames: Received = msg; // the iterator yields receive()'s arrays
    const [id, body] = frames;
    // The User-Id is read on every message, as RpcServer does; a wrong one is a broken bench.
    if (zap && frames.userId !== userId) {
      throw new Error(`CURVE peer: message with User-Id ${frames.userId}`);
    }
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
  variant: Variant,
): Promise<void> {
  const dealer = new Socket("DEALER", clientOptions(variant));
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

/** "dsys-rpc" is dsys with lib/rpc.ts's socket options, "dsys-curve" dsys with CURVE. */
type Impl = "dsys" | "dsys-rpc" | "dsys-curve" | "node";

const VARIANT: Record<Exclude<Impl, "node">, Variant> = {
  "dsys": "plain",
  "dsys-rpc": "rpc",
  "dsys-curve": "curve",
};

/** Keypairs of this run's CURVE peer and client (made once, on first use). */
let runKeys: { server: CurveKeys; client: CurveKeys } | undefined;

function childKeys(side: "server" | "client"): string {
  if (!runKeys) {
    const s = curveKeypair(), c = curveKeypair();
    const pub = { serverPublic: s.publicKey, clientPublic: c.publicKey };
    runKeys = {
      server: { ...pub, serverSecret: s.secretKey },
      client: { ...pub, clientSecret: c.secretKey },
    };
  }
  return JSON.stringify(runKeys[side]);
}

function command(
  impl: Impl,
  args: string[],
  stdout: "piped" | "null",
  side: "server" | "client",
): Deno.ChildProcess {
  const [cmd, full] = impl === "node"
    ? ["node", [NODE_SCRIPT, ...args]]
    : [Deno.execPath(), ["run", "-A", SELF, ...args, VARIANT[impl]]];
  const env: Record<string, string> = { NODE_PATH: `${NODE_DIR}node_modules` };
  if (impl === "dsys-curve") env[CURVE_ENV] = childKeys(side);
  return new Deno.Command(cmd, { args: full, stdin: "null", stdout, stderr: "inherit", env })
    .spawn();
}

interface RunningPeer {
  endpoint: string;
  stop(): Promise<void>;
}

async function startPeer(impl: Impl): Promise<RunningPeer> {
  const child = command(impl, impl === "node" ? ["peer"] : ["--peer"], "piped", "server");
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
    "client",
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
  /** The dsys variant measured. */
  impl: "dsys" | "dsys-rpc" | "dsys-curve";
  /** What it is measured against (Node.js + zeromq.js runs its defaults). Default: "node". */
  base?: Impl;
  goal: string;
  /** Also a row of client CPU per message (lower is better), named so. */
  cpuRow?: string;
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
    cpuRow: "zmq round trip: client CPU per round trip (lower is better)",
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
    name: "zmq pipelined 1 MiB messages (defaults of dsys's RPC sockets: zero-copy both ways)",
    test: "stream",
    n: 1_000,
    size: 1 << 20,
    unit: "MB/s",
    impl: "dsys-rpc",
    goal: ">= 1.0x Node",
  },
  {
    name: "zmq pipelined 1 MiB messages (bare Socket defaults: libzmq copies on send)",
    test: "stream",
    n: 1_000,
    size: 1 << 20,
    unit: "MB/s",
    impl: "dsys",
    goal: "(information)",
  },
  // What CURVE costs: dsys with CURVE against the same dsys sockets without it.
  {
    name: "zmq CURVE round trips (64 B) vs dsys without CURVE",
    test: "rt",
    n: 20_000,
    size: 64,
    unit: "rt/s",
    impl: "dsys-curve",
    base: "dsys",
    goal: "(information)",
    cpuRow: "zmq CURVE round trip: client CPU per round trip vs without (lower is better)",
  },
  {
    name: "zmq CURVE pipelined 1 MiB messages vs dsys without CURVE (bare Socket defaults)",
    test: "stream",
    n: 1_000,
    size: 1 << 20,
    unit: "MB/s",
    impl: "dsys-curve",
    base: "dsys",
    goal: "(information)",
    cpuRow: "zmq CURVE 1 MiB: client CPU per MiB vs without (lower is better)",
  },
];

/** Reported number (higher is better): per second, or MB (10^6 bytes) per second. */
function value(c: Case, m: Measurement): number {
  return c.unit === "MB/s" ? m.ops * c.size / 1e6 / m.seconds : m.ops / m.seconds;
}

/**
 * Rounds per case, both sides taking turns; rows are the medians of the rounds and the spread
 * the range of the per-round ratios (the machine is shared, its load varies).
 */
const ROUNDS = 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function spreadOf(ratios: number[]): string {
  return `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}`;
}

/**
 * Runs the ZeroMQ benchmark and returns its rows: dsys vs Node.js + zeromq.js, then dsys with
 * CURVE vs dsys without. `cases` selects cases by name prefix (all by default); `rounds` and
 * `scale` (a factor on each case's message count) shorten a run while developing.
 */
export async function runZmqBench(
  opts: { cases?: string[]; rounds?: number; scale?: number } = {},
): Promise<BenchRow[]> {
  const cases = CASES.filter((c) => !opts.cases || opts.cases.some((p) => c.name.startsWith(p)));
  const rounds = opts.rounds ?? ROUNDS;
  const used = new Set(cases.flatMap((c) => [c.impl, c.base ?? "node"]));
  if (used.has("node")) await ensureNodeBaseline();
  const rows: BenchRow[] = [];
  const peers: Partial<Record<Impl, RunningPeer>> = {};
  try {
    for (const impl of used) peers[impl] = await startPeer(impl);
    for (const c of cases) {
      const base = c.base ?? "node";
      const n = Math.max(1, Math.round(c.n * (opts.scale ?? 1)));
      const dsysV: number[] = [], baseV: number[] = [];
      const dsysC: number[] = [], baseC: number[] = [];
      for (let round = 0; round < rounds; round++) {
        // Alternate who goes first so drifting load on the shared machine hits both alike.
        const order = round % 2 ? [c.impl, base] : [base, c.impl];
        for (const impl of order) {
          const m = await runClient(impl, peers[impl]!.endpoint, c.test, n, c.size);
          const v = value(c, m);
          console.error(`  zmq bench: ${c.name} [${impl}] ${Math.round(v)} ${c.unit}`);
          const cpuPerOp = m.cpu / m.ops * 1e6;
          if (impl === base) {
            baseV.push(v);
            baseC.push(cpuPerOp);
          } else {
            dsysV.push(v);
            dsysC.push(cpuPerOp);
          }
        }
      }
      const dsys = median(dsysV), baseline = median(baseV);
      const dsysCpu = median(dsysC), baseCpu = median(baseC);
      rows.push({
        name: c.name,
        dsys,
        baseline,
        unit: c.unit,
        ratio: dsys / baseline,
        goal: c.goal,
        spread: spreadOf(dsysV.map((d, i) => d / baseV[i])),
      });
      if (c.cpuRow) {
        // Wall-clock rates swing with the load of the shared machine; CPU per message is the
        // steadier cost measure. Lower is better, so ratio = baseline / dsys.
        rows.push({
          name: c.cpuRow,
          dsys: dsysCpu,
          baseline: baseCpu,
          unit: c.size >= 1 << 20 ? "us CPU/MiB" : "us CPU",
          ratio: baseCpu / dsysCpu,
          goal: "(information)",
          spread: spreadOf(dsysC.map((d, i) => baseC[i] / d)),
        });
      }
    }
  } finally {
    for (const p of Object.values(peers)) await p.stop();
  }
  return rows;
}

/** What the transport ceiling measurement found: MB/s and the sending client's CPU per GiB. */
export interface TransportCeiling {
  /** Best MB/s (10^6 bytes per second) over the rounds. */
  mbs: number;
  /** Client CPU seconds (user + system) per GiB in the best round. */
  clientCpuPerGiB: number;
}

/**
 * The ZeroMQ transport ceiling for bulk transfers: the "1 MiB messages, dsys RPC socket options"
 * case above (a DEALER client process pipelining 1 MiB messages to a ROUTER peer process on
 * loopback TCP, no hashing, no disk), moving `bytes` per round; the best of `rounds` (load from
 * other users only slows a round). bench/storage.ts measures storage gets against it.
 */
export async function zmqTransportCeiling(bytes: number, rounds = 3): Promise<TransportCeiling> {
  const n = Math.max(1, Math.round(bytes / (1 << 20)));
  const peer = await startPeer("dsys-rpc");
  try {
    let best: TransportCeiling = { mbs: 0, clientCpuPerGiB: 0 };
    for (let r = 0; r < rounds; r++) {
      const m = await runClient("dsys-rpc", peer.endpoint, "stream", n, 1 << 20);
      const mbs = m.ops * (1 << 20) / 1e6 / m.seconds;
      if (mbs > best.mbs) best = { mbs, clientCpuPerGiB: m.cpu / (m.ops / 1024) };
    }
    return best;
  } finally {
    await peer.stop();
  }
}

/** Renders rows as a markdown table (baseline = Node.js + zeromq.js). */
export function zmqMarkdown(rows: BenchRow[]): string {
  const fmt = (n: number) => n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1);
  return [
    "| benchmark | dsys | Node.js + zeromq.js | unit | ratio | goal |",
    "|---|---:|---:|---|---:|---|",
    ...rows.map((r) =>
      `| ${r.name} | ${fmt(r.dsys)} | ${fmt(r.baseline)} | ${r.unit} | ${r.ratio.toFixed(2)}x${
        r.spread ? ` (${r.spread})` : ""
      } | ${r.goal} |`
    ),
  ].join("\n");
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "--peer") {
    await peer(rest[0] as Variant);
  } else if (mode === "--client") {
    const [endpoint, test, n, size, variant] = rest;
    await client(endpoint, test, Number(n), Number(size), variant as Variant);
  } else if (mode === undefined || mode.startsWith("--")) {
    // `deno run -A bench/zmq.ts [--cases "zmq CURVE"] [--rounds 1] [--scale 0.1]`
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        cases: { type: "string", multiple: true },
        rounds: { type: "string" },
        scale: { type: "string" },
      },
    });
    console.log(zmqMarkdown(
      await runZmqBench({
        cases: values.cases,
        rounds: values.rounds ? Number(values.rounds) : undefined,
        scale: values.scale ? Number(values.scale) : undefined,
      }),
    ));
  } else {
    console.error(`bench/zmq.ts: unknown arguments ${Deno.args.join(" ")}`);
    Deno.exit(2);
  }
}
