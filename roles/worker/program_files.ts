/**
 * The program files of a worker: a job's program is a file in the input cache by id, copied out
 * of the cache once per program id to a file of mode 0755 that every chunk with that id runs (of
 * any job), and never run again once found changed. I/O of the worker shell (main.ts), one concern.
 * @module
 */
import { uuidToHex, type WorkerRequest } from "../../wire/mod.ts";

/** Program files kept ready to run when no chunk uses them (written once per program id). */
export const PROGRAM_FILES_KEPT = 16;
/** Writes of a program file before giving up when each is changed before it could run. */
export const PROGRAM_WRITE_TRIES = 3;

/** Where programs come from: the worker's verified file cache (its FUSE mount). */
export interface ProgramCache {
  /** Keeps file `id` in the cache (counted; paired with `unpin`). */
  pin(id: Uint8Array): number;
  /** Lets file `id` be evicted again. */
  unpin(id: Uint8Array): number;
  /** Fetches file `id` into the cache unless it is there (verified against its id). */
  prefetch(id: Uint8Array): Promise<void>;
  /** The path of file `id` in the cache. */
  cachePath(id: Uint8Array): string;
}

/** A program file could not be made ready (wrong size, changed again and again). */
export class ProgramFileError extends Error {
  /** Creates the error; the message names the program file. */
  constructor(message: string) {
    super(message);
    this.name = "ProgramFileError";
  }
}

/** A program's file on this worker, shared by every chunk that runs that program id. */
export interface ProgramFile {
  /** Program id (hex). */
  key: string;
  path: string;
  /** Bytes it must have (worker_request.program_size). */
  size: number;
  /** Chunks running it (or waiting for it to be written) now. */
  users: number;
  /** Inode and mtime when written: a changed file is not reused. */
  ino: number | null;
  mtimeMs: number;
  /** True once `path` holds the program. */
  written: boolean;
  /** Not handed out any more; the file is removed once `users` is 0. */
  dropped: boolean;
  /** Settles when the write ends (rejects when the program could not be fetched). */
  ready: Promise<void>;
}

/** The program files of one worker, in directory `dir` (the worker's, created empty). */
export class ProgramFiles {
  readonly #dir: string;
  readonly #cache: ProgramCache;
  /** Program files by program id (hex), most recently used last. */
  #programs = new Map<string, ProgramFile>();
  #programSeq = 0;

  /** Program files in `dir`, copied from `cache`. */
  constructor(dir: string, cache: ProgramCache) {
    this.#dir = dir;
    this.#cache = cache;
  }

  /**
   * The chunk's program as a file to run: a program is a cached file by id. The first chunk to
   * run a program id fetches it like an input (the mount's lazy, verified fetch into the cache,
   * with the request's read capability) and copies it out of the cache to a file of mode 0755;
   * later chunks, of any job, with the same id run that file. A file found changed (a program
   * rewrote itself: inode, size or mtime differ) is never run again: the next chunk gets a new
   * copy of the (untouched) cached file. Each call must be paired with `release`; throws
   * when the program cannot be fetched.
   */
  async acquire(req: Pick<WorkerRequest, "programId" | "programSize">): Promise<ProgramFile> {
    const key = uuidToHex(req.programId);
    for (let tries = 1;; tries++) {
      let p = this.#programs.get(key);
      if (p?.written && !unchanged(p)) {
        this.#drop(p);
        p = undefined;
      }
      if (!p) {
        const path = `${this.#dir}/${key}.${this.#programSeq++}`;
        const fresh: ProgramFile = {
          key,
          path,
          size: req.programSize,
          users: 0,
          ino: null,
          mtimeMs: -1,
          written: false,
          dropped: false,
          ready: Promise.resolve(),
        };
        fresh.ready = this.#write(fresh, req.programId);
        // A failed fetch leaves nothing behind: the next chunk tries again.
        fresh.ready.catch(() => this.#drop(fresh));
        this.#programs.set(key, p = fresh);
      } else {
        // Most recently used last: eviction takes the oldest first.
        this.#programs.delete(key);
        this.#programs.set(key, p);
      }
      p.users++;
      try {
        await p.ready;
      } catch (e) {
        this.release(p);
        throw e;
      }
      // Another chunk may have run (and rewritten) it while this one waited for the write.
      if (unchanged(p)) return p;
      this.#drop(p);
      this.release(p);
      if (tries >= PROGRAM_WRITE_TRIES) {
        throw new ProgramFileError(
          `program file ${p.path} changed ${tries} times before it could run`,
        );
      }
    }
  }

  /** Fetches program `id` into the cache (unless cached) and copies it to `p.path`, 0755. */
  async #write(p: ProgramFile, id: Uint8Array): Promise<void> {
    this.#cache.pin(id); // not evicted between the fetch and the copy
    try {
      await this.#cache.prefetch(id);
      // Copied, not linked: a program that rewrites its own file must not touch the cache.
      // Written under a temporary name and renamed: the final path is never open for writing.
      const tmp = `${p.path}.tmp`;
      await Deno.copyFile(this.#cache.cachePath(id), tmp);
      await Deno.chmod(tmp, 0o755); // the umask may have dropped bits at create
      const st = await Deno.lstat(tmp);
      if (st.size !== p.size) {
        await Deno.remove(tmp).catch(() => {});
        throw new ProgramFileError(
          `program file ${p.key} has ${st.size} bytes in the cache, the job says ${p.size}`,
        );
      }
      await Deno.rename(tmp, p.path);
      p.ino = st.ino;
      p.mtimeMs = mtimeOf(st);
      p.written = true;
    } finally {
      try {
        this.#cache.unpin(id);
      } catch { /* unmounted during shutdown */ }
    }
  }

  /** Never hands out `p` again; its file goes once no chunk runs it. */
  #drop(p: ProgramFile): void {
    if (this.#programs.get(p.key) === p) this.#programs.delete(p.key);
    p.dropped = true;
    if (p.users === 0) removeQuietly(p.path);
  }

  /** Gives back a program file `acquire` handed out (its file goes once dropped and unused;
   * beyond PROGRAM_FILES_KEPT, unused ones are dropped, oldest first). */
  release(p: ProgramFile): void {
    if (p.users > 0) p.users--;
    if (p.dropped && p.users === 0) removeQuietly(p.path);
    if (this.#programs.size <= PROGRAM_FILES_KEPT) return;
    for (const q of this.#programs.values()) {
      if (this.#programs.size <= PROGRAM_FILES_KEPT) break;
      if (q.users === 0 && q.written) this.#drop(q);
    }
  }
}

function mtimeOf(st: Deno.FileInfo): number {
  return st.mtime?.getTime() ?? -1;
}

/** True while the program file is still the one written (same inode, size, mtime). */
function unchanged(p: ProgramFile): boolean {
  try {
    const st = Deno.lstatSync(p.path);
    return st.isFile && st.ino === p.ino && st.size === p.size && mtimeOf(st) === p.mtimeMs;
  } catch {
    return false;
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* already gone */ }
}
