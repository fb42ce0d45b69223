/**
 * The storage node's file store: immutable, content-addressed files on a local disk.
 *
 * Uploads are split like the other roles: every decision about a file_put chunk (the offset an
 * upload expects, what is written and durable, group commit, resumption, the shortcut for a
 * file already here, verification and commit, idle and failed uploads, the memory budget) is
 * made by the pure `UploadCore` (upload_core.ts); this file is its disk shell: it feeds the
 * core the chunks and the outcome of every effect, and carries out the effects (open, hash on
 * the hashing threads + write, fdatasync, verify, commit, remove a temp, answer). Reads, the
 * index, sidecars, owners and deletion are done here.
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
 * arrive while a batch of the same upload is written or synced are written and synced together
 * by the next one (group commit), so a pipelining client costs one fsync per batch, not per chunk.
 * The last chunk is verified (length, SHA-256 prefix == id), the sidecar and the file are
 * renamed into `files/` and the directory is fsync'd before the committed ack.
 *
 * Owners: a put that names an owner makes it one only when this put's own bytes were verified
 * (a full upload, or a complete re-upload of a file already here), durably before the
 * committed ack: one append to the owners log, written while the file itself is committed.
 * The shortcut that acks a retried chunk of a file already here (offset > 0) is taken only for
 * an owner; anyone else is told WRONG_OFFSET 0 and sends it all.
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
import {
  type PutError,
  UploadCore,
  type UploadEffect,
  type UploadInput,
  UploadInvariantError,
} from "./upload_core.ts";

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

/** A chunk the core has not answered yet: its bytes, and how to answer it. */
interface PendingChunk {
  msg: FilePut;
  key: string;
  resolve: (ack: FilePutAck) => void;
  reject: (e: unknown) => void;
}

/** The I/O side of an open upload (its state is UploadCore's). */
interface UploadIo {
  hex: string;
  id: Uuid;
  total: number;
  /** Temp path, or null when the file already exists and the upload only verifies the bytes. */
  path: string | null;
  file: Deno.FsFile | null;
  /** Whole-file and per-block SHA-256 of the bytes written, on a hashing thread. */
  hasher: Sha256BlockStream;
  /** Per-block hashes, once verified. */
  blocks: Uint8Array | null;
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
  /** The uploads' decisions (pure); #chunks and #ios are the shell's side of them. */
  #core: UploadCore;
  #chunks = new Map<number, PendingChunk>();
  #ios = new Map<number, UploadIo>();
  #nextChunk = 1;
  #storedBytes = 0;
  #sweeper: ReturnType<typeof setInterval> | undefined;

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
    this.#core = new UploadCore({
      blockBytes: this.#opts.blockBytes,
      idleUploadMs: this.#opts.idleUploadMs,
      maxQueuedBytes: this.#opts.maxQueuedBytes,
      nodeName: opts.nodeName,
    });
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
      if (this.#core.hasKey(e.name)) continue;
      const p = `${this.tmpDir}/${e.name}`;
      const st = await Deno.stat(p).catch(() => null);
      if (st && now - (st.mtime?.getTime() ?? 0) > this.#opts.tmpTtlMs) {
        await Deno.remove(p).catch(() => {});
        this.#opts.log.info("stale upload removed", { tmp: e.name });
      }
    }
  }

  #sweepIdle(): void {
    // Idle uploads lose their fd and hash state; their temp stays and a later chunk resumes it.
    this.#step({ kind: "tick", nowMs: Date.now() });
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
    return this.#core.size;
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
    if (this.#core.hasLiveUpload(hex)) return false;
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
  // Uploads: the decisions are UploadCore's (upload_core.ts); this carries out its effects.

  /**
   * Accepts one file_put chunk; resolves with the ack once its bytes are durable (and, for the
   * last chunk, the file is verified and committed, and `from.owner` is one of its owners).
   * Chunks of one upload (same file id and uploader, see the module doc) are processed
   * strictly in arrival order.
   */
  put(msg: FilePut, from: PutFrom = { owner: null }): Promise<FilePutAck> {
    const hex = uuidToHex(msg.file);
    const key = `${hex}.${uploaderTag(msg.node, from)}`;
    const id = this.#nextChunk++;
    const owner = from.owner;
    const found = this.#index.get(hex);
    const answer = new Promise<FilePutAck>((resolve, reject) => {
      this.#chunks.set(id, { msg, key, resolve, reject });
    });
    this.#step({
      kind: "chunk",
      id,
      key,
      hex,
      offset: msg.offset,
      length: msg.data.length,
      totalLength: msg.totalLength,
      last: (msg.flags & FilePutFlags.Last) !== 0,
      owner,
      here: found ? { size: found.size, corrupt: found.corrupt !== null } : null,
      ownerHas: owner === null || (found !== undefined && this.#owners.has(hex, owner)),
      nowMs: Date.now(),
    });
    return answer;
  }

  /** Feeds the upload core and carries out what it decides, in order. */
  #step(input: UploadInput): void {
    for (const e of this.#core.step(input)) this.#effect(e);
  }

  #effect(e: UploadEffect): void {
    switch (e.kind) {
      case "ack": {
        const c = this.#answered(e.chunk);
        c.resolve(this.#ack(c.msg.file, e.durable, e.committed));
        return;
      }
      case "error":
        this.#answered(e.chunk).reject(
          new RequestError(e.error.code, e.error.message, e.error.value),
        );
        return;
      case "count":
        this.counters.puts++;
        this.counters.putBytes += e.bytes;
        return;
      case "touch": {
        // The collector never deletes a file put within the grace (removeIfIdle).
        const here = this.#index.get(e.hex);
        if (here) here.putAt = Date.now();
        return;
      }
      case "open": {
        const io: UploadIo = {
          hex: e.hex,
          id: hexToId(e.hex),
          total: e.total,
          path: e.verifyOnly ? null : `${this.tmpDir}/${e.key}`,
          file: null,
          hasher: sha256BlockStream(this.#opts.blockBytes),
          blocks: null,
        };
        this.#ios.set(e.upload, io);
        this.#io(e.upload, io, () => this.#openUpload(e.upload, io, e.fresh));
        return;
      }
      case "write": {
        const io = this.#ios.get(e.upload)!;
        const data = this.#chunks.get(e.chunk)!.msg.data.subarray(e.from, e.from + e.length);
        this.#io(e.upload, io, async () => {
          // Hashed on a hashing thread (copied there: lib/hash_worker.ts), then written.
          await io.hasher.update(data);
          if (io.file) {
            await io.file.seek(e.at, Deno.SeekMode.Start);
            await writeFull(io.file, data);
          }
          return { kind: "write_done", upload: e.upload };
        });
        return;
      }
      case "sync": {
        const io = this.#ios.get(e.upload)!;
        this.#io(e.upload, io, async () => {
          await io.file?.syncData();
          return { kind: "sync_done", upload: e.upload };
        });
        return;
      }
      case "verify": {
        const io = this.#ios.get(e.upload)!;
        this.#io(e.upload, io, async () => {
          const { digest, blocks } = await io.hasher.finish();
          io.blocks = blocks;
          const got = digest.subarray(0, 16);
          return {
            kind: "verify_done",
            upload: e.upload,
            mismatch: bytesEqual(got, io.id)
              ? null
              : `content hashes to ${uuidToHex(got)}, not the id`,
          };
        });
        return;
      }
      case "commit": {
        const io = this.#ios.get(e.upload)!;
        this.#io(e.upload, io, () => this.#commit(e.upload, io, e.owner));
        return;
      }
      case "put_whole": {
        const c = this.#chunks.get(e.chunk)!;
        const hex = uuidToHex(c.msg.file);
        this.#putWhole(c.msg, hex, c.key, e.owner).then(
          (): UploadInput => ({ kind: "whole_done", chunk: e.chunk, error: null }),
          (err): UploadInput => ({
            kind: "whole_done",
            chunk: e.chunk,
            error: putError(this.#ioError(`put of file ${hex}`, err)),
          }),
        ).then((input) => this.#stepAfterIo(input));
        return;
      }
      case "drop": {
        const io = this.#ios.get(e.upload);
        this.#ios.delete(e.upload);
        if (io) closeIo(io);
        if (e.error) {
          this.#logged(
            io?.hex ?? "",
            new RequestError(e.error.code, e.error.message, e.error.value),
          );
        }
        if (e.removeTemp) {
          const path = io?.path;
          (path ? this.#removeQuietly(path) : Promise.resolve())
            .then(() => this.#stepAfterIo({ kind: "dropped", upload: e.upload }));
        }
        return;
      }
    }
  }

  /** The shell's record of chunk `id`, which the core just answered (exactly once). */
  #answered(id: number): PendingChunk {
    const c = this.#chunks.get(id);
    if (!c) throw new UploadInvariantError(`store: chunk ${id} answered twice`);
    this.#chunks.delete(id);
    return c;
  }

  /**
   * Runs the one outstanding I/O of an upload and feeds its outcome to the core; a thrown error
   * is the upload's failure (NO_SPACE or INTERNAL). An upload dropped meanwhile (closing) has its
   * file closed here.
   */
  #io(upload: number, io: UploadIo, op: () => Promise<UploadInput>): void {
    op().catch((e): UploadInput => ({
      kind: "failed",
      upload,
      error: putError(this.#ioError(`upload of ${io.hex}`, e)),
    })).then((input) => {
      if (this.#ios.get(upload) !== io) closeIo(io);
      this.#stepAfterIo(input);
    });
  }

  /** #step from an I/O callback: a broken invariant is logged, then thrown (a bug: crash). */
  #stepAfterIo(input: UploadInput): void {
    try {
      this.#step(input);
    } catch (e) {
      this.#opts.log.error("upload core failed", { input: input.kind, error: e });
      throw e;
    }
  }

  /** Opens the temp file; an existing one (from before a restart) is rehashed and resumed. */
  async #openUpload(upload: number, io: UploadIo, fresh: boolean): Promise<UploadInput> {
    if (!io.path) return { kind: "opened", upload, size: 0 };
    if (fresh) {
      await Deno.remove(io.path).catch(() => {});
      io.file = await Deno.open(io.path, { read: true, write: true, create: true });
    } else {
      try {
        io.file = await Deno.open(io.path, { read: true, write: true });
      } catch (e) {
        // No empty temp file is left behind for an uploader that has to start over.
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        return { kind: "open_missing", upload };
      }
    }
    const size = (await io.file.stat()).size;
    if (size === 0) {
      // Acks report durable bytes of this temp file: its directory entry must be durable too.
      await syncDir(this.tmpDir);
      return { kind: "opened", upload, size: 0 };
    }
    const buf = new Uint8Array(4 * MiB);
    await io.file.seek(0, Deno.SeekMode.Start);
    let read = 0;
    for (;;) {
      const k = await io.file.read(buf);
      if (k === null) break;
      await io.hasher.update(buf.subarray(0, k));
      read += k;
    }
    // Bytes past the last fsync may be lost by a power cut but not by a process crash; a gap
    // or damage there is caught by the final hash check (CONFLICT, client restarts).
    await io.file.syncData();
    this.#opts.log.info("upload resumed", { file: io.hex, offset: read });
    return { kind: "opened", upload, size: read };
  }

  /** Commits a verified upload (and records its owner); throws when it cannot. */
  async #commit(upload: number, io: UploadIo, owner: string | null): Promise<UploadInput> {
    const bb = this.#opts.blockBytes;
    // The owner is recorded alongside the commit, both awaited before the ack (see #putWhole:
    // a record outliving a failed commit is harmless).
    const owned = owner === null ? null : this.#owners.add(io.hex, owner);
    owned?.catch(() => {}); // awaited below, unless the commit's own failure is the answer
    if (io.path) {
      io.file?.close();
      io.file = null;
      // Sidecar first: a data file in files/ always has its sidecar (or it gets rebuilt).
      await writeSidecar(this.filesDir, io.hex, io.total, bb, io.blocks!);
      const dest = `${this.filesDir}/${io.hex}`;
      try {
        await Deno.rename(io.path, dest);
      } catch (e) {
        // The new sidecar would be an orphan (unless it now describes a file already here).
        if (!this.#index.has(io.hex)) await this.#removeQuietly(`${dest}.blocks`);
        throw e;
      }
      // In place but, should these fail, not known durable: not indexed (not acknowledged).
      await syncDir(this.filesDir);
      await syncDir(this.tmpDir);
      // Replacing a corrupt copy (possibly truncated on disk) or a concurrent commit.
      this.#storedBytes += io.total - (this.#index.get(io.hex)?.size ?? 0);
      this.#index.set(io.hex, {
        size: io.total,
        blocks: io.blocks,
        blockBytes: bb,
        loading: null,
        corrupt: null,
        putAt: Date.now(),
      });
      this.#opts.log.info("file committed", { file: io.hex, size: io.total });
    }
    // The bytes were verified (stored now, or found equal to the stored ones): the owner has
    // shown possession. Recorded before the ack; a failure fails the put (its retry re-adds).
    await owned;
    return { kind: "commit_done", upload };
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

  /** Stops accepting uploads, waits for running batches and closes all files. */
  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#step({ kind: "close" });
    for (let i = 0; i < 200 && this.#core.busy; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // Whatever is still unanswered is told UNAVAILABLE; every upload's file is closed.
    this.#step({ kind: "shutdown" });
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

/** A RequestError as the core's error value. */
function putError(e: RequestError): PutError {
  return { code: e.code as PutError["code"], message: e.message, value: e.value };
}

/** Closes an upload's file and stops its hashing (idempotent). */
function closeIo(io: UploadIo): void {
  io.hasher.abort();
  try {
    io.file?.close();
  } catch { /* already closed */ }
  io.file = null;
}

function hexToId(hex: string): Uuid {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
