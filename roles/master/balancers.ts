/**
 * The balancers a master knows: those that asked it for the lease recently (soft state, for
 * `dsys nodes`), and one client per endpoint it talks to (dispatches go to the lease holder's).
 * Both are bounded: a flood of lease requests with made-up endpoints (from balancer keys only:
 * rpc checks the sender role) cannot grow them.
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import { type Dial, dialZmq, type RequestChannel } from "../../lib/transport.ts";
import { uuidToHex } from "../../wire/mod.ts";

/** Most balancers remembered, and most clients kept open. */
export const MAX_KNOWN_BALANCERS = 16;

/** A balancer seen asking for the lease. */
export interface KnownBalancer {
  node: Uint8Array;
  endpoint: string;
  /** When it last asked (this master's clock), ms. */
  lastSeenMs: number;
}

/** Known balancers and clients to them; see module doc. */
export class BalancerDirectory {
  #known = new Map<string, KnownBalancer>();
  #clients = new Map<string, RequestChannel>();
  #o: { node: Uint8Array; log: Logger; timeoutMs: number; dial: Dial };

  /** `dial` makes the clients (default: ZeroMQ; the simulator passes its network's). */
  constructor(o: { node: Uint8Array; log: Logger; timeoutMs?: number; dial?: Dial }) {
    this.#o = { ...o, timeoutMs: o.timeoutMs ?? 5000, dial: o.dial ?? dialZmq };
  }

  /** Records that `node` asked for the lease from `endpoint` at `now`. */
  seen(node: Uint8Array, endpoint: string, now: number): void {
    const key = uuidToHex(node);
    this.#known.delete(key); // re-insert: the map's order is least recently seen first
    this.#known.set(key, { node: node.slice(), endpoint, lastSeenMs: now });
    while (this.#known.size > MAX_KNOWN_BALANCERS) {
      this.#known.delete(this.#known.keys().next().value!);
    }
  }

  /** Balancers seen within `maxAgeMs` of `now`, most recent last. */
  recent(now: number, maxAgeMs: number): KnownBalancer[] {
    return [...this.#known.values()].filter((b) => now - b.lastSeenMs <= maxAgeMs);
  }

  /** The client for `endpoint` (created on first use; the least recently used is closed). */
  client(endpoint: string): RequestChannel {
    let c = this.#clients.get(endpoint);
    if (c) {
      this.#clients.delete(endpoint);
      this.#clients.set(endpoint, c);
      return c;
    }
    c = this.#o.dial(endpoint, {
      node: this.#o.node,
      timeoutMs: this.#o.timeoutMs,
      log: this.#o.log,
      serverRole: "balancer",
    });
    this.#clients.set(endpoint, c);
    while (this.#clients.size > MAX_KNOWN_BALANCERS) {
      const [ep, old] = this.#clients.entries().next().value!;
      this.#clients.delete(ep);
      void old.close();
    }
    return c;
  }

  /** Closes every client. */
  async close(): Promise<void> {
    const all = [...this.#clients.values()];
    this.#clients.clear();
    await Promise.all(all.map((c) => c.close()));
  }
}
