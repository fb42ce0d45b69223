/**
 * The balancer's I/O shell: serves the ROUTER socket, feeds messages to the ChunkScheduler
 * and carries out its placements by pushing `worker_request`s to workers.
 *
 * Balancer state is soft: the master re-dispatches every unfinished job periodically and
 * workers re-register when a heartbeat is answered NOT_FOUND, so a restarted balancer
 * rebuilds what it needs within one re-dispatch period. Nothing here needs to be durable.
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import { hexId, RequestError, RpcError, type RpcServer } from "../../lib/rpc.ts";
import {
  ErrorCode,
  type Message,
  MessageType,
  type NodeEntry,
  NodeFlags,
  NodeRole,
  NodeState,
  uuidToHex,
  type WorkerRequest,
} from "../../wire/mod.ts";
import {
  type Assignment,
  ChunkScheduler,
  freeOf,
  SchedulerError,
  type SchedulerOptions,
} from "./chunk_scheduler.ts";

/** Options of the balancer service. */
export interface BalancerServiceOptions extends SchedulerOptions {
  /** This balancer's node uuid. */
  node: Uint8Array;
  /** The endpoint it serves (reported in node lists). */
  endpoint: string;
  log: Logger;
  /** Dead-worker detection and assignment period, ms. */
  tickMs?: number;
  /** How long to wait for a worker's worker_request_ack, ms. */
  pushTimeoutMs?: number;
  /** Clock (epoch ms); tests may pass their own. */
  now?: () => number;
}

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
}

/** Serves balancer requests and drives the scheduler; see module doc. */
export class BalancerService {
  readonly scheduler: ChunkScheduler;
  readonly counters: BalancerCounters = {
    dispatches: 0,
    pushed: 0,
    accepted: 0,
    refused: 0,
    unconfirmed: 0,
    finished: 0,
    staleFinished: 0,
    deadWorkers: 0,
  };
  #o: BalancerServiceOptions;
  #server: RpcServer | null = null;
  /** Worker key -> routing id of its DEALER (where to push work). */
  #peers = new Map<string, Uint8Array>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #pumpQueued = false;
  #now: () => number;
  #stopped = false;

  constructor(o: BalancerServiceOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.scheduler = new ChunkScheduler(o);
  }

  /** Starts ticking and pushing work through `server` (whose handler must be `handle`). */
  start(server: RpcServer): void {
    this.#server = server;
    this.#stopped = false;
    this.#timer = setInterval(() => this.#tick(), this.#o.tickMs ?? 100);
    this.#schedulePump();
  }

  /** Stops ticking; pending pushes are left to the server's close. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** The RpcServer handler. */
  handle = (msg: Message, peer: Uint8Array): Message | null => {
    const now = this.#now();
    const ok = (value = 0): Message => ({ type: MessageType.Ok, node: this.#o.node, value });
    try {
      switch (msg.type) {
        case MessageType.JobDispatch: {
          this.counters.dispatches++;
          const r = this.scheduler.dispatch(
            {
              job: msg.job,
              numChunks: msg.numChunks,
              timeLimitMs: msg.timeLimitMs,
              program: msg.program,
              argument: msg.argument,
              inputFiles: msg.inputFiles,
            },
            msg.chunks,
            now,
          );
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
          const key = uuidToHex(msg.node);
          this.#peers.set(key, peer.slice());
          const { requeued } = this.scheduler.register(
            msg.node,
            msg.slots,
            msg.freeSlots,
            msg.files,
            msg.label,
            now,
          );
          this.#o.log.info("worker registered", {
            worker: key,
            slots: msg.slots,
            files: msg.files.length,
            label: msg.label,
            requeued: requeued.length,
          });
          this.#schedulePump();
          return ok();
        }
        case MessageType.WorkerHeartbeat: {
          this.scheduler.heartbeat(
            msg.node,
            msg.slots,
            msg.freeSlots,
            msg.added,
            msg.evicted,
            now,
          );
          // A worker that reconnected has a new DEALER: push to the current one.
          this.#peers.set(uuidToHex(msg.node), peer.slice());
          this.#schedulePump();
          return ok();
        }
        case MessageType.ChunkFinished: {
          this.scheduler.touch(msg.node, now);
          const fresh = this.scheduler.finished(
            msg.node,
            msg.job,
            msg.chunkIndex,
            msg.attempt,
            msg.state,
            now,
          );
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
          return ok(fresh ? 1 : 0);
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

  /** This balancer and its workers as node-list entries. */
  nodes(): NodeEntry[] {
    const now = this.#now();
    const st = this.scheduler.stats();
    const dead = this.scheduler.opts.deadAfterMs;
    const out: NodeEntry[] = [{
      id: this.#o.node,
      role: NodeRole.Balancer,
      state: NodeState.Alive,
      flags: NodeFlags.Leader,
      slots: st.slots,
      freeSlots: st.freeSlots,
      lastSeenMs: now,
      endpoint: this.#o.endpoint,
    }];
    for (const w of this.scheduler.workers()) {
      out.push({
        id: w.id,
        role: NodeRole.Worker,
        // Half the dead timeout without a word: worth showing, not yet worth acting on.
        state: now - w.lastSeenMs > dead / 2 ? NodeState.Suspect : NodeState.Alive,
        flags: 0,
        slots: w.slots,
        freeSlots: freeOf(w),
        lastSeenMs: w.lastSeenMs,
        endpoint: w.label,
      });
    }
    return out;
  }

  #tick(): void {
    if (this.#stopped) return;
    for (const d of this.scheduler.reapDead(this.#now())) {
      this.counters.deadWorkers++;
      this.#peers.delete(d.worker.key);
      this.#o.log.warn("worker dead: requeued its chunks", {
        worker: d.worker.key,
        label: d.worker.label,
        requeued: d.requeued.length,
      });
    }
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

  /** Places queued chunks now and pushes the requests. */
  pump(): void {
    if (this.#stopped || !this.#server) return;
    for (const a of this.scheduler.assign(this.#now())) this.#push(a);
  }

  #push(a: Assignment): void {
    const server = this.#server!;
    const peer = this.#peers.get(a.worker.key);
    const log = this.#o.log;
    const job = a.job.job;
    const ids = { worker: a.worker.key, job: uuidToHex(job), chunk: a.chunkIndex };
    if (!peer) {
      // Registered workers always have a peer; be safe and hand the chunk back.
      this.scheduler.refused(a.worker.id, job, a.chunkIndex, a.attempt, this.#now());
      return;
    }
    const req: WorkerRequest = {
      type: MessageType.WorkerRequest,
      node: this.#o.node,
      job,
      program: a.job.program,
      inputFiles: a.job.inputFiles,
      chunkIndex: a.chunkIndex,
      numChunks: a.job.numChunks,
      argument: a.job.argument,
      timeLimitMs: a.job.timeLimitMs,
      attempt: a.attempt,
    };
    this.counters.pushed++;
    server.push(peer, req, this.#o.pushTimeoutMs ?? 5000).then((reply) => {
      const now = this.#now();
      if (reply.type === MessageType.WorkerRequestAck && reply.accepted) {
        this.counters.accepted++;
        this.scheduler.touch(a.worker.id, now);
        this.scheduler.accepted(a.worker.id, job, a.chunkIndex, a.attempt);
        return;
      }
      const reason = reply.type === MessageType.WorkerRequestAck
        ? reply.reason
        : `unexpected reply type ${reply.type}`;
      this.counters.refused++;
      log.info("worker refused chunk", { ...ids, attempt: a.attempt, reason });
      this.scheduler.refused(a.worker.id, job, a.chunkIndex, a.attempt, now);
      this.#schedulePump();
    }, (e) => {
      if (this.#stopped) return;
      const now = this.#now();
      const delivered = !(e instanceof RpcError) || e.code !== ErrorCode.Unavailable ||
        !/send failed/.test(e.text);
      if (e instanceof RpcError && e.code !== ErrorCode.Unavailable) {
        // The worker answered with an error: it did not take the chunk.
        this.counters.refused++;
        log.warn("worker answered worker_request with an error", { ...ids, error: e });
        this.scheduler.refused(a.worker.id, job, a.chunkIndex, a.attempt, now);
      } else if (!delivered) {
        // Never left this node (the worker's connection is gone): same attempt elsewhere.
        this.counters.refused++;
        log.warn("worker_request not delivered", { ...ids, peer: hexId(peer), error: e });
        this.scheduler.refused(a.worker.id, job, a.chunkIndex, a.attempt, now);
      } else {
        // It may be running there; a new attempt elsewhere, the master keeps the first result.
        this.counters.unconfirmed++;
        log.warn("worker_request unconfirmed: new attempt elsewhere", { ...ids, error: e });
        this.scheduler.unconfirmed(a.worker.id, job, a.chunkIndex, a.attempt, now);
      }
      this.#schedulePump();
    });
  }
}
