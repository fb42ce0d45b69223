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
 * Semantics worth knowing:
 * - `send` resolves once libzmq accepted every frame (it waits only at the high-water mark);
 *   frames must not be modified until then. Messages leave in call order; on a ROUTER, order
 *   is kept per peer and a peer at its HWM does not hold back messages to other peers.
 * - ROUTER sockets set ROUTER_MANDATORY by default: an unknown routing id rejects the send with
 *   code EHOSTUNREACH instead of dropping the message silently.
 * - LINGER defaults to 0 (libzmq: infinite), so closing never waits for an absent peer.
 * - Received frames of 64 KiB and more are views of libzmq's buffer (no copy; never transfer
 *   their ArrayBuffer); sends skip the copy with the opt-in `zeroCopySendMin` (lib/rpc.ts's
 *   sockets opt in). See ./zerocopy.ts for the contract.
 * - Tests should end with `await terminate()`: it closes every socket, waits for the reactor to
 *   go idle and terminates the libzmq context, so no op, fd or thread outlives the test.
 *
 * @module
 */

export {
  type Bytes,
  curveKeypair,
  openSocketCount,
  type Received,
  Socket,
  type SocketOptions,
  type SocketType,
  terminate,
  z85Decode,
  z85Encode,
  ZmqError,
  type ZmqErrorContext,
  zmqHas,
  zmqVersion,
} from "./socket.ts";

export { ZAP_ENDPOINT, ZapHandler, type ZapRequest, type ZapVerdict } from "./zap.ts";
