/**
 * RpcClient/RpcServer over real ZeroMQ sockets, secure like every node: the server and its
 * clients hold keys of one test keyring (tests/keys_helper.ts) and speak CURVE; the raw-frame
 * test also runs as an explicitly insecure variant (no keys on either side).
 */
import assert from "node:assert/strict";
import { RequestError, RpcClient, RpcError, RpcServer } from "../lib/rpc.ts";
import { createLogger } from "../lib/log.ts";
import { ErrorCode, type Message, MessageType, randomUuid } from "../wire/mod.ts";
import { Socket } from "../wire/zmq/mod.ts";
import { TestKeys } from "./keys_helper.ts";

const log = createLogger("test", "rpc", {}, () => {});

/** The server's key (a balancer: it may push `ok` to its clients) and its client's (a worker). */
const SERVER = "b1";
const CLIENT = "w1";

function makeKeys(): Promise<TestKeys> {
  return TestKeys.make({ names: { balancer: [SERVER], worker: [CLIENT] } });
}

Deno.test("rpc: concurrent requests complete out of order; errors and pushes travel", async () => {
  const keys = await makeKeys();
  const node = randomUuid();
  /** Who the server saw send each message type (the keyring name CURVE authenticated). */
  const senders = new Map<number, Set<string>>();
  const server = new RpcServer({
    node,
    log,
    auth: keys.creds(SERVER),
    handler: async (m: Message, _peer, from) => {
      senders.set(m.type, (senders.get(m.type) ?? new Set()).add(from?.name ?? "(insecure)"));
      if (m.type !== MessageType.Ok) throw new RequestError(ErrorCode.BadRequest, "only ok");
      // Later requests answer first.
      await new Promise((r) => setTimeout(r, 50 - m.value));
      return { type: MessageType.Ok, node, value: m.value * 2 };
    },
  });
  const ep = keys.ref(SERVER, server.bind("tcp://127.0.0.1:*"));
  const peerSeen = Promise.withResolvers<Uint8Array>();
  const routingId = new TextEncoder().encode("client-1");
  const client = new RpcClient(ep, {
    node: randomUuid(),
    routingId,
    auth: keys.creds(CLIENT),
    onRequest: (m) => {
      assert.equal(m.type, MessageType.Ok);
      return { type: MessageType.Ok, node, value: m.type === MessageType.Ok ? m.value + 1 : 0 };
    },
  });
  // job_list_request is a client's message (a worker key would be refused FORBIDDEN before the
  // handler): the admin client sends it, so the handler's own error travels back.
  const admin = new RpcClient(ep, { node: randomUuid(), auth: keys.creds("admin") });
  try {
    const replies = await Promise.all(
      Array.from(
        { length: 40 },
        (_, i) => client.request({ type: MessageType.Ok, node, value: i }),
      ),
    );
    assert.deepEqual(replies.map((r) => (r.type === MessageType.Ok ? r.value : -1)), [
      ...Array.from({ length: 40 }, (_, i) => i * 2),
    ]);
    await assert.rejects(
      admin.request({ type: MessageType.JobListRequest, node }),
      (e: unknown) =>
        e instanceof RpcError && e.code === ErrorCode.BadRequest && e.text === "only ok",
    );
    assert.deepEqual([...senders.get(MessageType.Ok)!], [CLIENT]);
    assert.deepEqual([...senders.get(MessageType.JobListRequest)!], ["admin"]);
    peerSeen.resolve(routingId);
    const pushed = await server.push(await peerSeen.promise, {
      type: MessageType.Ok,
      node,
      value: 41,
    });
    assert.equal(pushed.type === MessageType.Ok && pushed.value, 42);
  } finally {
    await admin.close();
    await client.close();
    await server.close();
    await keys.close();
  }
});

// Raw frames from a DEALER holding a valid key (CURVE), and the same without keys anywhere.
for (const secure of [true, false]) {
  const name = secure ? "rpc" : "rpc (insecure: no keys)";
  Deno.test(`${name}: malformed frames get BAD_MESSAGE and the server keeps serving`, async () => {
    const keys = secure ? await makeKeys() : null;
    const node = randomUuid();
    const server = new RpcServer({
      node,
      log,
      auth: keys ? keys.creds(SERVER) : null,
      handler: () => ({ type: MessageType.Ok, node, value: 7 }),
    });
    const bound = server.bind("tcp://127.0.0.1:*");
    const ep = keys ? keys.ref(SERVER, bound) : bound;
    const auth = keys ? keys.creds(CLIENT) : null;
    const raw = new Socket("DEALER", { linger: 0, ...(keys ? keys.rawCurve(CLIENT, SERVER) : {}) });
    raw.connect(bound);
    const id = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
    await raw.send([id, new Uint8Array([0xff, 1, 2, 3])]); // garbage
    const [rid, body] = await raw.receive();
    assert.deepEqual(rid, id);
    assert.equal(body[0], MessageType.Error);
    await raw.send([new Uint8Array([1, 2]), new Uint8Array(3)]); // bad id: dropped
    await raw.send([new Uint8Array(5)]); // bad envelope: dropped
    const client = new RpcClient(ep, { node: randomUuid(), auth });
    const r = await client.request({ type: MessageType.Ok, node, value: 0 });
    assert.equal(r.type === MessageType.Ok && r.value, 7);
    assert.equal(server.badFrames, 3);
    const nowhere = "tcp://127.0.0.1:1";
    const nobody = new RpcClient(keys ? keys.ref(SERVER, nowhere) : nowhere, { node, auth });
    await assert.rejects(
      nobody.request({ type: MessageType.Ok, node, value: 0 }, 100),
      (e: unknown) => e instanceof RpcError && e.code === ErrorCode.Unavailable,
    );
    await nobody.close();
    raw.close();
    await client.close();
    await server.close();
    await keys?.close();
  });
}
