/**
 * Talks to the master group: sends each request to the leader, following NOT_LEADER redirects
 * and moving to the next master when one does not answer, until the request's deadline.
 */
import { type Clock, sleep, systemClock } from "../../lib/clock.ts";
import { splitNamedEndpoint } from "../../lib/named_endpoint.ts";
import { type Credentials, processCredentials } from "../../lib/security.ts";
import { ErrorCode, type Message } from "../../wire/mod.ts";
import { RpcError } from "../../lib/rpc.ts";
import { type Dial, dialZmq, type RequestChannel } from "../../lib/transport.ts";

/** Options of a LeaderClient. */
export interface LeaderClientOptions {
  node: Uint8Array;
  /** Time for one attempt at one master, ms. */
  attemptTimeoutMs?: number;
  /** Total time a request may take across retries, ms. */
  deadlineMs?: number;
  /** Keys (default: the process's; null: no CURVE). */
  auth?: Credentials | null;
  /** Deadlines and back-off pauses (default: the process's clock). */
  clock?: Clock;
  /** Makes the channel to each master (default: ZeroMQ). */
  dial?: Dial;
}

/** A client of the master group. */
export class LeaderClient {
  #endpoints: string[];
  #clients = new Map<string, RequestChannel>();
  #current = 0;
  #opts: Required<LeaderClientOptions>;

  constructor(endpoints: string[], opts: LeaderClientOptions) {
    if (endpoints.length === 0) throw new Error("LeaderClient: no master endpoints given");
    this.#endpoints = [...endpoints];
    this.#opts = {
      attemptTimeoutMs: 5000,
      deadlineMs: 30_000,
      auth: processCredentials(),
      clock: systemClock,
      dial: dialZmq,
      ...opts,
    };
  }

  #client(ep: string): RequestChannel {
    let c = this.#clients.get(ep);
    if (!c) {
      c = this.#opts.dial(ep, {
        node: this.#opts.node,
        timeoutMs: this.#opts.attemptTimeoutMs,
        serverRole: "master",
        auth: this.#opts.auth,
      });
      this.#clients.set(ep, c);
    }
    return c;
  }

  /** The endpoint requests currently go to. */
  get leader(): string {
    return this.#endpoints[this.#current];
  }

  /**
   * Sends `msg` to the leader. Retries on NOT_LEADER, UNAVAILABLE and timeouts (so requests must
   * be idempotent: submissions carry client id + sequence); other errors reject at once.
   */
  async request(msg: Message, deadlineMs = this.#opts.deadlineMs): Promise<Message> {
    const clock = this.#opts.clock;
    const end = clock.monotonic() + deadlineMs;
    let lastError: unknown = null;
    let backoff = 50;
    while (clock.monotonic() < end) {
      const ep = this.#endpoints[this.#current];
      try {
        const left = Math.max(100, Math.min(this.#opts.attemptTimeoutMs, end - clock.monotonic()));
        return await this.#client(ep).request(msg, left);
      } catch (e) {
        if (!(e instanceof RpcError)) throw e;
        lastError = e;
        if (e.code === ErrorCode.NotLeader && e.text) {
          const i = this.#indexOfHint(e.text);
          if (i !== this.#current) {
            this.#current = i;
            continue;
          }
        } else if (e.code !== ErrorCode.NotLeader && e.code !== ErrorCode.Unavailable) {
          throw e;
        }
        if (e.kind === "timeout") {
          // The master may be dead: drop the socket (its queue holds stale requests), try the next.
          await this.#clients.get(ep)?.close();
          this.#clients.delete(ep);
        }
        this.#current = (this.#current + 1) % this.#endpoints.length;
        await sleep(clock, backoff);
        backoff = Math.min(1000, backoff * 2);
      }
    }
    throw lastError ?? new RpcError(ErrorCode.Unavailable, "no master answered", this.leader);
  }

  /**
   * Where the NOT_LEADER hint (the leader's member id NAME@ENDPOINT; older masters: ENDPOINT)
   * is in the endpoint list, added or updated if need be. A hint naming another key than the
   * entry with its endpoint replaces that entry: a master re-added under a new name on the same
   * address has a new key, and the old name's key would fail the CURVE handshake.
   */
  #indexOfHint(hint: string): number {
    const h = splitNamedEndpoint(hint);
    const i = this.#endpoints.findIndex((ep) => splitNamedEndpoint(ep).endpoint === h.endpoint);
    if (i < 0) return this.#endpoints.push(hint) - 1;
    const old = this.#endpoints[i];
    if (h.name !== undefined && splitNamedEndpoint(old).name !== h.name) {
      this.#endpoints[i] = hint;
      this.#clients.get(old)?.close();
      this.#clients.delete(old);
    }
    return i;
  }

  /** Closes all sockets. */
  async close(): Promise<void> {
    await Promise.all([...this.#clients.values()].map((c) => c.close()));
    this.#clients.clear();
  }
}
