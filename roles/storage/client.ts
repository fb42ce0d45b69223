/**
 * Client of a storage node, used by the CLI (`dsys put`, `dsys get`), by workers and by masters
 * (`file_stat` of a submission's files, `storage_stats` for node lists).
 *
 * Throughput comes from pipelining: up to `window` chunk requests are in flight on one DEALER
 * (the server processes one upload's chunks in arrival order and group-commits them). Every
 * download is verified: the SHA-256 of the received bytes must start with the file id, before
 * anything is returned or renamed into place.
 * @module
 */
import type { Credentials } from "../../lib/security.ts";
import { createHash } from "node:crypto";
import {
  ErrorCode,
  type FilePut,
  type FilePutAck,
  FilePutFlags,
  type FileResponse,
  type FileStatResponse,
  type Message,
  MessageType,
  randomUuid,
  type StorageStats,
  type Uuid,
  uuidToHex,
} from "../../wire/mod.ts";
import { codeName, RpcClient, RpcError } from "../../lib/rpc.ts";
import { writeFull, writeViaTemp } from "../../lib/fsutil.ts";

const MiB = 1024 * 1024;

/** Counters of a storage node (storage_stats), fetch counts keyed by hex file id. */
export interface StorageStatsView {
  /** The storage node's id. */
  node: Uuid;
  gets: number;
  getBytes: number;
  puts: number;
  putBytes: number;
  files: number;
  storedBytes: number;
  /** file_request at offset 0 per file (hex id): how often each file was fetched. */
  fetchCounts: Map<string, number>;
}
/** Same as StorageStatsView (name used by callers of `stats()`). */
export type { StorageStatsView as StorageStats };

/** Options of a StorageClient. */
export interface StorageClientOptions {
  /** Bytes per file_put / file_request (default 4 MiB; the server caps reads at its limit). */
  chunkBytes?: number;
  /** Chunk requests in flight (default 8). */
  window?: number;
  /** Timeout of one request, ms (default 30 s: an fsync under load can be slow). */
  timeoutMs?: number;
  /** Retries after a timeout, lost connection or busy node, with backoff (default 6, ~5 s). */
  retries?: number;
  /** Keys (default: the process's; null: no CURVE). */
  auth?: Credentials | null;
}

/** A worker's read capability for one file (worker_request `caps`, `capExpiryMs`). */
export interface ReadCap {
  /** The 32-byte capability. */
  cap?: Uint8Array;
  /** Unix ms until which it is good. */
  capExpiryMs?: number;
}

/**
 * Upload options: the keyring user the file is stored for (workers storing outputs; a storage
 * node copying a replica: its owners, `\n`-separated), and the replicas it should have.
 */
export interface PutOptions {
  owner?: string;
  /** Replicas the cluster keeps of the file (1..MAX_REPLICAS; default: the cluster's). */
  replicas?: number;
}

/** A storage operation failed; names the file and the node/endpoint. */
export class StorageError extends Error {
  /** Wire error code (ErrorCode) when the node answered an error, else Internal/Conflict. */
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.name = "StorageError";
    this.code = code;
  }
}

/** Uploads, downloads and stats against one storage node. */
export class StorageClient {
  readonly endpoint: string;
  readonly node: Uint8Array;
  #rpc: RpcClient;
  #chunk: number;
  #window: number;
  #retries: number;
  #closed = false;

  /** Connects (lazily, ZeroMQ) to the storage node at `endpoint`; `node` is our uuid. */
  constructor(endpoint: string, node: Uint8Array = randomUuid(), opts: StorageClientOptions = {}) {
    this.endpoint = endpoint;
    this.node = node;
    this.#chunk = Math.max(1, Math.min(opts.chunkBytes ?? 4 * MiB, 16 * MiB));
    this.#window = Math.max(1, opts.window ?? 8);
    this.#retries = opts.retries ?? 6;
    this.#rpc = new RpcClient(endpoint, {
      node,
      timeoutMs: opts.timeoutMs ?? 30_000,
      serverRole: "storage",
      auth: opts.auth,
    });
  }

  #fail(e: unknown, what: string): StorageError {
    if (e instanceof StorageError) return e;
    if (e instanceof RpcError) {
      return new StorageError(e.code, `${what}: ${codeName(e.code)} from ${e.peer}: ${e.text}`);
    }
    return new StorageError(ErrorCode.Internal, `${what} (node ${this.endpoint}): ${e}`);
  }

  /**
   * One request/reply. All callers of this are idempotent reads (stat, stats, file_request), so
   * a timeout or UNAVAILABLE (node restarting, busy) is retried a few times with backoff.
   */
  async #request<T extends Message>(msg: Message, type: T["type"], what: string): Promise<T> {
    let r: Message;
    for (let attempt = 0;; attempt++) {
      try {
        r = await this.#rpc.request(msg);
        break;
      } catch (e) {
        const retry = e instanceof RpcError && e.code === ErrorCode.Unavailable &&
          attempt < this.#retries && !this.#closed;
        if (!retry) throw this.#fail(e, what);
        await backoff(attempt);
      }
    }
    if (r.type !== type) {
      throw new StorageError(ErrorCode.BadMessage, `${what}: unexpected reply type ${r.type}`);
    }
    return r as T;
  }

  /**
   * Does the file exist on the node, and how long is it. A master passes `user` to ask whether
   * it exists for that user (is one of its owners); "" asks for any.
   */
  async stat(id: Uuid, user = ""): Promise<{ exists: boolean; length: number }> {
    const r = await this.#request<FileStatResponse>(
      { type: MessageType.FileStat, node: this.node, file: id, ...(user ? { user } : {}) },
      MessageType.FileStatResponse,
      `stat of file ${uuidToHex(id)}`,
    );
    return { exists: r.exists, length: r.length };
  }

  /** The node's counters. */
  async stats(): Promise<StorageStatsView> {
    const r = await this.#request<StorageStats>(
      { type: MessageType.StorageStatsRequest, node: this.node },
      MessageType.StorageStats,
      "storage stats",
    );
    return {
      node: r.node,
      gets: r.gets,
      getBytes: r.getBytes,
      puts: r.puts,
      putBytes: r.putBytes,
      files: r.files,
      storedBytes: r.storedBytes,
      fetchCounts: new Map(r.fetchCounts.map((f) => [uuidToHex(f.file), f.count])),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Upload

  /** Uploads bytes held in memory; resolves once the node has committed them. */
  async putBytes(
    data: Uint8Array,
    opts: PutOptions = {},
  ): Promise<{ id: Uint8Array; size: number }> {
    const id = new Uint8Array(createHash("sha256").update(data).digest()).slice(0, 16);
    await this.#upload(
      id,
      data.length,
      (off, n) => Promise.resolve(data.subarray(off, off + n)),
      opts,
    );
    return { id, size: data.length };
  }

  /** Uploads a file: one pass to hash it (the id), a second streaming pass to send it. */
  async putFile(path: string, opts: PutOptions = {}): Promise<{ id: Uint8Array; size: number }> {
    const f = await Deno.open(path, { read: true });
    try {
      const h = createHash("sha256");
      const buf = new Uint8Array(4 * MiB);
      let size = 0;
      for (;;) {
        const k = await f.read(buf);
        if (k === null) break;
        h.update(buf.subarray(0, k));
        size += k;
      }
      const id = new Uint8Array(h.digest()).slice(0, 16);
      // Reads are sequential (chunks are requested in order), so one handle with seek works.
      await this.#upload(id, size, async (off, n) => {
        const b = new Uint8Array(n);
        await f.seek(off, Deno.SeekMode.Start);
        let got = 0;
        while (got < n) {
          const k = await f.read(b.subarray(got));
          if (k === null) {
            throw new StorageError(ErrorCode.Conflict, `${path} shrank while uploading`);
          }
          got += k;
        }
        return b;
      }, opts);
      return { id, size };
    } finally {
      f.close();
    }
  }

  /**
   * Sends chunks with a window in flight. The node answers an out-of-order chunk with
   * WRONG_OFFSET and the offset N to resume at (`error.value`): then the upload resumes at N (e.g. after the node
   * restarted, or an earlier chunk failed). A timeout restarts from the last durable offset.
   */
  /**
   * Uploads file `id` of `size` bytes whose bytes `read` returns (called in offset order, one
   * call at a time): for a caller that already knows the id (a replicated put hashes once and
   * uploads to several nodes). Resolves once the node has committed the file.
   */
  upload(
    id: Uuid,
    size: number,
    read: (offset: number, n: number) => Promise<Uint8Array>,
    opts: PutOptions = {},
  ): Promise<void> {
    return this.#upload(id, size, read, opts);
  }

  async #upload(
    id: Uuid,
    size: number,
    read: (offset: number, n: number) => Promise<Uint8Array>,
    opts: PutOptions,
  ): Promise<void> {
    const owner = opts.owner;
    const replicas = opts.replicas;
    const hex = uuidToHex(id);
    const what = `put of file ${hex}`;
    if (size > this.#chunk) {
      const st = await this.stat(id);
      if (st.exists && st.length === size) return; // content addressed: same id = same bytes
    }
    let start = 0;
    // `attempt` counts failures in a row without progress: a busy node that keeps accepting
    // some chunks never exhausts the retries.
    for (let attempt = 0;; attempt++) {
      const inflight: { end: number; p: Promise<FilePutAck> }[] = [];
      let next = start;
      let first = true;
      let durable = start;
      let failure: unknown = null;
      let committed = false;
      const sendNext = async () => {
        const n = Math.min(this.#chunk, size - next);
        const data = await read(next, n);
        const last = next + n === size;
        const msg: FilePut = {
          type: MessageType.FilePut,
          node: this.node,
          file: id,
          totalLength: size,
          offset: next,
          flags: last ? FilePutFlags.Last : 0,
          ...(owner ? { owner } : {}),
          ...(replicas ? { replicas } : {}),
          data,
        };
        const p = this.#rpc.request(msg) as Promise<FilePutAck>;
        p.catch(() => {}); // observed below, in order
        inflight.push({ end: next + n, p });
        next += n;
        first = false;
      };
      while (!committed && failure === null) {
        while (inflight.length < this.#window && (next < size || (first && size === 0))) {
          await sendNext();
        }
        const head = inflight.shift();
        if (!head) break;
        try {
          const ack = await head.p;
          durable = Math.max(durable, ack.durableLength);
          if (ack.committed) committed = true;
        } catch (e) {
          failure = e;
        }
      }
      // Let the rest of the window settle before deciding where to resume.
      await Promise.allSettled(inflight.map((x) => x.p));
      if (committed) return;
      if (failure === null) {
        throw new StorageError(ErrorCode.Internal, `${what}: last chunk acked but not committed`);
      }
      if (durable > start) attempt = 0;
      if (attempt >= this.#retries || this.#closed) throw this.#fail(failure, what);
      if (failure instanceof RpcError && failure.code === ErrorCode.WrongOffset) {
        if (failure.value > size) throw this.#fail(failure, what);
        start = failure.value;
      } else if (failure instanceof RpcError && failure.code === ErrorCode.Unavailable) {
        start = durable; // timeout / busy: resume from what the node confirmed durable
        await backoff(attempt);
      } else {
        throw this.#fail(failure, what);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Download

  /**
   * Fetches the whole file into memory (verified). `maxBytes` guards against unexpectedly
   * large files: a longer file fails with BAD_REQUEST before its bytes are fetched.
   */
  async getBytes(id: Uuid, maxBytes = Number.MAX_SAFE_INTEGER): Promise<Uint8Array> {
    const box = { out: new Uint8Array(0) };
    await this.#download(id, maxBytes, (len) => {
      box.out = new Uint8Array(len);
    }, (off, data) => {
      box.out.set(data, off);
      return Promise.resolve();
    });
    return box.out;
  }

  /**
   * Streams the file to `path`: written to a temp file next to it, SHA-256 verified, fsync'd
   * (unless `opts.fsync` is false: the node keeps the durable copy, a cache may skip it),
   * then renamed into place (so `path` never holds partial or unverified bytes). Returns the
   * length.
   */
  async getToFile(
    id: Uuid,
    path: string,
    opts: { fsync?: boolean } & ReadCap = {},
  ): Promise<number> {
    return await writeViaTemp(
      path,
      opts.fsync ?? true,
      (f) =>
        this.#download(
          id,
          Number.MAX_SAFE_INTEGER,
          () => {},
          (_off, data) => writeFull(f, data),
          opts,
        ),
    );
  }

  /**
   * One file_request: up to `maxLength` bytes of `id` at `offset` (the node may send fewer),
   * with the file's total length. Not verified: the caller hashes the whole file.
   */
  readRange(id: Uuid, offset: number, maxLength: number, rc: ReadCap = {}): Promise<FileResponse> {
    const auth = rc.cap ? { cap: rc.cap, capExpiryMs: rc.capExpiryMs ?? 0 } : {};
    return this.#request<FileResponse>(
      { type: MessageType.FileRequest, node: this.node, file: id, offset, maxLength, ...auth },
      MessageType.FileResponse,
      `get of file ${uuidToHex(id)}`,
    );
  }

  /** Fetches with a window of requests in flight; `sink` gets the chunks in order. */
  async #download(
    id: Uuid,
    maxBytes: number,
    begin: (length: number) => void,
    sink: (offset: number, data: Uint8Array) => Promise<void>,
    rc: ReadCap = {},
  ): Promise<number> {
    const hex = uuidToHex(id);
    const what = `get of file ${hex}`;
    const auth = rc.cap ? { cap: rc.cap, capExpiryMs: rc.capExpiryMs ?? 0 } : {};
    const req = (offset: number, maxLength: number) =>
      this.#request<FileResponse>(
        { type: MessageType.FileRequest, node: this.node, file: id, offset, maxLength, ...auth },
        MessageType.FileResponse,
        what,
      );
    const head = await req(0, this.#chunk);
    const len = head.fileLength;
    if (len > maxBytes) {
      throw new StorageError(
        ErrorCode.BadRequest,
        `${what}: file is ${len} bytes, more than the allowed ${maxBytes}`,
      );
    }
    begin(len);
    const h = createHash("sha256");
    let pos = 0;
    const take = async (data: Uint8Array) => {
      h.update(data);
      await sink(pos, data);
      pos += data.length;
    };
    await take(head.data);
    const inflight: { off: number; n: number; p: Promise<FileResponse> }[] = [];
    let next = pos;
    try {
      while (pos < len) {
        while (inflight.length < this.#window && next < len) {
          const n = Math.min(this.#chunk, len - next);
          const p = req(next, n);
          p.catch(() => {});
          inflight.push({ off: next, n, p });
          next += n;
        }
        const c = inflight.shift()!;
        const r = await c.p;
        if (r.fileLength !== len) {
          throw new StorageError(
            ErrorCode.Conflict,
            `${what}: length changed ${len} -> ${r.fileLength}`,
          );
        }
        await take(r.data);
        // The node may cap a response below what we asked: fetch the rest of this range now.
        while (pos < c.off + c.n) {
          const more = await req(pos, c.off + c.n - pos);
          if (more.data.length === 0) {
            throw new StorageError(ErrorCode.Internal, `${what}: empty response at ${pos}`);
          }
          await take(more.data);
        }
      }
    } finally {
      await Promise.allSettled(inflight.map((x) => x.p));
    }
    const digest = new Uint8Array(h.digest());
    if (uuidToHex(digest.subarray(0, 16)) !== hex) {
      throw new StorageError(
        ErrorCode.Conflict,
        `${what} from ${this.endpoint}: received bytes hash to ` +
          `${uuidToHex(digest.subarray(0, 16))}, not the id`,
      );
    }
    return len;
  }

  /** Closes the connection; pending requests fail. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#rpc.close();
  }
}

/** Waits 100 ms, 200 ms, 400 ms, … (capped at 2 s) before retry number `attempt + 1`. */
function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
}
