/**
 * Primary/standby replication of the balancer: state-machine replication of the pure
 * ChunkScheduler.
 *
 * The scheduler has no clock and no randomness, so feeding two of them the same calls with the
 * same `nowMs` values leaves them in the same state. The primary records every state-changing
 * call as a SchedulerEvent in an EventLog; a standby pulls the log (or, when it is new or fell
 * behind, a full snapshot) and replays it into its own scheduler. When the primary stops
 * answering, the standby already holds the primary's queue, placements and finished chunks.
 *
 * Transport: `balancer_sync` (the standby's long poll, which also acknowledges the events it
 * applied) and `balancer_sync_reply`, whose body is a JSON document private to balancers of one
 * version (`encodeSyncBody`; bytes as {"$b": base64}). A primary's stream id is random per term
 * as primary: a follower of another stream gets a snapshot first.
 *
 * Security: only balancer keys may pull (the schema's senders; BalancerService checks again),
 * and the standby's RpcClient checks that the primary's key is a balancer key. What is replicated is
 * what a new primary needs to keep the trust rules from its first message on: each worker's
 * registering key (in `register` events and snapshots, WorkerInfo.auth), so a heartbeat or
 * chunk_finished for a worker's node id from another key is refused by the new primary too,
 * rather than re-bound to whichever key speaks first after the takeover; and each job's owner
 * (JobInfo.owner, for the worker_requests it pushes). Tickets and read capabilities are not
 * replicated: they are derived from the cluster secret, which every balancer holds.
 * @module
 */
import { Buffer } from "node:buffer";
import { type Clock, systemClock } from "../../lib/clock.ts";
import { type ChunkAttempt, randomUuid, type Uuid } from "../../wire/mod.ts";
import type { ChunkScheduler, JobInfo, SchedulerState, WorkerKey } from "./chunk_scheduler.ts";

/** One state-changing scheduler call, with the time it was made at. */
export type SchedulerEvent =
  | { t: "dispatch"; now: number; info: JobInfo; chunks: ChunkAttempt[] }
  | {
    t: "register";
    now: number;
    id: Uuid;
    slots: number;
    free: number;
    files: Uuid[];
    label: string;
    /** The key it registered with (security on): replicated, see the module doc. */
    auth?: WorkerKey | null;
    /** Where it serves its chunks' logs. */
    endpoint?: string;
  }
  | {
    t: "heartbeat";
    now: number;
    id: Uuid;
    slots: number;
    free: number;
    added: Uuid[];
    evicted: Uuid[];
  }
  | { t: "touch"; now: number; id: Uuid }
  | { t: "touchAll"; now: number }
  | {
    t: "finished";
    now: number;
    worker: Uuid;
    job: Uuid;
    chunk: number;
    attempt: number;
    state: number;
  }
  | { t: "refused"; now: number; worker: Uuid; job: Uuid; chunk: number; attempt: number }
  | { t: "unconfirmed"; now: number; worker: Uuid; job: Uuid; chunk: number; attempt: number }
  | { t: "cancel"; now: number; job: Uuid; chunks: number[] }
  | { t: "reap"; now: number }
  | { t: "prune"; now: number }
  | { t: "assign"; now: number };

/** Applies one event to a scheduler and returns what the call returned. */
export function applyEvent(s: ChunkScheduler, ev: SchedulerEvent): unknown {
  switch (ev.t) {
    case "dispatch":
      return s.dispatch(ev.info, ev.chunks, ev.now);
    case "register":
      return s.register(
        ev.id,
        ev.slots,
        ev.free,
        ev.files,
        ev.label,
        ev.now,
        ev.auth ?? null,
        ev.endpoint ?? "",
      );
    case "heartbeat":
      return s.heartbeat(ev.id, ev.slots, ev.free, ev.added, ev.evicted, ev.now);
    case "touch":
      return s.touch(ev.id, ev.now);
    case "touchAll":
      for (const w of s.workers()) s.touch(w.id, ev.now);
      return undefined;
    case "finished":
      return s.finished(ev.worker, ev.job, ev.chunk, ev.attempt, ev.state, ev.now);
    case "refused":
      return s.refused(ev.worker, ev.job, ev.chunk, ev.attempt, ev.now);
    case "unconfirmed":
      return s.unconfirmed(ev.worker, ev.job, ev.chunk, ev.attempt, ev.now);
    case "cancel":
      return s.cancel(ev.job, ev.chunks, ev.now);
    case "reap":
      return s.reapDead(ev.now);
    case "prune":
      return s.pruneFinished(ev.now);
    case "assign":
      return s.assign(ev.now);
  }
}

/** Rough byte size of an event in the log (the bytes it pins: a dispatch's job metadata). */
function eventBytes(ev: SchedulerEvent): number {
  if (ev.t === "dispatch") {
    const i = ev.info;
    return 256 + i.argument.length + i.inputFiles.reduce((n, f) => n + 64 + f.name.length, 0) +
      8 * ev.chunks.length;
  }
  return 128;
}

/** Options of an EventLog. */
export interface EventLogOptions {
  /** Most events kept for followers. */
  maxEvents?: number;
  /** Most (approximate) bytes kept for followers. */
  maxBytes?: number;
  /** Events are kept only while a follower pulled within this long, ms. */
  followerTtlMs?: number;
  /** The stream id (default: random; a seeded simulation passes its own to replay exactly). */
  stream?: Uint8Array;
  /** Timers for long polls and the monotonic time that stamps a follower's last pull. */
  clock?: Clock;
}

/** The primary's recent events, numbered; a follower asks for those after a sequence number. */
export class EventLog {
  /** Random per log: a follower of another primary (or term) must resnapshot. */
  readonly stream: Uint8Array;
  /** Highest sequence number a follower has acknowledged (pulled after). */
  acked = 0;
  #entries: { seq: number; ev: SchedulerEvent; bytes: number }[] = [];
  #head = 0;
  #bytes = 0;
  /** Sequence number of the last event appended (0 = none yet). */
  lastSeq = 0;
  #lastPullMs = -Infinity;
  #o: Required<Omit<EventLogOptions, "stream">>;
  #waiters = new Set<() => void>();

  constructor(o: EventLogOptions = {}) {
    const { stream, ...rest } = o;
    this.stream = stream?.slice() ?? randomUuid();
    this.#o = {
      maxEvents: 200_000,
      maxBytes: 256 * 1024 * 1024,
      followerTtlMs: 30_000,
      clock: systemClock,
      ...rest,
    };
  }

  /** Sequence number of the oldest event still held (lastSeq + 1 when empty). */
  get firstSeq(): number {
    return this.#head < this.#entries.length ? this.#entries[this.#head].seq : this.lastSeq + 1;
  }

  /** Appends an event (kept only while someone follows). */
  append(ev: SchedulerEvent, nowMs: number): void {
    this.lastSeq++;
    for (const w of this.#waiters) w();
    this.#waiters.clear();
    if (nowMs - this.#lastPullMs > this.#o.followerTtlMs) {
      // Nobody follows: drop everything; a new follower starts from a snapshot anyway.
      this.#entries = [];
      this.#head = 0;
      this.#bytes = 0;
      return;
    }
    const bytes = eventBytes(ev);
    this.#entries.push({ seq: this.lastSeq, ev, bytes });
    this.#bytes += bytes;
    while (
      this.#entries.length - this.#head > this.#o.maxEvents || this.#bytes > this.#o.maxBytes
    ) {
      this.#bytes -= this.#entries[this.#head].bytes;
      this.#head++;
    }
    if (this.#head > 4096 && this.#head * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
  }

  /** A follower applied every event up to `after` (its pull says so) at `nowMs`. */
  ack(after: number, nowMs: number): void {
    this.#lastPullMs = nowMs;
    if (after <= this.lastSeq && after > this.acked) this.acked = after;
  }

  /** Is a follower pulling (a long poll parked, or one within `ms` of `nowMs`)? */
  followerActive(nowMs: number, ms: number): boolean {
    return this.#waiters.size > 0 || nowMs - this.#lastPullMs <= ms;
  }

  /**
   * Resolves when an event after `after` exists, or after `ms` of the log's clock (long poll: a
   * follower's pull returns as soon as there is news, so it lags the primary by a round trip,
   * not a period). The end of the wait is stamped as the follower's last sign of life.
   */
  waitAfter(after: number, ms: number): Promise<void> {
    if (this.lastSeq > after || ms <= 0) return Promise.resolve();
    const clock = this.#o.clock;
    return new Promise((resolve) => {
      const done = () => {
        clock.clearTimeout(timer);
        this.#waiters.delete(done);
        this.#lastPullMs = clock.monotonic();
        resolve();
      };
      const timer = clock.setTimeout(done, ms);
      this.#waiters.add(done);
    });
  }

  /** Wakes every waiting long poll (on shutdown). */
  wakeAll(): void {
    for (const w of [...this.#waiters]) w();
  }

  /**
   * Events with seq > `after`, up to about `maxBytes`; null when some of them were dropped
   * (the follower needs a snapshot). Marks the follower as alive.
   */
  since(after: number, maxBytes: number, nowMs: number): SchedulerEvent[] | null {
    this.#lastPullMs = nowMs;
    if (after > this.lastSeq) return null;
    if (after + 1 < this.firstSeq) return null;
    const out: SchedulerEvent[] = [];
    let bytes = 0;
    for (let i = this.#head + (after + 1 - this.firstSeq); i < this.#entries.length; i++) {
      const e = this.#entries[i];
      if (out.length > 0 && bytes + e.bytes > maxBytes) break;
      out.push(e.ev);
      bytes += e.bytes;
    }
    return out;
  }
}

/** The body of a balancer_sync_reply: a snapshot (optional) and the events after it. */
export interface SyncBody {
  snapshot?: SchedulerState;
  events: SchedulerEvent[];
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Encodes a sync reply's body (JSON; bytes as {"$b": base64}). */
export function encodeSyncBody(b: SyncBody): Uint8Array {
  return utf8.encode(JSON.stringify(b, (_k, v) => {
    if (v instanceof Uint8Array) return { $b: Buffer.from(v).toString("base64") };
    return v;
  }));
}

/** A sync body that does not parse, or a reply that does not continue the follower's stream. */
export class SyncError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SyncError";
  }
}

/** Decodes a sync reply's body; throws SyncError when it is not one. */
export function decodeSyncBody(data: Uint8Array): SyncBody {
  let v: unknown;
  try {
    v = JSON.parse(fromUtf8.decode(data), (_k, x) => {
      if (x && typeof x === "object" && typeof x.$b === "string" && Object.keys(x).length === 1) {
        return new Uint8Array(Buffer.from(x.$b, "base64"));
      }
      return x;
    });
  } catch (e) {
    throw new SyncError(`balancer sync body is not valid JSON: ${e}`);
  }
  const b = v as Partial<SyncBody>;
  if (!b || typeof b !== "object" || !Array.isArray(b.events)) {
    throw new SyncError("balancer sync body lacks its events");
  }
  return b as SyncBody;
}
