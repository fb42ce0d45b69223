/**
 * The consensus benchmark and the `deno task bench` driver, at a small scale: a real 3-member etcd
 * cluster (installed with apt-get when missing), a real local dsys cluster, real processes killed.
 */
import assert from "node:assert/strict";
import { ensureEtcd, EtcdCluster, etcdPut } from "../bench/etcd/cluster.ts";
import {
  closedLoop,
  dsysLoad,
  dsysTarget,
  etcdTarget,
  failover,
  medianOf,
  processCpuMs,
  quantile,
  runRaftBench,
  withServerCpu,
} from "../bench/raft.ts";
import { BENCHES, BenchUsageError, runBenches, selectBenches } from "../bench/main.ts";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ChunkState, MessageType } from "../wire/mod.ts";
import { waitFor } from "./wait.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test("quantile is nearest-rank over sorted samples", () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(quantile(xs, 0.5), 50);
  assert.equal(quantile(xs, 0.99), 99);
  assert.equal(quantile(xs, 1), 100);
  assert.equal(quantile([7], 0.99), 7);
  assert.ok(Number.isNaN(quantile([], 0.5)));
});

Deno.test("closedLoop counts only the measured window and keeps N requests in flight", async () => {
  let inFlight = 0, maxInFlight = 0;
  const r = await closedLoop(4, 400, 100, async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((res) => setTimeout(res, 10));
    inFlight--;
  });
  assert.equal(maxInFlight, 4);
  assert.equal(r.errors, 0);
  assert.ok(r.ops > 0 && r.ops <= 4 * 40 + 4, `ops ${r.ops}`);
  assert.ok(r.p50Ms >= 9 && r.p50Ms <= r.p99Ms, `p50 ${r.p50Ms} p99 ${r.p99Ms}`);
  assert.equal(r.throughput, r.ops / 0.4);
  assert.ok(r.total >= r.ops);
});

Deno.test("withServerCpu charges a busy process's CPU time to each operation", async () => {
  // A real child process that spins (killed once measured; 120 s is only a bound if that fails).
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "const e = Date.now() + 120_000; while (Date.now() < e) {}"],
  }).spawn();
  try {
    await waitFor("the spinner to be past start-up", () => processCpuMs(child.pid) >= 100, {
      timeoutMs: 60_000,
    });
    // Each operation lasts until the spinner has used 30 ms more CPU, so however loaded the
    // machine is, at least that much is charged to each operation.
    const r = await withServerCpu([child.pid], () =>
      closedLoop(1, 200, 0, async () => {
        const from = processCpuMs(child.pid);
        await waitFor("30 ms of the spinner's CPU", () => processCpuMs(child.pid) >= from + 30, {
          timeoutMs: 60_000,
          intervalMs: 5,
        });
      }));
    const spent = processCpuMs(child.pid);
    assert.equal(r.errors, 0);
    assert.ok(r.total > 0);
    assert.ok(r.serverCpuMs >= 30, `cpu ${r.serverCpuMs} ms/op x ${r.total}`);
    // Only CPU the spinner really used, all of it since it started at most.
    assert.ok(r.serverCpuMs * r.total <= spent, `${r.serverCpuMs} x ${r.total} > ${spent} ms`);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
  assert.ok(processCpuMs(Deno.pid) > 0);
  assert.equal(processCpuMs(2 ** 30), 0);
});

Deno.test("etcd: 3 members, puts commit, the leader's kill -9 fails over", opts, async () => {
  await ensureEtcd();
  const c = await EtcdCluster.start();
  try {
    const leader = await c.leader();
    const rev1 = await etcdPut(c.member(leader).clientUrl, "a", new Uint8Array(256));
    const follower = c.members.find((m) => m.name !== leader)!;
    const rev2 = await etcdPut(follower.clientUrl, "b", new Uint8Array(256));
    assert.ok(rev2 > rev1, `revision ${rev2} after ${rev1}`);
    const f = await failover(etcdTarget(c), 1);
    assert.equal(f.times.length, 1);
    assert.ok(f.medianMs > 0 && f.medianMs < 20_000, `failover ${f.medianMs} ms`);
    // The killed leader was restarted and serves again.
    await c.waitHealthy(leader);
    await etcdPut(c.member(leader).clientUrl, "c", new Uint8Array(256));
  } finally {
    await c.stop();
  }
});

Deno.test("dsysLoad: every acknowledged submission is a committed job", opts, async () => {
  const cluster = await LocalCluster.start({ workers: 0 });
  try {
    const r = await dsysLoad(cluster.info, 3, 800, 200);
    assert.equal(r.errors, 0);
    assert.ok(r.ops > 0, "no submission acknowledged");
    assert.ok(r.p50Ms > 0 && r.p50Ms <= r.p99Ms);
    const client = new DsysClient(cluster.info);
    try {
      // The master holds at least every job whose submission was counted (warm-up ones too).
      const list = await client.masters.request({
        type: MessageType.JobListRequest,
        node: client.node,
      });
      assert.equal(list.type, MessageType.JobListResponse);
      if (list.type === MessageType.JobListResponse) {
        assert.ok(list.jobs.length >= r.ops, `${list.jobs.length} jobs < ${r.ops} acks`);
      }
      const job = await client.submit({
        program: new TextEncoder().encode("#!/bin/sh\n"),
        programName: "x.sh",
        argument: "",
        chunks: 1,
        inputs: [],
        timeLimitMs: 1000,
      });
      // No workers: the job is committed and never finishes.
      const s = await client.status(job);
      assert.equal(s.numChunks, 1);
      assert.ok(s.state !== ChunkState.Succeeded && s.state !== ChunkState.Failed);
    } finally {
      await client.close();
    }
    // The failover target's plumbing on a lone master: leader lookup, kill -9, restart, writes.
    const t = dsysTarget(cluster);
    try {
      const leader = await t.leader();
      assert.deepEqual(t.members, [leader]);
      assert.equal(await t.write(leader, 5000), undefined);
      await t.kill(leader);
      await assert.rejects(t.write(leader, 300));
      await t.restart(leader);
      assert.equal(await t.leader(), leader);
      await t.write(leader, 5000);
    } finally {
      await t.close();
    }
  } finally {
    await cluster.stop();
  }
});

Deno.test("dsys: 3 masters, the leader's kill -9 fails over to a new leader", opts, async () => {
  const cluster = await LocalCluster.start({ workers: 0, masters: 3 });
  const t = dsysTarget(cluster);
  try {
    assert.equal(t.members.length, 3);
    const f = await failover(t, 1);
    assert.equal(f.times.length, 1);
    assert.ok(f.medianMs > 0 && f.medianMs < 20_000, `failover ${f.medianMs} ms`);
    // The group serves again with the old leader back as a member.
    await t.write(await t.leader(), 5000);
    assert.equal(cluster.info.masters.length, 3);
  } finally {
    await t.close();
    await cluster.stop();
  }
});

Deno.test(
  "bench driver: selection, skipped and failing modules, real raft rows",
  opts,
  async () => {
    assert.deepEqual(selectBenches("raft,e2e").map((b) => b.name), ["e2e", "raft"]);
    assert.equal(selectBenches(undefined).length, BENCHES.length);
    assert.throws(() => selectBenches("raft,nosuch"), BenchUsageError);

    const lines: string[] = [];
    const report = await runBenches([
      {
        name: "absent",
        file: "no_such_bench.ts",
        fn: "runAbsentBench",
        title: "Absent",
        baseline: "b",
      },
      {
        name: "broken",
        file: "broken.ts",
        fn: "runBrokenBench",
        title: "Broken",
        baseline: "b",
        run: () => Deno.readTextFile("/nonexistent/dsys-bench").then(() => []),
      },
      {
        name: "raft",
        file: "raft.ts",
        fn: "runRaftBench",
        title: "Masters (consensus)",
        baseline: "etcd",
        run: () =>
          runRaftBench({
            clients: [2],
            durationMs: 800,
            warmupMs: 200,
            rounds: 1,
            failoverTrials: 0,
            log: () => {},
          }),
      },
    ], (s) => lines.push(s));
    assert.deepEqual(report.missing, ["absent"]);
    assert.deepEqual(report.failed, ["broken"]);
    const md = report.markdown;
    assert.match(md, /\d+ cores, .+, load average \(1\/5\/15 min\) at start [\d.]+ [\d.]+ [\d.]+/);
    assert.match(md, /Skipped: bench\/no_such_bench.ts does not exist yet/);
    assert.match(md, /FAILED: NotFound/);
    assert.match(md, /\| submit vs put, 2 clients, \d masters? \| [\d,.]+ \| [\d,.]+ \| ops\/s \|/);
    assert.match(md, /\| p99 latency, 2 clients, .* \| ms \| .* \| p99 no worse than etcd \|/);
    assert.match(md, /\| server CPU per write, 2 clients, .* \| ms \| .* \| info \|/);
    assert.match(md, /load average before [\d. ]+, after [\d. ]+\./);
    assert.equal(lines.join("\n") + "\n", md);
  },
);

Deno.test("medianOf takes per-metric medians over rounds and sums errors", () => {
  const r = (t: number, p50: number, p99: number, errors = 0) => ({
    clients: 8,
    ops: t,
    seconds: 1,
    throughput: t,
    p50Ms: p50,
    p99Ms: p99,
    errors,
    total: t + 10,
    serverCpuMs: p50 / 10,
  });
  const m = medianOf([r(100, 5, 50), r(300, 1, 10, 1), r(200, 3, 90)]);
  assert.deepEqual(m, {
    clients: 8,
    ops: 600,
    seconds: 3,
    throughput: 200,
    p50Ms: 3,
    p99Ms: 50,
    errors: 1,
    total: 630,
    serverCpuMs: 0.3,
  });
});
