import assert from "node:assert/strict";
import { ChunkScheduler } from "../roles/balancer/chunk_scheduler.ts";
import {
  applyEvent,
  decodeSync,
  encodeSync,
  EventLog,
  type SchedulerEvent,
  type SyncReply,
} from "../roles/balancer/replication.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import {
  ChunkState,
  ErrorCode,
  type Message,
  MessageType,
  NodeFlags,
  NodeRole,
  randomUuid,
  type Uuid,
  uuidToHex,
} from "../wire/mod.ts";
import { FakeWorker, type Run, spawnBalancer } from "./balancer_helpers.ts";
import { waitFor } from "./wait.ts";
import { TestKeys } from "./keys_helper.ts";

/** Small deterministic PRNG (mulberry32), so a failure reproduces. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** State as canonical bytes, to compare two schedulers. */
function canon(s: ChunkScheduler): string {
  const reply: SyncReply = {
    op: "sync",
    epoch: "x",
    endpoint: "",
    snapshot: { seq: 0, state: s.exportState() },
    firstSeq: 0,
    events: [],
  };
  return new TextDecoder().decode(encodeSync(reply));
}

Deno.test("replication: snapshot + replayed events reproduce the primary exactly", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const r = rng(seed);
    const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
    const primary = new ChunkScheduler({
      deadAfterMs: 500,
      refuseBackoffMs: 50,
      rerunFinishedAfterMs: 5000,
      idleGraceMs: 300,
    });
    const log = new EventLog({ maxEvents: 100_000 });
    const files: Uuid[] = Array.from({ length: 6 }, () => randomUuid());
    const workers: Uuid[] = [];
    const jobIds = new Map<string, Uuid>();
    let now = 1000;
    const run = (ev: SchedulerEvent) => {
      const res = applyEvent(primary, ev);
      log.append(ev, now);
      return res;
    };
    // The standby joins after some history: it starts from a snapshot.
    let standby: ChunkScheduler | null = null;
    let seq = 0;
    log.since(0, 0, now); // a follower exists from the start, so events are kept
    for (let step = 0; step < 3000; step++) {
      now += Math.floor(r() * 20);
      const x = r();
      if (x < 0.05 || workers.length === 0) {
        const id = workers.length < 6 && r() < 0.7 ? randomUuid() : pick(workers);
        if (!workers.includes(id)) workers.push(id);
        const slots = 1 + Math.floor(r() * 4);
        run({
          t: "register",
          now,
          id,
          slots,
          free: Math.floor(r() * (slots + 1)),
          files: files.filter(() => r() < 0.3),
          label: "w",
        });
      } else if (x < 0.12) {
        const n = 1 + Math.floor(r() * 30);
        const job = randomUuid();
        jobIds.set(uuidToHex(job), job);
        run({
          t: "dispatch",
          now,
          info: {
            job,
            numChunks: n,
            timeLimitMs: 0,
            programId: files[0],
            programSize: 3,
            argument: new Uint8Array(0),
            inputFiles: files.filter(() => r() < 0.3).map((id, i) => ({
              id,
              size: 1 + Math.floor(r() * 1e6),
              name: `f${i}`,
            })),
          },
          chunks: Array.from({ length: n }, (_, i) => ({ chunkIndex: i, attempt: 1 })),
        });
      } else if (x < 0.45) {
        const id = pick(workers);
        if (primary.worker(id)) {
          run({
            t: "heartbeat",
            now,
            id,
            slots: primary.worker(id)!.slots,
            free: 0,
            added: files.filter(() => r() < 0.1),
            evicted: files.filter(() => r() < 0.1),
          });
        }
      } else if (x < 0.6) {
        run({ t: "assign", now });
      } else if (x < 0.64) {
        run({ t: "reap", now });
      } else if (x < 0.65) {
        run(r() < 0.5 ? { t: "prune", now } : { t: "touchAll", now });
      } else {
        // Some outcome for a running chunk.
        const busy = primary.workers().filter((w) => w.running.size > 0);
        const w = busy.length > 0 ? pick(busy) : null;
        if (w) {
          const t = pick([...w.running.values()]);
          const job = jobIds.get(t.jobKey)!;
          const base = { now, worker: w.id, job, chunk: t.chunkIndex, attempt: t.attempt };
          const y = r();
          if (y < 0.8) run({ t: "finished", ...base, state: ChunkState.Succeeded });
          else if (y < 0.9) run({ t: "refused", ...base });
          else run({ t: "unconfirmed", ...base });
        }
      }
      if (step === 700) {
        // Snapshot: a fresh scheduler importing the exported state (through the codec).
        const snap = decodeSync(
          encodeSync({
            op: "sync",
            epoch: log.epoch,
            endpoint: "",
            snapshot: { seq: log.lastSeq, state: primary.exportState() },
            firstSeq: log.lastSeq + 1,
            events: [],
          }),
        ) as SyncReply;
        standby = new ChunkScheduler({ deadAfterMs: 1, refuseBackoffMs: 1 });
        standby.importState(snap.snapshot!.state);
        seq = snap.snapshot!.seq;
        assert.equal(canon(standby), canon(primary));
      }
      if (standby && step % 97 === 0) {
        // Pull in small batches, through the codec.
        const evs = log.since(seq, 4096, now)!;
        const decoded = decodeSync(
          encodeSync({
            op: "sync",
            epoch: log.epoch,
            endpoint: "",
            firstSeq: seq + 1,
            events: evs,
          }),
        ) as SyncReply;
        for (const ev of decoded.events) applyEvent(standby, ev);
        seq += decoded.events.length;
      }
    }
    const rest = log.since(seq, Infinity, now)!;
    const last = decodeSync(
      encodeSync({ op: "sync", epoch: log.epoch, endpoint: "", firstSeq: seq + 1, events: rest }),
    ) as SyncReply;
    for (const ev of last.events) applyEvent(standby!, ev);
    assert.equal(canon(standby!), canon(primary), `seed ${seed}: states differ`);
    // And they keep deciding the same.
    const a = primary.assign(now + 1).map((x) => [x.worker.key, x.chunkIndex, x.attempt]);
    const b = standby!.assign(now + 1).map((x) => [x.worker.key, x.chunkIndex, x.attempt]);
    assert.deepEqual(b, a);
    assert.ok(primary.stats().finished > 0, "the random run finished some chunks");
  }
});

Deno.test("replication: event log drops history without followers and when over budget", () => {
  const log = new EventLog({ maxEvents: 10, followerTtlMs: 1000 });
  const ev: SchedulerEvent = { t: "assign", now: 0 };
  for (let i = 0; i < 5; i++) log.append(ev, 0);
  // Nobody followed yet: nothing kept, a follower must snapshot.
  assert.equal(log.lastSeq, 5);
  assert.equal(log.since(0, 1e9, 0), null);
  for (let i = 0; i < 5; i++) log.append(ev, 1);
  assert.equal(log.since(5, 1e9, 2)?.length, 5);
  for (let i = 0; i < 20; i++) log.append(ev, 3);
  assert.equal(log.since(5, 1e9, 4), null, "over maxEvents: old events gone");
  assert.equal(log.since(20, 1e9, 4)?.length, 10);
  assert.equal(log.since(31, 1e9, 4), null, "a position from the future (other epoch)");
  // Follower silent for longer than the TTL: history is dropped again.
  log.append(ev, 5000);
  assert.equal(log.since(30, 1e9, 5000), null);
});

const master = randomUuid();
const PROGRAM = { id: randomUuid(), size: 10 };

function dispatch(job: Uuid, n: number): Message {
  return {
    type: MessageType.JobDispatch,
    node: master,
    job,
    numChunks: n,
    timeLimitMs: 0,
    programId: PROGRAM.id,
    programSize: PROGRAM.size,
    argument: new Uint8Array(0),
    inputFiles: [],
    chunks: Array.from({ length: n }, (_, i) => ({ chunkIndex: i, attempt: 1 })),
  };
}

Deno.test("replication: standby follows, takes over when the primary dies, work completes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-balancer-standby-" });
  // Secure like a real pair: each balancer, fake worker and the master has its own key, and
  // the standby pulls the primary's state over CURVE with its balancer key.
  const keys = await TestKeys.make({
    names: { balancer: ["b1", "b2"], master: ["m1"], worker: ["A", "B", "C"] },
  });
  const primary = await spawnBalancer([
    "--listen",
    "tcp://127.0.0.1:0",
    "--data",
    `${dir}/p`,
    "--dead-after-ms",
    "3000",
  ], { keys, name: "b1" });
  const standby = await spawnBalancer([
    "--listen",
    "tcp://127.0.0.1:0",
    "--data",
    `${dir}/s`,
    "--dead-after-ms",
    "3000",
    "--standby-of",
    primary.ref,
    "--takeover-after-ms",
    "1000",
  ], { keys, name: "b2" });
  const eps = [primary.ref, standby.ref];
  const runs: Run[] = [];
  // Each chunk "runs" 150 ms, so the primary dies with chunks running and queued.
  const ws = ["A", "B", "C"].map((label) =>
    new FakeWorker({ endpoint: eps, auth: keys.creds(label), slots: 2, label, runs, runMs: 150 })
  );
  // Generous: a timeout here only turns a hang into a failure (a loaded machine is slow).
  const asMaster = { node: master, timeoutMs: 30_000, auth: keys.creds("m1") };
  const m = new RpcClient(standby.ref, asMaster);
  const mp = new RpcClient(primary.ref, asMaster);
  let primaryStopped = false;
  try {
    await Promise.all(ws.map((w) => w.start()));
    // The standby refuses work while it follows, and says who the primary is.
    await assert.rejects(
      m.request(dispatch(randomUuid(), 1)),
      (e: unknown) =>
        e instanceof RpcError && e.code === ErrorCode.Unavailable &&
        e.text.includes(primary.endpoint),
    );
    const job = randomUuid();
    await mp.request(dispatch(job, 40));
    await waitFor("some chunks ran on the primary", () => runs.length >= 12);
    // The standby has the primary's workers (replicated), and is not the leader.
    const nl = await m.request({ type: MessageType.NodeListRequest, node: master });
    assert.ok(nl.type === MessageType.NodeListResponse);
    if (nl.type === MessageType.NodeListResponse) {
      const me = nl.nodes.find((n) => n.role === NodeRole.Balancer)!;
      assert.equal(me.flags & NodeFlags.Leader, 0);
      assert.equal(nl.nodes.filter((n) => n.role === NodeRole.Worker).length, 3);
    }
    // Kill the primary hard (no goodbye), mid-job.
    primary.child.kill("SIGKILL");
    await primary.child.status;
    primaryStopped = true;
    const killedAt = Date.now();
    const doneBefore = new Set(runs.map((r) => `${r.chunk}`));
    // The standby takes over and the workers switch to it; the job completes there.
    await waitFor("all 40 chunks ran", () => new Set(runs.map((r) => r.chunk)).size === 40);
    const tookOverMs = Date.now() - killedAt;
    await waitFor("takeover log", () => standby.logs.some((l) => l.includes("standby took over")));
    // The new primary serves the master: a re-dispatch of the same job adds nothing new
    // except chunks it never heard of.
    const again = await m.request(dispatch(job, 40));
    assert.equal(again.type, MessageType.Ok);
    await waitFor("all chunks finished", () => ws.every((w) => w.holding.size === 0));
    // At-least-once across failover: a chunk runs at most once per balancer, and never again
    // once the standby knew it had finished; only chunks whose placement or end it had not
    // replicated yet at the kill may run twice. How many those are depends on how far the
    // long-poll lagged, i.e. on load (0 on an idle machine, 12 seen with the cores busy):
    // printed, not asserted.
    const perChunk = new Map<number, number>();
    for (const r of runs) perChunk.set(r.chunk, (perChunk.get(r.chunk) ?? 0) + 1);
    for (const [c, n] of perChunk) assert.ok(n <= 2, `chunk ${c} ran ${n} times`);
    const reruns = [...perChunk.values()].filter((n) => n > 1).length;
    const takeover = JSON.parse(standby.logs.find((l) => l.includes("standby took over"))!);
    assert.equal(typeof takeover.finished, "number", "finished count in the takeover log");
    assert.ok(
      reruns <= 40 - takeover.finished,
      `${reruns} re-runs, but the standby knew ${takeover.finished} of 40 chunks finished`,
    );
    assert.ok(doneBefore.size >= 12);
    const nl2 = await m.request({ type: MessageType.NodeListRequest, node: master });
    if (nl2.type === MessageType.NodeListResponse) {
      const me = nl2.nodes.find((n) => n.role === NodeRole.Balancer)!;
      assert.equal(me.flags & NodeFlags.Leader, NodeFlags.Leader);
    }
    console.log(
      `failover: all 40 chunks ran ${tookOverMs} ms after the kill; the standby knew ` +
        `${takeover.finished} finished; re-runs ${reruns}`,
    );
  } finally {
    await Promise.all([...ws.map((w) => w.close()), m.close(), mp.close()]);
    if (!primaryStopped) await primary.stop();
    else await primary.stop().catch(() => {});
    const st = await standby.stop();
    await keys.close();
    assert.equal(st.code, 0, standby.logs.join("\n"));
    await Deno.remove(dir, { recursive: true });
  }
});
