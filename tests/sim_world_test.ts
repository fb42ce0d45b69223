/**
 * The simulator's world (tests/sim/world/): virtual time orders timers by (due, sequence) and
 * dies with a crashed node; the simulated network carries real wire frames, answers like
 * RpcServer/RpcClient (errors, timeouts, pushes to a channel by routing id), loses what a cut or a
 * crash loses, and a seeded faulty run replays exactly.
 */
import assert from "node:assert/strict";
import { mulberry32, SimClock } from "./sim/world/clock.ts";
import { SimNet } from "./sim/world/net.ts";
import { ErrorCode, type Message, MessageType } from "../wire/mod.ts";
import { RequestError, RpcError } from "../lib/rpc.ts";
import { sleep } from "../lib/clock.ts";

const NODE = new Uint8Array(16);
const ok = (): Message => ({ type: MessageType.Ok, node: NODE, value: 0 });
/** The RpcError `p` rejects with (fails if it resolves or rejects with something else). */
async function rejection(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RpcError, `not an RpcError: ${e}`);
    return e;
  }
  throw new assert.AssertionError({ message: "expected a rejection" });
}
const status = (b: number): Message => ({
  type: MessageType.JobStatusRequest,
  node: NODE,
  job: new Uint8Array(16).fill(b),
});

Deno.test("sim clock: timers fire by (due, sequence); intervals repeat; a node's timers die with it", async () => {
  const c = new SimClock();
  const seen: string[] = [];
  c.setTimeout(() => seen.push("b10"), 10);
  c.setTimeout(() => seen.push("a5"), 5);
  c.setTimeout(() => seen.push("c10"), 10);
  const iv = c.setInterval(() => seen.push(`i@${c.monotonic()}`), 4);
  const n = c.forNode();
  n.setTimeout(() => seen.push("node"), 7);
  n.setInterval(() => seen.push("node-iv"), 3);
  c.setTimeout(() => n.stopAll(), 6.5);
  c.setTimeout(() => c.clearInterval(iv), 12.5);
  // A promise chain a timer starts runs to its end before the next timer fires.
  c.setTimeout(async () => {
    await Promise.resolve();
    await sleep(c, 0);
    seen.push(`chain@${c.monotonic()}`);
  }, 1);
  await c.run(100);
  assert.deepEqual(seen, [
    "chain@1",
    "node-iv",
    "i@4",
    "a5",
    "node-iv",
    "i@8",
    "b10",
    "c10",
    "i@12",
  ]);
  assert.deepEqual(c.monotonic(), 100);
  // Virtual time may be fractional (as performance.now()); wall-clock time is whole ms.
  let at: number[] = [];
  c.setTimeout(() => at = [c.monotonic(), c.now() % 1], 0.4);
  await c.run(200);
  assert.deepEqual(at, [100.4, 0]);
  // A node whose clock runs 25 % fast: its 100 ms are 80 ms of virtual time.
  const fast = c.forNode();
  fast.setRate(1.25);
  const t0 = fast.monotonic();
  let fired: number[] = [];
  fast.setTimeout(() => fired = [c.monotonic(), fast.monotonic() - t0], 100);
  await c.run(1000);
  assert.deepEqual(fired, [280, 100]);
  assert.deepEqual(c.pending, 0);
});

Deno.test("sim net: requests, error replies, one-way sends, pushes by routing id, cuts and crashes", async () => {
  const clock = new SimClock();
  const net = new SimNet(clock, mulberry32(1));
  const a = net.host("a");
  const b = net.host("b");
  const oneWay: number[] = [];
  let routing: Uint8Array | null = null;
  const srv = b.listen("tcp://b:1", (msg, peer) => {
    routing = peer;
    if (msg.type === MessageType.RaftMessage) {
      oneWay.push(msg.data[0]);
      return null;
    }
    if (msg.type === MessageType.JobStatusRequest && msg.job[0] === 9) {
      throw new RequestError(ErrorCode.NotFound, "no such job");
    }
    return ok();
  });
  const pushed: Message[] = [];
  const ch = a.dial("b@tcp://b:1", {
    node: NODE,
    timeoutMs: 50,
    onRequest: (m) => {
      pushed.push(m);
      return ok();
    },
  });
  const done: string[] = [];
  const run = async () => {
    assert.deepEqual((await ch.request(status(1))).type, MessageType.Ok);
    const e = await rejection(ch.request(status(9)));
    assert.deepEqual([e.code, e.kind, e.text], [ErrorCode.NotFound, "remote", "no such job"]);
    await ch.send({ type: MessageType.RaftMessage, node: NODE, data: new Uint8Array([7]) });
    await sleep(a.clock, 10);
    assert.deepEqual(oneWay, [7]);
    // The server pushes to the channel by the routing id it saw.
    assert.deepEqual((await srv.push(routing!, status(2))).type, MessageType.Ok);
    assert.deepEqual(pushed.length, 1);
    // A cut from b to a loses the reply: the request times out on virtual time.
    net.cut("b", "a");
    const t0 = clock.monotonic();
    const t = await rejection(ch.request(status(1)));
    assert.deepEqual(t.kind, "timeout");
    assert.deepEqual(clock.monotonic() - t0, 50);
    net.heal();
    assert.deepEqual((await ch.request(status(1))).type, MessageType.Ok);
    // A crashed server answers nothing; once it listens again, requests go through.
    b.crash();
    const c = await rejection(ch.request(status(1)));
    assert.deepEqual(c.kind, "timeout");
    b.restart();
    b.listen("tcp://b:1", () => ok());
    assert.deepEqual((await ch.request(status(1))).type, MessageType.Ok);
    done.push("all");
  };
  const p = run();
  await clock.run(10_000);
  await p;
  assert.deepEqual(done, ["all"]);
  assert.ok(net.stats.cut >= 1 && net.stats.unrouted >= 1);
});

/** One seeded run with every fault on: the trace of what arrived when. */
async function faultyRun(seed: number): Promise<string[]> {
  const clock = new SimClock();
  const net = new SimNet(clock, mulberry32(seed), {
    drop: 0.2,
    duplicate: 0.2,
    minDelayMs: 1,
    maxDelayMs: 20,
    slow: 0.1,
    slowDelayMs: 200,
  });
  const trace: string[] = [];
  net.host("s").listen("tcp://s:1", (m) => {
    if (m.type === MessageType.JobStatusRequest) trace.push(`req ${m.job[0]}@${clock.monotonic()}`);
    return ok();
  });
  const ch = net.host("c").dial("tcp://s:1", { node: NODE, timeoutMs: 100 });
  for (let i = 0; i < 50; i++) {
    clock.setTimeout(() => {
      ch.request(status(i)).then(
        () => trace.push(`ok ${i}@${clock.monotonic()}`),
        (e) => trace.push(`${e.kind} ${i}@${clock.monotonic()}`),
      );
    }, i * 3);
  }
  await clock.run(5000);
  return trace;
}

Deno.test("sim net: a faulty run (drops, duplicates, delays, reordering) replays exactly by seed", async () => {
  const a = await faultyRun(42);
  const b = await faultyRun(42);
  const c = await faultyRun(43);
  assert.deepEqual(a, b);
  assert.ok(JSON.stringify(a) !== JSON.stringify(c), "another seed, another run");
  const served = a.filter((s) => s.startsWith("req")).map((s) => Number(s.split(/[ @]/)[1]));
  assert.ok(served.length > new Set(served).size, "some request was duplicated");
  assert.ok(a.some((s) => s.startsWith("timeout")), "some request was lost");
  const order = served.filter((x, i) => served.indexOf(x) === i);
  assert.ok(order.some((x, i) => i > 0 && x < order[i - 1]), "some requests were reordered");
  // Every request settled exactly once.
  assert.deepEqual(a.filter((s) => !s.startsWith("req")).length, 50);
});
