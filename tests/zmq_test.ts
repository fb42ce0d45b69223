/**
 * wire/zmq: real libzmq sockets over loopback TCP, with peers in separate Deno processes
 * (tests/zmq/peer.ts). Every test ends with terminate() so no poll op, socket or context
 * outlives it (Deno's op/resource sanitizers stay on).
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  curveKeypair,
  openSocketCount,
  Socket,
  terminate,
  ZmqError,
  zmqHas,
  zmqVersion,
} from "../wire/zmq/mod.ts";
import { sendReleases } from "../wire/zmq/zerocopy.ts";
import { reactor } from "../wire/zmq/reactor.ts";
import { waitFor, within } from "./wait.ts";

const PEER = new URL("./zmq/peer.ts", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();

interface Peer {
  endpoint: string;
  pid: number;
  child: Deno.ChildProcess;
  /** SIGKILLs the peer (if still running) and releases its pipes. */
  stop(): Promise<void>;
}

/** Starts tests/zmq/peer.ts and waits for its READY line. */
async function startPeer(...args: string[]): Promise<Peer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", PEER, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await within(
      60_000,
      `READY from peer ${args.join(" ")}`,
      reader.read(),
    );
    if (done) {
      await child.status;
      throw new Error(`peer ${args.join(" ")} exited before READY; output: ${text}`);
    }
    text += value;
  }
  const [tag, endpoint, pid] = text.split("\n")[0].split(" ");
  assert.equal(tag, "READY", `peer printed ${text}`);
  let stopped = false;
  return {
    endpoint,
    pid: Number(pid),
    child,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await child.status;
      await reader.cancel();
    },
  };
}

function seqFrame(i: number): Uint8Array {
  const f = new Uint8Array(16);
  new DataView(f.buffer).setUint32(0, i, true);
  f.fill(i & 0xff, 4);
  return f;
}

function fdCount(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<ZmqError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ZmqError, `expected ZmqError, got ${e}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a rejection with ${code}`);
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A TCP relay in front of `target` (a tcp:// endpoint) that counts the connections the target
 * closed while the client still had it open: lets a test see a handshake refused, no sleeping.
 */
function startRelay(target: string) {
  const port = Number(target.split(":").at(-1));
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const served: Promise<void>[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 << 10);
    try {
      for (let n; (n = await from.read(buf)) !== null;) {
        for (let w = 0; w < n;) w += await to.write(buf.subarray(w, n));
      }
    } catch { /* closed: the relay is done with this connection */ }
  };
  const close = (c: Deno.Conn) => {
    try {
      c.close();
    } catch { /* already closed */ }
    conns.delete(c);
  };
  const relay = {
    endpoint: `tcp://127.0.0.1:${listener.addr.port}`,
    /** Connections the target closed first. */
    closedByTarget: 0,
    async close(): Promise<void> {
      listener.close();
      for (const c of [...conns]) close(c);
      await accepting;
      await Promise.all(served);
    },
  };
  const serve = async (down: Deno.Conn) => {
    let up: Deno.Conn;
    try {
      up = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch {
      return close(down);
    }
    conns.add(up);
    const first = await Promise.race([
      pump(down, up).then(() => "client"),
      pump(up, down).then(() => "target"),
    ]);
    if (first === "target") relay.closedByTarget++;
    close(up);
    close(down);
  };
  const accepting = (async () => {
    try {
      for await (const down of listener) {
        conns.add(down);
        served.push(serve(down));
      }
    } catch { /* listener closed */ }
  })();
  return relay;
}

Deno.test("zmq: version, capabilities, CURVE keypair", () => {
  const [major, minor] = zmqVersion();
  assert.ok(major === 4 && minor >= 3, `libzmq ${zmqVersion().join(".")}`);
  assert.ok(zmqHas("curve"));
  const { publicKey, secretKey } = curveKeypair();
  assert.equal(publicKey.length, 40);
  assert.equal(secretKey.length, 40);
  assert.notEqual(publicKey, curveKeypair().publicKey);
});

Deno.test("zmq: 100,000 pipelined messages ROUTER<->DEALER across processes, in order", async () => {
  const peer = await startPeer("echo", "tcp://127.0.0.1:*");
  try {
    assert.match(peer.endpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    const dealer = new Socket("DEALER", { sndhwm: 10_000, rcvhwm: 10_000 });
    dealer.connect(peer.endpoint);
    const N = 100_000;
    const started = performance.now();
    const sender = (async () => {
      for (let i = 0; i < N; i++) await dealer.send(seqFrame(i));
    })();
    let received = 0;
    const receiver = (async () => {
      for (let i = 0; i < N; i++, received++) {
        const msg = await dealer.receive();
        assert.equal(msg.length, 1);
        const seq = new DataView(msg[0].buffer, msg[0].byteOffset).getUint32(0, true);
        if (seq !== i) assert.fail(`message ${i}: got sequence ${seq} (lost or reordered)`);
        if (msg[0][15] !== (i & 0xff)) assert.fail(`message ${i}: corrupted payload`);
      }
    })();
    await within(300_000, "100k echoes", receiver).catch((e) => {
      throw new Error(`${e.message} (${received} received)`);
    });
    await sender;
    const secs = (performance.now() - started) / 1000;
    console.log(`  100k echoed round trips pipelined: ${(N / secs).toFixed(0)} msgs/s`);
  } finally {
    await terminate();
    await peer.stop();
  }
});

Deno.test("zmq: 64 MiB message round trip across processes, bytes intact", async () => {
  const peer = await startPeer("echo", "tcp://127.0.0.1:*");
  try {
    const dealer = new Socket("DEALER");
    dealer.connect(peer.endpoint);
    const big = new Uint8Array(64 << 20);
    // Position-dependent pattern: a shifted or truncated copy cannot compare equal.
    const words = new Uint32Array(big.buffer);
    for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 2654435761) ^ (i >>> 7);
    const head = enc.encode("big");
    await dealer.send([head, big]);
    const reply = await within(120_000, "the 64 MiB echo", dealer.receive());
    assert.equal(reply.length, 2);
    assert.equal(dec.decode(reply[0]), "big");
    assert.equal(reply[1].byteLength, big.byteLength);
    assert.ok(Buffer.from(reply[1].buffer).equals(Buffer.from(big.buffer)), "64 MiB differ");
  } finally {
    await terminate();
    await peer.stop();
  }
});

Deno.test("zmq: zero-copy send (opt-in) and receive (default) keep bytes intact and release frames", async () => {
  const peer = await startPeer("echo", "tcp://127.0.0.1:*");
  try {
    // Receives of frames >= 64 KiB are zero-copy by default.
    const dealer = new Socket("DEALER", { zeroCopySendMin: 65536 });
    dealer.connect(peer.endpoint);
    const backing = new Uint8Array((8 << 20) + 24);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 7 + (i >>> 11)) & 0xff;
    // A view with a byte offset: the pointer handed to libzmq must start at the view.
    const big = backing.subarray(24);
    const small = enc.encode("small frames are still copied");
    const rounds = 20;
    for (let i = 0; i < rounds; i++) await dealer.send([small, big]);
    for (let i = 0; i < rounds; i++) {
      const [s, b] = await within(60_000, `zero-copy echo ${i}`, dealer.receive());
      assert.equal(dec.decode(s), dec.decode(small));
      assert.equal(b.byteLength, big.byteLength);
      assert.ok(Buffer.from(b.buffer, b.byteOffset, b.byteLength).equals(Buffer.from(big)));
    }
    // Every frame went out and came back, so libzmq has released all the sent ones.
    await waitFor("every zero-copy frame to be released", () => {
      sendReleases.sweep();
      return sendReleases.inFlight === 0;
    }, { timeoutMs: 10_000, intervalMs: 10, detail: () => `${sendReleases.inFlight} in flight` });
    // A failed zero-copy send (unknown ROUTER peer) gives its slot back at once.
    const router = new Socket("ROUTER", { zeroCopySendMin: 65536 });
    await rejectsWith(router.send([enc.encode("nobody"), big]), "EHOSTUNREACH");
    assert.equal(sendReleases.inFlight, 0);
  } finally {
    await terminate();
    await peer.stop();
  }
});

Deno.test("zmq: peer SIGKILLed and restarted on the same port is reached again", async () => {
  let peer = await startPeer("echo", "tcp://127.0.0.1:*");
  try {
    const dealer = new Socket("DEALER", { reconnectIvl: 50, reconnectIvlMax: 200 });
    dealer.connect(peer.endpoint);
    const whoami = async () => {
      await dealer.send(enc.encode("whoami"));
      return dec.decode((await within(30_000, "whoami reply", dealer.receive()))[0]);
    };
    assert.equal(await whoami(), `pid:${peer.pid}`);
    const endpoint = peer.endpoint;
    await peer.stop();
    // Queued while the peer is down; libzmq delivers it once the new peer accepts.
    const pending = whoami();
    peer = await startPeer("echo", endpoint);
    assert.equal(await pending, `pid:${peer.pid}`);
    assert.equal(await whoami(), `pid:${peer.pid}`);
  } finally {
    await terminate();
    await peer.stop();
  }
});

Deno.test("zmq: ROUTER reaches a DEALER peer that was SIGKILLed and restarted", async () => {
  const router = new Socket("ROUTER", { routerHandover: true });
  const endpoint = router.bind("tcp://127.0.0.1:*");
  let peer = await startPeer("hello", endpoint, "worker-1");
  try {
    const id = enc.encode("worker-1");
    const hello = await within(30_000, "hello from the peer", router.receive());
    assert.equal(dec.decode(hello[0]), "worker-1");
    await router.send([id, enc.encode("ping")]);
    let reply = await within(30_000, "ping echo", router.receive());
    assert.deepEqual(reply.slice(1).map((f) => dec.decode(f)), [`pid:${peer.pid}`, "ping"]);
    await peer.stop();
    // The dead peer's routing id disappears once libzmq notices the closed connection;
    // ROUTER_MANDATORY turns sends to it into EHOSTUNREACH instead of silent drops.
    const e = await waitFor("a send to the killed peer to fail", async () => {
      try {
        await router.send([id, enc.encode("lost?")]);
        return null;
      } catch (e) {
        return e;
      }
    }, { timeoutMs: 20_000, intervalMs: 10 });
    assert.ok(e instanceof ZmqError && e.code === "EHOSTUNREACH", String(e));
    assert.match(e.message, /ROUTER socket #\d+ \(tcp:\/\/127\.0\.0\.1:\d+\)/);
    peer = await startPeer("hello", endpoint, "worker-1");
    const again = await within(30_000, "hello from the restarted peer", router.receive());
    assert.equal(dec.decode(again[0]), "worker-1");
    await router.send([id, enc.encode("again")]);
    reply = await within(30_000, "echo from the restarted peer", router.receive());
    assert.deepEqual(reply.slice(1).map((f) => dec.decode(f)), [`pid:${peer.pid}`, "again"]);
  } finally {
    await terminate();
    await peer.stop();
  }
});

Deno.test("zmq: close while a receive waits rejects it (code closed), iterator ends", async () => {
  try {
    const dealer = new Socket("DEALER");
    dealer.connect("tcp://127.0.0.1:1"); // nothing listens: the receive can only wait
    const pending = dealer.receive();
    const second = dealer.receive();
    const iterated = (async () => {
      const pull = new Socket("PULL");
      pull.bind("tcp://127.0.0.1:*");
      setTimeout(() => pull.close(), 30);
      let n = 0;
      for await (const _ of pull) n++;
      return n;
    })();
    await delay(30);
    dealer.close();
    dealer.close(); // idempotent
    const e = await rejectsWith(pending, "closed");
    assert.match(e.message, /receive failed on DEALER socket #\d+/);
    await rejectsWith(second, "closed");
    assert.equal(await iterated, 0);
    await rejectsWith(dealer.receive(), "closed");
    await rejectsWith(dealer.send(enc.encode("x")), "closed");
    assert.throws(() => dealer.connect("tcp://127.0.0.1:2"), ZmqError);
    assert.ok(dealer.closed);
  } finally {
    await terminate();
  }
});

Deno.test("zmq: 1,000 sockets opened and closed leak no fds", async () => {
  await terminate();
  const before = fdCount();
  const sockets: Socket[] = [];
  const waits: Promise<unknown>[] = [];
  for (let i = 0; i < 1000; i++) {
    const s = new Socket(i % 2 ? "DEALER" : "ROUTER");
    if (i % 4 === 0) s.bind("tcp://127.0.0.1:*");
    else if (i % 4 === 1) s.connect(sockets[i - 1].endpoints[0]);
    // Half of them wait in the reactor when closed.
    if (i % 2 === 0) waits.push(s.receive().catch((e) => e));
    sockets.push(s);
  }
  assert.equal(openSocketCount(), 1000);
  assert.ok(fdCount() > before + 1000, "sockets should hold fds while open");
  for (const s of sockets) s.close();
  const errors = await Promise.all(waits);
  assert.ok(errors.every((e) => e instanceof ZmqError && e.code === "closed"));
  assert.equal(openSocketCount(), 0);
  await terminate();
  assert.equal(fdCount(), before, "fds left after closing 1,000 sockets and terminating");
});

Deno.test("zmq: HWM back-pressure with ROUTER_MANDATORY: sends wait, nothing dropped", async () => {
  try {
    // Small kernel buffers and HWMs so the queue fills after a few messages.
    const router = new Socket("ROUTER", { sndhwm: 4, sndbuf: 4096 });
    const endpoint = router.bind("tcp://127.0.0.1:*");
    const dealer = new Socket("DEALER", { routingId: "slow", rcvhwm: 4, rcvbuf: 4096 });
    dealer.connect(endpoint);
    // A second peer, reading: its messages mark how far the ROUTER got.
    const marker = new Socket("DEALER", { routingId: "marker" });
    marker.connect(endpoint);
    await dealer.send(enc.encode("hi")); // lets the ROUTER learn the routing ids
    await marker.send(enc.encode("hi"));
    await within(30_000, "hi from both peers", Promise.all([router.receive(), router.receive()]));
    const id = enc.encode("slow");
    const N = 2000;
    const body = new Uint8Array(16 << 10);
    let resolved = 0;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      const frame = body.slice();
      new DataView(frame.buffer).setUint32(0, i, true);
      sends.push(router.send([id, frame]).then(() => void resolved++));
    }
    await waitFor("a first send to complete", () => resolved > 0);
    // A message sent to the other peer after all of them has been delivered: the sends had
    // every chance to complete. 2,000 x 16 KiB = 32 MiB cannot all fit in HWMs plus small
    // kernel buffers, so without a reader some must still wait.
    await router.send([enc.encode("marker"), enc.encode("after")]);
    await within(30_000, "the marker message", marker.receive());
    assert.ok(resolved < N, `all ${N} sends completed without a reader: nothing pushed back`);
    await within(
      120_000,
      `${N} messages to the slow peer`,
      (async () => {
        for (let i = 0; i < N; i++) {
          const [frame] = await dealer.receive();
          assert.equal(frame.byteLength, body.byteLength);
          const seq = new DataView(frame.buffer).getUint32(0, true);
          if (seq !== i) assert.fail(`expected message ${i}, got ${seq}`);
        }
      })(),
    );
    await within(30_000, "all sends", Promise.all(sends));
    assert.equal(resolved, N);
    // Unknown peer: an error with context instead of a silent drop.
    const e = await rejectsWith(router.send([enc.encode("nobody"), body]), "EHOSTUNREACH");
    assert.match(e.message, /send failed on ROUTER socket/);
    assert.equal(e.errno, 113);
  } finally {
    await terminate();
  }
});

Deno.test("zmq: a ROUTER peer at its HWM holds back only its own messages", async () => {
  try {
    const router = new Socket("ROUTER", { sndhwm: 2, sndbuf: 4096 });
    const endpoint = router.bind("tcp://127.0.0.1:*");
    const slow = new Socket("DEALER", { routingId: "slow", rcvhwm: 2, rcvbuf: 4096 });
    const fast = new Socket("DEALER", { routingId: "fast" });
    slow.connect(endpoint);
    fast.connect(endpoint);
    await slow.send(enc.encode("hi"));
    await fast.send(enc.encode("hi"));
    await within(30_000, "hi from both peers", Promise.all([router.receive(), router.receive()]));
    const body = new Uint8Array(16 << 10);
    const N = 1000;
    let slowDone = 0;
    const slowSends: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      const frame = body.slice();
      new DataView(frame.buffer).setUint32(0, i, true);
      slowSends.push(router.send([enc.encode("slow"), frame]).then(() => void slowDone++));
    }
    // 16 MiB for a peer that does not read: most of it has to wait, while messages to another
    // peer, queued after them, still go through.
    const fastSends: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) fastSends.push(router.send([enc.encode("fast"), seqFrame(i)]));
    for (let i = 0; i < 100; i++) {
      const [f] = await within(10_000, "message to the fast peer", fast.receive());
      assert.equal(new DataView(f.buffer).getUint32(0, true), i);
    }
    await within(10_000, "sends to the fast peer", Promise.all(fastSends));
    assert.ok(slowDone < N, "the slow peer's queue drained without a reader");
    await within(
      120_000,
      `${N} messages to the slow peer`,
      (async () => {
        for (let i = 0; i < N; i++) {
          const [f] = await slow.receive();
          const seq = new DataView(f.buffer).getUint32(0, true);
          if (seq !== i) assert.fail(`slow peer: expected ${i}, got ${seq}`);
        }
      })(),
    );
    await within(30_000, "sends to the slow peer", Promise.all(slowSends));
  } finally {
    await terminate();
  }
});

Deno.test("zmq: PUB/SUB prefix filtering and PUSH/PULL, multipart and empty frames", async () => {
  try {
    const pub = new Socket("PUB");
    const ep = pub.bind("tcp://127.0.0.1:*");
    const sub = new Socket("SUB", { subscribe: "jobs." });
    sub.connect(ep);
    const sub2 = new Socket("SUB");
    sub2.subscribe("");
    sub2.connect(ep);
    // Subscriptions travel asynchronously: publish until both subscribers got something.
    let got: Uint8Array[] | undefined;
    let got2: Uint8Array[] | undefined;
    sub.receive().then((m) => got = m);
    sub2.receive().then((m) => got2 = m);
    await waitFor("both subscribers to get a message", async () => {
      if (got && got2) return true;
      await pub.send([enc.encode("other"), enc.encode("x")]);
      await pub.send([enc.encode("jobs.1"), new Uint8Array(0), enc.encode("payload")]);
      return false;
    }, { intervalMs: 10 });
    assert.deepEqual(got!.map((f) => dec.decode(f)), ["jobs.1", "", "payload"]);
    assert.ok(["other", "jobs.1"].includes(dec.decode(got2![0])));

    const pull = new Socket("PULL");
    const pep = pull.bind("tcp://127.0.0.1:*");
    const push = new Socket("PUSH");
    push.connect(pep);
    await push.send([new Uint8Array([1]), new Uint8Array([2, 3])]);
    const pulled = await within(30_000, "the pushed message", pull.receive());
    assert.deepEqual(pulled.map((f) => [...f]), [[1], [2, 3]]);
  } finally {
    await terminate();
  }
});

Deno.test("zmq: CURVE encryption between ROUTER server and DEALER client", async () => {
  let relay: ReturnType<typeof startRelay> | undefined;
  try {
    const server = curveKeypair();
    const client = curveKeypair();
    const router = new Socket("ROUTER", {
      curveServer: true,
      curveSecretKey: server.secretKey,
      curvePublicKey: server.publicKey,
    });
    const ep = router.bind("tcp://127.0.0.1:*");
    // Both clients go through a TCP relay, which sees the server close a refused handshake.
    relay = startRelay(ep);
    const dealer = new Socket("DEALER", {
      curveServerKey: server.publicKey,
      curvePublicKey: client.publicKey,
      curveSecretKey: client.secretKey,
    });
    dealer.connect(relay.endpoint);
    await dealer.send(enc.encode("secret"));
    const [from, body] = await within(30_000, "the client's message", router.receive());
    assert.equal(dec.decode(body), "secret");
    await router.send([from, enc.encode("ok")]);
    assert.equal(dec.decode((await within(30_000, "the reply", dealer.receive()))[0]), "ok");

    // A client with the wrong server key never gets through.
    const wrong = new Socket("DEALER", {
      curveServerKey: curveKeypair().publicKey,
      curvePublicKey: client.publicKey,
      curveSecretKey: client.secretKey,
    });
    wrong.connect(relay.endpoint);
    await wrong.send(enc.encode("intruder"));
    const probe = router.receive();
    let leaked = false;
    probe.then(() => leaked = true, () => {});
    // The server hangs up on its handshake, and again on the one after the reconnect: the
    // message has nowhere to go but a completed handshake.
    await waitFor(
      "the server to refuse two handshakes",
      () => leaked || relay!.closedByTarget >= 2,
    );
    assert.equal(leaked, false, "message from a client with a wrong server key arrived");
  } finally {
    await relay?.close();
    await terminate();
  }
});

Deno.test("zmq: options and errors carry context", async () => {
  try {
    const r = new Socket("ROUTER");
    const ep = r.bind("tcp://127.0.0.1:*");
    const port = Number(ep.split(":").at(-1));
    assert.ok(port > 0);
    const other = new Socket("ROUTER");
    const e = (() => {
      try {
        other.bind(ep);
      } catch (err) {
        return err;
      }
    })();
    assert.ok(e instanceof ZmqError && e.code === "EADDRINUSE", String(e));
    assert.match(e.message, /bind failed on ROUTER socket #\d+ \(tcp:\/\/127\.0\.0\.1:\d+\)/);
    assert.throws(() => other.connect("nonsense://x"), (err: unknown) => {
      return err instanceof ZmqError && err.code === "EPROTONOSUPPORT";
    });
    assert.throws(() => new Socket("REQ" as "DEALER"), ZmqError);
    r.unbind(ep);
    // The listener closes on libzmq's I/O thread shortly after unbind returns.
    await waitFor("the port to be free again after unbind", () => {
      try {
        return other.bind(ep) === ep;
      } catch (err) {
        if (!(err instanceof ZmqError) || err.code !== "EADDRINUSE") throw err;
        return false;
      }
    }, { intervalMs: 10 });
    assert.throws(() => other.disconnect("tcp://127.0.0.1:9"), ZmqError);

    // MAXMSGSIZE: an oversized message drops the connection instead of being delivered.
    const pull = new Socket("PULL", { maxMsgSize: 100 });
    const pep = pull.bind("tcp://127.0.0.1:*");
    const push = new Socket("PUSH", { immediate: true, heartbeatIvl: 100, heartbeatTimeout: 300 });
    push.connect(pep);
    const got: number[] = [];
    (async () => {
      for await (const [f] of pull) got.push(f.byteLength);
    })();
    await push.send(new Uint8Array(50));
    await waitFor("the 50-byte message", () => got.length > 0, { intervalMs: 10 });
    await push.send(new Uint8Array(500));
    // The oversized message costs the connection; the PUSH notices (heartbeats) and reconnects.
    // A message sent after it arriving shows it was not delivered: on one connection messages
    // arrive in order, and it cannot have gone on a later one.
    await waitFor("a 60-byte message sent after the oversized one", async () => {
      if (got.length > 1) return true;
      await push.send(new Uint8Array(60));
      return false;
    }, { intervalMs: 100 });
    assert.equal(got[0], 50);
    assert.ok(
      got.slice(1).every((n) => n === 60),
      `a message above MAXMSGSIZE was delivered: ${got}`,
    );
  } finally {
    await terminate();
  }
});

Deno.test("zmq: the brief wait serves round trips and never holds the event loop while idle", async () => {
  const peer = await startPeer("echo", "tcp://127.0.0.1:*");
  try {
    const dealer = new Socket("DEALER");
    dealer.connect(peer.endpoint);
    const tried0 = reactor.briefHits + reactor.briefMisses;
    for (let i = 0; i < 200; i++) {
      const body = enc.encode(`ping ${i}`);
      await dealer.send(body);
      const [got] = await within(30_000, `echo ${i}`, dealer.receive());
      assert.equal(dec.decode(got), `ping ${i}`);
    }
    // Answers within the brief wait are taken on the JS thread; how many depends on the load.
    assert.ok(reactor.briefHits + reactor.briefMisses > tried0, "brief waits were attempted");
    // A receive nobody answers: the brief wait times out and backs off, so timers and other
    // I/O keep running while the receive waits on the pool.
    const pending = dealer.receive();
    let ticks = 0;
    for (let i = 0; i < 20; i++) {
      await within(
        10_000,
        `timer ${i} while a receive waits`,
        new Promise((r) => setTimeout(r, 5)),
      );
      ticks++;
    }
    assert.equal(ticks, 20);
    dealer.close();
    await assert.rejects(pending, (e: unknown) => e instanceof ZmqError && e.code === "closed");
  } finally {
    await terminate();
    await peer.stop();
  }
});
