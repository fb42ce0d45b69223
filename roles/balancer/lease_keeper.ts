/**
 * The I/O shell of the balancer lease: asks the masters for the lease (or renews it) a few times
 * per lease length, feeds the replies and the passing of time to the BalancerLeaseView, and
 * hands the changes to the service (start/stop placing) and the standby follower (whom to
 * follow).
 * @module
 */
import { LeaderClient } from "../master/client.ts";
import { type Clock, systemClock, type TimerId } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import type { Dial } from "../../lib/transport.ts";
import { RpcError } from "../../lib/rpc.ts";
import { MessageType } from "../../wire/mod.ts";
import type { BalancerLeaseView, LeaseChange } from "./lease.ts";
import type { BalancerService } from "./service.ts";
import type { StandbyFollower } from "./standby.ts";

/** Requests per lease length: a renewal may fail this many times minus one in a row. */
const ASKS_PER_LEASE = 4;
/** How often to ask before the first reply told the lease length, ms. */
const FIRST_ASK_MS = 250;

/** Options of a LeaseKeeper. */
export interface LeaseKeeperOptions {
  node: Uint8Array;
  /** Master endpoints (`NAME@tcp://…`). */
  masters: string[];
  /** This balancer's advertised endpoint. */
  endpoint: string;
  log: Logger;
  service: BalancerService;
  follower: StandbyFollower;
  /** Time and timers (default: the process's). */
  clock?: Clock;
  /** Makes the channels to the masters (default: ZeroMQ). */
  dial?: Dial;
}

/** Keeps asking for the primary lease; see module doc. */
export class LeaseKeeper {
  #o: LeaseKeeperOptions;
  #view: BalancerLeaseView;
  #masters: LeaderClient;
  #mono: () => number;
  #clock: Clock;
  #stopped = false;
  #loop: Promise<void> | null = null;
  /** Fires when the lease held runs out by this balancer's clock (unless renewed first). */
  #lapseTimer: TimerId | undefined;
  #wake: (() => void) | null = null;
  /** Replies received so far. */
  replies = 0;

  constructor(o: LeaseKeeperOptions) {
    if (!o.service.lease) throw new Error("LeaseKeeper: the service was built without a lease");
    this.#o = o;
    this.#view = o.service.lease;
    const clock = this.#clock = o.clock ?? systemClock;
    this.#mono = () => clock.monotonic();
    this.#masters = new LeaderClient(o.masters, {
      node: o.node,
      attemptTimeoutMs: 1000,
      clock,
      ...(o.dial ? { dial: o.dial } : {}),
    });
  }

  /** Starts asking. */
  start(): void {
    this.#loop ??= this.#run();
  }

  /**
   * Arms the lapse timer for the end of the lease held (the view's `until`), replacing the
   * previous one: a renewal moves the end. The service checks the lease before every push
   * anyway (`isPrimary`); this timer is what stops its ticking and fails the replies it holds,
   * as soon as the lease ends rather than at the next poll.
   */
  #armLapse(): void {
    this.#clock.clearTimeout(this.#lapseTimer);
    this.#lapseTimer = undefined;
    const until = this.#view.until;
    if (this.#stopped || !Number.isFinite(until)) return;
    this.#lapseTimer = this.#clock.setTimeout(() => {
      this.#lapseTimer = undefined;
      // A timer may fire a little before the monotonic clock reaches `until`: then re-armed.
      this.#apply(this.#view.onTick(this.#mono()));
    }, Math.max(1, until - this.#mono()));
  }

  #apply(changes: LeaseChange[]): void {
    this.#armLapse();
    if (changes.length === 0) return;
    this.#o.service.onLease(changes);
    for (const c of changes) {
      if (c.kind === "follow") {
        this.#o.log.info("following the primary balancer", { primary: c.endpoint, epoch: c.epoch });
        this.#o.follower.follow(c.endpoint);
      } else if (c.kind === "primary") this.#o.follower.follow("");
    }
  }

  async #run(): Promise<void> {
    const { log } = this.#o;
    let failing = false;
    while (!this.#stopped) {
      const d = this.#view.durationMs;
      const every = d > 0 ? d / ASKS_PER_LEASE : FIRST_ASK_MS;
      const sentAt = this.#mono();
      try {
        const r = await this.#masters.request({
          type: MessageType.BalancerLease,
          node: this.#o.node,
          epoch: this.#view.heldEpoch,
          endpoint: this.#o.endpoint,
        }, Math.max(200, d > 0 ? d / 2 : 1000));
        if (this.#stopped) break;
        if (r.type !== MessageType.BalancerLeaseReply) {
          throw new RpcError(0, `masters answered balancer_lease with type ${r.type}`, "");
        }
        this.replies++;
        this.#apply(this.#view.onReply(r, sentAt, this.#mono()));
        if (failing) log.info("masters answer lease requests again", { epoch: r.epoch });
        failing = false;
      } catch (e) {
        if (this.#stopped) break;
        if (!failing) log.warn("lease request failed", { error: e });
        failing = true;
      }
      const left = every - (this.#mono() - sentAt);
      if (left > 0) {
        await new Promise<void>((r) => {
          const t = this.#clock.setTimeout(r, left);
          this.#wake = () => {
            this.#clock.clearTimeout(t);
            r();
          };
        });
        this.#wake = null;
      }
    }
  }

  /** Stops asking (the lease then lapses at the masters). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#lapseTimer);
    this.#wake?.();
    await this.#loop;
    await this.#masters.close();
  }
}
