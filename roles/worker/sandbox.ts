/**
 * The chunk sandbox: what a chunk's program can see and touch, built from Debian's bubblewrap
 * (namespaces and mounts), the worker's cgroups (roles/worker/cgroup.ts: memory, processes, CPU)
 * and a tmpfs per chunk (bytes written). docs/architecture.md, "The chunk sandbox", says the same
 * from the program's side.
 *
 * A chunk runs as
 *
 *   dsys-exec enter <its slot's cgroup.procs files> --            (host, root: join the cgroups)
 *     bwrap <namespaces, mounts: sandboxArgv> --                  (host, root: build the sandbox)
 *       /dsys/.exec run --uid U --gid U --status-fd 3 --          (sandbox, uid 0, 2 caps: drop)
 *         /dsys/program [argument]                               (sandbox, uid U, no caps)
 *
 * with its own mount, PID, IPC, UTS, cgroup and (unless the job asked for the host network and
 * the worker allows it) network namespaces. The program's uid U belongs to the chunk's slot (a
 * range locked per worker on the host, so no two chunks anywhere on the host share one) and owns
 * nothing outside the chunk's tmpfs. `sandboxArgv` is pure (unit-tested argument by argument);
 * the rest is the thin I/O around it: probing the host once, locking uids, the tmpfs.
 * @module
 */

import { type NetworkMode, NetworkMode as NM, SANDBOX } from "./limits.ts";
import {
  fsSpace,
  mountTmpfs,
  remountReadOnly,
  tryLock,
  unlock,
  unmount,
  unmountAsync,
} from "./sys.ts";

/** Where things are inside the sandbox (the program's view; also in its environment). */
export const INSIDE = Object.freeze({
  /** The job's input files, read-only (DSYS_INPUT_DIR). */
  input: "/dsys/in",
  /** Every regular file left here is an output (DSYS_OUTPUT_DIR). */
  output: "/dsys/out",
  /** The program file, read-only. */
  program: "/dsys/program",
  /** build/dsys-exec, read-only. */
  exec: "/dsys/.exec",
  /** TMPDIR, HOME and the working directory: private, on the chunk's tmpfs. */
  tmp: "/tmp",
  /** PATH of the program. */
  path: "/usr/local/bin:/usr/bin:/bin",
});

/** Top-level system directories bound read-only (or re-created as the symlinks they are). */
export const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/**
 * The /etc entries a chunk sees (read-only): what programs need to run and resolve names, and
 * nothing else. Not `shadow`, `gshadow`, `sudoers`, `ssh/` (host keys), `ssl/private`, or any
 * key or configuration of dsys: an allow-list, so a secret added to /etc later stays out. They
 * are copied at worker start into one directory (`buildEtc`), bound as the sandbox's /etc: one
 * mount instead of one per entry (mounts are most of a sandbox's set-up time). Only
 * world-readable files are copied; `passwd` and `group` are the sandbox's own (root, nobody and
 * the worker's slot users).
 */
export const ETC_ALLOWED = [
  "alternatives",
  "bash.bashrc",
  "ca-certificates",
  "ca-certificates.conf",
  "debian_version",
  "gai.conf",
  "host.conf",
  "hosts",
  "inputrc",
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "locale.alias",
  "localtime",
  "magic",
  "magic.mime",
  "mime.types",
  "mtab",
  "networks",
  "nsswitch.conf",
  "os-release",
  "profile",
  "protocols",
  "resolv.conf",
  "services",
  "ssl/certs",
  "ssl/openssl.cnf",
  "timezone",
];

/** A host path as the sandbox re-creates it: bound read-only, or the same symlink. */
export interface HostEntry {
  /** Absolute path (the same inside). */
  path: string;
  /** The link's target when the host path is a symlink, else null. */
  symlink: string | null;
}

/** What of the host the sandbox shows: probed once at worker start (`probeHost`). */
export interface HostLayout {
  /** SYSTEM_DIRS that exist. */
  system: HostEntry[];
}

/** Everything one chunk's sandbox is made of (host paths unless said otherwise). */
export interface SandboxPlan {
  /** build/dsys-exec. */
  exec: string;
  /** bwrap. */
  bwrap: string;
  /** cgroup.procs files of the chunk's slot. */
  cgroupProcs: string[];
  /** System paths shown read-only. */
  host: HostLayout;
  /** Paths inside bound system directories to hide (the worker's key files, if there). */
  hide: { path: string; dir: boolean }[];
  /** The slot's uid (and gid). */
  uid: number;
  /** The program file. */
  program: string;
  /** Its argv after the program path. */
  args: string[];
  /** The job's input directory in the FUSE mount; null: an empty read-only directory. */
  inputDir: string | null;
  /** The chunk's output directory (on its tmpfs). */
  outDir: string;
  /** The chunk's tmp directory (on its tmpfs). */
  tmpDir: string;
  /** The sandbox's /etc (`buildEtc`). */
  etcDir: string;
  /** NetworkMode of the job. */
  network: NetworkMode;
  /** CPU time limit, ms (0 = none): also set as RLIMIT_CPU of the program, per process. */
  cpuTimeMs: number;
}

/** The full argv of a sandboxed chunk (argv[0] = dsys-exec's path). */
export function sandboxArgv(p: SandboxPlan): string[] {
  const a: string[] = [p.exec, "enter", ...p.cgroupProcs, "--", p.bwrap];
  a.push("--die-with-parent", "--new-session");
  a.push("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try");
  if (p.network !== NM.Host) a.push("--unshare-net");
  a.push("--hostname", "dsys-chunk");
  for (const e of p.host.system) {
    if (e.symlink !== null) a.push("--symlink", e.symlink, e.path);
    else a.push("--ro-bind", e.path, e.path);
  }
  a.push("--ro-bind", p.etcDir, "/etc");
  for (const h of p.hide) {
    if (h.dir) a.push("--tmpfs", h.path, "--remount-ro", h.path);
    else a.push("--ro-bind", "/dev/null", h.path);
  }
  a.push("--proc", "/proc", "--dev", "/dev");
  a.push("--bind", p.tmpDir, INSIDE.tmp);
  a.push("--perms", "0755", "--dir", "/dsys");
  a.push("--bind", p.outDir, INSIDE.output);
  if (p.inputDir !== null) a.push("--ro-bind", p.inputDir, INSIDE.input);
  else a.push("--perms", "0555", "--dir", INSIDE.input);
  a.push("--ro-bind", p.program, INSIDE.program, "--ro-bind", p.exec, INSIDE.exec);
  a.push("--chdir", INSIDE.tmp);
  // Only what dsys-exec needs to drop to the slot's uid; it then has none at all.
  a.push("--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID");
  a.push("--", INSIDE.exec, "run", "--uid", String(p.uid), "--gid", String(p.uid));
  if (p.cpuTimeMs > 0) a.push("--cpu-secs", String(Math.ceil(p.cpuTimeMs / 1000)));
  a.push("--status-fd", "3", "--", INSIDE.program, ...p.args);
  return a;
}

/** The program's environment in the sandbox (nothing of the worker's). */
export function sandboxEnv(job: {
  jobId: string;
  chunkIndex: number;
  chunkCount: number;
  attempt: number;
  argument: string;
}): Record<string, string> {
  return {
    PATH: INSIDE.path,
    HOME: INSIDE.tmp,
    TMPDIR: INSIDE.tmp,
    DSYS_JOB_ID: job.jobId,
    DSYS_CHUNK_INDEX: String(job.chunkIndex),
    DSYS_CHUNK_COUNT: String(job.chunkCount),
    DSYS_ATTEMPT: String(job.attempt),
    DSYS_ARG: job.argument,
    DSYS_INPUT_DIR: INSIDE.input,
    DSYS_OUTPUT_DIR: INSIDE.output,
  };
}

/** passwd and group of the sandboxes: root, nobody and one user `dsys-<slot>` per slot uid. */
export function accountFiles(uids: number[]): { passwd: string; group: string } {
  const users = uids.map((u, i) => `dsys-${i}:x:${u}:${u}:dsys chunk:${INSIDE.tmp}:/bin/sh\n`);
  const groups = uids.map((u, i) => `dsys-${i}:x:${u}:\n`);
  return {
    passwd: "root:x:0:0:root:/root:/usr/sbin/nologin\n" +
      "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" + users.join(""),
    group: "root:x:0:\nnogroup:x:65534:\n" + groups.join(""),
  };
}

/**
 * Makes `dir` the sandboxes' /etc: the ETC_ALLOWED entries of the host's /etc that exist (files
 * only when world-readable, mode 0644; symlinks as they are; directories recursively by the same
 * rules), and `passwd`/`group` from accountFiles. Rebuilt at every worker start, so it is the
 * host's /etc as it was then. Returns the number of entries copied.
 */
export function buildEtc(dir: string, uids: number[], from = "/etc"): number {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* not there yet */ }
  Deno.mkdirSync(dir, { mode: 0o755 });
  Deno.chmodSync(dir, 0o755);
  let n = 0;
  const copy = (src: string, dst: string, depth: number): void => {
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(src);
    } catch {
      return;
    }
    if (st.isSymlink) {
      Deno.symlinkSync(Deno.readLinkSync(src), dst);
      n++;
    } else if (st.isFile) {
      if (((st.mode ?? 0) & 0o004) === 0) return; // not for everyone: not for chunks either
      Deno.copyFileSync(src, dst);
      Deno.chmodSync(dst, 0o644);
      n++;
    } else if (st.isDirectory && depth > 0) {
      Deno.mkdirSync(dst, { mode: 0o755 });
      Deno.chmodSync(dst, 0o755);
      for (const e of Deno.readDirSync(src)) {
        copy(`${src}/${e.name}`, `${dst}/${e.name}`, depth - 1);
      }
    }
  };
  for (const name of ETC_ALLOWED) {
    const parent = name.includes("/") ? `${dir}/${name.slice(0, name.lastIndexOf("/"))}` : dir;
    Deno.mkdirSync(parent, { recursive: true, mode: 0o755 });
    copy(`${from}/${name}`, `${dir}/${name}`, 4);
  }
  const files = accountFiles(uids);
  Deno.writeTextFileSync(`${dir}/passwd`, files.passwd, { mode: 0o644 });
  Deno.writeTextFileSync(`${dir}/group`, files.group, { mode: 0o644 });
  return n;
}

function entry(path: string): HostEntry | null {
  try {
    const st = Deno.lstatSync(path);
    return { path, symlink: st.isSymlink ? Deno.readLinkSync(path) : null };
  } catch {
    return null;
  }
}

/** Which SYSTEM_DIRS this host has, and which are symlinks. */
export function probeHost(): HostLayout {
  return { system: SYSTEM_DIRS.map(entry).filter((e): e is HostEntry => e !== null) };
}

/** Finds a program on the worker's PATH (bwrap), or null. */
export function findOnPath(name: string): string | null {
  const dirs = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":");
  for (const d of [...dirs, "/usr/bin", "/bin"]) {
    try {
      const st = Deno.statSync(`${d}/${name}`);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return `${d}/${name}`;
    } catch { /* not here */ }
  }
  return null;
}

/** Raised when the sandbox cannot be set up (no free uids, no bwrap, …). */
export class SandboxError extends Error {
  /** Creates the error; the message says what is missing and how to fix it. */
  constructor(message: string, options?: ErrorOptions) {
    super(message);
    this.name = "SandboxError";
    if (options?.cause) this.cause = options.cause;
  }
}

/** Parses `--sandbox-uids FIRST-LAST` (inclusive). */
export function parseUidRange(text: string): { first: number; count: number } {
  const m = /^(\d+)-(\d+)$/.exec(text.trim());
  const first = m ? Number(m[1]) : NaN, last = m ? Number(m[2]) : NaN;
  if (!m || !(first >= 1000 && last >= first && last < 2 ** 32 - 1)) {
    throw new SandboxError(
      `--sandbox-uids ${text}: expected FIRST-LAST with 1000 <= FIRST <= LAST < 4294967295`,
    );
  }
  return { first, count: last - first + 1 };
}

/**
 * Host-wide claims of a worker, as exclusive file locks in `lockDir` (dropped by the kernel when
 * the worker dies): its node (so a second worker of the same data dir refuses to start, and the
 * cgroups of dead workers can be told from live ones) and one uid per slot from the range.
 */
export class HostClaims {
  /** The slots' uids, by slot index. */
  readonly uids: number[];
  readonly #lockDir: string;
  #fds: number[];

  private constructor(lockDir: string, uids: number[], fds: number[]) {
    this.#lockDir = lockDir;
    this.uids = uids;
    this.#fds = fds;
  }

  /** Claims node `name` and `slots` free uids of `range`; throws SandboxError. */
  static claim(
    lockDir: string,
    name: string,
    slots: number,
    range: { first: number; count: number },
  ): HostClaims {
    Deno.mkdirSync(lockDir, { recursive: true, mode: 0o700 });
    const nodeFd = tryLock(`${lockDir}/node-${name}.lock`);
    if (nodeFd === null) {
      throw new SandboxError(`another worker with node ${name} runs on this host`);
    }
    const uids: number[] = [];
    const fds = [nodeFd];
    for (let u = range.first; u < range.first + range.count && uids.length < slots; u++) {
      const fd = tryLock(`${lockDir}/uid-${u}.lock`);
      if (fd === null) continue;
      uids.push(u);
      fds.push(fd);
    }
    const claims = new HostClaims(lockDir, uids, fds);
    if (uids.length < slots) {
      claims.release();
      throw new SandboxError(
        `only ${uids.length} of the ${slots} sandbox uids needed are free in ` +
          `${range.first}-${range.first + range.count - 1} (other workers on this host hold ` +
          "the rest): give this worker another range with --sandbox-uids",
      );
    }
    return claims;
  }

  /** True when no live worker holds node `name` (its cgroups are leftovers). */
  isStale(name: string): boolean {
    const fd = tryLock(`${this.#lockDir}/node-${name}.lock`);
    if (fd === null) return false;
    // Free: that worker is gone. Released at once; the file stays (removing it could let two
    // processes lock two different files of the same name).
    unlock(fd);
    return true;
  }

  /** Drops every claim. */
  release(): void {
    for (const fd of this.#fds.splice(0)) unlock(fd);
  }
}

/**
 * A chunk's writable space: a tmpfs of the chunk's disk limit at `<slot>/view/fs` holding `out/`
 * (the output dir, owned by the slot's uid), `tmp/` (TMPDIR and /tmp) and `shm/` (/dev/shm),
 * both sticky and world-writable like /tmp, and `stdout`, `stderr`. Mounted per chunk; sealed
 * read-only once the chunk has ended (so what is uploaded is what it left); unmounted after the
 * upload. A one-chunk sandbox's status line goes to `<slot>/status` on the worker's own disk (a
 * few bytes): a chunk that filled its tmpfs must not also lose how its program ended.
 */
export class ChunkFs {
  /** The mount point. */
  readonly root: string;
  /** Output directory. */
  readonly out: string;
  /** tmp directory. */
  readonly tmp: string;
  /** Captured stdout. */
  readonly stdout: string;
  /** stderr file. */
  readonly stderr: string;
  /** dsys-exec's status line. */
  readonly status: string;
  #mounted = false;

  /** A chunk fs at `root` (not mounted yet); dsys-exec's status line goes to `status`. */
  constructor(root: string, status: string) {
    this.root = root;
    this.out = `${root}/out`;
    this.tmp = `${root}/tmp`;
    this.stdout = `${root}/stdout`;
    this.stderr = `${root}/stderr`;
    this.status = status;
  }

  /** Mounts a fresh tmpfs of `bytes` for a chunk of `uid`. */
  mount(bytes: number, uid: number): void {
    mountTmpfs(this.root, bytes, SANDBOX.tmpfsInodes);
    this.#mounted = true;
    Deno.mkdirSync(this.out, { mode: 0o755 });
    Deno.chownSync(this.out, uid, uid);
    Deno.mkdirSync(this.tmp);
    Deno.chmodSync(this.tmp, 0o1777);
    // The chunk's /dev/shm in a warm slot: on its tmpfs, so within its disk limit and gone with it.
    Deno.mkdirSync(`${this.root}/shm`);
    Deno.chmodSync(`${this.root}/shm`, 0o1777);
  }

  /** True when the chunk filled its tmpfs (blocks or inodes): it went over its disk limit. */
  full(): boolean {
    const s = fsSpace(this.root);
    return s.availBytes === 0 || s.availInodes === 0;
  }

  /** Makes it read-only for everyone (the chunk has ended; nothing can change its outputs). */
  seal(): void {
    remountReadOnly(this.root);
  }

  /** Unmounts it (idempotent). */
  unmount(): void {
    if (!this.#mounted) return;
    this.#mounted = false;
    unmount(this.root);
  }

  /** Unmounts it off the event loop's thread (idempotent). */
  async unmountAsync(): Promise<void> {
    if (!this.#mounted) return;
    this.#mounted = false;
    await unmountAsync(this.root);
  }
}

/**
 * Path of build/dsys-exec: `$DSYS_EXEC`, else `build/dsys-exec` of the source tree (compiled from
 * roles/worker/dsys_exec.c when missing or older than its source, as scripts/build-native.sh
 * does), else `dsys-exec` beside a bundle (build/dsys.js). Throws SandboxError.
 */
export async function execHelperPath(): Promise<string> {
  const env = Deno.env.get("DSYS_EXEC");
  if (env) return env;
  const src = new URL("./dsys_exec.c", import.meta.url);
  const tree = new URL("../../build/dsys-exec", import.meta.url);
  const beside = new URL("./dsys-exec", import.meta.url);
  const stat = (u: URL) => u.protocol === "file:" ? Deno.stat(u).catch(() => null) : null;
  const [s, t, b] = await Promise.all([stat(src), stat(tree), stat(beside)]);
  if (s) {
    if (!t || (t.mtime && s.mtime && t.mtime < s.mtime)) await compileExec(src, tree);
    return tree.pathname;
  }
  if (b) return beside.pathname;
  throw new SandboxError(
    "build/dsys-exec not found (run scripts/bootstrap.sh, or set $DSYS_EXEC)",
  );
}

async function compileExec(src: URL, out: URL): Promise<void> {
  await Deno.mkdir(new URL(".", out), { recursive: true });
  const tmp = `${out.pathname}.${Deno.pid}.tmp`;
  const r = await new Deno.Command("gcc", {
    args: ["-std=c11", "-O2", "-Wall", "-o", tmp, src.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output().catch((e) => {
    throw new SandboxError(`cannot compile ${src.pathname}: ${e}`, { cause: e });
  });
  if (!r.success) {
    throw new SandboxError(
      `gcc ${src.pathname} failed: ${new TextDecoder().decode(r.stderr).trim()}`,
    );
  }
  await Deno.rename(tmp, out.pathname);
}
