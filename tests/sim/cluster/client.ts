/**
 * A simulated client: submits jobs (`job_submit`, resent under the same session sequence until
 * acknowledged, as client/ does) and reads their status (`job_status_request`), through the real
 * request messages to whichever master leads. Every completed operation goes into the history
 * the linearizability checker reads, as registers (docs/testing.md, "Chaos"):
 *
 * - `sub/<client>/<seq>` is written with the job id by the submission (an unacknowledged one may
 *   take effect at any time after its first send, or never) and read by every status read of
 *   that job: the job, or nothing (NOT_FOUND);
 * - `chunk/<job>/<i>` is written with the chunk's only correct result at an unknown time after
 *   the submission, and read by every status read: that result, nothing yet, or something else
 *   (a wrong result: never linearizable).
 * @module
 */
import { ChunkState, ErrorCode, type Message, MessageType, uuidToHex } from "../../../wire/mod.ts";
import { RpcError } from "../../../lib/rpc.ts";
import { sleep } from "../../../lib/clock.ts";
import type { Operation } from "../linearizability.ts";
import type { SimHost } from "../world/net.ts";
import { MasterCaller, retryable } from "./caller.ts";
import { identity, nameId, randomId, type SimNode, type World } from "./world.ts";

/** The program and input every simulated job names (the tier holds them). */
export const PROGRAM_ID = nameId("program");
export const INPUT_ID = nameId("input");

/** An acknowledged submission. */
export interface Acked {
  client: string;
  seq: number;
  job: Uint8Array;
  jobHex: string;
  chunks: number;
  /** Virtual time of the first send (the earliest the job can have been created). */
  call: number;
  /** When every chunk was seen final by a status read (null: not yet). */
  completedAt: number | null;
}

/**
 * The output ids (hex, joined by ",") a chunk's one correct result holds, or null when the
 * workers' outputs are not known in advance (then only a success is checked).
 */
export type ExpectedOutputs = ((jobHex: string, chunk: number) => string) | null;

/** The register value a final chunk record stands for. */
function chunkValue(
  c: { state: number; outputs: { id: Uint8Array }[] },
  withOutputs: boolean,
): string | null {
  if (
    c.state !== ChunkState.Succeeded && c.state !== ChunkState.Failed &&
    c.state !== ChunkState.Cancelled
  ) {
    return null; // queued, running, lost: no result yet
  }
  const outputs = c.outputs.map((o) => uuidToHex(o.id)).join(",");
  return withOutputs ? `${c.state}:${outputs}` : `${c.state}`;
}

/** The only value a chunk's register may ever be written with. */
function expectedChunkValue(expected: ExpectedOutputs, jobHex: string, chunk: number): string {
  const s = ChunkState.Succeeded;
  return expected ? `${s}:${expected(jobHex, chunk)}` : `${s}`;
}

/** One simulated client; see module doc. */
export class SimClient implements SimNode {
  readonly name: string;
  readonly user: string;
  readonly host: SimHost;
  /** This client's acknowledged submissions. */
  readonly acked: Acked[] = [];
  /** Every client's (status reads pick from all of them: one client may see another's job). */
  readonly everyone: Acked[];
  /** Submissions given up on without an acknowledgement. */
  unacked = 0;
  reads = 0;
  #world: World;
  #masters: string[];
  #history: Operation[];
  #clientId: Uint8Array;
  #expected: ExpectedOutputs;
  #seq = 0;
  #caller: MasterCaller;
  #running = false;

  constructor(
    world: World,
    name: string,
    masters: string[],
    history: Operation[],
    everyone: Acked[],
    expected: ExpectedOutputs,
  ) {
    this.#expected = expected;
    this.#world = world;
    this.name = name;
    // One user for all clients: each may read every job (sessions are per client id anyway).
    this.user = "alice";
    this.everyone = everyone;
    this.host = world.net.host(name, identity("client", this.user));
    this.#masters = masters;
    this.#history = history;
    this.#clientId = randomId(world.rand);
    this.#caller = new MasterCaller(this.host, masters, nameId(name), world.int(0, 10));
  }

  get up(): boolean {
    return this.#running;
  }

  /** Runs the workload until `endMs` of virtual time. */
  start(endMs = 0): Promise<void> {
    this.#running = true;
    const loop = async () => {
      const clock = this.host.clock;
      await sleep(clock, this.#world.int(0, 50));
      while (clock.monotonic() < endMs) {
        const all = this.everyone;
        if (all.length === 0 || this.#world.rand() < 0.35) await this.submit(endMs);
        else await this.readStatus(all[this.#world.int(0, all.length - 1)]);
        await sleep(clock, this.#world.int(30, 250));
      }
      this.#running = false;
    };
    void loop();
    return Promise.resolve();
  }

  crash(): void {
    // Clients are not crashed by this simulation (their history would need resend semantics).
  }

  /** Submits one job, resending until acknowledged or `giveUpAt`. */
  async submit(giveUpAt: number): Promise<void> {
    const clock = this.host.clock;
    const seq = ++this.#seq;
    const chunks = this.#world.int(1, 3);
    const msg: Message = {
      type: MessageType.JobSubmit,
      node: nameId(this.name),
      client: this.#clientId,
      sequence: seq,
      numChunks: chunks,
      timeLimitMs: 60_000,
      programId: PROGRAM_ID,
      programSize: 0,
      argument: new TextEncoder().encode(`${this.name}/${seq}`),
      inputFiles: [{ id: INPUT_ID, size: 0, name: "in" }],
      programName: "prog",
    };
    const key = `sub/${this.name}/${seq}`;
    const call = clock.monotonic();
    while (clock.monotonic() < giveUpAt) {
      const r = await this.#caller.once(msg, 400);
      if (r.ok) {
        if (r.reply.type !== MessageType.JobSubmitAck || r.reply.sequence !== seq) {
          this.#world.violate(`${this.name}: submission ${seq} answered with type ${r.reply.type}`);
          return;
        }
        const jobHex = uuidToHex(r.reply.job);
        const ret = clock.monotonic();
        this.#history.push({ client: this.name, key, kind: "put", value: jobHex, call, ret });
        for (let i = 0; i < chunks; i++) {
          this.#history.push({
            client: "worker",
            key: `chunk/${jobHex}/${i}`,
            kind: "put",
            value: expectedChunkValue(this.#expected, jobHex, i),
            call,
            ret: Infinity,
          });
        }
        const a: Acked = {
          client: this.name,
          seq,
          job: r.reply.job,
          jobHex,
          chunks,
          call,
          completedAt: null,
        };
        this.acked.push(a);
        this.everyone.push(a);
        this.#world.note(`${this.name} acked seq ${seq} job ${jobHex} via ${r.via}`);
        return;
      }
      if (!retryable(r.error)) {
        this.#world.violate(`${this.name}: submission ${seq} refused: ${r.error.message}`);
        return;
      }
      await sleep(clock, this.#world.int(10, 60));
    }
    // Never acknowledged: it may still have been committed (a write that may take effect).
    this.unacked++;
    this.#history.push({ client: this.name, key, kind: "put", value: "?", call, ret: Infinity });
  }

  /** One status read of `a` (retried at other masters until one answers); true if all final. */
  async readStatus(a: Acked, attempts = 5): Promise<boolean> {
    const clock = this.host.clock;
    const msg: Message = {
      type: MessageType.JobStatusRequest,
      node: nameId(this.name),
      job: a.job,
    };
    for (let i = 0; i < attempts; i++) {
      const call = clock.monotonic();
      const r = await this.#caller.once(msg, 400);
      const ret = clock.monotonic();
      const sub = `sub/${a.client}/${a.seq}`;
      if (!r.ok) {
        const e = r.error;
        if (e instanceof RpcError && e.kind === "remote" && e.code === ErrorCode.NotFound) {
          this.reads++;
          this.#history.push({ client: this.name, key: sub, kind: "get", value: null, call, ret });
          return false;
        }
        if (!retryable(e)) {
          this.#world.violate(`${this.name}: status of ${a.jobHex} refused: ${e.message}`);
          return false;
        }
        await sleep(clock, 20);
        continue;
      }
      if (r.reply.type !== MessageType.JobStatusResponse) {
        this.#world.violate(`${this.name}: status answered with type ${r.reply.type}`);
        return false;
      }
      this.reads++;
      const st = r.reply;
      this.#history.push({ client: this.name, key: sub, kind: "get", value: a.jobHex, call, ret });
      if (st.numChunks !== a.chunks || st.chunks.length !== a.chunks) {
        this.#world.violate(`${a.jobHex}: ${st.chunks.length} chunks, submitted with ${a.chunks}`);
      }
      let final = 0;
      for (const c of st.chunks) {
        const value = chunkValue(c, this.#expected !== null);
        const key = `chunk/${a.jobHex}/${c.chunkIndex}`;
        this.#history.push({ client: this.name, key, kind: "get", value, call, ret });
        if (value === null) continue;
        final++;
        const seen = this.#world.chunkAttempts.get(key);
        if (seen === undefined) this.#world.chunkAttempts.set(key, c.attempt);
        else if (seen !== c.attempt) {
          this.#world.violate(`${key}: result of attempt ${seen} changed to attempt ${c.attempt}`);
        }
      }
      if (final === a.chunks && a.completedAt === null) a.completedAt = ret;
      return final === a.chunks;
    }
    return false;
  }
}
