/**
 * How a follower master finds the leader's dashboard, so that its own dashboard shows the
 * leader's live view (dashboard.ts proxies to it).
 *
 * Each master puts its dashboard's URL in its own entry of the node list it answers
 * (`node_entry.detail` = `dashboard http://HOST:PORT`; service.ts). A follower asks the leader
 * it knows from Raft for that list over the masters' authenticated ZeroMQ channel (a master key
 * may send `node_list_request`) and reads the leader's entry. So nothing new is configured or
 * replicated: the URL comes from the leader itself, over CURVE, and `dsys nodes` shows operators
 * each master's dashboard too. It is asked again when the leader changes, when a proxied
 * request to it failed, and at most every URL_TTL_MS otherwise.
 * @module
 */
import type { Dial } from "../../lib/transport.ts";
import type { Clock } from "../../lib/clock.ts";
import { MessageType, NodeFlags, NodeRole } from "../../wire/mod.ts";

/** How long a learned URL is used before it is asked for again, ms. */
export const URL_TTL_MS = 30_000;
/** How long an answer without a URL is used, ms. */
export const NO_URL_TTL_MS = 2000;
/** How long a node list request to the leader may take, ms. */
const ASK_TIMEOUT_MS = 3000;

const DETAIL_PREFIX = "dashboard ";

/** A master's node-entry detail naming its dashboard ("" when it serves none). */
export function dashboardDetail(url: string | undefined): string {
  return url ? DETAIL_PREFIX + url : "";
}

/** The dashboard URL in a master's node-entry detail (`http://HOST:PORT`), or null. */
export function parseDashboardDetail(detail: string): string | null {
  if (!detail.startsWith(DETAIL_PREFIX)) return null;
  const text = detail.slice(DETAIL_PREFIX.length);
  if (!/^http:\/\/[^\s/?#]+$/.test(text)) return null;
  try {
    const u = new URL(text);
    return u.protocol === "http:" && u.pathname === "/" && !u.username ? text : null;
  } catch {
    return null;
  }
}

/** Options of a {@link LeaderDashboard}. */
export interface LeaderDashboardOptions {
  /** This master's node id (sent in request headers). */
  node: Uint8Array;
  /** Whether this master leads now. */
  isLeader: () => boolean;
  /** The leader's Raft member id `NAME@tcp://HOST:PORT` as this master knows it, or null. */
  leaderId: () => string | null;
  dial: Dial;
  clock: Clock;
}

/** The leader's dashboard URL as a follower learns it; see module doc. */
export class LeaderDashboard {
  #o: LeaderDashboardOptions;
  #known: { leader: string; url: string | null; atMs: number } | null = null;
  #asking: Promise<string | null> | null = null;

  constructor(o: LeaderDashboardOptions) {
    this.#o = o;
  }

  /** The leader's dashboard URL; null when this master leads, or no leader's is known. */
  async url(): Promise<string | null> {
    if (this.#o.isLeader()) return null;
    const leader = this.#o.leaderId();
    if (!leader) return null;
    const k = this.#known;
    // An answer without a URL (no dashboard yet, or unreachable) is asked again sooner.
    const ttl = k?.url ? URL_TTL_MS : NO_URL_TTL_MS;
    if (k && k.leader === leader && this.#o.clock.monotonic() - k.atMs < ttl) return k.url;
    // One question at a time, however many pages ask at once.
    this.#asking ??= this.#ask(leader).finally(() => this.#asking = null);
    return await this.#asking;
  }

  /** The leader's member id as this master knows it now (null: none, or this master leads). */
  leaderId(): string | null {
    return this.#o.isLeader() ? null : this.#o.leaderId();
  }

  /** Forgets the URL (a request to it failed): the next call asks the leader again. */
  invalidate(): void {
    this.#known = null;
  }

  async #ask(leader: string): Promise<string | null> {
    const ch = this.#o.dial(leader, { node: this.#o.node, serverRole: "master" });
    let url: string | null = null;
    try {
      const r = await ch.request(
        { type: MessageType.NodeListRequest, node: this.#o.node },
        ASK_TIMEOUT_MS,
      );
      if (r.type === MessageType.NodeListResponse) {
        const e = r.nodes.find((n) =>
          n.role === NodeRole.Master && (n.flags & NodeFlags.Leader) !== 0
        );
        url = e ? parseDashboardDetail(e.detail) : null;
      }
    } catch {
      url = null; // unreachable, or no longer the leader: this master serves its own view
    } finally {
      await ch.close();
    }
    this.#known = { leader, url, atMs: this.#o.clock.monotonic() };
    return url;
  }
}
