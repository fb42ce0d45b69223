/**
 * The standby side of balancer replication: long-polls the primary's event stream and
 * replays it (BalancerService.applySync); when the primary has not answered for
 * `takeoverAfterMs`, promotes the local service to primary.
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import { RpcClient } from "../../lib/rpc.ts";
import { MessageType } from "../../wire/mod.ts";
import { decodeSync, encodeSync, SyncError, type SyncReply } from "./replication.ts";
import type { BalancerService } from "./service.ts";

/** Options of a StandbyFollower. */
export interface StandbyOptions {
  /** The primary's endpoint. */
  primary: string;
  /** This node's uuid. */
  node: Uint8Array;
  log: Logger;
  service: BalancerService;
  /** Take over after this long without a successful pull, ms. */
  takeoverAfterMs: number;
  /** Pause before retrying a failed pull, ms. */
  syncMs?: number;
  /** Called once when this standby takes over. */
  onTakeover: () => void;
  now?: () => number;
}

/** Follows a primary balancer; see module doc. */
export class StandbyFollower {
  #o: StandbyOptions;
  #client: RpcClient;
  #stopped = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #waitMs: number;
  /** Successful pulls so far (for tests and logs). */
  pulls = 0;
  /** When the primary last answered (epoch ms). */
  lastOkMs = 0;

  constructor(o: StandbyOptions) {
    this.#o = o;
    // A pull must finish well within the takeover window, or a slow reply looks like death.
    const timeoutMs = Math.max(250, Math.floor(o.takeoverAfterMs / 2));
    this.#waitMs = Math.min(1000, Math.floor(timeoutMs / 3));
    this.#client = new RpcClient(o.primary, {
      node: o.node,
      timeoutMs,
      log: o.log,
      serverRole: "balancer",
    });
  }

  /** Starts pulling. */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Resolves once the first pull succeeded (or rejects after `ms`). */
  async synced(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.pulls === 0) {
      if (Date.now() > deadline) throw new SyncError(`no sync from ${this.#o.primary} in ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async #run(): Promise<void> {
    const now = this.#o.now ?? Date.now;
    const { log, primary, service } = this.#o;
    const syncMs = this.#o.syncMs ?? Math.max(20, Math.min(200, this.#o.takeoverAfterMs / 5));
    this.lastOkMs = now();
    let failing = false;
    while (!this.#stopped) {
      try {
        const reply = await this.#client.request({
          type: MessageType.RaftMessage,
          node: this.#o.node,
          data: encodeSync({ op: "sync", ...service.syncPosition, waitMs: this.#waitMs }),
        });
        if (this.#stopped) break;
        if (reply.type !== MessageType.RaftMessage) {
          throw new SyncError(`primary answered sync with message type ${reply.type}`);
        }
        service.applySync(decodeSync(reply.data) as SyncReply);
        this.lastOkMs = now();
        this.pulls++;
        if (failing) log.info("primary answers again", { primary });
        failing = false;
      } catch (e) {
        if (this.#stopped) break;
        if (!failing) log.warn("sync with primary failed", { primary, error: e });
        failing = true;
        if (e instanceof SyncError) {
          // A replay problem, not a dead primary: the next pull fetches a snapshot.
          this.lastOkMs = now();
        }
      }
      // Armed only once the primary has answered: a standby launched before its primary (or
      // pointed at a wrong endpoint) must not become a second primary.
      if (this.pulls > 0 && now() - this.lastOkMs >= this.#o.takeoverAfterMs) {
        log.warn("primary silent: taking over", {
          primary,
          silentMs: now() - this.lastOkMs,
        });
        this.#stopped = true;
        await this.#client.close();
        this.#o.onTakeover();
        return;
      }
      // After a good pull, ask again at once (the primary holds it until there is news).
      await new Promise<void>((r) => {
        const t = setTimeout(r, failing ? syncMs : 0);
        this.#wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.#wake = null;
    }
  }

  /** Stops following (no takeover). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#client.close();
    await this.#loop;
  }
}
