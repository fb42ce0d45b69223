/**
 * The client commands (`dsys put|submit|status|get|nodes`) as functions, shared by the CLI and
 * by `dsys dev`. They print nothing themselves except the progress display of `waitForJob`.
 */
import {
  ChunkState,
  type FileEntry,
  FileKeepOp,
  type JobStatusResponse,
  type KeptFileEntry,
  type LimitFields,
  type Message,
  MessageType,
  type NodeEntry,
  randomUuid,
  type Uuid,
  uuidToHex,
} from "../wire/mod.ts";
import { ReplicatedStorage } from "../roles/storage/replicated_client.ts";
import { MasterMembership } from "../roles/storage/membership.ts";
import { Credentials } from "../lib/security.ts";
import { LeaderClient } from "./leader_client.ts";
import type { ClusterInfo } from "./cluster.ts";

/** A client error a person can act on; the CLI prints `message` and exits with `exitCode`. */
export class ClientError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "ClientError";
    this.exitCode = exitCode;
  }
}

/** A connected client session (one client id; submissions numbered from 1). */
export class DsysClient {
  readonly node: Uuid = randomUuid();
  readonly cluster: ClusterInfo;
  readonly masters: LeaderClient;
  #storage: ReplicatedStorage | null = null;
  #seq = 0;

  /** The key this session uses (from the cluster info), null for an insecure cluster. */
  readonly credentials: Credentials | null;

  /** A session with the cluster; its key and keyring come from `cluster.key`/`keyring`. */
  constructor(cluster: ClusterInfo, opts: { deadlineMs?: number } = {}) {
    this.cluster = cluster;
    this.credentials = cluster.key && cluster.keyring
      ? Credentials.loadSync(cluster.key, cluster.keyring)
      : null;
    this.masters = new LeaderClient(cluster.masters, {
      node: this.node,
      deadlineMs: opts.deadlineMs ?? 30_000,
      auth: this.credentials,
    });
  }

  /**
   * The storage tier client (one per session): the membership comes from the masters; the
   * cluster's `storage` endpoints are used only while they know no storage node.
   */
  get storage(): ReplicatedStorage {
    this.#storage ??= new ReplicatedStorage(
      new MasterMembership(this.cluster.masters, this.node, {
        auth: this.credentials,
        seeds: this.cluster.storage.split(",").map((e) => e.trim()).filter(Boolean),
      }),
      this.node,
      { auth: this.credentials },
    );
    return this.#storage;
  }

  /**
   * Stores files (each on `replicas` storage nodes, default the cluster's) and keeps them for
   * this user until `unkeep` (`dsys rm FILE`); returns their ids, sizes and the nodes holding
   * them, in order. A file nothing keeps and no live job uses is deleted after the masters'
   * `--delete-grace`.
   */
  async put(
    paths: string[],
    opts: { replicas?: number } = {},
  ): Promise<{ path: string; id: Uuid; size: number; nodes: string[] }[]> {
    const out = [];
    for (const path of paths) {
      try {
        await Deno.stat(path);
      } catch {
        throw new ClientError(`${path}: no such file`);
      }
      const r = await this.storage.putFile(
        path,
        opts.replicas ? { replicas: opts.replicas } : {},
      );
      out.push({ path, ...r });
    }
    // One keep per replica count (a batch of at most 4,096 files each).
    const byReplicas = new Map<number, typeof out>();
    for (const r of out) {
      const list = byReplicas.get(r.nodes.length) ?? [];
      list.push(r);
      byReplicas.set(r.nodes.length, list);
    }
    for (const [replicas, list] of byReplicas) {
      for (let i = 0; i < list.length; i += 4096) {
        await this.keep(
          list.slice(i, i + 4096).map((r) => ({
            id: r.id,
            size: r.size,
            name: r.path.split("/").pop()!.slice(0, 255),
          })),
          replicas,
        );
      }
    }
    return out;
  }

  /** Keeps stored files for this user (committed by the masters); returns the keeps added. */
  async keep(files: { id: Uuid; size: number; name: string }[], replicas: number): Promise<number> {
    const r = await this.masters.request({
      type: MessageType.FileKeep,
      node: this.node,
      op: FileKeepOp.Keep,
      replicas,
      files,
    });
    if (r.type !== MessageType.Ok) throw unexpected(r);
    return r.value;
  }

  /** Stops keeping files (`dsys rm FILE`); returns how many this user kept. */
  async unkeep(ids: Uuid[]): Promise<number> {
    const r = await this.masters.request({
      type: MessageType.FileKeep,
      node: this.node,
      op: FileKeepOp.Unkeep,
      replicas: 0,
      files: ids.map((id) => ({ id, size: 0, name: "" })),
    });
    if (r.type !== MessageType.Ok) throw unexpected(r);
    return r.value;
  }

  /** The files this user keeps (`dsys ls`), newest first. */
  async files(): Promise<KeptFileEntry[]> {
    const r = await this.masters.request({ type: MessageType.FileListRequest, node: this.node });
    if (r.type !== MessageType.FileList) throw unexpected(r);
    return r.files;
  }

  /**
   * Submits a job; returns its id. The program is stored first, like any input (content
   * addressed and deduplicated; this client's key becomes an owner of it), and the job names it
   * by id; a program already stored by this key may be given by id and size instead of bytes.
   * Retries are exactly-once (client id + sequence).
   */
  async submit(job: {
    program: Uint8Array | { id: Uuid; size: number };
    programName: string;
    argument: string;
    chunks: number;
    inputs: { id: Uuid; name: string }[];
    timeLimitMs: number;
    /** Per-chunk limits (0 or absent: the workers' defaults). */
    limits?: LimitFields;
    /** Times each failed chunk runs again (default 0). */
    retries?: number;
    /** Cancel what is left once this many chunks failed for good (default 0: never). */
    maxFailedChunks?: number;
  }): Promise<Uuid> {
    const program = job.program instanceof Uint8Array
      ? await this.storage.putBytes(job.program)
      : job.program;
    const seq = ++this.#seq;
    const reply = await this.masters.request({
      type: MessageType.JobSubmit,
      node: this.node,
      client: this.node,
      sequence: seq,
      numChunks: job.chunks,
      timeLimitMs: job.timeLimitMs,
      programId: program.id,
      programSize: program.size,
      argument: new TextEncoder().encode(job.argument),
      inputFiles: job.inputs.map((f): FileEntry => ({ id: f.id, name: f.name, size: 0 })),
      programName: job.programName,
      ...job.limits,
      retries: job.retries ?? 0,
      maxFailedChunks: job.maxFailedChunks ?? 0,
    });
    if (reply.type !== MessageType.JobSubmitAck) throw unexpected(reply);
    return reply.job;
  }

  /** The job's status. */
  async status(job: Uuid): Promise<JobStatusResponse> {
    const r = await this.masters.request({
      type: MessageType.JobStatusRequest,
      node: this.node,
      job,
    });
    if (r.type !== MessageType.JobStatusResponse) throw unexpected(r);
    return r;
  }

  /**
   * Removes a finished job now (as the masters' retention would later): its status is NOT_FOUND
   * from then on. True if this call removed it, false if it was just removed otherwise.
   * Throws RpcError NOT_FOUND, FORBIDDEN (another user's job), BAD_REQUEST (still running).
   */
  async remove(job: Uuid): Promise<boolean> {
    const r = await this.masters.request({ type: MessageType.JobRemove, node: this.node, job });
    if (r.type !== MessageType.Ok) throw unexpected(r);
    return r.value === 1;
  }

  /**
   * Cancels a job's chunks (`chunks` empty or absent: all of them). Returns how many this call
   * cancelled (0: they were final already). Throws RpcError NOT_FOUND, FORBIDDEN, BAD_REQUEST.
   */
  async cancel(job: Uuid, chunks: number[] = []): Promise<number> {
    const r = await this.masters.request({
      type: MessageType.JobCancel,
      node: this.node,
      job,
      chunks: chunks.map((chunkIndex) => ({ chunkIndex })),
    });
    if (r.type !== MessageType.Ok) throw unexpected(r);
    return r.value;
  }

  /** All nodes the masters know. */
  async nodes(): Promise<NodeEntry[]> {
    const r = await this.masters.request({ type: MessageType.NodeListRequest, node: this.node });
    if (r.type !== MessageType.NodeListResponse) throw unexpected(r);
    return r.nodes;
  }

  /** Polls until the job finishes, calling `progress` on each change. */
  async waitForJob(
    job: Uuid,
    progress: (s: JobStatusResponse) => void = () => {},
    pollMs = 200,
  ): Promise<JobStatusResponse> {
    let last = "";
    for (;;) {
      const s = await this.status(job);
      const key = `${s.done}/${s.failed}/${s.running}`;
      if (key !== last) {
        progress(s);
        last = key;
      }
      if (
        s.state === ChunkState.Succeeded || s.state === ChunkState.Failed ||
        s.state === ChunkState.Cancelled
      ) return s;
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /** Downloads every output of a finished job into `outDir/chunk-<i>/<name>`. */
  async get(job: Uuid, outDir: string): Promise<{ files: number; bytes: number }> {
    const s = await this.status(job);
    let files = 0, bytes = 0;
    for (const c of s.chunks) {
      if (c.outputs.length === 0) continue;
      const dir = `${outDir}/chunk-${String(c.chunkIndex).padStart(5, "0")}`;
      await Deno.mkdir(dir, { recursive: true });
      for (const o of c.outputs) {
        bytes += await this.storage.getToFile(o.id, `${dir}/${o.name}`);
        files++;
      }
    }
    return { files, bytes };
  }

  /** Closes all sockets. */
  async close(): Promise<void> {
    await this.masters.close();
    await this.#storage?.close();
  }
}

function unexpected(m: Message): ClientError {
  return new ClientError(`unexpected reply of type ${m.type}`);
}

/** A FailureCode as its name in docs/wire.md (`OOM`, `PIDS`, `OUTPUT_QUOTA`, …). */
export function failureName(code: number): string {
  return [
    "NONE",
    "EXIT_CODE",
    "SIGNAL",
    "TIMEOUT",
    "SPAWN_FAILED",
    "INPUT_UNAVAILABLE",
    "OUTPUT_FAILED",
    "WORKER_LOST",
    "INTERNAL",
    "OOM",
    "PIDS",
    "OUTPUT_QUOTA",
    "CPU_TIME",
    "POLICY",
  ][code] ?? `FAILURE_${code}`;
}

/** A job state code as a word. */
export function stateName(state: number): string {
  return ["queued", "running", "succeeded", "failed", "lost", "cancelled"][state] ??
    `state ${state}`;
}

/** Renders a progress line: bar, counts, rate and ETA. */
export function progressLine(s: JobStatusResponse, startedMs: number, width = 30): string {
  const cancelled = s.chunks.filter((c) => c.state === ChunkState.Cancelled).length;
  const finished = s.done + s.failed + cancelled;
  const frac = s.numChunks ? finished / s.numChunks : 1;
  const filled = Math.round(frac * width);
  const elapsed = Math.max(1, Date.now() - startedMs) / 1000;
  const rate = finished / elapsed;
  const eta = rate > 0 ? (s.numChunks - finished) / rate : Infinity;
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  return `[${bar}] ${finished}/${s.numChunks} chunks (${s.done} ok, ${s.failed} failed, ` +
    (cancelled > 0 ? `${cancelled} cancelled, ` : "") +
    `${s.running} running) ${rate.toFixed(1)}/s ETA ${
      Number.isFinite(eta) ? eta.toFixed(0) + "s" : "?"
    }`;
}

/** Short id for display. */
export function shortId(id: Uuid): string {
  return uuidToHex(id);
}
