/**
 * SHA-256 of large transfers off the main thread: a small pool of worker threads
 * (node:worker_threads) that hash streams and files, so that a process verifying a large
 * download or hashing a large file for its id keeps serving other requests, and a second core
 * does the hashing while the main thread moves bytes.
 *
 * - {@linkcode sha256Stream}: incremental hashing of bytes arriving in order (a download). Each
 *   update is copied into a recycled buffer that is transferred to the stream's worker (a
 *   received ZeroMQ frame must not be transferred itself: wire/zmq/zerocopy.ts) and comes back
 *   once hashed; the digest is the same as node:crypto's over the same bytes.
 * - {@linkcode sha256File}: the worker reads the file itself and hashes it (no bytes cross
 *   threads).
 * - {@linkcode sha256BlockStream}: the same, with each block's hash too (a storage node's upload:
 *   the id check and the block sidecar).
 * - {@linkcode sha256Blocks}: per-block hashes of a buffer the caller owns (a storage node's
 *   read verification): the buffer is transferred to a worker and back, not copied.
 *
 * Bounded: at most {@linkcode MAX_HASH_WORKERS} threads; at most
 * {@linkcode MAX_QUEUED_HASH_BYTES} bytes handed to them and not yet hashed (an update waits
 * beyond that); at most {@linkcode MAX_FREE_BUFFERS} recycled buffers. The worker's source is
 * inline (evaluated by worker_threads): nothing to resolve next to a bundle (build/dsys.js) or
 * inside the packaged single file. Workers are unref'd while idle, so they never keep a process
 * alive. Without worker threads (`configureHashPool({ workers: 0 })`, `DSYS_HASH_WORKERS=0`, or a
 * worker that failed), everything is hashed on the calling thread, with the same results.
 * @module
 */
import { Worker } from "node:worker_threads";
import { createHash, type Hash } from "node:crypto";

const MiB = 1024 * 1024;

/** Most hashing threads per process (the machines dsys targets have a few cores). */
export const MAX_HASH_WORKERS = 2;
/**
 * Bytes handed to the workers and not yet hashed, before an update waits: a download's window
 * (8 x 4 MiB); the recycled buffers a process keeps after a large transfer are as many.
 */
export const MAX_QUEUED_HASH_BYTES = 32 * MiB;
/** Size of a recycled copy buffer (a storage transfer's chunk). */
export const HASH_BUFFER_BYTES = 4 * MiB;
/** Recycled copy buffers kept (the queue bound fills at most this many). */
export const MAX_FREE_BUFFERS = MAX_QUEUED_HASH_BYTES / HASH_BUFFER_BYTES;
/** Bytes a worker reads from a file per read. */
const FILE_READ_BYTES = 4 * MiB;

if (MAX_FREE_BUFFERS * HASH_BUFFER_BYTES !== MAX_QUEUED_HASH_BYTES || MAX_HASH_WORKERS < 1) {
  throw new Error("hash_worker: limits out of relation");
}

/** The worker thread (CommonJS, evaluated): streams by id; replies carry the op's id. */
const WORKER_SOURCE = `
"use strict";
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const fs = require("node:fs");
const streams = new Map();
const failed = new Map();
function hashFile(path) {
  const h = createHash("sha256");
  const buf = new Uint8Array(${FILE_READ_BYTES});
  const fd = fs.openSync(path, "r");
  let size = 0;
  try {
    for (;;) {
      const k = fs.readSync(fd, buf, 0, buf.length, null);
      if (k === 0) break;
      h.update(buf.subarray(0, k));
      size += k;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { d: h.digest(), size };
}
parentPort.on("message", (m) => {
  if (m.op === "update") {
    try {
      if (!failed.has(m.s)) {
        let st = streams.get(m.s);
        if (!st) {
          st = { all: createHash("sha256"), bb: m.bb, block: null, fill: 0, blocks: [] };
          if (st.bb > 0) st.block = createHash("sha256");
          streams.set(m.s, st);
        }
        const data = new Uint8Array(m.buf, 0, m.len);
        st.all.update(data);
        for (let p = 0; st.bb > 0 && p < data.length;) {
          const k = Math.min(st.bb - st.fill, data.length - p);
          st.block.update(data.subarray(p, p + k));
          st.fill += k;
          p += k;
          if (st.fill === st.bb) {
            st.blocks.push(st.block.digest());
            st.block = createHash("sha256");
            st.fill = 0;
          }
        }
      }
    } catch (e) {
      failed.set(m.s, String(e));
      streams.delete(m.s);
    }
    parentPort.postMessage({ op: "updated", len: m.len, buf: m.buf }, [m.buf]);
  } else if (m.op === "digest") {
    const err = failed.get(m.s);
    const st = streams.get(m.s);
    streams.delete(m.s);
    failed.delete(m.s);
    if (err !== undefined) parentPort.postMessage({ op: "error", id: m.id, message: err });
    else {
      const d = new Uint8Array((st ? st.all : createHash("sha256")).digest());
      let b;
      if (m.bb > 0) {
        const list = st ? st.blocks : [];
        if (!st || st.fill > 0 || list.length === 0) {
          list.push((st && st.block ? st.block : createHash("sha256")).digest());
        }
        b = new Uint8Array(list.length * 32);
        list.forEach((x, i) => b.set(x, i * 32));
      }
      parentPort.postMessage({ op: "digest", id: m.id, d, b });
    }
  } else if (m.op === "blocks") {
    const buf = new Uint8Array(m.buf, m.off, m.len);
    const n = Math.ceil(m.len / m.bb);
    const d = new Uint8Array(n * 32);
    for (let b = 0; b < n; b++) {
      const part = buf.subarray(b * m.bb, Math.min(m.len, (b + 1) * m.bb));
      d.set(createHash("sha256").update(part).digest(), b * 32);
    }
    parentPort.postMessage({ op: "digest", id: m.id, d, buf: m.buf }, [m.buf, d.buffer]);
  } else if (m.op === "drop") {
    streams.delete(m.s);
    failed.delete(m.s);
  } else if (m.op === "file") {
    try {
      const r = hashFile(m.path);
      parentPort.postMessage({ op: "digest", id: m.id, d: new Uint8Array(r.d), size: r.size });
    } catch (e) {
      parentPort.postMessage({ op: "error", id: m.id, message: String(e && e.message || e) });
    }
  }
});
`;

/** A SHA-256 of bytes given in order. */
export interface Sha256Stream {
  /** Adds bytes (the caller may reuse `data` once this returns or resolves). */
  update(data: Uint8Array): Promise<void>;
  /** The 32-byte digest; the stream is finished. */
  digest(): Promise<Uint8Array>;
  /** Forgets the stream without a digest (a failed transfer). */
  abort(): void;
}

/** A SHA-256 of the whole and of each block, of bytes given in order. */
export interface Sha256BlockStream {
  /** Adds bytes (the caller may reuse `data` once this returns or resolves). */
  update(data: Uint8Array): Promise<void>;
  /**
   * The whole's digest and the blocks' digests, 32 bytes each in order (an empty input has
   * one block, the empty one's; no blocks when the stream was made with block size 0).
   */
  finish(): Promise<{ digest: Uint8Array; blocks: Uint8Array }>;
  /** Forgets the stream. */
  abort(): void;
}

/** A worker of the pool and what it has outstanding (it is ref'd while anything is). */
interface PoolWorker {
  worker: Worker;
  outstanding: number;
  streams: number;
}

interface Waiter {
  resolve: (r: { d: Uint8Array; size: number; buf?: ArrayBuffer; b?: Uint8Array }) => void;
  reject: (e: Error) => void;
  w: PoolWorker;
}

/** A pool of hashing threads (one per process: {@linkcode hashPool}). */
export class HashPool {
  #size: number;
  #workers: PoolWorker[] = [];
  #broken = false;
  #queued = 0;
  #spaceWaiters: (() => void)[] = [];
  #free: ArrayBuffer[] = [];
  #nextId = 1;
  #waiting = new Map<number, Waiter>();
  #closed = false;

  constructor(workers: number) {
    this.#size = Math.max(0, Math.min(MAX_HASH_WORKERS, Math.floor(workers)));
  }

  /** Whether hashing goes to worker threads (false: on the calling thread). */
  get enabled(): boolean {
    return this.#size > 0 && !this.#broken;
  }

  /** Bytes handed to the workers and not yet hashed. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** The least busy worker (a new one while all are busy and the pool is not full). */
  #pick(): PoolWorker | null {
    if (!this.enabled) return null;
    const busy = (w: PoolWorker) => w.outstanding + w.streams;
    if (this.#workers.length < this.#size && this.#workers.every((w) => busy(w) > 0)) {
      try {
        const worker = new Worker(WORKER_SOURCE, { eval: true });
        worker.unref();
        const w: PoolWorker = { worker, outstanding: 0, streams: 0 };
        worker.on("message", (m) => this.#onMessage(w, m));
        worker.on("error", (e) => this.#fail(w, e));
        worker.on("exit", (code) => this.#fail(w, new Error(`hash worker exited (${code})`)));
        this.#workers.push(w);
        return w;
      } catch {
        // No worker threads here: hash on the calling thread from now on.
        if (this.#workers.length === 0) {
          this.#broken = true;
          return null;
        }
      }
    }
    return this.#workers.reduce((a, b) => busy(b) < busy(a) ? b : a);
  }

  #ref(w: PoolWorker, n: number): void {
    const before = w.outstanding;
    w.outstanding += n;
    if (before === 0 && w.outstanding > 0) w.worker.ref();
    else if (before > 0 && w.outstanding === 0) w.worker.unref();
  }

  #onMessage(w: PoolWorker, m: {
    op: string;
    id?: number;
    len?: number;
    buf?: ArrayBuffer;
    d?: Uint8Array;
    b?: Uint8Array;
    size?: number;
    message?: string;
  }): void {
    if (m.op === "updated") {
      this.#queued -= m.len!;
      if (m.buf && m.buf.byteLength === HASH_BUFFER_BYTES && this.#free.length < MAX_FREE_BUFFERS) {
        this.#free.push(m.buf);
      }
      this.#ref(w, -1);
      while (this.#spaceWaiters.length && this.#queued < MAX_QUEUED_HASH_BYTES) {
        this.#spaceWaiters.shift()!();
      }
      return;
    }
    const waiter = this.#waiting.get(m.id!);
    if (!waiter) return;
    this.#waiting.delete(m.id!);
    this.#ref(w, -1);
    if (m.op === "digest") {
      waiter.resolve({
        d: new Uint8Array(m.d!.buffer, m.d!.byteOffset, m.d!.byteLength),
        size: m.size ?? 0,
        buf: m.buf,
        b: m.b,
      });
    } else waiter.reject(new Error(`hashing failed: ${m.message}`));
  }

  /** A worker died: what waited on it fails, and the pool hashes on the calling thread now. */
  #fail(w: PoolWorker, e: unknown): void {
    if (this.#closed) return;
    this.#broken = true;
    for (const [id, waiter] of this.#waiting) {
      if (waiter.w !== w) continue;
      this.#waiting.delete(id);
      waiter.reject(new Error(`hash worker failed: ${e instanceof Error ? e.message : e}`));
    }
    this.#queued = 0;
    for (const f of this.#spaceWaiters.splice(0)) f();
    try {
      w.worker.unref();
    } catch { /* gone */ }
  }

  #request(
    w: PoolWorker,
    msg: Record<string, unknown>,
    transfer: ArrayBuffer[] = [],
  ): Promise<{ d: Uint8Array; size: number; buf?: ArrayBuffer; b?: Uint8Array }> {
    if (!this.enabled) return Promise.reject(new Error("hash worker failed earlier"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject, w });
      this.#ref(w, 1);
      w.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  /** A SHA-256 stream, hashed by one worker (or on this thread when the pool is off). */
  stream(): Sha256Stream {
    const s = this.blockStream(0);
    return {
      update: (data) => s.update(data),
      digest: async () => (await s.finish()).digest,
      abort: () => s.abort(),
    };
  }

  /**
   * A SHA-256 of the whole and of each `blockBytes` block (a storage node's upload: the id
   * check and the block sidecar), hashed by one worker. `blockBytes` 0: the whole only.
   */
  blockStream(blockBytes: number): Sha256BlockStream {
    if (!Number.isInteger(blockBytes) || blockBytes < 0) {
      throw new Error(`hash block stream: block size ${blockBytes}`);
    }
    const w = this.#pick();
    if (!w) return inlineBlockStream(blockBytes);
    const s = this.#nextId++;
    const bb = blockBytes;
    w.streams++;
    let done = false;
    const finish = () => {
      if (!done) w.streams--;
      done = true;
    };
    return {
      update: async (data) => {
        if (done) throw new Error("sha256 stream: update after digest");
        if (!this.enabled) throw new Error("hash worker failed earlier");
        for (let off = 0; off < data.length; off += HASH_BUFFER_BYTES) {
          const part = data.subarray(off, Math.min(data.length, off + HASH_BUFFER_BYTES));
          while (this.#queued >= MAX_QUEUED_HASH_BYTES && this.enabled) {
            await new Promise<void>((r) => this.#spaceWaiters.push(r));
          }
          const buf = this.#free.pop() ?? new ArrayBuffer(HASH_BUFFER_BYTES);
          new Uint8Array(buf).set(part);
          this.#queued += part.length;
          this.#ref(w, 1);
          w.worker.postMessage({ op: "update", s, bb, buf, len: part.length }, [buf]);
        }
      },
      finish: async () => {
        if (done) throw new Error("sha256 stream: digest twice");
        finish();
        const r = await this.#request(w, { op: "digest", s, bb });
        return { digest: r.d, blocks: r.b ?? new Uint8Array(0) };
      },
      abort: () => {
        if (done) return;
        finish();
        w.worker.postMessage({ op: "drop", s });
      },
    };
  }

  /** SHA-256 and size of the file at `path`, read and hashed by a worker. */
  async file(path: string): Promise<{ digest: Uint8Array; size: number }> {
    const w = this.#pick();
    if (!w) return await inlineFile(path);
    const r = await this.#request(w, { op: "file", path });
    return { digest: r.d, size: r.size };
  }

  /**
   * SHA-256 of each `blockBytes` block of `data` (the last may be shorter), 32 bytes each, in
   * order. `data` is moved to a worker and back: the caller must own its whole ArrayBuffer
   * (`data` spans all of it, as a fresh read buffer does), not use it until this resolves, and
   * then use the returned `data` (the same bytes; the original view is detached). Anything
   * else (a view of a larger buffer) is hashed on the calling thread.
   */
  async blocks(
    data: Uint8Array,
    blockBytes: number,
  ): Promise<{ data: Uint8Array; digests: Uint8Array }> {
    if (!Number.isInteger(blockBytes) || blockBytes < 1) {
      throw new Error(`hash blocks: block size ${blockBytes}`);
    }
    const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength &&
      data.buffer instanceof ArrayBuffer;
    const w = whole && data.length > 0 ? this.#pick() : null;
    if (!w) return { data, digests: inlineBlocks(data, blockBytes) };
    const buf = data.buffer as ArrayBuffer;
    const len = data.length; // `data` is detached by the transfer
    const msg = { op: "blocks", buf, off: 0, len, bb: blockBytes };
    const r = await this.#request(w, msg, [buf]);
    return { data: new Uint8Array(r.buf!, 0, len), digests: r.d };
  }

  /** Stops the workers; later calls hash on the calling thread. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#size = 0;
    const ws = this.#workers.splice(0);
    await Promise.all(ws.map((w) => w.worker.terminate()));
  }
}

function inlineBlockStream(bb: number): Sha256BlockStream {
  let all: Hash | null = createHash("sha256");
  let block = createHash("sha256");
  let fill = 0;
  const blocks: Uint8Array[] = [];
  return {
    update: (data) => {
      if (!all) return Promise.reject(new Error("sha256 stream: update after digest"));
      all.update(data);
      for (let p = 0; bb > 0 && p < data.length;) {
        const k = Math.min(bb - fill, data.length - p);
        block.update(data.subarray(p, p + k));
        fill += k;
        p += k;
        if (fill === bb) {
          blocks.push(new Uint8Array(block.digest()));
          block = createHash("sha256");
          fill = 0;
        }
      }
      return Promise.resolve();
    },
    finish: () => {
      if (!all) return Promise.reject(new Error("sha256 stream: digest twice"));
      const digest = new Uint8Array(all.digest());
      all = null;
      if (bb > 0 && (fill > 0 || blocks.length === 0)) blocks.push(new Uint8Array(block.digest()));
      const out = new Uint8Array(blocks.length * 32);
      blocks.forEach((x, i) => out.set(x, i * 32));
      return Promise.resolve({ digest, blocks: out });
    },
    abort: () => {
      all = null;
    },
  };
}

function inlineBlocks(data: Uint8Array, bb: number): Uint8Array {
  const n = Math.ceil(data.length / bb);
  const d = new Uint8Array(n * 32);
  for (let b = 0; b < n; b++) {
    const part = data.subarray(b * bb, Math.min(data.length, (b + 1) * bb));
    d.set(createHash("sha256").update(part).digest(), b * 32);
  }
  return d;
}

async function inlineFile(path: string): Promise<{ digest: Uint8Array; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(FILE_READ_BYTES);
    for (;;) {
      const k = await f.read(buf);
      if (k === null) break;
      h.update(buf.subarray(0, k));
      size += k;
    }
  } finally {
    f.close();
  }
  return { digest: new Uint8Array(h.digest()), size };
}

let pool: HashPool | null = null;

/** The process's hashing pool (`DSYS_HASH_WORKERS` sets its size; default 2, 0 = none). */
export function hashPool(): HashPool {
  if (!pool) {
    let n = MAX_HASH_WORKERS;
    try {
      const env = Deno.env.get("DSYS_HASH_WORKERS");
      if (env !== undefined && /^\d+$/.test(env)) n = Number(env);
    } catch { /* no env permission: the default */ }
    pool = new HashPool(n);
  }
  return pool;
}

/** Pools made by configureHashPool, by size (kept warm: switching back reuses the threads). */
const configured = new Map<number, HashPool>();

/**
 * Sets the size of the process's pool (benchmarks compare `workers: 0`, on the calling thread,
 * with the default in one run). A pool of each size is made once and kept; idle, its threads
 * cost nothing and keep no process alive.
 */
export function configureHashPool(opts: { workers: number }): void {
  const n = Math.max(0, Math.min(MAX_HASH_WORKERS, Math.floor(opts.workers)));
  let p = configured.get(n);
  if (!p) configured.set(n, p = new HashPool(n));
  pool = p;
}

/** A SHA-256 stream on the process's pool. */
export function sha256Stream(): Sha256Stream {
  return hashPool().stream();
}

/** A whole + per-block SHA-256 stream on the process's pool (HashPool.blockStream). */
export function sha256BlockStream(blockBytes: number): Sha256BlockStream {
  return hashPool().blockStream(blockBytes);
}

/** Per-block SHA-256 of a buffer the caller owns, on the process's pool (HashPool.blocks). */
export function sha256Blocks(
  data: Uint8Array,
  blockBytes: number,
): Promise<{ data: Uint8Array; digests: Uint8Array }> {
  return hashPool().blocks(data, blockBytes);
}

/** SHA-256 and size of a file, hashed on the process's pool. */
export function sha256File(path: string): Promise<{ digest: Uint8Array; size: number }> {
  return hashPool().file(path);
}
