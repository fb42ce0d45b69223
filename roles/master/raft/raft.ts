/**
 * The Raft consensus core: a pure, deterministic state machine in the style of etcd-io/raft.
 * No I/O, no timers, no randomness of its own, no clock. Drive it with {@link RawNode.tick},
 * {@link RawNode.step}, {@link RawNode.propose}; collect its output with {@link RawNode.ready}
 * and acknowledge with {@link RawNode.advance}. See README.md for the driver-loop contract.
 */
import { crc32 } from "../../../lib/crc32.ts";
import { RaftLog } from "./log.ts";
import {
  type ConfChange,
  type ConfState,
  EMPTY,
  type Entry,
  type HardState,
  invariant,
  makeMessage,
  MAX_INDEX,
  MAX_TERM,
  type Message,
  MESSAGE_TYPES,
  type NodeId,
  NotLeaderError,
  type PersistedState,
  ProposalDroppedError,
  RaftInvariantError,
  RaftMessageError,
  RaftSnapshotDataError,
  RaftUsageError,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SoftState,
} from "./types.ts";

/** Configuration of one Raft member. Tick counts are in units of {@link RawNode.tick} calls. */
export interface RaftConfig {
  /** This member's id. */
  id: NodeId;
  /** Base election timeout T; the randomized timeout is drawn from [T, 2T). */
  electionTick: number;
  /** Leader heartbeat interval (must be < electionTick). */
  heartbeatTick: number;
  /** Seeded PRNG returning [0, 1): the only source of randomness (election timeouts). */
  rand: () => number;
  /** Pre-vote phase before real elections (default true): partitioned nodes do not disrupt. */
  preVote?: boolean;
  /** Leader steps down without a quorum heard in an election timeout (default true). */
  checkQuorum?: boolean;
  /** Max entries in one append message (default 64). */
  maxEntriesPerMsg?: number;
  /** Max payload bytes in one append message, at least one entry is sent (default 1 MiB). */
  maxBytesPerMsg?: number;
  /** Max in-flight append messages per follower when pipelining (default 64). */
  maxInflight?: number;
  /** Snapshot transfer: bytes of snapshot data per `snap` message (default 1 MiB). */
  snapshotChunkBytes?: number;
  /** Snapshot transfer: chunks sent ahead of the follower's acknowledgements (default 4). */
  snapshotWindow?: number;
  /**
   * Snapshot transfer: ticks without an acknowledgement before the leader resends the
   * unacknowledged chunks; after {@link SNAPSHOT_STALLS} such timeouts in a row the transfer
   * has failed and is retried after a backoff (default: electionTick).
   */
  snapshotTimeoutTicks?: number;
  /** Largest snapshot this member accepts from a leader, bytes (default 1 GiB). */
  maxSnapshotBytes?: number;
  /**
   * Checks a received snapshot's data before it is installed (throw to refuse it: the chunk
   * that completed it is refused with {@link RaftSnapshotDataError}). Must be pure.
   */
  checkSnapshot?: (data: Uint8Array) => void;
  /** Fresh cluster bootstrap: initial voters. Omit when restarting or joining an existing cluster. */
  peers?: NodeId[];
  /** State loaded from durable storage on restart. */
  restore?: PersistedState;
  /** Last index already applied to a durable state machine (default: the snapshot's index). */
  applied?: number;
}

/** A membership change request: single-server add/remove, or replace (add, then remove). */
export type ConfChangeRequest =
  | { type: "add"; node: NodeId }
  | { type: "remove"; node: NodeId }
  | { type: "replace"; add: NodeId; remove: NodeId };

/** Replication state of one follower as seen by the leader. */
export type ProgressState = "probe" | "replicate" | "snapshot";

/** Timeouts in a row without an acknowledgement after which a snapshot transfer failed. */
export const SNAPSHOT_STALLS = 3;
/** Longest wait before retrying a failed snapshot transfer, in election timeouts. */
export const SNAPSHOT_BACKOFF_MAX = 8;

/**
 * The leader's state of one snapshot transfer to a follower (progress state "snapshot").
 * Chunk k covers data [k * chunkBytes, min((k + 1) * chunkBytes, total)); chunks are views of
 * the stored snapshot, never copies.
 */
export interface SnapshotTransfer {
  /** The snapshot being sent (the log's, by reference). */
  snap: Snapshot;
  /** This transfer's number (a `snap`'s and `snapResp`'s seq). */
  seq: number;
  /** Number of chunks (an empty snapshot is one empty chunk). */
  chunks: number;
  /** Next chunk to send. */
  next: number;
  /** Chunks the follower has acknowledged (received in order). */
  acked: number;
  /** Chunks ever sent in this transfer (acknowledgements beyond are impossible). */
  sent: number;
  /** crcs[k]: CRC-32 of the data up to the end of chunk k (filled as chunks are first sent). */
  crcs: number[];
  /** Ticks since the last acknowledgement or retransmission. */
  idle: number;
  /** Timeouts (or restarts) in a row without an acknowledgement. */
  stalls: number;
}

/** Leader's view of one member's replication progress. */
export class Progress {
  match = 0;
  next = 1;
  state: ProgressState = "probe";
  /** In probe state: one append is outstanding, wait for its answer (or a heartbeat reply). */
  paused = false;
  pendingSnapshot = 0;
  /** In snapshot state: the transfer in flight (no other starts until it ends). */
  transfer: SnapshotTransfer | null = null;
  /** Snapshot transfers to this member that failed in a row (reset once it replicates). */
  snapshotFailures = 0;
  /** Ticks before another snapshot transfer may start after a failure. */
  snapshotBackoff = 0;
  recentActive = false;
  /** Last indexes of in-flight appends (replicate state pipelining window). */
  inflights: number[] = [];
  /** Highest ReadIndex heartbeat round acknowledged by this member. */
  readAck = 0;

  /** Records an acknowledgement of index n; returns whether match advanced. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.paused = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** Handles a rejection of the append at `rejected`; returns false for stale rejections. */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.paused = false;
    return true;
  }

  /** Enters probe state (one append at a time until a match is found). */
  becomeProbe(): void {
    if (this.state === "snapshot") {
      this.next = Math.max(this.match + 1, this.pendingSnapshot + 1);
    } else {
      this.next = this.match + 1;
    }
    this.state = "probe";
    this.paused = false;
    this.pendingSnapshot = 0;
    this.transfer = null;
    this.inflights = [];
  }

  /** Enters replicate state (optimistic next, pipelined appends). */
  becomeReplicate(): void {
    this.state = "replicate";
    this.next = this.match + 1;
    this.paused = false;
    this.pendingSnapshot = 0;
    this.transfer = null;
    this.snapshotFailures = 0;
    this.snapshotBackoff = 0;
    this.inflights = [];
  }

  /** Enters snapshot state while transfer `t` is in flight. */
  becomeSnapshot(t: SnapshotTransfer): void {
    this.state = "snapshot";
    this.pendingSnapshot = t.snap.index;
    this.transfer = t;
    this.inflights = [];
  }

  /** Whether the leader must hold back appends to this member. */
  isPaused(maxInflight: number): boolean {
    if (this.state === "probe") return this.paused;
    if (this.state === "replicate") return this.inflights.length >= maxInflight;
    return true;
  }
}

/** Read-only status of a node, for operators and tests. */
export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId | null;
  lead: NodeId | null;
  role: Role;
  commit: number;
  applied: number;
  firstIndex: number;
  lastIndex: number;
  voters: NodeId[];
  /** Leader only: replication progress per voter. */
  progress: Map<NodeId, { match: number; next: number; state: ProgressState }>;
  leadTransferee: NodeId | null;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Encodes a ConfChange as the data of a "conf" entry (UTF-8 JSON; voters sorted). */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  if (cc.type === "init") {
    return enc.encode(JSON.stringify({ type: "init", voters: [...cc.voters].sort() }));
  }
  return enc.encode(JSON.stringify({ type: cc.type, node: cc.node }));
}

/** Decodes the data of a "conf" entry; throws RaftInvariantError on garbage. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(data));
  } catch {
    throw new RaftInvariantError("conf entry: not JSON");
  }
  const o = v as { type?: unknown; node?: unknown; voters?: unknown };
  if (
    o.type === "init" && Array.isArray(o.voters) && o.voters.every((x) => typeof x === "string")
  ) {
    return { type: "init", voters: o.voters as string[] };
  }
  if ((o.type === "add" || o.type === "remove") && typeof o.node === "string") {
    return { type: o.type, node: o.node };
  }
  throw new RaftInvariantError(`conf entry: bad change ${dec.decode(data).slice(0, 80)}`);
}

/** Applies a conf change to a voter list (returns a new sorted list). */
export function applyConfChange(voters: NodeId[], cc: ConfChange): NodeId[] {
  if (cc.type === "init") return [...cc.voters].sort();
  const s = new Set(voters);
  if (cc.type === "add") s.add(cc.node);
  else s.delete(cc.node);
  return [...s].sort();
}

/** Small seeded PRNG (mulberry32) for {@link RaftConfig.rand}; seed it per node. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface PendingRead {
  seq: number;
  index: number;
  from: NodeId;
  ctx: Uint8Array;
}

/** A snapshot a follower is receiving, chunk by chunk (at most one at a time). */
interface IncomingSnapshot {
  from: NodeId;
  /** Term of the leader sending it. */
  term: number;
  seq: number;
  index: number;
  snapTerm: number;
  conf: ConfState;
  total: number;
  /** The whole data, filled in order up to `received`. */
  buf: Uint8Array;
  received: number;
  /** CRC-32 of buf[0, received). */
  crc: number;
  /** Ticks since the last chunk that moved it on. */
  idle: number;
}

/** Counters of snapshot transfers (leader and follower side), for tests and operators. */
export interface SnapshotStats {
  /** Leader: transfers started (a snapshot sent to a follower, counted once per transfer). */
  sent: number;
  /** Leader: chunks sent, retransmissions included. */
  chunksSent: number;
  /** Leader: timeouts after which the unacknowledged chunks were sent again. */
  retransmits: number;
  /** Leader: transfers that failed (no acknowledgement, reportSnapshot(to, false)). */
  failed: number;
  /** Follower: snapshots received whole, verified and handed to install. */
  received: number;
  /** Follower: chunks ignored (duplicate, out of order, of an unknown or finished transfer). */
  chunksIgnored: number;
}

interface ReadyMark {
  lastIndex: number;
  lastTerm: number;
  hs: HardState | null;
  ss: SoftState | null;
  appliedTo: number;
  snapshot: Snapshot | null;
}

const MSG_TYPES: ReadonlySet<string> = new Set(MESSAGE_TYPES);

/**
 * One Raft member. Single-threaded: call its methods from one loop. Between ready() and
 * advance() you may keep calling step/tick/propose (their output goes into the next Ready),
 * but you must not call ready() again before advance().
 */
export class RawNode {
  /** This member's id. */
  readonly id: NodeId;
  /** The in-memory log. Exposed read-only for inspection (tests, status); do not mutate. */
  readonly log: RaftLog;
  private term = 0;
  private vote: NodeId | null = null;
  private lead: NodeId | null = null;
  private role: Role = "follower";
  private voters = new Set<NodeId>();
  /** Configurations of conf entries still in the log, in index order. */
  private confHistory: { index: number; voters: NodeId[] }[] = [];
  private prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private leadTransferee: NodeId | null = null;
  private pendingReplace: { remove: NodeId; addIndex: number } | null = null;
  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private pendingReads: PendingRead[] = [];
  private readsBeforeCommit: { from: NodeId; ctx: Uint8Array }[] = [];
  private readSeq = 0;
  /** A ReadIndex round (readSeq) was opened but its heartbeats are not sent yet. */
  private readRoundPending = false;
  private pendingInstall: Snapshot | null = null;
  /** Follower: the snapshot being received; the last transfer received whole. */
  private incoming: IncomingSnapshot | null = null;
  private lastDone: { from: NodeId; term: number; seq: number } | null = null;
  /** Leader: number of the last snapshot transfer started. */
  private snapSeq = 0;
  /** Counters of snapshot transfers. */
  readonly snapshotStats: SnapshotStats = {
    sent: 0,
    chunksSent: 0,
    retransmits: 0,
    failed: 0,
    received: 0,
    chunksIgnored: 0,
  };
  private readonly checkSnapshot: ((data: Uint8Array) => void) | null;
  private prevHs: HardState;
  private prevSs: SoftState;
  private readyMark: ReadyMark | null = null;
  private readonly cfg: Required<
    Omit<RaftConfig, "peers" | "restore" | "applied" | "checkSnapshot">
  >;

  /** Creates a member: fresh bootstrap (`peers`), restart (`restore`) or joiner (neither). */
  constructor(config: RaftConfig) {
    if (config.heartbeatTick <= 0 || config.electionTick <= config.heartbeatTick) {
      throw new RaftUsageError(
        `raft ${config.id}: need 0 < heartbeatTick < electionTick, got ${config.heartbeatTick}/${config.electionTick}`,
      );
    }
    this.id = config.id;
    this.cfg = {
      id: config.id,
      electionTick: config.electionTick,
      heartbeatTick: config.heartbeatTick,
      rand: config.rand,
      preVote: config.preVote ?? true,
      checkQuorum: config.checkQuorum ?? true,
      maxEntriesPerMsg: config.maxEntriesPerMsg ?? 64,
      maxBytesPerMsg: config.maxBytesPerMsg ?? 1 << 20,
      maxInflight: config.maxInflight ?? 64,
      snapshotChunkBytes: config.snapshotChunkBytes ?? 1 << 20,
      snapshotWindow: config.snapshotWindow ?? 4,
      snapshotTimeoutTicks: config.snapshotTimeoutTicks ?? config.electionTick,
      maxSnapshotBytes: config.maxSnapshotBytes ?? 2 ** 30,
    };
    for (
      const k of ["snapshotChunkBytes", "snapshotWindow", "snapshotTimeoutTicks"] as const
    ) {
      const v = this.cfg[k];
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new RaftUsageError(`raft ${config.id}: ${k} must be a positive integer, got ${v}`);
      }
    }
    this.checkSnapshot = config.checkSnapshot ?? null;
    this.log = new RaftLog(this.id, (ents, truncatedAt) => this.onAppend(ents, truncatedAt));
    if (config.restore) {
      const st = config.restore;
      if (st.snapshot) {
        this.log.restore(st.snapshot);
        this.voters = new Set(st.snapshot.conf.voters);
      }
      const ents = st.entries.filter((e) => e.index > this.log.snapIndex);
      if (ents.length) this.log.append(ents);
      if (st.hardState.commit > this.log.lastIndex()) {
        throw new RaftInvariantError(
          `raft ${this.id}: stored commit ${st.hardState.commit} beyond last index ${this.log.lastIndex()}`,
        );
      }
      this.log.committed = Math.max(this.log.committed, st.hardState.commit);
      this.term = st.hardState.term;
      this.vote = st.hardState.vote;
      this.log.applied = Math.min(
        Math.max(config.applied ?? 0, this.log.snapIndex),
        this.log.committed,
      );
    } else if (config.peers && config.peers.length > 0) {
      // Bootstrap: every initial member writes the identical entry 1 (sorted voters), so the
      // logs agree without an election; it is committed by construction.
      this.log.append([{
        term: 1,
        index: 1,
        type: "conf",
        data: encodeConfChange({ type: "init", voters: config.peers }),
      }]);
      this.term = 1;
      this.log.committed = 1;
    }
    this.prevHs = config.restore
      ? { ...config.restore.hardState }
      : { term: 0, vote: null, commit: 0 };
    if (config.restore) this.log.unstableFrom = this.log.lastIndex() + 1;
    this.becomeFollower(this.term, null);
    this.prevSs = { lead: null, role: "follower" };
  }

  // ---------------------------------------------------------------- public API

  /** Advances logical time by one tick (election / heartbeat timers). */
  tick(): void {
    if (this.role === "leader") this.tickHeartbeat();
    else this.tickElection();
  }

  /** Starts an election now (as if the election timer fired). */
  campaign(): void {
    this.hup(false);
  }

  /**
   * Proposes application data. Returns the index it was appended at (it may still be lost if
   * leadership changes before it commits). Throws NotLeaderError / ProposalDroppedError.
   */
  propose(data: Uint8Array): number {
    this.checkProposable("propose");
    return this.appendEntry("normal", data);
  }

  /**
   * Proposes a single-server membership change. Refused (ProposalDroppedError) while another
   * change is uncommitted, before the leader committed an entry of its own term (the fix for
   * the single-server-change bug), or if it would be a no-op or remove the last voter.
   * Returns the index of the (first) conf entry.
   */
  proposeConfChange(req: ConfChangeRequest): number {
    this.checkProposable("proposeConfChange");
    if (this.log.term(this.log.committed) !== this.term) {
      throw new ProposalDroppedError(this.id, "leader has not committed an entry of its term yet");
    }
    if (this.lastConfIndex() > this.log.committed || this.pendingReplace) {
      throw new ProposalDroppedError(this.id, "another membership change is pending");
    }
    const add = req.type === "remove" ? null : req.type === "add" ? req.node : req.add;
    const remove = req.type === "add" ? null : req.type === "remove" ? req.node : req.remove;
    if (add !== null && this.voters.has(add)) {
      throw new ProposalDroppedError(this.id, `${add} is already a voter`);
    }
    if (remove !== null && !this.voters.has(remove)) {
      throw new ProposalDroppedError(this.id, `${remove} is not a voter`);
    }
    if (req.type === "remove" && this.voters.size === 1) {
      throw new ProposalDroppedError(this.id, `cannot remove the last voter ${req.node}`);
    }
    if (add !== null) {
      const idx = this.appendEntry("conf", encodeConfChange({ type: "add", node: add }));
      if (remove !== null) this.pendingReplace = { remove, addIndex: idx };
      return idx;
    }
    return this.appendEntry("conf", encodeConfChange({ type: "remove", node: remove! }));
  }

  /**
   * Requests a linearizable read. A ReadState with the same ctx appears in a later Ready
   * (here or, if forwarded, on this node after the leader answers); serve the read once the
   * state machine has applied its index. Throws NotLeaderError if no leader is known.
   * Requests may be silently dropped on leader change: time out and retry.
   */
  readIndex(ctx: Uint8Array): void {
    if (this.role === "leader") this.handleReadIndex(this.id, ctx);
    else if (this.lead !== null) {
      this.send(makeMessage({ type: "readIndex", from: this.id, to: this.lead, ctx }));
    } else throw new NotLeaderError(this.id, null, "readIndex");
  }

  /** Leader only: hands leadership to `to` (catches it up, then sends TimeoutNow). */
  transferLeader(to: NodeId): void {
    if (this.role !== "leader") throw new NotLeaderError(this.id, this.lead, "transferLeader");
    if (to === this.id) return;
    if (!this.voters.has(to)) {
      throw new ProposalDroppedError(this.id, `transfer target ${to} is not a voter`);
    }
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.electionElapsed = 0;
    const pr = this.prs.get(to)!;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  /**
   * Compacts the log up to `index` (<= applied) using the application's snapshot `data` of
   * the state machine at that index. Returns the Snapshot for the application to persist.
   */
  compact(index: number, data: Uint8Array): Snapshot {
    if (index <= this.log.snapIndex) {
      if (this.log.snapshot) return this.log.snapshot;
      throw new RaftUsageError(
        `raft ${this.id}: compact(${index}) at or below snapshot ${this.log.snapIndex}`,
      );
    }
    if (index > this.log.applied) {
      throw new RaftUsageError(
        `raft ${this.id}: compact(${index}) beyond applied ${this.log.applied}`,
      );
    }
    const s: Snapshot = { index, term: this.log.term(index)!, conf: this.confAt(index), data };
    this.log.compact(s);
    this.confHistory = this.confHistory.filter((c) => c.index > index);
    return s;
  }

  /**
   * Tells the leader how sending a snapshot to `to` went. `false` (the driver could not send
   * it: `to` unreachable): the transfer failed, another starts after a backoff. `true` changes
   * nothing: a snapshot counts as delivered only when the follower acknowledges it (its
   * `appResp` after installing moves its match index), never when it was sent.
   */
  reportSnapshot(to: NodeId, ok: boolean): void {
    const pr = this.prs.get(to);
    if (this.role !== "leader" || !pr || pr.state !== "snapshot") return;
    if (!ok) this.snapshotFailed(pr);
  }

  /** Tells the leader `to` is unreachable: stop pipelining to it until it answers again. */
  reportUnreachable(to: NodeId): void {
    const pr = this.prs.get(to);
    if (this.role === "leader" && pr && pr.state === "replicate") pr.becomeProbe();
  }

  /**
   * Feeds a message received from another member. Stale or irrelevant messages are ignored;
   * a malformed or impossible one (wrong recipient, numbers out of range, entries that do not
   * follow, a commit beyond our log...) throws RaftMessageError (a RaftUsageError) BEFORE it
   * changed any state: drop it. The core does not know which ids are members the driver may
   * talk to: filtering senders is the driver's job (see roles/master/raft_group.ts).
   */
  step(m: Message): void {
    if (!MSG_TYPES.has(m.type)) {
      throw new RaftMessageError(this.id, String(m.from), `unknown message type ${m.type}`);
    }
    if (m.to !== this.id) {
      throw new RaftMessageError(this.id, String(m.from), `message for ${m.to} delivered here`);
    }
    if (m.from === this.id) return;
    this.checkMessage(m);
    if (m.term > this.term) {
      if (m.type === "vote" || m.type === "preVote") {
        const force = m.seq === 1;
        const inLease = this.cfg.checkQuorum && this.lead !== null &&
          this.electionElapsed < this.cfg.electionTick;
        // A member that heard from a live leader recently ignores (pre)vote requests so a
        // partitioned-then-healed node cannot depose a healthy leader (unless transfer).
        if (!force && inLease) return;
      }
      if (m.type === "preVote") {
        // never change term on a pre-vote
      } else if (m.type === "preVoteResp" && !m.reject) {
        // the real vote will bump the term
      } else if (m.type === "app" || m.type === "heartbeat" || m.type === "snap") {
        this.becomeFollower(m.term, m.from);
      } else {
        // Figure 2: only granting a vote or hearing from a leader resets the election timer;
        // a newer term learnt from someone else's vote request must not (else a node with a
        // stale log can keep the up-to-date one from ever timing out).
        const elapsed = this.electionElapsed;
        this.becomeFollower(m.term, null);
        if (m.type === "vote") this.electionElapsed = elapsed;
      }
    } else if (m.term < this.term) {
      if (
        (this.cfg.checkQuorum || this.cfg.preVote) && (m.type === "heartbeat" || m.type === "app")
      ) {
        // Tell a stale leader about the newer term so it steps down (its followers may be
        // ignoring our votes thanks to pre-vote / lease).
        this.send(makeMessage({ type: "appResp", from: this.id, to: m.from, term: this.term }));
      } else if (m.type === "preVote" || m.type === "vote") {
        // Tell the candidate our newer term (paper §5.1), else a candidate stuck below a
        // looping peer's term can never catch up.
        this.send(
          makeMessage({
            type: m.type === "vote" ? "voteResp" : "preVoteResp",
            from: this.id,
            to: m.from,
            term: this.term,
            reject: true,
          }),
        );
      }
      return;
    }

    if (m.type === "vote" || m.type === "preVote") {
      const canVote = this.vote === m.from || (this.vote === null && this.lead === null) ||
        (m.type === "preVote" && m.term > this.term);
      const respType = m.type === "vote" ? "voteResp" : "preVoteResp";
      if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
        this.send(makeMessage({ type: respType, from: this.id, to: m.from, term: m.term }));
        if (m.type === "vote") {
          this.electionElapsed = 0;
          this.vote = m.from;
        }
      } else {
        this.send(
          makeMessage({ type: respType, from: this.id, to: m.from, term: this.term, reject: true }),
        );
      }
      return;
    }
    if (m.type === "readIndexResp") {
      // Valid whatever our role now: the leader confirmed its leadership after the request.
      this.readStates.push({ index: m.index, ctx: m.ctx });
      return;
    }
    if (this.role === "leader") this.stepLeader(m);
    else if (this.role === "follower") this.stepFollower(m);
    else this.stepCandidate(m);
  }

  /**
   * Every member id of any configuration this node still knows: the snapshot's, and each conf
   * entry's in the log (committed or not, so a member being added or removed is included).
   * Empty for a joiner that has not heard from a leader yet.
   */
  members(): Set<NodeId> {
    const out = new Set<NodeId>(this.log.snapConf.voters);
    for (const c of this.confHistory) for (const v of c.voters) out.add(v);
    for (const v of this.voters) out.add(v);
    return out;
  }

  /** Whether ready() has anything to hand out. */
  hasReady(): boolean {
    if (this.readyMark) return false;
    return this.msgs.length > 0 || this.readStates.length > 0 || this.pendingInstall !== null ||
      this.readRoundPending ||
      this.log.unstableFrom <= this.log.lastIndex() || this.log.committed > this.log.applied ||
      this.hsChanged() !== null || this.ssChanged() !== null;
  }

  /** Collects the pending output; must be followed by advance() before the next ready(). */
  ready(): Ready {
    if (this.readyMark) {
      throw new RaftUsageError(`raft ${this.id}: ready() called twice without advance()`);
    }
    if (this.readRoundPending) {
      this.readRoundPending = false;
      this.bcastHeartbeat(this.readSeq);
    }
    const hs = this.hsChanged();
    const ss = this.ssChanged();
    const last = this.log.lastIndex();
    invariant(
      hs === null || (hs.term >= this.prevHs.term && hs.commit >= this.prevHs.commit),
      () => `raft ${this.id}: hard state went back from ${JSON.stringify(this.prevHs)}`,
    );
    invariant(
      this.log.applied <= this.log.committed && this.log.committed <= last,
      () =>
        `raft ${this.id}: applied ${this.log.applied} <= commit ${this.log.committed} <= last ${last} broken`,
    );
    const entries = this.log.unstableFrom <= last
      ? this.log.slice(this.log.unstableFrom, last + 1)
      : [];
    const snapshot = this.pendingInstall;
    const from = Math.max(this.log.applied, snapshot ? snapshot.index : 0) + 1;
    const committedEntries = this.log.committed >= from
      ? this.log.slice(from, this.log.committed + 1)
      : [];
    invariant(
      committedEntries.length === 0 || committedEntries[0].index === from,
      () => `raft ${this.id}: committed entries start at ${committedEntries[0].index}, not ${from}`,
    );
    const rd: Ready = {
      softState: ss,
      hardState: hs,
      entries,
      snapshot,
      committedEntries,
      messages: this.msgs,
      readStates: this.readStates,
    };
    this.msgs = [];
    this.readStates = [];
    this.readyMark = {
      lastIndex: last,
      lastTerm: this.log.lastTerm(),
      hs,
      ss,
      appliedTo: committedEntries.length ? committedEntries[committedEntries.length - 1].index : 0,
      snapshot,
    };
    if (snapshot) this.readyMark.appliedTo = Math.max(this.readyMark.appliedTo, snapshot.index);
    return rd;
  }

  /** Acknowledges that the last Ready was persisted, sent and applied. */
  advance(): void {
    const mk = this.readyMark;
    if (!mk) throw new RaftUsageError(`raft ${this.id}: advance() without ready()`);
    this.readyMark = null;
    if (mk.hs) this.prevHs = mk.hs;
    if (mk.ss) this.prevSs = mk.ss;
    // stableTo: only if the entry we handed out is still there (not replaced meanwhile).
    if (this.log.term(mk.lastIndex) === mk.lastTerm && this.log.unstableFrom <= mk.lastIndex) {
      this.log.unstableFrom = mk.lastIndex + 1;
    }
    if (mk.snapshot && this.pendingInstall === mk.snapshot) this.pendingInstall = null;
    this.log.applied = Math.max(this.log.applied, mk.appliedTo);
  }

  /** Current status snapshot. */
  status(): RaftStatus {
    const progress = new Map<NodeId, { match: number; next: number; state: ProgressState }>();
    if (this.role === "leader") {
      for (const [id, p] of this.prs) {
        progress.set(id, { match: p.match, next: p.next, state: p.state });
      }
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      lead: this.lead,
      role: this.role,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      voters: [...this.voters].sort(),
      progress,
      leadTransferee: this.leadTransferee,
    };
  }

  /** The configuration in effect at log index `index` (must not be compacted away). */
  confAt(index: number): ConfState {
    let v = this.log.snapConf.voters;
    for (const c of this.confHistory) if (c.index <= index) v = c.voters;
    return { voters: [...v] };
  }

  // ---------------------------------------------------------------- internals

  /**
   * Refuses (RaftMessageError) a message that no correct peer can send, before step() changes
   * anything: all numbers within [0, MAX_*] (so arithmetic on them stays exact and nothing is
   * sized by them), entries contiguous right after (index, logTerm) with non-decreasing terms
   * no newer than the message, conf entries that decode, a snapshot with sane metadata, and —
   * against our own state — nothing a correct peer cannot know (a commit beyond our log, an
   * acknowledgement of entries or read rounds we never sent, a second leader in our term).
   */
  private checkMessage(m: Message): void {
    const bad = (reason: string) => new RaftMessageError(this.id, String(m.from), reason);
    if (typeof m.from !== "string" || m.from.length === 0) throw bad("no sender id");
    const num = (v: number, max: number, what: string) => {
      if (!Number.isSafeInteger(v) || v < 0 || v > max) throw bad(`${what} ${v} out of range`);
    };
    num(m.term, MAX_TERM, "term");
    num(m.logTerm, MAX_TERM, "logTerm");
    num(m.index, MAX_INDEX, "index");
    num(m.commit, MAX_INDEX, "commit");
    num(m.rejectHint, MAX_INDEX, "rejectHint");
    num(m.seq, MAX_INDEX, "seq");
    if (m.logTerm > m.term) throw bad(`logTerm ${m.logTerm} newer than term ${m.term}`);
    if (!(m.ctx instanceof Uint8Array) || !Array.isArray(m.entries)) throw bad("bad field types");
    if (m.entries.length > 0 && m.type !== "app") throw bad(`${m.type} carries entries`);
    if ((m.snapshot !== null) !== (m.type === "snap")) {
      throw bad(`${m.type} ${m.snapshot ? "with" : "without"} a snapshot`);
    }
    if (m.type === "app") {
      // Entries must directly follow (index, logTerm) and be contiguous: a malformed append
      // would otherwise corrupt the log.
      let prevTerm = m.logTerm;
      for (let i = 0; i < m.entries.length; i++) {
        const e = m.entries[i];
        if (
          !Number.isSafeInteger(e.term) || !Number.isSafeInteger(e.index) ||
          e.index !== m.index + 1 + i || e.index > MAX_INDEX || e.term > m.term ||
          e.term < prevTerm || !(e.data instanceof Uint8Array) ||
          (e.type !== "normal" && e.type !== "conf")
        ) {
          throw bad(
            `malformed append: entry ${i} is ${e.index}@${e.term} after ${m.index}@${m.logTerm}`,
          );
        }
        if (e.type === "conf") {
          try {
            decodeConfChange(e.data);
          } catch (err) {
            throw bad(`conf entry ${e.index}: ${(err as Error).message}`);
          }
        }
        prevTerm = e.term;
      }
    }
    if (m.snapshot) {
      const s = m.snapshot;
      num(s.index, MAX_INDEX, "snapshot.index");
      num(s.term, MAX_TERM, "snapshot.term");
      const vs = s.conf?.voters;
      if (
        s.index === 0 || s.term === 0 || s.term > m.term || !(s.data instanceof Uint8Array) ||
        !Array.isArray(vs) || vs.length === 0 || new Set(vs).size !== vs.length ||
        !vs.every((v) => typeof v === "string" && v.length > 0)
      ) {
        throw bad(`bad snapshot metadata ${s.index}@${s.term} voters ${String(vs)}`);
      }
    }
    this.checkChunk(m, bad);
    if (m.term < this.term) return; // stale: step() ignores it (or answers with our term)
    const leaderMsg = m.type === "app" || m.type === "heartbeat" || m.type === "snap";
    if (this.role === "leader" && m.term === this.term) {
      if (leaderMsg) throw bad(`${m.type} from a second leader of term ${m.term}`);
      if (m.type === "appResp" && !m.reject && m.index > this.log.lastIndex()) {
        throw bad(`acknowledges index ${m.index} beyond our last ${this.log.lastIndex()}`);
      }
      if (m.type === "heartbeatResp" && m.seq > this.readSeq) {
        throw bad(`acknowledges read round ${m.seq}, latest is ${this.readSeq}`);
      }
    }
    if (m.type === "heartbeat" && m.commit > this.log.lastIndex()) {
      // A leader sends min(match, commit): never beyond what we hold.
      throw bad(`heartbeat commit ${m.commit} beyond our last index ${this.log.lastIndex()}`);
    }
    if (m.type === "snap") this.checkChunkAgainstState(m, bad);
    if (m.type === "snapResp" && this.role === "leader" && m.term === this.term && !m.reject) {
      const t = this.prs.get(m.from)?.transfer;
      if (t && m.seq === t.seq && m.index === t.snap.index) {
        const c = m.chunk!;
        const k = this.chunksIn(t, c.offset);
        if (
          c.total !== t.snap.data.length || k < 0 || k > t.sent ||
          c.crc !== (k === 0 ? 0 : t.crcs[k - 1])
        ) {
          throw bad(`acknowledges snapshot bytes [0, ${c.offset}) of ${c.total} never sent`);
        }
      }
    }
  }

  /**
   * Static checks of a chunk (snap, snapResp): fields in range, bytes inside the whole, the
   * last flag where the bytes end, a size this member accepts, the first chunk's checksum.
   */
  private checkChunk(m: Message, bad: (reason: string) => RaftMessageError): void {
    const c = m.chunk;
    if ((c !== null) !== (m.type === "snap" || m.type === "snapResp")) {
      throw bad(`${m.type} ${c ? "with" : "without"} a snapshot chunk`);
    }
    if (!c) return;
    for (const [v, what] of [[c.offset, "offset"], [c.total, "total"]] as const) {
      if (!Number.isSafeInteger(v) || v < 0 || v > MAX_INDEX) {
        throw bad(`chunk ${what} ${v} out of range`);
      }
    }
    if (!Number.isInteger(c.crc) || c.crc < 0 || c.crc > 0xffff_ffff) {
      throw bad(`chunk crc ${c.crc} out of range`);
    }
    if (typeof c.last !== "boolean") throw bad("chunk last flag is not a boolean");
    if (c.offset > c.total) throw bad(`chunk offset ${c.offset} beyond total ${c.total}`);
    if (m.type !== "snap") return;
    const len = m.snapshot!.data.length;
    if (c.offset + len > c.total) {
      throw bad(`chunk [${c.offset}, ${c.offset + len}) beyond total ${c.total}`);
    }
    if (c.last !== (c.offset + len === c.total)) {
      throw bad(`chunk [${c.offset}, ${c.offset + len}) of ${c.total} with last=${c.last}`);
    }
    if (len === 0 && c.total > 0) throw bad("empty chunk of a non-empty snapshot");
    if (c.total > this.cfg.maxSnapshotBytes) {
      throw bad(
        `snapshot of ${c.total} bytes exceeds maxSnapshotBytes ${this.cfg.maxSnapshotBytes}`,
      );
    }
    if (c.offset === 0 && crc32(m.snapshot!.data) !== c.crc) {
      throw bad(`snapshot ${m.snapshot!.index} chunk at 0: checksum mismatch`);
    }
  }

  /**
   * Checks of a `snap` chunk against the transfer in progress, before anything changes: the
   * next chunk in order must continue the checksum, and a chunk that completes a snapshot
   * must carry data the application accepts (`checkSnapshot`).
   */
  private checkChunkAgainstState(m: Message, bad: (reason: string) => RaftMessageError): void {
    const s = m.snapshot!, c = m.chunk!;
    const inc = this.incoming;
    let whole: Uint8Array | null = null;
    if (c.offset === 0) {
      const installs = c.last && !this.isDone(m) && s.index > this.log.committed &&
        !this.log.matchTerm(s.index, s.term);
      if (installs) whole = s.data;
    } else if (inc && this.sameTransfer(inc, m) && c.offset === inc.received) {
      if (crc32(s.data, inc.crc) !== c.crc) {
        throw bad(`snapshot ${s.index} chunk at ${c.offset}: checksum mismatch`);
      }
      if (c.last) {
        inc.buf.set(s.data, c.offset); // past `received`: nothing observable changes
        whole = inc.buf;
      }
    }
    if (whole && this.checkSnapshot) {
      try {
        this.checkSnapshot(whole);
      } catch (e) {
        throw new RaftSnapshotDataError(
          this.id,
          m.from,
          `snapshot ${s.index}@${s.term} (${c.total} bytes) refused: ${(e as Error)?.message ?? e}`,
        );
      }
    }
  }

  private sameTransfer(inc: IncomingSnapshot, m: Message): boolean {
    return inc.from === m.from && inc.term === m.term && inc.seq === m.seq &&
      inc.index === m.snapshot!.index && inc.snapTerm === m.snapshot!.term &&
      inc.total === m.chunk!.total;
  }

  private isDone(m: Message): boolean {
    const d = this.lastDone;
    return d !== null && d.from === m.from && d.term === m.term && d.seq === m.seq;
  }

  /** Chunks covered by `offset` acknowledged bytes of transfer t (-1 if not a chunk end). */
  private chunksIn(t: SnapshotTransfer, offset: number): number {
    if (offset === t.snap.data.length) return t.chunks;
    const C = this.cfg.snapshotChunkBytes;
    return offset % C === 0 ? offset / C : -1;
  }

  private hsChanged(): HardState | null {
    const p = this.prevHs;
    if (p.term === this.term && p.vote === this.vote && p.commit === this.log.committed) {
      return null;
    }
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private ssChanged(): SoftState | null {
    const p = this.prevSs;
    if (p.lead === this.lead && p.role === this.role) return null;
    return { lead: this.lead, role: this.role };
  }

  private send(m: Message): void {
    if (m.term === 0) m.term = this.term;
    this.msgs.push(m);
  }

  private lastConfIndex(): number {
    return this.confHistory.length ? this.confHistory[this.confHistory.length - 1].index : 0;
  }

  private quorum(): number {
    return Math.floor(this.voters.size / 2) + 1;
  }

  /** Called by the log on every append: conf entries take effect as soon as they are appended. */
  private onAppend(ents: Entry[], truncatedAt: number): void {
    let changed = false;
    if (truncatedAt > 0 && this.confHistory.some((c) => c.index >= truncatedAt)) {
      this.confHistory = this.confHistory.filter((c) => c.index < truncatedAt);
      changed = true;
    }
    for (const e of ents) {
      if (e.type !== "conf") continue;
      const cur = this.confHistory.length
        ? this.confHistory[this.confHistory.length - 1].voters
        : this.log.snapConf.voters;
      this.confHistory.push({
        index: e.index,
        voters: applyConfChange(cur, decodeConfChange(e.data)),
      });
      changed = true;
    }
    if (changed) this.setVoters(this.confAt(Infinity).voters);
  }

  private setVoters(vs: NodeId[]): void {
    this.voters = new Set(vs);
    if (this.role !== "leader") return;
    for (const v of vs) {
      if (!this.prs.has(v)) {
        const p = new Progress();
        p.next = this.log.lastIndex() + 1;
        p.recentActive = true; // give it an election timeout before check-quorum counts it dead
        this.prs.set(v, p);
      }
    }
    for (const id of [...this.prs.keys()]) {
      if (!this.voters.has(id)) this.prs.delete(id);
    }
    if (this.leadTransferee !== null && !this.voters.has(this.leadTransferee)) {
      this.leadTransferee = null;
    }
  }

  /**
   * Whether this node may campaign: it is a voter, or it was a voter in the committed
   * configuration and its removal is not committed yet (Raft thesis §4.2.2: it may still be
   * needed, e.g. a removed leader holding the only up-to-date log).
   */
  private promotable(): boolean {
    if (this.voters.has(this.id)) return true;
    if (this.lastConfIndex() <= this.log.committed) return false;
    return this.confAt(this.log.committed).voters.includes(this.id);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
      this.incoming = null; // a new term's leader starts its own transfer
    }
    this.lead = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTick +
      Math.floor(this.cfg.rand() * this.cfg.electionTick);
    this.leadTransferee = null;
    this.pendingReplace = null;
    this.votes = new Map();
    this.prs = new Map();
    for (const v of this.voters) {
      const p = new Progress();
      p.next = this.log.lastIndex() + 1;
      if (v === this.id) p.match = this.log.lastIndex();
      this.prs.set(v, p);
    }
    this.pendingReads = [];
    this.readsBeforeCommit = [];
    this.readRoundPending = false;
  }

  private becomeFollower(term: number, lead: NodeId | null): void {
    this.reset(term);
    this.lead = lead;
    this.role = "follower";
  }

  private becomePreCandidate(): void {
    this.votes = new Map();
    this.lead = null;
    this.role = "precandidate";
  }

  private becomeCandidate(): void {
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
  }

  private becomeLeader(): void {
    this.reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    for (const p of this.prs.values()) p.recentActive = true;
    // The empty entry lets the leader commit entries of earlier terms (Figure 8 rule) and
    // serve ReadIndex as soon as it commits.
    this.appendEntry("normal", EMPTY);
  }

  private hup(transfer: boolean): void {
    if (this.role === "leader" || !this.promotable()) return;
    if (this.cfg.preVote && !transfer) this.campaignAs("pre", false);
    else this.campaignAs("real", transfer);
  }

  private campaignAs(kind: "pre" | "real", transfer: boolean): void {
    let term: number;
    if (kind === "pre") {
      this.becomePreCandidate();
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      term = this.term;
    }
    if (this.poll(this.id, true) === "won") {
      if (kind === "pre") this.campaignAs("real", false);
      else this.becomeLeader();
      return;
    }
    for (const v of [...this.voters].sort()) {
      if (v === this.id) continue;
      this.send(makeMessage({
        type: kind === "pre" ? "preVote" : "vote",
        from: this.id,
        to: v,
        term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        seq: transfer ? 1 : 0,
      }));
    }
  }

  private poll(from: NodeId, granted: boolean): "won" | "lost" | "pending" {
    if (!this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0, no = 0;
    for (const v of this.voters) {
      const g = this.votes.get(v);
      if (g === true) yes++;
      else if (g === false) no++;
    }
    if (yes >= this.quorum()) return "won";
    if (this.voters.size - no < this.quorum()) return "lost";
    return "pending";
  }

  private tickElection(): void {
    this.electionElapsed++;
    const inc = this.incoming;
    if (inc && ++inc.idle > 4 * (SNAPSHOT_STALLS + 1) * this.cfg.snapshotTimeoutTicks) {
      this.incoming = null; // the leader gave up on it long ago: free the buffer
    }
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTick) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        let active = 0;
        for (const [id, p] of this.prs) {
          if (id === this.id || p.recentActive) active++;
          if (id !== this.id) p.recentActive = false;
        }
        if (active < this.quorum()) {
          this.becomeFollower(this.term, null);
          return;
        }
      }
      this.leadTransferee = null; // transfer did not finish within an election timeout
    }
    for (const [id, p] of this.prs) {
      if (id === this.id) continue;
      const t = p.transfer;
      if (p.state === "snapshot" && t) {
        if (++t.idle < this.cfg.snapshotTimeoutTicks) continue;
        // Chunks (or their answers) were lost, or the follower is gone or still installing:
        // resend what is unacknowledged a few times, then give up and back off.
        t.idle = 0;
        if (++t.stalls > SNAPSHOT_STALLS) {
          this.snapshotFailed(p);
        } else {
          t.next = t.acked;
          this.snapshotStats.retransmits++;
          this.sendChunks(id, p);
        }
      } else if (p.snapshotBackoff > 0 && --p.snapshotBackoff === 0) {
        this.sendAppend(id);
      }
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTick) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat(this.readSeq);
    }
  }

  private checkProposable(op: string): void {
    if (this.role !== "leader") throw new NotLeaderError(this.id, this.lead, op);
    if (this.leadTransferee !== null) {
      throw new ProposalDroppedError(
        this.id,
        `leader transfer to ${this.leadTransferee} in progress`,
      );
    }
  }

  private appendEntry(type: "normal" | "conf", data: Uint8Array): number {
    const index = this.log.lastIndex() + 1;
    this.log.append([{ term: this.term, index, type, data }]);
    this.prs.get(this.id)?.maybeUpdate(index);
    this.maybeCommit();
    if (this.role === "leader") this.bcastAppend();
    return index;
  }

  /** Advances commit to the highest index stored on a quorum whose term is the current term. */
  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const v of this.voters) matches.push(this.prs.get(v)?.match ?? 0);
    matches.sort((a, b) => b - a);
    const mci = matches[this.quorum() - 1] ?? 0;
    if (mci > this.log.committed && this.log.term(mci) === this.term) {
      this.log.commitTo(mci);
      this.onLeaderCommit();
      return true;
    }
    return false;
  }

  private onLeaderCommit(): void {
    if (this.readsBeforeCommit.length) {
      const q = this.readsBeforeCommit;
      this.readsBeforeCommit = [];
      for (const r of q) this.handleReadIndex(r.from, r.ctx);
    }
    if (this.pendingReplace && this.log.committed >= this.pendingReplace.addIndex) {
      const { remove } = this.pendingReplace;
      this.pendingReplace = null;
      if (this.voters.has(remove) && this.leadTransferee === null) {
        this.appendEntry("conf", encodeConfChange({ type: "remove", node: remove }));
      }
    }
    if (!this.voters.has(this.id) && this.log.committed >= this.lastConfIndex()) {
      // Our removal is committed: tell followers the commit index, then step down.
      this.bcastAppend();
      this.becomeFollower(this.term, null);
    }
  }

  private sendAppend(to: NodeId, sendIfEmpty = true): boolean {
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused(this.cfg.maxInflight)) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) {
      const s = this.log.snapshot;
      if (!s) {
        throw new RaftInvariantError(`raft ${this.id}: no entry ${prevIndex} and no snapshot`);
      }
      if (pr.snapshotBackoff > 0) return false; // the last transfer failed: wait
      this.startSnapshot(to, pr, s);
      return true;
    }
    const ents = this.log.slice(
      pr.next,
      this.log.lastIndex() + 1,
      this.cfg.maxEntriesPerMsg,
      this.cfg.maxBytesPerMsg,
    );
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.send(makeMessage({
      type: "app",
      from: this.id,
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    }));
    if (pr.state === "replicate" && ents.length) {
      const last = ents[ents.length - 1].index;
      pr.next = last + 1;
      pr.inflights.push(last);
    } else if (pr.state === "probe") {
      pr.paused = true;
    }
    return true;
  }

  /** Starts a snapshot transfer to `to` (its progress goes to snapshot state until it ends). */
  private startSnapshot(to: NodeId, pr: Progress, s: Snapshot): void {
    pr.becomeSnapshot({
      snap: s,
      seq: ++this.snapSeq,
      chunks: Math.max(1, Math.ceil(s.data.length / this.cfg.snapshotChunkBytes)),
      next: 0,
      acked: 0,
      sent: 0,
      crcs: [],
      idle: 0,
      stalls: 0,
    });
    this.snapshotStats.sent++;
    this.sendChunks(to, pr);
  }

  /** Sends the chunks of `pr`'s transfer from `next` while the window allows. */
  private sendChunks(to: NodeId, pr: Progress): void {
    const t = pr.transfer!;
    const C = this.cfg.snapshotChunkBytes;
    const data = t.snap.data;
    while (t.next < t.chunks && t.next - t.acked < this.cfg.snapshotWindow) {
      const k = t.next;
      const lo = k * C;
      const bytes = data.subarray(lo, Math.min(lo + C, data.length));
      if (k === t.crcs.length) t.crcs.push(crc32(bytes, k === 0 ? 0 : t.crcs[k - 1]));
      this.send(makeMessage({
        type: "snap",
        from: this.id,
        to,
        seq: t.seq,
        snapshot: { index: t.snap.index, term: t.snap.term, conf: t.snap.conf, data: bytes },
        chunk: { offset: lo, total: data.length, crc: t.crcs[k], last: k === t.chunks - 1 },
      }));
      t.next++;
      t.sent = Math.max(t.sent, t.next);
      this.snapshotStats.chunksSent++;
    }
  }

  /** The transfer in flight to `pr` failed: probe again after a growing backoff. */
  private snapshotFailed(pr: Progress): void {
    pr.pendingSnapshot = 0;
    pr.becomeProbe();
    pr.snapshotFailures++;
    const e = this.cfg.electionTick;
    pr.snapshotBackoff = Math.min(
      e * 2 ** Math.min(pr.snapshotFailures - 1, 20),
      e * SNAPSHOT_BACKOFF_MAX,
    );
    this.snapshotStats.failed++;
  }

  private bcastAppend(): void {
    for (const id of this.prs.keys()) if (id !== this.id) this.sendAppend(id);
  }

  private bcastHeartbeat(seq: number): void {
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      this.send(makeMessage({
        type: "heartbeat",
        from: this.id,
        to: id,
        commit: Math.min(pr.match, this.log.committed),
        seq,
      }));
    }
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send(makeMessage({ type: "timeoutNow", from: this.id, to }));
  }

  private handleReadIndex(from: NodeId, ctx: Uint8Array): void {
    if (this.log.term(this.log.committed) !== this.term) {
      // Until an entry of this term commits we do not know the true commit index.
      this.readsBeforeCommit.push({ from, ctx });
      return;
    }
    if (this.voters.size === 1 && this.voters.has(this.id)) {
      this.respondRead(from, this.log.committed, ctx);
      return;
    }
    // Reads arriving before the next ready() share one heartbeat round (sent by ready()).
    if (!this.readRoundPending) {
      this.readSeq++;
      this.readRoundPending = true;
    }
    this.pendingReads.push({ seq: this.readSeq, index: this.log.committed, from, ctx });
  }

  private respondRead(from: NodeId, index: number, ctx: Uint8Array): void {
    if (from === this.id) this.readStates.push({ index, ctx });
    else this.send(makeMessage({ type: "readIndexResp", from: this.id, to: from, index, ctx }));
  }

  /** Releases reads whose heartbeat round was acknowledged by a quorum of this term. */
  private checkReads(): void {
    if (this.pendingReads.length === 0) return;
    const acks: number[] = [];
    for (const v of this.voters) {
      acks.push(v === this.id ? this.readSeq : this.prs.get(v)?.readAck ?? 0);
    }
    acks.sort((a, b) => b - a);
    const q = acks[this.quorum() - 1] ?? 0;
    while (this.pendingReads.length && this.pendingReads[0].seq <= q) {
      const r = this.pendingReads.shift()!;
      this.respondRead(r.from, r.index, r.ctx);
    }
  }

  private stepLeader(m: Message): void {
    const pr = this.prs.get(m.from);
    switch (m.type) {
      case "readIndex":
        this.handleReadIndex(m.from, m.ctx);
        return;
      case "app":
      case "heartbeat":
      case "snap":
        throw new RaftInvariantError(
          `raft ${this.id}: leader of term ${this.term} got ${m.type} from ${m.from} of the same term`,
        );
      case "appResp": {
        if (!pr) return;
        pr.recentActive = true;
        if (m.reject) {
          let hint = m.rejectHint;
          if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm)[0];
          if (pr.maybeDecrTo(m.index, hint)) {
            if (pr.state === "replicate") pr.becomeProbe();
            this.sendAppend(m.from);
          }
          return;
        }
        const oldPaused = pr.isPaused(this.cfg.maxInflight);
        // A probe acknowledged at exactly match (empty append) also proves where we are.
        if (pr.maybeUpdate(m.index) || (pr.match === m.index && pr.state === "probe")) {
          if (pr.state === "probe") pr.becomeReplicate();
          else if (pr.state === "snapshot" && pr.match >= pr.pendingSnapshot) pr.becomeReplicate();
          else if (pr.state === "replicate") pr.inflights = pr.inflights.filter((i) => i > m.index);
          if (this.maybeCommit()) {
            if (this.role !== "leader") return;
            this.bcastAppend();
          } else if (oldPaused) {
            this.sendAppend(m.from);
          }
          // Keep the pipeline full.
          while (this.prs.has(m.from) && this.sendAppend(m.from, false)) {
            if (this.prs.get(m.from)!.state !== "replicate") break;
          }
          if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
            this.sendTimeoutNow(m.from);
          }
        }
        return;
      }
      case "snapResp": {
        if (!pr) return;
        pr.recentActive = true;
        const t = pr.transfer;
        if (pr.state !== "snapshot" || !t || m.seq !== t.seq || m.index !== t.snap.index) return;
        if (m.reject) {
          // The follower holds none of it (it restarted or dropped it): start over from 0.
          if (++t.stalls > SNAPSHOT_STALLS) {
            this.snapshotFailed(pr);
            return;
          }
          t.acked = 0;
          t.next = 0;
          t.idle = 0;
          this.sendChunks(m.from, pr);
          return;
        }
        const k = this.chunksIn(t, m.chunk!.offset); // checked against `sent` by checkMessage
        if (k <= t.acked) return; // duplicate or reordered answer
        t.acked = k;
        t.next = Math.max(t.next, k);
        t.idle = 0;
        t.stalls = 0;
        this.sendChunks(m.from, pr);
        return;
      }
      case "heartbeatResp": {
        if (!pr) return;
        pr.recentActive = true;
        pr.paused = false;
        // Appends in flight may have been lost: let one more through so a gap gets rejected
        // and we fall back to probing instead of waiting forever on a full window.
        if (pr.state === "replicate" && pr.inflights.length >= this.cfg.maxInflight) {
          pr.inflights.shift();
        }
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
        if (m.seq > pr.readAck) {
          pr.readAck = m.seq;
          this.checkReads();
        }
        return;
      }
      default:
        return; // stale vote responses, timeoutNow, etc.
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case "app":
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case "heartbeat":
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case "snap":
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case "voteResp":
      case "preVoteResp": {
        if ((m.type === "voteResp") !== (this.role === "candidate")) return;
        const r = this.poll(m.from, !m.reject);
        if (r === "won") {
          if (this.role === "precandidate") this.campaignAs("real", false);
          else this.becomeLeader();
        } else if (r === "lost") {
          this.becomeFollower(this.term, null);
        }
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case "app":
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case "heartbeat":
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case "snap":
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case "timeoutNow":
        this.hup(true);
        return;
      default:
        return;
    }
  }

  private handleAppend(m: Message): void {
    const resp = (p: Partial<Message>) =>
      this.send(makeMessage({ type: "appResp", from: this.id, to: m.from, ...p }));
    if (m.index < this.log.committed) {
      resp({ index: this.log.committed });
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew >= 0) {
      resp({ index: lastNew });
      return;
    }
    const [hintIndex, hintTerm] = this.log.findConflictByTerm(
      Math.min(m.index, this.log.lastIndex()),
      m.logTerm,
    );
    resp({ index: m.index, reject: true, rejectHint: hintIndex, logTerm: hintTerm });
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(m.commit);
    this.send(makeMessage({ type: "heartbeatResp", from: this.id, to: m.from, seq: m.seq }));
  }

  /**
   * One chunk of a snapshot transfer (validated by checkMessage). Chunks are taken in order
   * into one buffer of the announced size; each is acknowledged (snapResp: bytes received in
   * order and their CRC), duplicates and gaps are answered with how far we are, a chunk of a
   * transfer we do not know with a reject (the leader starts over). The chunk that completes
   * the data (length and whole checksum verified) installs the snapshot.
   */
  private handleSnapshot(m: Message): void {
    const s = m.snapshot!, c = m.chunk!;
    if (this.isDone(m)) {
      // A retransmitted or duplicated chunk of a snapshot already received: answer like its end.
      this.snapshotStats.chunksIgnored++;
      this.respondCommit(m.from);
      return;
    }
    let inc = this.incoming;
    if (!inc || !this.sameTransfer(inc, m)) {
      if (c.offset > 0) {
        this.snapshotStats.chunksIgnored++;
        this.snapResp(m, 0, 0, true);
        return;
      }
      if (s.index <= this.log.committed || this.log.matchTerm(s.index, s.term)) {
        // Nothing to transfer: we have it (or more) already. Its other chunks get the same
        // answer (in case this one is lost), not a reject.
        this.log.commitTo(s.index);
        this.lastDone = { from: m.from, term: m.term, seq: m.seq };
        this.respondCommit(m.from);
        return;
      }
      inc = this.incoming = {
        from: m.from,
        term: m.term,
        seq: m.seq,
        index: s.index,
        snapTerm: s.term,
        conf: { voters: [...s.conf.voters] },
        total: c.total,
        buf: new Uint8Array(c.total),
        received: 0,
        crc: 0,
        idle: 0,
      };
    }
    if (c.offset !== inc.received) {
      this.snapshotStats.chunksIgnored++;
      this.snapResp(m, inc.received, inc.crc, false);
      return;
    }
    inc.buf.set(s.data, c.offset);
    inc.received += s.data.length;
    inc.crc = c.crc; // checkMessage verified crc32(chunk, previous crc) === c.crc
    inc.idle = 0;
    if (!c.last) {
      this.snapResp(m, inc.received, inc.crc, false);
      return;
    }
    this.incoming = null;
    this.lastDone = { from: m.from, term: m.term, seq: m.seq };
    this.snapshotStats.received++;
    this.installSnapshot(m.from, { index: s.index, term: s.term, conf: inc.conf, data: inc.buf });
  }

  private snapResp(m: Message, offset: number, crc: number, reject: boolean): void {
    this.send(makeMessage({
      type: "snapResp",
      from: this.id,
      to: m.from,
      index: m.snapshot!.index,
      seq: m.seq,
      reject,
      chunk: { offset, total: m.chunk!.total, crc, last: false },
    }));
  }

  private installSnapshot(from: NodeId, s: Snapshot): void {
    if (s.index > this.log.committed) {
      if (this.log.matchTerm(s.index, s.term)) {
        this.log.commitTo(s.index); // we already have it all: just fast-forward commit
      } else {
        this.log.restore(s);
        this.confHistory = [];
        this.setVoters(s.conf.voters);
        this.pendingInstall = s;
      }
    }
    this.respondCommit(from);
  }

  /** Answers a leader with our commit index, never lastIndex: an uncommitted tail may not match. */
  private respondCommit(to: NodeId): void {
    this.send(makeMessage({ type: "appResp", from: this.id, to, index: this.log.committed }));
  }
}
