/**
 * libzmq through Deno FFI: ROUTER/DEALER/PUB/SUB/PUSH/PULL sockets with promise-based
 * multipart send/receive, integrated with the event loop by one poll(2) reactor per process.
 *
 * ```ts
 * const router = new Socket("ROUTER");
 * const endpoint = router.bind("tcp://127.0.0.1:*");
 * const dealer = new Socket("DEALER");
 * dealer.connect(endpoint);
 * await dealer.send([new TextEncoder().encode("hi")]);
 * const [peer, body] = await router.receive();
 * ```
 *
 * @module
 */

export {
  type Bytes,
  curveKeypair,
  openSocketCount,
  Socket,
  type SocketOptions,
  type SocketType,
  terminate,
  ZmqError,
  type ZmqErrorContext,
  zmqHas,
  zmqVersion,
} from "./socket.ts";
