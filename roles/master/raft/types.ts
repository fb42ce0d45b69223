/**
 * Data types shared by the Raft core, its codec, its storage and the simulation.
 * Everything here is plain data (no classes except errors) so it can be copied,
 * encoded and compared freely.
 */

/** Identifier of a Raft member (dsys uses node UUID strings). */
export type NodeId = string;

/** Kind of a log entry: application data, or a membership change (see {@link ConfChange}). */
export type EntryType = "normal" | "conf";

/** One replicated log entry. `index` starts at 1; `term` is the leader term that created it. */
export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque application bytes (normal) or an encoded {@link ConfChange} (conf). */
  data: Uint8Array;
}

/** The voting membership of the cluster. */
export interface ConfState {
  voters: NodeId[];
}

/**
 * A membership change carried in a "conf" entry. Single-server changes only: "init" is written
 * once at bootstrap as entry 1; "add"/"remove" change one voter; a replace is an add followed
 * (after it commits) by a remove, which {@link RawNode.proposeConfChange} sequences for you.
 */
export type ConfChange =
  | { type: "init"; voters: NodeId[] }
  | { type: "add"; node: NodeId }
  | { type: "remove"; node: NodeId };

/** A state-machine snapshot covering the log up to and including `index`. */
export interface Snapshot {
  index: number;
  term: number;
  conf: ConfState;
  data: Uint8Array;
}

/** State that must be persisted (fsync'd) before the messages of the same Ready are sent. */
export interface HardState {
  term: number;
  vote: NodeId | null;
  commit: number;
}

/** Role of a node. "precandidate" is the pre-vote phase that does not bump the term. */
export type Role = "follower" | "precandidate" | "candidate" | "leader";

/** Volatile state reported when it changes (no need to persist). */
export interface SoftState {
  lead: NodeId | null;
  role: Role;
}

/** Result of a ReadIndex request: serve the read once `applied >= index`. */
export interface ReadState {
  index: number;
  ctx: Uint8Array;
}

/** All message types exchanged between Raft members, in wire-code order (code = index + 1). */
export const MESSAGE_TYPES = [
  "app",
  "appResp",
  "vote",
  "voteResp",
  "preVote",
  "preVoteResp",
  "heartbeat",
  "heartbeatResp",
  "snap",
  "timeoutNow",
  "readIndex",
  "readIndexResp",
  "snapResp",
] as const;

/** A message type exchanged between Raft members. */
export type MessageType = typeof MESSAGE_TYPES[number];

/**
 * A message between members. Unused fields are 0 / false / empty; which fields matter per type:
 * - app: index/logTerm of the entry preceding `entries`, commit.
 * - appResp: index (last matching index on success, rejected index on reject), reject,
 *   rejectHint + logTerm (conflict hint for fast backtracking).
 * - vote/preVote: index/logTerm of the candidate's last entry; seq=1 when campaigning for a
 *   leader transfer (ignores the leader lease).
 * - heartbeat: commit, seq (ReadIndex round); heartbeatResp echoes seq.
 * - snap: one chunk of a snapshot transfer: snapshot (index, term, conf of the whole; `data` is
 *   this chunk's bytes), chunk (where they sit in the whole), seq (the leader's transfer number).
 * - snapResp: how much of transfer `seq` of snapshot `index` arrived (chunk.offset: bytes
 *   received in order, chunk.crc: their CRC-32); reject: the follower does not know that
 *   transfer (restart the transfer).
 * - readIndex/readIndexResp: ctx, index.
 */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  rejectHint: number;
  seq: number;
  ctx: Uint8Array;
  snapshot: Snapshot | null;
  /** snap / snapResp only: see {@link SnapshotChunk}. */
  chunk: SnapshotChunk | null;
}

/**
 * Position of a `snap` message's bytes in the snapshot being transferred (etcd streams
 * snapshots the same way: a snapshot never has to fit in one message). In a `snapResp` it
 * says how far the follower got: `offset` = bytes received in order, `crc` = their CRC-32.
 */
export interface SnapshotChunk {
  /** Where this chunk's bytes start in the snapshot data. */
  offset: number;
  /** Length of the whole snapshot data, bytes. */
  total: number;
  /** CRC-32 of the snapshot data up to the end of this chunk ([0, offset + length)). */
  crc: number;
  /** This is the final chunk (offset + length === total). */
  last: boolean;
}

/** Builds a message with all unspecified fields zeroed. */
export function makeMessage(
  m: Pick<Message, "type" | "from" | "to"> & Partial<Message>,
): Message {
  return {
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    seq: 0,
    ctx: EMPTY,
    snapshot: null,
    chunk: null,
    ...m,
  };
}

/** Shared empty byte array (never mutated). */
export const EMPTY: Uint8Array = new Uint8Array(0);

/**
 * Output of {@link RawNode.ready}. Process in this order (etcd contract):
 * 1. persist `snapshot` (if any), then `entries` (they replace any stored entries with index
 *    >= entries[0].index), then `hardState` (if any) — and fsync;
 * 2. send `messages`;
 * 3. install `snapshot` into the state machine, then apply `committedEntries` in order;
 * 4. serve `readStates` whose index is applied; 5. call advance().
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
}

/** State recovered from durable storage, handed to a restarting node. */
export interface PersistedState {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

/** Base class of all Raft errors (errors are values carrying context). */
export class RaftError extends Error {
  /** Creates an error with a message that names the ids involved. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The operation needs the leader; `leader` is the known leader (null if unknown). */
export class NotLeaderError extends RaftError {
  /** @param node this node @param leader the leader this node knows, if any */
  constructor(readonly node: NodeId, readonly leader: NodeId | null, op: string) {
    super(`raft ${node}: ${op} needs the leader; leader is ${leader ?? "unknown"}`);
  }
}

/** A proposal was refused (leader transfer in progress, conf change pending, invalid change). */
export class ProposalDroppedError extends RaftError {
  /** @param node this node @param reason why it was dropped */
  constructor(readonly node: NodeId, readonly reason: string) {
    super(`raft ${node}: proposal dropped: ${reason}`);
  }
}

/** The caller broke the API contract (e.g. ready() twice without advance(), bad compaction). */
export class RaftUsageError extends RaftError {}

/** An invariant of the Raft algorithm was violated — a bug or corrupted storage. */
export class RaftInvariantError extends RaftError {}

/**
 * A message handed to {@link RawNode.step} is impossible (out-of-range numbers, entries that do
 * not follow, a commit index beyond what the sender can know...). It was refused before it
 * changed any state: drop it (and count it). A RaftUsageError, since feeding it is misuse.
 */
export class RaftMessageError extends RaftUsageError {
  /** @param node this node @param from the claimed sender @param reason what is wrong */
  constructor(readonly node: NodeId, readonly from: NodeId, readonly reason: string) {
    super(`raft ${node}: refused message from ${from}: ${reason}`);
  }
}

/**
 * A `snap` chunk completed a snapshot whose data the application's check
 * (`RaftConfig.checkSnapshot`) refused: nothing was installed (or changed).
 */
export class RaftSnapshotDataError extends RaftMessageError {}

/**
 * Largest term a message may carry. Terms grow by one per election, so 2^40 is out of reach
 * of a real cluster; the bound keeps `term + 1` far from 2^53 (where numbers stop being exact)
 * whatever a peer sends.
 */
export const MAX_TERM = 2 ** 40;

/** Largest log index a message may carry (2^48: far beyond any real log, exact arithmetic). */
export const MAX_INDEX = 2 ** 48;

/** Cheap production assertion (TigerBeetle style): a false `cond` is a bug, never input. */
export function invariant(cond: boolean, message: () => string): asserts cond {
  if (!cond) throw new RaftInvariantError(message());
}

/**
 * Which of a Ready's messages may leave before its entries are durable (Raft thesis §10.2.1: the
 * leader writes to its disk in parallel with replicating to the followers), and which only after.
 *
 * Early: the leader's `app` messages, when this Ready changes neither term nor vote and carries no
 * snapshot. Why that is safe: a follower stores and acknowledges the entries on its own disk; the
 * leader counts itself in the quorum at append, but the commit index that follows from those
 * acknowledgements leaves the leader (in messages) and reaches its state machine (committed
 * entries) only in a later Ready, which the caller takes only after this one is persisted and
 * advanced. So nothing is committed that is durable on less than a quorum, and the commit index of
 * an early `app` covers only entries of earlier, persisted Readies. Everything else waits: a vote
 * or a follower's acknowledgement must never precede the term, vote or entries it vouches for.
 *
 * `termOrVoteChanged`: the Ready's hard state differs from the stored one in term or vote.
 */
export function splitReadyMessages(
  rd: Ready,
  self: NodeId,
  isLeader: boolean,
  termOrVoteChanged: boolean,
): { early: Message[]; late: Message[] } {
  if (!isLeader || termOrVoteChanged || rd.snapshot !== null || rd.entries.length === 0) {
    return { early: [], late: rd.messages };
  }
  const early: Message[] = [];
  const late: Message[] = [];
  for (const m of rd.messages) (m.type === "app" && m.from === self ? early : late).push(m);
  return { early, late };
}
