/**
 * An append-only file of framed records: `u32 length | u32 crc32(payload) | payload`, little-endian.
 *
 * Appends are group-committed: records appended while an fsync is running are written and synced
 * together by the next one, so N concurrent appenders cost ~1 fsync, not N. A record is durable
 * (its promise resolves) only after `fdatasync`. On open, a torn or corrupt tail (crash mid-write)
 * is detected by length/CRC and truncated, so the file always ends at a whole record.
 */
import { crc32 } from "./crc32.ts";
import { writeFull } from "./fsutil.ts";

/** Raised when a record file cannot be read or written; `cause` is the system error, if any. */
export class RecordFileError extends Error {
  /** The errno name of the system error behind it ("ENOSPC", …), when there was one. */
  readonly code: string | undefined;
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "RecordFileError";
    const c = (cause as { code?: unknown } | null)?.code;
    this.code = typeof c === "string" ? c : undefined;
  }
}

/** One framed record: `u32 length | u32 crc32(payload) | payload`, little-endian. */
export function encodeRecord(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(8 + payload.length);
  const v = new DataView(frame.buffer);
  v.setUint32(0, payload.length, true);
  v.setUint32(4, crc32(payload), true);
  frame.set(payload, 8);
  return frame;
}

/** Largest record accepted (guards recovery against a garbage length). */
export const MAX_RECORD = 256 * 1024 * 1024;

interface Pending {
  frame: Uint8Array;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** An open record file. */
export class RecordFile {
  #file: Deno.FsFile;
  #queue: Pending[] = [];
  /** The running flush, if any (it drains the queue, including what is appended meanwhile). */
  #flushing: Promise<void> | null = null;
  #size: number;
  /** Bytes cut off the tail at open (a torn or corrupt write). */
  readonly truncatedBytes: number;

  private constructor(file: Deno.FsFile, size: number, truncated: number) {
    this.#file = file;
    this.#size = size;
    this.truncatedBytes = truncated;
  }

  /** Opens (creating) `path`, returns the file and its valid records, truncating a bad tail. */
  static async open(path: string): Promise<{ file: RecordFile; records: Uint8Array[] }> {
    let data: Uint8Array;
    try {
      data = await Deno.readFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      data = new Uint8Array(0);
    }
    const records: Uint8Array[] = [];
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let off = 0;
    while (off + 8 <= data.length) {
      const len = view.getUint32(off, true);
      const crc = view.getUint32(off + 4, true);
      if (len > MAX_RECORD || off + 8 + len > data.length) break;
      const payload = data.subarray(off + 8, off + 8 + len);
      if (crc32(payload) !== crc) break;
      records.push(payload);
      off += 8 + len;
    }
    const f = await Deno.open(path, { read: true, write: true, create: true });
    if (off < data.length) {
      await f.truncate(off);
      await f.syncData();
    }
    await f.seek(off, Deno.SeekMode.Start);
    return { file: new RecordFile(f, off, data.length - off), records };
  }

  /** Current size in bytes of the durable part plus what is being written. */
  get size(): number {
    return this.#size;
  }

  /** Appends one record; resolves once it is on disk. */
  append(payload: Uint8Array): Promise<void> {
    if (payload.length > MAX_RECORD) {
      return Promise.reject(
        new RecordFileError(`record of ${payload.length} bytes exceeds ${MAX_RECORD}`),
      );
    }
    const frame = encodeRecord(payload);
    return new Promise((resolve, reject) => {
      this.#queue.push({ frame, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        try {
          for (const p of batch) {
            await writeFull(this.#file, p.frame);
            this.#size += p.frame.length;
          }
          await this.#file.syncData();
          for (const p of batch) p.resolve();
        } catch (e) {
          for (const p of batch) p.reject(new RecordFileError(`append failed: ${e}`, e));
        }
      }
    } finally {
      this.#flushing = null;
    }
  }

  /** Closes the file (pending appends finish first). */
  async close(): Promise<void> {
    await this.#flushing;
    this.#file.close();
  }
}
