/**
 * Request/reply over ZeroMQ for every dsys node.
 *
 * Envelope (docs/wire.md, "Envelope"): a DEALER sends `[id][message]`, where `id` is an 8-byte
 * little-endian u64 chosen by the requester; the ROUTER side answers `[id][reply]` with the same id,
 * so several requests can be in flight on one socket and complete in any order. Bit 63 of the id is
 * set on requests the ROUTER side initiates towards a connected DEALER (the balancer pushing a
 * `worker_request` to a worker), so the two directions never confuse their ids. `raft_message` is
 * one-way: the handler returns `null` and nothing is sent back.
 *
 * A node never crashes on what arrives: a frame that does not decode is answered with an `error`
 * (BAD_MESSAGE) when it carries a usable id, and dropped otherwise; a handler that throws is
 * answered with an `error` carrying the thrown error's code and text.
 */
import { type Received, Socket, type SocketOptions } from "../wire/zmq/mod.ts";
import { LARGE_FRAME } from "../wire/zmq/zerocopy.ts";
import {
  decode,
  DEFAULT_LIMITS,
  encode,
  ErrorCode,
  errorReply,
  type Message,
  MessageType,
  SPEC_BY_TYPE,
  WireError,
  wireErrorReply,
  type WireLimits,
} from "../wire/mod.ts";
import type { Logger } from "./log.ts";
import type { Registry } from "./metrics.ts";
import { splitNamedEndpoint } from "./named_endpoint.ts";
import {
  type Credentials,
  type Identity,
  maySend,
  processCredentials,
  type Role,
  startZap,
  ZAP_DOMAIN,
} from "./security.ts";

/**
 * How a request failed: the peer answered `error` (remote), no reply came in time (timeout),
 * the request never left (not_sent: it may be retried anywhere), or the client closed (closed).
 */
export type RpcErrorKind = "remote" | "timeout" | "not_sent" | "closed";

/** A failed request: an `error` reply from the peer, a timeout, or a closed client. */
export class RpcError extends Error {
  /** Wire error code (ErrorCode); timeouts and closed sockets use UNAVAILABLE. */
  readonly code: number;
  /** The peer endpoint or id the request went to. */
  readonly peer: string;
  /** The error text as the peer sent it (for NOT_LEADER: the leader's member id). */
  readonly text: string;
  /** How it failed; decide on this, never on `text`. */
  readonly kind: RpcErrorKind;
  /** The error's number (`error.value`: WRONG_OFFSET's resume offset), 0 if none. */
  readonly value: number;
  constructor(
    code: number,
    text: string,
    peer: string,
    kind: RpcErrorKind = "remote",
    value = 0,
  ) {
    super(`RpcError: ${codeName(code)} from ${peer}: ${text}`);
    this.name = "RpcError";
    this.code = code;
    this.text = text;
    this.peer = peer;
    this.kind = kind;
    this.value = value;
  }
}

/** Throw this from a handler to answer with a specific error code. */
export class RequestError extends Error {
  /** Wire error code sent back. */
  readonly code: number;
  /** `error.value` sent back (what it means depends on the code). */
  readonly value: number;
  constructor(code: number, message: string, value = 0) {
    super(message);
    this.name = "RequestError";
    this.code = code;
    this.value = value;
  }
}

/** The symbolic name of an error code, for messages. */
export function codeName(code: number): string {
  for (const [k, v] of Object.entries(ErrorCode)) if (v === code) return k;
  return `code ${code}`;
}

const REVERSE = 1n << 63n;

/**
 * Socket options every RpcClient/RpcServer socket gets on top of its own: large frames are sent
 * without a copy. Safe here because every frame these sockets send is a fresh buffer from
 * `encode` or `idFrame` that nothing touches after the send (or a received routing id, which is
 * below the threshold). Receives are zero-copy by default (wire/zmq/zerocopy.ts).
 */
export const RPC_SOCKET_OPTIONS: SocketOptions = { zeroCopySendMin: LARGE_FRAME };

/** Listen queue of every RpcServer (the kernel caps it at net.core.somaxconn, often 4096). */
export const RPC_LISTEN_BACKLOG = 4096;

/** Largest frame this process received, per message type code (see `largestFramesReceived`). */
const maxFrameSeen = new Map<number, number>();

/** Notes a received frame's size under its type (frames of unknown types are not counted). */
function noteFrame(body: Uint8Array): void {
  const t = body[0];
  if (body.length > (maxFrameSeen.get(t) ?? 0) && SPEC_BY_TYPE[t]) maxFrameSeen.set(t, body.length);
}

/**
 * The largest frame (bytes) this process received per message type, by wire name, over every
 * RpcServer and RpcClient in it: requests, one-way messages, replies and pushes, counted as they
 * arrive (before decoding). A debug counter: roles/run.ts logs it when a node stops ("largest
 * frames received"), which shows what never passes through a node (e.g. no program bytes
 * through masters and balancers: tests/program_bytes_test.ts).
 */
export function largestFramesReceived(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [t, n] of [...maxFrameSeen].sort((a, b) => a[0] - b[0])) {
    out[SPEC_BY_TYPE[t]!.wire] = n;
  }
  return out;
}

/**
 * The sockets traffic is counted by: every RpcServer is `server`; an RpcClient is named after the
 * role whose key the server has (`to_master`, …; `to_unknown` in insecure mode). A fixed set,
 * so the metrics' series are bounded however many peers come and go.
 */
export const RPC_SOCKETS = [
  "server",
  "to_master",
  "to_balancer",
  "to_storage",
  "to_worker",
  "to_unknown",
] as const;

/** One of {@link RPC_SOCKETS}. */
export type RpcSocketName = typeof RPC_SOCKETS[number];

/** Messages and bytes (the protocol frame, after the envelope) this process sent and received. */
const traffic = new Map<string, { messages: number; bytes: number }>(
  RPC_SOCKETS.flatMap((s) =>
    (["sent", "received"] as const).map((d) => [`${s} ${d}`, { messages: 0, bytes: 0 }])
  ),
);

/** Counts one frame on `socket` in `direction`. */
function count(socket: RpcSocketName, direction: "sent" | "received", frame: Uint8Array): void {
  const t = traffic.get(`${socket} ${direction}`)!;
  t.messages++;
  t.bytes += frame.length;
}

/**
 * Declares `dsys_zmq_messages_total` and `dsys_zmq_bytes_total` {socket, direction} on
 * `registry`: every RpcServer and RpcClient of this process, read at scrape time.
 */
export function registerRpcMetrics(registry: Registry): void {
  const spec = { socket: RPC_SOCKETS, direction: ["sent", "received"] };
  const messages = registry.counter(
    "dsys_zmq_messages_total",
    "ZeroMQ protocol messages sent and received, by socket.",
    spec,
  );
  const bytes = registry.counter(
    "dsys_zmq_bytes_total",
    "Bytes of ZeroMQ protocol messages (without the envelope) sent and received, by socket.",
    spec,
  );
  registry.onCollect(() => {
    for (const [key, t] of traffic) {
      const [socket, direction] = key.split(" ");
      messages.setTotal(t.messages, { socket, direction });
      bytes.setTotal(t.bytes, { socket, direction });
    }
  });
}

function idFrame(id: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, id, true);
  return b;
}

function readId(frame: Uint8Array): bigint | null {
  if (frame.length !== 8) return null;
  return new DataView(frame.buffer, frame.byteOffset, 8).getBigUint64(0, true);
}

/** Receives until the socket closes; a failed receive on a socket still open is retried. */
async function receiveEach(
  sock: Socket,
  closed: () => boolean,
  each: (frames: Received) => void,
): Promise<void> {
  while (!closed()) {
    let frames: Received;
    try {
      frames = await sock.receive();
    } catch {
      if (closed()) return;
      continue;
    }
    each(frames);
  }
}

interface Waiter {
  resolve: (m: Message) => void;
  reject: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Requests in flight on one socket, by id: each ends with its reply, a timeout or a failure. */
class PendingRequests {
  #waiters = new Map<bigint, Waiter>();

  /** Registers request `id` to `peer`; the promise settles on reply, timeout or failure. */
  add(id: bigint, peer: string, timeoutMs: number, what: string): Promise<Message> {
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(id);
        reject(
          new RpcError(
            ErrorCode.Unavailable,
            `no reply within ${timeoutMs} ms (${what})`,
            peer,
            "timeout",
          ),
        );
      }, timeoutMs);
      this.#waiters.set(id, { resolve, reject, timer });
    });
  }

  /** Settles request `id` with a reply frame (an `error` reply rejects); unknown ids are late. */
  settle(id: bigint, body: Uint8Array, limits: WireLimits, peer: string): void {
    noteFrame(body);
    const w = this.#take(id);
    if (!w) return; // a reply after its timeout
    try {
      const m = decode(body, limits);
      if (m.type === MessageType.Error) {
        w.reject(new RpcError(m.code, m.text, peer, "remote", m.value ?? 0));
      } else w.resolve(m);
    } catch (e) {
      w.reject(new RpcError(ErrorCode.BadMessage, `bad reply: ${e}`, peer));
    }
  }

  /** Fails request `id` (its send failed). */
  fail(id: bigint, e: unknown): void {
    this.#take(id)?.reject(e);
  }

  /** Fails every request (the socket is closing). */
  failAll(e: unknown): void {
    for (const id of [...this.#waiters.keys()]) this.fail(id, e);
  }

  get size(): number {
    return this.#waiters.size;
  }

  #take(id: bigint): Waiter | undefined {
    const w = this.#waiters.get(id);
    if (!w) return undefined;
    this.#waiters.delete(id);
    clearTimeout(w.timer);
    return w;
  }
}

/** The `error` reply for whatever a handler threw (text capped: it is for people, not logs). */
function toErrorReply(node: Uint8Array, e: unknown): Message {
  if (e instanceof WireError) return wireErrorReply(node, e);
  const code = e instanceof RequestError || e instanceof RpcError ? e.code : ErrorCode.Internal;
  const text = e instanceof Error ? e.message : String(e);
  const reply = errorReply(node, code, text.slice(0, 4000));
  const value = e instanceof RequestError ? e.value : 0;
  return value ? { ...reply, value } : reply;
}

/** Youngest socket an RpcClient replaces after a silent timeout, ms (no rebuild storms). */
const REBUILD_MIN_MS = 1000;

/** Options of an RpcClient. */
export interface RpcClientOptions {
  /** This node's uuid (sent in every message's header). */
  node: Uint8Array;
  /** Default time to wait for a reply, ms. */
  timeoutMs?: number;
  /** Handles requests the ROUTER side pushes to this client (e.g. worker_request). */
  onRequest?: (msg: Message) => Promise<Message | null> | Message | null;
  /** Decoder limits for replies. */
  limits?: Partial<WireLimits>;
  /** Logger for dropped frames. */
  log?: Logger;
  /** Routing id of this DEALER (lets the ROUTER side address it by a stable name). */
  routingId?: Uint8Array;
  /**
   * Keys to connect with (default: the process's, see lib/security.ts `useCredentials`);
   * null = no CURVE (insecure mode).
   */
  auth?: Credentials | null;
  /** The server's role, to find its key when `endpoint` carries no `NAME@`. */
  serverRole?: Role;
}

/** CURVE client options for connecting to `ref` with `creds`, and the server's identity. */
function curveClient(
  creds: Credentials,
  ref: string,
  role: Role | undefined,
): { endpoint: string; options: SocketOptions; server: Identity | undefined } {
  const { endpoint, serverKey } = creds.resolve(ref, role);
  return {
    endpoint,
    options: {
      curveServerKey: serverKey,
      curvePublicKey: creds.self.publicKey,
      curveSecretKey: creds.self.secretKey,
    },
    server: creds.keyring.byKey(serverKey),
  };
}

/** A FORBIDDEN error reply. */
function forbidden(node: Uint8Array, text: string): Message {
  return errorReply(node, ErrorCode.Forbidden, text);
}

/** A DEALER connected to one node's ROUTER; many requests in flight, matched by id. */
export class RpcClient {
  readonly endpoint: string;
  readonly node: Uint8Array;
  #sock: Socket;
  #nextId = 1n;
  #pending = new PendingRequests();
  #timeoutMs: number;
  #opts: RpcClientOptions;
  #limits: WireLimits;
  #closed = false;
  #loop: Promise<void>;
  /** The server's keyring identity; null in insecure mode (then it may push anything). */
  #server: Identity | null = null;
  #connectTo: string;
  #curve: SocketOptions;
  /** When the current socket was made, and whether anything came over it since. */
  #builtAt = 0;
  #heard = false;
  /** Sockets replaced after a timeout with no word from the server (see #maybeRebuild). */
  rebuilds = 0;
  /** What this client's traffic is counted as (`to_<server role>`). */
  #socketName: RpcSocketName;

  /**
   * Connects to `endpoint`, `tcp://HOST:PORT` or `NAME@tcp://HOST:PORT` (NAME: the server's
   * key on the keyring). Throws KeyringError when credentials are in use and the server's key
   * cannot be found.
   */
  constructor(endpoint: string, opts: RpcClientOptions) {
    this.endpoint = endpoint;
    this.node = opts.node;
    this.#opts = opts;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#limits = { ...DEFAULT_LIMITS, ...opts.limits };
    const creds = opts.auth === undefined ? processCredentials() : opts.auth;
    let connectTo = splitNamedEndpoint(endpoint).endpoint;
    let curve: SocketOptions = {};
    if (creds) {
      const c = curveClient(creds, endpoint, opts.serverRole);
      connectTo = c.endpoint;
      curve = c.options;
      this.#server = c.server ?? null;
      if (!this.#server) throw new RpcError(ErrorCode.Forbidden, "server key unknown", endpoint);
    }
    this.#connectTo = connectTo;
    this.#curve = curve;
    const role = this.#server?.role ?? opts.serverRole;
    this.#socketName = RPC_SOCKETS.find((s) => s === `to_${role}`) ?? "to_unknown";
    this.#sock = this.#newSocket();
    this.#loop = this.#receiveLoop(this.#sock);
  }

  /** Sends a request and resolves with the reply; an `error` reply rejects with RpcError. */
  request(msg: Message, timeoutMs = this.#timeoutMs): Promise<Message> {
    if (this.#closed) {
      return Promise.reject(
        new RpcError(ErrorCode.Unavailable, "client closed", this.endpoint, "closed"),
      );
    }
    const id = this.#nextId++;
    let frame: Uint8Array;
    try {
      frame = encode(msg);
    } catch (e) {
      return Promise.reject(e);
    }
    const reply = this.#pending.add(id, this.endpoint, timeoutMs, `type ${msg.type}`);
    count(this.#socketName, "sent", frame);
    this.#sock.send([idFrame(id), frame]).catch((e) =>
      this.#pending.fail(
        id,
        new RpcError(ErrorCode.Unavailable, `send failed: ${e}`, this.endpoint, "not_sent"),
      )
    );
    reply.catch((e) => {
      if (e instanceof RpcError && e.kind === "timeout") this.#maybeRebuild();
    });
    return reply;
  }

  /**
   * After a timeout on a socket that has never heard from the server, starts over with a new
   * socket: libzmq gives up on a connection whose CURVE handshake was refused (a key not yet on
   * the server's keyring, or a server that came back with another key) and never retries it.
   * Requests still waiting on the old socket end with their own timeouts.
   */
  #maybeRebuild(): void {
    if (this.#closed || this.#heard || Date.now() - this.#builtAt < REBUILD_MIN_MS) return;
    const old = this.#sock;
    this.#sock = this.#newSocket();
    this.#loop = this.#receiveLoop(this.#sock);
    old.close();
    this.rebuilds++;
  }

  #newSocket(): Socket {
    const sock = new Socket("DEALER", {
      ...RPC_SOCKET_OPTIONS,
      linger: 0,
      routingId: this.#opts.routingId,
      sndhwm: 100_000,
      rcvhwm: 100_000,
      ...this.#curve,
    });
    sock.connect(this.#connectTo);
    this.#builtAt = Date.now();
    this.#heard = false;
    return sock;
  }

  /** Sends a one-way message (no reply expected). */
  async send(msg: Message): Promise<void> {
    const frame = encode(msg);
    count(this.#socketName, "sent", frame);
    await this.#sock.send([idFrame(0n), frame]);
  }

  #receiveLoop(sock: Socket): Promise<void> {
    return receiveEach(sock, () => this.#closed || sock.closed, (frames) => {
      this.#heard = true;
      if (frames.length !== 2) {
        this.#opts.log?.warn("dropped frame with bad envelope", { frames: frames.length });
        return;
      }
      count(this.#socketName, "received", frames[1]);
      const id = readId(frames[0]);
      if (id === null) return;
      if (id & REVERSE) this.#serveReverse(id, frames[1]);
      else this.#pending.settle(id, frames[1], this.#limits, this.endpoint);
    });
  }

  async #serveReverse(id: bigint, frame: Uint8Array): Promise<void> {
    noteFrame(frame);
    let reply: Message | null;
    try {
      if (!this.#opts.onRequest) {
        throw new RequestError(ErrorCode.WrongRole, "this client serves no requests");
      }
      const msg = decode(frame, this.#limits);
      if (this.#server && !maySend(this.#server, SPEC_BY_TYPE[msg.type]!.senders)) {
        throw new RequestError(
          ErrorCode.Forbidden,
          `a ${this.#server.role} key may not send message type ${msg.type}`,
        );
      }
      reply = await this.#opts.onRequest(msg);
    } catch (e) {
      reply = toErrorReply(this.node, e);
    }
    if (reply && !this.#closed) {
      const out = encode(reply);
      count(this.#socketName, "sent", out);
      await this.#sock.send([idFrame(id), out]).catch(() => {});
    }
  }

  /** Number of requests waiting for a reply. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Closes the socket; pending requests reject with UNAVAILABLE. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#pending.failAll(
      new RpcError(ErrorCode.Unavailable, "client closed", this.endpoint, "closed"),
    );
    this.#sock.close();
    await this.#loop;
  }
}

/**
 * A request handler: returns the reply, or null for one-way messages. `from` is the sender's
 * keyring identity, already allowed to send `msg.type`; null only in insecure mode.
 */
export type Handler = (
  msg: Message,
  peer: Uint8Array,
  from: Identity | null,
) => Promise<Message | null> | Message | null;

/** Options of an RpcServer. */
export interface RpcServerOptions {
  /** This node's uuid. */
  node: Uint8Array;
  /** Where dropped and refused frames are logged. */
  log: Logger;
  /** Serves each request. */
  handler: Handler;
  /** Decoder limits. */
  limits?: Partial<WireLimits>;
  /** Keys (default: the process's); null = no CURVE, every peer trusted (insecure mode). */
  auth?: Credentials | null;
}

/** A ROUTER that serves requests and can push requests to connected DEALERs. */
export class RpcServer {
  readonly node: Uint8Array;
  #sock: Socket;
  #opts: RpcServerOptions;
  #limits: WireLimits;
  #closed = false;
  #loop: Promise<void> | null = null;
  #nextId = REVERSE | 1n;
  #pending = new PendingRequests();
  #creds: Credentials | null;
  /** Malformed frames seen (for tests and stats). */
  badFrames = 0;
  /** Requests answered FORBIDDEN (unknown key or a type the sender's role may not send). */
  forbidden = 0;

  constructor(opts: RpcServerOptions) {
    this.node = opts.node;
    this.#opts = opts;
    this.#limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.#creds = opts.auth === undefined ? processCredentials() : opts.auth;
    let curve: SocketOptions = {};
    if (this.#creds) {
      // The handler must be up before the first handshake: without one libzmq lets every
      // CURVE key in (unless ZAP_ENFORCE_DOMAIN is set, which we also ask for).
      startZap(opts.log, this.#creds);
      curve = {
        curveServer: true,
        curvePublicKey: this.#creds.self.publicKey,
        curveSecretKey: this.#creds.self.secretKey,
        zapDomain: ZAP_DOMAIN,
        zapEnforceDomain: true,
        peerUserId: true,
      };
    }
    this.#sock = new Socket("ROUTER", {
      ...RPC_SOCKET_OPTIONS,
      ...curve,
      linger: 0,
      // A restarted peer that reuses its routing id (workers use their node id) takes over the
      // old connection instead of being shut out until that one times out.
      routerHandover: true,
      sndhwm: 100_000,
      rcvhwm: 100_000,
      // Thousands of workers reconnect at once after a balancer or master restart: with
      // libzmq's default of 100 the kernel drops the rest of the SYNs, and each of those
      // clients retries only after its reconnect interval (bench/scale.ts measures the tail).
      backlog: RPC_LISTEN_BACKLOG,
      maxMsgSize: this.#limits.maxFrame + 64,
    });
  }

  /** Replaces the request handler (lets a node bind before its service exists). */
  setHandler(handler: Handler): void {
    this.#opts = { ...this.#opts, handler };
  }

  /** Binds and starts serving; returns the actual endpoint. */
  bind(endpoint: string): string {
    const ep = this.#sock.bind(endpoint);
    this.#loop ??= this.#receiveLoop();
    return ep;
  }

  /** Sends a request to a connected DEALER (by routing id) and waits for its reply. */
  push(peer: Uint8Array, msg: Message, timeoutMs = 10_000): Promise<Message> {
    const id = this.#nextId++;
    const peerName = hexId(peer);
    let frame: Uint8Array;
    try {
      frame = encode(msg);
    } catch (e) {
      return Promise.reject(e); // a bad field is the caller's error, never an uncaught one
    }
    const reply = this.#pending.add(id, peerName, timeoutMs, `push of type ${msg.type}`);
    count("server", "sent", frame);
    this.#sock.send([peer, idFrame(id), frame]).catch((e) =>
      this.#pending.fail(
        id,
        new RpcError(ErrorCode.Unavailable, `send failed: ${e}`, peerName, "not_sent"),
      )
    );
    return reply;
  }

  #receiveLoop(): Promise<void> {
    return receiveEach(this.#sock, () => this.#closed, (frames) => {
      if (frames.length !== 3) {
        this.badFrames++;
        this.#opts.log.warn("dropped frame with bad envelope", { frames: frames.length });
        return;
      }
      const [peer, idf, body] = frames;
      count("server", "received", body);
      const id = readId(idf);
      if (id === null) {
        this.badFrames++;
        this.#opts.log.warn("dropped frame with bad request id", { idLength: idf.length });
        return;
      }
      if (id & REVERSE) this.#pending.settle(id, body, this.#limits, hexId(peer));
      else this.#serve(peer, idf, body, frames.userId);
    });
  }

  /** The sender's identity, or a FORBIDDEN reply when its key or role may not send `msg`. */
  #authorize(msg: Message, userId: string | undefined): Identity | null | Message {
    if (!this.#creds) return null;
    const from = this.#creds.identify(userId);
    const refuse = (text: string) => {
      this.forbidden++;
      this.#opts.log.warn("forbidden request", { type: msg.type, peerKey: userId, text });
      return forbidden(this.node, text);
    };
    if (!from) return refuse("key not on the keyring (revoked?)");
    if (!maySend(from, SPEC_BY_TYPE[msg.type]!.senders)) {
      return refuse(
        `a ${from.admin ? "admin " : ""}${from.role} key (${from.name}) may not send ` +
          `message type ${msg.type}`,
      );
    }
    return from;
  }

  async #serve(
    peer: Uint8Array,
    idf: Uint8Array,
    body: Uint8Array,
    userId: string | undefined,
  ): Promise<void> {
    noteFrame(body);
    let reply: Message | null;
    try {
      const msg = decode(body, this.#limits);
      const from = this.#authorize(msg, userId);
      reply = from !== null && "type" in from ? from : await this.#opts.handler(msg, peer, from);
    } catch (e) {
      if (e instanceof WireError) {
        this.badFrames++;
        this.#opts.log.warn("malformed request", { error: e.message });
      } else if (!(e instanceof RequestError) && !(e instanceof RpcError)) {
        this.#opts.log.error("handler failed", { error: e });
      }
      reply = toErrorReply(this.node, e);
    }
    if (!reply || this.#closed) return;
    try {
      const out = encode(reply);
      count("server", "sent", out);
      await this.#sock.send([peer, idf, out]);
    } catch (e) {
      // The peer went away (ROUTER_MANDATORY: unreachable); nothing to do but note it.
      this.#opts.log.debug("reply not delivered", { peer: hexId(peer), error: e });
    }
  }

  /** Stops serving; pending pushes reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#pending.failAll(new RpcError(ErrorCode.Unavailable, "server closed", "-", "closed"));
    this.#sock.close();
    await this.#loop;
  }
}

/** Hex form of a routing id or uuid, for logs and errors. */
export function hexId(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
