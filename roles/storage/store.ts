/**
 * The storage node's file store: immutable, content-addressed files on a local disk.
 *
 * Layout of the data directory:
 * - `files/<hex id>`        committed file bytes (id = first 16 bytes of SHA-256 of the bytes);
 * - `files/<hex id>.blocks` sidecar: SHA-256 of every `blockBytes` block, so every read can be
 *                           verified without hashing the whole file (a flipped byte is never
 *                           served, even when it flips while the node runs);
 * - `owners.log`            the users each file belongs to (owners.ts): one append-only log
 *                           (former per-file `files/<hex id>.owners` lists are imported);
 * - `tmp/<hex id>.<hex uploader>` uploads in progress; resumable across restarts. The uploader
 *                           is the sending node's uuid, or, when the put names an owner or a
 *                           sender key, a hash of (key, node, owner): an upload is continued
 *                           only by who started it, so nobody becomes an owner by finishing
 *                           another's upload.
 *
 * Durability: a file_put chunk is acknowledged only after its bytes are fdatasync'd (which
 * also persists the grown file size; only timestamps are skipped). Chunks that
 * arrive while an fsync of the same upload is running are written and synced together by the
 * next one (group commit), so a pipelining client costs one fsync per batch, not per chunk.
 * The last chunk is verified (length, SHA-256 prefix == id), the sidecar and the file are
 * renamed into `files/` and the directory is fsync'd before the committed ack.
 *
 * Owners: a put that names an owner makes it one only when this put's own bytes were verified
 * (a full upload, or a complete re-upload of a file already here), durably before the
 * committed ack: one append to the owners log, written while the file itself is committed. The shortcut that acks a retried chunk of a file already here (offset > 0)
 * is taken only for an owner; anyone else is told WRONG_OFFSET 0 and sends it all.
 *
 * Failures: every file_put is answered. A full disk (ENOSPC, EDQUOT) is NO_SPACE, any other I/O
 * error INTERNAL with the system's text; either way nothing of the upload is kept (its temp file
 * is removed and its state dropped, so a retry starts over at offset 0) and its memory budget is
 * given back. Committed files and the other requests are not affected.
 * @module
 */
import { createHash } from "node:crypto";
import { sha256Blocks, type Sha256BlockStream, sha256BlockStream } from "../../lib/hash_worker.ts";
import {
  ErrorCode,
  type FilePut,
  type FilePutAck,
  FilePutFlags,
  type FileRequest,
  type FileResponse,
  type FileStatResponse,
  MessageType,
  type StorageStats,
  type Uuid,
  uuidToHex,
} from "../../wire/mod.ts";
import { RequestError } from "../../lib/rpc.ts";
import { readFull, syncDir, writeFull } from "../../lib/fsutil.ts";
import { crc32 } from "../../lib/crc32.ts";
import type { Logger } from "../../lib/log.ts";
import { isOwnersName, Owners, OWNERS_SUFFIX } from "./owners.ts";

const MiB = 1024 * 1024;
const SIDECAR_MAGIC = new TextEncoder().encode("DSYSBLK1");
/** magic(8) id(16) length(8) blockBytes(4) blocks(4); then 32 bytes per block; then crc32(4). */
const SIDECAR_HEADER = 40;
const HEX_ID = /^[0-9a-f]{32}$/;

/** Options of a FileStore. */
export interface FileStoreOptions {
  /** Data directory (created if missing). */
  dir: string;
  /** This node's uuid (sender of replies, named in error texts). */
  node: Uuid;
  /** Name of this node in error texts (e.g. its uuid string). */
  nodeName: string;
  log: Logger;
  /** Largest file_response payload, bytes (default 4 MiB). */
  maxReadBytes?: number;
  /** Verification block size of new sidecars, bytes (default 1 MiB). */
  blockBytes?: number;
  /** Temp uploads untouched for this long are deleted (default 1 h). */
  tmpTtlMs?: number;
  /** Open uploads idle for this long release their fd (they stay resumable; default 60 s). */
  idleUploadMs?: number;
  /**
   * Upload bytes queued (received, not yet written) across all uploads before new chunks are
   * refused with UNAVAILABLE (default 256 MiB): bounds memory against a client that ignores
   * its window.
   */
  maxQueuedBytes?: number;
  /** Most owners per file (default owners.ts MAX_OWNERS). */
  maxOwners?: number;
}

/** Who a file_put is from, for ownership (main.ts derives it from the sender's key). */
export interface PutFrom {
  /** User the file is stored for once this put's bytes are verified; null = nobody. */
  owner: string | null;
  /** Stable id of the sender (its public key); undefined in insecure mode. */
  uploader?: string;
}

interface Entry {
  size: number;
  /** Per-block SHA-256 (32 bytes each), loaded or rebuilt on first read. */
  blocks: Uint8Array | null;
  blockBytes: number;
  loading: Promise<void> | null;
  /**
   * Set when the bytes on disk were found not to match (a block or the whole file): the file
   * is never served again and counts as absent for stat and put, so a re-upload repairs it.
   */
  corrupt: string | null;
  /** Unix ms of the last put of the file here (commit or re-put; on open: the file's mtime). */
  putAt: number;
}

/** How long the store remembers that the cluster deleted a file, ms. */
const DELETED_MEMORY_MS = 3_600_000;
/** Most deleted files the store remembers. */
const MAX_DELETED_MEMORY = 100_000;

interface PendingChunk {
  msg: FilePut;
  /** Settling is idempotent: the first of resolve/reject wins. */
  resolve: (ack: FilePutAck) => void;
  reject: (e: unknown) => void;
}

interface Upload {
  key: string;
  id: Uuid;
  hex: string;
  total: number;
  /** Temp path, or null when the file already exists and the upload only verifies the bytes. */
  path: string | null;
  file: Deno.FsFile | null;
  /** Bytes written (and hashed) so far; durable once the running batch's fsync returns. */
  written: number;
  /** Whole-file and per-block SHA-256 of the bytes written, on a hashing thread. */
  hasher: Sha256BlockStream;
  queue: PendingChunk[];
  running: boolean;
  ready: Promise<void>;
  lastUsed: number;
  /** Failed (or committed): takes no more chunks; stays in the index only while its temp goes. */
  dead: boolean;
  /** Why it failed: the answer to chunks that arrive while it is being cleaned up. */
  failure: RequestError | null;
  /** User made an owner when the upload commits (null = nobody). */
  owner: string | null;
}

/** Counters of storage_stats, plus per-file fetch counts (file_request at offset 0). */
export interface StoreCounters {
  gets: number;
  getBytes: number;
  puts: number;
  putBytes: number;
  fetchCounts: Map<string, number>;
}

/** Content-addressed file store with verified reads and resumable, durable uploads. */
export class FileStore {
  readonly dir: string;
  readonly filesDir: string;
  readonly tmpDir: string;
  readonly counters: StoreCounters = {
    gets: 0,
    getBytes: 0,
    puts: 0,
    putBytes: 0,
    fetchCounts: new Map(),
  };
  #opts: Required<Omit<FileStoreOptions, "log" | "maxOwners">> & {
    log: Logger;
    maxOwners?: number;
  };
  /** Set by open (the owners log is replayed once the files are indexed). */
  #owners!: Owners;
  /**
   * When a write last failed for a full disk, or with another I/O error (Unix ms, 0 = never):
   * the node then says it is full or failing and takes no new files for a while (tier_member.ts).
   */
  readonly diskErrors = { noSpaceAtMs: 0, ioErrorAtMs: 0, ioError: "" };
  #index = new Map<string, Entry>();
  /** Files the cluster deleted here: hex -> Unix ms (bounded, oldest first). */
  #deleted = new Map<string, number>();
  #uploads = new Map<string, Upload>();
  #storedBytes = 0;
  #queuedBytes = 0;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  private constructor(opts: FileStoreOptions) {
    this.#opts = {
      ...opts,
      // `??` rather than spreading defaults: an explicit `undefined` must not erase them.
      maxReadBytes: opts.maxReadBytes ?? 4 * MiB,
      blockBytes: opts.blockBytes ?? 1 * MiB,
      tmpTtlMs: opts.tmpTtlMs ?? 3600_000,
      idleUploadMs: opts.idleUploadMs ?? 60_000,
      maxQueuedBytes: opts.maxQueuedBytes ?? 256 * MiB,
    };
    this.dir = opts.dir;
    this.filesDir = `${opts.dir}/files`;
    this.tmpDir = `${opts.dir}/tmp`;
  }

  /** Opens (creating) the store: indexes committed files, drops orphans and stale uploads. */
  static async open(opts: FileStoreOptions): Promise<FileStore> {
    const s = new FileStore(opts);
    await Deno.mkdir(s.filesDir, { recursive: true });
    await Deno.mkdir(s.tmpDir, { recursive: true });
    await s.#scan();
    await s.#sweepTmp();
    s.#sweeper = setInterval(() => {
      s.#sweepIdle();
      s.#sweepTmp().catch((e) => s.#opts.log.warn("tmp sweep failed", { error: e }));
    }, Math.min(30_000, s.#opts.idleUploadMs));
    Deno.unrefTimer(s.#sweeper!);
    return s;
  }

  async #scan(): Promise<void> {
    const sidecars = new Set<string>();
    const ownerLists = new Set<string>();
    for await (const e of Deno.readDir(this.filesDir)) {
      if (!e.isFile) continue;
      const owners = isOwnersName(e.name);
      if (owners === "list") {
        ownerLists.add(e.name.slice(0, -OWNERS_SUFFIX.length));
      } else if (HEX_ID.test(e.name)) {
        const st = await Deno.stat(`${this.filesDir}/${e.name}`);
        this.#index.set(e.name, {
          size: st.size,
          blocks: null,
          blockBytes: 0,
          loading: null,
          corrupt: null,
          putAt: st.mtime?.getTime() ?? Date.now(),
        });
        this.#storedBytes += st.size;
      } else if (e.name.endsWith(".blocks")) sidecars.add(e.name.slice(0, -7));
      else {
        // A sidecar or (former) owners temp left by a crash before its rename: never used.
        await Deno.remove(`${this.filesDir}/${e.name}`).catch(() => {});
      }
    }
    for (const hex of sidecars) {
      if (!this.#index.has(hex)) {
        // The sidecar is renamed before its data file; a crash in between leaves it orphaned.
        await Deno.remove(`${this.filesDir}/${hex}.blocks`).catch(() => {});
      }
    }
    // Former per-file owners lists are imported into the owners log (and removed); owners of
    // files not here mean nothing and are dropped.
    this.#owners = await Owners.open(this.dir, {
      filesDir: this.filesDir,
      exists: (hex) => this.#index.has(hex),
      legacy: ownerLists,
      maxOwners: this.#opts.maxOwners,
      log: this.#opts.log,
    });
    this.#opts.log.info("store opened", { files: this.#index.size, bytes: this.#storedBytes });
  }

  async #sweepTmp(): Promise<void> {
    const now = Date.now();
    for await (const e of Deno.readDir(this.tmpDir)) {
      if (this.#uploads.has(e.name)) continue;
      const p = `${this.tmpDir}/${e.name}`;
      const st = await Deno.stat(p).catch(() => null);
      if (st && now - (st.mtime?.getTime() ?? 0) > this.#opts.tmpTtlMs) {
        await Deno.remove(p).catch(() => {});
        this.#opts.log.info("stale upload removed", { tmp: e.name });
      }
    }
  }

  #sweepIdle(): void {
    const now = Date.now();
    for (const u of this.#uploads.values()) {
      if (!u.running && u.queue.length === 0 && now - u.lastUsed > this.#opts.idleUploadMs) {
        // Only the fd and hash state go; the temp file stays and a later chunk resumes it.
        this.#dropUpload(u, false);
      }
    }
  }

  /** Number of committed files. */
  get files(): number {
    return this.#index.size;
  }

  /** Bytes of committed files. */
  get storedBytes(): number {
    return this.#storedBytes;
  }

  /** Uploads currently held open (for tests). */
  get openUploads(): number {
    return this.#uploads.size;
  }

  #notFound(hex: string): RequestError {
    return new RequestError(
      ErrorCode.NotFound,
      `file ${hex} not found on node ${this.#opts.nodeName}`,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Stat / stats

  /** Answers file_stat: a missing file is not an error. */
  stat(file: Uuid): FileStatResponse {
    const found = this.#index.get(uuidToHex(file));
    const e = found?.corrupt ? undefined : found; // corrupt = absent: invites a repairing put
    return {
      type: MessageType.FileStatResponse,
      node: this.#opts.node,
      file,
      exists: !!e,
      length: e?.size ?? 0,
    };
  }

  /**
   * Answers file_stat for `user`: a file that is not theirs counts as absent (so they upload it
   * in full, which makes it theirs). `user` null: unrestricted.
   */
  async statFor(file: Uuid, user: string | null): Promise<FileStatResponse> {
    const r = this.stat(file);
    if (user === null || !r.exists || await this.isOwner(file, user)) return r;
    return { ...r, exists: false, length: 0 };
  }

  /** True when the committed file `file` has `user` among its owners. */
  isOwner(file: Uuid, user: string): Promise<boolean> {
    const hex = uuidToHex(file);
    return Promise.resolve(this.#index.has(hex) && this.#owners.has(hex, user));
  }

  /** The owners of `file` (none for a file not stored here). */
  ownersOf(file: Uuid): Promise<string[]> {
    const hex = uuidToHex(file);
    return Promise.resolve(this.#index.has(hex) ? this.#owners.of(hex) : []);
  }

  /** Answers storage_stats_request. */
  stats(): StorageStats {
    const c = this.counters;
    return {
      type: MessageType.StorageStats,
      node: this.#opts.node,
      gets: c.gets,
      getBytes: c.getBytes,
      puts: c.puts,
      putBytes: c.putBytes,
      files: this.#index.size,
      storedBytes: this.#storedBytes,
      fetchCounts: [...c.fetchCounts].map(([hex, count]) => ({ file: hexToId(hex), count })),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Replica management (repair.ts, scrub.ts)

  /** The committed, not corrupt files: hex id and size (a snapshot, safe to await over). */
  list(): { hex: string; size: number }[] {
    const out: { hex: string; size: number }[] = [];
    for (const [hex, e] of this.#index) if (!e.corrupt) out.push({ hex, size: e.size });
    return out;
  }

  /** True when the committed file `hex` is here and not known corrupt. */
  has(hex: string): boolean {
    const e = this.#index.get(hex);
    return e !== undefined && e.corrupt === null;
  }

  /** Ms since file `hex` was last put here (-1: not here). */
  ageMs(hex: string): number {
    const e = this.#index.get(hex);
    return e ? Math.max(0, Date.now() - e.putAt) : -1;
  }

  /**
   * Deletes file `hex` because the cluster deleted it, unless it was put here within `graceMs`
   * or an upload of it is open (a put racing the delete wins). The decision and the unlinking of
   * its name are synchronous (renames to the temp directory), so a put that starts after it
   * finds no file and writes a new one that nothing here removes. Returns whether it went.
   */
  removeIfIdle(hex: string, graceMs: number): boolean {
    if (!HEX_ID.test(hex)) throw new RequestError(ErrorCode.BadRequest, `bad file id ${hex}`);
    const e = this.#index.get(hex);
    if (!e || Date.now() - e.putAt < graceMs) return false;
    for (const u of this.#uploads.values()) if (u.hex === hex && !u.dead) return false;
    const gone = this.#unlinkNow(hex);
    if (gone === null) return false;
    this.#deleted.delete(hex);
    this.#deleted.set(hex, Date.now());
    while (this.#deleted.size > MAX_DELETED_MEMORY) {
      this.#deleted.delete(this.#deleted.keys().next().value!);
    }
    this.#opts.log.info("file removed", { file: hex, size: e.size, why: "deleted by the cluster" });
    (async () => {
      for (const t of gone.trash) await Deno.remove(t).catch(() => {});
      await syncDir(this.filesDir);
      await gone.dropped;
    })().catch((err) => this.#opts.log.warn("cleanup of a deleted file failed", { error: err }));
    return true;
  }

  /**
   * True when the cluster deleted file `hex` here within the last hour: a storage node's repair
   * copy of it is refused (its own replica is about to go too), a client's or worker's put is not.
   */
  wasDeleted(hex: string): boolean {
    const at = this.#deleted.get(hex);
    if (at === undefined) return false;
    if (Date.now() - at > DELETED_MEMORY_MS) {
      this.#deleted.delete(hex);
      return false;
    }
    return true;
  }

  /** Forgets that file `hex` was deleted (it was put again by a client or worker). */
  forgetDeleted(hex: string): void {
    this.#deleted.delete(hex);
  }

  /** True when file `hex` is indexed but was found corrupt (it is never served). */
  isCorrupt(hex: string): boolean {
    return (this.#index.get(hex)?.corrupt ?? null) !== null;
  }

  /** Replicas recorded for file `hex` (0 = the cluster's default). */
  replicasOf(hex: string): number {
    return this.#owners.replicasOf(hex);
  }

  /** Records the replica count a put asked for (the largest asked wins), durably. */
  setReplicas(hex: string, count: number): Promise<void> {
    return this.#owners.setReplicas(hex, count);
  }

  /**
   * Makes each of `names` an owner of the committed file `hex`, durably: a storage node copying
   * a replica carries the owners the file has on its source.
   */
  async addOwners(hex: string, names: string[]): Promise<void> {
    if (!this.#index.has(hex)) throw this.#notFound(hex);
    await Promise.all(names.map((n) =>
      this.#owners.add(hex, n).catch((e) => {
        // A full owner list keeps the owners it has.
        if (!(e instanceof RequestError && e.code === ErrorCode.TooLarge)) throw e;
      })
    ));
  }

  /** The owners of the committed file `hex`. */
  ownersOfHex(hex: string): string[] {
    return this.#index.has(hex) ? this.#owners.of(hex) : [];
  }

  /** The path of the committed file `hex` (to stream it to another node). */
  pathOf(hex: string): string {
    return `${this.filesDir}/${hex}`;
  }

  /**
   * Deletes the committed file `hex` and what describes it (sidecar, owners, replica count):
   * an excess or corrupt replica, or a file the cluster deleted. Data file first, so a crash
   * in between leaves at worst an orphaned sidecar, which open removes. Idempotent.
   */
  async remove(hex: string, why: string): Promise<boolean> {
    if (!HEX_ID.test(hex)) throw new RequestError(ErrorCode.BadRequest, `bad file id ${hex}`);
    const e = this.#index.get(hex);
    if (!e) return false;
    const gone = this.#unlinkNow(hex);
    if (gone === null) return false;
    this.#opts.log.info("file removed", { file: hex, size: e.size, why });
    for (const t of gone.trash) await Deno.remove(t).catch(() => {});
    await syncDir(this.filesDir);
    await gone.dropped;
    return true;
  }

  /**
   * Takes committed file `hex` out of `files/` and out of the index, synchronously (renames to
   * the temp directory, no await), so that a put of the same file starting afterwards writes a
   * new file that nothing here removes. Its owners are dropped in the same step: the drop is
   * appended to the owners log before any later put's owner, so it cannot erase one. Returns the
   * renamed paths to delete and the drop, or null (and changes nothing) when the data file could
   * not be moved.
   */
  #unlinkNow(hex: string): { trash: string[]; dropped: Promise<void> } | null {
    const e = this.#index.get(hex);
    if (!e) return null;
    const trash: string[] = [];
    for (const name of [hex, `${hex}.blocks`]) {
      const to = `${this.tmpDir}/${name}.deleted-${crypto.randomUUID()}`;
      try {
        Deno.renameSync(`${this.filesDir}/${name}`, to);
        trash.push(to);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          this.#opts.log.warn("cannot delete file", { file: hex, error: err });
          if (name === hex) return null; // still in place and indexed: a later round retries
        }
      }
    }
    this.#index.delete(hex);
    this.#storedBytes -= e.size;
    this.counters.fetchCounts.delete(hex);
    const dropped = this.#owners.drop(hex);
    dropped.catch(() => {}); // awaited by the caller
    return { trash, dropped };
  }

  /**
   * Re-reads the whole committed file `hex` and checks every block against its sidecar (and
   * the whole against the id when its block hashes had to be rebuilt): the scrub. Returns the
   * bytes read, or throws the corruption (the entry is then marked corrupt: never served,
   * absent to stat, and replaced by repair). `pace` is awaited after each block read.
   */
  async verify(hex: string, pace: (bytes: number) => Promise<void>): Promise<number> {
    const e = this.#index.get(hex);
    if (!e) return 0;
    await this.#ensureBlocks(hex, e);
    if (e.corrupt) throw this.#corrupt(hex, e.corrupt);
    const step = Math.max(e.blockBytes, 1);
    let read = 0;
    for (let off = 0; off < e.size; off += step) {
      const n = Math.min(step, e.size - off);
      await this.#readVerified(hex, e, off, n);
      read += n;
      await pace(n);
      if (this.#index.get(hex) !== e) return read; // removed or replaced meanwhile
    }
    if (e.size === 0) await this.#readVerified(hex, e, 0, 0);
    return read;
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  /** Answers file_request with verified bytes at offset (at most maxReadBytes). */
  async get(req: FileRequest): Promise<FileResponse> {
    const hex = uuidToHex(req.file);
    const e = this.#index.get(hex);
    if (!e) throw this.#notFound(hex);
    if (req.offset > e.size) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `offset ${req.offset} past end of file ${hex} (length ${e.size})`,
      );
    }
    const max = req.maxLength > 0
      ? Math.min(req.maxLength, this.#opts.maxReadBytes)
      : this.#opts.maxReadBytes;
    const n = Math.min(max, e.size - req.offset);
    await this.#ensureBlocks(hex, e);
    if (e.corrupt) throw this.#corrupt(hex, e.corrupt);
    const data = await this.#readVerified(hex, e, req.offset, n);
    this.counters.gets++;
    this.counters.getBytes += n;
    if (req.offset === 0) {
      this.counters.fetchCounts.set(hex, (this.counters.fetchCounts.get(hex) ?? 0) + 1);
    }
    return {
      type: MessageType.FileResponse,
      node: this.#opts.node,
      file: req.file,
      fileLength: e.size,
      offset: req.offset,
      data,
    };
  }

  #corrupt(hex: string, why: string, e?: Entry): RequestError {
    if (e && !e.corrupt) {
      e.corrupt = why;
      this.#opts.log.error("corrupt file", { file: hex, why });
    }
    return new RequestError(
      ErrorCode.Internal,
      `file ${hex} corrupt on node ${this.#opts.nodeName}: ${why}`,
    );
  }

  /** Reads [offset, offset+n) by whole blocks (pread-like, one buffer) and checks each block. */
  async #readVerified(hex: string, e: Entry, offset: number, n: number): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0);
    const bb = e.blockBytes;
    const first = Math.floor(offset / bb);
    const start = first * bb;
    const end = Math.min(e.size, Math.ceil((offset + n) / bb) * bb);
    const buf = new Uint8Array(end - start);
    let f: Deno.FsFile;
    try {
      f = await Deno.open(`${this.filesDir}/${hex}`, { read: true });
    } catch (err) {
      throw this.#corrupt(hex, `cannot open: ${(err as Error).message}`, e);
    }
    try {
      await f.seek(start, Deno.SeekMode.Start);
      const got = await readFull(f, buf);
      if (got !== buf.length) {
        throw this.#corrupt(hex, `short read at ${start + got}: file truncated`, e);
      }
    } finally {
      f.close();
    }
    const blocks = e.blocks!;
    // The blocks are hashed on a hashing thread (lib/hash_worker.ts): `buf` is moved there and
    // back, not copied, and this thread serves other requests meanwhile.
    const { data: read, digests } = await sha256Blocks(buf, bb);
    for (let b = 0, pos = 0; pos < read.length; b++, pos += bb) {
      const d = digests.subarray(b * 32, (b + 1) * 32);
      const want = blocks.subarray((first + b) * 32, (first + b + 1) * 32);
      if (!bytesEqual(d, want)) {
        throw this.#corrupt(
          hex,
          `block ${first + b} (offset ${(first + b) * bb}) fails SHA-256`,
          e,
        );
      }
    }
    return read.subarray(offset - start, offset - start + n);
  }

  #ensureBlocks(hex: string, e: Entry): Promise<void> {
    if (e.blocks || e.corrupt) return Promise.resolve();
    e.loading ??= this.#loadBlocks(hex, e).finally(() => (e.loading = null));
    return e.loading;
  }

  async #loadBlocks(hex: string, e: Entry): Promise<void> {
    const side = await readSidecar(`${this.filesDir}/${hex}.blocks`, hex, e.size);
    if (side) {
      e.blocks = side.blocks;
      e.blockBytes = side.blockBytes;
      return;
    }
    // Missing or damaged sidecar: rebuild it from the data, but only if the data still hashes
    // to the id (otherwise the file is corrupt and must never be served). A file of one block
    // has no sidecar by design (its block hash is the whole-file hash, checked against the id).
    const bb = this.#opts.blockBytes;
    const single = e.size <= bb;
    if (!single) this.#opts.log.warn("rebuilding block sidecar", { file: hex });
    const acc = new BlockHasher(bb);
    const f = await Deno.open(`${this.filesDir}/${hex}`, { read: true });
    const buf = new Uint8Array(4 * MiB);
    try {
      for (;;) {
        const k = await f.read(buf);
        if (k === null) break;
        acc.update(buf.subarray(0, k));
      }
    } finally {
      f.close();
    }
    const { digest, blocks } = acc.finish();
    if (!bytesEqual(digest.subarray(0, 16), hexToId(hex))) {
      e.corrupt = "content does not hash to its id";
      this.#opts.log.error("corrupt file", { file: hex });
      return;
    }
    if (!single) {
      try {
        await writeSidecar(this.filesDir, hex, e.size, bb, blocks);
      } catch (err) {
        // E.g. a full disk: the verified hashes serve from memory; the next start rebuilds.
        this.#opts.log.warn("cannot write rebuilt sidecar", { file: hex, error: err });
      }
    }
    e.blocks = blocks;
    e.blockBytes = bb;
  }

  // -------------------------------------------------------------------------------------------
  // Uploads

  /**
   * Accepts one file_put chunk; resolves with the ack once its bytes are durable (and, for the
   * last chunk, the file is verified and committed, and `from.owner` is one of its owners).
   * Chunks of one upload (same file id and uploader, see the module doc) are processed
   * strictly in arrival order.
   */
  async put(msg: FilePut, from: PutFrom = { owner: null }): Promise<FilePutAck> {
    // Everything up to the queueing below runs synchronously (no await before it), so chunks
    // keep their arrival order.
    if (this.#closed) throw new RequestError(ErrorCode.Unavailable, "storage node closing");
    const hex = uuidToHex(msg.file);
    if (msg.offset + msg.data.length > msg.totalLength) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `file ${hex}: chunk [${msg.offset}, ${msg.offset + msg.data.length}) beyond ` +
          `total length ${msg.totalLength}`,
      );
    }
    if (this.#queuedBytes + msg.data.length > this.#opts.maxQueuedBytes) {
      throw new RequestError(
        ErrorCode.Unavailable,
        `storage node ${this.#opts.nodeName} busy: ${this.#queuedBytes} upload bytes queued`,
      );
    }
    // A put of a file already here (a re-put, a verifying upload) makes it young again: the
    // collector never deletes a file put within the grace (removeIfIdle).
    const here = this.#index.get(hex);
    if (here) here.putAt = Date.now();
    // The chunk's bytes stay referenced (budgeted) until it is answered, whichever way.
    const size = msg.data.length;
    this.#queuedBytes += size;
    try {
      return await this.#putChunk(msg, hex, from);
    } finally {
      this.#queuedBytes -= size;
    }
  }

  #putChunk(msg: FilePut, hex: string, from: PutFrom): Promise<FilePutAck> {
    const key = `${hex}.${uploaderTag(msg.node, from)}`;
    const owner = from.owner;
    let u = this.#uploads.get(key);
    if (u?.dead) {
      // A failed upload whose temp file is being removed: this chunk belongs to it.
      return Promise.reject(u.failure ?? new RequestError(ErrorCode.Unavailable, "upload closing"));
    }
    const whole = msg.offset === 0 && (msg.flags & FilePutFlags.Last) !== 0 &&
      msg.data.length === msg.totalLength && msg.totalLength <= this.#opts.blockBytes;
    if (!u && whole) {
      const found = this.#index.get(hex);
      if (!found || found.corrupt) return this.#putWhole(msg, hex, key, owner);
    }
    if (!u) {
      const found = this.#index.get(hex);
      // A corrupt copy is replaced by a full upload, not merely checked against.
      const existing = found?.corrupt ? undefined : found;
      if (existing && msg.offset > 0) {
        // A retry after a lost committed ack (or a re-put of an existing file that skipped the
        // start): the verified bytes under this id are already here.
        if (existing.size !== msg.totalLength) {
          return Promise.reject(
            this.#conflict(hex, `length ${msg.totalLength} != ${existing.size}`),
          );
        }
        return this.#alreadyHere(msg, hex, existing.size, owner);
      }
      u = this.#newUpload(key, msg, hex, !!existing, owner);
    }
    u.lastUsed = Date.now();
    const up = u;
    return new Promise<FilePutAck>((resolve, reject) => {
      up.queue.push({ msg, resolve, reject });
      if (!up.running) this.#run(up);
    });
  }

  /**
   * A chunk past offset 0 of a file already here, with no upload of it open: acked committed
   * for an uploader that owns it (or names no owner); anyone else has not shown the bytes and
   * is told to send them all (WRONG_OFFSET with value 0, which clients resume from).
   */
  #alreadyHere(
    msg: FilePut,
    hex: string,
    size: number,
    owner: string | null,
  ): Promise<FilePutAck> {
    if (owner !== null && !this.#owners.has(hex, owner)) {
      return Promise.reject(
        new RequestError(
          ErrorCode.WrongOffset,
          `file ${hex}: expected offset 0, got ${msg.offset} (the file is here, but ${owner} ` +
            `becomes an owner only by sending all of it)`,
          0,
        ),
      );
    }
    this.counters.puts++;
    this.counters.putBytes += msg.data.length;
    return Promise.resolve(this.#ack(msg.file, size, true));
  }

  /**
   * A whole file in one chunk of at most one block (most program outputs): hash, write a temp,
   * fdatasync, rename into place, fsync the directory. No upload state, no sidecar (the single
   * block's hash is the file's own, re-derived and checked against the id when first read after
   * a restart), no temp-directory fsync: the temp is never acknowledged before the rename.
   */
  async #putWhole(
    msg: FilePut,
    hex: string,
    key: string,
    owner: string | null,
  ): Promise<FilePutAck> {
    const digest = new Uint8Array(createHash("sha256").update(msg.data).digest());
    if (!bytesEqual(digest.subarray(0, 16), msg.file)) {
      throw this.#conflict(
        hex,
        `content hashes to ${uuidToHex(digest.subarray(0, 16))}, not the id`,
      );
    }
    // The bytes are verified: the owner record is written alongside the file (its append
    // overlaps the file's fdatasync, and shares the log's fdatasync with other puts). Both are
    // awaited before the ack. Should the file's commit fail, the record outlives it harmlessly
    // (owners.ts, "Owners of an absent file": the name did send these very bytes; owners count
    // only for indexed files; they are dropped on open when the file is not on disk).
    const owned = owner === null ? null : this.#owners.add(hex, owner);
    owned?.catch(() => {}); // awaited below, unless the file's own failure is the answer
    const tmp = `${this.tmpDir}/${key}.${crypto.randomUUID()}`;
    try {
      const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
      try {
        await writeFull(f, msg.data);
        await f.syncData();
      } finally {
        f.close();
      }
      await Deno.rename(tmp, `${this.filesDir}/${hex}`);
    } catch (e) {
      await this.#removeQuietly(tmp);
      throw this.#logged(hex, this.#ioError(`put of file ${hex}`, e));
    }
    try {
      await syncDir(this.filesDir);
    } catch (e) {
      // In place but not known durable: not indexed (not acknowledged); a retry replaces it.
      throw this.#logged(hex, this.#ioError(`put of file ${hex}`, e));
    }
    this.#storedBytes += msg.totalLength - (this.#index.get(hex)?.size ?? 0);
    this.#index.set(hex, {
      size: msg.totalLength,
      blocks: digest,
      blockBytes: this.#opts.blockBytes,
      loading: null,
      corrupt: null,
      putAt: Date.now(),
    });
    this.counters.puts++;
    this.counters.putBytes += msg.data.length;
    this.#opts.log.debug("file committed", { file: hex, size: msg.totalLength });
    if (owned) {
      try {
        await owned;
      } catch (e) {
        // The file stays (verified, durable); the put is not acked, and its retry (a verified
        // re-upload of a file already here) records the owner.
        throw this.#logged(hex, this.#ioError(`owner ${owner} of file ${hex}`, e));
      }
    }
    return this.#ack(msg.file, msg.totalLength, true);
  }

  /**
   * The answer to a failed file operation: NO_SPACE for a full disk or quota, INTERNAL with the
   * system's error text otherwise; a RequestError (a verdict, not an I/O error) passes as is.
   */
  #ioError(what: string, e: unknown): RequestError {
    if (e instanceof RequestError) return e;
    const text = e instanceof Error ? e.message : String(e);
    if (isNoSpace(e)) {
      this.diskErrors.noSpaceAtMs = Date.now();
      return new RequestError(
        ErrorCode.NoSpace,
        `${what}: no space left on storage node ${this.#opts.nodeName}: ${text}`,
      );
    }
    this.diskErrors.ioErrorAtMs = Date.now();
    this.diskErrors.ioError = text.slice(0, 200);
    return new RequestError(ErrorCode.Internal, `${what} failed: ${text}`);
  }

  /** Logs a failed put (a full disk or an I/O error at warn level, a refusal at debug). */
  #logged(hex: string, err: RequestError): RequestError {
    const io = err.code === ErrorCode.NoSpace || err.code === ErrorCode.Internal;
    this.#opts.log[io ? "warn" : "debug"]("upload failed", {
      file: hex,
      code: err.code,
      error: err.message,
    });
    return err;
  }

  /** Removes a file that may not exist; any other failure is logged (the tmp sweep retries). */
  async #removeQuietly(path: string): Promise<void> {
    try {
      await Deno.remove(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        this.#opts.log.warn("cannot remove temp file", { path, error: e });
      }
    }
  }

  #conflict(hex: string, why: string): RequestError {
    return new RequestError(ErrorCode.Conflict, `file ${hex}: ${why}`);
  }

  #ack(file: Uuid, durable: number, committed: boolean): FilePutAck {
    return {
      type: MessageType.FilePutAck,
      node: this.#opts.node,
      file,
      durableLength: durable,
      committed,
    };
  }

  #newUpload(
    key: string,
    msg: FilePut,
    hex: string,
    verifyOnly: boolean,
    owner: string | null,
  ): Upload {
    const u: Upload = {
      key,
      id: msg.file.slice(),
      hex,
      total: msg.totalLength,
      path: verifyOnly ? null : `${this.tmpDir}/${key}`,
      file: null,
      written: 0,
      hasher: sha256BlockStream(this.#opts.blockBytes),
      queue: [],
      running: false,
      ready: Promise.resolve(),
      lastUsed: Date.now(),
      dead: false,
      failure: null,
      owner,
    };
    this.#uploads.set(key, u);
    u.ready = this.#openUpload(u, msg.offset);
    return u;
  }

  /** Opens the temp file; an existing one (from before a restart) is rehashed and resumed. */
  async #openUpload(u: Upload, firstOffset: number): Promise<void> {
    if (!u.path) return;
    if (firstOffset === 0) {
      // The uploader starts over: an earlier attempt's leftovers are discarded so a fresh
      // attempt never inherits bytes damaged by a crash. Resuming means sending offset > 0.
      await Deno.remove(u.path).catch(() => {});
      u.file = await Deno.open(u.path, { read: true, write: true, create: true });
    } else {
      try {
        u.file = await Deno.open(u.path, { read: true, write: true });
      } catch (e) {
        // Nothing to resume (never started here, or dropped after a failure): the uploader
        // starts over, and no empty temp file is left behind for it.
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        throw new RequestError(
          ErrorCode.WrongOffset,
          `file ${u.hex}: expected offset 0, got ${firstOffset}`,
          0,
        );
      }
    }
    const size = (await u.file.stat()).size;
    if (size === 0) {
      // Acks report durable bytes of this temp file: its directory entry must be durable too.
      await syncDir(this.tmpDir);
      return;
    }
    const buf = new Uint8Array(4 * MiB);
    await u.file.seek(0, Deno.SeekMode.Start);
    for (;;) {
      const k = await u.file.read(buf);
      if (k === null) break;
      await this.#hashIn(u, buf.subarray(0, k));
      u.written += k;
    }
    // Bytes past the last fsync may be lost by a power cut but not by a process crash; a gap
    // or damage there is caught by the final hash check (CONFLICT, client restarts).
    await u.file.syncData();
    this.#opts.log.info("upload resumed", { file: u.hex, offset: u.written });
  }

  /** Hashes bytes of the upload (copied to a hashing thread: lib/hash_worker.ts). */
  #hashIn(u: Upload, data: Uint8Array): Promise<void> {
    return u.hasher.update(data);
  }

  /** Works through the upload's queue; never rejects (it is not awaited). */
  async #run(u: Upload): Promise<void> {
    u.running = true;
    try {
      try {
        await u.ready;
      } catch (e) {
        await this.#failUpload(u, this.#ioError(`upload of ${u.hex}`, e));
        return;
      }
      while (u.queue.length > 0 && !u.dead) {
        const batch = u.queue.splice(0);
        try {
          await this.#runBatch(u, batch);
        } catch (e) {
          // The temp file is in an unknown state: answer every chunk of the batch not answered
          // yet (settling is idempotent: acked ones stay acked), then drop the upload entirely.
          const err = this.#ioError(`upload of ${u.hex}`, e);
          for (const c of batch) c.reject(err);
          await this.#failUpload(u, err);
        }
      }
    } catch (e) {
      this.#opts.log.error("upload loop failed", { file: u.hex, error: e });
    } finally {
      u.running = false;
      // A chunk may have queued between the loop's last check and here.
      if (u.queue.length > 0 && !u.dead) this.#run(u);
    }
  }

  /**
   * Writes a batch of chunks, fsyncs once, then acks (or commits on the last chunk). Throws on
   * a failure of the upload (I/O error, failed verification); `#run` answers and cleans up.
   */
  async #runBatch(u: Upload, batch: PendingChunk[]): Promise<void> {
    const acked: PendingChunk[] = [];
    let last: PendingChunk | null = null;
    for (let i = 0; i < batch.length; i++) {
      const c = batch[i];
      const m = c.msg;
      if (m.totalLength !== u.total) {
        c.reject(
          new RequestError(
            ErrorCode.BadRequest,
            `file ${u.hex}: total length ${m.totalLength} != ${u.total} of the upload`,
          ),
        );
        continue;
      }
      if (m.offset > u.written) {
        c.reject(
          new RequestError(
            ErrorCode.WrongOffset,
            `file ${u.hex}: expected offset ${u.written}, got ${m.offset}`,
            u.written,
          ),
        );
        continue;
      }
      const end = m.offset + m.data.length;
      if (end > u.written) {
        // Only the part not already stored is written (a retried chunk may overlap).
        const fresh = m.data.subarray(u.written - m.offset);
        await this.#hashIn(u, fresh);
        if (u.file) {
          await u.file.seek(u.written, Deno.SeekMode.Start);
          await writeFull(u.file, fresh);
        }
        u.written = end;
      }
      this.counters.puts++;
      this.counters.putBytes += m.data.length;
      if (m.flags & FilePutFlags.Last) {
        last = c;
        // Chunks after the last one of a batch are stale retries: answer them afterwards.
        for (const rest of batch.slice(i + 1)) u.queue.push(rest);
        break;
      }
      acked.push(c);
    }
    if (u.file && acked.length + (last ? 1 : 0) > 0) await u.file.syncData();
    for (const c of acked) c.resolve(this.#ack(u.id, u.written, false));
    if (last) await this.#commit(u, last);
  }

  /** Verifies and commits the upload; throws (to `#run`) when it cannot. */
  async #commit(u: Upload, c: PendingChunk): Promise<void> {
    if (u.written !== u.total || c.msg.offset + c.msg.data.length !== u.total) {
      throw this.#conflict(
        u.hex,
        `length mismatch: last chunk ends at ${u.written}, total ${u.total}`,
      );
    }
    const bb = this.#opts.blockBytes;
    const { digest, blocks } = await u.hasher.finish();
    if (!bytesEqual(digest.subarray(0, 16), u.id)) {
      throw this.#conflict(
        u.hex,
        `content hashes to ${uuidToHex(digest.subarray(0, 16))}, not the id`,
      );
    }
    // Verified: the owner is recorded alongside the commit, both awaited before the ack (see
    // #putWhole: a record outliving a failed commit is harmless).
    const owned = u.owner === null ? null : this.#owners.add(u.hex, u.owner);
    owned?.catch(() => {}); // awaited below, unless the commit's own failure is the answer
    if (u.path) {
      u.file?.close();
      u.file = null;
      // Sidecar first: a data file in files/ always has its sidecar (or it gets rebuilt).
      await writeSidecar(this.filesDir, u.hex, u.total, bb, blocks);
      const dest = `${this.filesDir}/${u.hex}`;
      try {
        await Deno.rename(u.path, dest);
      } catch (e) {
        // The new sidecar would be an orphan (unless it now describes a file already here).
        if (!this.#index.has(u.hex)) await this.#removeQuietly(`${dest}.blocks`);
        throw e;
      }
      // In place but, should these fail, not known durable: not indexed (not acknowledged).
      await syncDir(this.filesDir);
      await syncDir(this.tmpDir);
      // Replacing a corrupt copy (possibly truncated on disk) or a concurrent commit.
      this.#storedBytes += u.total - (this.#index.get(u.hex)?.size ?? 0);
      this.#index.set(u.hex, {
        size: u.total,
        blocks,
        blockBytes: bb,
        loading: null,
        corrupt: null,
        putAt: Date.now(),
      });
      this.#opts.log.info("file committed", { file: u.hex, size: u.total });
    }
    // The bytes were verified (stored now, or found equal to the stored ones): u.owner has
    // shown possession. Recorded before the ack; a failure fails the put (its retry re-adds).
    await owned;
    this.#dropUpload(u, true);
    c.resolve(this.#ack(u.id, u.total, true));
    // Stale retries queued behind the last chunk: the file is committed now.
    for (const r of u.queue.splice(0)) r.resolve(this.#ack(u.id, u.total, true));
  }

  /**
   * Drops a failed upload: answers its queued chunks, closes and removes its temp file. Until
   * the temp is gone the upload stays indexed (dead), so that chunks still arriving for it get
   * the same answer instead of starting a new upload on the same temp path.
   */
  async #failUpload(u: Upload, err: RequestError): Promise<void> {
    u.dead = true;
    u.hasher.abort();
    u.failure = err;
    for (const c of u.queue.splice(0)) c.reject(err);
    try {
      u.file?.close();
    } catch { /* already closed */ }
    u.file = null;
    try {
      if (u.path) await this.#removeQuietly(u.path);
    } finally {
      if (this.#uploads.get(u.key) === u) this.#uploads.delete(u.key);
    }
    this.#logged(u.hex, err);
  }

  #dropUpload(u: Upload, dead: boolean): void {
    u.dead = u.dead || dead;
    u.hasher.abort();
    try {
      u.file?.close();
    } catch { /* already closed */ }
    u.file = null;
    if (this.#uploads.get(u.key) === u) this.#uploads.delete(u.key);
  }

  /** Stops accepting uploads, waits for running batches and closes all files. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (let i = 0; i < 200 && [...this.#uploads.values()].some((u) => u.running); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const u of [...this.#uploads.values()]) {
      for (const c of u.queue.splice(0)) {
        c.reject(new RequestError(ErrorCode.Unavailable, "storage node closing"));
      }
      this.#dropUpload(u, false);
    }
    await this.#owners.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * The uploader part of an upload's key and temp name: the node's uuid in insecure mode without
 * an owner (as always), else 16 bytes of SHA-256 of (sender key, node, owner), so that only the
 * sender that started an upload for an owner continues it.
 */
function uploaderTag(node: Uuid, from: PutFrom): string {
  if (from.uploader === undefined && from.owner === null) return uuidToHex(node);
  const h = createHash("sha256").update(
    `dsys upload\0${from.uploader ?? ""}\0${uuidToHex(node)}\0${from.owner ?? ""}`,
  );
  return uuidToHex(new Uint8Array(h.digest()).subarray(0, 16));
}

/** Whole-file SHA-256 plus per-block SHA-256, fed incrementally. */
class BlockHasher {
  #all = createHash("sha256");
  #block = createHash("sha256");
  #fill = 0;
  #blocks: Uint8Array[] = [];
  constructor(readonly bb: number) {}
  update(data: Uint8Array): void {
    this.#all.update(data);
    let p = 0;
    while (p < data.length) {
      const k = Math.min(this.bb - this.#fill, data.length - p);
      this.#block.update(data.subarray(p, p + k));
      this.#fill += k;
      p += k;
      if (this.#fill === this.bb) {
        this.#blocks.push(new Uint8Array(this.#block.digest()));
        this.#block = createHash("sha256");
        this.#fill = 0;
      }
    }
  }
  finish(): { digest: Uint8Array; blocks: Uint8Array } {
    if (this.#fill > 0 || this.#blocks.length === 0) {
      this.#blocks.push(new Uint8Array(this.#block.digest()));
    }
    return { digest: new Uint8Array(this.#all.digest()), blocks: concat(this.#blocks) };
  }
}

async function writeSidecar(
  dir: string,
  hex: string,
  size: number,
  bb: number,
  blocks: Uint8Array,
): Promise<void> {
  const n = blocks.length / 32;
  const out = new Uint8Array(SIDECAR_HEADER + blocks.length + 4);
  const dv = new DataView(out.buffer);
  out.set(SIDECAR_MAGIC, 0);
  out.set(hexToId(hex), 8);
  dv.setBigUint64(24, BigInt(size), true);
  dv.setUint32(32, bb, true);
  dv.setUint32(36, n, true);
  out.set(blocks, SIDECAR_HEADER);
  dv.setUint32(out.length - 4, crc32(out.subarray(0, out.length - 4)), true);
  // Unique temp name: two uploaders may commit the same id at the same time.
  const tmp = `${dir}/${hex}.blocks.tmp-${crypto.randomUUID()}`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      await writeFull(f, out);
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, `${dir}/${hex}.blocks`);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {}); // never a leftover (e.g. a full disk)
    throw e;
  }
}

/** A full disk or an exhausted quota (errors are values: their errno code, not their text). */
function isNoSpace(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}

async function readSidecar(
  path: string,
  hex: string,
  size: number,
): Promise<{ blocks: Uint8Array; blockBytes: number } | null> {
  let b: Uint8Array;
  try {
    b = await Deno.readFile(path);
  } catch {
    return null;
  }
  if (b.length < SIDECAR_HEADER + 4 || !bytesEqual(b.subarray(0, 8), SIDECAR_MAGIC)) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(b.length - 4, true) !== crc32(b.subarray(0, b.length - 4))) return null;
  if (!bytesEqual(b.subarray(8, 24), hexToId(hex))) return null;
  if (Number(dv.getBigUint64(24, true)) !== size) return null;
  const bb = dv.getUint32(32, true);
  const n = dv.getUint32(36, true);
  if (bb === 0 || n !== Math.max(1, Math.ceil(size / bb))) return null;
  if (b.length !== SIDECAR_HEADER + 32 * n + 4) return null;
  return { blocks: b.slice(SIDECAR_HEADER, SIDECAR_HEADER + 32 * n), blockBytes: bb };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hexToId(hex: string): Uuid {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
