/**
 * A real balancer process with fake workers and this test as the master, secure like every
 * real cluster: the balancer runs with its key, each fake worker with its own worker key, the
 * master with a master key (tests/keys_helper.ts), all over CURVE.
 */
import assert from "node:assert/strict";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import {
  decode,
  encode,
  ErrorCode,
  type FileEntry,
  type Message,
  MessageType,
  NodeRole,
  randomUuid,
  type Uuid,
  uuidToHex,
} from "../wire/mod.ts";
import { Socket } from "../wire/zmq/mod.ts";
import { FakeWorker, pushesDelivered, type Run, spawnBalancer } from "./balancer_helpers.ts";
import { waitFor } from "./wait.ts";
import { TestKeys } from "./keys_helper.ts";

const master = randomUuid();
/** The jobs' program: the balancer handles only its id and size (workers fetch it). */
const PROGRAM = { id: randomUuid(), size: 18 };

function dispatch(job: Uuid, numChunks: number, inputs: FileEntry[], only?: number[]): Message {
  const idx = only ?? Array.from({ length: numChunks }, (_, i) => i);
  return {
    type: MessageType.JobDispatch,
    node: master,
    job,
    numChunks,
    timeLimitMs: 0,
    programId: PROGRAM.id,
    programSize: PROGRAM.size,
    argument: new Uint8Array(0),
    inputFiles: inputs,
    chunks: idx.map((i) => ({ chunkIndex: i, attempt: 1 })),
  };
}

function countBy<T>(xs: T[], key: (x: T) => string): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of xs) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
  return m;
}

Deno.test("balancer process: exactly-once placement, locality, dead worker, bad frames", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-balancer-test-" });
  // One key per node: the fake workers' names are their labels.
  const keys = await TestKeys.make({
    names: { balancer: ["b1"], master: ["m1"], worker: ["A", "B", "C"] },
  });
  // 3 s without a heartbeat (fake workers send one every 100 ms) means dead: generous, so a
  // busy machine does not kill a healthy worker and break the exactly-once count.
  const bal = await spawnBalancer([
    "--listen",
    "tcp://127.0.0.1:0",
    "--data",
    dir,
    "--dead-after-ms",
    "3000",
  ], { keys, name: "b1" });
  const runs: Run[] = [];
  const fileA = randomUuid();
  const fileB = randomUuid();
  const fileC = randomUuid();
  const a = new FakeWorker({
    endpoint: bal.ref,
    auth: keys.creds("A"),
    slots: 2,
    files: [fileA],
    label: "A",
    runs,
  });
  const b = new FakeWorker({
    endpoint: bal.ref,
    auth: keys.creds("B"),
    slots: 3,
    files: [fileB],
    label: "B",
    runs,
  });
  const c = new FakeWorker({
    endpoint: bal.ref,
    auth: keys.creds("C"),
    slots: 4,
    label: "C",
    runs,
  });
  const m = new RpcClient(bal.ref, { node: master, timeoutMs: 10_000, auth: keys.creds("m1") });
  // A client key, for a request a master key may not send (that would be FORBIDDEN).
  const user = new RpcClient(bal.ref, { node: randomUuid(), auth: keys.creds("admin") });
  try {
    await Promise.all([a.start(), b.start(), c.start()]);

    // ---- node list: the balancer and its three workers.
    const nl = await m.request({ type: MessageType.NodeListRequest, node: master });
    assert.equal(nl.type, MessageType.NodeListResponse);
    if (nl.type === MessageType.NodeListResponse) {
      assert.equal(nl.nodes.filter((n) => n.role === NodeRole.Balancer).length, 1);
      const ws = nl.nodes.filter((n) => n.role === NodeRole.Worker);
      assert.deepEqual(ws.map((n) => n.name).sort(), ["A", "B", "C"]);
      assert.equal(ws.reduce((s, n) => s + n.slots, 0), 9);
    }

    // ---- locality: with room to spare, a job goes where its input bytes are.
    // C learns fileC through a heartbeat delta; B holds fileB since it registered.
    await c.addFiles([fileC]);
    const jc = randomUuid();
    const jb = randomUuid();
    await m.request(dispatch(jc, 3, [{ id: fileC, size: 1 << 20, name: "c" }]));
    await m.request(dispatch(jb, 3, [{ id: fileB, size: 1 << 20, name: "b" }]));
    await waitFor("6 locality runs", () => runs.length === 6);
    for (const r of runs) {
      const want = r.job === uuidToHex(jc) ? c.key : b.key;
      assert.equal(r.worker, want, `chunk ${r.job}/${r.chunk} ran on the wrong worker`);
    }
    runs.length = 0;

    // ---- 100 chunks in 3 jobs over 3 workers: each runs exactly once.
    const jobs = [randomUuid(), randomUuid(), randomUuid()];
    const sizes = [60, 30, 10];
    const inputs = [
      [{ id: fileA, size: 1000, name: "a" }],
      [],
      [{ id: fileB, size: 5000, name: "b" }],
    ];
    await Promise.all(jobs.map((j, i) => m.request(dispatch(j, sizes[i], inputs[i]))));
    // The master re-sends dispatches until it has results: the balancer must ignore them.
    const dup = await m.request(dispatch(jobs[0], 60, inputs[0]));
    assert.equal(dup.type, MessageType.Ok);
    await waitFor("100 runs", () => runs.length >= 100);
    await waitFor(
      "all chunks finished",
      () => a.holding.size + b.holding.size + c.holding.size === 0,
    );
    // One more duplicate dispatch after everything finished: nothing new runs.
    const dup2 = await m.request(dispatch(jobs[2], 10, inputs[2]));
    assert.equal(dup2.type === MessageType.Ok && dup2.value, 0);
    // Any placement the duplicate caused has reached its worker by now.
    await pushesDelivered([a, b, c]);
    assert.equal(runs.length, 100);
    const perChunk = countBy(runs, (r) => `${r.job}/${r.chunk}`);
    assert.equal(perChunk.size, 100);
    for (const [k, n] of perChunk) assert.equal(n, 1, `chunk ${k} ran ${n} times`);
    const perWorker = countBy(runs, (r) => r.worker);
    assert.equal(perWorker.size, 3, "all three workers got work");
    // The small job was not starved behind the 60-chunk one (first come, first served would
    // run it last, at positions 90..99): round-robin finishes it well before.
    const lastSmall = runs.findLastIndex((r) => r.job === uuidToHex(jobs[2]));
    assert.ok(lastSmall < 60, `small job's last chunk ran at position ${lastSmall}`);
    runs.length = 0;

    // ---- a worker that stops heartbeating: its chunks run elsewhere with attempt 2.
    c.hung = true;
    const jd = randomUuid();
    await m.request(dispatch(jd, 30, []));
    await waitFor("first attempts of 30 chunks", () => runs.length >= 30);
    const onC = runs.filter((r) => r.worker === c.key);
    assert.ok(onC.length > 0, "the hung worker got some chunks before it was declared dead");
    // After 3 s of silence those chunks are re-run on A or B.
    await waitFor("re-runs of the hung chunks", () => runs.length >= 30 + onC.length);
    const reruns = runs.slice(30);
    for (const r of reruns) {
      assert.notEqual(r.worker, c.key);
      assert.equal(r.attempt, 2);
      assert.ok(onC.some((x) => x.chunk === r.chunk), `chunk ${r.chunk} re-ran but was not lost`);
    }
    await waitFor("dead log line", () => bal.logs.some((l) => l.includes("worker dead")));
    const perChunkD = countBy(runs.filter((r) => r.worker !== c.key), (r) => String(r.chunk));
    assert.equal(perChunkD.size, 30, "every chunk ran on a live worker");
    // A late chunk_finished of the lost attempt is acknowledged but ignored (value 0)...
    const [late] = [...c.holding.values()];
    assert.equal(await c.sendFinished(late.job, late.chunk, late.attempt), 0);
    // ...and the dead worker's heartbeats are refused until it registers again.
    await assert.rejects(
      c.addFiles([]),
      (e: unknown) => e instanceof RpcError && e.code === ErrorCode.NotFound,
    );

    // ---- a refused request goes to another worker.
    await waitFor("re-runs finished", () => a.holding.size + b.holding.size === 0);
    runs.length = 0;
    a.refuseAll = true;
    const je = randomUuid();
    await m.request(dispatch(je, 2, [{ id: fileA, size: 1 << 20, name: "a" }]));
    await waitFor("refused chunks placed elsewhere", () => runs.length === 2);
    for (const r of runs) assert.equal(r.worker, b.key);

    // ---- malformed input: error replies, and the node keeps serving.
    // (From a DEALER holding the master's key: a frame from a stranger never gets this far.)
    const raw = new Socket("DEALER", { linger: 0, ...keys.rawCurve("m1", "b1") });
    raw.connect(bal.endpoint);
    const id = new Uint8Array([7, 0, 0, 0, 0, 0, 0, 0]);
    await raw.send([id, new Uint8Array([0xff, 1, 2, 3])]);
    const [rid, body] = await raw.receive();
    assert.deepEqual(rid, id);
    const err = decode(body);
    assert.equal(err.type, MessageType.Error);
    assert.equal(err.type === MessageType.Error && err.code, ErrorCode.BadMessage);
    // A truncated valid message.
    const good = encode(dispatch(randomUuid(), 1, []));
    await raw.send([id, good.subarray(0, good.length - 3)]);
    const [, body2] = await raw.receive();
    assert.equal((decode(body2) as { code?: number }).code, ErrorCode.BadMessage);
    // A bad envelope (no id frame) is dropped; a message the balancer does not serve is refused.
    await raw.send([new Uint8Array([1, 2, 3])]);
    await assert.rejects(
      user.request({ type: MessageType.JobListRequest, node: user.node }),
      (e: unknown) => e instanceof RpcError && e.code === ErrorCode.WrongRole,
    );
    // (The codec itself rejects a chunk index past num_chunks, so this is BAD_MESSAGE.)
    await assert.rejects(
      m.request(dispatch(randomUuid(), 2, [], [5])),
      (e: unknown) =>
        e instanceof RpcError &&
        (e.code === ErrorCode.BadMessage || e.code === ErrorCode.BadRequest) &&
        /chunk_index 5/.test(e.text),
    );
    raw.close();
    const nl2 = await m.request({ type: MessageType.NodeListRequest, node: master });
    assert.equal(nl2.type, MessageType.NodeListResponse);
  } finally {
    await Promise.all([a.close(), b.close(), c.close(), m.close(), user.close()]);
    const st = await bal.stop();
    await keys.close();
    assert.equal(st.code, 0, `balancer exit: ${JSON.stringify(st)}\n${bal.logs.join("\n")}`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("balancer process: register and heartbeat replies carry an interval that grows with the workers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-balancer-test-" });
  const keys = await TestKeys.make({ names: { balancer: ["b1"], worker: ["A"] } });
  // 10 heartbeats/s for the whole cluster: k workers are asked for one every k × 100 ms (>= 500).
  const bal = await spawnBalancer([
    "--listen",
    "tcp://127.0.0.1:0",
    "--data",
    dir,
    "--max-heartbeats-per-sec",
    "10",
  ], { keys, name: "b1" });
  const ids = Array.from({ length: 20 }, () => randomUuid());
  // Many node ids may share one worker key; each is bound to it and routed by its node id.
  const clients = ids.map((id) =>
    new RpcClient(bal.ref, { node: id, routingId: id, timeoutMs: 10_000, auth: keys.creds("A") })
  );
  try {
    const told: number[] = [];
    for (const [i, id] of ids.entries()) {
      const r = await clients[i].request({
        type: MessageType.WorkerRegister,
        node: id,
        slots: 1,
        freeSlots: 1,
        files: [],
        label: `w${i}`,
      });
      assert.equal(r.type, MessageType.Ok);
      told.push(r.type === MessageType.Ok ? r.value : -1);
    }
    assert.deepEqual(told, ids.map((_, i) => Math.max(500, (i + 1) * 100)));
    const hb = await clients[0].request({
      type: MessageType.WorkerHeartbeat,
      node: ids[0],
      slots: 1,
      freeSlots: 1,
      added: [],
      evicted: [],
    });
    assert.equal(hb.type === MessageType.Ok ? hb.value : -1, 2000);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    const st = await bal.stop();
    await keys.close();
    assert.equal(st.code, 0, `balancer exit: ${JSON.stringify(st)}\n${bal.logs.join("\n")}`);
    await Deno.remove(dir, { recursive: true });
  }
});
