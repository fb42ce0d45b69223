/**
 * The few Linux system calls the worker's sandbox needs that Deno has no API for (libc through
 * FFI): mounting, remounting and unmounting a chunk's tmpfs, its free space, non-blocking file
 * locks (per-slot uids, per-worker cgroups), and kill without a thrown error. Every call is
 * synchronous and cheap (no I/O wait), so it runs on the event loop's thread; errno is read on
 * that same thread right after the call.
 * @module
 */

const SYMBOLS = {
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  // On a pool thread: an unmount waits for an RCU grace period (milliseconds), which must not
  // stall the event loop once per chunk.
  umount2_async: {
    name: "umount2",
    parameters: ["buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  statvfs: { parameters: ["buffer", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;
function c(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

const enc = new TextEncoder();
const cstr = (s: string): Uint8Array<ArrayBuffer> => enc.encode(s + "\0");

/** errno of the last failed call on this thread. */
function errno(): number {
  const p = c().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** A failed system call, with its errno (errors are values with fields, not parsed text). */
export class SysError extends Error {
  /** Creates the error for `call` on `path`. */
  constructor(readonly call: string, readonly path: string, readonly errno: number) {
    super(`${call} ${path}: errno ${errno}`);
    this.name = "SysError";
  }
}

// <sys/mount.h>, <fcntl.h>, <sys/file.h> on Linux.
const MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_REMOUNT = 32, MS_BIND = 4096;
const MS_SHARED = 1 << 20;
const MNT_DETACH = 2;
const O_RDWR = 2, O_CREAT = 0o100, O_CLOEXEC = 0o2000000;
const LOCK_EX = 2, LOCK_NB = 4;
/** errno values the callers look at. */
export const Errno = { EPERM: 1, ENOENT: 2, ESRCH: 3, EBUSY: 16, EINVAL: 22 } as const;

/** Mounts a tmpfs of at most `bytes` and `inodes` at `target` (nosuid, nodev), its root owned by
 * root with mode 0755. */
export function mountTmpfs(target: string, bytes: number, inodes: number): void {
  const opts = `size=${bytes},nr_inodes=${inodes},mode=0755,uid=0,gid=0`;
  const rc = c().mount(
    cstr("dsys-chunk"),
    cstr(target),
    cstr("tmpfs"),
    BigInt(MS_NOSUID | MS_NODEV),
    cstr(opts),
  );
  if (rc !== 0) throw new SysError("mount tmpfs", target, errno());
}

/** Makes the filesystem at `target` read-only for everyone. The kernel refuses (EBUSY) while a
 * file on it is open for writing, so success also proves no writer is left. */
export function remountReadOnly(target: string): void {
  const rc = c().mount(
    cstr("dsys-chunk"),
    cstr(target),
    cstr("tmpfs"),
    BigInt(MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV),
    null,
  );
  if (rc !== 0) throw new SysError("remount read-only", target, errno());
}

/** Bind-mounts `source` (a file or directory) onto `target`. */
export function bindMount(source: string, target: string): void {
  const rc = c().mount(cstr(source), cstr(target), null, BigInt(MS_BIND), null);
  if (rc !== 0) throw new SysError("bind mount", `${source} -> ${target}`, errno());
}

/** Makes `path` a mount point of its own (a bind onto itself) with shared propagation: what is
 * mounted below it later also appears in the mount namespaces that bound it as a slave. */
export function makeSharedMount(path: string): void {
  bindMount(path, path);
  const rc = c().mount(cstr("none"), cstr(path), null, BigInt(MS_SHARED), null);
  if (rc !== 0) throw new SysError("make shared", path, errno());
}

/** mkfifo(3) with `mode`; an existing FIFO is left as it is. */
export function makeFifo(path: string, mode = 0o600): void {
  if (c().mkfifo(cstr(path), mode) === 0) return;
  const e = errno();
  if (e === 17 && Deno.lstatSync(path).isFifo) return; // EEXIST
  throw new SysError("mkfifo", path, e);
}

/** Detaches the mount at `target` (lazily: freed once nothing uses it). False when nothing
 * was mounted there. */
export function unmount(target: string): boolean {
  if (c().umount2(cstr(target), MNT_DETACH) === 0) return true;
  const e = errno();
  if (e === Errno.EINVAL || e === Errno.ENOENT) return false;
  throw new SysError("umount", target, e);
}

/** unmount, off the event loop's thread. errno is thread-local, so a failure is retried here
 * (synchronously, which is rare) to learn why. */
export async function unmountAsync(target: string): Promise<boolean> {
  const path = cstr(target);
  if (await c().umount2_async(path, MNT_DETACH) === 0) return true;
  return unmount(target);
}

/** Space of the filesystem holding `path`, as statvfs(3) gives it. */
export interface FsSpace {
  /** Bytes in all. */
  totalBytes: number;
  /** Bytes free for an unprivileged writer. */
  availBytes: number;
  /** Inodes in all. */
  inodes: number;
  /** Inodes free for an unprivileged writer. */
  availInodes: number;
}

/** statvfs(3) of `path`. */
export function fsSpace(path: string): FsSpace {
  // struct statvfs on x86_64/aarch64 glibc: 11 unsigned longs then 6 ints (112 bytes).
  const buf = new BigUint64Array(16);
  const rc = c().statvfs(cstr(path), new Uint8Array(buf.buffer));
  if (rc !== 0) throw new SysError("statvfs", path, errno());
  const frsize = Number(buf[1]);
  return {
    totalBytes: Number(buf[2]) * frsize,
    availBytes: Number(buf[4]) * frsize,
    inodes: Number(buf[5]),
    availInodes: Number(buf[7]),
  };
}

/**
 * Takes an exclusive lock on `path` (created if missing) without waiting. Returns the fd that
 * holds it, or null when another process holds it. The kernel drops the lock when that process
 * dies, so a crashed worker never keeps its uids or cgroups claimed. The fd is close-on-exec
 * (and chunks are spawned with every fd above 3 closed).
 */
export function tryLock(path: string): number | null {
  const fd = c().open(cstr(path), O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
  if (fd < 0) throw new SysError("open", path, errno());
  if (c().flock(fd, LOCK_EX | LOCK_NB) === 0) return fd;
  c().close(fd);
  return null;
}

/** Releases a lock taken with tryLock. */
export function unlock(fd: number): void {
  c().close(fd);
}

/** kill(2); false when the process is gone (ESRCH), throws on other errors. */
export function killPid(pid: number, signal: number): boolean {
  if (c().kill(pid, signal) === 0) return true;
  const e = errno();
  if (e === Errno.ESRCH) return false;
  throw new SysError("kill", String(pid), e);
}
