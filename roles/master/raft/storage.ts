/**
 * Durable Raft storage: hard state (term, vote, commit), the log, and the latest snapshot, in
 * one directory. The only module of the Raft library that does I/O.
 *
 * Layout:
 * - `wal-<16 hex seq>.log` segments of records framed as u32 length | u32 CRC-32 | payload.
 *   Payload byte 0 is the record kind: 1 = entries (replace every entry with index >= the
 *   first one), 2 = hard state, 3 = log base (a snapshot marker: discard everything before).
 *   Appends go to the newest segment, fsync'd (`syncData`) before save() resolves.
 * - `snapshot.bin`: one framed record, replaced atomically (write temp, fsync, rename, fsync
 *   directory).
 *
 * Start-up replays the segments in order. A torn or corrupt tail of the newest segment (crash
 * mid-write) is detected by length/CRC and truncated; corruption anywhere else is an error
 * (acknowledged data would be lost), and so is a bad record of the newest segment that a valid
 * one follows (a torn write only loses the end). A bit flip in the newest segment's last record
 * cannot be told from a torn write: it is cut like one. Compaction and snapshot installation
 * rewrite the log into a fresh segment (written under a temp name, fsync'd, renamed) that starts
 * with a base marker and holds only the entries after the snapshot, then delete the older
 * segments; start-up finishes a rewrite a crash interrupted after the snapshot file was in place.
 * Once a save or compaction failed, every later one is refused (the member must stop).
 *
 * All I/O goes through a {@link DurableFs} ({@link denoFs} unless `StorageOptions.fs` says
 * otherwise), so the simulator can run this code on a file system that crashes and fails.
 */
import { crc32 } from "../../../lib/crc32.ts";
import { denoFs, type DurableFile, type DurableFs } from "../../../lib/fs_api.ts";
import { dirname } from "../../../lib/fsutil.ts";
import {
  type Entry,
  type HardState,
  type PersistedState,
  RaftError,
  type Ready,
  type Snapshot,
} from "./types.ts";

/**
 * Any failure of durable storage: an I/O error (the original is the `cause`), corruption found
 * on start-up, or saves that break the log's shape. Every public method of {@link FileStorage}
 * throws only this (or nothing), so a driver can tell "the disk failed, durability is gone:
 * stop" from every other error by type alone.
 */
export class RaftStorageError extends RaftError {
  /** @param path file concerned @param offset byte offset (-1 if not applicable) */
  constructor(
    readonly path: string,
    readonly offset: number,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(`raft storage ${path}${offset >= 0 ? `@${offset}` : ""}: ${reason}`, options);
  }
}

/** The former name of {@link RaftStorageError}. */
export const StorageError = RaftStorageError;
/** The former name of {@link RaftStorageError}. */
export type StorageError = RaftStorageError;

/** Runs storage work; any error that is not already a RaftStorageError is wrapped in one. */
async function io<T>(dir: string, what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw asStorageError(dir, what, e);
  }
}

function asStorageError(dir: string, what: string, e: unknown): RaftStorageError {
  if (e instanceof RaftStorageError) return e;
  const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new RaftStorageError(dir, -1, `${what} failed: ${why}`, { cause: e });
}

/** Tuning for {@link FileStorage}. */
export interface StorageOptions {
  /** Start a new segment when the current one exceeds this size (default 8 MiB). */
  segmentBytes?: number;
  /** The file system (default {@link denoFs}, the real disk). */
  fs?: DurableFs;
  /**
   * TEST ONLY: plant a durability bug, so tests/raft_storage_faults_test.ts can show that it
   * catches it. Never set outside that test.
   */
  plantedBug?: PlantedStorageBug;
}

/**
 * Durability bugs {@link StorageOptions.plantedBug} can plant: `ack-before-fsync` resolves
 * save() without waiting for its fsync (modelled as not fsyncing: the crash comes first);
 * `no-dir-fsync-after-rename` skips the directory fsyncs after renaming the snapshot file and the
 * rewritten log into place (and after deleting the old segments, which would cover them); `trust-corrupt-tail` treats any bad record in the newest segment as a
 * torn tail and cuts it and everything after it.
 */
export type PlantedStorageBug =
  | "ack-before-fsync"
  | "no-dir-fsync-after-rename"
  | "trust-corrupt-tail";

/** What start-up recovery found. */
export interface RecoveryInfo {
  segments: number;
  records: number;
  /** Bytes cut from the newest segment's torn/corrupt tail (0 if it was clean). */
  truncatedBytes: number;
}

const REC_ENTRIES = 1;
const REC_HARDSTATE = 2;
const REC_BASE = 3;
const MAX_RECORD = 512 * 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------- payload encoding

class Buf {
  parts: Uint8Array[] = [];
  size = 0;
  push(b: Uint8Array): void {
    this.parts.push(b);
    this.size += b.length;
  }
  u8(v: number): void {
    this.push(Uint8Array.of(v));
  }
  u32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v);
    this.push(b);
  }
  u64(v: number): void {
    this.u32(Math.floor(v / 0x1_0000_0000));
    this.u32(v >>> 0);
  }
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.push(b);
  }
  str(s: string): void {
    this.bytes(enc.encode(s));
  }
  done(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

class Cur {
  pos = 0;
  view: DataView;
  constructor(readonly b: Uint8Array, readonly path: string, readonly base: number) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.b.length) {
      throw new StorageError(this.path, this.base + this.pos, "record payload truncated");
    }
  }
  u8(): number {
    this.need(1);
    return this.b[this.pos++];
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    return this.u32() * 0x1_0000_0000 + this.u32();
  }
  bytes(): Uint8Array {
    const n = this.u32();
    this.need(n);
    const out = this.b.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  str(): string {
    return dec.decode(this.bytes());
  }
}

function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, payload.length);
  v.setUint32(4, crc32(payload));
  out.set(payload, 8);
  return out;
}

function encEntries(ents: Entry[]): Uint8Array {
  const b = new Buf();
  b.u8(REC_ENTRIES);
  b.u32(ents.length);
  for (const e of ents) {
    b.u64(e.term);
    b.u64(e.index);
    b.u8(e.type === "conf" ? 1 : 0);
    b.bytes(e.data);
  }
  return b.done();
}

function encHardState(hs: HardState): Uint8Array {
  const b = new Buf();
  b.u8(REC_HARDSTATE);
  b.u64(hs.term);
  b.u8(hs.vote === null ? 0 : 1);
  b.str(hs.vote ?? "");
  b.u64(hs.commit);
  return b.done();
}

function encBase(index: number, term: number): Uint8Array {
  const b = new Buf();
  b.u8(REC_BASE);
  b.u64(index);
  b.u64(term);
  return b.done();
}

function encSnapshot(s: Snapshot): Uint8Array {
  const b = new Buf();
  b.u64(s.index);
  b.u64(s.term);
  b.u32(s.conf.voters.length);
  for (const v of s.conf.voters) b.str(v);
  b.bytes(s.data);
  return b.done();
}

function decSnapshot(c: Cur): Snapshot {
  const index = c.u64();
  const term = c.u64();
  const n = c.u32();
  const voters: string[] = [];
  for (let i = 0; i < n; i++) voters.push(c.str());
  return { index, term, conf: { voters }, data: c.bytes() };
}

/** Splits a buffer into valid framed payloads; returns where the valid prefix ends. */
function scanFrames(buf: Uint8Array): { payloads: [number, Uint8Array][]; validEnd: number } {
  const payloads: [number, Uint8Array][] = [];
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  while (pos + 8 <= buf.length) {
    const len = v.getUint32(pos);
    const crc = v.getUint32(pos + 4);
    // Zero-length records are never written: a zeroed tail (fs extended the file) is torn.
    if (len === 0 || len > MAX_RECORD || pos + 8 + len > buf.length) break;
    const payload = buf.subarray(pos + 8, pos + 8 + len);
    if (crc32(payload) !== crc) break;
    payloads.push([pos, payload]);
    pos += 8 + len;
  }
  return { payloads, validEnd: pos };
}

/**
 * Where the first valid frame after `from` starts (any byte offset; -1 if none). A torn write
 * loses only the end of the last append, so a valid record after a bad one means the bad one
 * is corruption of acknowledged data, not a torn tail. Cheap on a torn tail (the bytes after it
 * are at most one append); a candidate must also carry a known record kind before its CRC is
 * computed.
 */
function findFrameAfter(buf: Uint8Array, from: number): number {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let q = from + 1; q + 9 <= buf.length; q++) {
    const len = v.getUint32(q);
    if (len === 0 || len > MAX_RECORD || q + 8 + len > buf.length) continue;
    const kind = buf[q + 8];
    if (kind !== REC_ENTRIES && kind !== REC_HARDSTATE && kind !== REC_BASE) continue;
    if (crc32(buf.subarray(q + 8, q + 8 + len)) === v.getUint32(q + 4)) return q;
  }
  return -1;
}

const segName = (seq: number) => `wal-${seq.toString(16).padStart(16, "0")}.log`;
const SEG_RE = /^wal-([0-9a-f]{16})\.log$/;

/** File-backed Raft storage. Create with {@link FileStorage.open}; not safe for concurrent use. */
export class FileStorage {
  private hs: HardState = { term: 0, vote: null, commit: 0 };
  private snap: Snapshot | null = null;
  private baseIndex = 0;
  private baseTerm = 0;
  private entries: Entry[] = [];
  private seq = 0;
  private file: DurableFile | null = null;
  private fileSize = 0;
  private segments: number[] = [];
  private readonly segmentBytes: number;
  private readonly fs: DurableFs;
  private readonly bug: PlantedStorageBug | undefined;
  /** The first failure of a save or compaction; every later call is refused with it. */
  private failure: RaftStorageError | null = null;
  /** What start-up recovery found (torn tail bytes truncated etc.). */
  recovery: RecoveryInfo = { segments: 0, records: 0, truncatedBytes: 0 };

  private constructor(readonly dir: string, opts: StorageOptions) {
    this.segmentBytes = opts.segmentBytes ?? 8 << 20;
    this.fs = opts.fs ?? denoFs;
    this.bug = opts.plantedBug;
  }

  /** Opens (creating if needed) a storage directory and recovers its state. */
  static open(dir: string, opts: StorageOptions = {}): Promise<FileStorage> {
    return io(dir, "open", async () => {
      const s = new FileStorage(dir, opts);
      // A directory created here is durable only once its parent is fsync'd: without that, a
      // crash could take the whole log with it (seen in tests/raft_storage_faults_test.ts).
      for (const d of await s.fs.mkdirAll(dir)) await s.fs.syncDir(dirname(d));
      await s.recover();
      return s;
    });
  }

  /** The recovered state, to pass as `restore` to a RawNode. */
  initialState(): PersistedState {
    return { hardState: { ...this.hs }, snapshot: this.snap, entries: [...this.entries] };
  }

  /** Latest durable snapshot, if any. */
  snapshot(): Snapshot | null {
    return this.snap;
  }

  /** Last persisted hard state. */
  hardState(): HardState {
    return { ...this.hs };
  }

  /** Persisted entries (after the snapshot). */
  storedEntries(): readonly Entry[] {
    return this.entries;
  }

  /**
   * Persists the durable parts of a Ready (snapshot, entries, hard state) and fsyncs.
   * Resolve this BEFORE sending the Ready's messages.
   */
  saveReady(rd: Pick<Ready, "snapshot" | "entries" | "hardState">): Promise<void> {
    return this.save(rd.hardState, rd.entries, rd.snapshot);
  }

  /** Persists an installed snapshot (replacing the whole log), entries and hard state. */
  save(hs: HardState | null, ents: Entry[], snapshot: Snapshot | null = null): Promise<void> {
    return this.guarded("save", () => this.saveUnwrapped(hs, ents, snapshot));
  }

  private async saveUnwrapped(
    hs: HardState | null,
    ents: Entry[],
    snapshot: Snapshot | null,
  ): Promise<void> {
    if (snapshot) {
      if (hs) this.hs = { ...hs };
      await this.installSnapshot(snapshot, false);
    }
    const recs: Uint8Array[] = [];
    if (ents.length) {
      this.applyEntries(ents);
      recs.push(frame(encEntries(ents)));
    }
    if (hs) {
      this.hs = { ...hs };
      recs.push(frame(encHardState(hs)));
    }
    if (recs.length === 0) return;
    await this.append(recs);
  }

  /**
   * Records a snapshot the application took (RawNode.compact) and drops the log prefix it
   * covers, keeping later entries.
   */
  compact(s: Snapshot): Promise<void> {
    return this.guarded("compact", async () => {
      if (this.snap && s.index <= this.snap.index) return;
      await this.installSnapshot(s, true);
    });
  }

  /** Closes the current segment. */
  close(): void {
    const f = this.file;
    this.file = null;
    try {
      f?.close();
    } catch (e) {
      throw asStorageError(this.dir, "close", e);
    }
  }

  // ---------------------------------------------------------------- internals

  /**
   * Runs a save or compaction, refusing it once one has failed: after a failed fsync the
   * kernel may have dropped the unwritten pages and a later fsync succeeds without them
   * ("fsyncgate"), so acknowledging anything written after a failure could lose it.
   */
  private async guarded(what: string, f: () => Promise<void>): Promise<void> {
    if (this.failure) {
      throw new RaftStorageError(this.dir, -1, `${what} refused: storage failed earlier`, {
        cause: this.failure,
      });
    }
    try {
      await io(this.dir, what, f);
    } catch (e) {
      this.failure = e as RaftStorageError;
      throw e;
    }
  }

  private applyEntries(ents: Entry[]): void {
    const first = ents[0].index;
    const keep = first - this.baseIndex - 1;
    if (keep < 0 || keep > this.entries.length) {
      throw new StorageError(
        this.dir,
        -1,
        `entries from ${first} do not follow base ${this.baseIndex} + ${this.entries.length} entries`,
      );
    }
    this.entries.length = keep;
    for (const e of ents) this.entries.push(e);
  }

  private async append(recs: Uint8Array[]): Promise<void> {
    if (!this.file || this.fileSize >= this.segmentBytes) await this.roll();
    let total = 0;
    for (const r of recs) total += r.length;
    const buf = new Uint8Array(total);
    let o = 0;
    for (const r of recs) {
      buf.set(r, o);
      o += r.length;
    }
    await this.file!.append(buf);
    this.fileSize += buf.length;
    if (this.bug !== "ack-before-fsync") await this.file!.syncData();
  }

  /** Starts a new, empty segment (made durable in the directory before use). */
  private async roll(): Promise<void> {
    this.file?.close();
    this.file = null; // closed, even if what follows fails: close() must not close it again
    this.seq++;
    const path = `${this.dir}/${segName(this.seq)}`;
    this.file = await this.fs.openAppend(path, { create: true });
    this.fileSize = 0;
    this.segments.push(this.seq);
    await this.fs.syncDir(this.dir);
  }

  private async installSnapshot(s: Snapshot, keepTail: boolean): Promise<void> {
    // 1. the snapshot file, atomically
    const tmp = `${this.dir}/snapshot.bin.tmp`;
    const f = await this.fs.openAppend(tmp, { create: true, truncate: true });
    try {
      await f.append(frame(encSnapshot(s)));
      await f.syncData();
    } finally {
      f.close();
    }
    await this.fs.rename(tmp, `${this.dir}/snapshot.bin`);
    if (this.bug !== "no-dir-fsync-after-rename") await this.fs.syncDir(this.dir);
    this.snap = s;
    // 2. the log rewritten as base marker + hard state + entries after the snapshot
    const tail = keepTail && this.matches(s.index, s.term)
      ? this.entries.filter((e) => e.index > s.index)
      : [];
    this.baseIndex = s.index;
    this.baseTerm = s.term;
    this.entries = tail;
    await this.rewriteLog();
  }

  /**
   * Replaces the log by one fresh segment holding the base marker, the hard state and the
   * entries after the base: written under a temp name, fsync'd, renamed in, older segments
   * then deleted.
   */
  private async rewriteLog(): Promise<void> {
    const recs = [frame(encBase(this.baseIndex, this.baseTerm)), frame(encHardState(this.hs))];
    if (this.entries.length) recs.push(frame(encEntries(this.entries)));
    const old = [...this.segments];
    this.file?.close();
    this.file = null;
    this.seq++;
    const name = segName(this.seq);
    const t = await this.fs.openAppend(`${this.dir}/${name}.tmp`, { create: true, truncate: true });
    let size = 0;
    try {
      for (const r of recs) {
        await t.append(r);
        size += r.length;
      }
      await t.syncData();
    } finally {
      t.close();
    }
    await this.fs.rename(`${this.dir}/${name}.tmp`, `${this.dir}/${name}`);
    if (this.bug !== "no-dir-fsync-after-rename") await this.fs.syncDir(this.dir);
    // 3. older segments are now redundant. Remove newest first so a crash midway leaves a
    // contiguous prefix of the old log, which replays cleanly before the base marker.
    for (const q of old.reverse()) {
      await this.fs.remove(`${this.dir}/${segName(q)}`).catch(() => {});
    }
    if (this.bug !== "no-dir-fsync-after-rename") await this.fs.syncDir(this.dir);
    this.segments = [this.seq];
    this.file = await this.fs.openAppend(`${this.dir}/${name}`);
    this.fileSize = size;
  }

  private matches(index: number, term: number): boolean {
    if (index === this.baseIndex) return term === this.baseTerm;
    const e = this.entries[index - this.baseIndex - 1];
    return e !== undefined && e.index === index && e.term === term;
  }

  private async recover(): Promise<void> {
    const names: number[] = [];
    for (const de of await this.fs.list(this.dir)) {
      if (!de.isFile) continue;
      if (de.name.endsWith(".tmp")) {
        // An unfinished rewrite or snapshot: never renamed into place, so never in use.
        await this.fs.remove(`${this.dir}/${de.name}`);
        continue;
      }
      const m = SEG_RE.exec(de.name);
      if (m) names.push(parseInt(m[1], 16));
    }
    names.sort((a, b) => a - b);
    // snapshot file
    try {
      const path = `${this.dir}/snapshot.bin`;
      const b = await this.fs.readFile(path);
      const { payloads, validEnd } = scanFrames(b);
      if (payloads.length !== 1 || validEnd !== b.length) {
        throw new StorageError(path, validEnd, "snapshot file corrupt");
      }
      this.snap = decSnapshot(new Cur(payloads[0][1], path, 8));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    // segments
    for (let i = 0; i < names.length; i++) {
      const path = `${this.dir}/${segName(names[i])}`;
      const b = await this.fs.readFile(path);
      const { payloads, validEnd } = scanFrames(b);
      if (validEnd !== b.length) {
        if (i !== names.length - 1) {
          throw new StorageError(path, validEnd, "corrupt record in a sealed segment");
        }
        const later = this.bug === "trust-corrupt-tail" ? -1 : findFrameAfter(b, validEnd);
        if (later >= 0) {
          throw new StorageError(
            path,
            validEnd,
            `corrupt record followed by a valid one at ${later} (not a torn write)`,
          );
        }
        // Torn tail of the segment being written at the crash: never acknowledged, drop it.
        const f = await this.fs.openAppend(path);
        try {
          await f.truncate(validEnd);
          await f.syncData();
        } finally {
          f.close();
        }
        this.recovery.truncatedBytes = b.length - validEnd;
      }
      for (const [off, p] of payloads) this.replay(new Cur(p, path, off + 8));
      this.recovery.records += payloads.length;
    }
    this.recovery.segments = names.length;
    // The snapshot file may be newer than the last base marker (crash between writing it and
    // rewriting the log): entries are only valid on top of it if the log holds its last entry.
    const snapNewer = this.snap !== null && this.snap.index > this.baseIndex;
    if (this.snap && snapNewer) {
      const tail = this.matches(this.snap.index, this.snap.term)
        ? this.entries.filter((e) => e.index > this.snap!.index)
        : [];
      this.baseIndex = this.snap.index;
      this.baseTerm = this.snap.term;
      this.entries = tail;
    }
    if (this.snap && this.hs.commit < this.snap.index) this.hs.commit = this.snap.index;
    if (this.snap && this.hs.term < this.snap.term) {
      // Crash after a first-ever snapshot install but before the log rewrite: no hard state
      // was ever durable, so nothing was voted; the snapshot's term is a safe floor.
      this.hs = { term: this.snap.term, vote: null, commit: this.hs.commit };
    }
    this.segments = names;
    this.seq = names.length ? names[names.length - 1] : 0;
    if (snapNewer) {
      // Finish the interrupted install now: appends to the old log would follow its old base
      // and not replay on top of the snapshot (seen in tests/raft_storage_faults_test.ts).
      await this.rewriteLog();
    } else if (names.length) {
      const path = `${this.dir}/${segName(this.seq)}`;
      this.file = await this.fs.openAppend(path);
      this.fileSize = await this.file.size();
    }
  }

  private replay(c: Cur): void {
    const kind = c.u8();
    if (kind === REC_ENTRIES) {
      const n = c.u32();
      const ents: Entry[] = [];
      for (let i = 0; i < n; i++) {
        const term = c.u64();
        const index = c.u64();
        const type = c.u8() === 1 ? "conf" : "normal";
        ents.push({ term, index, type, data: c.bytes() });
      }
      if (ents.length) this.applyEntries(ents);
    } else if (kind === REC_HARDSTATE) {
      const term = c.u64();
      const hasVote = c.u8() === 1;
      const vote = c.str();
      this.hs = { term, vote: hasVote ? vote : null, commit: c.u64() };
    } else if (kind === REC_BASE) {
      const index = c.u64();
      const term = c.u64();
      // A base marker starts a rewritten log, which holds every entry it keeps after it. So
      // whatever older segments (not yet deleted at a crash) replayed before it is discarded,
      // even entries that match: after an install they were meant to go, and keeping them
      // would mix the old log with the new hard state (seen in raft_storage_faults_test.ts).
      this.entries = [];
      this.baseIndex = index;
      this.baseTerm = term;
    } else {
      throw new StorageError(c.path, c.base, `unknown record kind ${kind}`);
    }
  }
}
