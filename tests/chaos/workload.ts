/**
 * The chaos workload: concurrent clients (one per user) that store inputs, submit jobs whose
 * every chunk output can be recomputed by the checker, and read job statuses and job lists,
 * recording each operation's call and return time for the linearizability check.
 *
 * A submission is retried with the same (client id, sequence) until it is acknowledged, so the
 * exactly-once sessions of the masters are exercised by every timeout; now and then a client
 * sends an already acknowledged submission again, which must return the same job.
 * @module
 */
import { createHash } from "node:crypto";
import { mulberry32 } from "../../roles/master/raft/mod.ts";
import { LeaderClient } from "../../client/leader_client.ts";
import { ReplicatedStorage } from "../../roles/storage/replicated_client.ts";
import { MasterMembership } from "../../roles/storage/membership.ts";

import { RpcError } from "../../lib/rpc.ts";
import { Credentials } from "../../lib/security.ts";
import type { ClusterInfo } from "../../client/cluster.ts";
import {
  ChunkState,
  ErrorCode,
  type JobStatusResponse,
  type Message,
  MessageType,
  randomUuid,
  type Uuid,
  uuidFromHex,
  uuidToHex,
} from "../../wire/mod.ts";

/** A client of the storage tier as `dsys put`/`get` use it (membership from the masters). */
function tierClient(
  cluster: { masters: string[]; storage: string },
  node: Uint8Array,
  auth: Credentials,
): ReplicatedStorage {
  return new ReplicatedStorage(
    new MasterMembership(cluster.masters, node, { auth, seeds: cluster.storage.split(",") }),
    node,
    { auth },
  );
}

/**
 * The program every job runs: sleeps as its argument says (so chunks are running when faults
 * hit), reads its input through the worker's FUSE mount and prints what the checker recomputes.
 */
export const PROGRAM = `#!/bin/sh
set -e
tag=\${DSYS_ARG% *}
secs=\${DSYS_ARG#* }
sleep "$secs"
h=$(sha256sum < "$DSYS_INPUT_DIR/in" | cut -c1-16)
echo "$tag $DSYS_CHUNK_INDEX/$DSYS_CHUNK_COUNT $h"
`;

/** The stdout a chunk of a job must have produced. */
export function expectedStdout(
  s: { tag: string; chunks: number; inputHash: string },
  chunk: number,
): string {
  return `${s.tag} ${chunk}/${s.chunks} ${s.inputHash.slice(0, 16)}\n`;
}

/** One logical submission: every attempt with the same (client, sequence). */
export interface SubmitRecord {
  user: string;
  /** Client id, hex. */
  client: string;
  seq: number;
  tag: string;
  chunks: number;
  /** SHA-256 of the input, hex. */
  inputHash: string;
  /** performance.now() of the first attempt's send. */
  call: number;
  /** performance.now() of the first acknowledgement; null while none. */
  ret: number | null;
  /** The job id the acknowledgement named, hex. */
  job: string | null;
  attempts: number;
  /** Later sends of the same (client, sequence) after the acknowledgement, and their answer. */
  resends: { call: number; ret: number; job: string }[];
}

/** A status read that got an answer. */
export interface StatusRead {
  user: string;
  job: string;
  call: number;
  ret: number;
  /** False when the master answered NOT_FOUND. */
  found: boolean;
  numChunks: number;
  state: number;
  /** Per chunk: its final result as a string (see `chunkValue`), null while unfinished. */
  chunks: (string | null)[];
}

/** A job list read that got an answer (the user's own jobs). */
export interface ListRead {
  user: string;
  call: number;
  ret: number;
  jobs: string[];
}

/** Something the workload could not do that the cluster should have let it do. */
export interface WorkloadError {
  kind: "workload";
  user: string;
  what: string;
  error: string;
}

/** Everything the clients saw. */
export interface History {
  submits: SubmitRecord[];
  statusReads: StatusRead[];
  listReads: ListRead[];
  errors: WorkloadError[];
}

/** A finished chunk's result as the checker compares it: state, attempt and outputs. */
export function chunkValue(c: JobStatusResponse["chunks"][number]): string | null {
  if (c.state !== ChunkState.Succeeded && c.state !== ChunkState.Failed) return null;
  const outs = c.outputs.map((o) => `${o.name}=${uuidToHex(o.id)}`).sort().join(",");
  return `${c.state}:${c.attempt}:${outs}`;
}

/** Options of the workload. */
export interface WorkloadOptions {
  cluster: ClusterInfo;
  /** Key files (`<keys>/NAME.key`) of the users, one client each. */
  users: { name: string; key: string }[];
  seed: number;
  /** Jobs a client keeps unfinished at once. */
  inFlight?: number;
  /** Chunks per job: uniform in 1..maxChunks. */
  maxChunks?: number;
  /** Prints a line (progress, notable events). */
  say?: (line: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The running clients; `stopSubmitting` then `drain` end them. */
export class Workload {
  readonly history: History = { submits: [], statusReads: [], listReads: [], errors: [] };
  #submitting = true;
  #abort = false;
  #clients: Promise<void>[] = [];
  /** The exact message of each submission, for resends. */
  readonly #messages = new Map<SubmitRecord, Message>();
  readonly #opts: WorkloadOptions;

  constructor(opts: WorkloadOptions) {
    this.#opts = opts;
  }

  /** Starts one client per user. */
  start(): void {
    this.#clients = this.#opts.users.map((u, i) => this.#client(u, i));
  }

  /** Acknowledged submissions so far. */
  get acknowledged(): number {
    return this.history.submits.filter((s) => s.ret !== null).length;
  }

  /** No new submissions from now on (a submission being retried is still retried). */
  stopSubmitting(): void {
    this.#submitting = false;
  }

  /** Resolves once every client has seen all its acknowledged jobs finish. */
  async drain(): Promise<void> {
    await Promise.all(this.#clients);
  }

  /** Makes every client give up now (after a drain that timed out). */
  abort(): void {
    this.#abort = true;
  }

  /**
   * The final reads, once the clients are done: each user's job list and the status of each of
   * its acknowledged jobs (both recorded in the history like any read), and every chunk's stdout
   * from storage. Retries each read until answered or `deadlineMs` has passed.
   */
  async finalReads(deadlineMs: number): Promise<{
    finals: Map<string, JobStatusResponse | null>;
    outputs: Map<string, Uint8Array | string>;
  }> {
    const finals = new Map<string, JobStatusResponse | null>();
    const outputs = new Map<string, Uint8Array | string>();
    const end = performance.now() + deadlineMs;
    await Promise.all(this.#opts.users.map(async (user) => {
      const creds = Credentials.loadSync(user.key, this.#opts.cluster.keyring!);
      const node = randomUuid();
      const masters = new LeaderClient(this.#opts.cluster.masters, {
        node,
        deadlineMs: 15_000,
        auth: creds,
      });
      const storage = tierClient(this.#opts.cluster, node, creds);
      try {
        while (performance.now() < end) {
          const before = this.history.listReads.length;
          await this.#list(user.name, masters, node);
          if (this.history.listReads.length > before) break;
        }
        for (const s of this.history.submits) {
          if (s.user !== user.name || !s.job) continue;
          let st: JobStatusResponse | null = null;
          while (performance.now() < end) {
            const before = this.history.statusReads.length;
            st = await this.#status(user.name, s, masters, node);
            if (this.history.statusReads.length > before) break;
          }
          finals.set(s.job, st);
          for (const c of st?.chunks ?? []) {
            for (const o of c.outputs) {
              const id = uuidToHex(o.id);
              if (outputs.has(id)) continue;
              outputs.set(id, await storage.getBytes(o.id, 1 << 20).catch((e) => `${e}`));
            }
          }
        }
      } finally {
        await masters.close();
        await storage.close();
        creds.close();
      }
    }));
    return { finals, outputs };
  }

  async #client(user: { name: string; key: string }, index: number): Promise<void> {
    const o = this.#opts;
    const rnd = mulberry32((o.seed * 31 + index) ^ 0x3c1e);
    const creds = Credentials.loadSync(user.key, o.cluster.keyring!);
    const node = randomUuid();
    const masters = new LeaderClient(o.cluster.masters, { node, deadlineMs: 15_000, auth: creds });
    let storage: ReplicatedStorage | null = null;
    const store = async (bytes: Uint8Array, what: string): Promise<{ id: Uuid; size: number }> => {
      for (let tries = 0;; tries++) {
        storage ??= tierClient(o.cluster, node, creds);
        try {
          return await storage.putBytes(bytes);
        } catch (e) {
          // Storage killed, paused or cut off: a fresh connection once it is back.
          await storage.close().catch(() => {});
          storage = null;
          if (this.#abort) throw e;
          if (tries % 10 === 9) o.say?.(`${user.name}: still storing ${what}: ${e}`);
          await sleep(500);
        }
      }
    };
    const inFlight = new Set<SubmitRecord>();
    const finished: SubmitRecord[] = [];
    try {
      const program = await store(new TextEncoder().encode(PROGRAM), "the program");
      let seq = 0;
      while (!this.#abort && (this.#submitting || inFlight.size > 0)) {
        const r = rnd();
        if (this.#submitting && inFlight.size < (o.inFlight ?? 3)) {
          const s = await this.#submit(user.name, node, ++seq, rnd, masters, store, program);
          if (s?.job) inFlight.add(s);
        } else if (r < 0.1) {
          await this.#list(user.name, masters, node);
        } else if (r < 0.15 && finished.length + inFlight.size > 0) {
          const all = [...finished, ...inFlight];
          await this.#resend(all[Math.floor(rnd() * all.length)], masters, node);
        } else if (r < 0.2 && finished.length > 0) {
          const s = finished[Math.floor(rnd() * finished.length)];
          await this.#status(user.name, s, masters, node);
        } else if (inFlight.size > 0) {
          const list = [...inFlight];
          const s = list[Math.floor(rnd() * list.length)];
          const st = await this.#status(user.name, s, masters, node);
          if (st && (st.state === ChunkState.Succeeded || st.state === ChunkState.Failed)) {
            inFlight.delete(s);
            finished.push(s);
          }
        }
        await sleep(50 + Math.floor(rnd() * 200));
      }
    } catch (e) {
      if (!this.#abort) {
        this.history.errors.push({
          kind: "workload",
          user: user.name,
          what: "client",
          error: `${e}`,
        });
      }
    } finally {
      await masters.close();
      await (storage as ReplicatedStorage | null)?.close();
      creds.close();
    }
  }

  /** Stores an input, then submits a job until acknowledged (null: gave up, recorded). */
  async #submit(
    user: string,
    node: Uuid,
    seq: number,
    rnd: () => number,
    masters: LeaderClient,
    store: (b: Uint8Array, what: string) => Promise<{ id: Uuid; size: number }>,
    program: { id: Uuid; size: number },
  ): Promise<SubmitRecord | null> {
    const input = new Uint8Array(512 + Math.floor(rnd() * 32 * 1024));
    for (let i = 0; i < input.length; i++) input[i] = Math.floor(rnd() * 256);
    const inputHash = createHash("sha256").update(input).digest("hex");
    const file = await store(input, "an input");
    const chunks = 1 + Math.floor(rnd() * (this.#opts.maxChunks ?? 6));
    const secs = (0.2 + rnd() * 1.8).toFixed(1);
    const tag = `${user}-${uuidToHex(node).slice(0, 8)}-${seq}`;
    const msg: Message = {
      type: MessageType.JobSubmit,
      node,
      client: node,
      sequence: seq,
      numChunks: chunks,
      timeLimitMs: 120_000,
      programId: program.id,
      programSize: program.size,
      argument: new TextEncoder().encode(`${tag} ${secs}`),
      inputFiles: [{ id: file.id, name: "in", size: 0 }],
      programName: "chaos.sh",
    };
    const rec: SubmitRecord = {
      user,
      client: uuidToHex(node),
      seq,
      tag,
      chunks,
      inputHash,
      call: performance.now(),
      ret: null,
      job: null,
      attempts: 0,
      resends: [],
    };
    this.history.submits.push(rec);
    this.#messages.set(rec, msg);
    while (!this.#abort) {
      rec.attempts++;
      try {
        const r = await masters.request(msg);
        if (r.type !== MessageType.JobSubmitAck) throw new Error(`reply of type ${r.type}`);
        rec.ret = performance.now();
        rec.job = uuidToHex(r.job);
        return rec;
      } catch (e) {
        if (
          e instanceof RpcError &&
          (e.code === ErrorCode.Unavailable || e.code === ErrorCode.NotLeader)
        ) {
          continue; // the leader client's deadline passed: the same (client, sequence) again
        }
        this.history.errors.push({ kind: "workload", user, what: `submit ${tag}`, error: `${e}` });
        return null;
      }
    }
    return null;
  }

  /** Sends an acknowledged submission again: an answer must name the same job. */
  async #resend(s: SubmitRecord, masters: LeaderClient, node: Uuid): Promise<void> {
    const call = performance.now();
    try {
      const r = await masters.request({ ...this.#messages.get(s)!, node });
      if (r.type === MessageType.JobSubmitAck) {
        s.resends.push({ call, ret: performance.now(), job: uuidToHex(r.job) });
      }
    } catch { /* unanswered: no evidence either way */ }
  }

  async #status(
    user: string,
    s: SubmitRecord,
    masters: LeaderClient,
    node: Uuid,
  ): Promise<JobStatusResponse | null> {
    const call = performance.now();
    try {
      const r = await masters.request({
        type: MessageType.JobStatusRequest,
        node,
        job: uuidFromHex(s.job!),
      });
      if (r.type !== MessageType.JobStatusResponse) return null;
      this.history.statusReads.push({
        user,
        job: s.job!,
        call,
        ret: performance.now(),
        found: true,
        numChunks: r.numChunks,
        state: r.state,
        chunks: r.chunks.map(chunkValue),
      });
      return r;
    } catch (e) {
      if (e instanceof RpcError && e.code === ErrorCode.NotFound) {
        this.history.statusReads.push({
          user,
          job: s.job!,
          call,
          ret: performance.now(),
          found: false,
          numChunks: 0,
          state: 0,
          chunks: [],
        });
      }
      return null;
    }
  }

  async #list(user: string, masters: LeaderClient, node: Uuid): Promise<void> {
    const call = performance.now();
    try {
      const r = await masters.request({ type: MessageType.JobListRequest, node });
      if (r.type !== MessageType.JobListResponse) return;
      this.history.listReads.push({
        user,
        call,
        ret: performance.now(),
        jobs: r.jobs.map((j) => uuidToHex(j.job)),
      });
    } catch { /* unanswered */ }
  }
}
