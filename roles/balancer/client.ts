/**
 * A client of a primary/standby balancer pair (for workers and the master): one DEALER per
 * balancer endpoint, requests go to the current one, and a retryable failure (UNAVAILABLE:
 * timeout, closed, or "standby balancer" answer) moves on to the next endpoint and retries
 * there. Every DEALER serves pushed requests (worker_request) with the same `onRequest`, so
 * work arrives from whichever balancer is primary.
 * @module
 */
import { type RpcClientOptions, RpcError } from "../../lib/rpc.ts";
import { type Dial, dialZmq, type RequestChannel } from "../../lib/transport.ts";
import { ErrorCode, type Message } from "../../wire/mod.ts";

/** Options of a BalancerClient: those of RpcClient plus a switch notification. */
export interface BalancerClientOptions extends RpcClientOptions {
  /** Called when requests move to another endpoint (e.g. to re-register there). */
  onSwitch?: (endpoint: string) => void;
  /** Makes the channel to each endpoint (default: ZeroMQ; the simulator passes its own). */
  dial?: Dial;
}

/** Failover client over one or more balancer endpoints; see module doc. */
export class BalancerClient {
  /** All balancer endpoints, primary first. */
  readonly endpoints: readonly string[];
  #clients: RequestChannel[];
  #current = 0;
  #o: BalancerClientOptions;
  #closed = false;

  constructor(endpoints: string[], opts: BalancerClientOptions) {
    if (endpoints.length === 0) throw new Error("BalancerClient: no balancer endpoint given");
    this.endpoints = [...endpoints];
    this.#o = opts;
    const { dial = dialZmq, onSwitch: _, ...rpc } = opts;
    this.#clients = endpoints.map((ep) => dial(ep, { serverRole: "balancer", ...rpc }));
  }

  /** The endpoint requests currently go to. */
  get endpoint(): string {
    return this.endpoints[this.#current];
  }

  /**
   * Sends a request to the current balancer; on UNAVAILABLE tries each other endpoint once.
   * Rejects with the last RpcError when none answers; other errors reject at once.
   */
  async request(msg: Message, timeoutMs?: number): Promise<Message> {
    let last: unknown = null;
    for (let i = 0; i < this.#clients.length; i++) {
      const idx = this.#current;
      try {
        return await this.#clients[idx].request(msg, timeoutMs);
      } catch (e) {
        if (this.#closed || !(e instanceof RpcError) || e.code !== ErrorCode.Unavailable) throw e;
        last = e;
        // Concurrent requests may already have moved on: move only from where we failed.
        if (this.#current === idx && this.#clients.length > 1) {
          this.#current = (idx + 1) % this.#clients.length;
          this.#o.onSwitch?.(this.endpoint);
        }
      }
    }
    throw last;
  }

  /** Sends `msg` to every balancer at once (primary and standby); one result per endpoint. */
  requestEach(msg: Message, timeoutMs?: number): Promise<PromiseSettledResult<Message>[]> {
    return Promise.allSettled(this.#clients.map((c) => c.request(msg, timeoutMs)));
  }

  /** Closes every DEALER. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#clients.map((c) => c.close()));
  }
}
