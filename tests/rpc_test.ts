import assert from "node:assert/strict";
import { RequestError, RpcClient, RpcError, RpcServer } from "../lib/rpc.ts";
import { createLogger } from "../lib/log.ts";
import { ErrorCode, type Message, MessageType, randomUuid } from "../wire/mod.ts";
import { Socket } from "../wire/zmq/mod.ts";

const log = createLogger("test", "rpc", {}, () => {});

Deno.test("rpc: concurrent requests complete out of order; errors and pushes travel", async () => {
  const node = randomUuid();
  const server = new RpcServer({
    node,
    log,
    handler: async (m: Message) => {
      if (m.type !== MessageType.Ok) throw new RequestError(ErrorCode.BadRequest, "only ok");
      // Later requests answer first.
      await new Promise((r) => setTimeout(r, 50 - m.value));
      return { type: MessageType.Ok, node, value: m.value * 2 };
    },
  });
  const ep = server.bind("tcp://127.0.0.1:*");
  const peerSeen = Promise.withResolvers<Uint8Array>();
  const routingId = new TextEncoder().encode("client-1");
  const client = new RpcClient(ep, {
    node: randomUuid(),
    routingId,
    onRequest: (m) => {
      assert.equal(m.type, MessageType.Ok);
      return { type: MessageType.Ok, node, value: m.type === MessageType.Ok ? m.value + 1 : 0 };
    },
  });
  const replies = await Promise.all(
    Array.from({ length: 40 }, (_, i) => client.request({ type: MessageType.Ok, node, value: i })),
  );
  assert.deepEqual(replies.map((r) => (r.type === MessageType.Ok ? r.value : -1)), [
    ...Array.from({ length: 40 }, (_, i) => i * 2),
  ]);
  await assert.rejects(
    client.request({ type: MessageType.JobListRequest, node }),
    (e: unknown) =>
      e instanceof RpcError && e.code === ErrorCode.BadRequest && e.text === "only ok",
  );
  peerSeen.resolve(routingId);
  const pushed = await server.push(await peerSeen.promise, {
    type: MessageType.Ok,
    node,
    value: 41,
  });
  assert.equal(pushed.type === MessageType.Ok && pushed.value, 42);
  await client.close();
  await server.close();
});

Deno.test("rpc: malformed frames get BAD_MESSAGE and the server keeps serving", async () => {
  const node = randomUuid();
  const server = new RpcServer({
    node,
    log,
    handler: () => ({ type: MessageType.Ok, node, value: 7 }),
  });
  const ep = server.bind("tcp://127.0.0.1:*");
  const raw = new Socket("DEALER", { linger: 0 });
  raw.connect(ep);
  const id = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
  await raw.send([id, new Uint8Array([0xff, 1, 2, 3])]); // garbage
  const [rid, body] = await raw.receive();
  assert.deepEqual(rid, id);
  assert.equal(body[0], MessageType.Error);
  await raw.send([new Uint8Array([1, 2]), new Uint8Array(3)]); // bad id: dropped
  await raw.send([new Uint8Array(5)]); // bad envelope: dropped
  const client = new RpcClient(ep, { node: randomUuid() });
  const r = await client.request({ type: MessageType.Ok, node, value: 0 });
  assert.equal(r.type === MessageType.Ok && r.value, 7);
  assert.equal(server.badFrames, 3);
  const nobody = new RpcClient("tcp://127.0.0.1:1", { node });
  await assert.rejects(
    nobody.request({ type: MessageType.Ok, node, value: 0 }, 100),
    (e: unknown) => e instanceof RpcError && e.code === ErrorCode.Unavailable,
  );
  await nobody.close();
  raw.close();
  await client.close();
  await server.close();
});
