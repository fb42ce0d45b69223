/**
 * A real balancer on a simulated host: the production BalancerService (with its ChunkScheduler,
 * event log and lease view), StandbyFollower and LeaseKeeper, wired as roles/balancer/main.ts
 * wires them, but on the host's `Clock`, `Dial` and listening `PushServer` instead of the
 * process's timers and ZeroMQ. Nothing of the balancer is replaced: only its I/O is simulated.
 *
 * {@link SimBalancerNode.crash} is a kill -9: the host crashes (timers, channels and requests of
 * this incarnation vanish, nothing of it settles) and every in-memory state is dropped;
 * {@link SimBalancerNode.start} after it starts a new process with the original flags (same node
 * id, same endpoint), which, like the real one, knows nothing until it follows the primary or is
 * granted the lease. {@link SimBalancerNode.pause} is a SIGSTOP for a while: its timers, the
 * requests it is sent and the replies it is owed wait until it resumes (time goes on: a primary
 * wakes up with its lease run out by its own clock), see {@link Freezer}.
 * @module
 */
import type { Clock, TimerId } from "../../../lib/clock.ts";
import type { Handler } from "../../../lib/rpc.ts";
import type { Logger } from "../../../lib/log.ts";
import type { Credentials } from "../../../lib/security.ts";
import type { Dial, PushServer } from "../../../lib/transport.ts";
import type { Message, Uuid } from "../../../wire/mod.ts";
import { type BalancerPlantedBug, BalancerService } from "../../../roles/balancer/service.ts";
import { StandbyFollower } from "../../../roles/balancer/standby.ts";
import { LeaseKeeper } from "../../../roles/balancer/lease_keeper.ts";

/** A listening endpoint on a simulated host. */
export interface SimListener extends PushServer {
  close(): Promise<void>;
}

/** What a balancer needs of its simulated host (tests/sim/world/net.ts SimHost has it). */
export interface SimServerHost {
  /** The current incarnation's clock. */
  readonly clock: Clock;
  readonly dial: Dial;
  listen(endpoint: string, handler: Handler, node?: Uint8Array): SimListener;
  crash(): void;
  restart(): void;
}

/** One log record of a simulated node (kept by the simulation, printed on a failure). */
export interface SimLogRecord {
  t: number;
  node: string;
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

/** A Logger that hands records to `sink`, stamped with virtual time. */
export function simLogger(
  node: string,
  clock: () => Clock,
  sink: (r: SimLogRecord) => void,
  fixed: Record<string, unknown> = {},
): Logger {
  const emit = (level: string) => (msg: string, fields?: Record<string, unknown>) =>
    sink({ t: clock().monotonic(), node, level, msg, fields: { ...fixed, ...fields } });
  return {
    debug: () => {},
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    child: (f) => simLogger(node, clock, sink, { ...fixed, ...f }),
  };
}

/**
 * A SIGSTOP for simulated code: while paused, timers of the clock it wraps fire only once it
 * resumes (an interval once, however many periods passed, as after a real SIGCONT), and
 * requests served, replies received and replies to pushes wait for it. Time itself goes on.
 */
export class Freezer {
  #paused: Promise<void> | null = null;

  /** True while paused. */
  get paused(): boolean {
    return this.#paused !== null;
  }

  /** Pauses for `ms` of `raw`'s time (a clock this freezer does not wrap). */
  pause(raw: Clock, ms: number): void {
    if (this.#paused) return;
    this.#paused = new Promise((resolve) => {
      raw.setTimeout(() => {
        this.#paused = null;
        resolve();
      }, ms);
    });
  }

  /** Resolves once not paused. */
  async wait(): Promise<void> {
    while (this.#paused) await this.#paused;
  }

  /** `inner` with its timers held while paused. */
  clock(inner: Clock): Clock {
    /** Timers that fired during a pause and wait for it to end. */
    const held = new Set<TimerId>();
    /** Held timers cleared meanwhile: they must not run. */
    const cleared = new Set<TimerId>();
    const fire = (id: TimerId, fn: () => void) => {
      if (!this.#paused) return fn();
      if (held.has(id)) return; // an interval already due: it fires once after the pause
      held.add(id);
      void this.wait().then(() => {
        held.delete(id);
        if (!cleared.delete(id)) fn();
      });
    };
    const clear = (id: TimerId | undefined) => {
      if (id !== undefined && held.has(id)) cleared.add(id);
    };
    return {
      monotonic: () => inner.monotonic(),
      now: () => inner.now(),
      setTimeout: (fn, ms) => {
        const id: TimerId = inner.setTimeout(() => fire(id, fn), ms);
        return id;
      },
      setInterval: (fn, ms) => {
        const id: TimerId = inner.setInterval(() => fire(id, fn), ms);
        return id;
      },
      clearTimeout: (id) => {
        inner.clearTimeout(id);
        clear(id);
      },
      clearInterval: (id) => {
        inner.clearInterval(id);
        clear(id);
      },
    };
  }

  /** `p`, settled only once resumed. */
  hold<T>(p: Promise<T>): Promise<T> {
    return p.then(async (v) => {
      await this.wait();
      return v;
    }, async (e) => {
      await this.wait();
      throw e;
    });
  }

  /** A Dial whose replies wait while paused. */
  dial(inner: Dial): Dial {
    return (endpoint, opts) => {
      const ch = inner(endpoint, opts);
      return {
        endpoint: ch.endpoint,
        request: (msg, timeoutMs) => this.hold(ch.request(msg, timeoutMs)),
        send: (msg) => ch.send(msg),
        close: () => ch.close(),
      };
    };
  }

  /** A handler that serves only once resumed. */
  handler(h: Handler): Handler {
    return async (msg, peer, from) => {
      await this.wait();
      return h(msg, peer, from);
    };
  }
}

/** Options of a {@link SimBalancerNode}. */
export interface SimBalancerOptions {
  host: SimServerHost;
  name: string;
  node: Uuid;
  /** Where it listens and what it advertises, `NAME@tcp://HOST:PORT`. */
  endpoint: string;
  masters: string[];
  /** Its keys (cluster secret, keyring); null: insecure. */
  auth: Credentials | null;
  /** Seeded PRNG (event stream ids). */
  rand: () => number;
  deadAfterMs?: number;
  tickMs?: number;
  pushTimeoutMs?: number;
  syncMs?: number;
  /** Test-only planted bug (BalancerServiceOptions.plantedBug). */
  plantedBug?: BalancerPlantedBug;
  log: (r: SimLogRecord) => void;
  /** Sees every push (worker_request, job_cancel) as it leaves, with the incarnation number. */
  onPush?: (node: SimBalancerNode, incarnation: number, msg: Message) => void;
}

/** One incarnation of the balancer's objects. */
interface Incarnation {
  service: BalancerService;
  follower: StandbyFollower;
  keeper: LeaseKeeper;
  server: SimListener;
  freezer: Freezer;
}

/** A real balancer (service + standby follower + lease keeper) on a simulated host. */
export class SimBalancerNode {
  readonly name: string;
  readonly node: Uuid;
  readonly endpoint: string;
  #o: SimBalancerOptions;
  #cur: Incarnation | null = null;
  /** Incarnations started so far. */
  starts = 0;

  constructor(o: SimBalancerOptions) {
    this.#o = o;
    this.name = o.name;
    this.node = o.node.slice();
    this.endpoint = o.endpoint;
  }

  /** The running incarnation's service (null while down). */
  get service(): BalancerService | null {
    return this.#cur?.service ?? null;
  }

  /** True while up. */
  get up(): boolean {
    return this.#cur !== null;
  }

  /** The host's clock (of the current incarnation). */
  get clock(): Clock {
    return this.#o.host.clock;
  }

  /** True while paused. */
  get paused(): boolean {
    return this.#cur?.freezer.paused ?? false;
  }

  /** SIGSTOP for `ms` of virtual time, then SIGCONT (nothing if down). */
  pause(ms: number): void {
    this.#cur?.freezer.pause(this.#o.host.clock, ms);
  }

  /** Starts a process (first start, or a restart after a crash), as runBalancer does. */
  start(): void {
    if (this.#cur) return;
    const o = this.#o;
    const host = o.host;
    host.restart();
    const freezer = new Freezer();
    const clock = freezer.clock(host.clock);
    const dial = freezer.dial(host.dial);
    this.starts++;
    const log = simLogger(`${o.name}#${this.starts}`, () => host.clock, o.log);
    const rand = o.rand;
    const service = new BalancerService({
      node: o.node,
      endpoint: o.endpoint,
      advertised: o.endpoint,
      log,
      deadAfterMs: o.deadAfterMs ?? 5000,
      tickMs: o.tickMs,
      pushTimeoutMs: o.pushTimeoutMs,
      leased: true,
      auth: o.auth,
      clock,
      newStreamId: () => Uint8Array.from({ length: 16 }, () => Math.floor(rand() * 256)),
      ...(o.plantedBug ? { plantedBug: o.plantedBug } : {}),
    });
    const server = host.listen(o.endpoint, freezer.handler(service.handle), o.node);
    const incarnation = this.starts;
    service.start({
      push: (peer, msg, timeoutMs) => {
        o.onPush?.(this, incarnation, msg);
        return freezer.hold(server.push(peer, msg, timeoutMs));
      },
    });
    const follower = new StandbyFollower({
      node: o.node,
      log,
      service,
      syncMs: o.syncMs,
      clock,
      dial,
    });
    const keeper = new LeaseKeeper({
      node: o.node,
      masters: o.masters,
      endpoint: o.endpoint,
      log,
      service,
      follower,
      clock,
      dial,
    });
    follower.start();
    keeper.start();
    this.#cur = { service, follower, keeper, server, freezer };
  }

  /** kill -9: everything in memory is gone; the host's timers and channels with it. */
  crash(): void {
    if (!this.#cur) return;
    this.#o.host.crash();
    this.#cur = null;
  }
}
