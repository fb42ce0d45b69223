/**
 * The simulator's disk: {@link SimFs} is an in-memory file system behind lib/fs_api.ts
 * `DurableFs` that models the page cache honestly (strict POSIX, stricter than ext4), so the
 * masters' real Raft storage (roles/master/raft/storage.ts) can run on it through crashes and
 * storage faults drawn from one seeded PRNG.
 *
 * ## What survives a crash
 *
 * Every file has the bytes reads see ("live", the page cache) and the bytes on the medium
 * ("durable"); every directory has live and durable entries. A write, truncate, create, rename
 * or remove changes the live side at once and is queued as pending; `syncData` of a file moves
 * that file's pending writes to the durable side, `syncDir` of a directory its pending entry
 * changes (mkdir included: a new directory is durable in its parent only once the parent is
 * fsync'd). {@link SimFs.crash} then keeps, per file and per directory, a random PREFIX of the
 * pending operations (none, some or all) and discards the rest; the last kept write of a file
 * may be torn (only a prefix of its bytes reached the medium) and a file may end in garbage
 * after it (zeros, as when the size reached the disk and the data did not, or random bytes).
 * Every open handle and every mounted view of the old incarnation then fails with `ESTALE`.
 *
 * ## Faults
 *
 * - `syncData`/`syncDir` fail with `EIO`, at the rates of {@link SimFsFaults} or planted by
 *   {@link SimFs.failSync}. As on Linux, the pending operations are then no longer pending:
 *   a random prefix (possibly torn) reached the medium, the rest never will, and a later sync
 *   succeeds without writing them ("fsyncgate"). Reads keep seeing the written data, or (by
 *   the PRNG) the durable bytes, as when clean pages are dropped.
 * - {@link SimFs.flipBit} flips one bit of a file's durable (synced) bytes, and of its live
 *   ones: media corruption that a read will see.
 *
 * Every fault and every crash is appended to {@link SimFs.log} (what, where, which op number),
 * and every random choice is drawn from the PRNG in the order operations happen, so the same
 * seed and the same operations give the same run and the same log.
 *
 * ## Plugging it in
 *
 * ```ts
 * const disk = new SimFs(seed, { faults: { syncError: 0.01 } });   // one per simulated machine
 * let st = await FileStorage.open("/m1/raft", { fs: disk.mount() });
 * disk.crash();                        // power loss: the old mount and its handles go stale
 * st = await FileStorage.open("/m1/raft", { fs: disk.mount() });  // the restarted process
 * ```
 *
 * `latency` (optional) is awaited before every operation takes effect, so a simulator can make
 * disk operations take virtual time (e.g. `() => sleep(nodeClock, 1)`); an operation whose
 * mount went stale during that wait fails with `ESTALE` and changes nothing. Without it every
 * operation settles in microtasks.
 * @module
 */
import type { DirEntry, DurableFile, DurableFs, OpenOptions } from "../../../lib/fs_api.ts";
import { mulberry32 } from "../../../roles/master/raft/mod.ts";

/** An error of the simulated file system, with an errno-like code. */
export class SimFsError extends Error {
  /** @param code `EIO`, `ESTALE`, `EBADF`, `EINVAL`, `EISDIR`, `ENOTDIR`, `EXDEV`, `ENOTEMPTY` */
  constructor(readonly code: string, readonly path: string, message: string) {
    super(`${code}: ${message}: ${path}`);
    this.name = "SimFsError";
  }
}

/** Fault rates (each sync draws its own fate) and crash behaviour of a {@link SimFs}. */
export interface SimFsFaults {
  /** Probability that a file's `syncData` fails with EIO (only when it has pending writes). */
  syncError: number;
  /** Probability that a `syncDir` fails with EIO (only when it has pending changes). */
  dirSyncError: number;
  /** At a crash or a failed sync: probability that the last write that reaches the medium is torn. */
  torn: number;
  /** At a crash: probability that a file with lost writes ends in garbage after its kept bytes. */
  garbage: number;
}

/** No failing syncs; crashes still lose unsynced data, and tear or garble it half the time. */
export const CALM_DISK: SimFsFaults = { syncError: 0, dirSyncError: 0, torn: 0.5, garbage: 0.5 };

/** Options of a {@link SimFs}. */
export interface SimFsOptions {
  /** Fault rates (default {@link CALM_DISK}); may be changed on `SimFs.faults` at any time. */
  faults?: Partial<SimFsFaults>;
  /** Awaited before each operation takes effect (virtual time for disk operations). */
  latency?: (op: string, path: string) => Promise<void>;
}

/** One entry of {@link SimFs.log}. */
export interface FsFault {
  /** Number of the operation it happened at (operations counted from 1; 0: before any). */
  op: number;
  kind:
    | "crash"
    | "lost"
    | "torn"
    | "garbage"
    | "sync-eio"
    | "dir-sync-eio"
    | "dropped-pages"
    | "bit-flip";
  path: string;
  /** What exactly (kept operations of how many, bytes, offset and bit). */
  detail: string;
}

/** Most bytes of garbage a crash leaves after a file's kept bytes. */
const MAX_GARBAGE = 96;

/** A growable byte buffer (appends are amortised O(1), unlike re-copying a Uint8Array). */
class Bytes {
  buf: Uint8Array;
  len = 0;
  constructor(cap = 64) {
    this.buf = new Uint8Array(cap);
  }
  private reserve(n: number): void {
    if (n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(n, this.buf.length * 2));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  write(off: number, data: Uint8Array): void {
    this.reserve(off + data.length);
    if (off > this.len) this.buf.fill(0, this.len, off);
    this.buf.set(data, off);
    this.len = Math.max(this.len, off + data.length);
  }
  truncate(n: number): void {
    this.reserve(n);
    if (n > this.len) this.buf.fill(0, this.len, n);
    this.len = n;
  }
  view(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
  clone(): Bytes {
    const b = new Bytes(Math.max(64, this.len));
    b.write(0, this.view());
    return b;
  }
}

type FileOp = { kind: "write"; off: number; data: Uint8Array } | { kind: "truncate"; size: number };

class FileNode {
  live = new Bytes();
  durable = new Bytes();
  pending: FileOp[] = [];
  constructor(readonly ino: number) {}
}

type Node = FileNode | DirNode;

type DirOp =
  | { kind: "link"; name: string; node: Node }
  | { kind: "unlink"; name: string }
  | { kind: "rename"; from: string; to: string; node: Node };

class DirNode {
  live = new Map<string, Node>();
  durable = new Map<string, Node>();
  pending: DirOp[] = [];
  constructor(readonly ino: number) {}
}

function applyDirOp(m: Map<string, Node>, op: DirOp): void {
  if (op.kind === "link") m.set(op.name, op.node);
  else if (op.kind === "unlink") m.delete(op.name);
  else {
    m.delete(op.from);
    m.set(op.to, op.node);
  }
}

function applyFileOp(b: Bytes, op: FileOp): void {
  if (op.kind === "write") b.write(op.off, op.data);
  else b.truncate(op.size);
}

function splitPath(path: string): string[] {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new SimFsError("EINVAL", path, "'..' is not modelled");
  return parts;
}

/** The simulated file system of one machine; see the module doc. */
export class SimFs {
  /** Fault rates, read at each decision. */
  faults: SimFsFaults;
  /** Every fault and crash, in order. */
  readonly log: FsFault[] = [];
  /** Operations done so far (successful or not). */
  ops = 0;
  /** Crashes so far (the current incarnation's number). */
  generation = 0;
  readonly #rand: () => number;
  readonly #latency?: (op: string, path: string) => Promise<void>;
  #ino = 1;
  readonly #root: DirNode;
  /** Sync failures planted by {@link failSync}: the next `n` syncs whose path matches fail. */
  #planted: { count: number; match: (path: string) => boolean }[] = [];

  constructor(seed: number, opts: SimFsOptions = {}) {
    this.#rand = mulberry32(seed);
    this.faults = { ...CALM_DISK, ...opts.faults };
    this.#latency = opts.latency;
    this.#root = new DirNode(this.#ino++);
  }

  /** A `DurableFs` for the current incarnation (stale after the next {@link crash}). */
  mount(): DurableFs {
    return new SimMount(this, this.generation);
  }

  /**
   * Power loss: every file and directory keeps its durable state plus a random prefix of its
   * pending operations (the last kept write possibly torn, garbage possibly after it); the rest
   * is gone. Mounts and handles of the old incarnation go stale.
   */
  crash(): void {
    this.generation++;
    this.#fault("crash", "/", `generation ${this.generation}`);
    this.#settleTree(this.#root, "", new Set());
  }

  /** The next `count` syncs (`syncData` or `syncDir`) of a path that `match` accepts fail with EIO. */
  failSync(count = 1, match: (path: string) => boolean = () => true): void {
    this.#planted.push({ count, match });
  }

  /**
   * Flips one bit of a file's durable bytes (and the same bit of its live bytes, when it is
   * within them): `offset` and `bit` drawn from the PRNG unless given. Returns where.
   */
  flipBit(path: string, offset?: number, bit?: number): { offset: number; bit: number } {
    const f = this.#file(path, true);
    if (f.durable.len === 0) throw new SimFsError("EINVAL", path, "no durable bytes to flip");
    const off = offset ?? Math.floor(this.#rand() * f.durable.len);
    const b = bit ?? Math.floor(this.#rand() * 8);
    if (off < 0 || off >= f.durable.len || b < 0 || b > 7) {
      throw new SimFsError("EINVAL", path, `offset ${off} bit ${b} outside the durable bytes`);
    }
    f.durable.buf[off] ^= 1 << b;
    if (off < f.live.len) f.live.buf[off] ^= 1 << b;
    this.#fault("bit-flip", path, `offset ${off} bit ${b}`);
    return { offset: off, bit: b };
  }

  /** A file's durable bytes (what a crash now would keep at least), for tests to inspect. */
  durableBytes(path: string): Uint8Array {
    return this.#file(path, true).durable.view().slice();
  }

  /** Names in a directory as a crash now would surely keep them (its durable entries). */
  durableNames(dir: string): string[] {
    const d = this.#dir(splitPath(dir), dir, true);
    return [...d.durable.keys()].sort();
  }

  /** Pending (unsynced) operations in the whole tree: file writes/truncates and entry changes. */
  pendingOps(): number {
    let n = 0;
    const walk = (d: DirNode, seen: Set<Node>) => {
      if (seen.has(d)) return;
      seen.add(d);
      n += d.pending.length;
      for (const c of new Set([...d.live.values(), ...d.durable.values()])) {
        if (c instanceof DirNode) walk(c, seen);
        else if (!seen.has(c)) {
          seen.add(c);
          n += c.pending.length;
        }
      }
    };
    walk(this.#root, new Set());
    return n;
  }

  // ------------------------------------------------------------- operations (for SimMount)

  /** @internal Runs one operation of incarnation `gen`. */
  async op<T>(gen: number, what: string, path: string, f: () => T): Promise<T> {
    if (this.#latency) await this.#latency(what, path);
    this.ops++;
    if (gen !== this.generation) {
      throw new SimFsError("ESTALE", path, `${what} by a process that crashed`);
    }
    return f();
  }

  /** @internal */
  mkdirAll(path: string): string[] {
    const parts = splitPath(path);
    const made: string[] = [];
    let d = this.#root;
    for (let i = 0; i < parts.length; i++) {
      const c = d.live.get(parts[i]);
      if (c instanceof FileNode) {
        throw new SimFsError("ENOTDIR", "/" + parts.slice(0, i + 1).join("/"), "mkdir");
      }
      if (c) {
        d = c;
        continue;
      }
      const n = new DirNode(this.#ino++);
      this.#dirOp(d, { kind: "link", name: parts[i], node: n });
      made.push("/" + parts.slice(0, i + 1).join("/"));
      d = n;
    }
    return made;
  }

  /** @internal */
  list(path: string): DirEntry[] {
    const d = this.#dir(splitPath(path), path, false);
    return [...d.live.entries()].map(([name, n]) => ({ name, isFile: n instanceof FileNode }));
  }

  /** @internal */
  readFile(path: string): Uint8Array {
    return this.#file(path, false).live.view().slice();
  }

  /** @internal */
  open(path: string, opts: OpenOptions): FileNode {
    const { dir, name } = this.#parent(path);
    const c = dir.live.get(name);
    if (c instanceof DirNode) throw new SimFsError("EISDIR", path, "open");
    let f = c;
    if (!f) {
      if (!opts.create) throw new Deno.errors.NotFound(`simfs: no such file: ${path}`);
      f = new FileNode(this.#ino++);
      this.#dirOp(dir, { kind: "link", name, node: f });
    }
    if (opts.truncate && f.live.len > 0) this.#fileOp(f, { kind: "truncate", size: 0 });
    return f;
  }

  /** @internal */
  rename(from: string, to: string): void {
    const a = this.#parent(from);
    const b = this.#parent(to);
    if (a.dir !== b.dir) throw new SimFsError("EXDEV", to, "rename across directories");
    const n = a.dir.live.get(a.name);
    if (!n) throw new Deno.errors.NotFound(`simfs: no such file: ${from}`);
    const t = b.dir.live.get(b.name);
    if (t instanceof DirNode || n instanceof DirNode) {
      throw new SimFsError("EISDIR", to, "rename of directories is not modelled");
    }
    if (a.name === b.name) return;
    this.#dirOp(a.dir, { kind: "rename", from: a.name, to: b.name, node: n });
  }

  /** @internal */
  remove(path: string): void {
    const { dir, name } = this.#parent(path);
    const n = dir.live.get(name);
    if (!n) throw new Deno.errors.NotFound(`simfs: no such file: ${path}`);
    if (n instanceof DirNode && n.live.size > 0) throw new SimFsError("ENOTEMPTY", path, "remove");
    this.#dirOp(dir, { kind: "unlink", name });
  }

  /** @internal */
  syncDir(path: string): void {
    const d = this.#dir(splitPath(path), path, false);
    if (d.pending.length === 0) return;
    if (this.#syncFails(path, this.faults.dirSyncError)) {
      const k = this.#prefixLength(d.pending.length);
      for (const op of d.pending.slice(0, k)) applyDirOp(d.durable, op);
      this.#fault("dir-sync-eio", path, `kept ${k} of ${d.pending.length} entry changes`);
      d.pending = [];
      throw new SimFsError("EIO", path, "fsync of the directory failed");
    }
    for (const op of d.pending) applyDirOp(d.durable, op);
    d.pending = [];
  }

  /** @internal */
  append(f: FileNode, data: Uint8Array): void {
    if (data.length === 0) return;
    this.#fileOp(f, { kind: "write", off: f.live.len, data });
  }

  /** @internal */
  truncate(f: FileNode, size: number): void {
    if (!Number.isInteger(size) || size < 0) throw new SimFsError("EINVAL", "", "truncate");
    this.#fileOp(f, { kind: "truncate", size });
  }

  /** @internal */
  syncData(f: FileNode, path: string): void {
    if (f.pending.length === 0) return;
    if (this.#syncFails(path, this.faults.syncError)) {
      this.#settleFile(f, path, "sync-eio");
      if (this.#rand() < 0.5) {
        f.live = f.durable.clone();
        this.#fault("dropped-pages", path, `reads now see the ${f.live.len} durable bytes`);
      }
      throw new SimFsError("EIO", path, "fsync failed");
    }
    for (const op of f.pending) applyFileOp(f.durable, op);
    f.pending = [];
  }

  // ------------------------------------------------------------- internals

  #fault(kind: FsFault["kind"], path: string, detail: string): void {
    this.log.push({ op: this.ops, kind, path, detail });
  }

  #syncFails(path: string, rate: number): boolean {
    for (const p of this.#planted) {
      if (p.count > 0 && p.match(path)) {
        p.count--;
        this.#planted = this.#planted.filter((q) => q.count > 0);
        return true;
      }
    }
    return rate > 0 && this.#rand() < rate;
  }

  /** How many of `n` pending operations reach the medium: none, all, or any, a third each. */
  #prefixLength(n: number): number {
    const x = this.#rand();
    if (x < 1 / 3) return 0;
    if (x < 2 / 3) return n;
    return Math.floor(this.#rand() * (n + 1));
  }

  #fileOp(f: FileNode, op: FileOp): void {
    applyFileOp(f.live, op);
    f.pending.push(op);
  }

  #dirOp(d: DirNode, op: DirOp): void {
    applyDirOp(d.live, op);
    d.pending.push(op);
  }

  /**
   * A file's pending operations meet their fate (a crash, or a failed sync): a prefix reaches
   * the medium, its last write possibly torn; at a crash garbage may follow. Pending is cleared.
   */
  #settleFile(f: FileNode, path: string, why: "crash" | "sync-eio"): void {
    const n = f.pending.length;
    if (n === 0) return;
    const k = this.#prefixLength(n);
    for (let i = 0; i < k; i++) {
      const op = f.pending[i];
      if (
        i === k - 1 && op.kind === "write" && op.data.length > 1 && this.#rand() < this.faults.torn
      ) {
        const keep = Math.floor(this.#rand() * op.data.length);
        f.durable.write(op.off, op.data.subarray(0, keep));
        this.#fault("torn", path, `write of ${op.data.length} bytes at ${op.off}: ${keep} kept`);
      } else applyFileOp(f.durable, op);
    }
    if (k < n) {
      this.#fault(why === "crash" ? "lost" : "sync-eio", path, `kept ${k} of ${n} writes`);
      if (why === "crash" && this.#rand() < this.faults.garbage) {
        const len = 1 + Math.floor(this.#rand() * MAX_GARBAGE);
        const g = new Uint8Array(len);
        const zeros = this.#rand() < 0.5;
        if (!zeros) { for (let i = 0; i < len; i++) g[i] = Math.floor(this.#rand() * 256); }
        f.durable.write(f.durable.len, g);
        this.#fault(
          "garbage",
          path,
          `${len} ${zeros ? "zero" : "random"} bytes at ${f.durable.len - len}`,
        );
      }
    } else if (why === "sync-eio") {
      this.#fault("sync-eio", path, `kept ${k} of ${n} writes`);
    }
    f.pending = [];
  }

  /** Crash of a subtree: entries and files keep their durable state and a prefix of pending. */
  #settleTree(d: DirNode, path: string, seen: Set<Node>): void {
    if (seen.has(d)) return;
    seen.add(d);
    const n = d.pending.length;
    if (n > 0) {
      const k = this.#prefixLength(n);
      for (const op of d.pending.slice(0, k)) applyDirOp(d.durable, op);
      if (k < n) this.#fault("lost", path || "/", `kept ${k} of ${n} entry changes`);
      d.pending = [];
    }
    d.live = new Map(d.durable);
    // Children in name order, so the PRNG is drawn in the same order in every run.
    for (const name of [...d.durable.keys()].sort()) {
      const c = d.durable.get(name)!;
      const p = `${path}/${name}`;
      if (c instanceof DirNode) this.#settleTree(c, p, seen);
      else if (!seen.has(c)) {
        seen.add(c);
        this.#settleFile(c, p, "crash");
        c.live = c.durable.clone();
      }
    }
  }

  #dir(parts: string[], path: string, durable: boolean): DirNode {
    let d = this.#root;
    for (const p of parts) {
      const c = (durable ? d.durable : d.live).get(p);
      if (!c) throw new Deno.errors.NotFound(`simfs: no such directory: ${path}`);
      if (c instanceof FileNode) throw new SimFsError("ENOTDIR", path, "not a directory");
      d = c;
    }
    return d;
  }

  #parent(path: string): { dir: DirNode; name: string } {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw new SimFsError("EISDIR", path, "the root");
    return { dir: this.#dir(parts, path, false), name };
  }

  #file(path: string, durable: boolean): FileNode {
    const parts = splitPath(path);
    const name = parts.pop();
    const d = this.#dir(parts, path, durable);
    const f = name === undefined ? undefined : (durable ? d.durable : d.live).get(name);
    if (!f) throw new Deno.errors.NotFound(`simfs: no such file: ${path}`);
    if (f instanceof DirNode) throw new SimFsError("EISDIR", path, "a directory");
    return f;
  }
}

/** One incarnation's view of a {@link SimFs}. */
class SimMount implements DurableFs {
  constructor(private readonly fs: SimFs, private readonly gen: number) {}
  mkdirAll(dir: string): Promise<string[]> {
    return this.fs.op(this.gen, "mkdir", dir, () => this.fs.mkdirAll(dir));
  }
  list(dir: string): Promise<DirEntry[]> {
    return this.fs.op(this.gen, "list", dir, () => this.fs.list(dir));
  }
  readFile(path: string): Promise<Uint8Array> {
    return this.fs.op(this.gen, "read", path, () => this.fs.readFile(path));
  }
  openAppend(path: string, opts: OpenOptions = {}): Promise<DurableFile> {
    return this.fs.op(this.gen, "open", path, () => {
      return new SimFile(this.fs, this.gen, path, this.fs.open(path, opts));
    });
  }
  rename(from: string, to: string): Promise<void> {
    return this.fs.op(this.gen, "rename", from, () => this.fs.rename(from, to));
  }
  remove(path: string): Promise<void> {
    return this.fs.op(this.gen, "remove", path, () => this.fs.remove(path));
  }
  syncDir(dir: string): Promise<void> {
    return this.fs.op(this.gen, "syncdir", dir, () => this.fs.syncDir(dir));
  }
}

class SimFile implements DurableFile {
  #closed = false;
  constructor(
    private readonly fs: SimFs,
    private readonly gen: number,
    private readonly path: string,
    private readonly node: FileNode,
  ) {}
  #run<T>(what: string, f: () => T): Promise<T> {
    return this.fs.op(this.gen, what, this.path, () => {
      if (this.#closed) throw new SimFsError("EBADF", this.path, `${what} after close`);
      return f();
    });
  }
  append(data: Uint8Array): Promise<void> {
    const copy = data.slice(); // the caller may reuse its buffer while the op waits
    return this.#run("append", () => this.fs.append(this.node, copy));
  }
  truncate(size: number): Promise<void> {
    return this.#run("truncate", () => this.fs.truncate(this.node, size));
  }
  size(): Promise<number> {
    return this.#run("size", () => this.node.live.len);
  }
  syncData(): Promise<void> {
    return this.#run("fsync", () => this.fs.syncData(this.node, this.path));
  }
  close(): void {
    // As Deno's FsFile: closing twice is a bug of the caller (BadResource there).
    if (this.#closed) throw new SimFsError("EBADF", this.path, "closed twice");
    this.#closed = true;
  }
}
