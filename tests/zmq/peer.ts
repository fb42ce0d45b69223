/**
 * Peer process for tests/zmq_test.ts. Prints one line `READY <endpoint> <pid>` on stdout once
 * its socket is bound/connected, then serves until killed.
 *
 * Modes:
 * - `echo <bind-endpoint>`: ROUTER that sends every message back unchanged; a message whose
 *   body is "whoami" is answered with "pid:<pid>" instead (to tell restarted peers apart).
 * - `hello <connect-endpoint> <routing-id>`: DEALER that sends "hello" and then echoes every
 *   message it receives back with a "pid:<pid>" frame prepended.
 *
 * @module
 */

import { Socket } from "../../wire/zmq/mod.ts";

const [mode, endpoint, routingId] = Deno.args;
const enc = new TextEncoder();
const dec = new TextDecoder();
const pidFrame = enc.encode(`pid:${Deno.pid}`);

if (mode === "echo") {
  // Large HWMs and no size limit: the tests drive pipelining and 64 MiB messages through it.
  const router = new Socket("ROUTER", { sndhwm: 100_000, rcvhwm: 100_000 });
  const actual = router.bind(endpoint);
  console.log(`READY ${actual} ${Deno.pid}`);
  for await (const msg of router) {
    if (msg.length === 2 && dec.decode(msg[1]) === "whoami") {
      await router.send([msg[0], pidFrame]);
    } else {
      await router.send(msg);
    }
  }
} else if (mode === "hello") {
  const dealer = new Socket("DEALER", { routingId, reconnectIvl: 50 });
  dealer.connect(endpoint);
  await dealer.send(enc.encode("hello"));
  console.log(`READY ${endpoint} ${Deno.pid}`);
  for await (const msg of dealer) await dealer.send([pidFrame, ...msg]);
} else {
  console.error(`peer.ts: unknown mode ${mode}`);
  Deno.exit(2);
}
