/**
 * The balancer's I/O shell: serves the ROUTER socket, feeds messages to the ChunkScheduler
 * and carries out its placements by pushing `worker_request`s to workers.
 *
 * Balancer state is soft: the master re-dispatches every unfinished job periodically and
 * workers re-register when a heartbeat is answered NOT_FOUND, so a restarted balancer
 * rebuilds what it needs within one re-dispatch period. Nothing here needs to be durable.
 *
 * Trust (security on, i.e. the RpcServer passes a keyring identity as `from`): the identity
 * that sent a message decides, never a field inside it. A worker's node id is bound to the key
 * it registered with; any message about that node id from another key is answered FORBIDDEN,
 * as is a chunk_finished for a chunk attempt placed on a worker of another key. Every
 * worker_request carries a placement ticket and one read capability per input file and one for
 * the program file, minted under the cluster secret for the key of the worker it is placed on
 * (see `#authFor` for why that makes a stolen routing id worthless).
 *
 * One primary (lease.ts). With masters (`--masters`), this balancer places chunks only while it
 * holds the masters' primary lease, and stamps every worker_request with the lease epoch, which
 * workers use to refuse a deposed primary's late pushes. Otherwise it is a standby: it follows
 * the holder (standby.ts) and answers everything but node lists and sync pulls UNAVAILABLE, so
 * workers and masters move on to the primary. Without masters it is primary on its own (epoch
 * 0): one balancer, no failover.
 *
 * No placement is lost in a failover: while a standby follows, a placement is pushed to its
 * worker only once the standby's pull has acknowledged the event that made it (`#held`), so a
 * standby that takes over knows every chunk any worker may be running. A standby silent for
 * ACK_WAIT_MS stops counting (pushes then go out at once, as with no standby).
 * @module
 */
import { CAP_BYTES, placementTicket, readCapability } from "../../lib/capability.ts";
import { type Clock, systemClock, type TimerId } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { splitNamedEndpoint } from "../../lib/named_endpoint.ts";
import { hexId, RequestError, RpcError } from "../../lib/rpc.ts";
import type { PushServer } from "../../lib/transport.ts";
import { type Credentials, type Identity, processCredentials } from "../../lib/security.ts";
import {
  type BalancerSync,
  type BalancerSyncReply,
  ErrorCode,
  limitFieldsOf,
  type Message,
  MessageType,
  NIL_UUID,
  type NodeEntry,
  NodeFlags,
  NodeRole,
  NodeState,
  type Uuid,
  uuidToHex,
  type WorkerRequest,
} from "../../wire/mod.ts";
import {
  type Assignment,
  ChunkScheduler,
  type DeadWorker,
  type DispatchResult,
  freeOf,
  SchedulerError,
  type SchedulerOptions,
} from "./chunk_scheduler.ts";
import {
  applyEvent,
  decodeSyncBody,
  encodeSyncBody,
  EventLog,
  type SchedulerEvent,
  SyncError,
} from "./replication.ts";
import { BalancerLeaseView, type LeaseChange } from "./lease.ts";

/**
 * Bugs planted on purpose, to show that the deterministic simulation catches them
 * (tests/sim_balancer_test.ts). Test-only: nothing in production sets one (main.ts and the
 * command line have no way to).
 * - `place-twice`: a push that went unconfirmed (no ack in time: the worker may be running it)
 *   is handed back as if refused, so the same attempt is placed again on another worker;
 * - `finish-from-any-worker`: a chunk_finished is taken without checking that its sender is the
 *   worker the attempt is placed on (neither routing id nor key).
 */
export type BalancerPlantedBug = "place-twice" | "finish-from-any-worker";

/** Options of the balancer service. */
export interface BalancerServiceOptions extends SchedulerOptions {
  /** This balancer's node uuid. */
  node: Uint8Array;
  /** The endpoint it serves. */
  endpoint: string;
  /** What others dial, `NAME@tcp://…` (default: `endpoint`): node lists show its two parts. */
  advertised?: string;
  log: Logger;
  /** Dead-worker detection and assignment period, ms. */
  tickMs?: number;
  /** How long to wait for a worker's worker_request_ack, ms. */
  pushTimeoutMs?: number;
  /**
   * Time and timers (default: the process's): `now` stamps scheduler events and capability
   * expiries, `monotonic` times the lease and the standby's acknowledgements.
   */
  clock?: Clock;
  /**
   * Makes the id of each event stream (one per term as primary; default random). A seeded
   * simulation passes a seeded one so that a run replays exactly.
   */
  newStreamId?: () => Uuid;
  /**
   * Place chunks only while holding the masters' lease (`--masters` given): the service starts
   * as a standby and the shell feeds it lease changes (`onLease`). false: primary on its own.
   */
  leased?: boolean;
  /**
   * Keys (default: the process's): the cluster secret mints tickets and read capabilities,
   * the keyring tells whether a worker's bound key was revoked. null = insecure mode.
   */
  auth?: Credentials | null;
  /** Read capabilities stay good this long past now + the job's time limit, ms (10 min). */
  capMarginMs?: number;
  /** Test-only: a planted bug (see {@link BalancerPlantedBug}); never set in production. */
  plantedBug?: BalancerPlantedBug;
}

/** Time limit assumed for the capabilities of a job without one (the masters' maximum). */
const NO_LIMIT_CAP_MS = 24 * 3600_000;
/** Longest per-chunk time limit a dispatch may carry (the masters' maximum, 24 h). */
const MAX_DISPATCH_TIME_LIMIT_MS = 24 * 3600_000;
/** Default of BalancerServiceOptions.capMarginMs. */
const CAP_MARGIN_MS = 10 * 60_000;
/** A standby that has not pulled for this long no longer holds back pushes, ms. */
export const ACK_WAIT_MS = 1000;

/** Counters of what the service did (for logs and tests). */
export interface BalancerCounters {
  dispatches: number;
  pushed: number;
  accepted: number;
  refused: number;
  unconfirmed: number;
  finished: number;
  staleFinished: number;
  deadWorkers: number;
  /** Messages answered FORBIDDEN by the balancer's own rules (key binding, placement, sync). */
  forbidden: number;
  /** Placements pushed only after a standby acknowledged them. */
  heldForStandby: number;
  /** Placements handed back because the lease lapsed before they could be pushed. */
  droppedOnLapse: number;
}

/** Serves balancer requests and drives the scheduler; see module doc. */
export class BalancerService {
  /** The scheduling state machine this service drives. */
  readonly scheduler: ChunkScheduler;
  /** What the service did so far. */
  readonly counters: BalancerCounters = {
    dispatches: 0,
    pushed: 0,
    accepted: 0,
    refused: 0,
    unconfirmed: 0,
    finished: 0,
    staleFinished: 0,
    deadWorkers: 0,
    forbidden: 0,
    heldForStandby: 0,
    droppedOnLapse: 0,
  };
  #o: BalancerServiceOptions;
  #server: PushServer | null = null;
  /** Worker key -> routing id of its DEALER (where to push work). */
  #peers = new Map<string, Uint8Array>();
  #timer: TimerId | undefined;
  #pumpQueued = false;
  #now: () => number;
  #clock: Clock;
  #stopped = false;
  /** Every state change, for standbys that follow this balancer (a new stream per term). */
  #events: EventLog;
  /** Primary (placing) or standby. */
  #primary: boolean;
  /** The lease as seen from here (null: no masters, primary on its own). */
  readonly lease: BalancerLeaseView | null;
  #mono: () => number;
  /** Replies waiting for a standby's acknowledgement, oldest first. */
  #ackWaiters: { seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  /** Placements waiting for a standby's acknowledgement, oldest first. */
  #held: { a: Assignment; seq: number }[] = [];
  /** Replication position of a standby: the primary's stream and last applied seq. */
  #syncStream: Uint8Array = NIL_UUID;
  #syncSeq = 0;
  #creds: Credentials | null;
  #advertised: { endpoint: string; name: string };

  constructor(o: BalancerServiceOptions) {
    this.#o = o;
    this.#creds = o.auth === undefined ? processCredentials() : o.auth;
    const clock = this.#clock = o.clock ?? systemClock;
    // Whole milliseconds, as Date.now gives: they go on the wire (node lists, capability
    // expiries) as integers, and a Clock need not return whole ones.
    this.#now = () => Math.floor(clock.now());
    const adv = splitNamedEndpoint(o.advertised ?? o.endpoint);
    this.#advertised = { endpoint: adv.endpoint, name: adv.name ?? "" };
    this.#mono = () => clock.monotonic();
    this.#events = this.#newEventLog();
    this.lease = o.leased ? new BalancerLeaseView(o.node) : null;
    this.#primary = !o.leased;
    this.scheduler = new ChunkScheduler(o);
  }

  /** An event log with a new stream id, on this service's clock. */
  #newEventLog(): EventLog {
    const stream = this.#o.newStreamId?.();
    return new EventLog({ clock: this.#clock, ...(stream ? { stream } : {}) });
  }

  /** True while this balancer does not place (follows the primary, or holds no lease). */
  get isStandby(): boolean {
    return !this.#primary;
  }

  /** The lease epoch stamped on pushes (0 without masters). */
  get epoch(): number {
    return this.lease?.epoch ?? 0;
  }

  /** May this balancer push a placement now? (Checked right before every push.) */
  #canPlace(): boolean {
    if (!this.#primary || this.#stopped || !this.#server) return false;
    return this.lease === null || this.lease.isPrimary(this.#mono());
  }

  /** Position of a standby in its primary's event stream (nil stream = needs a snapshot). */
  get syncPosition(): { stream: Uint8Array; after: number } {
    return { stream: this.#syncStream, after: this.#syncSeq };
  }

  /**
   * Acts on lease changes (from BalancerLeaseView): becomes primary (a new event stream, every
   * replicated worker given a fresh deadline, ticking and placing), or stops placing at once.
   * `follow` changes are the standby follower's business (main.ts).
   */
  onLease(changes: LeaseChange[]): void {
    for (const c of changes) {
      if (c.kind === "primary" && !this.#primary) {
        this.#primary = true;
        // Followers of the stream of an earlier term would miss what was synced since: new one.
        this.#events = this.#newEventLog();
        this.#do({ t: "touchAll", now: this.#now() });
        this.#o.log.warn("primary balancer lease held: placing chunks", {
          epoch: c.epoch,
          ...this.scheduler.stats(),
        });
        this.#startTicking();
      } else if (c.kind === "lapsed" && this.#primary) {
        this.#primary = false;
        this.#stopTicking();
        this.#events.wakeAll();
        for (const w of this.#ackWaiters.splice(0)) {
          // Not known to be replicated: the worker re-sends it to the next primary.
          w.reject(new RequestError(ErrorCode.Unavailable, "balancer lost the primary lease"));
        }
        const dropped = this.#held.splice(0);
        for (const { a } of dropped) this.#handBack(a);
        this.counters.droppedOnLapse += dropped.length;
        this.#o.log.warn("primary balancer lease lost: placing stopped", {
          epoch: c.epoch,
          why: c.why,
          dropped: dropped.length,
        });
      }
    }
  }

  /** Applies a state change and records it for followers. */
  #do(ev: SchedulerEvent): unknown {
    const r = applyEvent(this.scheduler, ev);
    // A reap that found nobody changed nothing: not worth a log entry.
    if (ev.t !== "reap" || (r as DeadWorker[]).length > 0) this.#events.append(ev, this.#mono());
    return r;
  }

  /**
   * Standby: applies a sync reply from the primary (snapshot and/or events). Throws
   * SyncError when the reply does not continue where this standby is (it then resnapshots).
   */
  applySync(reply: BalancerSyncReply): void {
    try {
      const body = decodeSyncBody(reply.body);
      if (reply.snapshot) {
        if (!body.snapshot) throw new SyncError("sync reply flags a snapshot but has none");
        this.scheduler.importState(body.snapshot);
        this.#syncStream = reply.stream.slice();
        this.#syncSeq = reply.firstSeq - 1;
      }
      if (hexId(reply.stream) !== hexId(this.#syncStream)) {
        throw new SyncError(
          `events of stream ${hexId(reply.stream)} but following ${hexId(this.#syncStream)}`,
        );
      }
      if (body.events.length > 0 && reply.firstSeq !== this.#syncSeq + 1) {
        throw new SyncError(`events start at ${reply.firstSeq}, expected ${this.#syncSeq + 1}`);
      }
      for (const ev of body.events) {
        applyEvent(this.scheduler, ev);
        this.#syncSeq++;
      }
    } catch (e) {
      // Whatever went wrong, the state may be partial: start over from a snapshot.
      this.#syncStream = NIL_UUID;
      throw e instanceof SyncError ? e : new SyncError(`replaying primary's events: ${e}`);
    }
  }

  async #sync(req: BalancerSync): Promise<Message> {
    const ev = this.#events;
    const same = hexId(req.stream) === hexId(ev.stream);
    if (same) {
      // The pull acknowledges what the standby applied: pushes held for it may go.
      ev.ack(req.after, this.#mono());
      this.#releaseHeld();
      if (req.after === ev.lastSeq) {
        await ev.waitAfter(req.after, Math.min(5000, req.waitMs));
      }
    }
    if (!this.#primary) {
      throw new RequestError(ErrorCode.Unavailable, "balancer sync: not the primary any more");
    }
    const now = this.#mono();
    const events = same && ev === this.#events ? ev.since(req.after, 8 * 1024 * 1024, now) : null;
    const cur = this.#events;
    if (events) {
      return {
        type: MessageType.BalancerSyncReply,
        node: this.#o.node,
        stream: cur.stream,
        firstSeq: req.after + 1,
        snapshot: false,
        body: encodeSyncBody({ events }),
      };
    }
    // New or lagging follower: the whole state; from now on events are kept for it.
    cur.since(cur.lastSeq, 0, now);
    const seq = cur.lastSeq;
    this.#o.log.info("standby sent a snapshot", { seq });
    return {
      type: MessageType.BalancerSyncReply,
      node: this.#o.node,
      stream: cur.stream,
      firstSeq: seq + 1,
      snapshot: true,
      body: encodeSyncBody({ snapshot: this.scheduler.exportState(), events: [] }),
    };
  }

  /**
   * Serves through `server` (an RpcServer whose handler is `handle`, or the simulator's):
   * pushes go out through it; places if primary.
   */
  start(server: PushServer): void {
    this.#server = server;
    this.#stopped = false;
    if (this.#primary) this.#startTicking();
  }

  #startTicking(): void {
    if (this.#timer !== undefined || this.#stopped || !this.#server) return;
    this.#timer = this.#clock.setInterval(() => this.#tick(), this.#o.tickMs ?? 100);
    this.#schedulePump();
  }

  #stopTicking(): void {
    this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Stops ticking; pending pushes are left to the server's close. */
  stop(): void {
    this.#stopped = true;
    this.#events.wakeAll();
    this.#stopTicking();
  }

  /** The RpcServer handler; `from` is the sender's keyring identity (null: insecure mode). */
  handle = (
    msg: Message,
    peer: Uint8Array,
    from: Identity | null = null,
  ): Promise<Message> | Message | null => {
    const now = this.#now();
    const ok = (value = 0): Message => ({ type: MessageType.Ok, node: this.#o.node, value });
    if (msg.type === MessageType.BalancerSync && from !== null && from.role !== "balancer") {
      // rpc admits only balancer keys (the schema's senders); checked here too, as the reply
      // is the whole scheduler state.
      throw this.#forbid(`a ${from.role} key (${from.name}) may not sync balancer state`, {
        type: msg.type,
        from: from.name,
      });
    }
    if (
      !this.#primary && msg.type !== MessageType.NodeListRequest &&
      msg.type !== MessageType.BalancerSync
    ) {
      // Retryable: clients given both endpoints move on to the other one.
      throw new RequestError(
        ErrorCode.Unavailable,
        `standby balancer: the primary is ${this.lease?.following || "not known yet"}`,
      );
    }
    try {
      switch (msg.type) {
        case MessageType.JobDispatch: {
          // Masters validate submissions, but nothing from the network is taken on trust:
          // a time limit past the masters' own maximum would overflow capability expiries.
          if (msg.timeLimitMs > MAX_DISPATCH_TIME_LIMIT_MS || msg.numChunks < 1) {
            throw new RequestError(
              ErrorCode.BadRequest,
              `job_dispatch: time limit ${msg.timeLimitMs} ms or ${msg.numChunks} chunks out of range`,
            );
          }
          this.counters.dispatches++;
          const r = this.#do({
            t: "dispatch",
            now,
            info: {
              job: msg.job,
              numChunks: msg.numChunks,
              timeLimitMs: msg.timeLimitMs,
              programId: msg.programId,
              programSize: msg.programSize,
              argument: msg.argument,
              inputFiles: msg.inputFiles,
              ...(msg.owner ? { owner: msg.owner } : {}),
              ...(limitFieldsOf(msg) ? { limits: limitFieldsOf(msg)! } : {}),
            },
            chunks: msg.chunks,
          }) as DispatchResult;
          if (r.queued > 0) {
            this.#o.log.info("job dispatched", {
              job: uuidToHex(msg.job),
              queued: r.queued,
              ignored: r.ignored,
            });
            this.#schedulePump();
          }
          return ok(r.queued);
        }
        case MessageType.WorkerRegister: {
          this.#checkWorkerKey(msg.node, peer, from, msg.type);
          const key = uuidToHex(msg.node);
          this.#peers.set(key, peer.slice());
          const { requeued, heartbeatMs } = this.#do({
            t: "register",
            now,
            id: msg.node,
            slots: msg.slots,
            free: msg.freeSlots,
            files: msg.files,
            label: msg.label,
            ...(from ? { auth: { publicKey: from.publicKey, name: from.name } } : {}),
            ...(msg.endpoint ? { endpoint: msg.endpoint } : {}),
          }) as { requeued: unknown[]; heartbeatMs: number };
          this.#o.log.info("worker registered", {
            worker: key,
            slots: msg.slots,
            files: msg.files.length,
            label: msg.label,
            requeued: requeued.length,
            ...(from ? { key: from.name } : {}),
          });
          this.#schedulePump();
          // Answered once a standby has it: a worker told it is registered does not repeat it.
          // The value is the heartbeat interval it is to use (docs/wire.md, worker_register).
          return this.#whenAcked(ok(heartbeatMs));
        }
        case MessageType.WorkerHeartbeat: {
          this.#checkWorkerKey(msg.node, peer, from, msg.type);
          const hb = this.#do({
            t: "heartbeat",
            now,
            id: msg.node,
            slots: msg.slots,
            free: msg.freeSlots,
            added: msg.added,
            evicted: msg.evicted,
          }) as { requeued: unknown[]; heartbeatMs: number };
          if (hb.requeued.length > 0) {
            this.#o.log.warn("idle worker had chunks placed long ago: requeued them", {
              worker: uuidToHex(msg.node),
              requeued: hb.requeued.length,
            });
          }
          // A worker that reconnected has a new DEALER: push to the current one.
          this.#peers.set(uuidToHex(msg.node), peer.slice());
          this.#schedulePump();
          // An acknowledged heartbeat moves the worker's cache baseline: a standby must have it.
          // The value is the heartbeat interval to use next (docs/wire.md, worker_heartbeat).
          return this.#whenAcked(ok(hb.heartbeatMs));
        }
        case MessageType.ChunkFinished: {
          if (this.#o.plantedBug !== "finish-from-any-worker") {
            this.#checkWorkerKey(msg.node, peer, from, msg.type);
            if (from !== null) this.#checkPlacedOnSender(msg, from);
          }
          this.#do({ t: "touch", now, id: msg.node });
          const fresh = this.#do({
            t: "finished",
            now,
            worker: msg.node,
            job: msg.job,
            chunk: msg.chunkIndex,
            attempt: msg.attempt,
            state: msg.state,
          }) as boolean;
          const answer = this.#whenAcked(ok(fresh ? 1 : 0));
          if (fresh) this.counters.finished++;
          else {
            this.counters.staleFinished++;
            this.#o.log.info("stale chunk_finished ignored", {
              worker: uuidToHex(msg.node),
              job: uuidToHex(msg.job),
              chunk: msg.chunkIndex,
              attempt: msg.attempt,
            });
          }
          this.#schedulePump();
          return answer;
        }
        case MessageType.WorkerRequestAck:
          // Acks come as replies to our pushes; one sent as a request is refused, and one
          // about a worker bound to another key is refused as such.
          this.#checkWorkerKey(msg.node, peer, from, msg.type);
          throw new RequestError(
            ErrorCode.WrongRole,
            "worker_request_ack is the reply to a worker_request, not a request",
          );
        case MessageType.BalancerSync:
          return this.#sync(msg);
        case MessageType.JobCancel: {
          // Only the masters decide a cancel (they committed it first); rpc also lets clients and
          // balancers send job_cancel, to masters and to workers.
          if (from !== null && from.role !== "master") {
            throw this.#forbid(`a ${from.role} key (${from.name}) may not cancel at a balancer`, {
              type: msg.type,
              from: from.name,
            });
          }
          const chunks = msg.chunks.map((c) => c.chunkIndex);
          const running = this.#do({ t: "cancel", now, job: msg.job, chunks }) as {
            worker: { id: Uuid; key: string };
            chunkIndex: number;
          }[];
          this.#stopOnWorkers(msg.job, running);
          return this.#whenAcked(ok(running.length));
        }
        case MessageType.NodeListRequest:
          return { type: MessageType.NodeListResponse, node: this.#o.node, nodes: this.nodes() };
        default:
          throw new RequestError(
            ErrorCode.WrongRole,
            `balancer does not serve message type ${msg.type}`,
          );
      }
    } catch (e) {
      if (e instanceof SchedulerError) {
        throw new RequestError(
          e.kind === "unknown_worker" ? ErrorCode.NotFound : ErrorCode.BadRequest,
          e.message,
        );
      }
      throw e;
    }
  };

  /**
   * Pushes job_cancel to each worker running a cancelled chunk (best effort: the masters re-send
   * the cancel for a while, and each re-send reaches the chunks still placed).
   */
  #stopOnWorkers(job: Uuid, running: { worker: { key: string }; chunkIndex: number }[]): void {
    const byWorker = new Map<string, number[]>();
    for (const r of running) {
      const list = byWorker.get(r.worker.key) ?? [];
      list.push(r.chunkIndex);
      byWorker.set(r.worker.key, list);
    }
    for (const [key, list] of byWorker) {
      const peer = this.#peers.get(key);
      if (!peer || !this.#server) continue;
      this.#server.push(peer, {
        type: MessageType.JobCancel,
        node: this.#o.node,
        job,
        chunks: list.map((chunkIndex) => ({ chunkIndex })),
      }, this.#o.pushTimeoutMs ?? 5000).catch((e) => {
        this.#o.log.warn("job_cancel not delivered to a worker", { worker: key, error: e });
      });
    }
    if (running.length > 0) {
      this.#o.log.info("cancel sent to workers", {
        job: uuidToHex(job),
        chunks: running.length,
        workers: byWorker.size,
      });
    }
  }

  /** Counts, logs (warn) and returns a FORBIDDEN error. */
  #forbid(text: string, fields: Record<string, unknown>): RequestError {
    this.counters.forbidden++;
    this.#o.log.warn("forbidden", { ...fields, text });
    return new RequestError(ErrorCode.Forbidden, text);
  }

  /**
   * Throws FORBIDDEN unless `from` may speak for the worker with node id `node` (security on;
   * rpc has already checked that `from` is a worker key):
   * - the DEALER's routing id must be the node id (workers use it, see roles/worker/main.ts), so
   *   a key cannot register its own node id while routing through another worker's id;
   * - the node id must be bound to `from`'s key (the one it registered with), or, for a
   *   registration, be unbound: new, declared dead since, or bound to a key no longer on the
   *   keyring (revoked; a worker given a new key must not wait for the old one to be reaped).
   */
  #checkWorkerKey(node: Uuid, peer: Uint8Array, from: Identity | null, type: number): void {
    if (from === null) return;
    const hex = uuidToHex(node);
    if (hexId(peer) !== hex) {
      throw this.#forbid(`routing id ${hexId(peer)} is not the node id ${hex}`, {
        type,
        worker: hex,
        from: from.name,
      });
    }
    const w = this.scheduler.worker(hex);
    if (!w) return; // register binds it; anything else gets NOT_FOUND from the scheduler
    const bound = w.auth;
    if (bound?.publicKey === from.publicKey) return;
    if (type === MessageType.WorkerRegister) {
      if (!bound) return;
      if (this.#creds && !this.#creds.keyring.byKey(bound.publicKey)) {
        this.#o.log.warn("worker re-keyed: its node id was bound to a revoked key", {
          worker: hex,
          revoked: bound.name,
          key: from.name,
        });
        return;
      }
    }
    throw this.#forbid(
      `worker ${hex} is registered with the key of ${bound?.name ?? "nobody (register first)"}` +
        `, not ${from.name}`,
      { type, worker: hex, boundTo: bound?.name ?? null, from: from.name },
    );
  }

  /**
   * Throws FORBIDDEN when this attempt of the chunk is placed on a worker of another key (a
   * worker reporting another's chunk would free its slot and mark it finished here). A report
   * for an attempt placed nowhere, or an older attempt, is merely stale (ok, value 0).
   */
  #checkPlacedOnSender(
    m: { node: Uuid; job: Uuid; chunkIndex: number; attempt: number },
    from: Identity,
  ): void {
    const cs = this.scheduler.chunkState(m.job, m.chunkIndex);
    if (cs.state !== "running" || cs.attempt !== m.attempt) return;
    const placed = this.scheduler.worker(cs.worker!);
    if (!placed || placed.auth?.publicKey === from.publicKey) return;
    throw this.#forbid(
      `chunk ${m.chunkIndex} attempt ${m.attempt} of job ${uuidToHex(m.job)} is placed on ` +
        `${placed.auth?.name ?? placed.key}, not ${from.name}`,
      {
        type: MessageType.ChunkFinished,
        job: uuidToHex(m.job),
        chunk: m.chunkIndex,
        attempt: m.attempt,
        placedOn: placed.auth?.name ?? placed.key,
        from: from.name,
      },
    );
  }

  /** This balancer and its workers as node-list entries. */
  nodes(): NodeEntry[] {
    const now = this.#now();
    const st = this.scheduler.stats();
    const out: NodeEntry[] = [{
      id: this.#o.node,
      role: NodeRole.Balancer,
      state: NodeState.Alive,
      flags: this.#primary ? NodeFlags.Leader : 0,
      slots: st.slots,
      freeSlots: st.freeSlots,
      lastSeenMs: now,
      ...this.#advertised,
      detail: "",
    }];
    for (const w of this.scheduler.workers()) {
      const dead = this.scheduler.deadAfter(w);
      out.push({
        id: w.id,
        role: NodeRole.Worker,
        // Half the dead timeout without a word: worth showing, not yet worth acting on.
        state: now - w.lastSeenMs > dead / 2 ? NodeState.Suspect : NodeState.Alive,
        flags: 0,
        slots: w.slots,
        freeSlots: freeOf(w),
        lastSeenMs: w.lastSeenMs,
        endpoint: w.endpoint, // where it serves its chunks' logs ("" = nowhere)
        // Its key's name when it has one (connect as NAME@endpoint), else its label.
        name: w.auth?.name ?? w.label,
        // The files it has cached (the inputs placement prefers it for), and silence.
        detail: (now - w.lastSeenMs > dead / 2 ? `silent for ${now - w.lastSeenMs} ms; ` : "") +
          `${w.files.size} files cached`,
      });
    }
    return out;
  }

  #tick(): void {
    if (this.#stopped) return;
    for (const d of this.#do({ t: "reap", now: this.#now() }) as DeadWorker[]) {
      this.counters.deadWorkers++;
      this.#peers.delete(d.worker.key);
      this.#o.log.warn("worker dead: requeued its chunks", {
        worker: d.worker.key,
        label: d.worker.label,
        requeued: d.requeued.length,
      });
    }
    const now = this.#now();
    if (this.scheduler.prunable(now)) this.#do({ t: "prune", now });
    this.#releaseHeld();
    this.pump();
  }

  #schedulePump(): void {
    // Coalesce a burst of messages into one placement pass, still within the same turn.
    if (this.#pumpQueued) return;
    this.#pumpQueued = true;
    queueMicrotask(() => {
      this.#pumpQueued = false;
      this.pump();
    });
  }

  /** Places queued chunks now and pushes the requests (or holds them for the standby). */
  pump(): void {
    if (!this.#canPlace()) return;
    const placed = this.#do({ t: "assign", now: this.#now() }) as Assignment[];
    if (placed.length === 0) return;
    const seq = this.#events.lastSeq;
    if (this.#events.followerActive(this.#mono(), ACK_WAIT_MS) && this.#events.acked < seq) {
      this.counters.heldForStandby += placed.length;
      for (const a of placed) this.#held.push({ a, seq });
      return;
    }
    for (const a of placed) this.#push(a);
  }

  /**
   * `reply` once the standby holds the state change just made (at once without a standby): a
   * worker told its chunk_finished was taken need not send it again, so the standby must know.
   */
  #whenAcked(reply: Message): Message | Promise<Message> {
    const ev = this.#events;
    const seq = ev.lastSeq;
    if (ev.acked >= seq || !ev.followerActive(this.#mono(), ACK_WAIT_MS)) return reply;
    const { promise, resolve, reject } = Promise.withResolvers<Message>();
    this.#ackWaiters.push({ seq, resolve: () => resolve(reply), reject });
    return promise;
  }

  /**
   * Pushes the held placements and answers the held replies the standby has acknowledged (all,
   * once it went silent).
   */
  #releaseHeld(): void {
    const ev = this.#events;
    const all = !ev.followerActive(this.#mono(), ACK_WAIT_MS);
    let k = 0;
    while (k < this.#ackWaiters.length && (all || this.#ackWaiters[k].seq <= ev.acked)) k++;
    for (const w of this.#ackWaiters.splice(0, k)) w.resolve();
    if (this.#held.length === 0) return;
    let n = 0;
    while (n < this.#held.length && (all || this.#held[n].seq <= ev.acked)) n++;
    for (const { a } of this.#held.splice(0, n)) {
      if (this.#canPlace()) this.#push(a);
      else {
        this.counters.droppedOnLapse++;
        this.#handBack(a);
      }
    }
  }

  /** Returns a placement that was never pushed to the queue (same attempt, elsewhere). */
  #handBack(a: Assignment): void {
    this.#do({
      t: "refused",
      now: this.#now(),
      worker: a.worker.id,
      job: a.job.job,
      chunk: a.chunkIndex,
      attempt: a.attempt,
    });
  }

  /**
   * The ticket, read capabilities (one per input file, one for the program file) and owner of a
   * worker_request (nothing but the owner in insecure mode).
   *
   * Routing-id hijack. Pushes are addressed by routing id, and the ROUTER lets a new connection
   * take over a routing id (ROUTER_HANDOVER, so a restarted worker gets its pushes at once).
   * Any process with a valid worker key can therefore connect with another worker's routing id
   * and receive that worker's worker_requests for as long as it holds the id. What it gets is
   * worth nothing to it: the ticket and capabilities are minted for the key the node id is
   * bound to (the victim's, WorkerInfo.auth), never for the key of whoever holds the
   * connection, and masters and storage check them against the key of the sender, which
   * CURVE authenticates: the hijacker can neither fetch the inputs (storage: capability for
   * another key) nor report a result (masters: ticket for another key). It cannot take the
   * binding either: a registration, heartbeat or chunk_finished for the victim's node id from
   * its key, or one for its own node id sent through the victim's routing id, is FORBIDDEN
   * (#checkWorkerKey). What is left is denial of service while it holds the id: it may ack and
   * drop the requests (rpc does not tell which key a push reply came from), and the chunks come
   * back once the victim reports all slots free (idleGraceMs) or stops heartbeating (dead),
   * and with another attempt number, whose ticket the hijacker never saw. Whichever of the
   * two connected last holds the id; revoking the hijacker's key ends it for good.
   */
  #authFor(a: Assignment): Partial<WorkerRequest> {
    const out: Partial<WorkerRequest> = a.job.owner ? { owner: a.job.owner } : {};
    const secret = this.#creds?.clusterSecret;
    const key = a.worker.auth?.publicKey;
    if (!secret || !key) return out;
    const capExpiryMs = this.#now() + (a.job.timeLimitMs || NO_LIMIT_CAP_MS) +
      (this.#o.capMarginMs ?? CAP_MARGIN_MS);
    const files = a.job.inputFiles;
    const caps = new Uint8Array(CAP_BYTES * files.length);
    for (let i = 0; i < files.length; i++) {
      caps.set(readCapability(secret, key, files[i].id, capExpiryMs), CAP_BYTES * i);
    }
    out.ticket = placementTicket(secret, key, a.job.job, a.chunkIndex, a.attempt);
    out.capExpiryMs = capExpiryMs;
    out.caps = caps;
    out.programCap = readCapability(secret, key, a.job.programId, capExpiryMs);
    return out;
  }

  #push(a: Assignment): void {
    const server = this.#server!;
    const peer = this.#peers.get(a.worker.key);
    const log = this.#o.log;
    const job = a.job.job;
    const ids = { worker: a.worker.key, job: uuidToHex(job), chunk: a.chunkIndex };
    const ev = { worker: a.worker.id, job, chunk: a.chunkIndex, attempt: a.attempt };
    if (!peer) {
      // Registered workers always have a peer; be safe and hand the chunk back.
      this.#do({ t: "refused", now: this.#now(), ...ev });
      this.#schedulePump();
      return;
    }
    const req: WorkerRequest = {
      type: MessageType.WorkerRequest,
      node: this.#o.node,
      job,
      programId: a.job.programId,
      programSize: a.job.programSize,
      inputFiles: a.job.inputFiles,
      chunkIndex: a.chunkIndex,
      numChunks: a.job.numChunks,
      argument: a.job.argument,
      timeLimitMs: a.job.timeLimitMs,
      attempt: a.attempt,
      ...this.#authFor(a),
      epoch: this.epoch,
      // The job's chunk limits, as submitted: the worker resolves and enforces them.
      ...a.job.limits,
    };
    this.counters.pushed++;
    server.push(peer, req, this.#o.pushTimeoutMs ?? 5000).then((reply) => {
      const now = this.#now();
      if (reply.type === MessageType.WorkerRequestAck && reply.accepted) {
        this.counters.accepted++;
        this.#do({ t: "touch", now, id: a.worker.id });
        return;
      }
      const reason = reply.type === MessageType.WorkerRequestAck
        ? reply.reason
        : `unexpected reply type ${reply.type}`;
      this.counters.refused++;
      log.info("worker refused chunk", { ...ids, attempt: a.attempt, reason });
      this.#do({ t: "refused", now, ...ev });
      this.#schedulePump();
    }, (e) => {
      if (this.#stopped) return;
      const now = this.#now();
      const delivered = !(e instanceof RpcError) || e.kind !== "not_sent";
      if (e instanceof RpcError && e.code !== ErrorCode.Unavailable) {
        // The worker answered with an error: it did not take the chunk.
        this.counters.refused++;
        log.warn("worker answered worker_request with an error", { ...ids, error: e });
        this.#do({ t: "refused", now, ...ev });
      } else if (!delivered || this.#o.plantedBug === "place-twice") {
        // Never left this node (the worker's connection is gone): same attempt elsewhere.
        this.counters.refused++;
        log.warn("worker_request not delivered", { ...ids, peer: hexId(peer), error: e });
        this.#do({ t: "refused", now, ...ev });
      } else {
        // It may be running there; a new attempt elsewhere, the master keeps the first result.
        this.counters.unconfirmed++;
        log.warn("worker_request unconfirmed: new attempt elsewhere", { ...ids, error: e });
        this.#do({ t: "unconfirmed", now, ...ev });
      }
      this.#schedulePump();
    });
  }
}
