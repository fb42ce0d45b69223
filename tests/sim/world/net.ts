/**
 * The simulator's network: {@link SimNet} carries wire messages between simulated hosts on the
 * {@link SimClock}, with faults drawn from one seeded PRNG (drop, duplicate, delay, reorder,
 * symmetric and one-way cuts).
 *
 * A host ({@link SimHost}) is one simulated process: it listens with a request handler (the
 * same `Handler` shape as lib/rpc.ts `RpcServer`; the returned {@link SimServer} is a
 * lib/transport.ts `PushServer`) and dials with {@link SimHost.dial}, a lib/transport.ts `Dial`
 * whose channels behave as `RpcClient`: many requests in flight, each answered, failed
 * (`RpcError` "remote" for an `error` reply) or timed out ("timeout") once; one-way `send`;
 * requests pushed back by the server (`onRequest`, addressed by the channel's `routingId`).
 *
 * Every message is encoded with the real wire codec when sent and decoded when it arrives, so
 * nothing is shared by reference between hosts and the codec and its limits are exercised; a
 * frame that does not decode is answered BAD_MESSAGE as RpcServer does, a handler that throws is
 * answered with the error's code. A host may carry an `Identity` (the name and role its key
 * would have): servers receive it as `from`, and a type its role may not send is refused
 * FORBIDDEN, as lib/rpc.ts does after CURVE.
 *
 * Crashing a host ({@link SimHost.crash}) removes its listeners, silently forgets its channels
 * and requests (the process is gone: nothing of it settles any more) and drops everything still
 * in flight to or from it; messages sent by objects of that incarnation afterwards go nowhere.
 *
 * Determinism: every delivery is a timer on the SimClock, and every random choice is drawn from
 * the net's PRNG in the order sends happen (see tests/sim/world/clock.ts).
 * @module
 */
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
} from "../../../wire/mod.ts";
import { type Handler, hexId, RequestError, RpcError } from "../../../lib/rpc.ts";
import type { RpcClientOptions } from "../../../lib/rpc.ts";
import type { Dial, PushServer, RequestChannel } from "../../../lib/transport.ts";
import { type Identity, maySend } from "../../../lib/security.ts";
import { splitNamedEndpoint } from "../../../lib/named_endpoint.ts";
import type { NodeClock, SimClock } from "./clock.ts";

/** Fault rates of a {@link SimNet} (each message draws its own fate). */
export interface NetFaults {
  /** Probability that a message is lost. */
  drop: number;
  /** Probability that a message is delivered twice (each copy with its own delay). */
  duplicate: number;
  /** Delay of every message: uniform in [minDelayMs, maxDelayMs]. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Probability that a message is held up to `slowDelayMs` more (overtaken by later ones). */
  slow: number;
  slowDelayMs: number;
}

/** A network with no faults: 1-3 ms per message. */
export const CALM: NetFaults = {
  drop: 0,
  duplicate: 0,
  minDelayMs: 1,
  maxDelayMs: 3,
  slow: 0,
  slowDelayMs: 0,
};

/** Counters of a {@link SimNet}. */
export interface NetStats {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  /** Lost to a cut link. */
  cut: number;
  /** Arrived where nothing listens (or at a crashed host). */
  unrouted: number;
}

interface Listener {
  host: SimHost;
  server: SimServer;
}

/** The simulated network; see module doc. */
export class SimNet {
  readonly clock: SimClock;
  #rand: () => number;
  faults: NetFaults;
  #hosts = new Map<string, SimHost>();
  #listeners = new Map<string, Listener>();
  /** Channels by normalized endpoint, then routing id (hex): who a server can push to. */
  #conns = new Map<string, Map<string, SimChannel>>();
  /** Cut links "from\u0000to": messages from `from` to `to` are lost. */
  #cuts = new Set<string>();
  readonly stats: NetStats = {
    sent: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    cut: 0,
    unrouted: 0,
  };

  constructor(clock: SimClock, rand: () => number, faults: Partial<NetFaults> = {}) {
    this.clock = clock;
    this.#rand = rand;
    this.faults = { ...CALM, ...faults };
  }

  /** The host named `name` (made on first use, with its key's identity if given). */
  host(name: string, identity: Identity | null = null): SimHost {
    let h = this.#hosts.get(name);
    if (!h) {
      h = new SimHost(this, name, identity);
      this.#hosts.set(name, h);
    }
    return h;
  }

  /** Loses every message from `from` to `to` (one way) until healed. */
  cut(from: string, to: string): void {
    this.#cuts.add(`${from}\u0000${to}`);
  }

  /** Restores the link from `from` to `to`. */
  uncut(from: string, to: string): void {
    this.#cuts.delete(`${from}\u0000${to}`);
  }

  /** Cuts every link between the two sides, both ways (or only a → b when `oneWay`). */
  partition(a: readonly string[], b: readonly string[], oneWay = false): void {
    for (const x of a) {
      for (const y of b) {
        this.cut(x, y);
        if (!oneWay) this.cut(y, x);
      }
    }
  }

  /** Restores every link. */
  heal(): void {
    this.#cuts.clear();
  }

  /** Whether messages from `from` reach `to`. */
  linked(from: string, to: string): boolean {
    return from === to || !this.#cuts.has(`${from}\u0000${to}`);
  }

  /** A uniform draw in [0, 1) from the net's PRNG. */
  random(): number {
    return this.#rand();
  }

  /** @internal */
  listen(endpoint: string, l: Listener): void {
    const key = normalize(endpoint);
    const other = this.#listeners.get(key);
    if (other && other.host.alive && other.server !== l.server) {
      throw new Error(`sim: ${endpoint} is already listened on by ${other.host.name}`);
    }
    this.#listeners.set(key, l);
  }

  /** @internal */
  unlisten(endpoint: string, server: SimServer): void {
    const key = normalize(endpoint);
    if (this.#listeners.get(key)?.server === server) this.#listeners.delete(key);
  }

  /** @internal the live listener on `endpoint`, if any. */
  listener(endpoint: string): Listener | undefined {
    const l = this.#listeners.get(endpoint);
    return l && l.host.alive && !l.server.closed ? l : undefined;
  }

  /** @internal */
  connect(c: SimChannel): void {
    let m = this.#conns.get(c.key);
    if (!m) this.#conns.set(c.key, m = new Map());
    m.set(hexId(c.routingId), c); // a reconnect with the same routing id takes over (handover)
  }

  /** @internal */
  disconnect(c: SimChannel): void {
    const m = this.#conns.get(c.key);
    const k = hexId(c.routingId);
    if (m?.get(k) === c) m.delete(k);
  }

  /** @internal the open channel to `key` with routing id `peer`. */
  connection(key: string, peer: Uint8Array): SimChannel | undefined {
    const c = this.#conns.get(key)?.get(hexId(peer));
    return c && !c.closed && c.host.alive ? c : undefined;
  }

  /**
   * Carries one frame from host `from` to host `to` (resolved when it arrives: `to()` may name a
   * host that was not listening at send time) and calls `arrive` there, unless a fault loses it.
   */
  transmit(from: SimHost, to: () => SimHost | undefined, arrive: () => void): void {
    this.stats.sent++;
    const f = this.faults;
    if (f.drop > 0 && this.#rand() < f.drop) {
      this.stats.dropped++;
      return;
    }
    const copies = f.duplicate > 0 && this.#rand() < f.duplicate ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      let delay = f.minDelayMs + this.#rand() * (f.maxDelayMs - f.minDelayMs);
      if (f.slow > 0 && this.#rand() < f.slow) delay += this.#rand() * f.slowDelayMs;
      this.clock.schedule(
        () => {
          const dst = to();
          if (!dst || !dst.alive) {
            this.stats.unrouted++;
            return;
          }
          if (!this.linked(from.name, dst.name)) {
            this.stats.cut++;
            return;
          }
          this.stats.delivered++;
          arrive();
        },
        delay,
        0,
        null,
      );
    }
  }
}

/** One simulated process on the {@link SimNet}. */
export class SimHost {
  readonly net: SimNet;
  readonly name: string;
  /** The identity its key has on the keyring (null: insecure, trusted). */
  identity: Identity | null;
  alive = true;
  /** Bumped by every crash: what an older incarnation sends is lost. */
  incarnation = 0;
  #servers = new Set<SimServer>();
  #channels = new Set<SimChannel>();
  #clock: NodeClock;
  #nextRouting = 1;
  /** The rate of this host's clock, in every incarnation (NodeClock.setRate). */
  #clockRate = 1;

  constructor(net: SimNet, name: string, identity: Identity | null) {
    this.net = net;
    this.name = name;
    this.identity = identity;
    this.#clock = net.clock.forNode();
  }

  /** Runs this host's clock at `rate` (now, and in every later incarnation): clock drift. */
  setClockRate(rate: number): void {
    this.#clockRate = rate;
    this.#clock.setRate(rate);
  }

  /** This incarnation's clock (its timers die at a crash). Give it to the host's code. */
  get clock(): NodeClock {
    return this.#clock;
  }

  /** Serves `endpoint` with `handler` (as RpcServer.bind + handler). */
  listen(endpoint: string, handler: Handler, node: Uint8Array = new Uint8Array(16)): SimServer {
    const s = new SimServer(this, endpoint, handler, node);
    this.net.listen(endpoint, { host: this, server: s });
    this.#servers.add(s);
    return s;
  }

  /** A lib/transport.ts `Dial` for this host's code. */
  readonly dial: Dial = (endpoint: string, opts: RpcClientOptions): RequestChannel => {
    if (!this.alive) throw new Error(`sim: ${this.name} is down`);
    const routing = opts.routingId?.slice() ?? this.#routingId();
    const c = new SimChannel(this, endpoint, opts, routing);
    this.#channels.add(c);
    return c;
  };

  /**
   * The process dies: listeners gone, channels and requests forgotten (nothing settles), timers
   * cancelled, messages in flight to or from it lost. {@link restart} brings the host back up
   * with a fresh clock, for a new incarnation of the code to use.
   */
  crash(): void {
    if (!this.alive) return;
    this.alive = false;
    this.incarnation++;
    this.#clock.stopAll();
    for (const s of this.#servers) s.abandon();
    for (const c of this.#channels) c.abandon();
    this.#servers.clear();
    this.#channels.clear();
  }

  /** Up again after {@link crash} (a new process: new clock, new routing ids). */
  restart(): void {
    if (this.alive) return;
    this.alive = true;
    this.#clock = this.net.clock.forNode();
    if (this.#clockRate !== 1) this.#clock.setRate(this.#clockRate);
  }

  /** @internal */
  forget(c: SimChannel): void {
    this.#channels.delete(c);
  }

  #routingId(): Uint8Array {
    // Deterministic and distinct per host, incarnation and channel (zmq picks a random one).
    const s = `${this.name}/${this.incarnation}/${this.#nextRouting++}`;
    return new TextEncoder().encode(s).slice(0, 255);
  }
}

interface Waiter {
  resolve: (m: Message) => void;
  reject: (e: unknown) => void;
  timer: number;
}

/** Requests in flight from one side, by id (as lib/rpc.ts PendingRequests). */
class Pending {
  #w = new Map<number, Waiter>();
  #next = 1;
  #clock: NodeClock;
  constructor(clock: NodeClock) {
    this.#clock = clock;
  }
  add(peer: string, timeoutMs: number, what: string): { id: number; reply: Promise<Message> } {
    const id = this.#next++;
    const reply = new Promise<Message>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => {
        if (!this.#w.delete(id)) return;
        reject(
          new RpcError(
            ErrorCode.Unavailable,
            `no reply within ${timeoutMs} ms (${what})`,
            peer,
            "timeout",
          ),
        );
      }, timeoutMs) as number;
      this.#w.set(id, { resolve, reject, timer });
    });
    return { id, reply };
  }
  /** Settles `id` with a reply frame; a late or duplicate reply is ignored. */
  settle(id: number, frame: Uint8Array, peer: string): void {
    const w = this.#w.get(id);
    if (!w) return;
    this.#w.delete(id);
    this.#clock.clearTimeout(w.timer);
    try {
      const m = decode(frame, DEFAULT_LIMITS);
      if (m.type === MessageType.Error) {
        w.reject(new RpcError(m.code, m.text, peer, "remote", m.value ?? 0));
      } else w.resolve(m);
    } catch (e) {
      w.reject(new RpcError(ErrorCode.BadMessage, `bad reply: ${e}`, peer));
    }
  }
  fail(id: number, e: unknown): void {
    const w = this.#w.get(id);
    if (!w) return;
    this.#w.delete(id);
    this.#clock.clearTimeout(w.timer);
    w.reject(e);
  }
  failAll(e: unknown): void {
    for (const id of [...this.#w.keys()]) this.fail(id, e);
  }
  /** Forgets everything without settling (the process died). */
  forget(): void {
    this.#w.clear();
  }
  get size(): number {
    return this.#w.size;
  }
}

/** The `error` reply for what a handler threw (as lib/rpc.ts does). */
function toErrorReply(node: Uint8Array, e: unknown): Message {
  if (e instanceof WireError) return wireErrorReply(node, e);
  const code = e instanceof RequestError || e instanceof RpcError ? e.code : ErrorCode.Internal;
  const text = e instanceof Error ? e.message : String(e);
  const reply = errorReply(node, code, text.slice(0, 4000));
  const value = e instanceof RequestError ? e.value : 0;
  return value ? { ...reply, value } : reply;
}

/** Encodes, or null when `msg` does not encode (a bug of the sender, reported by the caller). */
function tryEncode(msg: Message): Uint8Array | Error {
  try {
    return encode(msg);
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

/** A listening endpoint of a {@link SimHost}: serves requests, pushes to connected channels. */
export class SimServer implements PushServer {
  readonly host: SimHost;
  readonly endpoint: string;
  readonly key: string;
  #handler: Handler;
  #node: Uint8Array;
  #pending: Pending;
  closed = false;
  /** Frames that did not decode, requests refused FORBIDDEN. */
  badFrames = 0;
  forbidden = 0;

  constructor(host: SimHost, endpoint: string, handler: Handler, node: Uint8Array) {
    this.host = host;
    this.endpoint = endpoint;
    this.key = normalize(endpoint);
    this.#handler = handler;
    this.#node = node;
    this.#pending = new Pending(host.clock);
  }

  /** Replaces the handler (as RpcServer.setHandler). */
  setHandler(h: Handler): void {
    this.#handler = h;
  }

  /** Pushes `msg` to the channel with routing id `peer` and waits for its reply. */
  push(peer: Uint8Array, msg: Message, timeoutMs = 10_000): Promise<Message> {
    if (this.closed) {
      return Promise.reject(new RpcError(ErrorCode.Unavailable, "server closed", "-", "closed"));
    }
    const frame = tryEncode(msg);
    if (frame instanceof Error) return Promise.reject(frame);
    const name = hexId(peer);
    const target = this.host.net.connection(this.key, peer);
    if (!target) {
      return Promise.reject(
        new RpcError(ErrorCode.Unavailable, "send failed: host unreachable", name, "not_sent"),
      );
    }
    const { id, reply } = this.#pending.add(name, timeoutMs, `push of type ${msg.type}`);
    const net = this.host.net;
    net.transmit(this.host, () => (target.closed ? undefined : target.host), () => {
      target.serveReverse(frame).then((out) => {
        if (!out || target.closed) return;
        net.transmit(target.host, () => (this.closed ? undefined : this.host), () => {
          this.#pending.settle(id, out, name);
        });
      });
    });
    return reply;
  }

  /** @internal serves one request frame from `from`; resolves with the reply frame or null. */
  async serve(frame: Uint8Array, from: SimChannel): Promise<Uint8Array | null> {
    let reply: Message | null;
    try {
      const msg = decode(frame, DEFAULT_LIMITS);
      const who = from.host.identity;
      if (who && !maySend(who, SPEC_BY_TYPE[msg.type]!.senders)) {
        this.forbidden++;
        reply = errorReply(
          this.#node,
          ErrorCode.Forbidden,
          `a ${who.role} key (${who.name}) may not send message type ${msg.type}`,
        );
      } else reply = await this.#handler(msg, from.routingId.slice(), who);
    } catch (e) {
      if (e instanceof WireError) this.badFrames++;
      reply = toErrorReply(this.#node, e);
    }
    if (!reply || this.closed) return null;
    const out = tryEncode(reply);
    return out instanceof Error ? encode(toErrorReply(this.#node, out)) : out;
  }

  /** Stops serving; pushes in flight fail. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.host.net.unlisten(this.endpoint, this);
      this.#pending.failAll(new RpcError(ErrorCode.Unavailable, "server closed", "-", "closed"));
    }
    return Promise.resolve();
  }

  /** @internal the process died. */
  abandon(): void {
    this.closed = true;
    this.host.net.unlisten(this.endpoint, this);
    this.#pending.forget();
  }
}

/** A channel from a {@link SimHost} to one endpoint (what `RpcClient` is over ZeroMQ). */
export class SimChannel implements RequestChannel {
  readonly host: SimHost;
  readonly endpoint: string;
  readonly key: string;
  readonly routingId: Uint8Array;
  #opts: RpcClientOptions;
  #pending: Pending;
  #timeoutMs: number;
  closed = false;

  constructor(host: SimHost, endpoint: string, opts: RpcClientOptions, routingId: Uint8Array) {
    this.host = host;
    this.endpoint = endpoint;
    this.key = normalize(endpoint);
    this.routingId = routingId;
    this.#opts = opts;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#pending = new Pending(host.clock);
    host.net.connect(this);
  }

  request(msg: Message, timeoutMs = this.#timeoutMs): Promise<Message> {
    if (this.closed) {
      return Promise.reject(
        new RpcError(ErrorCode.Unavailable, "client closed", this.endpoint, "closed"),
      );
    }
    const frame = tryEncode(msg);
    if (frame instanceof Error) return Promise.reject(frame);
    const { id, reply } = this.#pending.add(this.endpoint, timeoutMs, `type ${msg.type}`);
    this.#carry(frame, (out) => this.#pending.settle(id, out, this.endpoint));
    return reply;
  }

  send(msg: Message): Promise<void> {
    if (this.closed) {
      return Promise.reject(
        new RpcError(ErrorCode.Unavailable, "client closed", this.endpoint, "closed"),
      );
    }
    const frame = tryEncode(msg);
    if (frame instanceof Error) return Promise.reject(frame);
    this.#carry(frame, null);
    return Promise.resolve();
  }

  /** Takes `frame` to the endpoint's server; its reply (if any) back to `onReply`. */
  #carry(frame: Uint8Array, onReply: ((out: Uint8Array) => void) | null): void {
    const net = this.host.net;
    let server: SimServer | undefined;
    net.transmit(this.host, () => {
      const l = net.listener(this.key);
      server = l?.server;
      return l?.host;
    }, () => {
      const s = server!;
      s.serve(frame, this).then((out) => {
        if (!out || !onReply) return;
        net.transmit(s.host, () => (this.closed ? undefined : this.host), () => {
          if (!this.closed) onReply(out);
        });
      });
    });
  }

  /** @internal a request pushed by the server: the reply frame, or null. */
  async serveReverse(frame: Uint8Array): Promise<Uint8Array | null> {
    let reply: Message | null;
    try {
      if (!this.#opts.onRequest) {
        throw new RequestError(ErrorCode.WrongRole, "this client serves no requests");
      }
      reply = await this.#opts.onRequest(decode(frame, DEFAULT_LIMITS));
    } catch (e) {
      reply = toErrorReply(this.#opts.node, e);
    }
    if (!reply || this.closed) return null;
    const out = tryEncode(reply);
    return out instanceof Error ? encode(toErrorReply(this.#opts.node, out)) : out;
  }

  /** Number of requests waiting for a reply. */
  get inFlight(): number {
    return this.#pending.size;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.host.net.disconnect(this);
      this.host.forget(this);
      this.#pending.failAll(
        new RpcError(ErrorCode.Unavailable, "client closed", this.endpoint, "closed"),
      );
    }
    return Promise.resolve();
  }

  /** @internal the process died. */
  abandon(): void {
    this.closed = true;
    this.host.net.disconnect(this);
    this.#pending.forget();
  }
}

/** The endpoint without its `NAME@` (how the listener table is keyed). */
function normalize(endpoint: string): string {
  return splitNamedEndpoint(endpoint).endpoint;
}
