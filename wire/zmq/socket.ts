/**
 * ZeroMQ sockets over libzmq's C API (Deno FFI), integrated with the event loop by
 * {@linkcode reactor}.
 *
 * Every zmq_* call is made on the JS thread with ZMQ_DONTWAIT; when one would block, the
 * operation is queued and the socket is handed to the reactor, which waits on ZMQ_FD.
 * ZMQ_FD is edge-triggered, so after any operation on a socket that still has queued work,
 * ZMQ_EVENTS is consulted again (see {@linkcode Socket.service}).
 *
 * @module
 */

import {
  cstr,
  CTX_OPT,
  ERRNO,
  errnoName,
  OPT,
  SOCKET_TYPES,
  strerror,
  zmq,
  ZMQ_DONTWAIT,
  ZMQ_POLLIN,
  ZMQ_POLLOUT,
  ZMQ_SNDMORE,
} from "./ffi.ts";
import { Need, type Pollable, reactor } from "./reactor.ts";
import { adoptReceived, LARGE_FRAME, sendReleases, ZERO_COPY_FLOOR } from "./zerocopy.ts";

/** The socket types dsys uses. */
export type SocketType = "ROUTER" | "DEALER" | "PUB" | "SUB" | "PUSH" | "PULL";

/** Binary option value; strings are UTF-8 encoded (CURVE keys: 40-char Z85). */
export type Bytes = Uint8Array | string;

/** Options applied at construction, before any bind/connect (several only work then). */
export interface SocketOptions {
  /** ZMQ_SNDHWM: queued outgoing messages per peer before `send` waits (default 1000). */
  sndhwm?: number;
  /** ZMQ_RCVHWM: queued incoming messages per peer (default 1000). */
  rcvhwm?: number;
  /**
   * ZMQ_LINGER in ms. dsys defaults to 0 (libzmq: -1) so close/terminate never hang on an
   * unreachable peer; callers that must flush on close set it explicitly.
   */
  linger?: number;
  /** ZMQ_ROUTING_ID: the identity a ROUTER peer sees for this socket. */
  routingId?: Bytes;
  /** ZMQ_MAXMSGSIZE: largest accepted inbound message in bytes; the peer is dropped beyond. */
  maxMsgSize?: number;
  /** ZMQ_IMMEDIATE: queue only to completed connections. */
  immediate?: boolean;
  /** ZMQ_ROUTER_MANDATORY; defaults to true on ROUTER (unknown peer = error, full = wait). */
  routerMandatory?: boolean;
  /** ZMQ_ROUTER_HANDOVER: a reconnecting peer with a known routing id takes over. */
  routerHandover?: boolean;
  /** SUB: prefixes to subscribe to at once. */
  subscribe?: Bytes | Bytes[];
  /** ZMQ_HEARTBEAT_IVL in ms (ZMTP PING interval; 0 = off). */
  heartbeatIvl?: number;
  /** ZMQ_HEARTBEAT_TIMEOUT in ms: drop the connection if no traffic after a PING. */
  heartbeatTimeout?: number;
  /** ZMQ_HEARTBEAT_TTL in ms, announced to the peer. */
  heartbeatTtl?: number;
  /** ZMQ_RECONNECT_IVL in ms. */
  reconnectIvl?: number;
  /**
   * ZMQ_BACKLOG: the listen queue of a bound socket (libzmq's default 100; the kernel caps it at
   * net.core.somaxconn). Set before `bind`.
   */
  backlog?: number;
  /** ZMQ_RECONNECT_IVL_MAX in ms (exponential back-off cap). */
  reconnectIvlMax?: number;
  /** ZMQ_CONNECT_TIMEOUT in ms. */
  connectTimeout?: number;
  /** ZMQ_HANDSHAKE_IVL in ms. */
  handshakeIvl?: number;
  /** ZMQ_SNDBUF: kernel send buffer in bytes. */
  sndbuf?: number;
  /** ZMQ_RCVBUF: kernel receive buffer in bytes. */
  rcvbuf?: number;
  /** ZMQ_TCP_KEEPALIVE: -1 system default, 0 off, 1 on. */
  tcpKeepalive?: number;
  /**
   * Received frames of at least this many bytes are views of libzmq's buffer instead of a
   * copy, freed when garbage-collected. Never transfer/detach such a frame's ArrayBuffer
   * (see wire/zmq/zerocopy.ts). Default: 65536 (`LARGE_FRAME`); Infinity copies every frame.
   */
  zeroCopyRecvMin?: number;
  /**
   * Sent frames of at least this many bytes are handed to libzmq without a copy; the caller
   * must not modify them after `send`. Default: off (libzmq copies every frame).
   */
  zeroCopySendMin?: number;
  /** ZMQ_CURVE_SERVER: this side is the CURVE server (needs curveSecretKey). */
  curveServer?: boolean;
  /** ZMQ_CURVE_PUBLICKEY (Z85 or 32 bytes). */
  curvePublicKey?: Bytes;
  /** ZMQ_CURVE_SECRETKEY (Z85 or 32 bytes). */
  curveSecretKey?: Bytes;
  /** ZMQ_CURVE_SERVERKEY: the server's public key, on a CURVE client (Z85 or 32 bytes). */
  curveServerKey?: Bytes;
  /** ZMQ_ZAP_DOMAIN: the domain this (server) socket's peers are authenticated in (RFC 27). */
  zapDomain?: string;
  /**
   * ZMQ_ZAP_ENFORCE_DOMAIN (draft API): a CURVE handshake fails when no ZAP handler answers.
   * Best effort: where libzmq lacks it, {@linkcode Socket.zapEnforced} is false and the caller
   * must make sure a handler is bound before the socket accepts peers.
   */
  zapEnforceDomain?: boolean;
  /** Attach each received message's ZAP `User-Id` (see {@linkcode Received}). */
  peerUserId?: boolean;
}

/**
 * A received multipart message. With the `peerUserId` option, `userId` is the User-Id the ZAP
 * handler gave the connection it arrived on (undefined for unauthenticated connections).
 */
export type Received = Uint8Array[] & { userId?: string };

/** Context for a {@linkcode ZmqError}. */
export interface ZmqErrorContext {
  /** The failed operation ("bind", "send", "receive", "setsockopt ROUTING_ID", ...). */
  op: string;
  /** Type of the socket involved, if any. */
  socketType?: SocketType;
  /** Process-local socket number, to tell sockets apart in logs. */
  socketId?: number;
  /** Endpoint(s) involved: the one passed, or those the socket is bound/connected to. */
  endpoint?: string;
}

/** A libzmq failure (or a use of a closed socket), with errno and context. */
export class ZmqError extends Error {
  /** errno as libzmq reported it (ENOTSOCK for a closed socket). */
  readonly errno: number;
  /** Symbolic errno ("EAGAIN", "EHOSTUNREACH", ...) or "closed" for a closed socket. */
  readonly code: string;
  /** The failed operation. */
  readonly op: string;
  /** Socket type, when a socket was involved. */
  readonly socketType?: SocketType;
  /** Socket number (process-local). */
  readonly socketId?: number;
  /** Endpoint(s) involved. */
  readonly endpoint?: string;

  /** Builds the error; `detail` defaults to zmq_strerror(errno). */
  constructor(errno: number, code: string, ctx: ZmqErrorContext, detail?: string) {
    const where = ctx.socketType
      ? ` on ${ctx.socketType} socket #${ctx.socketId}` +
        (ctx.endpoint ? ` (${ctx.endpoint})` : "")
      : ctx.endpoint
      ? ` (${ctx.endpoint})`
      : "";
    super(`zmq ${ctx.op} failed${where}: ${detail ?? strerror(errno)} [${code}]`);
    this.name = "ZmqError";
    this.errno = errno;
    this.code = code;
    this.op = ctx.op;
    this.socketType = ctx.socketType;
    this.socketId = ctx.socketId;
    this.endpoint = ctx.endpoint;
  }
}

// ---- process-wide state --------------------------------------------------------------------

let ctx: Deno.PointerObject | null = null;
const live = new Set<Socket>();
let nextId = 1;
/** Highest number of sockets libzmq allows in the context (its default, 1023, is too few). */
const MAX_SOCKETS = 16384;

function context(): Deno.PointerObject {
  if (ctx) return ctx;
  const z = zmq();
  const c = z.zmq_ctx_new();
  if (!c) throw new ZmqError(z.zmq_errno(), errnoName(z.zmq_errno()), { op: "zmq_ctx_new" });
  z.zmq_ctx_set(c, CTX_OPT.MAX_SOCKETS, MAX_SOCKETS);
  ctx = c;
  return c;
}

// Scratch buffers shared by all sockets: every use is synchronous on the JS thread.
/** zmq_msg_t (64 bytes, 8-aligned) reused for every receive; zmq_msg_recv frees old content. */
let msg: Uint8Array<ArrayBuffer> | null = null;
const intBuf = new Int32Array(1);
const intBytes = new Uint8Array(intBuf.buffer);
const sizeBuf = new BigUint64Array(1);
const sizeBytes = new Uint8Array(sizeBuf.buffer);
const i64Buf = new BigInt64Array(1);
const i64Bytes = new Uint8Array(i64Buf.buffer);
const RESOLVED: Promise<void> = Promise.resolve();
/** Copied frames above this size are released at once instead of at the next receive. */
const RELEASE_ABOVE = 1 << 20;
/** zmq_msg_t for zero-copy sends (zmq_msg_send empties it on success). */
let sendMsg: Uint8Array<ArrayBuffer> | null = null;

const USER_ID = cstr("User-Id");
/** The ZAP User-Id of the connection message `m` came on, if it has one. */
function userIdOf(m: Uint8Array<ArrayBuffer>): string | undefined {
  const p = zmq().zmq_msg_gets(m, USER_ID);
  if (!p) return undefined;
  const id = Deno.UnsafePointerView.getCString(p);
  return id === "" ? undefined : id;
}

function msgBuf(): Uint8Array<ArrayBuffer> {
  if (msg) return msg;
  const m = new Uint8Array(new BigUint64Array(8).buffer);
  zmq().zmq_msg_init(m);
  msg = m;
  return m;
}

const encoder = new TextEncoder();
function toBytes(v: Bytes): Uint8Array {
  return typeof v === "string" ? encoder.encode(v) : v;
}

/** Map key for a ROUTER routing id (at most 255 bytes). */
function peerKey(id: Uint8Array): string {
  return String.fromCharCode.apply(null, id as unknown as number[]);
}

interface RecvWaiter {
  resolve(frames: Received): void;
  reject(e: unknown): void;
}

interface SendJob {
  frames: Uint8Array[];
  /** First frame not yet accepted by libzmq. */
  index: number;
  resolve(): void;
  reject(e: unknown): void;
}

/** An open ZeroMQ socket. Create, bind/connect, then send/receive; close when done. */
export class Socket implements Pollable {
  /** The socket type. */
  readonly type: SocketType;
  /** Process-local number used in error messages. */
  readonly id: number;
  /** ZMQ_FD, polled by the reactor. */
  readonly fd: number;
  #h: Deno.PointerObject;
  #closed = false;
  #endpoints: string[] = [];
  #recvWaiters: RecvWaiter[] = [];
  #sendJobs: SendJob[] = [];
  #zcRecvMin = LARGE_FRAME;
  #zcSendMin = Infinity;
  #peerUserId = false;
  #zapEnforced = false;
  /** Frames of a multipart message whose tail libzmq has not delivered yet (defensive). */
  #partial: Uint8Array[] | null = null;

  /** Creates the socket and applies `options` (see {@linkcode SocketOptions}). */
  constructor(type: SocketType, options: SocketOptions = {}) {
    const num = SOCKET_TYPES[type];
    if (num === undefined) {
      throw new ZmqError(ERRNO.EINVAL, "EINVAL", { op: "socket" }, `unknown socket type ${type}`);
    }
    this.type = type;
    this.id = nextId++;
    const z = zmq();
    const h = z.zmq_socket(context(), num);
    if (!h) {
      const e = z.zmq_errno();
      throw new ZmqError(e, errnoName(e), { op: "socket", socketType: type, socketId: this.id });
    }
    this.#h = h;
    live.add(this);
    try {
      this.#applyOptions(options);
      this.fd = this.#getInt(OPT.FD, "getsockopt FD");
    } catch (e) {
      live.delete(this);
      z.zmq_close(h);
      this.#closed = true;
      throw e;
    }
  }

  /** True when ZMQ_ZAP_ENFORCE_DOMAIN was requested and libzmq accepted it. */
  get zapEnforced(): boolean {
    return this.#zapEnforced;
  }

  /** True once {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Endpoints this socket is bound or connected to (as resolved by libzmq for binds). */
  get endpoints(): readonly string[] {
    return this.#endpoints;
  }

  /** Binds; returns the actual endpoint (ZMQ_LAST_ENDPOINT), e.g. the port picked for `:*`. */
  bind(endpoint: string): string {
    this.#check("bind", endpoint);
    if (zmq().zmq_bind(this.#h, cstr(endpoint)) !== 0) throw this.#lastError("bind", endpoint);
    const actual = this.#getString(OPT.LAST_ENDPOINT, "getsockopt LAST_ENDPOINT");
    this.#endpoints.push(actual);
    return actual;
  }

  /** Stops listening on an endpoint returned by {@linkcode bind}. */
  unbind(endpoint: string): void {
    this.#check("unbind", endpoint);
    if (zmq().zmq_unbind(this.#h, cstr(endpoint)) !== 0) throw this.#lastError("unbind", endpoint);
    this.#forget(endpoint);
  }

  /** Connects (asynchronously: libzmq retries in the background until the peer is up). */
  connect(endpoint: string): void {
    this.#check("connect", endpoint);
    if (zmq().zmq_connect(this.#h, cstr(endpoint)) !== 0) {
      throw this.#lastError("connect", endpoint);
    }
    this.#endpoints.push(endpoint);
  }

  /** Drops a connection made by {@linkcode connect}. */
  disconnect(endpoint: string): void {
    this.#check("disconnect", endpoint);
    if (zmq().zmq_disconnect(this.#h, cstr(endpoint)) !== 0) {
      throw this.#lastError("disconnect", endpoint);
    }
    this.#forget(endpoint);
  }

  /** SUB: receive messages whose first frame starts with `prefix` ("" = everything). */
  subscribe(prefix: Bytes): void {
    this.#check("subscribe");
    this.#setBytes(OPT.SUBSCRIBE, toBytes(prefix), "setsockopt SUBSCRIBE");
  }

  /** SUB: undo one {@linkcode subscribe} of the same prefix. */
  unsubscribe(prefix: Bytes): void {
    this.#check("unsubscribe");
    this.#setBytes(OPT.UNSUBSCRIBE, toBytes(prefix), "setsockopt UNSUBSCRIBE");
  }

  /**
   * Sends one message (one or more frames). Resolves once libzmq accepted every frame; waits
   * (without blocking the thread) while the peer's queue is at its high-water mark. Messages
   * are accepted in call order. On a ROUTER the first frame is the peer's routing id; an
   * unknown peer rejects with code EHOSTUNREACH (ROUTER_MANDATORY).
   */
  send(frames: Uint8Array | Uint8Array[]): Promise<void> {
    const list = frames instanceof Uint8Array ? [frames] : frames;
    if (this.#closed) return Promise.reject(this.#closedError("send"));
    if (list.length === 0) {
      return Promise.reject(
        new ZmqError(ERRNO.EINVAL, "EINVAL", this.#ctx("send"), "a message needs a frame"),
      );
    }
    let index = 0;
    const jobs = this.#sendJobs;
    // Fast path when nothing queued could be overtaken: an empty queue or, on a ROUTER, no
    // queued message for this peer and no multipart message half sent.
    const canTry = jobs.length === 0 ||
      (this.type === "ROUTER" && jobs[0].index === 0 && !this.#queuedFor(list[0]));
    if (canTry) {
      try {
        index = this.#sendFrom(list, 0);
      } catch (e) {
        return Promise.reject(e);
      }
      if (index < 0) {
        // The send may have consumed the fd's edge that other pending work waits for.
        if (this.#recvWaiters.length > 0 || jobs.length > 0) this.#kick();
        return RESOLVED;
      }
    }
    // Queued behind other sends, or the fast path just hit EAGAIN: either way nothing was
    // tried since the last ZMQ_EVENTS, unless the queue was empty (then skip the retry).
    const justFailed = jobs.length === 0;
    return new Promise<void>((resolve, reject) => {
      // Own copy of the frame list: the caller may reuse its array once send() returns.
      const job = { frames: list.slice(), index, resolve, reject };
      // A half-sent multipart message must finish before anything else: keep it in front.
      if (index > 0) jobs.unshift(job);
      else jobs.push(job);
      this.#kick(justFailed && this.#recvWaiters.length === 0);
    });
  }

  /** Receives one whole multipart message; rejects with code "closed" if the socket closes. */
  receive(): Promise<Received> {
    if (this.#closed) return Promise.reject(this.#closedError("receive"));
    if (this.#recvWaiters.length === 0) {
      let frames: Received | null;
      try {
        frames = this.#recvOne();
      } catch (e) {
        return Promise.reject(e);
      }
      if (frames) {
        if (this.#sendJobs.length > 0) this.#kick();
        return Promise.resolve(frames);
      }
    }
    const justFailed = this.#recvWaiters.length === 0 && this.#sendJobs.length === 0;
    return new Promise<Received>((resolve, reject) => {
      this.#recvWaiters.push({ resolve, reject });
      this.#kick(justFailed);
    });
  }

  /** Closes the socket (idempotent); pending sends/receives reject with code "closed". */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    live.delete(this);
    const recv = this.#recvWaiters;
    const jobs = this.#sendJobs;
    this.#recvWaiters = [];
    this.#sendJobs = [];
    for (const w of recv) w.reject(this.#closedError("receive"));
    for (const j of jobs) j.reject(this.#closedError("send"));
    // Out of the epoll set first, so the waiting thread never sees the fd libzmq is closing.
    reactor.forget(this);
    zmq().zmq_close(this.#h);
  }

  /** Iterates over received messages; ends when the socket is closed. */
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array[]> {
    const done: IteratorReturnResult<undefined> = { done: true, value: undefined };
    return {
      next: () =>
        this.receive().then(
          (value): IteratorResult<Uint8Array[]> => ({ done: false, value }),
          (e) => {
            if (e instanceof ZmqError && e.code === "closed") return done;
            throw e;
          },
        ),
      return: () => Promise.resolve(done),
    };
  }

  /**
   * Reactor callback: completes every queued operation that can complete now, then reports
   * what is left. Ends with a ZMQ_EVENTS check because ZMQ_FD only signals changes that
   * happen after libzmq last processed its command queue.
   */
  service(justFailed = false): Need {
    if (this.#closed) return Need.Idle;
    let idleRounds = 0;
    // After a fast-path attempt that just returned EAGAIN, go straight to ZMQ_EVENTS.
    let skip = justFailed;
    for (;;) {
      let progressed = false;
      while (!skip && this.#recvWaiters.length > 0) {
        let frames: Uint8Array[] | null;
        try {
          frames = this.#recvOne();
        } catch (e) {
          this.#recvWaiters.shift()!.reject(e);
          progressed = true;
          continue;
        }
        if (!frames) break;
        this.#recvWaiters.shift()!.resolve(frames);
        progressed = true;
      }
      if (!skip && this.#sendJobs.length > 0 && this.#drainSends()) progressed = true;
      skip = false;
      const wantIn = this.#recvWaiters.length > 0;
      const wantOut = this.#sendJobs.length > 0;
      if (!wantIn && !wantOut) return Need.Idle;
      let events: number;
      try {
        events = this.#getInt(OPT.EVENTS, "getsockopt EVENTS");
      } catch (e) {
        this.#failAll(e);
        return Need.Idle;
      }
      if (wantIn && (events & ZMQ_POLLIN)) continue;
      if (wantOut && (events & ZMQ_POLLOUT)) {
        if (progressed) continue;
        // POLLOUT but the send still would block: on a ROUTER POLLOUT means "some peer has
        // room", not the one addressed. Retry once (the EVENTS call may have processed the
        // activation), then fall back to a timed retry since the fd may never signal it.
        if (++idleRounds < 2) continue;
        return Need.Retry;
      }
      return Need.Wait;
    }
  }

  // ---- internals ----------------------------------------------------------------------------

  /**
   * Sends queued messages in order until one would block; returns whether anything moved.
   * On a ROUTER a message to a peer whose queue is full only holds back later messages to
   * the same peer, so one slow peer does not stall the others (order per peer is kept).
   */
  #drainSends(): boolean {
    const jobs = this.#sendJobs;
    const router = this.type === "ROUTER";
    let progressed = false;
    let blocked: Set<string> | null = null;
    for (let i = 0; i < jobs.length;) {
      const job = jobs[i];
      if (blocked && blocked.has(peerKey(job.frames[0]))) {
        i++;
        continue;
      }
      let index: number;
      try {
        index = this.#sendFrom(job.frames, job.index);
      } catch (e) {
        jobs.splice(i, 1);
        job.reject(e);
        progressed = true;
        continue;
      }
      if (index < 0) {
        jobs.splice(i, 1);
        job.resolve();
        progressed = true;
        continue;
      }
      if (index !== job.index) progressed = true;
      job.index = index;
      if (index > 0) {
        // Mid-message: libzmq accepts nothing else on this socket until it is complete.
        if (i > 0) jobs.unshift(jobs.splice(i, 1)[0]);
        break;
      }
      if (!router) break;
      (blocked ??= new Set()).add(peerKey(job.frames[0]));
      i++;
    }
    return progressed;
  }

  /** True if a queued message goes to the ROUTER peer `id`. */
  #queuedFor(id: Uint8Array): boolean {
    const key = peerKey(id);
    for (const job of this.#sendJobs) if (peerKey(job.frames[0]) === key) return true;
    return false;
  }

  /** Reactor callback for a socket without pending work whose fd fired: re-arm the fd. */
  reset(): void {
    if (this.#closed) return;
    try {
      this.#getInt(OPT.EVENTS, "getsockopt EVENTS");
    } catch {
      // Only re-arms the notification; a broken socket reports on its next operation.
    }
  }

  /** Services now and hands the socket to the reactor if work is left. */
  #kick(justFailed = false): void {
    reactor.update(this, this.service(justFailed));
  }

  /**
   * Sends frames from `start` with ZMQ_DONTWAIT. Returns -1 when all were accepted, else the
   * index of the frame that would block. Throws on any other error.
   */
  #sendFrom(frames: Uint8Array[], start: number): number {
    const z = zmq();
    const last = frames.length - 1;
    for (let i = start; i <= last; i++) {
      const f = frames[i];
      const flags = i < last ? ZMQ_DONTWAIT | ZMQ_SNDMORE : ZMQ_DONTWAIT;
      const e = f.byteLength >= this.#zcSendMin
        ? this.#sendZeroCopy(f, flags)
        : z.zmq_send(this.#h, f, BigInt(f.byteLength), flags) < 0
        ? z.zmq_errno()
        : 0;
      if (e !== 0) {
        if (e === ERRNO.EAGAIN) return i;
        if (e === ERRNO.EINTR) {
          i--;
          continue;
        }
        throw this.#error("send", e);
      }
    }
    return -1;
  }

  /** Sends `f` without copying it (zmq_msg_init_data); returns 0 or the errno. */
  #sendZeroCopy(f: Uint8Array, flags: number): number {
    const z = zmq();
    const slot = sendReleases.acquire();
    if (slot < 0) {
      // Every slot in flight: fall back to a copying send.
      return z.zmq_send(this.#h, f, BigInt(f.byteLength), flags) < 0 ? z.zmq_errno() : 0;
    }
    if (!sendMsg) sendMsg = new Uint8Array(new BigUint64Array(8).buffer);
    const m = sendMsg;
    const data = Deno.UnsafePointer.of(f);
    const size = BigInt(f.byteLength);
    if (z.zmq_msg_init_data(m, data, size, sendReleases.ffn(), sendReleases.hint(slot)) !== 0) {
      sendReleases.cancel(slot);
      return z.zmq_errno();
    }
    if (z.zmq_msg_send(m, this.#h, flags) < 0) {
      // Still ours: closing it runs the release function right here, synchronously.
      const e = z.zmq_errno();
      z.zmq_msg_close(m);
      sendReleases.cancel(slot);
      return e;
    }
    sendReleases.hold(slot, f);
    return 0;
  }

  /** Receives one whole message with ZMQ_DONTWAIT, or null if none is ready. */
  #recvOne(): Received | null {
    const z = zmq();
    const m = msgBuf();
    const frames: Received = this.#partial ?? [];
    for (;;) {
      const n = z.zmq_msg_recv(m, this.#h, ZMQ_DONTWAIT);
      if (n < 0) {
        const e = z.zmq_errno();
        if (e === ERRNO.EAGAIN) {
          // libzmq delivers multipart messages atomically, so this is not expected mid-message;
          // keep what we have rather than lose it.
          if (frames.length > 0) this.#partial = frames;
          return null;
        }
        if (e === ERRNO.EINTR) continue;
        throw this.#error("receive", e);
      }
      const more = z.zmq_msg_more(m);
      // Every frame of a message comes over one connection, but a ROUTER's routing-id frame
      // prefetched by a ZMQ_EVENTS check carries no metadata: ask the next frame then.
      if (this.#peerUserId && frames.userId === undefined) frames.userId = userIdOf(m);
      if (n >= this.#zcRecvMin) {
        frames.push(adoptReceived(m, n));
      } else {
        // The only copy: out of libzmq's buffer into an exact-size JS buffer.
        const out = new Uint8Array(n);
        if (n > 0) Deno.UnsafePointerView.copyInto(z.zmq_msg_data(m)!, out);
        frames.push(out);
        if (n > RELEASE_ABOVE) {
          z.zmq_msg_close(m);
          z.zmq_msg_init(m);
        }
      }
      if (more === 0) break;
    }
    this.#partial = null;
    return frames;
  }

  #failAll(e: unknown): void {
    const recv = this.#recvWaiters;
    const jobs = this.#sendJobs;
    this.#recvWaiters = [];
    this.#sendJobs = [];
    for (const w of recv) w.reject(e);
    for (const j of jobs) j.reject(e);
  }

  #applyOptions(o: SocketOptions): void {
    if (o.zeroCopyRecvMin !== undefined) {
      this.#zcRecvMin = Math.max(o.zeroCopyRecvMin, ZERO_COPY_FLOOR);
    }
    if (o.zeroCopySendMin !== undefined) {
      this.#zcSendMin = Math.max(o.zeroCopySendMin, ZERO_COPY_FLOOR);
    }
    this.#setInt(OPT.LINGER, o.linger ?? 0, "LINGER");
    if (this.type === "ROUTER" && o.routerMandatory !== false) {
      this.#setInt(OPT.ROUTER_MANDATORY, 1, "ROUTER_MANDATORY");
    }
    if (o.routerHandover !== undefined) {
      this.#setInt(OPT.ROUTER_HANDOVER, o.routerHandover ? 1 : 0, "ROUTER_HANDOVER");
    }
    const ints: [keyof SocketOptions, number, string][] = [
      ["sndhwm", OPT.SNDHWM, "SNDHWM"],
      ["rcvhwm", OPT.RCVHWM, "RCVHWM"],
      ["heartbeatIvl", OPT.HEARTBEAT_IVL, "HEARTBEAT_IVL"],
      ["heartbeatTimeout", OPT.HEARTBEAT_TIMEOUT, "HEARTBEAT_TIMEOUT"],
      ["heartbeatTtl", OPT.HEARTBEAT_TTL, "HEARTBEAT_TTL"],
      ["reconnectIvl", OPT.RECONNECT_IVL, "RECONNECT_IVL"],
      ["backlog", OPT.BACKLOG, "BACKLOG"],
      ["reconnectIvlMax", OPT.RECONNECT_IVL_MAX, "RECONNECT_IVL_MAX"],
      ["connectTimeout", OPT.CONNECT_TIMEOUT, "CONNECT_TIMEOUT"],
      ["handshakeIvl", OPT.HANDSHAKE_IVL, "HANDSHAKE_IVL"],
      ["sndbuf", OPT.SNDBUF, "SNDBUF"],
      ["rcvbuf", OPT.RCVBUF, "RCVBUF"],
      ["tcpKeepalive", OPT.TCP_KEEPALIVE, "TCP_KEEPALIVE"],
    ];
    for (const [key, opt, name] of ints) {
      const v = o[key];
      if (v !== undefined) this.#setInt(opt, v as number, name);
    }
    if (o.immediate !== undefined) this.#setInt(OPT.IMMEDIATE, o.immediate ? 1 : 0, "IMMEDIATE");
    if (o.maxMsgSize !== undefined) {
      i64Buf[0] = BigInt(o.maxMsgSize);
      this.#setRaw(OPT.MAXMSGSIZE, i64Bytes, "setsockopt MAXMSGSIZE");
    }
    if (o.routingId !== undefined) {
      this.#setBytes(OPT.ROUTING_ID, toBytes(o.routingId), "setsockopt ROUTING_ID");
    }
    if (o.curveServer !== undefined) {
      this.#setInt(OPT.CURVE_SERVER, o.curveServer ? 1 : 0, "CURVE_SERVER");
    }
    const keys: [keyof SocketOptions, number, string][] = [
      ["curvePublicKey", OPT.CURVE_PUBLICKEY, "CURVE_PUBLICKEY"],
      ["curveSecretKey", OPT.CURVE_SECRETKEY, "CURVE_SECRETKEY"],
      ["curveServerKey", OPT.CURVE_SERVERKEY, "CURVE_SERVERKEY"],
    ];
    for (const [key, opt, name] of keys) {
      const v = o[key];
      if (v !== undefined) this.#setBytes(opt, toBytes(v as Bytes), `setsockopt ${name}`);
    }
    if (o.zapDomain !== undefined) {
      this.#setBytes(OPT.ZAP_DOMAIN, toBytes(o.zapDomain), "setsockopt ZAP_DOMAIN");
    }
    if (o.zapEnforceDomain) {
      intBuf[0] = 1;
      this.#zapEnforced = zmq().zmq_setsockopt(this.#h, OPT.ZAP_ENFORCE_DOMAIN, intBytes, 4n) === 0;
    }
    this.#peerUserId = o.peerUserId === true;
    if (o.subscribe !== undefined) {
      const subs = Array.isArray(o.subscribe) ? o.subscribe : [o.subscribe];
      for (const s of subs) this.#setBytes(OPT.SUBSCRIBE, toBytes(s), "setsockopt SUBSCRIBE");
    }
  }

  #setInt(opt: number, value: number, name: string): void {
    intBuf[0] = value;
    this.#setRaw(opt, intBytes, `setsockopt ${name}`);
  }

  #setBytes(opt: number, value: Uint8Array, op: string): void {
    this.#setRaw(opt, value, op);
  }

  #setRaw(opt: number, value: Uint8Array, op: string): void {
    if (zmq().zmq_setsockopt(this.#h, opt, value, BigInt(value.byteLength)) !== 0) {
      throw this.#lastError(op);
    }
  }

  #getInt(opt: number, op: string): number {
    const z = zmq();
    // ZMQ_EVENTS processes libzmq's command queue, which polls: a signal (a profiler's SIGPROF,
    // a SIGTERM being handled) interrupts it with EINTR, which is not an error of the socket.
    for (let tries = 0;; tries++) {
      sizeBuf[0] = 4n;
      if (z.zmq_getsockopt(this.#h, opt, intBytes, sizeBytes) === 0) return intBuf[0];
      if (z.zmq_errno() !== ERRNO.EINTR || tries >= 100) throw this.#lastError(op);
    }
  }

  #getString(opt: number, op: string): string {
    const buf = new Uint8Array(1024);
    sizeBuf[0] = BigInt(buf.length);
    if (zmq().zmq_getsockopt(this.#h, opt, buf, sizeBytes) !== 0) throw this.#lastError(op);
    const len = Number(sizeBuf[0]);
    // libzmq counts the terminating NUL in the returned size.
    return new TextDecoder().decode(buf.subarray(0, len > 0 ? len - 1 : 0));
  }

  #forget(endpoint: string): void {
    const i = this.#endpoints.indexOf(endpoint);
    if (i >= 0) this.#endpoints.splice(i, 1);
  }

  #check(op: string, endpoint?: string): void {
    if (this.#closed) throw this.#closedError(op, endpoint);
  }

  #ctx(op: string, endpoint?: string): ZmqErrorContext {
    return {
      op,
      socketType: this.type,
      socketId: this.id,
      endpoint: endpoint ?? (this.#endpoints.length ? this.#endpoints.join(", ") : undefined),
    };
  }

  #error(op: string, errno: number, endpoint?: string): ZmqError {
    return new ZmqError(errno, errnoName(errno), this.#ctx(op, endpoint));
  }

  #lastError(op: string, endpoint?: string): ZmqError {
    return this.#error(op, zmq().zmq_errno(), endpoint);
  }

  #closedError(op: string, endpoint?: string): ZmqError {
    return new ZmqError(ERRNO.ENOTSOCK, "closed", this.#ctx(op, endpoint), "socket is closed");
  }
}

/** libzmq's version, e.g. [4, 3, 4]. */
export function zmqVersion(): [number, number, number] {
  const a = new Int32Array(1), b = new Int32Array(1), c = new Int32Array(1);
  zmq().zmq_version(a, b, c);
  return [a[0], b[0], c[0]];
}

/** True if libzmq was built with `capability` ("curve", "ipc", ...). */
export function zmqHas(capability: string): boolean {
  return zmq().zmq_has(cstr(capability)) === 1;
}

/** A new CURVE key pair, both keys Z85-encoded (40 characters). */
export function curveKeypair(): { publicKey: string; secretKey: string } {
  const pub = new Uint8Array(41), sec = new Uint8Array(41);
  const z = zmq();
  if (z.zmq_curve_keypair(pub, sec) !== 0) {
    const e = z.zmq_errno();
    throw new ZmqError(e, errnoName(e), { op: "curve_keypair" });
  }
  const dec = new TextDecoder();
  return { publicKey: dec.decode(pub.subarray(0, 40)), secretKey: dec.decode(sec.subarray(0, 40)) };
}

/** Z85 text (RFC 32) of `data`, whose length must be a multiple of 4 (CURVE keys: 32 bytes). */
export function z85Encode(data: Uint8Array): string {
  if (data.length % 4 !== 0) {
    throw new RangeError(`z85: ${data.length} bytes is not a multiple of 4`);
  }
  const out = new Uint8Array((data.length / 4) * 5 + 1);
  if (!zmq().zmq_z85_encode(out, data as Uint8Array<ArrayBuffer>, BigInt(data.length))) {
    throw new RangeError("z85: encode failed");
  }
  return new TextDecoder().decode(out.subarray(0, out.length - 1));
}

/** Bytes of Z85 text; null when `text` is not valid Z85 of a multiple of 5 characters. */
export function z85Decode(text: string): Uint8Array | null {
  if (text.length % 5 !== 0 || !/^[\x21-\x7e]*$/.test(text)) return null;
  const out = new Uint8Array((text.length / 5) * 4);
  return zmq().zmq_z85_decode(out, cstr(text)) ? out : null;
}

/** Number of sockets currently open in this process. */
export function openSocketCount(): number {
  return live.size;
}

/**
 * Closes every open socket, waits for the reactor to go idle and terminates the libzmq
 * context (its I/O threads and fds). The next socket creates a fresh context. Meant for tests
 * and orderly shutdown.
 */
export async function terminate(): Promise<void> {
  for (const s of [...live]) s.close();
  await reactor.idle();
  reactor.closeFds();
  if (msg) {
    zmq().zmq_msg_close(msg);
    msg = null;
  }
  if (ctx) {
    const c = ctx;
    ctx = null;
    zmq().zmq_ctx_term(c);
  }
  // zmq_ctx_term returned: libzmq has released every zero-copy frame it held.
  sendReleases.sweep();
}
