/**
 * The masters' side of the primary balancer lease: a pure state machine (no clock, no I/O;
 * times come in as arguments) that the leader consults for every `balancer_lease` request.
 *
 * What is replicated is only the grant of a new epoch (a `lease` command in the Raft log, see
 * JobTable.lease). Timing is local to the leader, as with the leader leases of the Raft thesis
 * (section 6.4.1) and Chubby's master lease:
 *
 * - The holder counts its lease from when it *sent* the request that was granted or renewed, so
 *   its view always ends before the leader's, which counts from when it received it or later.
 * - A renewal (the holder asks again) is not logged. The leader answers it only after a quorum
 *   heartbeat round started after the request arrived (`readBarrier`): if another master was
 *   elected before that round, the round fails, and if one is elected after, it was elected after
 *   the holder sent the request.
 * - A leader new in its term (or a master just started) assumes the lease it finds in the table
 *   was renewed the moment it took over, and grants a new epoch only a full lease length later.
 *   With the previous point, no holder can still believe in an older epoch once a new one is
 *   granted: the holder's lease ends at most `durationMs` after its last renewal was sent, and
 *   any renewal it got was sent before the current leader took over or was answered by it.
 * - A new epoch is granted only once the holder's lease has run out by the leader's clock, and
 *   while a grant is being committed no renewal is confirmed.
 *
 * Clock rates must agree within the holder's margin (roles/balancer/lease.ts takes 10%); clocks
 * need not be synchronised, as no timestamp crosses the network.
 * @module
 */
import { splitNamedEndpoint } from "../../lib/named_endpoint.ts";
import { uuidEquals } from "../../wire/mod.ts";
import type { BalancerLeaseRecord } from "./job_table.ts";

/** Default lease length, ms (`--balancer-lease-ms`). */
export const DEFAULT_BALANCER_LEASE_MS = 3000;

/** A balancer's request, as the leader saw it. */
export interface LeaseAsk {
  node: Uint8Array;
  /** The epoch the asker believes it holds (0 = none). */
  epoch: number;
  endpoint: string;
}

/** What the leader does with a request. */
export type LeaseDecision =
  /** Answer with the current lease; `granted` says whether the asker holds it. */
  | { kind: "answer"; granted: false }
  /** The asker holds the lease: confirm leadership (read barrier), then call `renewed`. */
  | { kind: "renew"; epoch: number }
  /** Propose this grant; then call `grantDone`. */
  | { kind: "grant"; lease: BalancerLeaseRecord };

/** The leader's timing of the balancer lease; see module doc. */
export class LeaseTimer {
  readonly durationMs: number;
  /** The current lease runs out at this time (the leader's clock), ms. */
  #expiresAt = -Infinity;
  /** The leadership term #expiresAt was computed in (null: none yet). */
  #term: number | null = null;
  #granting = false;

  constructor(durationMs = DEFAULT_BALANCER_LEASE_MS) {
    if (!(durationMs >= 100 && durationMs <= 600_000)) {
      throw new RangeError(`balancer lease of ${durationMs} ms is outside 100 ms .. 10 min`);
    }
    this.durationMs = durationMs;
  }

  /** True while a grant is being committed. */
  get granting(): boolean {
    return this.#granting;
  }

  /**
   * Decides about a request received at `now` in leadership `term` (any number that changes
   * when leadership does; a lone master passes 0), given the table's current lease.
   */
  decide(
    current: BalancerLeaseRecord | null,
    ask: LeaseAsk,
    now: number,
    term: number,
    rivalAsked = false,
  ): LeaseDecision {
    if (this.#term !== term) {
      // New in this term: whatever the table says may have been renewed by the last leader
      // an instant ago.
      this.#term = term;
      this.#expiresAt = current ? now + (current.durationMs || this.durationMs) : -Infinity;
      this.#granting = false;
    }
    if (this.#granting) return { kind: "answer", granted: false };
    // Same node id under the same key name (masters check the name is the asker's key).
    const holder = current !== null && uuidEquals(current.holder, ask.node) &&
      splitNamedEndpoint(current.endpoint).name === splitNamedEndpoint(ask.endpoint).name;
    // (`rivalAsked`: another balancer asked within the last lease length.)
    if (holder && current.endpoint === ask.endpoint && ask.epoch === current.epoch) {
      // The holder's own process asks again: renewed.
      return { kind: "renew", epoch: current.epoch };
    }
    // Anyone else waits for the lease to run out, the holder's node id too when it asks without
    // the epoch it held (or from another endpoint): that is a restarted process, whose scheduler
    // is empty, while a standby that followed it holds the replicated state. Renewing it would
    // re-place the chunks still running on workers under the same epoch and attempts (found by
    // tests/chaos: `restarted-primary-renews`).
    if (current && now <= this.#expiresAt) return { kind: "answer", granted: false };
    // Run out: a restarted former holder lets another balancer that asked meanwhile go first.
    if (holder && rivalAsked) return { kind: "answer", granted: false };
    this.#granting = true;
    return {
      kind: "grant",
      lease: {
        epoch: (current?.epoch ?? 0) + 1,
        holder: ask.node.slice(),
        endpoint: ask.endpoint,
        durationMs: this.durationMs,
      },
    };
  }

  /**
   * A renewal's read barrier completed: the lease (still `epoch` in `current`?) now runs to the
   * time the request was received plus its length. Returns whether the asker holds it.
   */
  renewed(
    current: BalancerLeaseRecord | null,
    node: Uint8Array,
    epoch: number,
    receivedAt: number,
    term: number,
  ): boolean {
    if (
      this.#granting || this.#term !== term || !current || current.epoch !== epoch ||
      !uuidEquals(current.holder, node)
    ) return false;
    this.#expiresAt = Math.max(this.#expiresAt, receivedAt + current.durationMs);
    return true;
  }

  /** The grant proposed by `decide` committed (`ok`) or failed, at `now`. */
  grantDone(ok: boolean, now: number): void {
    this.#granting = false;
    if (ok) this.#expiresAt = now + this.durationMs;
  }

  /** When the current lease runs out by this leader's clock (-Infinity: no lease). */
  get expiresAt(): number {
    return this.#expiresAt;
  }
}
