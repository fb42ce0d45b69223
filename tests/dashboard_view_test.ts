/**
 * roles/master/dashboard_view.ts, the pure part of the dashboard: what a table looks like on the
 * page (the job list's bound and order, one job's grid, attempts and failures), the throughput
 * samples, and the node list's names; the dashboard URL a master puts in its node entry (how
 * followers find the leader's, and how a follower learns and caches it), the advertised address,
 * the cluster-wide token, and the stream the file links are served through.
 */
import assert from "node:assert/strict";
import { advertisedAddress, dashboardToken } from "../roles/master/dashboard.ts";
import {
  dashboardDetail,
  LeaderDashboard,
  parseDashboardDetail,
  URL_TTL_MS,
} from "../roles/master/dashboard_leader.ts";
import { pushStream } from "../roles/master/dashboard_files.ts";
import { systemClock } from "../lib/clock.ts";
import type { Dial } from "../lib/transport.ts";
import { type JobSpec, JobTable } from "../roles/master/job_table.ts";
import {
  dashboardView,
  finishedChunks,
  MAX_LISTED_JOBS,
  nodeSummaries,
  OutputBytes,
  THROUGHPUT_SAMPLES,
  ThroughputRing,
} from "../roles/master/dashboard_view.ts";
import {
  ChunkState,
  FailureCode,
  MessageType,
  type NodeEntry,
  NodeFlags,
  NodeRole,
  NodeState,
  randomUuid,
  uuidToHex,
} from "../wire/mod.ts";

function spec(seq: number, chunks: number): JobSpec {
  return {
    owner: "alice",
    jobId: randomUuid(),
    clientId: new Uint8Array(16),
    seq,
    programName: "p.sh",
    programId: randomUuid(),
    programSize: 3,
    argument: new Uint8Array(0),
    numChunks: chunks,
    timeLimitMs: 1000,
    inputs: [],
    submittedAtMs: 1_000_000 + seq,
  };
}

function report(job: Uint8Array, chunk: number, state: number) {
  return {
    kind: "report" as const,
    atMs: 2_000_000,
    status: {
      type: MessageType.WorkerStatus,
      node: randomUuid(),
      job,
      state: state as typeof ChunkState.Succeeded,
      chunkIndex: chunk,
      attempt: 1,
      exitCode: state === ChunkState.Failed ? 1 : 0,
      signal: 0,
      failure: state === ChunkState.Failed ? FailureCode.ExitCode : FailureCode.None,
      durationMs: 5,
      outputs: [{ id: randomUuid(), name: "stdout", size: 7 }],
      stderrTail: new Uint8Array(0),
      reason: state === ChunkState.Failed ? "exit code 1" : "",
    },
  };
}

Deno.test("dashboard view: newest jobs first, bounded; one job's grid and failures", () => {
  const t = new JobTable();
  const specs = Array.from({ length: MAX_LISTED_JOBS + 5 }, (_, i) => spec(i + 1, 4));
  for (const s of specs) t.apply({ kind: "submit", spec: s });
  const last = specs[specs.length - 1];
  t.apply(report(last.jobId, 2, ChunkState.Succeeded));
  t.apply(report(last.jobId, 3, ChunkState.Failed));
  const v = dashboardView(t, "m1@tcp://h:1", true, uuidToHex(last.jobId), 2_000_000);
  assert.equal(v.jobs.length, MAX_LISTED_JOBS);
  assert.equal(v.jobs[0].id, uuidToHex(last.jobId));
  assert.equal(v.jobs.at(-1)!.id, uuidToHex(specs[5].jobId));
  assert.equal(v.jobs[0].ageMs, 2_000_000 - last.submittedAtMs);
  assert.equal(v.job!.grid, "0023");
  assert.equal(v.job!.attempts, "0011");
  assert.deepEqual(v.job!.failures, [{ chunk: 3, reason: "exit code 1" }]);
  assert.equal(v.job!.state, ChunkState.Running);
  const one = dashboardView(t, "m", true, uuidToHex(last.jobId), 0, undefined, 3).chunk!;
  assert.equal(one.index, 3);
  assert.equal(one.state, ChunkState.Failed);
  assert.equal(one.failure, "ExitCode");
  assert.equal(one.exitCode, 1);
  assert.equal(one.reason, "exit code 1");
  assert.deepEqual(one.outputs.map((o) => [o.name, o.size]), [["stdout", 7]]);
  // Chunks the leader knows run (outside the table) show running; a final one stays final.
  const w = randomUuid();
  const runs = new Map([[1, w], [3, w]]);
  const withRunning = dashboardView(t, "m", true, uuidToHex(last.jobId), 0, undefined, 1, runs);
  assert.equal(withRunning.job!.grid, "0123");
  assert.equal(withRunning.chunk!.state, ChunkState.Running);
  assert.equal(withRunning.chunk!.worker, uuidToHex(w));
  assert.equal(dashboardView(t, "m", true, uuidToHex(last.jobId), 0, undefined, 4).chunk, null);
  assert.equal(dashboardView(t, "m", true, null, 0, undefined, 0).chunk, null);
  assert.equal(finishedChunks(t), 2);
  const bytes = new OutputBytes();
  assert.equal(bytes.total(t), 14);
  t.apply(report(last.jobId, 0, ChunkState.Succeeded));
  t.apply(report(last.jobId, 1, ChunkState.Succeeded));
  assert.equal(bytes.total(t), 28); // the job finished: remembered from now on
  assert.equal(bytes.total(t), 28);
  t.apply({ kind: "remove", jobIds: [last.jobId] });
  assert.equal(bytes.total(t), 0);
  assert.equal(dashboardView(t, "m", false, null, 0).job, null);
  assert.equal(dashboardView(t, "m", false, "f".repeat(32), 0).job, null);
});

Deno.test("throughput: per-period rises of finished chunks, never negative, bounded", () => {
  const r = new ThroughputRing();
  r.sample(10);
  assert.deepEqual(r.values, []);
  r.sample(13);
  r.sample(13);
  r.sample(4); // a job removed from the table: no throughput, not negative
  r.sample(6);
  assert.deepEqual(r.values, [3, 0, 0, 2]);
  for (let i = 0; i < THROUGHPUT_SAMPLES + 10; i++) r.sample(6 + i);
  assert.equal(r.values.length, THROUGHPUT_SAMPLES);
});

Deno.test("node summaries: roles, states and the lead flag by name", () => {
  const entry = (role: number, name: string, state: number, flags = 0) => ({
    id: randomUuid(),
    role: role as typeof NodeRole.Master,
    state: state as typeof NodeState.Alive,
    flags,
    slots: role === NodeRole.Worker ? 4 : 0,
    freeSlots: role === NodeRole.Worker ? 1 : 0,
    lastSeenMs: 0,
    endpoint: `tcp://${name}:1`,
    name,
    detail: "",
  });
  const out = nodeSummaries([
    entry(NodeRole.Worker, "w1", NodeState.Suspect),
    entry(NodeRole.Master, "m1", NodeState.Alive, NodeFlags.Leader),
    entry(NodeRole.Balancer, "b1", NodeState.Dead),
  ]);
  assert.deepEqual(out.map((n) => [n.role, n.name, n.state, n.lead, n.freeSlots]), [
    ["balancer", "b1", "dead", false, 0],
    ["master", "m1", "alive", true, 0],
    ["worker", "w1", "suspect", false, 1],
  ]);
});

Deno.test("dashboard: a master's node-entry detail names its dashboard; nothing else parses", () => {
  assert.equal(dashboardDetail("http://10.0.0.1:8080"), "dashboard http://10.0.0.1:8080");
  assert.equal(dashboardDetail(undefined), "");
  assert.equal(parseDashboardDetail("dashboard http://10.0.0.1:8080"), "http://10.0.0.1:8080");
  assert.equal(parseDashboardDetail("dashboard http://[::1]:8080"), "http://[::1]:8080");
  for (
    const bad of [
      "",
      "not replicating from the leader",
      "dashboard https://10.0.0.1:8080",
      "dashboard http://10.0.0.1:8080/x",
      "dashboard http://u:p@10.0.0.1:8080",
      "dashboard http://10.0.0.1:8080 extra",
      "dashboard javascript:alert(1)",
    ]
  ) assert.equal(parseDashboardDetail(bad), null, bad);
  // On the page, a master's dashboard detail is not shown; other details are.
  const [m] = nodeSummaries([{
    id: randomUuid(),
    role: NodeRole.Master,
    state: NodeState.Alive,
    flags: NodeFlags.Leader,
    slots: 0,
    freeSlots: 0,
    lastSeenMs: 0,
    endpoint: "tcp://10.0.0.1:7100",
    name: "m1",
    detail: "dashboard http://10.0.0.1:8080",
  }]);
  assert.equal(m.detail, "");
});

Deno.test("dashboard: the advertised address replaces a wildcard host with the master's", () => {
  const addr = (hostname: string, port: number) =>
    ({ transport: "tcp", hostname, port }) as Deno.NetAddr;
  assert.equal(advertisedAddress(addr("127.0.0.1", 80), "tcp://10.0.0.1:7100"), "127.0.0.1:80");
  assert.equal(advertisedAddress(addr("0.0.0.0", 8080), "tcp://10.0.0.1:7100"), "10.0.0.1:8080");
  assert.equal(advertisedAddress(addr("::", 8080), "tcp://[fd00::1]:7100"), "[fd00::1]:8080");
  assert.equal(advertisedAddress(addr("::1", 8080), "tcp://[::1]:7100"), "[::1]:8080");
});

Deno.test("dashboard: the token is the same for every master with the cluster secret, else random", async () => {
  const root = await Deno.makeTempDir({ prefix: "dsys-dashboard-token-" });
  try {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    for (const m of ["m1", "m2", "lone", "lone2"]) await Deno.mkdir(`${root}/${m}`);
    // A stale random token is replaced by the cluster's.
    await Deno.writeTextFile(`${root}/m2/dashboard.token`, "ab".repeat(32) + "\n");
    const t1 = await dashboardToken(`${root}/m1`, secret);
    assert.match(t1, /^[0-9a-f]{64}$/);
    assert.equal(await dashboardToken(`${root}/m2`, secret), t1);
    assert.equal((await Deno.readTextFile(`${root}/m2/dashboard.token`)).trim(), t1);
    assert.equal((await Deno.stat(`${root}/m1/dashboard.token`)).mode! & 0o777, 0o600);
    assert.notEqual(await dashboardToken(`${root}/m1`, new Uint8Array(32)), t1);
    // Without keys: one random token per master, kept across restarts.
    const a = await dashboardToken(`${root}/lone`);
    assert.equal(await dashboardToken(`${root}/lone`), a);
    assert.notEqual(await dashboardToken(`${root}/lone2`), a);
    assert.notEqual(a, t1);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("dashboard: pushStream holds at most one piece until read, and stops its source on cancel", async () => {
  let pushed = 0;
  let ended: unknown = null;
  const s = pushStream(async (push) => {
    try {
      for (let i = 0; i < 100; i++) {
        await push(new Uint8Array([i]));
        pushed++;
      }
    } catch (e) {
      ended = e;
    }
  });
  const r = s.getReader();
  assert.deepEqual((await r.read()).value, new Uint8Array([0]));
  assert.deepEqual((await r.read()).value, new Uint8Array([1]));
  // Reading two pieces let at most the next one in: the source waits for the reader.
  await new Promise((res) => setTimeout(res, 0));
  assert.ok(pushed <= 3, `pushed ${pushed}`);
  await r.cancel();
  await new Promise((res) => setTimeout(res, 0));
  assert.match(String(ended), /reader went away/);
  // A failing source errors the stream.
  const bad = pushStream(() => Promise.reject(new Error("verify failed"))).getReader();
  await assert.rejects(bad.read(), /verify failed/);
});

Deno.test("dashboard: a follower learns the leader's dashboard from the leader's node list", async () => {
  let asked = 0;
  let answer: NodeEntry[] = [];
  let leader: string | null = "m1@tcp://10.0.0.1:7100";
  let leads = false;
  const clock = { ...systemClock, monotonic: () => now };
  let now = 0;
  const dialled: string[] = [];
  const dial: Dial = (endpoint) => ({
    endpoint,
    request: () => {
      asked++;
      dialled.push(endpoint);
      return Promise.resolve({
        type: MessageType.NodeListResponse,
        node: randomUuid(),
        nodes: answer,
      });
    },
    send: () => Promise.resolve(),
    close: () => Promise.resolve(),
  });
  const entry = (detail: string, flags: number): NodeEntry => ({
    id: randomUuid(),
    role: NodeRole.Master,
    state: NodeState.Alive,
    flags,
    slots: 0,
    freeSlots: 0,
    lastSeenMs: 0,
    endpoint: "tcp://10.0.0.1:7100",
    name: "m1",
    detail,
  });
  const ld = new LeaderDashboard({
    node: randomUuid(),
    isLeader: () => leads,
    leaderId: () => leader,
    dial,
    clock,
  });
  answer = [entry("", 0), entry("dashboard http://10.0.0.1:8080", NodeFlags.Leader)];
  assert.equal(await ld.url(), "http://10.0.0.1:8080");
  assert.deepEqual(dialled, ["m1@tcp://10.0.0.1:7100"]);
  assert.equal(await ld.url(), "http://10.0.0.1:8080");
  assert.equal(asked, 1); // cached
  now += URL_TTL_MS;
  assert.equal(await ld.url(), "http://10.0.0.1:8080");
  assert.equal(asked, 2); // asked again after its TTL
  ld.invalidate();
  answer = [entry("dashboard http://10.0.0.1:8080", 0)]; // not flagged leader: not taken
  assert.equal(await ld.url(), null);
  assert.equal(asked, 3);
  leader = "m2@tcp://10.0.0.2:7100"; // a new leader is asked at once
  answer = [entry("dashboard http://10.0.0.2:8080", NodeFlags.Leader)];
  assert.equal(await ld.url(), "http://10.0.0.2:8080");
  assert.equal(asked, 4);
  leads = true; // this master leads: it serves its own view
  assert.equal(await ld.url(), null);
  assert.equal(ld.leaderId(), null);
  leads = false;
  leader = null;
  assert.equal(await ld.url(), null);
  assert.equal(asked, 4);
});
