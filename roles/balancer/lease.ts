/**
 * A balancer's view of the primary lease: a pure state machine (times are arguments) fed with
 * the masters' `balancer_lease_reply`s. It says whether this balancer may place chunks now, with
 * which epoch, and which balancer to follow otherwise.
 *
 * The lease is counted from when the request was *sent* (the masters count from when they got
 * it, or later: roles/master/lease.ts), minus a margin for clock-rate differences, so this
 * balancer stops placing before any master can grant the next epoch.
 * @module
 */
import { uuidEquals } from "../../wire/mod.ts";

/** Fraction of the lease a holder gives up as a margin for clock-rate differences. */
export const LEASE_MARGIN = 0.1;

/** The fields of a balancer_lease_reply this state machine reads. */
export interface LeaseReply {
  epoch: number;
  holder: Uint8Array;
  durationMs: number;
  granted: boolean;
  endpoint: string;
}

/** A change the shell acts on. */
export type LeaseChange =
  /** This balancer holds `epoch` now (newly, or again after a lapse): start placing. */
  | { kind: "primary"; epoch: number }
  /** It held the lease and does not any more: stop placing at once. */
  | { kind: "lapsed"; epoch: number; why: "expired" | "taken" }
  /** Another balancer holds the lease: follow it as a standby. */
  | { kind: "follow"; endpoint: string; epoch: number };

/** The lease as this balancer sees it; see module doc. */
export class BalancerLeaseView {
  readonly #self: Uint8Array;
  /** The last epoch granted to this process (0 = never). */
  #granted = 0;
  /** The epoch held (0 = none). */
  #epoch = 0;
  /** Placing is allowed until this time, ms (the shell's monotonic clock). */
  #until = -Infinity;
  #primary = false;
  #following = "";
  /** Lease length from the last reply (0 = none seen yet). */
  durationMs = 0;

  constructor(self: Uint8Array) {
    this.#self = self.slice();
  }

  /**
   * The last epoch this process was granted (0: never), sent with every request: the masters
   * renew only their holder's own process, never a restarted one (which asks with 0).
   */
  get heldEpoch(): number {
    return this.#granted;
  }

  /** The epoch this balancer holds, 0 if none. */
  get epoch(): number {
    return this.#primary ? this.#epoch : 0;
  }

  /** True while this balancer may place chunks. */
  isPrimary(now: number): boolean {
    return this.#primary && now < this.#until;
  }

  /** Until when (ms) this balancer may place, -Infinity if it may not. */
  get until(): number {
    return this.#primary ? this.#until : -Infinity;
  }

  /** The endpoint of the holder this balancer follows ("" if none, or it is the holder). */
  get following(): string {
    return this.#following;
  }

  /**
   * A reply to a request sent at `sentAt` arrived at `now`. Replies may arrive out of order: an
   * older epoch than one already seen is ignored.
   */
  onReply(r: LeaseReply, sentAt: number, now: number): LeaseChange[] {
    if (r.epoch < this.#epoch) return [];
    const out: LeaseChange[] = [];
    this.durationMs = r.durationMs;
    if (r.granted && r.epoch > 0 && uuidEquals(r.holder, this.#self)) {
      const fresh = !this.#primary || r.epoch !== this.#epoch || now >= this.#until;
      const until = sentAt + r.durationMs * (1 - LEASE_MARGIN);
      // A late reply of an earlier request must not shorten (nor, stale, lengthen) the lease.
      if (r.epoch !== this.#epoch) this.#until = until;
      else this.#until = Math.max(this.#primary ? this.#until : -Infinity, until);
      this.#epoch = r.epoch;
      this.#granted = r.epoch;
      this.#primary = true;
      this.#following = "";
      if (fresh && now < this.#until) out.push({ kind: "primary", epoch: r.epoch });
      return out;
    }
    if (this.#primary) {
      out.push({ kind: "lapsed", epoch: this.#epoch, why: "taken" });
      this.#primary = false;
      this.#until = -Infinity;
    }
    this.#epoch = r.epoch;
    if (r.epoch > 0 && !uuidEquals(r.holder, this.#self) && r.endpoint !== this.#following) {
      this.#following = r.endpoint;
      out.push({ kind: "follow", endpoint: r.endpoint, epoch: r.epoch });
    }
    return out;
  }

  /** Time passes: a lease not renewed in time lapses here. */
  onTick(now: number): LeaseChange[] {
    if (!this.#primary || now < this.#until) return [];
    this.#primary = false;
    return [{ kind: "lapsed", epoch: this.#epoch, why: "expired" }];
  }
}
