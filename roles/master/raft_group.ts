/**
 * The Raft I/O shell of a master: drives the pure `RawNode` (roles/master/raft/) with a clock,
 * ZeroMQ transport and durable storage, and implements `ReplicatedLog` for the master service.
 *
 * Member ids are `name@endpoint` (e.g. `m1@tcp://127.0.0.1:7101`): the id says where the member
 * listens, so a membership change entry is all a member needs to reach a new peer. A master that
 * lost its disk must come back under a new name (remove + add), never reuse its old id: it would
 * have forgotten its vote.
 *
 * The Ready loop follows the etcd contract: persist (fsync) entries, hard state and snapshot; then
 * send messages; then apply committed entries and resolve the proposals waiting on them.
 *
 * Snapshots travel in chunks (`snap` messages of at most `snapshotChunkBytes`, 1 MiB by default),
 * so a snapshot never has to fit in one `raft_message`: the core chunks, windows, acknowledges,
 * retries and verifies (roles/master/raft/README.md, "Snapshot transfer"); this shell only sends
 * and receives the chunks, and counts them ({@link RaftGroup.stats}).
 *
 * Trust boundary: nothing that arrives from the network can stop a member. {@link RaftGroup.receive}
 * validates every `raft_message` (codec, recipient, sender id and membership, the optional
 * authenticated sender name, read contexts, member ids inside payloads, then the core's own
 * checks in `RawNode.step`) and drops a bad one with a count and a throttled warning; an error
 * while stepping one message is contained there too. The only endpoints this member ever
 * connects to are member ids that passed the strict grammar of member_id.ts, and only members
 * of a configuration it knows. The Ready loop then only ever sees the core's output: a
 * {@link RaftStorageError} there means durability is gone (fatal, as before); anything else is
 * a bug that may have left a Ready half done (fatal as well, reported as a bug; see #fail).
 */
import {
  type ConfChangeRequest,
  decodeConfChange,
  type Entry,
  type HardState,
  invariant,
  type Message as RaftMsg,
  mulberry32,
  NotLeaderError,
  RaftError,
  RaftSnapshotDataError,
  RawNode,
  type Ready,
  type Snapshot,
  type SnapshotStats,
  splitReadyMessages,
} from "./raft/mod.ts";
import {
  decodeMessage as decodeRaftMessage,
  encodeMessage as encodeRaftMessage,
} from "./raft/codec.ts";
import { type FileStorage, RaftStorageError } from "./raft/storage.ts";
import { ErrorCode, MessageType } from "../../wire/mod.ts";
import { RequestError } from "../../lib/rpc.ts";
import { type Clock, systemClock, type TimerId } from "../../lib/clock.ts";
import { type Dial, dialZmq, type RequestChannel } from "../../lib/transport.ts";
import type { Logger } from "../../lib/log.ts";
import type { ApplyResult } from "./job_table.ts";
import type { ReplicatedLog } from "./replicated_log.ts";
import { parseMemberId } from "./member_id.ts";
import type { RaftMetrics } from "./metrics.ts";

/** A peer silent this long gets a fresh client (see RaftGroup#refreshSilentPeers), ms. */
const PEER_SILENCE_MS = 5000;

/** Bytes of a ReadIndex context (the read's sequence number as a float64). */
export const READ_CTX_BYTES = 8;

/**
 * Message types an unconfigured member (a joiner that has not heard from the leader yet, so it
 * knows no member at all) accepts from a well-formed member id it does not know: the leader's.
 */
const JOINER_ACCEPTS: ReadonlySet<string> = new Set(["app", "heartbeat", "snap"]);

/** Most peer connections an unconfigured joiner opens to senders it cannot check. */
const MAX_UNKNOWN_PEERS = 8;

/** Minimum interval between two warnings of the same drop reason, ms. */
const WARN_EVERY_MS = 1000;

/**
 * Environment variable that sets {@link RaftGroupOptions.snapshotChunkBytes} when the option is
 * not given (tests use it to make a small snapshot span many chunks in real master processes).
 */
export const SNAPSHOT_CHUNK_ENV = "DSYS_RAFT_SNAPSHOT_CHUNK_BYTES";

/** The chunk size asked for by {@link SNAPSHOT_CHUNK_ENV}, if it is set to a sane value. */
function chunkBytesFromEnv(log: Logger): number | undefined {
  let v: string | undefined;
  try {
    v = Deno.env.get(SNAPSHOT_CHUNK_ENV);
  } catch {
    return undefined; // no env permission: the default
  }
  if (v === undefined) return undefined;
  const n = Number(v);
  if (Number.isSafeInteger(n) && n >= 1 && n <= 16 << 20) return n;
  log.warn(`ignoring ${SNAPSHOT_CHUNK_ENV}: not an integer in [1, 16 MiB]`, { value: v });
  return undefined;
}

/** The state machine the group replicates. */
export interface StateMachine {
  /** Applies one committed command. */
  apply(data: Uint8Array): ApplyResult;
  /** Serializes the whole state (for compaction). */
  snapshot(): Uint8Array;
  /** Replaces the state with a snapshot's. */
  restore(data: Uint8Array): void;
  /**
   * Optional: throws if `data` is not a snapshot {@link restore} would accept. Checked before a
   * peer's `snap` message reaches the core, so a snapshot that cannot be installed is dropped
   * (and counted) instead of failing the Ready loop after it was persisted.
   */
  checkSnapshot?(data: Uint8Array): void;
}

/** Options of a RaftGroup. */
export interface RaftGroupOptions {
  /** This member's id, `name@endpoint`. */
  id: string;
  /** Initial voters (ids) when bootstrapping a new group; ignored when state exists. */
  peers: string[];
  /** Start as a joiner: no bootstrap, wait for the leader to add and contact this member. */
  join: boolean;
  storage: FileStorage;
  sm: StateMachine;
  /** This master's node uuid (for wire headers). */
  node: Uint8Array;
  log: Logger;
  /** Milliseconds per Raft tick. */
  tickMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  /** Take a snapshot and compact after this many applied entries. */
  snapshotEvery?: number;
  /**
   * Bytes of snapshot data per `snap` message (default: `$DSYS_RAFT_SNAPSHOT_CHUNK_BYTES`, else
   * 1 MiB). Keep it well under the wire's `maxRaft`.
   */
  snapshotChunkBytes?: number;
  /** Largest snapshot this member accepts from a leader, bytes (default 1 GiB). */
  maxSnapshotBytes?: number;
  /**
   * Called when the member had to stop: the process should exit (and be restarted). `kind`
   * "storage": a {@link RaftStorageError} (durability is gone); "internal": a bug in the Ready
   * loop that may have left this member's state half updated. Never called because of a
   * message from the network.
   */
  onFatal?: (e: unknown, kind: "storage" | "internal") => void;
  /** Where fsync latencies and leader changes are counted (`--metrics-listen`). */
  metrics?: RaftMetrics;
  /** Time and timers (default: the process's; the simulator passes virtual time). */
  clock?: Clock;
  /** How connections to peers are made (default: ZeroMQ). */
  dial?: Dial;
  /**
   * Seed of the election-timeout randomness (default: a fresh random one per start, so members
   * never share it; the simulator passes one drawn from its seed for exact replay).
   */
  seed?: number;
}

interface Pending {
  term: number;
  resolve: (r: ApplyResult) => void;
  reject: (e: unknown) => void;
}

interface PendingRead {
  resolve: () => void;
  reject: (e: unknown) => void;
  index: number;
  timer: TimerId;
}

/** A master's member of the Raft group. */
export class RaftGroup implements ReplicatedLog {
  readonly id: string;
  readonly node: RawNode;
  #o: RaftGroupOptions;
  #peers = new Map<string, RequestChannel>();
  /** When each peer's client was made, and when a valid message last came from that peer. */
  #peerBuiltAt = new Map<string, number>();
  #heardFrom = new Map<string, number>();
  #lastPeerCheck = 0;
  #pending = new Map<number, Pending>();
  #reads = new Map<string, PendingRead>();
  #readWaiters: PendingRead[] = [];
  #confWaiters = new Map<number, Pending>();
  #applied = 0;
  #snapIndex = 0;
  #leader: string | null = null;
  #role = "follower";
  #term = 0;
  #busy = false;
  #again = false;
  #closed = false;
  #ticker: TimerId | undefined;
  #readSeq = 0;
  /** Term and vote as last written to storage. */
  #storedHs: HardState = { term: 0, vote: null, commit: 0 };
  #dropped = 0;
  #dropReasons = new Map<string, number>();
  #lastWarn = new Map<string, { at: number; suppressed: number }>();
  /** Applied index at which the next snapshot may be attempted. */
  #nextSnapshotAt = 0;
  /** Counters for tests and status. */
  readonly stats = {
    readies: 0,
    persisted: 0,
    sent: 0,
    applied: 0,
    snapshots: 0,
    /** Outbound messages not sent: bad destination, connect or encode failure. */
    sendFailures: 0,
    /** Snapshots (compactions) that failed without a storage error and were skipped. */
    snapshotFailures: 0,
    /** Snapshot transfers started by this member as leader (first chunk sent to a follower). */
    snapshotsSent: 0,
    /** Snapshot chunks sent (retransmissions included) and their data bytes. */
    snapshotChunksSent: 0,
    snapshotBytesSent: 0,
  };
  /** Snapshot transfers failed so far, as last logged. */
  #loggedTransferFailures = 0;
  /** Per follower, the number of the last snapshot transfer started to it. */
  #transfers = new Map<string, number>();

  #clock: Clock;
  #dial: Dial;

  private constructor(o: RaftGroupOptions, node: RawNode, applied: number) {
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
    this.#dial = o.dial ?? dialZmq;
    this.id = o.id;
    this.node = node;
    this.#applied = applied;
    this.#snapIndex = applied;
  }

  /** Loads durable state and starts the member. */
  static start(o: RaftGroupOptions): RaftGroup {
    const restored = o.storage.initialState();
    const hasState = restored.snapshot !== null || restored.entries.length > 0 ||
      restored.hardState.term > 0;
    let applied = 0;
    if (restored.snapshot) {
      o.sm.restore(restored.snapshot.data);
      applied = restored.snapshot.index;
    }
    // The randomness of election timeouts is seeded per member and start, never shared.
    const seed = o.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
    const node = new RawNode({
      id: o.id,
      electionTick: o.electionTicks ?? 20,
      heartbeatTick: o.heartbeatTicks ?? 4,
      rand: mulberry32(seed),
      peers: hasState || o.join ? undefined : o.peers,
      restore: hasState ? restored : undefined,
      applied,
      snapshotChunkBytes: o.snapshotChunkBytes ?? chunkBytesFromEnv(o.log),
      maxSnapshotBytes: o.maxSnapshotBytes,
      // A snapshot from a peer is checked by the state machine once it arrived whole, before it
      // is stored: one that cannot be restored is refused ("bad snapshot data") instead of
      // failing the Ready loop after it was persisted.
      checkSnapshot: o.sm.checkSnapshot ? (data) => o.sm.checkSnapshot!(data) : undefined,
    });
    const g = new RaftGroup(o, node, applied);
    g.#storedHs = restored.hardState;
    g.#ticker = g.#clock.setInterval(() => {
      try {
        g.node.tick();
      } catch (e) {
        // tick() takes no input: an error is a bug in the core, whose state is now unknown.
        void g.#fail(e);
        return;
      }
      g.#refreshSilentPeers();
      g.#kick();
    }, o.tickMs ?? 15);
    g.#kick();
    o.log.info("raft member started", {
      id: o.id,
      restored: hasState,
      join: o.join,
      applied,
      lastIndex: node.log.lastIndex(),
    });
    return g;
  }

  /**
   * Feeds the payload of a `raft_message` from a peer. Never throws: a message that does not
   * decode, is not for this member, comes from an id that is not a well-formed member id or
   * not a member of a configuration this member knows, or carries anything impossible (see
   * {@link RawNode.step}) is dropped, counted in {@link droppedMessages} and logged (warn,
   * throttled per reason).
   *
   * @param data the `raft_message` payload (the encoded Raft message)
   * @param senderName the authenticated name of the peer that sent the frame (its CURVE key's
   *   name), if the transport knows it: the message's `from` member id must then be
   *   `senderName@…`, else it is dropped. Omit it when the transport does not authenticate.
   */
  receive(data: Uint8Array, senderName?: string): void {
    if (this.#closed) return;
    let m: RaftMsg;
    try {
      m = decodeRaftMessage(data);
    } catch (e) {
      this.#drop("malformed", { error: e, bytes: data.length });
      return;
    }
    const reason = this.#checkInbound(m, senderName);
    if (reason !== null) {
      this.#drop(reason, { type: m.type, from: m.from.slice(0, 100), to: m.to.slice(0, 100) });
      return;
    }
    this.#heardFrom.set(m.from, this.#clock.monotonic());
    try {
      this.node.step(m);
    } catch (e) {
      // The step boundary: whatever one message causes stays with that message. The core
      // refuses impossible messages (RaftMessageError) before changing any state.
      const bug = !(e instanceof RaftError);
      const reason = bug
        ? "step failed"
        : e instanceof RaftSnapshotDataError
        ? "bad snapshot data"
        : "refused by raft";
      this.#drop(reason, { type: m.type, from: m.from, error: e });
      if (bug) this.#o.log.error("raft step threw an unexpected error", { error: e });
      return;
    }
    this.#kick();
  }

  /** Inbound messages dropped so far (every reason). */
  get droppedMessages(): number {
    return this.#dropped;
  }

  /** Dropped inbound messages by reason (e.g. "unknown member", "malformed"). */
  get dropReasons(): ReadonlyMap<string, number> {
    return this.#dropReasons;
  }

  /** Why a decoded message must be dropped, or null if it may be stepped. */
  #checkInbound(m: RaftMsg, senderName: string | undefined): string | null {
    if (m.to !== this.id) return "wrong recipient"; // e.g. for a previous incarnation
    const from = parseMemberId(m.from);
    if (!from) return "bad sender id";
    if (m.from === this.id) return "from self";
    if (senderName !== undefined && from.name !== senderName) return "sender name mismatch";
    // Members of the configurations the log holds (the bootstrap list is entry 1 of a fresh
    // group): a removed member stays known until its removal is compacted away.
    const members = this.node.members();
    if (!members.has(m.from)) {
      // A joiner knows no configuration until the leader reaches it: it has to take the
      // leader's messages on trust of the id's shape (and of senderName, when given).
      if (members.size > 0 || !JOINER_ACCEPTS.has(m.type)) return "unknown member";
    }
    const isRead = m.type === "readIndex" || m.type === "readIndexResp";
    if (m.ctx.length !== (isRead ? READ_CTX_BYTES : 0)) return "bad read context";
    for (const e of m.entries) {
      if (e.type !== "conf") continue;
      let ids: string[];
      try {
        const cc = decodeConfChange(e.data);
        ids = cc.type === "init" ? cc.voters : [cc.node];
      } catch {
        return "bad conf entry";
      }
      if (!ids.every((id) => parseMemberId(id) !== null)) return "bad member id in conf entry";
    }
    // Every chunk names the snapshot's voters. Its data is checked (sm.checkSnapshot) by the
    // core once the last chunk completed it: see RaftGroup.start.
    if (m.snapshot && !m.snapshot.conf.voters.every((id) => parseMemberId(id) !== null)) {
      return "bad member id in snapshot";
    }
    return null;
  }

  /** Counts a dropped inbound message and warns (at most once a second per reason). */
  #drop(reason: string, fields: Record<string, unknown>): void {
    this.#dropped++;
    this.#dropReasons.set(reason, (this.#dropReasons.get(reason) ?? 0) + 1);
    this.#warnThrottled(`dropped raft message: ${reason}`, fields);
  }

  #warnThrottled(msg: string, fields: Record<string, unknown>): void {
    const now = this.#clock.monotonic();
    const w = this.#lastWarn.get(msg);
    if (w && now - w.at < WARN_EVERY_MS) {
      w.suppressed++;
      return;
    }
    this.#lastWarn.set(msg, { at: now, suppressed: 0 });
    this.#o.log.warn(msg, { ...fields, suppressedSinceLast: w?.suppressed ?? 0 });
  }

  isLeader(): boolean {
    return this.#role === "leader";
  }

  /** The leader's member id `NAME@ENDPOINT` (the NOT_LEADER hint; names its key), or "". */
  leaderEndpoint(): string {
    return this.#leader ?? "";
  }

  /** The current leader's id, if known. */
  get leaderId(): string | null {
    return this.#leader;
  }

  /** Current term. */
  get term(): number {
    return this.#term;
  }

  /** Index of the last applied entry. */
  get applied(): number {
    return this.#applied;
  }

  propose(data: Uint8Array): Promise<ApplyResult> {
    if (this.#role !== "leader") return Promise.reject(this.#notLeader());
    let index: number;
    try {
      index = this.node.propose(data);
    } catch (e) {
      return Promise.reject(this.#translate(e));
    }
    const { promise, resolve, reject } = Promise.withResolvers<ApplyResult>();
    this.#pending.set(index, { term: this.#currentTerm(), resolve, reject });
    this.#kick();
    return promise;
  }

  /** Adds or removes one master; resolves once the change is committed. */
  changeMembership(req: ConfChangeRequest): Promise<void> {
    if (this.#role !== "leader") return Promise.reject(this.#notLeader());
    let index: number;
    try {
      index = this.node.proposeConfChange(req);
    } catch (e) {
      return Promise.reject(this.#translate(e));
    }
    const { promise, resolve, reject } = Promise.withResolvers<ApplyResult>();
    this.#confWaiters.set(index, { term: this.#currentTerm(), resolve, reject });
    this.#kick();
    return promise.then(() => {});
  }

  /** Hands leadership to another member (best effort; returns at once). */
  transferLeadership(to: string): void {
    this.node.transferLeader(to);
    this.#kick();
  }

  /** Current voters. */
  voters(): string[] {
    return this.node.status().voters;
  }

  readBarrier(): Promise<void> {
    if (this.#role !== "leader") return Promise.reject(this.#notLeader());
    const ctx = new Uint8Array(READ_CTX_BYTES);
    const key = String(++this.#readSeq);
    new DataView(ctx.buffer).setFloat64(0, this.#readSeq);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = this.#clock.setTimeout(() => {
      this.#reads.delete(key);
      reject(new RequestError(ErrorCode.Unavailable, "read barrier timed out (no quorum?)"));
    }, 3000);
    this.#reads.set(key, { resolve, reject, index: 0, timer });
    try {
      this.node.readIndex(ctx);
    } catch (e) {
      this.#clock.clearTimeout(timer);
      this.#reads.delete(key);
      return Promise.reject(this.#translate(e));
    }
    this.#kick();
    return promise;
  }

  #currentTerm(): number {
    return this.node.status().term;
  }

  #notLeader(): RequestError {
    return new RequestError(ErrorCode.NotLeader, this.leaderEndpoint());
  }

  #translate(e: unknown): unknown {
    if (e instanceof NotLeaderError) return this.#notLeader();
    if (e instanceof RaftError) return new RequestError(ErrorCode.Unavailable, e.message);
    return e;
  }

  #kick(): void {
    if (this.#closed) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#busy = true;
    queueMicrotask(() => this.#loop());
  }

  async #loop(): Promise<void> {
    try {
      do {
        this.#again = false;
        while (!this.#closed && this.node.hasReady()) {
          await this.#handleReady(this.node.ready());
          this.node.advance();
          // After advance: the core only lets us compact what it has seen applied.
          await this.#maybeSnapshot();
        }
      } while (this.#again && !this.#closed);
    } catch (e) {
      await this.#fail(e);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Stops this member after an error in the Ready loop (or in tick()).
   *
   * A RaftStorageError: a write or fsync failed, so we can no longer promise durability: stop
   * rather than lie. Anything else cannot come from a peer (receive() contains those at the
   * step boundary, #send never throws, a failing snapshot is skipped in #maybeSnapshot): it is
   * a bug in the core, this shell or the state machine, thrown between ready() and advance().
   * Part of that Ready may be persisted, sent or applied and the rest not, so the core, the
   * state machine and the disk may disagree; logging and carrying on could acknowledge or
   * serve from that state, and the core would refuse the next ready() anyway. Raft is safe
   * under fail-stop and a restart rebuilds everything from the fsync'd log, so this is fatal
   * too, but reported as a bug, not as a disk failure.
   */
  async #fail(e: unknown): Promise<void> {
    if (this.#closed) return;
    const kind = e instanceof RaftStorageError ? "storage" : "internal";
    this.#o.log.error(
      kind === "storage"
        ? "raft storage failed; stopping this member"
        : "raft ready loop failed with an internal error (a bug); stopping this member",
      { error: e },
    );
    try {
      await this.close();
    } catch (err) {
      this.#o.log.error("closing the raft member failed", { error: err });
    }
    this.#o.onFatal?.(e, kind);
  }

  async #handleReady(rd: Ready): Promise<void> {
    this.stats.readies++;
    if (rd.softState) this.#onSoftState(rd.softState.role, rd.softState.lead);
    if (rd.hardState) this.#term = rd.hardState.term;
    // A hard state that differs from the stored one only in `commit` needs no fsync of its own
    // (etcd's MustSync): the commit index is re-learned from the leader after a restart. It is
    // written along with the next entries. This keeps a submission at two fsyncs (leader entry,
    // follower entry) instead of three.
    const hs = rd.hardState;
    invariant(
      hs === null || hs.term >= this.#storedHs.term,
      () => `raft ${this.id}: term went back from ${this.#storedHs.term} to ${hs!.term}`,
    );
    const mustSyncHs = hs !== null &&
      (hs.term !== this.#storedHs.term || hs.vote !== this.#storedHs.vote);
    // The leader's appends go out while its own write runs (splitReadyMessages says why that is
    // safe): a submission then costs max(leader fsync, follower round trip), not their sum.
    const { early, late } = splitReadyMessages(rd, this.id, this.#role === "leader", mustSyncHs);
    for (const m of early) this.#send(m);
    if (rd.snapshot || rd.entries.length || mustSyncHs) {
      const t0 = this.#clock.monotonic();
      await this.#o.storage.saveReady(rd);
      this.#o.metrics?.fsyncSeconds.observe((this.#clock.monotonic() - t0) / 1000);
      if (hs) this.#storedHs = hs;
      this.stats.persisted++;
    }
    for (const m of late) this.#send(m);
    const failed = this.node.snapshotStats.failed;
    if (failed > this.#loggedTransferFailures) {
      this.#loggedTransferFailures = failed;
      this.#warnThrottled("snapshot transfer failed; retrying after a backoff", {
        failed,
        retransmits: this.node.snapshotStats.retransmits,
      });
    }
    if (rd.snapshot && rd.snapshot.index > this.#applied) {
      this.#o.sm.restore(rd.snapshot.data);
      this.#applied = rd.snapshot.index;
      this.#snapIndex = rd.snapshot.index;
      this.#prunePeers();
      this.#o.log.info("installed snapshot", {
        index: rd.snapshot.index,
        bytes: rd.snapshot.data.length,
        from: this.#leader,
      });
    }
    for (const e of rd.committedEntries) this.#applyEntry(e);
    for (const rs of rd.readStates) {
      // Contexts are ours (receive() checks those of readIndexResp): skip any other shape.
      if (rs.ctx.length !== READ_CTX_BYTES) continue;
      const view = new DataView(rs.ctx.buffer, rs.ctx.byteOffset, READ_CTX_BYTES);
      const key = String(view.getFloat64(0));
      const r = this.#reads.get(key);
      if (!r) continue;
      this.#reads.delete(key);
      r.index = rs.index;
      this.#readWaiters.push(r);
    }
    this.#releaseReads();
  }

  #applyEntry(e: Entry): void {
    if (e.index <= this.#applied) return;
    invariant(
      e.index === this.#applied + 1,
      () => `raft ${this.id}: applying ${e.index} after ${this.#applied} skips entries`,
    );
    this.#applied = e.index;
    this.stats.applied++;
    if (e.type === "conf") {
      this.#prunePeers();
      const w = this.#confWaiters.get(e.index);
      if (w) {
        this.#confWaiters.delete(e.index);
        if (w.term === e.term) w.resolve({ kind: "reported", accepted: true, jobDone: false });
        else w.reject(this.#notLeader());
      }
      return;
    }
    if (e.data.length === 0) return; // a new leader's empty entry
    let result: ApplyResult | null = null;
    let error: unknown = null;
    try {
      result = this.#o.sm.apply(e.data);
    } catch (err) {
      // A command that does not decode was validated before it was proposed: log, skip.
      error = err;
      this.#o.log.error("committed entry failed to apply", { index: e.index, error: err });
    }
    const p = this.#pending.get(e.index);
    if (!p) return;
    this.#pending.delete(e.index);
    if (p.term !== e.term) p.reject(this.#notLeader());
    else if (error) p.reject(new RequestError(ErrorCode.Internal, String(error)));
    else p.resolve(result!);
  }

  #releaseReads(): void {
    this.#readWaiters = this.#readWaiters.filter((r) => {
      if (r.index > this.#applied) return true;
      this.#clock.clearTimeout(r.timer);
      r.resolve();
      return false;
    });
  }

  async #maybeSnapshot(): Promise<void> {
    const every = this.#o.snapshotEvery ?? 10_000;
    if (this.#applied - this.#snapIndex < every || this.#applied < this.#nextSnapshotAt) return;
    let snap: Snapshot;
    try {
      snap = this.node.compact(this.#applied, this.#o.sm.snapshot());
    } catch (e) {
      // Nothing changed yet (compact() checks before it cuts the log) and the Ready was fully
      // handled: the member stays consistent without this snapshot. Log, retry later.
      this.stats.snapshotFailures++;
      this.#nextSnapshotAt = this.#applied + every;
      this.#o.log.error("taking a snapshot failed; will retry later", { error: e });
      return;
    }
    await this.#o.storage.compact(snap);
    this.#snapIndex = snap.index;
    this.stats.snapshots++;
    this.#o.log.info("snapshot taken; log compacted", { index: snap.index });
  }

  #onSoftState(role: string, lead: string | null): void {
    const wasLeader = this.#role === "leader";
    if (lead !== null && lead !== this.#leader) this.#o.metrics?.leaderChanges.inc();
    this.#role = role;
    this.#leader = lead;
    if (wasLeader && role !== "leader") {
      // Proposals may still commit under the next leader; clients retry and the
      // exactly-once session table turns the retry into the same result.
      for (const [, p] of this.#pending) p.reject(this.#notLeader());
      this.#pending.clear();
      for (const [, p] of this.#confWaiters) p.reject(this.#notLeader());
      this.#confWaiters.clear();
      for (const [, r] of this.#reads) {
        this.#clock.clearTimeout(r.timer);
        r.reject(this.#notLeader());
      }
      this.#reads.clear();
    }
    this.#o.log.info("raft role", { role, leader: lead, term: this.#currentTerm() });
  }

  /**
   * Sends one message; never throws. Connects only to a member id that passes the strict
   * grammar (so libzmq is never handed an endpoint it cannot parse), and while this member
   * knows a configuration, only to its members (messages from others were dropped on receipt,
   * so the core only answers members).
   */
  #send(m: RaftMsg): void {
    let c = this.#peers.get(m.to);
    if (!c) {
      const to = parseMemberId(m.to);
      if (!to) return this.#sendFailed(m, "destination is not a member id");
      const members = this.node.members();
      if (!members.has(m.to) && (members.size > 0 || this.#peers.size >= MAX_UNKNOWN_PEERS)) {
        return this.#sendFailed(m, "destination is not a member");
      }
      try {
        // The member id names the peer's key on the keyring (NAME@ENDPOINT).
        c = this.#dial(m.to, { node: this.#o.node, log: this.#o.log, serverRole: "master" });
      } catch (e) {
        return this.#sendFailed(m, "connect failed", e);
      }
      this.#peers.set(m.to, c);
      this.#peerBuiltAt.set(m.to, this.#clock.monotonic());
    }
    let data: Uint8Array;
    try {
      data = encodeRaftMessage(m);
    } catch (e) {
      return this.#sendFailed(m, "encode failed", e); // a bug: the core made an unencodable message
    }
    this.stats.sent++;
    if (m.type === "snap") this.#countChunk(m);
    c.send({ type: MessageType.RaftMessage, node: this.#o.node, data })
      .catch(() => {
        this.node.reportUnreachable(m.to);
        if (m.type === "snap") this.node.reportSnapshot(m.to, false);
      });
    // A sent chunk is not a delivered snapshot: the core waits for the follower's answers.
  }

  #countChunk(m: RaftMsg): void {
    const c = m.chunk!;
    this.stats.snapshotChunksSent++;
    this.stats.snapshotBytesSent += m.snapshot!.data.length;
    // Counted once per transfer (a transfer resent from its first chunk is the same transfer).
    if (c.offset === 0 && this.#transfers.get(m.to) !== m.seq) {
      this.#transfers.set(m.to, m.seq);
      this.stats.snapshotsSent++;
      this.#o.log.info("sending snapshot", {
        to: m.to,
        index: m.snapshot!.index,
        bytes: c.total,
        transfer: m.seq,
      });
    }
  }

  /** Snapshot transfer counters of the core (leader and follower side). */
  get snapshotTransfers(): Readonly<SnapshotStats> {
    return this.node.snapshotStats;
  }

  #sendFailed(m: RaftMsg, reason: string, error?: unknown): void {
    this.stats.sendFailures++;
    this.#warnThrottled(`raft message not sent: ${reason}`, {
      type: m.type,
      to: m.to.slice(0, 100),
      error,
    });
    this.node.reportUnreachable(m.to);
    if (m.type === "snap") this.node.reportSnapshot(m.to, false);
  }

  /**
   * Drops the client of a peer nothing valid has come from for PEER_SILENCE_MS since the client
   * was made; the next message makes a new one. Raft traffic is one-way, so nothing else would
   * notice that libzmq gave up on a connection whose CURVE handshake was refused (say, the
   * peer had not yet re-read a keyring that now holds our key): it never retries it.
   */
  #refreshSilentPeers(): void {
    const now = this.#clock.monotonic();
    if (now - this.#lastPeerCheck < PEER_SILENCE_MS / 4) return;
    this.#lastPeerCheck = now;
    for (const [id, c] of this.#peers) {
      const since = Math.max(this.#peerBuiltAt.get(id) ?? 0, this.#heardFrom.get(id) ?? 0);
      if (now - since < PEER_SILENCE_MS) continue;
      this.#peers.delete(id);
      this.#peerBuiltAt.delete(id);
      c.close().catch(() => {});
    }
  }

  /** Closes connections to ids that are no longer members of any configuration we know. */
  #prunePeers(): void {
    const members = this.node.members();
    for (const [id, c] of this.#peers) {
      if (members.has(id)) continue;
      this.#peers.delete(id);
      this.#peerBuiltAt.delete(id);
      this.#heardFrom.delete(id);
      this.#transfers.delete(id);
      c.close().catch(() => {});
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clock.clearInterval(this.#ticker);
    const err = new RequestError(ErrorCode.Unavailable, "master shutting down");
    for (const [, p] of this.#pending) p.reject(err);
    for (const [, p] of this.#confWaiters) p.reject(err);
    for (const [, r] of this.#reads) {
      this.#clock.clearTimeout(r.timer);
      r.reject(err);
    }
    this.#pending.clear();
    this.#confWaiters.clear();
    this.#reads.clear();
    await Promise.all([...this.#peers.values()].map((c) => c.close().catch(() => {})));
    this.#o.storage.close();
  }
}
