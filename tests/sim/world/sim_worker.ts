/**
 * A simulated worker for the deterministic simulator: the real worker's protocol, with the real
 * pure core (roles/worker/chunk_lifecycle.ts `ChunkLifecycle`: fencing by balancer epoch,
 * duplicate pushes, unacknowledged `chunk_finished` kept and re-sent, report retries with
 * backoff), the real failover client to the balancers (roles/balancer/client.ts) and the real
 * client of the masters (roles/master/client.ts), all on a simulated host's `Clock` and `Dial`.
 * What is simulated is only the I/O the core asks for: fetching the program, preparing the slot,
 * running the program (it "ends" after a seeded delay, 0 = at once, with exit code 0), uploading
 * (no outputs) and cleaning up each take a few virtual milliseconds.
 *
 * The shell mirrors roles/worker/main.ts: the balancer loop sends the unacknowledged finishes
 * first, then a registration (until one is acknowledged, or after an error answer) or a
 * heartbeat, every `heartbeatMs` (or the longer interval the balancer's reply tells) or when the
 * core asks to `wake`; pushed `worker_request`s are
 * answered at once with the core's `ack`; `job_cancel` with the count of chunks stopped.
 *
 * Faults: {@link SimWorker.crash} is a `kill -9` (the caller crashes the host too, so nothing
 * of this incarnation is heard of again; a new SimWorker with the same node id is the restart,
 * which like the real one has forgotten the newest epoch and every chunk);
 * {@link SimWorker.pause} is a SIGSTOP for a while: nothing it receives is handled and nothing it
 * was doing goes on until it resumes (its timers fire late, replies wait, as in a stopped process).
 * @module
 */
import type { Clock, TimerId } from "../../../lib/clock.ts";
import type { Dial } from "../../../lib/transport.ts";
import { RequestError, RpcError } from "../../../lib/rpc.ts";
import { BalancerClient } from "../../../roles/balancer/client.ts";
import { LeaderClient } from "../../../roles/master/client.ts";
import { heartbeatPeriod } from "../../../roles/worker/heartbeat.ts";
import {
  type ChunkFinished,
  ErrorCode,
  type Message,
  MessageType,
  type Uuid,
  uuidToHex,
  type WorkerRequest,
  type WorkerStatus,
} from "../../../wire/mod.ts";
import {
  ChunkLifecycle,
  type FinishedAnswer,
  type LifecycleEffect,
  type LifecycleInput,
  type StatusAnswer,
} from "../../../roles/worker/chunk_lifecycle.ts";

/** What a simulated host gives the code running on it. */
export interface SimHostLike {
  /** The host's clock (its timers die when it crashes). */
  readonly clock: Clock;
  /** Dials from this host. */
  readonly dial: Dial;
}

/** What a simulated worker tells the simulation's checker (all optional). */
export interface SimWorkerObserver {
  /** The core accepted `req` as a new chunk attempt (it holds it from now on). */
  accepted?(worker: SimWorker, req: WorkerRequest): void;
  /** The chunk's program started (`start`) or ended (`end`: ran to its end, or was killed). */
  program?(worker: SimWorker, req: WorkerRequest, what: "start" | "end"): void;
  /** A master answered a final worker_status (`value` 1: the result was taken). */
  statusAnswered?(worker: SimWorker, status: WorkerStatus, answer: StatusAnswer): void;
  /** A balancer answered chunk_finished. */
  finishedAnswered?(worker: SimWorker, report: ChunkFinished, answer: FinishedAnswer): void;
}

/** Options of a {@link SimWorker}. */
export interface SimWorkerOptions {
  host: SimHostLike;
  /** The worker's node id (also its routing id, as the real worker's). */
  node: Uuid;
  /** Balancer endpoints, in the order tried. */
  balancers: string[];
  /** Master endpoints. */
  masters: string[];
  slots: number;
  /** Seeded PRNG of this worker (delays of its simulated I/O). */
  rand: () => number;
  /** How long the program of a chunk runs, ms (0: ends at once). Default: 0. */
  runMs?: (req: WorkerRequest, rand: () => number) => number;
  /** Heartbeat period, ms (the real worker's default 500). */
  heartbeatMs?: number;
  /** A name for logs and checkers. */
  name?: string;
  observer?: SimWorkerObserver;
}

/** Longest simulated I/O step (fetch, prepare, upload, clean-up), ms. */
const IO_MAX_MS = 5;

/** The real worker's protocol with simulated chunk I/O; see module doc. */
export class SimWorker {
  readonly node: Uuid;
  readonly name: string;
  readonly core: ChunkLifecycle;
  #o: SimWorkerOptions;
  #clock: Clock;
  #balancer: BalancerClient;
  #masters: LeaderClient;
  #registered = false;
  #closing = false;
  #dead = false;
  #stepping = false;
  #inputs: LifecycleInput[] = [];
  #wake: (() => void) | null = null;
  #retryTimer: TimerId | undefined;
  #retryAtMs = Infinity;
  /** Programs running: key -> the timer that ends them and the request. */
  #running = new Map<string, { timer: TimerId; req: WorkerRequest }>();
  /** Program fetches that may be aborted. */
  #fetching = new Map<string, TimerId>();
  /** Resolves when a pause ends (null: not paused). */
  #paused: Promise<void> | null = null;
  /** Registrations acknowledged. */
  registrations = 0;

  constructor(o: SimWorkerOptions) {
    this.#o = o;
    this.node = o.node.slice();
    this.name = o.name ?? uuidToHex(o.node).slice(0, 8);
    this.#clock = o.host.clock;
    this.core = new ChunkLifecycle(this.node, o.slots);
    const dial = this.#gatedDial(o.host.dial);
    this.#masters = new LeaderClient(o.masters, {
      node: this.node,
      auth: null,
      clock: this.#clock,
      dial,
    });
    this.#balancer = new BalancerClient(o.balancers, {
      node: this.node,
      timeoutMs: 5000,
      routingId: this.node,
      onRequest: (m) => this.#onRequest(m),
      auth: null,
      dial,
    });
  }

  /** Starts the balancer loop. */
  start(): void {
    void this.#balancerLoop();
  }

  /** True once crashed. */
  get dead(): boolean {
    return this.#dead;
  }

  /** kill -9: this incarnation stops for good (crash its host too). */
  crash(): void {
    this.#dead = true;
    this.#closing = true;
    this.#wake?.();
  }

  /** SIGSTOP for `ms` of virtual time, then SIGCONT. */
  pause(ms: number): void {
    if (this.#paused || this.#dead) return;
    this.#paused = new Promise((resolve) => {
      this.#clock.setTimeout(() => {
        this.#paused = null;
        resolve();
      }, ms);
    });
  }

  /** True while paused. */
  get paused(): boolean {
    return this.#paused !== null;
  }

  /** Waits while paused; rejects (never settles, in effect) once crashed. */
  async #alive(): Promise<void> {
    while (this.#paused) await this.#paused;
    if (this.#dead) await new Promise(() => {}); // a dead process does nothing more
  }

  /** A Dial whose replies, errors and pushed requests wait for a pause to end. */
  #gatedDial(dial: Dial): Dial {
    return (endpoint, opts) => {
      const onRequest = opts.onRequest;
      const ch = dial(endpoint, {
        ...opts,
        ...(onRequest
          ? {
            onRequest: async (m: Message) => {
              await this.#alive();
              return onRequest(m);
            },
          }
          : {}),
      });
      return {
        endpoint: ch.endpoint,
        request: (msg, timeoutMs) =>
          ch.request(msg, timeoutMs).then(
            async (r) => {
              await this.#alive();
              return r;
            },
            async (e) => {
              await this.#alive();
              throw e;
            },
          ),
        send: (msg) => ch.send(msg),
        close: () => ch.close(),
      };
    };
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = this.#clock.setTimeout(r, ms);
      this.#wake = () => {
        this.#clock.clearTimeout(t);
        r();
      };
    });
  }

  // ------------------------------------------------------------------------------------------
  // Balancer: registration, heartbeats, pushed requests (as roles/worker/main.ts)

  async #balancerLoop(): Promise<void> {
    const own = this.#o.heartbeatMs ?? 500;
    while (!this.#closing) {
      await this.#alive();
      // What the balancer told (the ok reply's value); no answer: our own.
      let told: number | null = null;
      try {
        await this.#flushFinished();
        told = !this.#registered ? await this.#register() : await this.#heartbeat();
      } catch (e) {
        if (this.#closing) break;
        const timeout = e instanceof RpcError && e.code === ErrorCode.Unavailable;
        if (!timeout && this.#registered) {
          this.#registered = false;
          continue;
        }
      }
      await this.#sleep(heartbeatPeriod(own, told));
      this.#wake = null;
    }
  }

  async #flushFinished(): Promise<void> {
    for (let head = this.core.unackedHead(); head && !this.#closing;) {
      await this.#balancer.request(head, 2000).catch((e) => {
        if (!(e instanceof RpcError) || e.code === ErrorCode.Unavailable) throw e;
      });
      this.#step({ kind: "resent", report: head });
      head = this.core.unackedHead();
    }
  }

  async #register(): Promise<number> {
    const reply = await this.#balancer.request({
      type: MessageType.WorkerRegister,
      node: this.node,
      slots: this.#o.slots,
      freeSlots: this.core.freeSlots(),
      files: [],
      label: this.name,
      endpoint: "",
    }, 2000);
    this.#registered = true;
    this.registrations++;
    return reply.type === MessageType.Ok ? reply.value : 0;
  }

  async #heartbeat(): Promise<number> {
    const reply = await this.#balancer.request({
      type: MessageType.WorkerHeartbeat,
      node: this.node,
      slots: this.#o.slots,
      freeSlots: this.core.freeSlots(),
      added: [],
      evicted: [],
    }, 2000);
    return reply.type === MessageType.Ok ? reply.value : 0;
  }

  #onRequest(m: Message): Message {
    if (m.type === MessageType.JobCancel) {
      const fx = this.#step({
        kind: "cancel",
        job: m.job,
        chunks: m.chunks.map((c) => c.chunkIndex),
      });
      const ack = fx.find((e) => e.kind === "cancel_ack");
      return { type: MessageType.Ok, node: this.node, value: ack?.count ?? 0 };
    }
    if (m.type !== MessageType.WorkerRequest) {
      throw new RequestError(ErrorCode.WrongRole, `worker does not serve message type ${m.type}`);
    }
    const ack = this.#step({ kind: "place", req: m }).find((e) => e.kind === "ack");
    if (!ack || ack.kind !== "ack") throw new Error("worker_request answered while stepping");
    if (ack.accepted && ack.why === "new") this.#o.observer?.accepted?.(this, m);
    return {
      type: MessageType.WorkerRequestAck,
      node: this.node,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: m.attempt,
      accepted: ack.accepted,
      reason: ack.reason,
    };
  }

  // ------------------------------------------------------------------------------------------
  // The core and its (simulated) effects

  #step(input: LifecycleInput): LifecycleEffect[] {
    if (this.#dead) return [];
    if (this.#stepping) {
      this.#inputs.push(input);
      return [];
    }
    this.#stepping = true;
    let first: LifecycleEffect[] | null = null;
    try {
      for (let next: LifecycleInput | undefined = input; next; next = this.#inputs.shift()) {
        const fx = this.core.step(next);
        first ??= fx;
        for (const e of fx) this.#do(e);
      }
    } finally {
      this.#stepping = false;
    }
    this.#armRetry();
    return first ?? [];
  }

  /** Feeds `input` after `ms` of simulated I/O (and after any pause). */
  #later(ms: number, input: () => LifecycleInput): TimerId {
    return this.#clock.setTimeout(() => {
      void this.#alive().then(() => this.#step(input()));
    }, ms);
  }

  #io(): number {
    return 1 + Math.floor(this.#o.rand() * IO_MAX_MS);
  }

  #armRetry(): void {
    const due = this.core.nextDueMs();
    if (due === null || due >= this.#retryAtMs) return;
    this.#clock.clearTimeout(this.#retryTimer);
    this.#retryAtMs = due;
    this.#retryTimer = this.#clock.setTimeout(() => {
      this.#retryTimer = undefined;
      this.#retryAtMs = Infinity;
      void this.#alive().then(() => this.#step({ kind: "tick", nowMs: this.#clock.now() }));
    }, Math.max(0, due - this.#clock.now()));
  }

  #do(e: LifecycleEffect): void {
    switch (e.kind) {
      case "ack":
      case "cancel_ack":
        return;
      case "fetch_program":
        this.#fetching.set(
          e.key,
          this.#later(this.#io(), () => {
            this.#fetching.delete(e.key);
            return { kind: "program_ready", key: e.key };
          }),
        );
        return;
      case "abort_fetch": {
        const t = this.#fetching.get(e.key);
        if (t === undefined) return;
        this.#clock.clearTimeout(t);
        this.#fetching.delete(e.key);
        this.#later(0, () => ({ kind: "program_failed", key: e.key, text: "aborted" }));
        return;
      }
      case "prepare":
        this.#later(this.#io(), () => ({ kind: "prepared", key: e.key }));
        return;
      case "spawn": {
        const req = this.core.chunk(e.key)!.req;
        const ms = this.#o.runMs?.(req, this.#o.rand) ?? 0;
        this.#later(0, () => ({ kind: "spawned", key: e.key, pid: 1 }));
        this.#o.observer?.program?.(this, req, "start");
        const timer = this.#later(ms, () => this.#ended(e.key, false, ms));
        this.#running.set(e.key, { timer, req });
        return;
      }
      case "kill": {
        const r = this.#running.get(e.key);
        if (!r) return;
        this.#clock.clearTimeout(r.timer);
        this.#later(0, () => this.#ended(e.key, true, 0));
        return;
      }
      case "report_running":
        this.#masters.request(e.status, e.timeoutMs).catch(() => {});
        return;
      case "upload":
        this.#later(this.#io(), () => ({ kind: "uploaded", key: e.key, outputs: [] }));
        return;
      case "clean_up":
        this.#later(this.#io(), () => ({ kind: "cleaned", key: e.key, slotUsable: true }));
        return;
      case "send_status":
        void this.#sendStatus(e.key, e.status, e.timeoutMs);
        return;
      case "send_lost":
        this.#masters.request(e.status, e.timeoutMs).catch(() => {});
        return;
      case "send_finished":
        void this.#sendFinished(e.report, e.hadInputs, e.timeoutMs);
        return;
      case "wake":
        this.#wake?.();
        return;
      case "forget":
        return;
      default: {
        // A new effect of the core must be simulated here, not dropped.
        const never: never = e;
        throw new Error(`sim worker: effect ${JSON.stringify(never)} not simulated`);
      }
    }
  }

  #ended(key: string, killed: boolean, ms: number): LifecycleInput {
    const r = this.#running.get(key);
    this.#running.delete(key);
    if (r) this.#o.observer?.program?.(this, r.req, "end");
    return {
      kind: "exited",
      key,
      end: {
        exitCode: 0,
        signal: killed ? 9 : 0,
        timedOut: false,
        aborted: killed,
        durationMs: ms,
        stderrTail: new Uint8Array(0),
        limitHit: null,
      },
    };
  }

  async #sendStatus(key: string, status: WorkerStatus, timeoutMs: number): Promise<void> {
    let answer: StatusAnswer = "acked";
    try {
      await this.#masters.request(status, timeoutMs);
    } catch (e) {
      answer = e instanceof RpcError &&
          (e.code === ErrorCode.Unavailable || e.code === ErrorCode.NotLeader)
        ? "retry"
        : "rejected";
    }
    await this.#alive();
    this.#o.observer?.statusAnswered?.(this, status, answer);
    this.#step({ kind: "status_answer", key, answer, nowMs: this.#clock.now() });
  }

  async #sendFinished(report: ChunkFinished, hadInputs: boolean, timeoutMs: number) {
    let answer: FinishedAnswer = "acked";
    try {
      await this.#balancer.request(report, timeoutMs);
    } catch (e) {
      answer = e instanceof RpcError && e.code !== ErrorCode.Unavailable
        ? "rejected"
        : "unavailable";
    }
    await this.#alive();
    this.#o.observer?.finishedAnswered?.(this, report, answer);
    this.#step({ kind: "finished_answer", report, answer, hadInputs });
  }

  /** Programs running now (for checkers). */
  runningKeys(): string[] {
    return [...this.#running.keys()];
  }
}
