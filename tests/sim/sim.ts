/**
 * Deterministic simulation of a Raft cluster running the real core (roles/master/raft) over a
 * seeded virtual network and clock. One seed ⇒ one exact run: every random choice (faults,
 * delays, election timeouts, client behaviour) comes from PRNGs derived from the seed.
 *
 * Faults (each seed draws its own mix): message drop, duplication, reordering, delay with a
 * long tail; symmetric, one-way and leader-isolating partitions; crashes at any time, in the
 * middle of persisting a Ready (an arbitrary, possibly torn prefix of the unsynced writes
 * survives) or right after a hard state became durable; restarts from the simulated disk;
 * skewed node clocks; leader transfers; membership changes (add/remove/replace with spare
 * nodes); log compaction with InstallSnapshot, streamed in chunks (a small chunk size and window
 * per seed, so snapshots span several chunks that the faults drop, duplicate and reorder). Persistence runs synchronously or, as in the
 * README's driver loop, asynchronously (the node keeps stepping while its fsync is pending).
 * Pre-vote and check-quorum are each switched off in some seeds.
 *
 * Checked after every event: election safety (one leader per term), log matching (one entry
 * and one predecessor term per persisted (index, term)), leader completeness (leaders hold
 * every entry committed in an earlier term), state-machine safety (one entry applied per
 * index). At the end all faults heal; then a leader must exist and every client operation
 * must finish within a bound of ticks (liveness), and the client history (KV with per-client
 * dedup, reads via ReadIndex) must be linearizable.
 */
import {
  type ConfChangeRequest,
  mulberry32,
  NotLeaderError,
  ProposalDroppedError,
  RawNode,
  splitReadyMessages,
} from "../../roles/master/raft/mod.ts";
import type {
  Entry,
  HardState,
  Message,
  NodeId,
  PersistedState,
  Ready,
  Snapshot,
} from "../../roles/master/raft/mod.ts";
import { decodeCommand, encodeCommand, KvStateMachine } from "./kv.ts";
import { checkHistory, type Operation } from "./linearizability.ts";

/** Knobs for one run (defaults are sized for ~2,000 seeds/minute on a slow machine). */
export interface SimOptions {
  /** Ticks with faults enabled. */
  faultTicks?: number;
  /** After healing: ticks within which a leader must exist and every client op must finish. */
  livenessTicks?: number;
  /** Number of clients (each runs one operation at a time). */
  clients?: number;
  /** Operations per client (upper bound; stops issuing at heal time). */
  opsPerClient?: number;
  /** Route every message through the binary codec (slower; exercises codec.ts). */
  codec?: (m: Message) => Message;
}

/** Outcome of one seed. */
export interface SimResult {
  seed: number;
  ok: boolean;
  error?: string;
  stats: Record<string, number>;
}

/** Thrown when a safety or liveness property is violated. */
export class SimViolation extends Error {
  /** @param seed the seed that reproduces it */
  constructor(readonly seed: number, message: string) {
    super(`seed ${seed}: ${message}`);
    this.name = "SimViolation";
  }
}

const STEPS_PER_TICK = 4;
const ELECTION_TICK = 10;
const HEARTBEAT_TICK = 2;
const CLIENT_TIMEOUT_TICKS = 12;
const SNAPSHOT_EVERY = 12;
const ALL_IDS = ["n1", "n2", "n3", "n4", "n5"];

interface ClientReq {
  kind: "put" | "get";
  client: string;
  seq: number;
  attempt: number;
  key: string;
  value: string;
}

interface ClientResp {
  client: string;
  seq: number;
  attempt: number;
  kind: "ok" | "value" | "redirect";
  value: string | null;
  leader: NodeId | null;
}

interface InFlight {
  at: number;
  order: number;
  from: string;
  to: string;
  raft?: Message;
  req?: ClientReq;
  resp?: ClientResp;
}

/** Simulated durable storage: only what was "fsync'd" survives a crash. */
class SimStorage {
  hs: HardState = { term: 0, vote: null, commit: 0 };
  snapshot: Snapshot | null = null;
  entries: Entry[] = [];

  /** Applies one persisted operation. */
  apply(op: PersistOp): void {
    if (op.kind === "snap") {
      this.snapshot = op.snap;
      this.entries = []; // an installed snapshot replaces the whole log
    } else if (op.kind === "ents") {
      const first = op.ents[0].index;
      this.entries = this.entries.filter((e) => e.index < first).concat(op.ents);
    } else if (op.kind === "hs") {
      this.hs = op.hs;
    } else {
      // compaction: snapshot durable, entries up to it dropped
      this.snapshot = op.snap;
      this.entries = this.entries.filter((e) => e.index > op.snap.index);
    }
  }

  /** Writes issued but not yet fsync'd: a crash keeps only some prefix of them. */
  unsynced: PersistOp[] = [];

  /** Issues a write (not durable until sync()). */
  write(op: PersistOp): void {
    this.unsynced.push(op);
  }

  /** fsync: every issued write becomes durable. */
  sync(): void {
    for (const op of this.unsynced) this.apply(op);
    this.unsynced = [];
  }

  /**
   * Crash: an arbitrary prefix of the unsynced writes reached the disk, the last one possibly
   * torn (only some of its entries made it); the rest is lost.
   */
  crash(rnd: () => number): void {
    const keep = Math.floor(rnd() * (this.unsynced.length + 1));
    for (let i = 0; i < keep; i++) {
      const op = this.unsynced[i];
      if (i === keep - 1 && op.kind === "ents" && op.ents.length > 1 && rnd() < 0.5) {
        this.apply({
          kind: "ents",
          ents: op.ents.slice(0, 1 + Math.floor(rnd() * op.ents.length)),
        });
      } else this.apply(op);
    }
    this.unsynced = [];
  }

  /** The state a restarting node loads. */
  load(): PersistedState {
    return { hardState: { ...this.hs }, snapshot: this.snapshot, entries: [...this.entries] };
  }
}

type PersistOp =
  | { kind: "snap"; snap: Snapshot }
  | { kind: "ents"; ents: Entry[] }
  | { kind: "hs"; hs: HardState }
  | { kind: "compact"; snap: Snapshot };

class SimNode {
  raw: RawNode | null = null;
  storage = new SimStorage();
  sm = new KvStateMachine();
  applied = 0;
  pendingPuts = new Map<string, ClientReq>();
  pendingReads = new Map<string, ClientReq>();
  readyReads: { index: number; req: ClientReq }[] = [];
  restartAt = -1;
  incarnation = 0;
  /** Probability of ticking at each tick slot: models slow or skewed clocks. */
  tickRate = 1;
  commitSeen = 0;
  /** A Ready whose writes are issued but whose fsync completes at step `at`. */
  inflight: { rd: Ready; late: Message[]; at: number; leaderTerm: number } | null = null;
  constructor(readonly id: NodeId, readonly initial: boolean) {}
}

interface ClientState {
  id: string;
  seq: number;
  issued: number;
  cur: { op: Operation; req: ClientReq; deadline: number; target: NodeId } | null;
  nextAt: number;
  leaderGuess: NodeId | null;
  /** Round-robin cursor over nodes for retries without a leader hint. */
  rr: number;
}

/** Runs one seed; never throws (violations are reported in the result). */
export function runSeed(seed: number, opts: SimOptions = {}): SimResult {
  const sim = new Sim(seed, opts);
  try {
    sim.run();
    return { seed, ok: true, stats: sim.stats };
  } catch (e) {
    const msg = e instanceof SimViolation ? e.message : `seed ${seed}: ${(e as Error).stack ?? e}`;
    return { seed, ok: false, error: msg, stats: sim.stats };
  }
}

class Sim {
  readonly rnd: () => number;
  now = 0;
  clockCounter = 0;
  order = 0;
  net: InFlight[] = [];
  nodes = new Map<NodeId, SimNode>();
  clients: ClientState[] = [];
  history: Operation[] = [];
  blocked = new Set<string>();
  partitionEnd = -1;
  healed = false;
  // per-seed fault parameters
  dropP: number;
  dupP: number;
  maxDelay: number;
  tailP: number;
  crashP: number;
  persistCrashP: number;
  postSendCrashP: number;
  partitionP: number;
  transferP: number;
  confP: number;
  preVote: boolean;
  asyncPersist: boolean;
  maxEntries: number;
  maxInflight: number;
  checkQuorum: boolean;
  snapshotChunkBytes: number;
  snapshotWindow: number;
  // global checker state
  leaders = new Map<number, NodeId>();
  logIndex = new Map<string, string>();
  committed = new Map<number, { term: number; data: string }>();
  /** index → term of the leader that first committed it. */
  commitTerm = new Map<number, number>();
  stats: Record<string, number> = {
    elections: 0,
    crashes: 0,
    persistCrashes: 0,
    partitions: 0,
    transfers: 0,
    confChanges: 0,
    snapshotsInstalled: 0,
    snapshotTransfers: 0,
    snapshotChunks: 0,
    compactions: 0,
    committed: 0,
    ops: 0,
    okOps: 0,
    duplicates: 0,
    messages: 0,
    earlyMessages: 0,
  };
  readonly faultTicks: number;
  readonly livenessTicks: number;
  readonly nClients: number;
  readonly opsPerClient: number;
  readonly codec?: (m: Message) => Message;

  constructor(readonly seed: number, opts: SimOptions) {
    this.rnd = mulberry32(seed ^ 0x5eed1234);
    this.faultTicks = opts.faultTicks ?? 120;
    this.livenessTicks = opts.livenessTicks ?? 150;
    this.nClients = opts.clients ?? 3;
    this.opsPerClient = opts.opsPerClient ?? 30;
    this.codec = opts.codec;
    const r = this.rnd;
    // Each seed draws its own fault mix so the seed space covers calm and hostile runs.
    this.dropP = r() < 0.3 ? 0 : r() * 0.12;
    this.dupP = r() < 0.5 ? 0 : r() * 0.06;
    this.maxDelay = 1 + Math.floor(r() * 10);
    this.tailP = r() < 0.5 ? 0 : r() * 0.05;
    this.crashP = r() < 0.3 ? 0 : r() * 0.02;
    this.persistCrashP = r() < 0.5 ? 0 : r() * 0.01;
    this.postSendCrashP = r() < 0.5 ? 0 : r() * 0.03;
    this.partitionP = r() < 0.3 ? 0 : r() * 0.03;
    this.transferP = r() < 0.5 ? 0 : r() * 0.03;
    this.confP = r() < 0.4 ? 0 : r() * 0.03;
    // Without check-quorum a partitioned leader keeps believing it leads: reads must still
    // be linearizable thanks to ReadIndex.
    // (Both off is not simulated: then a removed server that never learnt of its removal
    // can disrupt the cluster forever with higher-term votes — Raft thesis §4.2.3.)
    const mode = r();
    this.preVote = mode < 0.75;
    this.checkQuorum = mode < 0.5 || mode >= 0.75;
    this.maxEntries = 1 + Math.floor(r() * 6);
    this.maxInflight = 1 + Math.floor(r() * 6);
    // Drawn from their own PRNG so the fault mix of every seed stays what it was.
    const rs = mulberry32(seed ^ 0x51ab);
    this.snapshotChunkBytes = [8, 24, 64, 1 << 20][Math.floor(rs() * 4)];
    this.snapshotWindow = 1 + Math.floor(rs() * 4);
    const nInitial = r() < 0.5 ? 3 : r() < 0.5 ? 5 : 1 + Math.floor(r() * 4);
    const initial = ALL_IDS.slice(0, nInitial);
    // Spare nodes run as empty joiners so membership changes can add them.
    const nodeIds = this.confP > 0 ? ALL_IDS : initial;
    const skew = r() < 0.5;
    this.asyncPersist = r() < 0.5;
    for (const id of nodeIds) {
      const n = new SimNode(id, initial.includes(id));
      if (skew) n.tickRate = 0.6 + 0.4 * r();
      this.nodes.set(id, n);
      this.startNode(n, initial);
    }
    for (let i = 0; i < this.nClients; i++) {
      this.clients.push({
        id: `c${i + 1}`,
        seq: 0,
        issued: 0,
        cur: null,
        nextAt: Math.floor(r() * 20),
        leaderGuess: null,
        rr: Math.floor(r() * 5),
      });
    }
  }

  fail(msg: string): never {
    throw new SimViolation(this.seed, `t=${this.now / STEPS_PER_TICK}: ${msg}`);
  }

  clock(): number {
    return this.now * 1e6 + this.clockCounter++;
  }

  pick<T>(xs: T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }

  // ------------------------------------------------------------------ nodes

  startNode(n: SimNode, initial: string[] = []): void {
    n.incarnation++;
    const fresh = n.storage.hs.term === 0 && n.storage.entries.length === 0 && !n.storage.snapshot;
    const rand = mulberry32(this.seed * 7919 + ALL_IDS.indexOf(n.id) * 104729 + n.incarnation);
    const base = {
      id: n.id,
      electionTick: ELECTION_TICK,
      heartbeatTick: HEARTBEAT_TICK,
      rand,
      preVote: this.preVote,
      checkQuorum: this.checkQuorum,
      maxEntriesPerMsg: this.maxEntries,
      maxInflight: this.maxInflight,
      snapshotChunkBytes: this.snapshotChunkBytes,
      snapshotWindow: this.snapshotWindow,
      checkSnapshot: (data: Uint8Array) => void KvStateMachine.restore(data),
    };
    if (fresh && n.initial) {
      const peers = initial.length ? initial : [...this.nodes.values()].filter((x) => x.initial)
        .map((x) => x.id);
      n.raw = new RawNode({ ...base, peers });
    } else {
      n.raw = new RawNode({ ...base, restore: n.storage.load() });
    }
    n.sm = KvStateMachine.restore(n.storage.snapshot?.data ?? new Uint8Array(0));
    n.applied = n.storage.snapshot?.index ?? 0;
    n.pendingPuts.clear();
    n.pendingReads.clear();
    n.readyReads = [];
    n.restartAt = -1;
  }

  crash(n: SimNode, ticks: number): void {
    // Whatever was written but not fsync'd may be partly or wholly lost.
    n.storage.crash(this.rnd);
    n.inflight = null;
    n.raw = null;
    n.restartAt = this.now + ticks * STEPS_PER_TICK;
    n.pendingPuts.clear();
    n.pendingReads.clear();
    n.readyReads = [];
  }

  /**
   * Handles pending Readies of a node. Synchronous mode: persist → send → apply → advance in
   * one go. Async mode (the README's pump): the fsync completes some steps later, and the node
   * keeps stepping messages and ticking in between; a crash meanwhile loses unsynced writes.
   */
  process(n: SimNode): void {
    if (this.asyncPersist) {
      if (n.raw && !n.inflight && n.raw.hasReady()) this.beginReady(n);
      return;
    }
    while (n.raw && n.raw.hasReady()) {
      const rd = this.beginReady(n);
      const durable = rd.snapshot || rd.entries.length || rd.hardState;
      if (durable && this.persistCrashP > 0 && !this.healed && this.rnd() < this.persistCrashP) {
        // Crash before fsync returns: only the leader's early appends were sent.
        this.stats.persistCrashes++;
        this.crash(n, 2 + Math.floor(this.rnd() * 30));
        return;
      }
      this.finishReady(n);
    }
  }

  /** Takes a Ready and issues its writes (not yet durable). */
  beginReady(n: SimNode): Ready {
    const raw = n.raw!;
    const rd = raw.ready();
    // Log matching: every (index, term) persisted anywhere must name one entry, with one
    // predecessor term.
    for (const e of rd.entries) {
      const prev = raw.log.term(e.index - 1);
      const k = `${e.index}:${e.term}`;
      const v = `${prev}|${e.type}|${dataStr(e.data)}`;
      const seen = this.logIndex.get(k);
      if (seen === undefined) this.logIndex.set(k, v);
      else if (seen !== v && prev !== undefined && !seen.startsWith("undefined")) {
        this.fail(`log matching: ${n.id} entry ${k} is ${v}, elsewhere ${seen}`);
      }
    }
    // The last hard state issued (durable or not): a Ready that changes its term or vote must not
    // let anything out before it is on disk.
    const lastHs = n.storage.unsynced.findLast((op) => op.kind === "hs")?.hs ?? n.storage.hs;
    const hsChanged = rd.hardState !== null &&
      (rd.hardState.term !== lastHs.term || rd.hardState.vote !== lastHs.vote);
    if (rd.snapshot) n.storage.write({ kind: "snap", snap: rd.snapshot });
    if (rd.entries.length) n.storage.write({ kind: "ents", ents: rd.entries });
    if (rd.hardState) n.storage.write({ kind: "hs", hs: rd.hardState });
    const st = raw.status();
    // As RaftGroup does: the leader's appends leave while its own write is still unsynced (a
    // crash before the fsync then loses the leader's copy after the followers got theirs).
    const { early, late } = splitReadyMessages(rd, n.id, st.role === "leader", hsChanged);
    for (const m of early) this.sendRaft(m);
    this.stats.earlyMessages += early.length;
    n.inflight = {
      rd,
      late,
      at: this.now + 1 + Math.floor(this.rnd() * 4),
      leaderTerm: st.role === "leader" ? st.term : 0,
    };
    return rd;
  }

  /** fsync done: send, install, apply, serve reads, advance, maybe compact. */
  finishReady(n: SimNode): void {
    const { rd, late, leaderTerm } = n.inflight!;
    n.inflight = null;
    const raw = n.raw!;
    n.storage.sync();
    if (rd.hardState) {
      if (leaderTerm > 0) {
        for (let i = n.commitSeen + 1; i <= rd.hardState.commit; i++) {
          if (!this.commitTerm.has(i)) this.commitTerm.set(i, leaderTerm);
        }
      }
      n.commitSeen = Math.max(n.commitSeen, rd.hardState.commit);
    }
    for (const m of late) this.sendRaft(m);
    if (rd.hardState && !this.healed && this.rnd() < this.postSendCrashP) {
      // Crash right after a vote/term/commit became durable and its messages left: the
      // restarted node must act on exactly what it persisted (e.g. never vote twice).
      this.stats.postSendCrashes = (this.stats.postSendCrashes ?? 0) + 1;
      this.crash(n, Math.floor(this.rnd() * 4));
      return;
    }
    if (rd.softState?.role === "leader") this.onLeader(n);
    if (rd.snapshot) {
      const s = rd.snapshot;
      const c = this.committed.get(s.index);
      if (c && c.term !== s.term) {
        this.fail(`${n.id} installed snapshot ${s.index}@${s.term}, committed term ${c.term}`);
      }
      n.sm = KvStateMachine.restore(s.data);
      n.applied = s.index;
      this.stats.snapshotsInstalled++;
    }
    for (const e of rd.committedEntries) this.applyEntry(n, e);
    for (const rs of rd.readStates) {
      const key = dataStr(rs.ctx);
      const req = n.pendingReads.get(key);
      if (req) {
        n.pendingReads.delete(key);
        n.readyReads.push({ index: rs.index, req });
      }
    }
    raw.advance();
    this.serveReads(n);
    this.maybeCompact(n);
  }

  applyEntry(n: SimNode, e: Entry): void {
    if (e.index !== n.applied + 1) this.fail(`${n.id} applies ${e.index} after ${n.applied}`);
    n.applied = e.index;
    const d = dataStr(e.data);
    const c = this.committed.get(e.index);
    if (c === undefined) {
      this.committed.set(e.index, { term: e.term, data: d });
      this.stats.committed++;
    } else if (c.term !== e.term || c.data !== d) {
      this.fail(
        `state machine safety: ${n.id} applied ${e.index}@${e.term} "${d}", others "${c.data}"@${c.term}`,
      );
    }
    if (e.type !== "normal" || e.data.length === 0) return;
    const cmd = decodeCommand(e.data);
    if (!n.sm.apply(cmd)) this.stats.duplicates++;
    const k = `${cmd.client}:${cmd.seq}`;
    const req = n.pendingPuts.get(k);
    if (req) {
      n.pendingPuts.delete(k);
      this.respond(n.id, req, { kind: "ok", value: null, leader: null });
    }
  }

  serveReads(n: SimNode): void {
    if (n.readyReads.length === 0) return;
    const still: { index: number; req: ClientReq }[] = [];
    for (const r of n.readyReads) {
      if (n.applied >= r.index) {
        this.respond(n.id, r.req, { kind: "value", value: n.sm.get(r.req.key), leader: null });
      } else still.push(r);
    }
    n.readyReads = still;
  }

  maybeCompact(n: SimNode): void {
    const raw = n.raw!;
    if (n.applied - raw.log.snapIndex < SNAPSHOT_EVERY) return;
    const s = raw.compact(n.applied, n.sm.snapshot());
    // FileStorage.compact is itself synchronous-durable (temp + fsync + rename).
    n.storage.write({ kind: "compact", snap: s });
    n.storage.sync();
    this.stats.compactions++;
  }

  /** Leader completeness: a new leader holds every entry known committed. */
  onLeader(n: SimNode): void {
    this.stats.elections++;
    this.checkCompleteness(n);
  }

  /** Leader completeness, checked at election and after every tick for current leaders. */
  checkCompleteness(n: SimNode): void {
    const raw = n.raw!;
    const term = raw.status().term;
    for (const [i, ct] of this.commitTerm) {
      // Only entries committed in an earlier term must be there: a deposed leader that has
      // not heard of its successor legitimately lacks what the successor committed.
      if (ct >= term || i <= raw.log.snapIndex) continue;
      const c = this.committed.get(i);
      if (!c) continue;
      const t = raw.log.term(i);
      if (t !== c.term) {
        this.fail(
          `leader completeness: leader ${n.id} of term ${term} has ${i}@${t}, committed ${i}@${c.term}`,
        );
      }
    }
  }

  /** Election safety: at most one leader per term, ever. */
  checkLeaders(): void {
    for (const n of this.nodes.values()) {
      if (!n.raw) continue;
      const st = n.raw.status();
      if (st.role !== "leader") continue;
      const prev = this.leaders.get(st.term);
      if (prev === undefined) this.leaders.set(st.term, n.id);
      else if (prev !== n.id) {
        this.fail(`election safety: ${prev} and ${n.id} both lead term ${st.term}`);
      }
    }
  }

  // ---------------------------------------------------------------- network

  linkBlocked(from: string, to: string): boolean {
    return this.blocked.has(`${from}>${to}`);
  }

  enqueue(f: Omit<InFlight, "at" | "order">, extraDelay = 0): void {
    let at = this.now + 1 + Math.floor(this.rnd() * this.maxDelay) + extraDelay;
    // Long-tail latency: a few messages arrive much later (after elections, restarts...).
    if (this.tailP > 0 && this.rnd() < this.tailP) at += Math.floor(this.rnd() * 60);
    this.net.push({ ...f, at, order: this.rnd() });
  }

  sendRaft(m: Message): void {
    this.stats.messages++;
    if (m.type === "snap") {
      this.stats.snapshotChunks++;
      if (m.chunk!.offset === 0) this.stats.snapshotTransfers++;
    }
    if (this.linkBlocked(m.from, m.to)) return;
    if (this.rnd() < this.dropP) return;
    const msg = this.codec ? this.codec(m) : m;
    this.enqueue({ from: m.from, to: m.to, raft: msg });
    if (this.rnd() < this.dupP) this.enqueue({ from: m.from, to: m.to, raft: msg }, 3);
  }

  respond(from: NodeId, req: ClientReq, r: Omit<ClientResp, "client" | "seq" | "attempt">): void {
    if (this.rnd() < this.dropP) return;
    this.enqueue({
      from,
      to: req.client,
      resp: { client: req.client, seq: req.seq, attempt: req.attempt, ...r },
    });
  }

  deliver(f: InFlight): void {
    if (f.resp) {
      this.clientResponse(f.resp);
      return;
    }
    const n = this.nodes.get(f.to);
    if (!n || !n.raw) return;
    if (f.raft) {
      // Partitions also cut messages already in flight on a now-blocked link.
      if (this.linkBlocked(f.from, f.to)) return;
      n.raw.step(f.raft);
    } else if (f.req) {
      this.nodeRequest(n, f.req);
    }
    this.process(n);
  }

  nodeRequest(n: SimNode, req: ClientReq): void {
    const raw = n.raw!;
    try {
      if (req.kind === "put") {
        raw.propose(
          encodeCommand({ client: req.client, seq: req.seq, key: req.key, value: req.value }),
        );
        n.pendingPuts.set(`${req.client}:${req.seq}`, req);
      } else {
        const ctx = `${req.client}:${req.seq}:${req.attempt}`;
        raw.readIndex(new TextEncoder().encode(ctx));
        n.pendingReads.set(ctx, req);
      }
    } catch (e) {
      if (e instanceof NotLeaderError) {
        this.respond(n.id, req, { kind: "redirect", value: null, leader: e.leader });
      } else if (e instanceof ProposalDroppedError) {
        this.respond(n.id, req, { kind: "redirect", value: null, leader: null });
      } else throw e;
    }
  }

  // ---------------------------------------------------------------- clients

  clientStep(c: ClientState): void {
    if (c.cur) {
      if (this.now >= c.cur.deadline) this.clientRetry(c, null);
      return;
    }
    if (this.healed || c.issued >= this.opsPerClient || this.now < c.nextAt) return;
    c.issued++;
    c.seq++;
    const key = this.pick(["a", "b", "c"]);
    const put = this.rnd() < 0.5;
    const value = `${c.id}.${c.seq}`;
    const req: ClientReq = {
      kind: put ? "put" : "get",
      client: c.id,
      seq: c.seq,
      attempt: 0,
      key,
      value,
    };
    const op: Operation = {
      client: c.id,
      key,
      kind: put ? "put" : "get",
      value: put ? value : null,
      call: this.clock(),
      ret: Infinity,
    };
    this.history.push(op);
    this.stats.ops++;
    c.cur = { op, req, deadline: 0, target: "" };
    this.clientRetry(c, this.rnd() < 0.25 ? null : c.leaderGuess);
  }

  clientRetry(c: ClientState, target: NodeId | null): void {
    const cur = c.cur!;
    const ids = [...this.nodes.keys()];
    // Without a hint, cycle through the nodes (from a random start) so a client cannot miss
    // the leader forever.
    cur.target = target && this.nodes.has(target) ? target : ids[c.rr++ % ids.length];
    cur.req = { ...cur.req, attempt: cur.req.attempt + 1 };
    cur.deadline = this.now + CLIENT_TIMEOUT_TICKS * STEPS_PER_TICK;
    this.enqueue({ from: c.id, to: cur.target, req: cur.req });
  }

  clientResponse(r: ClientResp): void {
    const c = this.clients.find((x) => x.id === r.client)!;
    const cur = c.cur;
    if (!cur || cur.req.seq !== r.seq) return; // stale answer to an earlier op
    if (r.kind === "redirect") {
      if (r.attempt !== cur.req.attempt) return;
      // Retry at the named leader, or somewhere else after a short pause.
      if (r.leader) this.clientRetry(c, r.leader);
      else cur.deadline = Math.min(cur.deadline, this.now + 2 * STEPS_PER_TICK);
      return;
    }
    if (r.kind === "value" && cur.op.kind === "get") cur.op.value = r.value;
    cur.op.ret = this.clock();
    c.leaderGuess = cur.target;
    c.cur = null;
    c.nextAt = this.now + Math.floor(this.rnd() * 24);
    this.stats.okOps++;
  }

  // ---------------------------------------------------------------- faults

  injectFaults(): void {
    const r = this.rnd;
    const nodes = [...this.nodes.values()];
    if (this.crashP > 0 && r() < this.crashP) {
      const up = nodes.filter((n) => n.raw);
      if (up.length) {
        this.crash(this.pick(up), 3 + Math.floor(r() * 40));
        this.stats.crashes++;
      }
    }
    if (this.blocked.size > 0 && this.now >= this.partitionEnd) this.blocked.clear();
    if (this.partitionP > 0 && this.blocked.size === 0 && r() < this.partitionP) {
      const ids = nodes.map((n) => n.id);
      const leader = nodes.find((n) => n.raw && n.raw.status().role === "leader");
      const kind = r();
      if (kind < 0.35 && leader) {
        // isolate the leader: the classic stale-leader setup (reads must not go stale)
        for (const b of ids) {
          if (b !== leader.id) {
            this.blocked.add(`${leader.id}>${b}`);
            this.blocked.add(`${b}>${leader.id}`);
          }
        }
      } else if (kind < 0.7) {
        // symmetric split
        const side = new Set(ids.filter(() => r() < 0.5));
        for (const a of ids) {
          for (const b of ids) if (side.has(a) !== side.has(b)) this.blocked.add(`${a}>${b}`);
        }
      } else {
        // one-way: some directed links fail
        for (const a of ids) {
          for (const b of ids) if (a !== b && r() < 0.3) this.blocked.add(`${a}>${b}`);
        }
      }
      this.partitionEnd = this.now + (5 + Math.floor(r() * 80)) * STEPS_PER_TICK;
      this.stats.partitions++;
    }
    const leader = nodes.find((n) => n.raw && n.raw.status().role === "leader");
    if (!leader) return;
    const raw = leader.raw!;
    if (this.transferP > 0 && r() < this.transferP) {
      const voters = raw.status().voters.filter((v) => v !== leader.id);
      if (voters.length) {
        raw.transferLeader(this.pick(voters));
        this.stats.transfers++;
        this.process(leader);
      }
    }
    if (this.confP > 0 && r() < this.confP) {
      const voters = raw.status().voters;
      const others = ALL_IDS.filter((id) => this.nodes.has(id) && !voters.includes(id));
      const choices: ConfChangeRequest[] = [];
      if (others.length) choices.push({ type: "add", node: this.pick(others) });
      if (voters.length > 1) choices.push({ type: "remove", node: this.pick(voters) });
      if (others.length && voters.length) {
        choices.push({ type: "replace", add: this.pick(others), remove: this.pick(voters) });
      }
      if (choices.length) {
        try {
          raw.proposeConfChange(this.pick(choices));
          this.stats.confChanges++;
        } catch (e) {
          if (!(e instanceof ProposalDroppedError)) throw e;
        }
        this.process(leader);
      }
    }
  }

  heal(): void {
    this.healed = true;
    this.blocked.clear();
    this.dropP = 0;
    this.dupP = 0;
    this.tailP = 0;
    for (const n of this.nodes.values()) if (!n.raw) this.startNode(n);
  }

  // ---------------------------------------------------------------- main loop

  stepOnce(): void {
    // Deliver everything due now, in a seeded order (reordering comes from random delays and
    // the random tie-break).
    const due: InFlight[] = [];
    const rest: InFlight[] = [];
    for (const n of this.nodes.values()) {
      if (n.inflight && n.inflight.at <= this.now) {
        if (!this.healed && this.persistCrashP > 0 && this.rnd() < this.persistCrashP) {
          this.stats.persistCrashes++;
          this.crash(n, 2 + Math.floor(this.rnd() * 30));
          continue;
        }
        this.finishReady(n);
        this.process(n);
      }
    }
    for (const f of this.net) (f.at <= this.now ? due : rest).push(f);
    this.net = rest;
    due.sort((a, b) => a.at - b.at || a.order - b.order);
    for (const f of due) {
      this.deliver(f);
      this.checkLeaders();
    }
    if (this.now % STEPS_PER_TICK === 0) {
      for (const n of this.nodes.values()) {
        if (!n.raw && n.restartAt >= 0 && this.now >= n.restartAt) this.startNode(n);
      }
      if (!this.healed) this.injectFaults();
      for (const n of this.nodes.values()) {
        if (!n.raw || (n.tickRate < 1 && this.rnd() >= n.tickRate)) continue;
        n.raw.tick();
        this.process(n);
      }
      this.checkLeaders();
      for (const n of this.nodes.values()) {
        if (n.raw?.status().role === "leader") this.checkCompleteness(n);
      }
    }
    for (const c of this.clients) this.clientStep(c);
    this.now++;
  }

  run(): void {
    const faultSteps = this.faultTicks * STEPS_PER_TICK;
    while (this.now < faultSteps) this.stepOnce();
    this.heal();
    // Without pre-vote, a node with a stale log/config can keep winning the timer race and
    // bumping terms (split votes are only made unlikely by randomization): allow more time.
    const bound = this.preVote ? this.livenessTicks : this.livenessTicks * 3;
    const deadline = this.now + bound * STEPS_PER_TICK;
    while (this.now < deadline) {
      this.stepOnce();
      if (this.clients.every((c) => c.cur === null) && this.hasVoterLeader()) break;
    }
    if (!this.hasVoterLeader()) {
      this.fail(
        `liveness: no leader ${bound} ticks after healing\n${this.describe()}`,
      );
    }
    const stuck = this.clients.filter((c) => c.cur !== null);
    if (stuck.length) {
      this.fail(
        `liveness: ${
          stuck.map((c) => `${c.id} op ${c.cur!.req.kind} seq ${c.cur!.req.seq}`).join(", ")
        } not done ${bound} ticks after healing\n${this.describe()}`,
      );
    }
    // Reads that never answered have no effect: drop them; puts may or may not have happened.
    const hist = this.history.filter((o) => !(o.kind === "get" && o.ret === Infinity));
    const lin = checkHistory(hist);
    if (lin.timedOut) this.stats.linTimeouts = 1;
    if (!lin.ok) {
      this.fail(
        `history not linearizable on key ${lin.key}:\n${
          formatHistory(hist.filter((o) => o.key === lin.key))
        }`,
      );
    }
  }

  /** One line per node: role, term, log and config, for failure reports. */
  describe(): string {
    return [...this.nodes.values()].map((n) => {
      if (!n.raw) return `  ${n.id}: down`;
      const st = n.raw.status();
      return `  ${n.id}: ${st.role} term ${st.term} vote ${st.vote} lead ${st.lead} commit ${st.commit} ` +
        `applied ${st.applied} log [${st.firstIndex}, ${st.lastIndex}] voters ${
          st.voters.join(",")
        }` +
        [...st.progress].map(([id, p]) => ` ${id}:${p.state}/${p.match}/${p.next}`).join("");
    }).join("\n");
  }

  hasVoterLeader(): boolean {
    for (const n of this.nodes.values()) {
      const st = n.raw?.status();
      if (st && st.role === "leader" && st.voters.includes(n.id)) return true;
    }
    return false;
  }
}

const dec = new TextDecoder();
function dataStr(d: Uint8Array): string {
  return dec.decode(d);
}

/** Renders a history for failure reports. */
export function formatHistory(ops: Operation[]): string {
  return [...ops].sort((a, b) => a.call - b.call).map((o) =>
    `  ${o.client} ${o.kind}(${o.key}${o.kind === "put" ? `=${o.value}` : ""})${
      o.kind === "get" ? ` -> ${o.value}` : ""
    } [${o.call}, ${o.ret}]`
  ).join("\n");
}
