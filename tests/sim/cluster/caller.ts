/**
 * How simulated clients, the balancer stand-in and the worker stand-in reach "the masters" as
 * the real ones do (client/, roles/balancer/): one channel per master, a guess of the leader,
 * and on NOT_LEADER the hint it names (`NAME@ENDPOINT`), else the next master.
 * @module
 */
import { ErrorCode, type Message } from "../../../wire/mod.ts";
import { RpcError } from "../../../lib/rpc.ts";
import type { RequestChannel } from "../../../lib/transport.ts";
import { splitNamedEndpoint } from "../../../lib/named_endpoint.ts";
import type { SimHost } from "../world/net.ts";

/** What one attempt ended with. */
export type Attempt =
  | { ok: true; reply: Message; via: string }
  | { ok: false; error: RpcError | Error; via: string };

/** Requests to whichever master leads; see module doc. */
export class MasterCaller {
  #host: SimHost;
  #masters: string[];
  #channels = new Map<string, RequestChannel>();
  #guess = 0;
  #node: Uint8Array;

  constructor(host: SimHost, masterEndpoints: string[], node: Uint8Array, guess = 0) {
    this.#host = host;
    this.#masters = masterEndpoints;
    this.#node = node;
    this.#guess = guess % masterEndpoints.length;
  }

  /** One attempt at the guessed leader; moves the guess on NOT_LEADER or no answer. */
  async once(msg: Message, timeoutMs: number): Promise<Attempt> {
    const ep = this.#masters[this.#guess];
    let c = this.#channels.get(ep);
    if (!c || (c as { closed?: boolean }).closed) {
      c = this.#host.dial(ep, { node: this.#node, timeoutMs });
      this.#channels.set(ep, c);
    }
    try {
      return { ok: true, reply: await c.request(msg, timeoutMs), via: ep };
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      if (err instanceof RpcError && err.code === ErrorCode.NotLeader && err.text) {
        const hinted = this.#masters.indexOf(splitNamedEndpoint(err.text).endpoint);
        this.#guess = hinted >= 0 ? hinted : (this.#guess + 1) % this.#masters.length;
      } else if (
        err instanceof RpcError &&
        (err.kind !== "remote" || err.code === ErrorCode.NotLeader ||
          err.code === ErrorCode.Unavailable)
      ) {
        this.#guess = (this.#guess + 1) % this.#masters.length;
      }
      return { ok: false, error: err, via: ep };
    }
  }

  /** Forgets every channel (the host crashed; new ones are dialled on next use). */
  reset(): void {
    this.#channels.clear();
  }
}

/** Whether `e` means "try again" (no leader, no answer) rather than a refusal. */
export function retryable(e: unknown): boolean {
  if (!(e instanceof RpcError)) return false;
  return e.kind !== "remote" || e.code === ErrorCode.NotLeader ||
    e.code === ErrorCode.Unavailable;
}
