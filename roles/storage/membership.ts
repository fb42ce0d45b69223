/**
 * Where a client of the storage tier learns the storage membership: from the masters' leader
 * (storage_nodes_request), cached briefly; or, without masters, from a fixed endpoint list.
 * @module
 */
import {
  ErrorCode,
  MessageType,
  NodeState,
  type StorageEntry,
  type StorageNodes,
} from "../../wire/mod.ts";
import { LeaderClient } from "../master/client.ts";
import { RpcError } from "../../lib/rpc.ts";
import type { Credentials } from "../../lib/security.ts";
import { createHash } from "node:crypto";
import { type Member, members } from "./placement.ts";

/** The storage membership at one moment. */
export interface StorageView {
  /** Replicas a put gets when it names none. */
  replicas: number;
  members: Member[];
}

/** A source of the storage membership. */
export interface MembershipSource {
  /** The membership, possibly cached; `fresh` asks again (a node failed, or none is known). */
  view(fresh?: boolean): Promise<StorageView>;
  close(): Promise<void>;
}

/** How long a fetched membership is used before it is asked again, ms. */
export const MEMBERSHIP_TTL_MS = 2000;
/** How long a view with no storage node is waited out (a new leader hears them within 1 s). */
const EMPTY_WAIT_MS = 5000;

/** The membership from the masters' leader. */
export class MasterMembership implements MembershipSource {
  #leader: LeaderClient;
  #node: Uint8Array;
  #cached: { view: StorageView; at: number } | null = null;
  #inflight: Promise<StorageView> | null = null;
  /** Used when the masters cannot be reached or know no storage node yet. */
  #fallback: StaticMembership | null;

  constructor(
    masters: string[],
    node: Uint8Array,
    opts: { auth?: Credentials | null; seeds?: string[] } = {},
  ) {
    this.#node = node;
    this.#leader = new LeaderClient(masters, {
      node,
      attemptTimeoutMs: 2000,
      deadlineMs: 10_000,
      ...(opts.auth !== undefined ? { auth: opts.auth } : {}),
    });
    this.#fallback = opts.seeds?.length ? new StaticMembership(opts.seeds) : null;
  }

  view(fresh = false): Promise<StorageView> {
    const c = this.#cached;
    if (!fresh && c && performance.now() - c.at < MEMBERSHIP_TTL_MS) return Promise.resolve(c.view);
    this.#inflight ??= this.#fetch().finally(() => (this.#inflight = null));
    return this.#inflight;
  }

  async #fetch(): Promise<StorageView> {
    const end = performance.now() + EMPTY_WAIT_MS;
    for (;;) {
      let r: StorageNodes;
      try {
        const m = await this.#leader.request({
          type: MessageType.StorageNodesRequest,
          node: this.#node,
        });
        if (m.type !== MessageType.StorageNodes) {
          throw new RpcError(ErrorCode.BadMessage, `unexpected reply type ${m.type}`, "master");
        }
        r = m;
      } catch (e) {
        if (this.#fallback) return this.#fallback.view();
        throw e;
      }
      const view = { replicas: r.replicas, members: members(r.nodes) };
      if (view.members.length > 0 || performance.now() >= end) {
        if (view.members.length === 0 && this.#fallback) return this.#fallback.view();
        this.#cached = { view, at: performance.now() };
        return view;
      }
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  async close(): Promise<void> {
    await this.#leader.close();
  }
}

/**
 * A fixed list of storage endpoints (no masters: a standalone storage node, tests). Their node
 * ids are not known, so placement orders them by a hash of the endpoint: reads still find a
 * file on any of them, they are merely tried in another order than the masters' would give.
 */
export class StaticMembership implements MembershipSource {
  #view: StorageView;

  constructor(endpoints: string[], replicas = 1) {
    this.#view = {
      replicas,
      members: endpoints.map((endpoint) => ({
        hex: createHash("sha256").update(endpoint).digest("hex").slice(0, 32),
        state: NodeState.Alive,
        flags: 0,
        endpoint,
      })),
    };
  }

  view(): Promise<StorageView> {
    return Promise.resolve(this.#view);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The membership held in this process (the leader master's own directory). */
export class LocalMembership implements MembershipSource {
  #get: () => { replicas: number; nodes: StorageEntry[] };

  constructor(get: () => { replicas: number; nodes: StorageEntry[] }) {
    this.#get = get;
  }

  view(): Promise<StorageView> {
    const r = this.#get();
    return Promise.resolve({ replicas: r.replicas, members: members(r.nodes) });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
