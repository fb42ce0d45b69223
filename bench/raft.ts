/**
 * Masters' consensus benchmark: committed job submissions to the dsys masters vs puts to a
 * 3-member etcd 3.4 cluster, both on loopback in the same run, from the same Deno process with the
 * same closed-loop load (N concurrent clients, each waiting for its acknowledgement before sending
 * the next request). Both sides acknowledge only durable writes: etcd fsyncs its WAL on a quorum,
 * the dsys master fdatasyncs its command log (group commit) or commits through its Raft group.
 *
 * Also, when the local cluster can start 3 masters: leader failover, kill -9 of the leader under a
 * stream of writes, time until the first write commits under a new leader (etcd measured the same
 * way as the baseline).
 *
 * `deno run -A bench/raft.ts [--clients 1,64,256] [--seconds 3] [--rounds 3] [--trials 20]` prints
 * the table; under `deno task bench` the environment variables DSYS_BENCH_RAFT_CLIENTS, _SECONDS,
 * _ROUNDS and _TRIALS set the same.
 * @module
 */
import { Credentials } from "../lib/security.ts";
import { parseArgs } from "node:util";
import { LocalCluster, type LocalClusterOptions } from "../client/local_cluster.ts";
import type { ClusterInfo } from "../client/cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { StorageClient } from "../client/storage_client.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import {
  ErrorCode,
  type Message,
  MessageType,
  NodeFlags,
  NodeRole,
  randomUuid,
} from "../wire/mod.ts";
import { ensureEtcd, EtcdCluster, etcdPut } from "./etcd/cluster.ts";
import { type BenchRow, markdownTable } from "./types.ts";

/** Options of the consensus benchmark. */
export interface RaftBenchOptions {
  /** Concurrent client counts to measure (default [1, 64, 256]). */
  clients?: number[];
  /** Measured time per point and round, ms (default 3000). */
  durationMs?: number;
  /** Rounds over all points, both systems alternating (default 3); rows give the medians. */
  rounds?: number;
  /** Unmeasured time before each point, ms (default 1000): connections, JIT, caches. */
  warmupMs?: number;
  /** Failover trials per system (default 20; 0 skips; needs a 3-master cluster). */
  failoverTrials?: number;
  /** Masters to ask the local cluster for (default 3; falls back to what it starts). */
  masters?: number;
  /** Value size, bytes (default 256; dsys: the job's argument, so it is in the Raft entry). */
  valueBytes?: number;
  /** Progress lines (default: to stderr). */
  log?: (line: string) => void;
}

/** One measured point of a closed-loop load. */
export interface LoadResult {
  clients: number;
  /** Operations acknowledged inside the measured window. */
  ops: number;
  seconds: number;
  /** ops / seconds. */
  throughput: number;
  p50Ms: number;
  p99Ms: number;
  /** Failed operations (any error): must be 0 for a valid point. */
  errors: number;
  /** Successful operations in the whole run, warm-up included (what server CPU is divided by). */
  total: number;
  /** Server processes' CPU time per successful operation, ms; NaN when not measured. */
  serverCpuMs: number;
}

/** A benchmark failure naming the system and point. */
export class RaftBenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RaftBenchError";
  }
}

/** The `q` quantile (0..1) of ascending `sorted`, nearest-rank; NaN when empty. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/**
 * Runs `clients` loops of `op` for `warmupMs + durationMs`. Only operations that start after the
 * warm-up and finish inside the window count (throughput and latency), so connection set-up and
 * the ramp-up are not measured. An operation error is counted and the loop goes on.
 */
export async function closedLoop(
  clients: number,
  durationMs: number,
  warmupMs: number,
  op: (client: number, seq: number) => Promise<void>,
): Promise<LoadResult> {
  const t0 = performance.now();
  const from = t0 + warmupMs, to = from + durationMs;
  const lat: number[] = [];
  let errors = 0, total = 0;
  let firstError: unknown = null;
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    for (let seq = 1; performance.now() < to; seq++) {
      const s = performance.now();
      try {
        await op(c, seq);
      } catch (e) {
        errors++;
        firstError ??= e;
        // Do not spin on a dead system.
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      const e = performance.now();
      total++;
      if (s >= from && e <= to) lat.push(e - s);
    }
  }));
  if (firstError) console.error(`closedLoop: ${errors} errors, first: ${firstError}`);
  lat.sort((a, b) => a - b);
  const seconds = durationMs / 1000;
  return {
    clients,
    ops: lat.length,
    seconds,
    throughput: lat.length / seconds,
    p50Ms: quantile(lat, 0.5),
    p99Ms: quantile(lat, 0.99),
    errors,
    total,
    serverCpuMs: NaN,
  };
}

/** User + system CPU time of process `pid` so far, ms (Linux /proc; 0 once it is gone). */
export function processCpuMs(pid: number): number {
  try {
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    const ticksPerSec = 100; // USER_HZ, 100 on every Linux architecture Deno runs on
    return (Number(f[11]) + Number(f[12])) * 1000 / ticksPerSec;
  } catch {
    return 0;
  }
}

/** Runs `load` and sets its result's `serverCpuMs` from the CPU the `pids` used meanwhile. */
export async function withServerCpu(
  pids: number[],
  load: () => Promise<LoadResult>,
): Promise<LoadResult> {
  const cpu = () => pids.reduce((a, p) => a + processCpuMs(p), 0);
  const before = cpu();
  const r = await load();
  return { ...r, serverCpuMs: r.total > 0 ? (cpu() - before) / r.total : NaN };
}

/** The program of every benchmark job: stored once, submitted by id (jobs carry no bytes). */
export const BENCH_PROGRAM: Uint8Array = new TextEncoder().encode("#!/bin/sh\nexit 0\n");

/** `n` bytes of argument: the payload of a submission (it is in the Raft entry, as etcd's value). */
export function payload(n: number): string {
  return "x".repeat(n);
}

/** A job_submit of a 1-chunk job without inputs, as DsysClient.submit builds it. */
function submitMessage(
  client: Uint8Array,
  sequence: number,
  program: { id: Uint8Array; size: number },
  argument: Uint8Array,
): Message {
  return {
    type: MessageType.JobSubmit,
    node: client,
    client,
    sequence,
    numChunks: 1,
    timeLimitMs: 60_000,
    programId: program.id,
    programSize: program.size,
    argument,
    inputFiles: [],
    programName: "bench.sh",
  };
}

/** Closed-loop puts to etcd through `clientUrl`, one key space per client. */
export function etcdLoad(
  clientUrl: string,
  clients: number,
  durationMs: number,
  warmupMs: number,
  valueBytes = 256,
): Promise<LoadResult> {
  const value = crypto.getRandomValues(new Uint8Array(valueBytes));
  const run = crypto.randomUUID().slice(0, 8);
  return closedLoop(clients, durationMs, warmupMs, async (c, seq) => {
    // Same bound as a DsysClient's request deadline, so a wedged cluster fails the point.
    await etcdPut(clientUrl, `bench/${run}/${c}/${seq}`, value, AbortSignal.timeout(30_000));
  });
}

/** Closed-loop submissions to the dsys masters, each client its own DsysClient (client id). */
export async function dsysLoad(
  info: ClusterInfo,
  clients: number,
  durationMs: number,
  warmupMs: number,
  valueBytes = 256,
): Promise<LoadResult> {
  const argument = payload(valueBytes);
  const sessions = Array.from({ length: clients }, () => new DsysClient(info));
  try {
    // Stored once, outside the measured loop: every session uses the same key.
    const program = await sessions[0].storage.putBytes(BENCH_PROGRAM);
    return await closedLoop(clients, durationMs, warmupMs, async (c) => {
      await sessions[c].submit({
        program,
        programName: "bench.sh",
        argument,
        chunks: 1,
        inputs: [],
        timeLimitMs: 60_000,
      });
    });
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
}

/** A replicated system whose leader the failover trial kills. */
export interface FailoverTarget {
  /** Member names. */
  members: string[];
  /** The current leader's member name. */
  leader(): Promise<string>;
  kill(member: string): Promise<void>;
  /** Restarts a killed member and resolves when it serves again. */
  restart(member: string): Promise<void>;
  /**
   * One write through `member`, resolving when committed. Rejects on error or after `timeoutMs`;
   * may resolve with a member name the write should be redirected to (a NOT_LEADER hint).
   */
  write(member: string, timeoutMs: number): Promise<string | void>;
  /** Releases the target's client resources (not the system itself). */
  close(): Promise<void>;
}

/** Failover times of the trials, ms, ascending. */
export interface FailoverResult {
  times: number[];
  medianMs: number;
  maxMs: number;
  /** Trials redone because leadership moved before the kill. */
  redone: number;
}

/**
 * `trials` times: a stream of writes from `streams` clients runs against the leader; the leader is
 * SIGKILLed; the time from the kill to the first write acknowledged by another member is recorded;
 * the old leader is restarted before the next trial. Clients learn of the failure only by their
 * own 300 ms attempt timeout or an error reply, as a real client would.
 */
export async function failover(
  t: FailoverTarget,
  trials: number,
  log: (s: string) => void = () => {},
  streams = 4,
  attemptMs = 300,
): Promise<FailoverResult> {
  const times: number[] = [];
  let redo = 0;
  for (let trial = 1; trial <= trials; trial++) {
    const old = await t.leader();
    let killedAt = Infinity;
    let firstNew = Infinity;
    let stop = false;
    let guess = old;
    // Members that just timed out: a follower's stale NOT_LEADER hint must not send every stream
    // back to the dead leader for another full attempt (a real client keeps the same memory).
    const suspect = new Map<string, number>();
    const ok = (m: string) => (suspect.get(m) ?? 0) < performance.now();
    const loops = Array.from({ length: streams }, async (_, s) => {
      let target = guess;
      let rr = s;
      const next = () => {
        for (let i = 0; i < t.members.length; i++) {
          const m = t.members[rr++ % t.members.length];
          if (m !== target && ok(m)) return m;
        }
        return t.members[rr++ % t.members.length];
      };
      while (!stop) {
        const started = performance.now();
        try {
          const hint = await t.write(target, attemptMs);
          const now = performance.now();
          if (hint && t.members.includes(hint)) {
            target = ok(hint) ? hint : next();
            continue;
          }
          if (target !== old && now > killedAt && now < firstNew) firstNew = now;
          guess = target;
        } catch {
          if (performance.now() - started >= attemptMs * 0.9) {
            suspect.set(target, performance.now() + 1000);
          }
          // Unknown which member is alive: take the shared guess, else the next member in turn.
          target = guess !== target && ok(guess) ? guess : next();
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    // Leadership may have moved on its own meanwhile (an election under load): then killing `old`
    // would time nothing. Such a trial is redone, and counted, so a flapping leader shows.
    const current = await t.leader().catch(() => "");
    if (current !== old) {
      stop = true;
      await Promise.all(loops);
      if (++redo > 2 * trials) {
        throw new RaftBenchError(`failover: leadership moved by itself ${redo} times`);
      }
      log(`  trial ${trial}: leader moved from ${old} to ${current || "?"} before the kill; redo`);
      trial--;
      continue;
    }
    killedAt = performance.now();
    const killedWall = new Date().toISOString();
    await t.kill(old);
    const limit = killedAt + 20_000;
    while (firstNew === Infinity && performance.now() < limit) {
      await new Promise((r) => setTimeout(r, 5));
    }
    stop = true;
    await Promise.all(loops);
    if (firstNew === Infinity) {
      throw new RaftBenchError(
        `failover trial ${trial}: no commit within 20 s after killing ${old}`,
      );
    }
    const ms = firstNew - killedAt;
    times.push(ms);
    log(`  trial ${trial}: killed ${old} at ${killedWall}, first commit after ${ms.toFixed(0)} ms`);
    await t.restart(old);
    // Let the restarted member catch up so it is an ordinary follower at the next kill.
    await new Promise((r) => setTimeout(r, 1000));
  }
  times.sort((a, b) => a - b);
  return { times, medianMs: quantile(times, 0.5), maxMs: times[times.length - 1], redone: redo };
}

/** The etcd cluster as a failover target (writes are puts through the chosen member). */
export function etcdTarget(c: EtcdCluster, valueBytes = 256): FailoverTarget {
  const value = new Uint8Array(valueBytes);
  let n = 0;
  return {
    members: c.members.map((m) => m.name),
    leader: () => c.leader(),
    kill: (m) => c.kill(m),
    restart: (m) => c.restart(m),
    write: async (m, timeoutMs) => {
      await etcdPut(
        c.member(m).clientUrl,
        `failover/${n++}`,
        value,
        AbortSignal.timeout(timeoutMs),
      );
    },
    close: () => Promise.resolve(),
  };
}

/** The local cluster's masters as a failover target (writes are job submissions). */
export function dsysTarget(c: LocalCluster, valueBytes = 256): FailoverTarget {
  const argument = new TextEncoder().encode(payload(valueBytes));
  const client = randomUuid();
  let seq = 0;
  const auth = c.info.key && c.info.keyring
    ? Credentials.loadSync(c.info.key, c.info.keyring)
    : null;
  let program: Promise<{ id: Uint8Array; size: number }> | null = null;
  /** The program, stored with the admin's key on the first write (storage stays up). */
  const stored = () =>
    program ??= (async () => {
      const s = new StorageClient(c.info.storage, client, { auth });
      try {
        return await s.putBytes(BENCH_PROGRAM);
      } catch (e) {
        program = null; // the next write tries again
        throw e;
      } finally {
        await s.close();
      }
    })();
  const byEndpoint = () => {
    const m = new Map<string, string>();
    for (const p of c.procs.values()) if (p.role === "master") m.set(p.endpoint, p.name);
    return m;
  };
  const members = [...byEndpoint().values()];
  const saved = new Map<string, NonNullable<ReturnType<typeof c.procs.get>>>();
  const rpcs = new Map<string, RpcClient>();
  const rpc = (name: string) => {
    const p = c.procs.get(name) ?? saved.get(name);
    if (!p) throw new RaftBenchError(`no master ${name}`);
    let r = rpcs.get(name);
    if (!r) {
      // The admin's key when the cluster has keys; the name finds the master's own key.
      rpcs.set(name, r = new RpcClient(`${name}@${p.endpoint}`, { node: client, auth }));
    }
    return r;
  };
  return {
    members,
    leader: async () => {
      const end = Date.now() + 10_000;
      while (Date.now() < end) {
        for (const name of members) {
          if (!c.procs.has(name)) continue;
          try {
            const r = await rpc(name).request(
              { type: MessageType.NodeListRequest, node: client },
              1000,
            );
            if (r.type !== MessageType.NodeListResponse) continue;
            // Only a master's claim about itself counts: a follower's view may be stale. The
            // endpoint may carry a label ("tcp://127.0.0.1:7101 (m1)"): match its address.
            const self = r.nodes.find((n) =>
              n.role === NodeRole.Master && byEndpoint().get(n.endpoint.split(" ")[0]) === name
            );
            if (self && (self.flags & NodeFlags.Leader) !== 0) return name;
          } catch { /* try the next master */ }
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new RaftBenchError("no dsys master reports itself leader within 10 s");
    },
    kill: async (name) => {
      const p = c.procs.get(name);
      if (!p) throw new RaftBenchError(`no running master ${name}`);
      saved.set(name, p);
      await c.kill(name);
      // A DEALER to a dead peer keeps queued requests forever: start afresh after the restart.
      await rpcs.get(name)?.close();
      rpcs.delete(name);
    },
    restart: async (name) => {
      const p = saved.get(name);
      if (!p) throw new RaftBenchError(`master ${name} was not killed by this benchmark`);
      await c.restart(name, p, p.endpoint);
      saved.delete(name);
      // Serving again means having heard from a leader (as etcd's /health): until then the
      // member may still be loading its log, and the next kill would be a double failure.
      const end = Date.now() + 20_000;
      for (;;) {
        try {
          const r = await rpc(name).request(
            { type: MessageType.NodeListRequest, node: client },
            1000,
          );
          if (
            r.type === MessageType.NodeListResponse &&
            r.nodes.some((n) => n.role === NodeRole.Master && (n.flags & NodeFlags.Leader) !== 0)
          ) return;
        } catch { /* not up yet */ }
        if (Date.now() > end) throw new RaftBenchError(`restarted master ${name} sees no leader`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    write: async (name, timeoutMs) => {
      try {
        const prog = await stored();
        const r = await rpc(name).request(
          submitMessage(client, ++seq, prog, argument),
          timeoutMs,
        );
        if (r.type !== MessageType.JobSubmitAck) {
          throw new RaftBenchError(`master ${name}: unexpected reply type ${r.type}`);
        }
      } catch (e) {
        if (e instanceof RpcError && e.code === ErrorCode.NotLeader && e.text) {
          const hint = byEndpoint().get(e.text.split(" ")[0]);
          if (hint && hint !== name) return hint;
        }
        throw e;
      }
    },
    close: async () => {
      await Promise.all([...rpcs.values()].map((r) => r.close()));
      rpcs.clear();
    },
  };
}

function row(
  name: string,
  dsys: number,
  etcd: number,
  unit: string,
  higherIsBetter: boolean,
  goal: string,
): BenchRow {
  return {
    name,
    dsys,
    baseline: etcd,
    unit,
    ratio: higherIsBetter ? dsys / etcd : etcd / dsys,
    goal,
  };
}

/**
 * Runs the consensus benchmark: etcd (3 members) and dsys (3 masters when the local cluster
 * supports it, else 1: said in the row names) at each client count, then failover with 3 masters.
 * Rows: throughput (ratio dsys/etcd) and p50/p99 latency (ratio etcd/dsys, >1 is better for dsys).
 */
export async function runRaftBench(opts: RaftBenchOptions = {}): Promise<BenchRow[]> {
  // Environment overrides let `deno task bench` (and its test) run a short version.
  const env = (k: string) => Deno.env.get(`DSYS_BENCH_RAFT_${k}`);
  const clients = opts.clients ?? env("CLIENTS")?.split(",").map(Number) ?? [1, 64, 256];
  const durationMs = opts.durationMs ?? Number(env("SECONDS") ?? 3) * 1000;
  const warmupMs = opts.warmupMs ?? Math.min(1000, durationMs / 2);
  const rounds = opts.rounds ?? Number(env("ROUNDS") ?? 3);
  const trials = opts.failoverTrials ?? Number(env("TRIALS") ?? 20);
  const valueBytes = opts.valueBytes ?? 256;
  const log = opts.log ?? ((s: string) => console.error(s));
  const version = await ensureEtcd();

  const dir = await Deno.makeTempDir({ prefix: "dsys-bench-raft-" });
  const etcdRes = new Map<number, LoadResult[]>();
  const dsysRes = new Map<number, LoadResult[]>();
  const add = (m: Map<number, LoadResult[]>, r: LoadResult) =>
    m.set(r.clients, [...(m.get(r.clients) ?? []), r]);
  let etcdFail: FailoverResult | null = null;
  let dsysFail: FailoverResult | null = null;
  let masters = 0;
  let etcd: EtcdCluster | null = null;
  let cluster: LocalCluster | null = null;
  try {
    etcd = await EtcdCluster.start({ dir: `${dir}/etcd` });
    // Puts go to the leader directly: the fastest path etcd offers (no follower forwarding).
    const url = etcd.member(await etcd.leader()).clientUrl;

    // The row names say how many masters actually ran (1 if a cluster cannot start 3).
    const clusterOpts: LocalClusterOptions = {
      dataDir: `${dir}/dsys`,
      workers: 0,
      masters: opts.masters ?? 3,
      // Without workers every job stays queued: the periodic re-dispatch of all unfinished jobs
      // would grow with the run and tax the master; each job is still dispatched once on commit.
      extraArgs: { master: ["--redispatch-ms", "3600000"] },
    };
    try {
      cluster = await LocalCluster.start(clusterOpts);
    } catch (e) {
      if ((clusterOpts.masters ?? 1) === 1) throw e;
      // A broken Raft group must not hide the single-master numbers; the rows say "1 master".
      log(`dsys with ${clusterOpts.masters} masters did not start (${firstLine(e)}); using 1`);
      cluster = await LocalCluster.start({ ...clusterOpts, masters: 1, dataDir: `${dir}/dsys1` });
    }
    masters = cluster.info.masters.length;
    const c = cluster;

    // Both systems stay up and take turns, point by point and round by round, so a change in
    // the machine's load (it is shared) hits both sides alike instead of one whole side.
    for (let round = 1; round <= rounds; round++) {
      for (const n of clients) {
        const e = await withServerCpu(
          etcd.members.map((m) => m.child!.pid),
          () => etcdLoad(url, n, durationMs, warmupMs, valueBytes),
        );
        log(`round ${round}: etcd ${version}, ${n} clients: ${fmtLoad(e)}`);
        add(etcdRes, e);
        // Every dsys node counts: the balancer receives each committed job's dispatch.
        const d = await withServerCpu(
          [...cluster.procs.values()].map((p) => p.child.pid),
          () => dsysLoad(c.info, n, durationMs, warmupMs, valueBytes),
        );
        log(`round ${round}: dsys ${masters} master(s), ${n} clients: ${fmtLoad(d)}`);
        add(dsysRes, d);
      }
    }
    await etcd.stop();
    etcd = null;

    await cluster.stop();
    cluster = null;

    if (trials > 0 && masters >= 3) {
      // A fresh group, like etcd's below: both sides fail over with little state, so the rows
      // compare elections, not how long a member takes to reload what the load phase wrote.
      cluster = await LocalCluster.start({ ...clusterOpts, dataDir: `${dir}/dsys-failover` });
      log(`dsys failover, ${trials} trials`);
      const t = dsysTarget(cluster, valueBytes);
      try {
        dsysFail = await failover(t, trials, log);
      } finally {
        await t.close();
      }
      await cluster.stop();
      cluster = null;
    } else if (trials > 0) {
      log(`failover skipped: the local cluster started ${masters} master(s), not 3`);
    }

    if (dsysFail) {
      etcd = await EtcdCluster.start({ dir: `${dir}/etcd-failover` });
      log(`etcd failover, ${trials} trials`);
      etcdFail = await failover(etcdTarget(etcd, valueBytes), trials, log);
    }
  } finally {
    await etcd?.stop();
    await cluster?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  const who = `${masters} master${masters === 1 ? "" : "s"}`;
  const rows: BenchRow[] = [];
  for (const n of clients) {
    const d = medianOf(dsysRes.get(n)!), e = medianOf(etcdRes.get(n)!);
    for (const [sys, r] of [["dsys", d], ["etcd", e]] as const) {
      if (r.errors > 0) {
        throw new RaftBenchError(`${sys} at ${n} clients: ${r.errors} failed writes`);
      }
    }
    const cl = `${n} client${n === 1 ? "" : "s"}`;
    const goal = n <= 64 ? ">= 1.0x etcd" : "info";
    rows.push(row(`submit vs put, ${cl}, ${who}`, d.throughput, e.throughput, "ops/s", true, goal));
    rows.push(row(`p50 latency, ${cl}, ${who}`, d.p50Ms, e.p50Ms, "ms", false, "info"));
    rows.push(
      row(`p99 latency, ${cl}, ${who}`, d.p99Ms, e.p99Ms, "ms", false, "p99 no worse than etcd"),
      row(`server CPU per write, ${cl}, ${who}`, d.serverCpuMs, e.serverCpuMs, "ms", false, "info"),
    );
  }
  if (dsysFail && etcdFail) {
    rows.push(
      row(
        `leader failover median, ${trials} kill -9, fresh groups`,
        dsysFail.medianMs,
        etcdFail.medianMs,
        "ms",
        false,
        "<= 500 ms",
      ),
      row(
        `leader failover max, ${trials} kill -9, fresh groups`,
        dsysFail.maxMs,
        etcdFail.maxMs,
        "ms",
        false,
        "<= 1500 ms",
      ),
    );
  }
  return rows;
}

/** Per metric, the median over rounds (errors: the sum, since any error voids the point). */
export function medianOf(rs: LoadResult[]): LoadResult {
  const med = (f: (r: LoadResult) => number) => quantile(rs.map(f).sort((a, b) => a - b), 0.5);
  return {
    clients: rs[0].clients,
    ops: rs.reduce((a, r) => a + r.ops, 0),
    seconds: rs.reduce((a, r) => a + r.seconds, 0),
    throughput: med((r) => r.throughput),
    p50Ms: med((r) => r.p50Ms),
    p99Ms: med((r) => r.p99Ms),
    errors: rs.reduce((a, r) => a + r.errors, 0),
    total: rs.reduce((a, r) => a + r.total, 0),
    serverCpuMs: med((r) => r.serverCpuMs),
  };
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}

function fmtLoad(r: LoadResult): string {
  return `${r.throughput.toFixed(0)} ops/s, p50 ${r.p50Ms.toFixed(2)} ms, ` +
    `p99 ${r.p99Ms.toFixed(2)} ms, server CPU ${r.serverCpuMs.toFixed(3)} ms/op ` +
    `(${r.ops} ops, ${r.errors} errors)`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      clients: { type: "string" },
      seconds: { type: "string" },
      rounds: { type: "string" },
      trials: { type: "string" },
    },
  });
  const rows = await runRaftBench({
    clients: values.clients?.split(",").map(Number),
    durationMs: values.seconds ? Number(values.seconds) * 1000 : undefined,
    rounds: values.rounds ? Number(values.rounds) : undefined,
    failoverTrials: values.trials ? Number(values.trials) : undefined,
  });
  console.log(markdownTable(rows, "etcd 3.4 (3 members)"));
}
