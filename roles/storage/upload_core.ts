/**
 * The storage node's upload core: what every file_put chunk is answered, and what the disk has
 * to do for it, as a pure state machine.
 *
 * No I/O, no timers, no clock, no hashing: the shell (store.ts) feeds it inputs (`step`) — a
 * chunk arrived, an effect it carried out ended (opened, written, synced, verified, committed,
 * failed, temp removed), an idle tick with the time — and carries out the effects it returns
 * (open the temp, write bytes at an offset, fdatasync, verify, commit, store a whole small file,
 * drop the upload's temp, answer a chunk). Time enters only as `nowMs` of the inputs, so a
 * sequence of inputs always yields the same effects (tests/storage_upload_core_test.ts drives
 * it without a disk).
 *
 * One upload per key (file id + uploader tag, store.ts): the next offset it expects
 * (`written`), what of that is fdatasync'd (`durable`), its queue of chunks and the batch being
 * written. Life of an upload:
 *
 * ```
 * chunk ─▶ opening ─opened─▶ writing ─(write_done…)─▶ syncing ─sync_done─▶ idle ◀─┐
 *              │                 ▲ chunks queued meanwhile form the next batch ──┘
 *              │ open_missing    └ last chunk in the batch: verifying ─verify_done─▶ committing
 *              ▼ / failed                                               commit_done │
 *            dead ─dropped─▶ (gone; a retry starts over)          (gone: committed) ◀┘
 * ```
 *
 * Group commit: chunks that arrive while a batch is written or synced wait in the queue and
 * are written and synced together by the next batch (one fdatasync per batch). An upload is
 * idle (no effect outstanding, nothing queued) between batches; idle longer than `idleUploadMs`
 * it is dropped without removing its temp, so a later chunk resumes it (WRONG_OFFSET tells an
 * uploader where). A failure (the shell's NO_SPACE or INTERNAL, a failed verification) answers
 * every chunk not answered yet with the error and drops the upload with its temp: a retry
 * starts over at offset 0.
 *
 * Every chunk admitted is charged to a budget of queued bytes until it is answered: a chunk
 * that would take it over `maxQueuedBytes` is refused with UNAVAILABLE. The invariants
 * (`#check`, after every step for what it touched; `checkInvariants` for all) are a bug of this
 * core or of its shell when they fail, never bad input, and throw `UploadInvariantError`.
 * @module
 */
import { ErrorCode } from "../../wire/mod.ts";

/** An error answer as a value: wire code, text, and `error.value` (WRONG_OFFSET: resume there). */
export interface PutError {
  code: ErrorCode;
  message: string;
  value: number;
}

/** Options of an UploadCore. */
export interface UploadCoreOptions {
  /** Largest file stored whole from one chunk (no upload state, no sidecar), bytes. */
  blockBytes: number;
  /** Open uploads idle for this long are dropped (their temp stays, resumable), ms. */
  idleUploadMs: number;
  /** Most bytes of chunks admitted and not answered yet, across all uploads. */
  maxQueuedBytes: number;
  /** Name of this node in error texts. */
  nodeName: string;
}

/** What the index says about the committed file a chunk names (null: not here). */
export interface FileHere {
  size: number;
  /** Found corrupt: absent for put (a re-upload replaces it). */
  corrupt: boolean;
}

/** A file_put chunk as it arrives (its bytes stay with the shell, named by `id`). */
export interface ChunkArrived {
  kind: "chunk";
  /** Unique id of the chunk, chosen by the shell (named by the effects about it). */
  id: number;
  /** Upload key: file hex + uploader tag. */
  key: string;
  /** File id, hex (error texts, the put time of a file here). */
  hex: string;
  offset: number;
  length: number;
  totalLength: number;
  last: boolean;
  /** User made an owner when the upload commits (null: nobody). */
  owner: string | null;
  /** The committed file under this id, if any. */
  here: FileHere | null;
  /** `owner` is null or already an owner of the committed file. */
  ownerHas: boolean;
  nowMs: number;
}

/** An input of the core. */
export type UploadInput =
  | ChunkArrived
  /** The temp is open: `size` bytes of it were found (resumed, rehashed and synced). */
  | { kind: "opened"; upload: number; size: number }
  /** A resume (first offset > 0) found no temp to resume. */
  | { kind: "open_missing"; upload: number }
  /** The last `write` is done (hashed and written). */
  | { kind: "write_done"; upload: number }
  /** The batch's fdatasync returned. */
  | { kind: "sync_done"; upload: number }
  /** The whole-file hash was checked against the id: null = equal, else why not. */
  | { kind: "verify_done"; upload: number; mismatch: string | null }
  /** The file is in files/, durable, indexed, and the owner recorded. */
  | { kind: "commit_done"; upload: number }
  /** The outstanding effect of the upload failed (NO_SPACE, INTERNAL, ...). */
  | { kind: "failed"; upload: number; error: PutError }
  /** The temp of a dropped upload is removed (`drop` with removeTemp). */
  | { kind: "dropped"; upload: number }
  /** A `put_whole` ended: null = committed. */
  | { kind: "whole_done"; chunk: number; error: PutError | null }
  /** Time passes: idle uploads are dropped. */
  | { kind: "tick"; nowMs: number }
  /** The node is closing: new chunks are refused. */
  | { kind: "close" }
  /** The node closes now: every chunk is answered UNAVAILABLE, every upload dropped. */
  | { kind: "shutdown" };

/** An effect for the shell to carry out. */
export type UploadEffect =
  /**
   * Create the upload's I/O state (hasher; temp unless `verifyOnly`). `fresh`: remove any old
   * temp and start empty; else open the existing one and rehash it (`opened`/`open_missing`).
   */
  | {
    kind: "open";
    upload: number;
    key: string;
    hex: string;
    total: number;
    fresh: boolean;
    verifyOnly: boolean;
  }
  /** Hash `length` bytes of chunk `chunk` from `from`, and write them at `at` (not verifyOnly). */
  | { kind: "write"; upload: number; chunk: number; from: number; length: number; at: number }
  /** fdatasync the temp. */
  | { kind: "sync"; upload: number }
  /** Finish the hash and compare it with the id (`verify_done`). */
  | { kind: "verify"; upload: number }
  /** Commit the verified upload (sidecar, rename, fsyncs, index; verifyOnly: none) + owner. */
  | { kind: "commit"; upload: number; owner: string | null; verifyOnly: boolean }
  /** Store chunk `chunk` as a whole file (`whole_done`). */
  | { kind: "put_whole"; chunk: number; owner: string | null }
  /** Forget the upload's I/O state; `removeTemp`: also remove its temp (`dropped`). */
  | { kind: "drop"; upload: number; removeTemp: boolean; error: PutError | null }
  /** Count `bytes` of a file_put that was taken (storage_stats). */
  | { kind: "count"; bytes: number }
  /** The committed file `hex` was put again now (the collector spares it). */
  | { kind: "touch"; hex: string }
  /** Answer chunk `chunk`: an ack (durable bytes, committed) or an error. */
  | { kind: "ack"; chunk: number; durable: number; committed: boolean }
  | { kind: "error"; chunk: number; error: PutError };

/** A broken invariant of the upload core: a bug, never bad input. */
export class UploadInvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UploadInvariantError";
  }
}

type Phase = "opening" | "idle" | "writing" | "syncing" | "verifying" | "committing" | "dead";

interface Pending {
  id: number;
  length: number;
  offset: number;
  totalLength: number;
  last: boolean;
  /** Upload it belongs to (-1: a whole-file put). */
  upload: number;
}

interface Upload {
  uid: number;
  key: string;
  hex: string;
  total: number;
  verifyOnly: boolean;
  owner: string | null;
  firstOffset: number;
  phase: Phase;
  /** Next offset expected: bytes written (and hashed) so far. */
  written: number;
  /** Bytes of `written` known fdatasync'd. */
  durable: number;
  /** Chunks waiting for the next batch, in arrival order. */
  queue: number[];
  /** The batch being written: chunks not processed yet (head first). */
  batch: number[];
  /** Chunks of the batch written, to ack once synced. */
  acked: number[];
  /** The last chunk of the batch (answered on commit). */
  lastChunk: number | null;
  /** Chunk whose `write` is outstanding, and the offset it writes to. */
  writing: { chunk: number; end: number } | null;
  lastUsedMs: number;
  failure: PutError | null;
}

/** Pure state of every upload of a storage node (see the module doc). */
export class UploadCore {
  readonly #o: UploadCoreOptions;
  #byKey = new Map<string, Upload>();
  #byUid = new Map<number, Upload>();
  #pending = new Map<number, Pending>();
  #queuedBytes = 0;
  #nextUid = 1;
  #closing = false;
  #shut = false;
  #out: UploadEffect[] = [];

  constructor(opts: UploadCoreOptions) {
    if (!(opts.blockBytes > 0 && opts.maxQueuedBytes >= 0 && opts.idleUploadMs >= 0)) {
      throw new UploadInvariantError("upload_core: bad options");
    }
    this.#o = opts;
  }

  /** Bytes of chunks admitted and not answered yet. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Uploads held (open, or dead until their temp is gone). */
  get size(): number {
    return this.#byKey.size;
  }

  /** Chunks admitted and not answered yet. */
  get pendingChunks(): number {
    return this.#pending.size;
  }

  /** True while an upload `key` is held (its temp is in use). */
  hasKey(key: string): boolean {
    return this.#byKey.has(key);
  }

  /** True when an upload of file `hex` is open and not failed (a delete of `hex` waits). */
  hasLiveUpload(hex: string): boolean {
    for (const u of this.#byKey.values()) if (u.hex === hex && u.phase !== "dead") return true;
    return false;
  }

  /** True while some upload has an effect outstanding (close waits for them). */
  get busy(): boolean {
    for (const u of this.#byKey.values()) {
      if (u.phase !== "idle" && u.phase !== "dead") return true;
    }
    return false;
  }

  /** Written and durable bytes of upload `key` (tests, logs); null when none is held. */
  progress(key: string): { written: number; durable: number; phase: string } | null {
    const u = this.#byKey.get(key);
    return u ? { written: u.written, durable: u.durable, phase: u.phase } : null;
  }

  /** Feeds one input; returns the effects to carry out, in order. */
  step(input: UploadInput): UploadEffect[] {
    this.#out = [];
    let touched: Upload | undefined;
    switch (input.kind) {
      case "chunk":
        touched = this.#chunk(input);
        break;
      case "whole_done": {
        const p = this.#pending.get(input.chunk);
        if (!p || p.upload !== -1) return this.#stale(`whole_done of chunk ${input.chunk}`);
        if (input.error) this.#error(p.id, input.error);
        else {
          this.#emit({ kind: "count", bytes: p.length });
          this.#ack(p.id, p.totalLength, true);
        }
        break;
      }
      case "tick":
        for (const u of [...this.#byKey.values()]) {
          if (
            u.phase === "idle" && u.queue.length === 0 &&
            input.nowMs - u.lastUsedMs > this.#o.idleUploadMs
          ) this.#forget(u);
        }
        break;
      case "close":
        this.#closing = true;
        break;
      case "shutdown":
        this.#closing = true;
        this.#shut = true;
        for (const u of [...this.#byKey.values()]) {
          for (const c of this.#unanswered(u)) this.#error(c, closingError());
          if (u.phase !== "dead") {
            this.#emit({ kind: "drop", upload: u.uid, removeTemp: false, error: null });
          }
          this.#remove(u);
        }
        for (const p of [...this.#pending.values()]) this.#error(p.id, closingError());
        break;
      default: {
        const u = this.#byUid.get(input.upload);
        if (!u) return this.#stale(`${input.kind} of upload ${input.upload}`);
        touched = u;
        this.#uploadInput(u, input);
      }
    }
    if (touched) this.#check(touched);
    this.#checkBudget();
    return this.#out;
  }

  /** Checks every invariant over all state (tests call it after every step). */
  checkInvariants(): void {
    let sum = 0;
    for (const p of this.#pending.values()) {
      sum += p.length;
      if (p.upload !== -1) {
        const u = this.#byUid.get(p.upload);
        assert(u !== undefined, `chunk ${p.id} pending on a gone upload ${p.upload}`);
        const n = this.#unanswered(u).filter((c) => c === p.id).length;
        assert(n === 1, `chunk ${p.id} held ${n} times by upload ${u.key}`);
      }
    }
    assert(sum === this.#queuedBytes, `queued bytes ${this.#queuedBytes} != pending ${sum}`);
    for (const u of this.#byKey.values()) {
      assert(this.#byUid.get(u.uid) === u, `upload ${u.key} not indexed by uid`);
      this.#check(u);
    }
    assert(this.#byUid.size === this.#byKey.size, "upload indexes differ");
    this.#checkBudget();
  }

  // -------------------------------------------------------------------------------------------

  #chunk(c: ChunkArrived): Upload | undefined {
    assert(!this.#pending.has(c.id), `chunk id ${c.id} reused while pending`);
    assert(c.length >= 0 && c.offset >= 0 && c.totalLength >= 0, `chunk ${c.id}: negative field`);
    if (this.#closing) {
      this.#emit({ kind: "error", chunk: c.id, error: closingError() });
      return;
    }
    if (c.offset + c.length > c.totalLength) {
      this.#emit({
        kind: "error",
        chunk: c.id,
        error: err(
          ErrorCode.BadRequest,
          `file ${c.hex}: chunk [${c.offset}, ${c.offset + c.length}) beyond total length ` +
            `${c.totalLength}`,
        ),
      });
      return;
    }
    if (this.#queuedBytes + c.length > this.#o.maxQueuedBytes) {
      this.#emit({
        kind: "error",
        chunk: c.id,
        error: err(
          ErrorCode.Unavailable,
          `storage node ${this.#o.nodeName} busy: ${this.#queuedBytes} upload bytes queued`,
        ),
      });
      return;
    }
    // A put of a file already here (a re-put, a verifying upload) makes it young again.
    if (c.here) this.#emit({ kind: "touch", hex: c.hex });
    // Admitted: its bytes are budgeted until it is answered, whichever way.
    const p: Pending = {
      id: c.id,
      length: c.length,
      offset: c.offset,
      totalLength: c.totalLength,
      last: c.last,
      upload: -1,
    };
    this.#pending.set(c.id, p);
    this.#queuedBytes += c.length;
    let u = this.#byKey.get(c.key);
    if (u?.phase === "dead") {
      // A failed upload whose temp is being removed: this chunk belongs to it.
      this.#error(c.id, u.failure ?? err(ErrorCode.Unavailable, "upload closing"));
      return u;
    }
    const existing = c.here && !c.here.corrupt ? c.here : null;
    if (!u) {
      const whole = c.offset === 0 && c.last && c.length === c.totalLength &&
        c.totalLength <= this.#o.blockBytes;
      if (whole && !existing) {
        this.#emit({ kind: "put_whole", chunk: c.id, owner: c.owner });
        return;
      }
      if (existing && c.offset > 0) {
        // A retry after a lost committed ack (or a re-put that skipped the start): the
        // verified bytes under this id are already here — for an uploader that owns them.
        if (existing.size !== c.totalLength) {
          this.#error(
            c.id,
            err(ErrorCode.Conflict, `file ${c.hex}: length ${c.totalLength} != ${existing.size}`),
          );
        } else if (!c.ownerHas) {
          this.#error(
            c.id,
            err(
              ErrorCode.WrongOffset,
              `file ${c.hex}: expected offset 0, got ${c.offset} (the file is here, but ` +
                `${c.owner} becomes an owner only by sending all of it)`,
              0,
            ),
          );
        } else {
          this.#emit({ kind: "count", bytes: c.length });
          this.#ack(c.id, existing.size, true);
        }
        return;
      }
      u = this.#newUpload(c, existing !== null);
    }
    assert(u.phase !== "dead", `chunk queued to dead upload ${u.key}`);
    u.lastUsedMs = c.nowMs;
    p.upload = u.uid;
    u.queue.push(c.id);
    if (u.phase === "idle") this.#startBatch(u);
    return u;
  }

  #newUpload(c: ChunkArrived, verifyOnly: boolean): Upload {
    const u: Upload = {
      uid: this.#nextUid++,
      key: c.key,
      hex: c.hex,
      total: c.totalLength,
      verifyOnly,
      owner: c.owner,
      firstOffset: c.offset,
      phase: "opening",
      written: 0,
      durable: 0,
      queue: [],
      batch: [],
      acked: [],
      lastChunk: null,
      writing: null,
      lastUsedMs: c.nowMs,
      failure: null,
    };
    this.#byKey.set(u.key, u);
    this.#byUid.set(u.uid, u);
    this.#emit({
      kind: "open",
      upload: u.uid,
      key: u.key,
      hex: u.hex,
      total: u.total,
      // The uploader starts over at 0: an earlier attempt's leftovers are discarded, so a fresh
      // attempt never inherits bytes damaged by a crash. Resuming means sending offset > 0.
      fresh: c.offset === 0,
      verifyOnly,
    });
    return u;
  }

  #uploadInput(u: Upload, input: Extract<UploadInput, { upload: number }>): void {
    const expect = (phase: Phase) => {
      assert(u.phase === phase, `${input.kind} of upload ${u.key} in phase ${u.phase}`);
    };
    switch (input.kind) {
      case "opened":
        expect("opening");
        if (input.size > u.total) {
          this.#fail(
            u,
            err(
              ErrorCode.Conflict,
              `file ${u.hex}: ${input.size} bytes received before exceed total length ${u.total}`,
            ),
          );
          return;
        }
        u.written = input.size;
        u.durable = input.size; // the shell synced what it found
        this.#startBatch(u);
        return;
      case "open_missing":
        expect("opening");
        // Nothing to resume (never started here, or dropped after a failure): start over.
        this.#fail(
          u,
          err(ErrorCode.WrongOffset, `file ${u.hex}: expected offset 0, got ${u.firstOffset}`, 0),
        );
        return;
      case "write_done": {
        expect("writing");
        assert(u.writing !== null, `write_done of upload ${u.key} with no write outstanding`);
        const w = u.writing;
        u.writing = null;
        u.written = w.end;
        // A verifying upload's bytes are the committed file's: durable as they are.
        if (u.verifyOnly) u.durable = u.written;
        this.#taken(u, w.chunk);
        this.#advance(u);
        return;
      }
      case "sync_done":
        expect("syncing");
        u.durable = u.written;
        this.#synced(u);
        return;
      case "verify_done":
        expect("verifying");
        if (input.mismatch !== null) {
          this.#fail(u, err(ErrorCode.Conflict, `file ${u.hex}: ${input.mismatch}`));
          return;
        }
        u.phase = "committing";
        this.#emit({ kind: "commit", upload: u.uid, owner: u.owner, verifyOnly: u.verifyOnly });
        return;
      case "commit_done": {
        expect("committing");
        const last = u.lastChunk!;
        u.lastChunk = null;
        u.durable = u.total;
        this.#emit({ kind: "drop", upload: u.uid, removeTemp: false, error: null });
        this.#remove(u);
        this.#ack(last, u.total, true);
        // Stale retries queued behind the last chunk: the file is committed now (a chunk that
        // names another total length is refused, as it is in a batch).
        for (const c of u.queue.splice(0)) {
          if (this.#pending.get(c)!.totalLength === u.total) this.#ack(c, u.total, true);
          else this.#error(c, this.#otherTotal(u, this.#pending.get(c)!));
        }
        return;
      }
      case "failed":
        assert(
          u.phase !== "idle" && u.phase !== "dead",
          `failure of upload ${u.key} with nothing outstanding (${u.phase})`,
        );
        this.#fail(u, input.error);
        return;
      case "dropped":
        expect("dead");
        this.#remove(u);
        return;
    }
  }

  /** Starts a batch of everything queued (idle or just opened). */
  #startBatch(u: Upload): void {
    if (u.queue.length === 0) {
      u.phase = "idle";
      return;
    }
    u.batch = u.queue.splice(0);
    u.acked = [];
    u.lastChunk = null;
    u.phase = "writing";
    this.#advance(u);
  }

  /** Works through the batch until a write is outstanding, or the batch is written. */
  #advance(u: Upload): void {
    while (u.batch.length > 0) {
      const id = u.batch.shift()!;
      const p = this.#pending.get(id)!;
      if (p.totalLength !== u.total) {
        this.#error(id, this.#otherTotal(u, p));
        continue;
      }
      if (p.offset > u.written) {
        this.#error(
          id,
          err(
            ErrorCode.WrongOffset,
            `file ${u.hex}: expected offset ${u.written}, got ${p.offset}`,
            u.written,
          ),
        );
        continue;
      }
      const end = p.offset + p.length;
      if (end > u.written) {
        // Only the part not already stored is written (a retried chunk may overlap).
        u.writing = { chunk: id, end };
        this.#emit({
          kind: "write",
          upload: u.uid,
          chunk: id,
          from: u.written - p.offset,
          length: end - u.written,
          at: u.written,
        });
        return;
      }
      this.#taken(u, id);
      if (u.lastChunk !== null) break;
    }
    if (u.acked.length + (u.lastChunk !== null ? 1 : 0) > 0 && !u.verifyOnly) {
      u.phase = "syncing";
      this.#emit({ kind: "sync", upload: u.uid });
      return;
    }
    this.#synced(u);
  }

  /** Chunk `id` of the batch is stored (written now or before): counted, acked once synced. */
  #taken(u: Upload, id: number): void {
    const p = this.#pending.get(id)!;
    this.#emit({ kind: "count", bytes: p.length });
    if (p.last) {
      u.lastChunk = id;
      // Chunks after the last one of a batch are stale retries: answered after the commit.
      u.queue.push(...u.batch.splice(0));
    } else u.acked.push(id);
  }

  /** The batch is durable: acks, then the commit (last chunk) or the next batch. */
  #synced(u: Upload): void {
    for (const c of u.acked.splice(0)) this.#ack(c, u.written, false);
    if (u.lastChunk === null) {
      this.#startBatch(u);
      return;
    }
    const p = this.#pending.get(u.lastChunk)!;
    if (u.written !== u.total || p.offset + p.length !== u.total) {
      this.#fail(
        u,
        err(
          ErrorCode.Conflict,
          `file ${u.hex}: length mismatch: last chunk ends at ${u.written}, total ${u.total}`,
        ),
      );
      return;
    }
    u.phase = "verifying";
    this.#emit({ kind: "verify", upload: u.uid });
  }

  #otherTotal(u: Upload, p: Pending): PutError {
    return err(
      ErrorCode.BadRequest,
      `file ${u.hex}: total length ${p.totalLength} != ${u.total} of the upload`,
    );
  }

  /** Answers every chunk of the upload with `e` and drops it with its temp (a retry restarts). */
  #fail(u: Upload, e: PutError): void {
    for (const c of this.#unanswered(u)) this.#error(c, e);
    u.queue = [];
    u.batch = [];
    u.acked = [];
    u.lastChunk = null;
    u.writing = null;
    u.failure = e;
    // Until the temp is gone the upload stays held (dead), so that chunks still arriving for
    // it get the same answer instead of starting a new upload on the same temp path.
    u.phase = "dead";
    this.#emit({ kind: "drop", upload: u.uid, removeTemp: true, error: e });
  }

  /** Drops an upload without its temp (idle: a later chunk resumes it). */
  #forget(u: Upload): void {
    this.#emit({ kind: "drop", upload: u.uid, removeTemp: false, error: null });
    this.#remove(u);
  }

  #remove(u: Upload): void {
    this.#byKey.delete(u.key);
    this.#byUid.delete(u.uid);
  }

  #unanswered(u: Upload): number[] {
    // In arrival order: written, being written, the last, the rest of the batch, queued.
    const out = [...u.acked];
    if (u.writing !== null) out.push(u.writing.chunk);
    if (u.lastChunk !== null) out.push(u.lastChunk);
    return out.concat(u.batch, u.queue);
  }

  #ack(id: number, durable: number, committed: boolean): void {
    this.#settle(id);
    this.#emit({ kind: "ack", chunk: id, durable, committed });
  }

  #error(id: number, e: PutError): void {
    this.#settle(id);
    this.#emit({ kind: "error", chunk: id, error: e });
  }

  /** A chunk is answered: exactly once, and its bytes leave the budget. */
  #settle(id: number): void {
    const p = this.#pending.get(id);
    assert(p !== undefined, `chunk ${id} answered twice (or never admitted)`);
    this.#pending.delete(id);
    this.#queuedBytes -= p.length;
  }

  #emit(e: UploadEffect): void {
    this.#out.push(e);
  }

  /** An input about something gone: expected only after shutdown (effects still ending). */
  #stale(what: string): UploadEffect[] {
    assert(this.#shut, `${what}: not known to the upload core`);
    return [];
  }

  #check(u: Upload): void {
    if (!this.#byKey.has(u.key)) return; // committed, idle-dropped or gone: takes no chunks
    assert(
      0 <= u.durable && u.durable <= u.written && u.written <= u.total,
      `upload ${u.key}: durable ${u.durable} <= written ${u.written} <= total ${u.total} broken`,
    );
    assert((u.phase === "writing") === (u.writing !== null), `upload ${u.key}: write state`);
    if (u.phase === "dead") {
      assert(this.#unanswered(u).length === 0, `dead upload ${u.key} holds chunks`);
    }
    if (u.phase === "idle") {
      assert(
        u.queue.length === 0 && u.batch.length === 0 && u.acked.length === 0 &&
          u.lastChunk === null,
        `idle upload ${u.key} holds chunks`,
      );
    }
    if (u.phase === "verifying" || u.phase === "committing") {
      assert(u.lastChunk !== null && u.written === u.total, `upload ${u.key}: commit state`);
    }
    if (u.verifyOnly) assert(u.durable === u.written, `verifying upload ${u.key}: durable`);
  }

  #checkBudget(): void {
    assert(
      this.#queuedBytes >= 0 && this.#queuedBytes <= this.#o.maxQueuedBytes,
      `queued bytes ${this.#queuedBytes} outside [0, ${this.#o.maxQueuedBytes}]`,
    );
  }
}

function err(code: ErrorCode, message: string, value = 0): PutError {
  return { code, message, value };
}

function closingError(): PutError {
  return err(ErrorCode.Unavailable, "storage node closing");
}

function assert(ok: boolean, message: string): asserts ok {
  if (!ok) throw new UploadInvariantError(`upload core: ${message}`);
}
