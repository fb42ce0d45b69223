/**
 * The storage membership as the masters' leader sees it: soft state fed by storage_heartbeat,
 * handed out as storage_nodes. Pure: time is an argument.
 *
 * Not replicated through Raft, like GFS's chunk locations: the storage nodes themselves are the
 * record. Every node heartbeats the leader each second, and the other masters it was started with
 * too (their answer is NOT_LEADER, but they record it), so a new leader knows the membership from
 * its first moment (a master it was not told of learns it within a heartbeat). A node is:
 * - alive: heard from within `suspectAfterMs`;
 * - suspect: silent longer (readers try it last; puts skip it);
 * - dead: silent for `repairAfterMs` (`--repair-after`): its files are copied to other nodes.
 *   A leader declares nobody dead before it has led for `repairAfterMs` itself, so a failover
 *   never makes nodes that it simply has not heard from yet look dead.
 * Bounded: at most `maxNodes` entries; when full, the entry silent the longest is forgotten
 * (a dead node's entry is kept until then so `dsys nodes` shows it).
 * @module
 */
import {
  NodeState,
  type StorageEntry,
  StorageFlags,
  type StorageHeartbeat,
  uuidToHex,
} from "../../wire/mod.ts";

/** Default of `--repair-after`: a storage node silent this long is dead, ms. */
export const DEFAULT_REPAIR_AFTER_MS = 60_000;
/** A storage node silent this long is suspect, ms (three missed heartbeats). */
export const STORAGE_SUSPECT_MS = 3_000;
/** Most storage nodes a cluster tracks. */
export const MAX_STORAGE_NODES = 256;

/** Options of a StorageDirectory. */
export interface StorageDirectoryOptions {
  repairAfterMs?: number;
  suspectAfterMs?: number;
  maxNodes?: number;
}

interface Known {
  entry: StorageEntry;
  /** Monotonic ms of the last heartbeat. */
  seenAt: number;
}

/** The leader's view of the storage nodes. */
export class StorageDirectory {
  readonly repairAfterMs: number;
  readonly suspectAfterMs: number;
  readonly maxNodes: number;
  #nodes = new Map<string, Known>();
  /** Monotonic ms since which this master leads (null: not leading). */
  #leaderSince: number | null = null;
  /** The Raft term of that leadership. */
  #term = -1;

  constructor(opts: StorageDirectoryOptions = {}) {
    this.repairAfterMs = opts.repairAfterMs ?? DEFAULT_REPAIR_AFTER_MS;
    this.suspectAfterMs = Math.min(opts.suspectAfterMs ?? STORAGE_SUSPECT_MS, this.repairAfterMs);
    this.maxNodes = opts.maxNodes ?? MAX_STORAGE_NODES;
    if (!(this.repairAfterMs > 0 && this.suspectAfterMs > 0 && this.maxNodes >= 1)) {
      throw new Error("storage directory: limits must be positive");
    }
  }

  /**
   * Tells the directory whether this master leads, in which term. A leader in a new term keeps
   * what it heard as a follower (nodes heartbeat every master) but declares nobody dead before
   * it has led for the repair delay: a node it heard nothing from is only suspect until then.
   */
  setLeader(leading: boolean, term: number, now: number): void {
    if (leading && (this.#leaderSince === null || term !== this.#term)) {
      this.#leaderSince = now;
      this.#term = term;
    } else if (!leading) {
      this.#leaderSince = null;
    }
  }

  /** Records a heartbeat (`wallMs`: Unix ms, for display; `now`: monotonic ms). */
  heartbeat(m: StorageHeartbeat, now: number, wallMs: number): void {
    const hex = uuidToHex(m.node);
    if (!this.#nodes.has(hex) && this.#nodes.size >= this.maxNodes) this.#evictOldest();
    this.#nodes.set(hex, {
      seenAt: now,
      entry: {
        id: m.node.slice(),
        state: NodeState.Alive,
        flags: m.flags & (StorageFlags.Full | StorageFlags.Failing),
        capacityBytes: m.capacityBytes,
        usedBytes: m.usedBytes,
        files: m.files,
        underReplicatedFiles: m.underReplicatedFiles,
        underReplicatedBytes: m.underReplicatedBytes,
        lastSeenMs: wallMs,
        endpoint: m.endpoint,
        detail: m.detail,
      },
    });
    if (this.#nodes.size > this.maxNodes) throw new Error("storage directory over its bound");
  }

  #evictOldest(): void {
    let oldest: string | null = null, at = Infinity;
    for (const [hex, k] of this.#nodes) {
      if (k.seenAt < at) [oldest, at] = [hex, k.seenAt];
    }
    if (oldest !== null) this.#nodes.delete(oldest);
  }

  /** The entries with their state as of `now`. */
  list(now: number): StorageEntry[] {
    const canDeclareDead = this.#leaderSince !== null &&
      now - this.#leaderSince >= this.repairAfterMs;
    return [...this.#nodes.values()].map(({ entry, seenAt }) => {
      const silent = now - seenAt;
      let state: NodeState = NodeState.Alive;
      let detail = entry.detail;
      if (silent >= this.repairAfterMs && canDeclareDead) {
        state = NodeState.Dead;
        detail = `no heartbeat for ${Math.round(silent / 1000)} s: its files are re-replicated`;
      } else if (silent >= this.suspectAfterMs) {
        state = NodeState.Suspect;
        detail = `no heartbeat for ${Math.round(silent / 1000)} s`;
      }
      return { ...entry, state, detail };
    });
  }

  /** Number of entries. */
  get size(): number {
    return this.#nodes.size;
  }
}

/**
 * The replica count a file gets when its put names none: `configured` if set (`--replicas`),
 * else 2 once the cluster has two storage nodes (dead ones count: a node dying does not lower
 * what new files get), else 1.
 */
export function defaultReplicas(configured: number, entries: readonly StorageEntry[]): number {
  if (configured > 0) return configured;
  return entries.length >= 2 ? 2 : 1;
}
