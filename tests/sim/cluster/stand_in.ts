/**
 * A stand-in for the balancer and its workers (until the real balancers run in this simulation,
 * tests/sim/world/sim_worker.ts): it asks the masters for the primary balancer lease as a
 * balancer does (`balancer_lease`, renewed every third of the lease), takes the `job_dispatch`es
 * the leader sends the holder, "runs" each chunk for a few virtual milliseconds and reports its
 * result with `worker_status` from a worker's key, retrying until a master takes it. Each chunk's
 * output is a function of (job, chunk), so the checks know what every recorded result must be.
 * @module
 */
import {
  ChunkState,
  ErrorCode,
  FailureCode,
  type FileEntry,
  type Message,
  MessageType,
  uuidToHex,
} from "../../../wire/mod.ts";
import { RequestError, RpcError } from "../../../lib/rpc.ts";
import { sleep } from "../../../lib/clock.ts";
import type { SimHost } from "../world/net.ts";
import { MasterCaller } from "./caller.ts";
import { identity, nameId, type SimNode, type World } from "./world.ts";

/** The output every run of (job, chunk) reports. */
export function expectedOutput(jobHex: string, chunk: number): FileEntry {
  const id = new Uint8Array(16);
  const s = `${jobHex}/${chunk}`;
  for (let i = 0; i < s.length; i++) id[i % 16] = (id[i % 16] * 33 + s.charCodeAt(i)) & 0xff;
  return { id, size: chunk + 1, name: `out-${chunk}` };
}

/** Balancer + workers stand-in; see module doc. */
export class StandIn implements SimNode {
  readonly name = "b1";
  readonly endpoint = "tcp://b1:7200";
  readonly balancer: SimHost;
  readonly worker: SimHost;
  #world: World;
  #masters: string[];
  #epoch = 0;
  /** Chunk attempts started by this incarnation (job/chunk/attempt). */
  #started = new Set<string>();
  /** Runs started in all incarnations, per job/chunk (the re-run count). */
  readonly runs = new Map<string, number>();
  #running = false;
  /** worker_status answers NOT_FOUND for a job the masters had dispatched (so committed). */
  notFound = 0;

  /** Whether a NOT_FOUND answer to a result is a violation (off when a planted bug may cause it). */
  #strict: boolean;

  constructor(world: World, masterEndpoints: string[], strict = true) {
    this.#strict = strict;
    this.#world = world;
    this.#masters = masterEndpoints;
    this.balancer = world.net.host("b1", identity("balancer", "b1"));
    this.worker = world.net.host("w1", identity("worker", "w1"));
  }

  get up(): boolean {
    return this.#running && this.balancer.alive;
  }

  start(): Promise<void> {
    this.balancer.restart();
    this.worker.restart();
    this.#running = true;
    this.#epoch = 0;
    this.#started.clear();
    const node = nameId("b1");
    this.balancer.listen(this.endpoint, (m) => this.#serve(m), node);
    const caller = new MasterCaller(this.balancer, this.#masters, node);
    const inc = this.balancer.incarnation;
    const ask = async () => {
      while (this.balancer.incarnation === inc) {
        const r = await caller.once({
          type: MessageType.BalancerLease,
          node,
          epoch: this.#epoch,
          endpoint: `b1@${this.endpoint}`,
        }, 500);
        if (this.balancer.incarnation !== inc) return;
        if (r.ok && r.reply.type === MessageType.BalancerLeaseReply && r.reply.granted) {
          this.#epoch = r.reply.epoch;
        }
        await sleep(this.balancer.clock, r.ok ? 300 : 50);
      }
    };
    void ask();
    return Promise.resolve();
  }

  crash(): void {
    this.#running = false;
    this.balancer.crash();
    this.worker.crash();
  }

  #serve(m: Message): Message {
    const node = nameId("b1");
    switch (m.type) {
      case MessageType.JobDispatch: {
        const job = uuidToHex(m.job);
        for (const c of m.chunks) {
          const key = `${job}/${c.chunkIndex}/${c.attempt}`;
          if (this.#started.has(key)) continue;
          this.#started.add(key);
          const rk = `${job}/${c.chunkIndex}`;
          this.runs.set(rk, (this.runs.get(rk) ?? 0) + 1);
          void this.#run(m.job, c.chunkIndex, c.attempt);
        }
        return { type: MessageType.Ok, node, value: 0 };
      }
      case MessageType.JobCancel:
        return { type: MessageType.Ok, node, value: 0 };
      default:
        throw new RequestError(ErrorCode.WrongRole, `stand-in serves no type ${m.type}`);
    }
  }

  /** Runs one chunk attempt and reports it until a master answers (or this worker dies). */
  async #run(job: Uint8Array, chunk: number, attempt: number): Promise<void> {
    const w = this.worker;
    const inc = w.incarnation;
    const node = nameId("w1");
    await sleep(w.clock, 5 + Math.floor(this.#world.rand() * 60));
    const caller = new MasterCaller(w, this.#masters, node, this.#world.int(0, 10));
    const jobHex = uuidToHex(job);
    let notFound = 0;
    for (let i = 0; w.incarnation === inc && i < 1000; i++) {
      const r = await caller.once({
        type: MessageType.WorkerStatus,
        node,
        job,
        state: ChunkState.Succeeded,
        chunkIndex: chunk,
        attempt,
        exitCode: 0,
        signal: 0,
        failure: FailureCode.None,
        durationMs: 10,
        outputs: [expectedOutput(jobHex, chunk)],
        stderrTail: new Uint8Array(0),
        reason: "",
      }, 500);
      if (r.ok) return;
      const e = r.error;
      if (e instanceof RpcError && e.kind === "remote" && e.code === ErrorCode.NotFound) {
        // The masters dispatched the job, so they committed it: refusing its result is wrong
        // (a real worker drops a result refused NOT_FOUND for good, and the chunk runs again).
        this.notFound++;
        this.#world.note(`worker: ${jobHex}/${chunk} answered NOT_FOUND by ${r.via}`);
        if (this.#strict) {
          this.#world.violate(`the result of ${jobHex}/${chunk} was refused NOT_FOUND by ${r.via}`);
        }
        // A new leader that has not applied the job yet, or one that never committed: a later
        // dispatch of the job starts the chunk again.
        if (++notFound >= 20) {
          this.#world.note(`worker: job ${jobHex} not found for chunk ${chunk}; dropped`);
          this.#started.delete(`${jobHex}/${chunk}/${attempt}`);
          return;
        }
      }
      await sleep(w.clock, 50);
    }
  }
}
