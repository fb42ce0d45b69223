/**
 * The worker's read-only FUSE mount of job input files (Deno FFI binding of fuse/dsys_fuse.c).
 *
 * Layout: one mount per worker. TypeScript registers every file by a relative path, conventionally
 * `<job-id>/<name>`, so a job sees its inputs at `<mountpoint>/<job-id>/<name>`; `removePath(jobId)`
 * drops the whole directory when the job is done. Names, sizes and 16-byte file ids are known up
 * front, so lookup/getattr/readdir/open are answered by C from memory and never fetch.
 *
 * Bytes: the first read of a file whose cache file `<cacheDir>/<id hex>` is missing makes the C side
 * queue a fetch request; this module's loop takes it (a nonblocking FFI call, so the event loop is
 * never blocked), runs the user's `fetch(id, cachePath)` once per id (concurrent readers share it)
 * and reports completion; the waiting FUSE threads then pread the cache file. Later reads, from any
 * process, are served by C from the cache file (and the kernel page cache) with no JS involved.
 *
 * Access: a top-level directory is served only to root and to the uids `allowUid` let in (the
 * worker's sandboxed chunks run as per-slot uids); a cache file only while it is unchanged since
 * its bytes were verified against its id (fuse/README.md).
 *
 * Never read the mount synchronously from the process serving it (Deno.readFileSync etc.): a first
 * read needs this process's event loop to fetch, so that would deadlock. Use async APIs or a child.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";

/** A file to expose through the mount. */
export interface FuseFileEntry {
  /** Relative path inside the mount, e.g. `"<job-id>/words.txt"`; no `.`/`..` components. */
  path: string;
  /** 16-byte content id (first 16 bytes of SHA-256), names the cache file. */
  id: Uint8Array;
  /** Size in bytes, reported by stat and used to validate the cache file. */
  size: number;
}

/** Options of {@link FuseMount.mount}. */
export interface FuseMountOptions {
  /** Directory to mount on (created if missing; a dead mount left there is lazily unmounted). */
  mountpoint: string;
  /** Local cache directory (created if missing); files are named by lowercase id hex. */
  cacheDir: string;
  /**
   * Makes `cachePath` hold id's verified bytes: when a file is there already (cached by an
   * earlier run, or changed on disk since it was verified), checks it against the id and keeps
   * it only if it matches; otherwise downloads the bytes, verifies them and creates `cachePath`
   * atomically (write a temp file, then rename). The mount serves a cache file only after this
   * resolved for it, and only while the file is unchanged since (inode, size, mtime, ctime).
   */
  fetch: (id: Uint8Array, cachePath: string) => Promise<void>;
  /** A reader waiting longer than this for a fetch gets EIO; also bounds each fetch call. */
  fetchTimeoutMs?: number;
  /** When set, least-recently-used unpinned cache files are evicted after each fetch to stay
   * under this many bytes. */
  cacheMaxBytes?: number;
  /** Serve reads by splicing from the cache file instead of pread+copy (benchmark knob). */
  splice?: boolean;
  /** Kernel readahead window of the mount in KiB (default 4096; 0 keeps the kernel's 128). */
  readaheadKb?: number;
  /** Hand opens of already-cached files to the kernel (FUSE passthrough, Linux >= 6.9, root), so
   * their reads bypass user space entirely. Default true; falls back silently when refused. */
  passthrough?: boolean;
  /** Called when a fetch fails (the reader gets EIO; the next read retries). */
  onFetchError?: (id: Uint8Array, error: unknown) => void;
}

/** Counters of one mount (C side plus the TypeScript fetch loop). */
export interface FuseStats {
  /** Fetch requests queued by the C side (one per cache miss, shared by concurrent readers). */
  fetchRequests: number;
  /** Fetch attempts that completed with an error. */
  fetchFailures: number;
  /** FUSE read requests served (the kernel page cache absorbs repeated reads). */
  reads: number;
  /** Bytes returned by those reads. */
  readBytes: number;
  /** Readers that gave up waiting for a fetch (EIO). */
  timeouts: number;
  /** File opens through the mount. */
  opens: number;
  /** Lookups of names by the kernel. */
  lookups: number;
  /** Files currently registered. */
  files: number;
  /** Opens served by kernel passthrough (their reads are not counted in `reads`). */
  passthroughOpens: number;
  /** Calls made to the user's fetch function. */
  fetchCalls: number;
  /** Cache files deleted by eviction. */
  evictions: number;
}

/** An error of the FUSE mount, naming the mountpoint (and the file or id when relevant). */
export class FuseError extends Error {
  /** Creates an error about `mountpoint`. */
  constructor(readonly mountpoint: string, message: string, options?: ErrorOptions) {
    super(`fuse ${mountpoint}: ${message}`, options);
    this.name = "FuseError";
  }
}

const SYMBOLS = {
  dsys_fuse_create: {
    parameters: ["buffer", "buffer", "i32", "i32", "i32", "i32", "buffer", "i32"],
    result: "pointer",
  },
  dsys_fuse_stop: { parameters: ["pointer"], result: "i32", nonblocking: true },
  dsys_fuse_destroy: { parameters: ["pointer"], result: "void" },
  dsys_fuse_add_file: { parameters: ["pointer", "buffer", "buffer", "u64"], result: "i32" },
  dsys_fuse_remove_path: { parameters: ["pointer", "buffer"], result: "i32" },
  dsys_fuse_next_request: {
    parameters: ["pointer", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  dsys_fuse_complete: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  dsys_fuse_begin_fetch: { parameters: ["pointer", "buffer"], result: "i32" },
  dsys_fuse_pin: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  dsys_fuse_allow: { parameters: ["pointer", "buffer", "u32", "i32"], result: "i32" },
  dsys_fuse_evict: { parameters: ["pointer", "buffer"], result: "i32" },
  dsys_fuse_last_use: { parameters: ["pointer", "buffer"], result: "u64" },
  dsys_fuse_stats: { parameters: ["pointer", "buffer"], result: "void" },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

const EIO = 5;
const EEXIST = 17;
const ENOTDIR = 20;
const ENOENT = 2;

const repoRoot = new URL("..", import.meta.url);
let libPromise: Promise<Lib> | undefined;

/** Path of the shared library: `$DSYS_FUSE_LIB`, else `<repo>/build/libdsys_fuse.so`. */
export function fuseLibraryPath(): string {
  const env = Deno.env.get("DSYS_FUSE_LIB");
  if (env) return env;
  return new URL("build/libdsys_fuse.so", repoRoot).pathname;
}

/** Compiles `fuse/dsys_fuse.c` into the library when it is missing or older than the source
 * (same command as scripts/build-native.sh). Returns the library path. */
export async function buildFuseLibrary(): Promise<string> {
  const out = fuseLibraryPath();
  const src = new URL("fuse/dsys_fuse.c", repoRoot).pathname;
  const [o, s] = await Promise.all([
    Deno.stat(out).catch(() => null),
    Deno.stat(src).catch(() => null),
  ]);
  if (!s || (o && o.mtime && s.mtime && o.mtime >= s.mtime)) return out;
  const flags = await run("pkg-config", ["--cflags", "--libs", "fuse3"]);
  await Deno.mkdir(resolve(out, ".."), { recursive: true });
  const tmp = `${out}.${Deno.pid}.tmp`;
  const args = [
    "-std=c11",
    "-O2",
    "-Wall",
    "-shared",
    "-fPIC",
    "-o",
    tmp,
    src,
    ...flags.trim().split(/\s+/),
  ];
  await run("gcc", args);
  await Deno.rename(tmp, out);
  return out;
}

async function run(cmd: string, args: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${dec.decode(r.stderr).trim()}`);
  }
  return dec.decode(r.stdout);
}

function loadLib(): Promise<Lib> {
  libPromise ??= (async () => {
    const path = Deno.env.get("DSYS_FUSE_LIB") ? fuseLibraryPath() : await buildFuseLibrary();
    return Deno.dlopen(path, SYMBOLS);
  })();
  return libPromise;
}

const enc = new TextEncoder();
const cstr = (s: string): Uint8Array<ArrayBuffer> => enc.encode(s + "\0");

/** Lowercase hex of a file id (the cache file name). */
export function idHex(id: Uint8Array): string {
  return Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
}

function checkId(mountpoint: string, id: Uint8Array): Uint8Array<ArrayBuffer> {
  if (id.length !== 16) {
    throw new FuseError(mountpoint, `file id must be 16 bytes, got ${id.length}`);
  }
  return new Uint8Array(id);
}

/** Decodes /proc/mounts' octal escapes (`\040` for space etc.). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points currently listed in /proc/mounts at `path` (absolute), with their fs types. */
export async function mountsAt(path: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/mounts");
  const types: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length > 2 && unescapeMount(f[1]) === path) types.push(f[2]);
  }
  return types;
}

/** Lazily unmounts a dead FUSE mount at `path` (its serving process died, so every access fails
 * with ENOTCONN). A live mount is left alone and reported as an error. */
async function clearStaleMount(path: string): Promise<void> {
  for (let i = 0; i < 8; i++) {
    const types = await mountsAt(path);
    if (types.length === 0) return;
    if (!types.some((t) => t.startsWith("fuse"))) {
      throw new FuseError(path, `something else is mounted there (${types.join(", ")})`);
    }
    try {
      await Deno.stat(path);
      throw new FuseError(path, "already mounted by a live process");
    } catch (e) {
      if (e instanceof FuseError) throw e;
      if (!(e instanceof Deno.errors.NotConnected) && !/os error 107/.test(String(e))) throw e;
    }
    const r = await new Deno.Command("umount", { args: ["-l", path], stderr: "piped" }).output();
    if (!r.success) {
      const msg = new TextDecoder().decode(r.stderr).trim();
      throw new FuseError(path, `lazy unmount of dead mount failed: ${msg}`);
    }
  }
  throw new FuseError(path, "dead mounts keep reappearing");
}

/** A mounted read-only filesystem of registered job input files. */
export class FuseMount {
  readonly mountpoint: string;
  readonly cacheDir: string;
  #lib: Lib;
  #h: Deno.PointerObject;
  #opts: FuseMountOptions;
  #stopped = false;
  #loop: Promise<void>;
  #inflight = new Set<Promise<number>>();
  #fetchCalls = 0;
  #evictions = 0;
  #gc: Promise<void> | undefined;
  /** A fetch completed while the current eviction pass ran: run one more after it. */
  #gcAgain = false;

  private constructor(
    lib: Lib,
    h: Deno.PointerObject,
    opts: FuseMountOptions,
    mp: string,
    cd: string,
  ) {
    this.#lib = lib;
    this.#h = h;
    this.#opts = opts;
    this.mountpoint = mp;
    this.cacheDir = cd;
    this.#loop = this.#serve();
  }

  /** Mounts an empty filesystem at `opts.mountpoint` and starts serving fetch requests. */
  static async mount(opts: FuseMountOptions): Promise<FuseMount> {
    // /proc/mounts lists canonical paths: resolve symlinks in the parent (the mountpoint itself
    // may be a dead mount that cannot be stat'ed).
    const abs = resolve(opts.mountpoint);
    await Deno.mkdir(dirname(abs), { recursive: true });
    const mp = resolve(await Deno.realPath(dirname(abs)), basename(abs));
    await Deno.mkdir(opts.cacheDir, { recursive: true });
    const cd = await Deno.realPath(opts.cacheDir);
    if (cd === mp || cd.startsWith(mp + "/")) {
      throw new FuseError(mp, `cache dir ${cd} must not be inside the mount`);
    }
    const lib = await loadLib();
    await clearStaleMount(mp);
    await Deno.mkdir(mp, { recursive: true });
    const err = new Uint8Array(512);
    const timeout = opts.fetchTimeoutMs ?? 30_000;
    const h = lib.symbols.dsys_fuse_create(
      cstr(mp),
      cstr(cd),
      timeout,
      opts.splice ? 1 : 0,
      opts.readaheadKb ?? Number(Deno.env.get("DSYS_FUSE_RA_KB") ?? 4096),
      opts.passthrough === false ? 0 : 1,
      err,
      err.length,
    );
    if (h === null) {
      const msg = new TextDecoder().decode(err.subarray(0, err.indexOf(0)));
      throw new FuseError(mp, `mount failed: ${msg}`);
    }
    return new FuseMount(lib, h, { ...opts, fetchTimeoutMs: timeout }, mp, cd);
  }

  /** Path of id's cache file. */
  cachePath(id: Uint8Array): string {
    return `${this.cacheDir}/${idHex(id)}`;
  }

  /** Registers a file (parents are created). Re-adding the same path, id and size is a no-op. */
  addFile(e: FuseFileEntry): void {
    this.#alive();
    if (!Number.isSafeInteger(e.size) || e.size < 0) {
      throw new FuseError(this.mountpoint, `bad size ${e.size} for ${e.path}`);
    }
    const rc = this.#lib.symbols.dsys_fuse_add_file(
      this.#h,
      cstr(e.path),
      checkId(this.mountpoint, e.id),
      BigInt(e.size),
    );
    if (rc === 0) return;
    const why = rc === -EEXIST
      ? "path already exists with another id/size or is a directory"
      : rc === -ENOTDIR
      ? "a parent component is a file"
      : "invalid path";
    throw new FuseError(this.mountpoint, `addFile ${e.path} (id ${idHex(e.id)}): ${why}`);
  }

  /** Removes a file or a whole directory (e.g. a job's); returns false if it did not exist. Files
   * already open stay readable until closed; cache files are kept (eviction is separate). */
  removePath(path: string): boolean {
    this.#alive();
    const rc = this.#lib.symbols.dsys_fuse_remove_path(this.#h, cstr(path));
    if (rc === 0) return true;
    if (rc === -ENOENT) return false;
    throw new FuseError(this.mountpoint, `removePath ${path}: invalid path`);
  }

  /** Fetches id into the cache now unless it is cached already (waits for a fetch in flight).
   * Lets the worker warm the cache before a job starts, so the job's opens get passthrough.
   * Throws FuseError when the fetch fails. */
  async prefetch(id: Uint8Array): Promise<void> {
    const bytes = checkId(this.mountpoint, id);
    for (;;) {
      this.#alive();
      const rc = this.#lib.symbols.dsys_fuse_begin_fetch(this.#h, bytes);
      if (rc === 0) return;
      if (rc === 1) {
        const p = this.#fetchOne(bytes);
        this.#inflight.add(p);
        p.finally(() => this.#inflight.delete(p));
        const err = await p;
        if (err) throw new FuseError(this.mountpoint, `prefetch of ${idHex(id)} failed`);
        return;
      }
      // Someone else's fetch is in flight: poll until it settles (then cached, or ours to retry).
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Lets `uid` into the top-level directory `name` (a job's) for one more holder: the mount
   * serves a top-level directory only to root and to the uids allowed into it. Returns the
   * holders of that uid now. */
  allowUid(name: string, uid: number): number {
    return this.#allow(name, uid, 1);
  }

  /** Takes back one {@link allowUid} (the uid is let in while it has holders). */
  disallowUid(name: string, uid: number): number {
    return this.#allow(name, uid, -1);
  }

  #allow(name: string, uid: number, delta: number): number {
    this.#alive();
    const rc = this.#lib.symbols.dsys_fuse_allow(this.#h, cstr(name), uid, delta);
    if (rc >= 0) return rc;
    const why = rc === -ENOENT ? "no such top-level directory" : "bad name or uid";
    throw new FuseError(this.mountpoint, `allow uid ${uid} into ${name}: ${why}`);
  }

  /** Protects id's cache file from eviction until a matching {@link unpin}. Returns the count. */
  pin(id: Uint8Array): number {
    this.#alive();
    return this.#lib.symbols.dsys_fuse_pin(this.#h, checkId(this.mountpoint, id), 1);
  }

  /** Releases one {@link pin}. Returns the remaining count. */
  unpin(id: Uint8Array): number {
    this.#alive();
    return this.#lib.symbols.dsys_fuse_pin(this.#h, checkId(this.mountpoint, id), -1);
  }

  /** Deletes id's cache file unless it is open through the mount, pinned or being fetched.
   * Returns true when the file is gone (or was absent), false when busy. */
  evict(id: Uint8Array): boolean {
    this.#alive();
    const rc = this.#lib.symbols.dsys_fuse_evict(this.#h, checkId(this.mountpoint, id));
    if (rc < 0) throw new FuseError(this.mountpoint, `evict ${idHex(id)}: unlink errno ${-rc}`);
    if (rc === 1) this.#evictions++;
    return rc === 1;
  }

  /** Evicts least-recently-used evictable cache files until the cache holds at most `maxBytes`.
   * Returns the bytes still in the cache (can stay above the limit when files are busy). */
  async enforceCacheLimit(maxBytes: number): Promise<number> {
    const files: { id: Uint8Array; size: number; use: bigint }[] = [];
    let total = 0;
    for await (const ent of Deno.readDir(this.cacheDir)) {
      if (!ent.isFile || !/^[0-9a-f]{32}$/.test(ent.name)) continue;
      const st = await Deno.stat(`${this.cacheDir}/${ent.name}`).catch(() => null);
      if (!st) continue;
      const id = Uint8Array.from(ent.name.match(/../g)!, (h) => parseInt(h, 16));
      total += st.size;
      files.push({ id, size: st.size, use: 0n });
    }
    if (total <= maxBytes || this.#stopped) return total;
    for (const f of files) f.use = BigInt(this.#lib.symbols.dsys_fuse_last_use(this.#h, f.id));
    files.sort((a, b) => (a.use < b.use ? -1 : a.use > b.use ? 1 : 0));
    for (const f of files) {
      if (total <= maxBytes || this.#stopped) break;
      if (this.evict(f.id)) total -= f.size;
    }
    return total;
  }

  /** Current counters. */
  stats(): FuseStats {
    const out = new BigUint64Array(9);
    if (!this.#stopped) {
      this.#lib.symbols.dsys_fuse_stats(this.#h, new Uint8Array(out.buffer));
    }
    const n = Array.from(out, Number);
    return {
      fetchRequests: n[0],
      fetchFailures: n[1],
      reads: n[2],
      readBytes: n[3],
      timeouts: n[4],
      opens: n[5],
      lookups: n[6],
      files: n[7],
      passthroughOpens: n[8],
      fetchCalls: this.#fetchCalls,
      evictions: this.#evictions,
    };
  }

  /** Unmounts (lazily if still busy), fails pending reads with EIO and frees the C side. */
  async unmount(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.#lib.symbols.dsys_fuse_stop(this.#h);
    await this.#loop;
    // In-flight fetches are bounded by fetchTimeoutMs; their completion is ignored now.
    await Promise.allSettled([...this.#inflight, this.#gc]);
    this.#lib.symbols.dsys_fuse_destroy(this.#h);
  }

  #alive(): void {
    if (this.#stopped) throw new FuseError(this.mountpoint, "already unmounted");
  }

  async #serve(): Promise<void> {
    for (;;) {
      const id = new Uint8Array(16);
      const r = await this.#lib.symbols.dsys_fuse_next_request(this.#h, id, -1);
      if (r < 0 || this.#stopped) return;
      if (r === 1) {
        const p = this.#fetchOne(id);
        this.#inflight.add(p);
        p.finally(() => this.#inflight.delete(p));
      }
    }
  }

  /** Runs the user's fetch for id and reports it to C. Resolves to 0 or an errno. */
  async #fetchOne(id: Uint8Array<ArrayBuffer>): Promise<number> {
    this.#fetchCalls++;
    let err = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const timeout = new Promise<never>((_, rej) => {
        timer = setTimeout(
          () => rej(new FuseError(this.mountpoint, `fetch of ${idHex(id)} timed out`)),
          this.#opts.fetchTimeoutMs,
        );
      });
      await Promise.race([this.#opts.fetch(id, this.cachePath(id)), timeout]);
    } catch (e) {
      err = EIO;
      try {
        this.#opts.onFetchError?.(id, e);
      } catch { /* a faulty error hook must not wedge the readers */ }
    } finally {
      clearTimeout(timer);
    }
    if (this.#stopped) return err || EIO;
    this.#lib.symbols.dsys_fuse_complete(this.#h, id, err);
    if (err === 0) this.#scheduleEviction();
    return err;
  }

  /**
   * Runs an eviction pass after a fetch. One pass at a time; a pass sees every file fetched
   * before it started, so a fetch that completes while a pass runs asks for one more pass
   * after it (else that file could leave the cache over its bound until the next fetch).
   */
  #scheduleEviction(): void {
    const max = this.#opts.cacheMaxBytes;
    if (max === undefined) return;
    if (this.#gc) {
      this.#gcAgain = true;
      return;
    }
    this.#gcAgain = false;
    this.#gc = this.enforceCacheLimit(max).then(() => {}, () => {}).finally(() => {
      this.#gc = undefined;
      if (this.#gcAgain && !this.#stopped) this.#scheduleEviction();
    });
  }
}
