/**
 * The standby side of balancer replication: long-polls the lease holder's event stream
 * (`balancer_sync`) and replays it into the local service (BalancerService.applySync), so that
 * when the masters grant this balancer the lease it already holds the primary's queue,
 * placements and finished chunks. Which balancer to follow is the lease's business
 * (BalancerLeaseView.following, set through `follow`); this loop never decides to take over.
 * @module
 */
import { type Clock, systemClock, type TimerId } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { type Dial, dialZmq, type RequestChannel } from "../../lib/transport.ts";
import { MessageType } from "../../wire/mod.ts";
import { SyncError } from "./replication.ts";
import type { BalancerService } from "./service.ts";

/** Options of a StandbyFollower. */
export interface StandbyOptions {
  /** This node's uuid. */
  node: Uint8Array;
  log: Logger;
  service: BalancerService;
  /** Pause before retrying a failed pull, ms (good pulls long-poll back to back). */
  syncMs?: number;
  /** Longest time the primary may hold a pull waiting for news, ms. */
  waitMs?: number;
  /** Timers (default: the process's). */
  clock?: Clock;
  /** Makes the channel to the primary (default: ZeroMQ). */
  dial?: Dial;
}

/** Follows the primary balancer; see module doc. */
export class StandbyFollower {
  #o: StandbyOptions;
  #client: RequestChannel | null = null;
  #target = "";
  #stopped = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  /** Successful pulls so far (for tests and logs). */
  pulls = 0;

  constructor(o: StandbyOptions) {
    this.#o = o;
  }

  /** The endpoint followed ("" = none). */
  get target(): string {
    return this.#target;
  }

  /** Follows `endpoint` from now on ("" = nobody: this balancer is primary, or none is known). */
  follow(endpoint: string): void {
    if (endpoint === this.#target) return;
    this.#target = endpoint;
    const old = this.#client;
    this.#client = null;
    void old?.close();
    this.#wake?.();
  }

  /** Starts pulling. */
  start(): void {
    this.#loop ??= this.#run();
  }

  #clientFor(target: string): RequestChannel {
    const waitMs = this.#o.waitMs ?? 1000;
    this.#client ??= (this.#o.dial ?? dialZmq)(target, {
      node: this.#o.node,
      // A pull waits up to waitMs at the primary, plus the reply's transfer.
      timeoutMs: waitMs + 2000,
      log: this.#o.log,
      serverRole: "balancer",
    });
    return this.#client;
  }

  async #run(): Promise<void> {
    const { log, service } = this.#o;
    const syncMs = this.#o.syncMs ?? 100;
    let failing = false;
    while (!this.#stopped) {
      const target = this.#target;
      let pause = 0;
      if (!target || !service.isStandby) {
        pause = 1000; // nothing to follow: sleep until follow() wakes us
      } else {
        try {
          const reply = await this.#clientFor(target).request({
            type: MessageType.BalancerSync,
            node: this.#o.node,
            ...service.syncPosition,
            waitMs: this.#o.waitMs ?? 1000,
          });
          if (this.#stopped) break;
          if (target !== this.#target || !service.isStandby) continue; // moved on meanwhile
          if (reply.type !== MessageType.BalancerSyncReply) {
            throw new SyncError(`primary answered balancer_sync with message type ${reply.type}`);
          }
          service.applySync(reply);
          this.pulls++;
          if (failing) log.info("primary answers sync again", { primary: target });
          failing = false;
        } catch (e) {
          if (this.#stopped) break;
          if (!failing) log.warn("sync with primary failed", { primary: target, error: e });
          failing = true;
          pause = syncMs;
        }
      }
      if (pause > 0) {
        const clock = this.#o.clock ?? systemClock;
        await new Promise<void>((r) => {
          const t: TimerId = clock.setTimeout(r, pause);
          this.#wake = () => {
            clock.clearTimeout(t);
            r();
          };
        });
        this.#wake = null;
      }
    }
  }

  /** Stops following. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    await this.#client?.close();
  }
}
