/**
 * Minimal synchronous cluster harness for targeted Raft core tests: in-memory persistence,
 * a FIFO network with a drop filter, and helpers to tick and flush. (The seeded, fault-heavy
 * network lives in tests/sim/.)
 */
import {
  type Entry,
  type HardState,
  type Message,
  mulberry32,
  type PersistedState,
  type RaftConfig,
  RawNode,
  type ReadState,
  type Snapshot,
} from "../roles/master/raft/mod.ts";

/** What one node persisted, as a restart would load it. */
export interface MemDisk {
  hs: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

/** A cluster of RawNodes wired through a deterministic in-memory network. */
export class Cluster {
  nodes = new Map<string, RawNode>();
  disks = new Map<string, MemDisk>();
  applied = new Map<string, Entry[]>();
  installed = new Map<string, Snapshot[]>();
  reads = new Map<string, ReadState[]>();
  queue: Message[] = [];
  /** Messages for which this returns true are dropped (partitions, targeted loss). */
  drop: (m: Message) => boolean = () => false;
  /** Every message ever sent, for assertions on protocol behaviour. */
  sent: Message[] = [];

  /** Starts nodes `ids` as a fresh cluster (bootstrap voters = ids unless `voters` given). */
  constructor(ids: string[], extra: Partial<RaftConfig> = {}, voters = ids) {
    ids.forEach((id, i) =>
      this.start(id, { peers: voters.includes(id) ? voters : undefined, ...extra }, i)
    );
  }

  /** (Re)starts a node with a config (restore/peers). */
  start(id: string, cfg: Partial<RaftConfig>, seed = 7): RawNode {
    const n = new RawNode({
      id,
      electionTick: 10,
      heartbeatTick: 1,
      rand: mulberry32(1000 + seed * 31 + id.charCodeAt(id.length - 1)),
      ...cfg,
    });
    this.nodes.set(id, n);
    if (!this.disks.has(id)) {
      this.disks.set(id, { hs: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] });
    }
    if (!this.applied.has(id)) this.applied.set(id, []);
    if (!this.reads.has(id)) this.reads.set(id, []);
    if (!this.installed.has(id)) this.installed.set(id, []);
    this.process(id);
    return n;
  }

  /** Starts a node from an explicit persisted state (to build paper scenarios). */
  restore(id: string, st: PersistedState, extra: Partial<RaftConfig> = {}): RawNode {
    this.disks.set(id, {
      hs: { ...st.hardState },
      snapshot: st.snapshot,
      entries: [...st.entries],
    });
    return this.start(id, { restore: st, ...extra });
  }

  /** Removes a node (crash); its disk is kept. */
  stop(id: string): void {
    this.nodes.delete(id);
  }

  /** Handles all pending Readies of a node. */
  process(id: string): void {
    const n = this.nodes.get(id);
    if (!n) return;
    const disk = this.disks.get(id)!;
    while (n.hasReady()) {
      const rd = n.ready();
      if (rd.snapshot) {
        disk.snapshot = rd.snapshot;
        disk.entries = [];
        this.installed.get(id)!.push(rd.snapshot);
      }
      if (rd.entries.length) {
        const first = rd.entries[0].index;
        disk.entries = disk.entries.filter((e) => e.index < first).concat(rd.entries);
      }
      if (rd.hardState) disk.hs = rd.hardState;
      for (const m of rd.messages) {
        this.sent.push(m);
        this.queue.push(m);
      }
      this.applied.get(id)!.push(...rd.committedEntries);
      this.reads.get(id)!.push(...rd.readStates);
      n.advance();
    }
  }

  /** Delivers queued messages until the network is quiet (or `max` deliveries). */
  flush(max = 100_000): void {
    for (let i = 0; i < max && this.queue.length; i++) {
      const m = this.queue.shift()!;
      const n = this.nodes.get(m.to);
      if (!n || this.drop(m)) continue;
      n.step(m);
      this.process(m.to);
    }
  }

  /** Ticks every live node `k` times, flushing the network after each round. */
  tick(k = 1): void {
    for (let i = 0; i < k; i++) {
      for (const [id, n] of this.nodes) {
        n.tick();
        this.process(id);
      }
      this.flush();
    }
  }

  /** Ticks until some node leads (or throws after `max` ticks). */
  elect(max = 200): string {
    for (let i = 0; i < max; i++) {
      const l = this.leader();
      if (l) return l;
      this.tick();
    }
    throw new Error(`no leader after ${max} ticks`);
  }

  /** Id of a node whose role is leader (the one with the highest term if several). */
  leader(): string | null {
    let best: string | null = null;
    let term = -1;
    for (const [id, n] of this.nodes) {
      const s = n.status();
      if (s.role === "leader" && s.term > term) {
        best = id;
        term = s.term;
      }
    }
    return best;
  }

  /** Compact description of a node's log as "index@term". */
  logOf(id: string): string[] {
    const n = this.nodes.get(id)!;
    return n.log.entries.map((e) => `${e.index}@${e.term}`);
  }

  /** Application payloads applied by a node, decoded. */
  appliedData(id: string): string[] {
    return this.applied.get(id)!.filter((e) => e.type === "normal" && e.data.length)
      .map((e) => new TextDecoder().decode(e.data));
  }
}

/** Builds a log from a list of terms: entry 1 is the bootstrap conf entry (term must be 1). */
export function logFromTerms(terms: number[], initConf: Entry): Entry[] {
  return terms.map((t, i) =>
    i === 0
      ? { ...initConf }
      : { term: t, index: i + 1, type: "normal", data: new TextEncoder().encode(`t${t}i${i + 1}`) }
  );
}
