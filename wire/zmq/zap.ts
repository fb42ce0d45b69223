/**
 * A ZAP handler (ZeroMQ Authentication Protocol, RFC 27) for this process's libzmq context.
 *
 * libzmq asks the handler bound at `inproc://zeromq.zap.01` about every CURVE handshake on a
 * socket with a ZAP domain; the handler's answer decides whether the peer is let in, and the
 * User-Id it returns is attached to every message received over that connection (read with
 * the socket option `peerUserId`). The decision itself is the caller's `decide` function; this
 * file is only the protocol. An answer is given to every request, malformed ones included
 * (status 500), so no handshake waits on us.
 *
 * @module
 */
import { type Received, Socket } from "./socket.ts";

/** The inproc endpoint libzmq's ZAP client connects to (RFC 27). */
export const ZAP_ENDPOINT = "inproc://zeromq.zap.01";

/** One handshake to decide on. */
export interface ZapRequest {
  /** The server socket's ZMQ_ZAP_DOMAIN. */
  domain: string;
  /** The peer's IP address (text). */
  address: string;
  /** "NULL", "PLAIN" or "CURVE". */
  mechanism: string;
  /** CURVE: the client's 32-byte long-term public key. */
  publicKey?: Uint8Array;
}

/** The handler's verdict: let in with a User-Id, or refuse with a reason. */
export type ZapVerdict = { ok: true; userId: string } | { ok: false; reason: string };

const enc = new TextEncoder();
const dec = new TextDecoder();
const VERSION = "1.0";

/** A running ZAP handler; {@linkcode ZapHandler.close} stops answering. */
export class ZapHandler {
  #sock: Socket;
  #loop: Promise<void>;
  #closed = false;
  /** Handshakes refused so far. */
  refused = 0;
  /** Handshakes accepted so far. */
  accepted = 0;

  /** Binds the process's ZAP endpoint; throws (EADDRINUSE) if a handler already runs. */
  constructor(decide: (req: ZapRequest) => ZapVerdict) {
    this.#sock = new Socket("ROUTER", { linger: 0 });
    this.#sock.bind(ZAP_ENDPOINT);
    this.#loop = this.#serve(decide);
  }

  async #serve(decide: (req: ZapRequest) => ZapVerdict): Promise<void> {
    while (!this.#closed) {
      let frames: Received;
      try {
        frames = await this.#sock.receive();
      } catch {
        if (this.#closed) return;
        continue;
      }
      // [routing id][empty][version][request id][domain][address][identity][mechanism][creds…]
      if (frames.length < 8) continue; // not a ZAP request: nobody waits on an answer
      const [route, empty, version, requestId] = frames;
      let verdict: ZapVerdict;
      if (dec.decode(version) !== VERSION) {
        verdict = { ok: false, reason: "unsupported ZAP version" };
      } else {
        const mechanism = dec.decode(frames[7]);
        const key = frames[8];
        verdict = mechanism === "CURVE" && key?.length !== 32
          ? { ok: false, reason: "CURVE request without a 32-byte key" }
          : decide({
            domain: dec.decode(frames[4]),
            address: dec.decode(frames[5]),
            mechanism,
            publicKey: mechanism === "CURVE" ? key : undefined,
          });
      }
      if (verdict.ok) this.accepted++;
      else this.refused++;
      const reply = verdict.ok
        ? [enc.encode("200"), enc.encode("OK"), enc.encode(verdict.userId)]
        : [enc.encode("400"), enc.encode(verdict.reason.slice(0, 200)), new Uint8Array(0)];
      await this.#sock.send([route, empty, version, requestId, ...reply, new Uint8Array(0)])
        .catch(() => {});
    }
  }

  /** Stops answering (later CURVE handshakes then fail where the domain is enforced). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#sock.close();
    await this.#loop;
  }
}
