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
 */
import {
  type ConfChangeRequest,
  type Entry,
  type HardState,
  type Message as RaftMsg,
  mulberry32,
  NotLeaderError,
  RaftError,
  RawNode,
  type Ready,
  type Snapshot,
} from "./raft/mod.ts";
import {
  decodeMessage as decodeRaftMessage,
  encodeMessage as encodeRaftMessage,
} from "./raft/codec.ts";
import type { FileStorage } from "./raft/storage.ts";
import { ErrorCode, MessageType } from "../../wire/mod.ts";
import { RequestError, RpcClient } from "../../lib/rpc.ts";
import type { Logger } from "../../lib/log.ts";
import type { ApplyResult } from "./job_table.ts";
import type { ReplicatedLog } from "./replicated_log.ts";
import { memberEndpoint } from "./member_id.ts";

/** The state machine the group replicates. */
export interface StateMachine {
  /** Applies one committed command. */
  apply(data: Uint8Array): ApplyResult;
  /** Serializes the whole state (for compaction). */
  snapshot(): Uint8Array;
  /** Replaces the state with a snapshot's. */
  restore(data: Uint8Array): void;
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
  /** Called when the member had to stop (storage failed): the process should exit. */
  onFatal?: (e: unknown) => void;
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
  timer: ReturnType<typeof setTimeout>;
}

/** A master's member of the Raft group. */
export class RaftGroup implements ReplicatedLog {
  readonly id: string;
  readonly node: RawNode;
  #o: RaftGroupOptions;
  #peers = new Map<string, RpcClient>();
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
  #ticker: ReturnType<typeof setInterval> | undefined;
  #readSeq = 0;
  /** Term and vote as last written to storage. */
  #storedHs: HardState = { term: 0, vote: null, commit: 0 };
  /** Counters for tests and status. */
  readonly stats = { readies: 0, persisted: 0, sent: 0, applied: 0, snapshots: 0 };

  private constructor(o: RaftGroupOptions, node: RawNode, applied: number) {
    this.#o = o;
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
    const seed = crypto.getRandomValues(new Uint32Array(1))[0];
    const node = new RawNode({
      id: o.id,
      electionTick: o.electionTicks ?? 20,
      heartbeatTick: o.heartbeatTicks ?? 4,
      rand: mulberry32(seed),
      peers: hasState || o.join ? undefined : o.peers,
      restore: hasState ? restored : undefined,
      applied,
    });
    const g = new RaftGroup(o, node, applied);
    g.#storedHs = restored.hardState;
    g.#ticker = setInterval(() => {
      g.node.tick();
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

  /** Feeds a raft_message payload from a peer. Malformed input is logged and dropped. */
  receive(data: Uint8Array): void {
    let m: RaftMsg;
    try {
      m = decodeRaftMessage(data);
    } catch (e) {
      this.#o.log.warn("malformed raft message", { error: e });
      return;
    }
    if (m.to !== this.id) return; // meant for a previous incarnation or another member
    try {
      this.node.step(m);
    } catch (e) {
      this.#o.log.warn("raft step refused a message", { error: e, type: m.type, from: m.from });
      return;
    }
    this.#kick();
  }

  isLeader(): boolean {
    return this.#role === "leader";
  }

  leaderEndpoint(): string {
    return this.#leader ? memberEndpoint(this.#leader) : "";
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
    const ctx = new Uint8Array(8);
    const key = String(++this.#readSeq);
    new DataView(ctx.buffer).setFloat64(0, this.#readSeq);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(() => {
      this.#reads.delete(key);
      reject(new RequestError(ErrorCode.Unavailable, "read barrier timed out (no quorum?)"));
    }, 3000);
    this.#reads.set(key, { resolve, reject, index: 0, timer });
    try {
      this.node.readIndex(ctx);
    } catch (e) {
      clearTimeout(timer);
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
      // A failed fsync leaves us unable to promise durability: stop rather than lie.
      this.#o.log.error("raft ready loop failed; stopping this member", { error: e });
      await this.close();
      this.#o.onFatal?.(e);
    } finally {
      this.#busy = false;
    }
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
    const mustSyncHs = hs !== null &&
      (hs.term !== this.#storedHs.term || hs.vote !== this.#storedHs.vote);
    if (rd.snapshot || rd.entries.length || mustSyncHs) {
      await this.#o.storage.saveReady(rd);
      if (hs) this.#storedHs = hs;
      this.stats.persisted++;
    }
    for (const m of rd.messages) this.#send(m);
    if (rd.snapshot && rd.snapshot.index > this.#applied) {
      this.#o.sm.restore(rd.snapshot.data);
      this.#applied = rd.snapshot.index;
      this.#snapIndex = rd.snapshot.index;
      this.#o.log.info("installed snapshot", { index: rd.snapshot.index });
    }
    for (const e of rd.committedEntries) this.#applyEntry(e);
    for (const rs of rd.readStates) {
      const key = String(new DataView(rs.ctx.buffer, rs.ctx.byteOffset, 8).getFloat64(0));
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
    this.#applied = e.index;
    this.stats.applied++;
    if (e.type === "conf") {
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
      clearTimeout(r.timer);
      r.resolve();
      return false;
    });
  }

  async #maybeSnapshot(): Promise<void> {
    const every = this.#o.snapshotEvery ?? 10_000;
    if (this.#applied - this.#snapIndex < every) return;
    const snap: Snapshot = this.node.compact(this.#applied, this.#o.sm.snapshot());
    await this.#o.storage.compact(snap);
    this.#snapIndex = snap.index;
    this.stats.snapshots++;
    this.#o.log.info("snapshot taken; log compacted", { index: snap.index });
  }

  #onSoftState(role: string, lead: string | null): void {
    const wasLeader = this.#role === "leader";
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
        clearTimeout(r.timer);
        r.reject(this.#notLeader());
      }
      this.#reads.clear();
    }
    this.#o.log.info("raft role", { role, leader: lead, term: this.#currentTerm() });
  }

  #send(m: RaftMsg): void {
    let c = this.#peers.get(m.to);
    if (!c) {
      c = new RpcClient(memberEndpoint(m.to), { node: this.#o.node, log: this.#o.log });
      this.#peers.set(m.to, c);
    }
    this.stats.sent++;
    c.send({ type: MessageType.RaftMessage, node: this.#o.node, data: encodeRaftMessage(m) })
      .catch(() => this.node.reportUnreachable(m.to));
    if (m.type === "snap") this.node.reportSnapshot(m.to, true);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#ticker);
    const err = new RequestError(ErrorCode.Unavailable, "master shutting down");
    for (const [, p] of this.#pending) p.reject(err);
    for (const [, p] of this.#confWaiters) p.reject(err);
    for (const [, r] of this.#reads) {
      clearTimeout(r.timer);
      r.reject(err);
    }
    this.#pending.clear();
    this.#confWaiters.clear();
    this.#reads.clear();
    await Promise.all([...this.#peers.values()].map((c) => c.close()));
    this.#o.storage.close();
  }
}
