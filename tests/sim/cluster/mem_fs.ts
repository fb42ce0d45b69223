/**
 * A small in-memory `DurableFs` (lib/fs_api.ts) for the cluster simulation's masters, with the
 * one storage fault a crash always brings: what was not made durable is lost. File data is
 * durable up to its last `syncData`; a create, rename or remove only once its directory was
 * synced (`syncDir`). {@link MemFs.crash} rolls both back to what was durable.
 *
 * Synchronous under the promises (nothing real happens), so the simulation stays deterministic.
 * @module
 */
import type { DirEntry, DurableFile, DurableFs, OpenOptions } from "../../../lib/fs_api.ts";

interface Inode {
  data: Uint8Array;
  len: number;
  /** The durable bytes (a copy taken at the last syncData). */
  synced: Uint8Array;
}

function notFound(path: string): Error {
  return new Deno.errors.NotFound(`memfs: ${path}`);
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** See module doc. */
export class MemFs implements DurableFs {
  /** Current directory entries (path → inode) and the durable ones. */
  #files = new Map<string, Inode>();
  #durable = new Map<string, Inode>();
  #dirs = new Set<string>();
  /** Bytes written and syncs, for the run's statistics. */
  stats = { bytes: 0, syncs: 0, lostBytes: 0 };

  mkdirAll(dir: string): Promise<void> {
    this.#dirs.add(dir);
    return Promise.resolve();
  }

  list(dir: string): Promise<DirEntry[]> {
    if (!this.#dirs.has(dir)) return Promise.reject(notFound(dir));
    const out: DirEntry[] = [];
    for (const p of [...this.#files.keys()].sort()) {
      if (dirOf(p) === dir) out.push({ name: p.slice(dir.length + 1), isFile: true });
    }
    return Promise.resolve(out);
  }

  readFile(path: string): Promise<Uint8Array> {
    const f = this.#files.get(path);
    return f ? Promise.resolve(f.data.slice(0, f.len)) : Promise.reject(notFound(path));
  }

  openAppend(path: string, opts: OpenOptions = {}): Promise<DurableFile> {
    let f = this.#files.get(path);
    if (!f) {
      if (!opts.create) return Promise.reject(notFound(path));
      f = { data: new Uint8Array(256), len: 0, synced: new Uint8Array(0) };
      this.#files.set(path, f);
    } else if (opts.truncate) f.len = 0;
    return Promise.resolve(new MemFile(f, this.stats));
  }

  rename(from: string, to: string): Promise<void> {
    const f = this.#files.get(from);
    if (!f) return Promise.reject(notFound(from));
    this.#files.delete(from);
    this.#files.set(to, f);
    return Promise.resolve();
  }

  remove(path: string): Promise<void> {
    if (!this.#files.delete(path)) return Promise.reject(notFound(path));
    return Promise.resolve();
  }

  syncDir(dir: string): Promise<void> {
    this.stats.syncs++;
    for (const p of [...this.#durable.keys()]) {
      if (dirOf(p) === dir && !this.#files.has(p)) this.#durable.delete(p);
    }
    for (const [p, f] of this.#files) if (dirOf(p) === dir) this.#durable.set(p, f);
    return Promise.resolve();
  }

  /** A crash: only durable entries and synced bytes remain. */
  crash(): void {
    for (const f of this.#files.values()) {
      this.stats.lostBytes += Math.max(0, f.len - f.synced.length);
    }
    this.#files = new Map();
    for (const [p, f] of this.#durable) {
      const data = new Uint8Array(Math.max(256, f.synced.length));
      data.set(f.synced);
      const n: Inode = { data, len: f.synced.length, synced: f.synced };
      this.#files.set(p, n);
      this.#durable.set(p, n);
    }
  }
}

class MemFile implements DurableFile {
  #f: Inode;
  #stats: MemFs["stats"];
  constructor(f: Inode, stats: MemFs["stats"]) {
    this.#f = f;
    this.#stats = stats;
  }
  append(data: Uint8Array): Promise<void> {
    const f = this.#f;
    if (f.len + data.length > f.data.length) {
      const grown = new Uint8Array(Math.max(f.data.length * 2, f.len + data.length));
      grown.set(f.data.subarray(0, f.len));
      f.data = grown;
    }
    f.data.set(data, f.len);
    f.len += data.length;
    this.#stats.bytes += data.length;
    return Promise.resolve();
  }
  truncate(size: number): Promise<void> {
    const f = this.#f;
    if (size > f.data.length) {
      const grown = new Uint8Array(size);
      grown.set(f.data.subarray(0, f.len));
      f.data = grown;
    } else if (size > f.len) f.data.fill(0, f.len, size);
    f.len = size;
    return Promise.resolve();
  }
  size(): Promise<number> {
    return Promise.resolve(this.#f.len);
  }
  syncData(): Promise<void> {
    this.#stats.syncs++;
    this.#f.synced = this.#f.data.slice(0, this.#f.len);
    return Promise.resolve();
  }
  close(): void {}
}
