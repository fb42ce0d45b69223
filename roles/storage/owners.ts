/**
 * Who owns each committed file of a storage node: the keyring user names a file may be served
 * to (roles/storage/main.ts decides; docs/architecture.md, "Trust boundaries").
 *
 * On disk: ONE append-only log per storage node, `<data>/owners.log`, a lib/record_file.ts
 * RecordFile (`u32 length | u32 crc32 | payload` frames, group-committed fdatasync, a torn or
 * corrupt tail truncated on open). Payloads:
 * - `add`:  `0x01 | file id (16 bytes) | name` (a keyring name, {@linkcode OWNER_NAME});
 * - `drop`: `0x02 | file id (16 bytes)`: the file's owners (and replica count) are forgotten;
 * - `replicas`: `0x03 | file id (16 bytes) | u8 count`: replicas the cluster keeps of the file
 *   (the largest count any put asked for; repair.ts restores it when a node dies).
 * Recording an owner is one append: no file creation, no rename, no directory fsync, and the
 * appends of concurrent puts share one fdatasync. {@linkcode Owners.add} resolves only once
 * its record is on disk, so a put acknowledged after it survives a crash with its owner.
 *
 * In memory: `Map<hex id, Set<name>>`, rebuilt on open by replaying the log; at most
 * {@linkcode MAX_OWNERS} names per file (further adds are ignored on replay, refused live).
 * A record that does not decode (never written by this code) is skipped.
 *
 * Owners of an absent file: the store may record an owner at the same time as it writes the
 * file (store.ts starts both and awaits both), so a record can outlive a commit that then
 * failed. That is harmless: an owner is only ever recorded after the put's bytes were verified
 * against the id (so the name did show possession of exactly those bytes, whether or not this
 * node then managed to keep them), the store consults owners only for files in its index (a
 * missing file has no owners to anyone), and on open the owners of files that are not on disk
 * are dropped (a `drop` record), so a later upload of the file starts from whoever shows it.
 *
 * Compaction: when the log holds many more records than live (file, name) entries (drops,
 * records of failed writes), it is rewritten from the map: a temp `owners.log.tmp-<uuid>` is
 * written and fdatasync'd, renamed over the log, the directory fsync'd, and the log reopened.
 * Appends wait while that runs. A crash leaves the old or the new log, and at most a temp,
 * removed on open.
 *
 * A failed append (full disk, I/O error) may leave a torn record in the middle of the log, and
 * replay stops at the first bad frame: nothing appended after it would count. So after a
 * failure every later append of the same log is refused too, and the next add first rewrites
 * the log from the map (as a compaction does); until that succeeds adds fail, with its error.
 *
 * Migration: the former layout kept one `files/<hex id>.owners` list per file (one name per
 * `\n`-terminated line). On open such lists are imported into the log (durably) and then
 * deleted; a crash in between imports them again, which adds nothing twice.
 * @module
 */
import { ErrorCode } from "../../wire/mod.ts";
import { RequestError } from "../../lib/rpc.ts";
import { syncDir, writeFull } from "../../lib/fsutil.ts";
import { encodeRecord, RecordFile, RecordFileError } from "../../lib/record_file.ts";
import type { Logger } from "../../lib/log.ts";

/** Most owners a file can have; a further user's upload is refused TOO_LARGE. */
export const MAX_OWNERS = 1024;
/** An owner name: the grammar of keyring names (lib/security.ts), so at most 64 bytes. */
export const OWNER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Suffix of a former per-file owners list in the files directory (migrated on open). */
export const OWNERS_SUFFIX = ".owners";
/** Name of the owners log in the data directory. */
export const OWNERS_LOG = "owners.log";
/** Fewest records in the log before it is compacted (when over twice the live entries). */
export const COMPACT_MIN_RECORDS = 4096;

const ADD = 1;
const DROP = 2;
const REPLICAS = 3;
const HEX_ID = /^[0-9a-f]{32}$/;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** One decoded owners-log record. */
export type OwnersRecord =
  | { kind: "add"; hex: string; name: string }
  | { kind: "drop"; hex: string }
  | { kind: "replicas"; hex: string; count: number };

/** Options of {@linkcode Owners.open}. */
export interface OwnersOptions {
  /** The store's files directory: where former `<hex>.owners` lists are found. */
  filesDir: string;
  /** True when file `hex` is committed on disk (owners of other files are dropped on open). */
  exists: (hex: string) => boolean;
  /** Hex ids with a former `files/<hex>.owners` list, to import and delete. */
  legacy?: Iterable<string>;
  /** Most owners per file (default {@linkcode MAX_OWNERS}). */
  maxOwners?: number;
  /** Compact once the log holds more than this many records and twice the live entries. */
  compactMinRecords?: number;
  log?: Logger;
}

/** The owners of one store's files, kept in its owners log. */
export class Owners {
  readonly #dir: string;
  readonly #path: string;
  readonly #max: number;
  readonly #compactMin: number;
  readonly #log: Logger | undefined;
  #file: RecordFile;
  /** Durable owners per file. */
  readonly #map = new Map<string, Set<string>>();
  /** Replica counts recorded per file (absent = the cluster's default). */
  readonly #replicas = new Map<string, number>();
  /** Adds being written, per file and name (a second add of the same name joins the first). */
  readonly #inflight = new Map<string, Map<string, Promise<void>>>();
  /** (file, name) entries in #map. */
  #live = 0;
  /** Records in the log file (valid or not), including those being appended. */
  #records = 0;
  /** Appends handed to #file and not settled yet (a rewrite waits for them). */
  readonly #pending = new Set<Promise<void>>();
  /** The rewrite (compaction or repair) running; appends wait for it. */
  #rewriting: Promise<void> | null = null;
  /** Set when an append failed: the log may hold a torn record; rewrite before appending. */
  #broken: unknown = null;
  /** No compaction before the log holds this many records (raised after a failed one). */
  #compactAt: number;
  #closed = false;

  private constructor(dir: string, file: RecordFile, opts: OwnersOptions) {
    this.#dir = dir;
    this.#path = `${dir}/${OWNERS_LOG}`;
    this.#file = file;
    this.#max = opts.maxOwners ?? MAX_OWNERS;
    this.#compactMin = opts.compactMinRecords ?? COMPACT_MIN_RECORDS;
    this.#compactAt = this.#compactMin;
    this.#log = opts.log;
  }

  /**
   * Opens (creating) the owners log of data directory `dir`: replays it, imports and deletes
   * former per-file lists, drops the owners of files not on disk, compacts if due.
   */
  static async open(dir: string, opts: OwnersOptions): Promise<Owners> {
    for await (const e of Deno.readDir(dir)) {
      // A compaction's temp left by a crash before its rename: never used.
      if (e.name.startsWith(`${OWNERS_LOG}.tmp-`)) await Deno.remove(`${dir}/${e.name}`);
    }
    const { file, records } = await RecordFile.open(`${dir}/${OWNERS_LOG}`);
    const o = new Owners(dir, file, opts);
    try {
      // The log may have just been created: its directory entry must be durable before any
      // append to it is acknowledged.
      await syncDir(dir);
      if (file.truncatedBytes > 0) {
        o.#log?.warn("owners log: torn tail truncated", { bytes: file.truncatedBytes });
      }
      o.#records = records.length;
      for (const r of records) {
        const rec = decodeOwnersRecord(r);
        if (rec?.kind === "add") o.#apply(rec.hex, rec.name);
        else if (rec?.kind === "drop") o.#forget(rec.hex);
        else if (rec?.kind === "replicas") o.#applyReplicas(rec.hex, rec.count);
      }
      await o.#importLegacy(opts);
      const gone = [...new Set([...o.#map.keys(), ...o.#replicas.keys()])]
        .filter((hex) => !opts.exists(hex));
      // Owners recorded for a commit that then failed (see the module doc).
      await Promise.all(gone.map((hex) => o.drop(hex)));
      // A log that cannot be compacted now (a full disk) still serves: it is merely longer.
      await (o.#compactDue() ? o.#rewrite() : o.#rewriting)?.catch((e) => {
        o.#log?.warn("owners log compaction failed", { error: e });
      });
      return o;
    } catch (e) {
      await o.close().catch(() => {});
      throw e;
    }
  }

  async #importLegacy(opts: OwnersOptions): Promise<void> {
    const legacy = [...opts.legacy ?? []];
    if (legacy.length === 0) return;
    const adds: Promise<void>[] = [];
    for (const hex of legacy) {
      if (!opts.exists(hex)) continue; // without its file a list means nothing
      for (const name of await readLegacyList(`${opts.filesDir}/${hex}${OWNERS_SUFFIX}`)) {
        adds.push(
          this.add(hex, name).catch((e) => {
            // A full list (a smaller maxOwners than the list's writer had) keeps what fits.
            if (!(e instanceof RequestError && e.code === ErrorCode.TooLarge)) throw e;
          }),
        );
      }
    }
    await Promise.all(adds);
    for (const hex of legacy) {
      await Deno.remove(`${opts.filesDir}/${hex}${OWNERS_SUFFIX}`).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
    }
    await syncDir(opts.filesDir);
    this.#log?.info("owners lists imported into the owners log", { lists: legacy.length });
  }

  /** The owners of file `hex` (a copy). */
  of(hex: string): string[] {
    return [...this.#map.get(hex) ?? []];
  }

  /** Replicas recorded for file `hex` (0 = none recorded: the cluster's default applies). */
  replicasOf(hex: string): number {
    return this.#replicas.get(hex) ?? 0;
  }

  /**
   * Records that file `hex` should have `count` replicas, durably, unless as many or more are
   * recorded already (a count only grows: two users asking 2 and 3 of the same bytes get 3).
   */
  setReplicas(hex: string, count: number): Promise<void> {
    if (!HEX_ID.test(hex) || !Number.isInteger(count) || count < 1 || count > 255) {
      return Promise.reject(
        new RequestError(ErrorCode.BadRequest, `bad replica count ${count} for ${hex}`),
      );
    }
    if (this.replicasOf(hex) >= count) return Promise.resolve();
    return this.#append(encodeReplicas(hex, count), () => this.#applyReplicas(hex, count));
  }

  /** True when `name` owns file `hex`. */
  has(hex: string, name: string): boolean {
    return this.#map.get(hex)?.has(name) ?? false;
  }

  /** Records in the log (for tests and compaction). */
  get logRecords(): number {
    return this.#records;
  }

  /** (file, name) entries held (for tests and compaction). */
  get liveEntries(): number {
    return this.#live;
  }

  /**
   * Makes `name` an owner of file `hex`, durably, before resolving. Already an owner: nothing
   * is written (being written: resolves with that write). A full list: TOO_LARGE. I/O errors
   * are thrown with their errno code (the caller maps them, e.g. a full disk to NO_SPACE).
   */
  add(hex: string, name: string): Promise<void> {
    if (!OWNER_NAME.test(name)) {
      return Promise.reject(
        new RequestError(ErrorCode.BadRequest, `owner "${name}" is not a keyring name`),
      );
    }
    if (!HEX_ID.test(hex)) {
      return Promise.reject(new RequestError(ErrorCode.BadRequest, `bad file id ${hex}`));
    }
    if (this.has(hex, name)) return Promise.resolve();
    let flying = this.#inflight.get(hex);
    const same = flying?.get(name);
    if (same) return same;
    if ((this.#map.get(hex)?.size ?? 0) + (flying?.size ?? 0) >= this.#max) {
      return Promise.reject(
        new RequestError(
          ErrorCode.TooLarge,
          `file ${hex} has the most owners a file may have (${this.#max}); ${name} is not one`,
        ),
      );
    }
    if (!flying) this.#inflight.set(hex, flying = new Map());
    const writing = flying;
    const p = (async () => {
      try {
        await this.#append(encodeAdd(hex, name), () => this.#apply(hex, name));
      } finally {
        writing.delete(name);
        if (writing.size === 0 && this.#inflight.get(hex) === writing) this.#inflight.delete(hex);
      }
    })();
    writing.set(name, p);
    return p;
  }

  /** Forgets every owner of file `hex` (its file is gone), durably, before resolving. */
  drop(hex: string): Promise<void> {
    if (!HEX_ID.test(hex)) {
      return Promise.reject(new RequestError(ErrorCode.BadRequest, `bad file id ${hex}`));
    }
    return this.#append(encodeDrop(hex), () => this.#forget(hex));
  }

  /** Appends `payload`; `apply` updates the map once it is durable, then this resolves. */
  async #append(payload: Uint8Array, apply: () => void): Promise<void> {
    for (;;) {
      if (this.#closed) throw new RequestError(ErrorCode.Unavailable, "owners log closed");
      if (this.#rewriting) {
        await this.#rewriting.catch(() => {});
        continue;
      }
      if (this.#broken === null) break;
      // The log may end in a torn record: nothing can be appended after it.
      await this.#rewrite().catch((e) => {
        throw withErrno(e);
      });
    }
    // No await from the checks above to here: a rewrite cannot start in between.
    this.#records++;
    const step = this.#file.append(payload).then(() => {
      // Written after a failed append: it may sit behind a torn record, where replay stops.
      if (this.#broken !== null) throw this.#broken;
      apply();
    }, (e) => {
      this.#broken ??= withErrno(e);
      throw this.#broken;
    });
    const settled = step.then(() => {}, () => {});
    this.#pending.add(settled);
    settled.then(() => this.#pending.delete(settled));
    await step;
    if (this.#compactDue()) {
      this.#rewrite().catch((e) => this.#log?.warn("owners log compaction failed", { error: e }));
    }
  }

  #apply(hex: string, name: string): void {
    let set = this.#map.get(hex);
    if (!set) this.#map.set(hex, set = new Set());
    if (set.has(name) || set.size >= this.#max) return;
    set.add(name);
    this.#live++;
  }

  #applyReplicas(hex: string, count: number): void {
    if (count > (this.#replicas.get(hex) ?? 0)) this.#replicas.set(hex, count);
  }

  #forget(hex: string): void {
    this.#replicas.delete(hex);
    const set = this.#map.get(hex);
    if (!set) return;
    this.#live -= set.size;
    this.#map.delete(hex);
  }

  #compactDue(): boolean {
    return !this.#closed && this.#rewriting === null && this.#records > this.#compactAt &&
      this.#records > 2 * (this.#live + this.#replicas.size);
  }

  /**
   * Rewrites the log from the map (temp, fdatasync, rename, directory fsync) and reopens it;
   * appends wait meanwhile. Used to compact, and to repair the log after a failed append.
   */
  #rewrite(): Promise<void> {
    this.#rewriting ??= (async () => {
      try {
        // Every append already handed to the log settles first (and, if durable, is in the map).
        while (this.#pending.size > 0) await Promise.all([...this.#pending]);
        const records = this.#records;
        const tmp = `${this.#path}.tmp-${crypto.randomUUID()}`;
        try {
          const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
          try {
            await writeFull(f, this.#snapshot());
            await f.syncData();
          } finally {
            f.close();
          }
          await Deno.rename(tmp, this.#path);
        } catch (e) {
          await Deno.remove(tmp).catch(() => {}); // never a leftover (e.g. a full disk)
          // Not retried until the log has grown as much again (a full disk stays full a while).
          this.#compactAt = Math.max(this.#compactMin, 2 * records);
          throw e;
        }
        const old = this.#file;
        let file: RecordFile, now: Uint8Array[];
        try {
          await syncDir(this.#dir);
          ({ file, records: now } = await RecordFile.open(this.#path));
        } catch (e) {
          // The log was replaced: #file now writes to the old, unlinked one. Nothing more is
          // appended until a rewrite succeeds.
          this.#broken ??= withErrno(e);
          throw e;
        }
        await old.close().catch(() => {});
        this.#file = file;
        this.#records = now.length;
        this.#broken = null;
        this.#compactAt = this.#compactMin;
        this.#log?.info("owners log rewritten", { records: now.length, before: records });
      } finally {
        this.#rewriting = null;
      }
    })();
    return this.#rewriting;
  }

  /** The log's contents for the map as it is: one framed `add` per (file, name). */
  #snapshot(): Uint8Array {
    const frames: Uint8Array[] = [];
    for (const [hex, names] of this.#map) {
      for (const name of names) frames.push(encodeRecord(encodeAdd(hex, name)));
    }
    for (const [hex, count] of this.#replicas) {
      frames.push(encodeRecord(encodeReplicas(hex, count)));
    }
    const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let off = 0;
    for (const f of frames) {
      out.set(f, off);
      off += f.length;
    }
    return out;
  }

  /** Finishes what is being written and closes the log; later adds fail UNAVAILABLE. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#rewriting?.catch(() => {});
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
    await this.#file.close();
  }
}

/** What a name in the files directory is: a former owners list, the temp of one, or neither. */
export function isOwnersName(name: string): "list" | "temp" | null {
  if (name.endsWith(OWNERS_SUFFIX)) return "list";
  if (name.includes(`${OWNERS_SUFFIX}.tmp-`)) return "temp";
  return null;
}

/** Decodes one owners-log payload; null when it is not a well-formed record. */
export function decodeOwnersRecord(p: Uint8Array): OwnersRecord | null {
  if (p.length < 17) return null;
  const hex = toHex(p.subarray(1, 17));
  if (p[0] === DROP && p.length === 17) return { kind: "drop", hex };
  if (p[0] === REPLICAS && p.length === 18 && p[17] >= 1) {
    return { kind: "replicas", hex, count: p[17] };
  }
  if (p[0] !== ADD) return null;
  const name = fromUtf8.decode(p.subarray(17));
  return OWNER_NAME.test(name) ? { kind: "add", hex, name } : null;
}

function encodeAdd(hex: string, name: string): Uint8Array {
  const n = utf8.encode(name); // ASCII by OWNER_NAME
  const p = new Uint8Array(17 + n.length);
  p[0] = ADD;
  p.set(fromHex(hex), 1);
  p.set(n, 17);
  return p;
}

function encodeReplicas(hex: string, count: number): Uint8Array {
  const p = new Uint8Array(18);
  p[0] = REPLICAS;
  p.set(fromHex(hex), 1);
  p[17] = count;
  return p;
}

function encodeDrop(hex: string): Uint8Array {
  const p = new Uint8Array(17);
  p[0] = DROP;
  p.set(fromHex(hex), 1);
  return p;
}

/** The error with the errno code (ENOSPC, EDQUOT: NO_SPACE) of the system error behind it. */
function withErrno(e: unknown): unknown {
  if (!(e instanceof RecordFileError) || e.code === undefined) return e;
  return Object.assign(new Error(e.message, { cause: e }), { code: e.code });
}

/** The names of a former `files/<hex>.owners` list: `\n`-terminated lines that are names. */
async function readLegacyList(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  // Only `\n`-terminated lines: the last one, unterminated, cannot be a complete name.
  const lines = text.split("\n");
  lines.pop();
  return lines.filter((l) => OWNER_NAME.test(l));
}

function toHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
