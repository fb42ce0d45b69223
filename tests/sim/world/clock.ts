/**
 * Virtual time for the deterministic simulator: {@link SimClock} implements lib/clock.ts `Clock`
 * on a number that only {@link SimClock.run} moves, and {@link NodeClock} is one simulated node's
 * view of it (its timers die with the node when it crashes).
 *
 * ## Why a run is a function of its seed
 *
 * Everything the code under test can observe from outside itself comes from here or from the
 * simulated network and disk, which schedule all their work as timers on this clock:
 *
 * - one JavaScript thread; the only sources of progress are timer callbacks fired by
 *   {@link SimClock.run} and the promise jobs (microtasks) they cause;
 * - timers fire in the order of (due time, sequence number of the `setTimeout` call): two timers
 *   due at the same virtual time fire in the order they were set, never by real time;
 * - between two timers the driver waits for one real macrotask boundary (`setImmediate`, which
 *   Deno does not clamp, unlike a nested `setTimeout(0)`): the microtask queue is always empty
 *   when a macrotask starts, so every promise chain the last timer started has run to its next
 *   await of something not yet settled. As long as the code under test holds no real timer and
 *   no real I/O (file system, sockets), nothing else can run in that boundary, so the state at
 *   each timer is the same in every run;
 * - randomness comes from seeded PRNGs ({@link mulberry32}), time from this clock (`now()` is a
 *   fixed epoch plus virtual time), and Map/Set iteration is insertion-ordered.
 *
 * What breaks this: a real `setTimeout`/`Date.now`/`crypto.getRandomValues`/Deno file call in the
 * code under test. A run that hits one is still a valid test, just not an exact replay; the
 * cluster sim checks replay by running a seed twice and comparing its trace.
 * @module
 */
import { setImmediate } from "node:timers";
import type { Clock, TimerId } from "../../../lib/clock.ts";

export { mulberry32 } from "../../../roles/master/raft/mod.ts";

/** The wall-clock time virtual time 0 stands for (2026-01-01T00:00:00Z). */
export const SIM_EPOCH_MS = Date.UTC(2026, 0, 1);

interface Timer {
  id: number;
  due: number;
  seq: number;
  fn: () => void;
  /** Repeat period for intervals (0: a one-shot timeout). */
  every: number;
  owner: NodeClock | null;
}

/** Most timers pending at once (a runaway loop of setTimeout is a bug in the code under test). */
export const MAX_SIM_TIMERS = 1_000_000;

/** A binary min-heap of timers by (due, seq). */
class TimerHeap {
  #a: Timer[] = [];
  get size(): number {
    return this.#a.length;
  }
  peek(): Timer | undefined {
    return this.#a[0];
  }
  push(t: Timer): void {
    const a = this.#a;
    a.push(t);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): Timer | undefined {
    const a = this.#a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && before(a[l], a[m])) m = l;
        if (r < a.length && before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(x: Timer, y: Timer): boolean {
  return x.due < y.due || (x.due === y.due && x.seq < y.seq);
}

/** Options of {@link SimClock.run}. */
export interface RunOptions {
  /** Called after every fired timer and its microtasks: check invariants here (throw to stop). */
  afterStep?: () => void;
  /** Stop early once this returns true (checked after every step). */
  until?: () => boolean;
  /** Most timers fired in this run (a bound: exceeding it throws). */
  maxSteps?: number;
}

/** Virtual time and the timers of every simulated node. */
export class SimClock implements Clock {
  #now = 0;
  #seq = 0;
  #nextId = 1;
  #heap = new TimerHeap();
  /** Live timers by id (cancelled ones are removed here and skipped when popped). */
  #live = new Map<number, Timer>();
  /** Timers fired so far. */
  steps = 0;

  /** Virtual milliseconds since the start of the run. */
  monotonic(): number {
    return this.#now;
  }

  /**
   * {@link SIM_EPOCH_MS} plus virtual time, in whole milliseconds as `Date.now()` (the monotonic
   * clock is fractional, as `performance.now()`; code that puts `now()` on the wire relies on it).
   */
  now(): number {
    return Math.floor(SIM_EPOCH_MS + this.#now);
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    return this.schedule(fn, ms, 0, null);
  }

  setInterval(fn: () => void, ms: number): TimerId {
    return this.schedule(fn, ms, Math.max(1, ms), null);
  }

  clearTimeout(id: TimerId | undefined): void {
    if (typeof id === "number") this.#live.delete(id);
  }

  clearInterval(id: TimerId | undefined): void {
    this.clearTimeout(id);
  }

  /** Schedules `fn` after `ms` (repeating every `every` ms if > 0), owned by `owner`. */
  schedule(fn: () => void, ms: number, every: number, owner: NodeClock | null): number {
    if (this.#live.size >= MAX_SIM_TIMERS) throw new Error("sim: too many timers pending");
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const t: Timer = {
      id: this.#nextId++,
      due: this.#now + delay,
      seq: this.#seq++,
      fn,
      every,
      owner,
    };
    this.#live.set(t.id, t);
    this.#heap.push(t);
    return t.id;
  }

  /** A clock for one node: the same time, timers it can cancel all at once (a crash). */
  forNode(): NodeClock {
    return new NodeClock(this);
  }

  /** Due time of the next live timer, or null if none. */
  nextDue(): number | null {
    this.#skipDead();
    return this.#heap.peek()?.due ?? null;
  }

  /** Live timers pending. */
  get pending(): number {
    return this.#live.size;
  }

  #skipDead(): void {
    for (let t = this.#heap.peek(); t && this.#live.get(t.id) !== t; t = this.#heap.peek()) {
      this.#heap.pop();
    }
  }

  /** Fires the next timer (moving time to its due time); false if there is none. */
  fireNext(): boolean {
    this.#skipDead();
    const t = this.#heap.pop();
    if (!t) return false;
    this.#now = t.due;
    if (t.every > 0) {
      // Re-armed before it runs (as real intervals are), under the same id, after anything
      // already due at the new time.
      t.due = this.#now + t.every;
      t.seq = this.#seq++;
      this.#heap.push(t);
    } else this.#live.delete(t.id);
    this.steps++;
    t.owner?.fired(t.id, t.every > 0);
    t.fn();
    return true;
  }

  /**
   * The driver loop: fires timers in (due, seq) order until virtual time would pass `endMs` (or
   * `until()` holds, or nothing is pending), draining every promise job after each one (see the
   * module doc). Time ends at `endMs` if it got there. Resolves with the number of steps.
   */
  async run(endMs: number, o: RunOptions = {}): Promise<number> {
    const max = o.maxSteps ?? 50_000_000;
    let n = 0;
    await drainMicrotasks();
    o.afterStep?.();
    while (!o.until?.()) {
      const due = this.nextDue();
      if (due === null || due > endMs) break;
      if (++n > max) throw new Error(`sim: more than ${max} steps before ${endMs} ms`);
      this.fireNext();
      await drainMicrotasks();
      o.afterStep?.();
    }
    if (!o.until?.() && this.#now < endMs) this.#now = endMs;
    return n;
  }
}

/** Lets every queued promise job run (one real macrotask boundary; see the module doc). */
export function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * One node's clock: {@link SimClock}'s time, possibly running at another rate (clock drift:
 * {@link setRate}); {@link stopAll} cancels the node's timers.
 */
export class NodeClock implements Clock {
  readonly sim: SimClock;
  #mine = new Set<number>();
  #stopped = false;
  /** Local ms per virtual ms, and where the local clock stood when the rate was last set. */
  #rate = 1;
  #drifts = false;
  #simAnchor = 0;
  #localAnchor = 0;

  constructor(sim: SimClock) {
    this.sim = sim;
  }

  /** How fast this clock runs against virtual time (1: exactly; 1.2: 20 % fast). */
  get rate(): number {
    return this.#rate;
  }

  /**
   * Runs this clock at `rate` from now on: it stays continuous, its timers set from now on take
   * `ms / rate` of virtual time (those pending keep their due times).
   */
  setRate(rate: number): void {
    if (!(rate > 0)) throw new Error(`sim: clock rate ${rate}`);
    this.#localAnchor = this.monotonic();
    this.#simAnchor = this.sim.monotonic();
    this.#rate = rate;
    this.#drifts = true;
  }

  monotonic(): number {
    if (!this.#drifts) return this.sim.monotonic();
    return this.#localAnchor + (this.sim.monotonic() - this.#simAnchor) * this.#rate;
  }

  now(): number {
    if (!this.#drifts) return this.sim.now();
    return Math.floor(SIM_EPOCH_MS + this.monotonic());
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    return this.#add(fn, ms / this.#rate, 0);
  }

  setInterval(fn: () => void, ms: number): TimerId {
    return this.#add(fn, ms / this.#rate, Math.max(1, ms) / this.#rate);
  }

  clearTimeout(id: TimerId | undefined): void {
    if (typeof id !== "number") return;
    this.#mine.delete(id);
    this.sim.clearTimeout(id);
  }

  clearInterval(id: TimerId | undefined): void {
    this.clearTimeout(id);
  }

  /** Cancels every timer of this node; later ones never fire (the node is gone). */
  stopAll(): void {
    this.#stopped = true;
    for (const id of this.#mine) this.sim.clearTimeout(id);
    this.#mine.clear();
  }

  /** Whether {@link stopAll} was called. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** @internal the clock fired timer `id` (an interval stays armed). */
  fired(id: number, repeats: boolean): void {
    if (!repeats) this.#mine.delete(id);
  }

  #add(fn: () => void, ms: number, every: number): number {
    // A stopped node's code may still run (a promise it awaited settles): its timers are inert.
    if (this.#stopped) return 0;
    const id = this.sim.schedule(fn, ms, every, this);
    this.#mine.add(id);
    return id;
  }
}
