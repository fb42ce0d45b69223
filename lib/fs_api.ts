/**
 * The file system as durable storage sees it: exactly the operations the masters' Raft storage
 * (roles/master/raft/storage.ts) needs, behind one interface so that the deterministic simulator
 * can run that storage on an in-memory file system with crashes and faults
 * (tests/sim/world/sim_fs.ts). {@link denoFs}, on Deno's APIs, is the default.
 *
 * What is durable, and when, is the caller's business and follows POSIX: bytes written to a file
 * survive a crash only once {@link DurableFile.syncData} resolved; a create, rename or remove
 * survives only once {@link DurableFs.syncDir} of its directory resolved.
 * @module
 */
import { dirname, exists, syncDir, writeFull } from "./fsutil.ts";

/** One directory entry, as {@link DurableFs.list} returns it. */
export interface DirEntry {
  name: string;
  isFile: boolean;
}

/** How {@link DurableFs.openAppend} opens a file. */
export interface OpenOptions {
  /** Create the file if it does not exist (otherwise a missing file is `Deno.errors.NotFound`). */
  create?: boolean;
  /** Empty the file first. */
  truncate?: boolean;
}

/** An open file that is only ever appended to (and cut back). */
export interface DurableFile {
  /** Writes all of `data` at the end of the file. */
  append(data: Uint8Array): Promise<void>;
  /** Cuts (or extends with zeros) the file to `size` bytes; later appends go after it. */
  truncate(size: number): Promise<void>;
  /** The file's current size in bytes. */
  size(): Promise<number>;
  /** Makes the file's data durable (fdatasync). */
  syncData(): Promise<void>;
  /** Releases the handle (unsynced data stays unsynced). */
  close(): void;
}

/** The file-system operations durable storage uses. Paths are `/`-separated. */
export interface DurableFs {
  /**
   * Creates a directory and its missing parents (existing ones are fine); returns the ones it
   * created, outermost first. Like any create, each is durable only once its parent is fsync'd.
   */
  mkdirAll(dir: string): Promise<string[]>;
  /** The entries of a directory. */
  list(dir: string): Promise<DirEntry[]>;
  /** A whole file's bytes; a missing file is `Deno.errors.NotFound`. */
  readFile(path: string): Promise<Uint8Array>;
  /** Opens a file for appending. */
  openAppend(path: string, opts?: OpenOptions): Promise<DurableFile>;
  /** Renames within one directory, replacing `to` if it exists (atomic, as rename(2)). */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing one is `Deno.errors.NotFound`. */
  remove(path: string): Promise<void>;
  /** fsyncs a directory, so that creates, renames and removes in it survive a crash. */
  syncDir(dir: string): Promise<void>;
}

class DenoFile implements DurableFile {
  /**
   * @param f the handle
   * @param appendMode opened with O_APPEND (Deno refuses append together with truncate, so a
   * truncating open is a plain write open whose position is kept at the end by hand)
   */
  constructor(private readonly f: Deno.FsFile, private readonly appendMode: boolean) {}
  append(data: Uint8Array): Promise<void> {
    return writeFull(this.f, data);
  }
  async truncate(size: number): Promise<void> {
    await this.f.truncate(size);
    if (!this.appendMode) await this.f.seek(size, Deno.SeekMode.Start);
  }
  async size(): Promise<number> {
    return (await this.f.stat()).size;
  }
  syncData(): Promise<void> {
    return this.f.syncData();
  }
  close(): void {
    this.f.close();
  }
}

/** {@link DurableFs} on Deno's file APIs (the real disk). */
export const denoFs: DurableFs = {
  async mkdirAll(dir) {
    const missing: string[] = [];
    for (let d = dir; !(await exists(d)); d = dirname(d)) {
      missing.unshift(d);
      if (dirname(d) === d) break;
    }
    await Deno.mkdir(dir, { recursive: true });
    return missing;
  },
  async list(dir) {
    const out: DirEntry[] = [];
    for await (const de of Deno.readDir(dir)) out.push({ name: de.name, isFile: de.isFile });
    return out;
  },
  readFile: (path) => Deno.readFile(path),
  async openAppend(path, opts = {}) {
    const create = opts.create ?? false;
    if (opts.truncate) {
      const f = await Deno.open(path, { create, write: true, truncate: true });
      return new DenoFile(f, false);
    }
    return new DenoFile(await Deno.open(path, { create, write: true, append: true }), true);
  },
  rename: (from, to) => Deno.rename(from, to),
  remove: (path) => Deno.remove(path),
  syncDir: (dir) => syncDir(dir),
};
