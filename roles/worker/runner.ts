/**
 * Runs one job program as a child process, following the worker program interface
 * (docs/architecture.md): the program file is executed directly with argv = [program, argument?],
 * in its own session (hence process group) so a time limit or a shutdown can kill everything it
 * started; stdout goes to a file (it can be large), only the last bytes of stderr are kept.
 *
 * Sandboxed (`RunSpec.sandbox`, the default of a worker): what is spawned is the argv of
 * roles/worker/sandbox.ts (dsys-exec, bwrap, dsys-exec, the program); the program's exact end
 * comes from dsys-exec's status line (fd 3), and "everything it started" is the chunk's cgroup,
 * which is empty before the result settles.
 *
 * Why libc's posix_spawn through FFI rather than Deno.Command: Deno forks the whole worker
 * process (page tables of a V8 heap: copied at fork, torn down again at exec), which profiling
 * showed to be a quarter of the worker's CPU per trivial chunk; glibc's posix_spawn uses
 * clone(CLONE_VM | CLONE_VFORK) and copies nothing. The child's stdout and stderr are opened
 * on files by the spawn itself, so no pipe is drained through the event loop either.
 * @module
 */

/** Linux signal numbers by the names Deno reports in `CommandStatus.signal`. */
const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
};

/** Number of a signal name as Deno reports it (0 when unknown or null). */
export function signalNumber(name: string | null | undefined): number {
  return name ? SIGNALS[name] ?? 0 : 0;
}

/** What to run and how. */
export interface RunSpec {
  /** Path of the executable (already written, mode 0755). */
  programPath: string;
  /** Extra argv entries after the program path. */
  args: string[];
  /** Complete environment of the program (the worker's own is not inherited). */
  env: Record<string, string>;
  /** Working directory (a scratch dir). */
  cwd: string;
  /** Kill the program after this many ms; 0 = no limit. */
  timeLimitMs: number;
  /** File that receives the program's stdout. */
  stdoutPath: string;
  /** File that receives the program's stderr (default `<stdoutPath>.stderr`); its last
   * `stderrTailBytes` are returned in the result. */
  stderrPath?: string;
  /** How many trailing stderr bytes to keep (default 4096). */
  stderrTailBytes?: number;
  /** Run in the chunk sandbox: `programPath`, `args` and `cwd` are then unused. */
  sandbox?: SandboxRun;
}

/** How the runner drives a sandboxed chunk (built by the worker from roles/worker/sandbox.ts). */
export interface SandboxRun {
  /** The whole argv; argv[0] (build/dsys-exec) is the file executed. */
  argv: string[];
  /** File that gets fd 3, where dsys-exec writes how the program ended. */
  statusPath: string;
  /** Kills every process of the chunk now (its cgroup). */
  killAll(): void;
  /** Resolves once no process of the chunk is left (killing stragglers); rejects past a
   * deadline. */
  reap(): Promise<void>;
}

/** How a program run ended. */
export interface RunResult {
  /** Exit code; 0 when killed by a signal or never started. */
  exitCode: number;
  /** Signal number that killed it, 0 if none. */
  signal: number;
  /** True when the time limit killed it. */
  timedOut: boolean;
  /** True when `kill()` was called (e.g. worker shutdown) before it ended. */
  aborted: boolean;
  /** Set when the program could not be started at all. */
  spawnError?: string;
  /** Wall-clock run time, ms. */
  durationMs: number;
  /** Last bytes of stderr. */
  stderrTail: Uint8Array;
  /** Bytes written to stdoutPath. */
  stdoutBytes: number;
  /** Sandboxed: set when processes of the chunk could not be made to go (its slot is unsafe). */
  reapError?: string;
}

/** Keeps only the last `cap` bytes written to it. */
export class TailBuffer {
  #buf: Uint8Array;
  #len = 0;
  #start = 0;
  /** Creates an empty tail of at most `cap` bytes. */
  constructor(readonly cap: number) {
    this.#buf = new Uint8Array(cap);
  }
  /** Appends bytes, dropping the oldest beyond the capacity. */
  push(chunk: Uint8Array): void {
    if (this.cap === 0) return;
    if (chunk.length >= this.cap) {
      this.#buf.set(chunk.subarray(chunk.length - this.cap));
      this.#start = 0;
      this.#len = this.cap;
      return;
    }
    for (let i = 0; i < chunk.length; i++) {
      const pos = (this.#start + this.#len) % this.cap;
      this.#buf[pos] = chunk[i];
      if (this.#len < this.cap) this.#len++;
      else this.#start = (this.#start + 1) % this.cap;
    }
  }
  /** The retained bytes in order. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#len);
    for (let i = 0; i < this.#len; i++) out[i] = this.#buf[(this.#start + i) % this.cap];
    return out;
  }
}

/** libc entry points used to spawn and reap programs (glibc >= 2.29 for addchdir_np). */
const LIBC_SYMBOLS = {
  // Nonblocking: with vfork semantics the calling thread waits until the child has exec'd
  // (a few ms under load), which must not stall the event loop and the other slots' chunks.
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  // Blocking, on the event loop's thread, for sandboxed chunks: bwrap's --die-with-parent
  // (PR_SET_PDEATHSIG) fires when the *thread* that spawned it exits, and the pool threads of
  // nonblocking calls exit when idle. The vfork wait is only until dsys-exec (a small C binary)
  // has exec'd.
  posix_spawn_sync: {
    name: "posix_spawn",
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  posix_spawn_file_actions_addclosefrom_np: { parameters: ["buffer", "i32"], result: "i32" },
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_addopen: {
    parameters: ["buffer", "i32", "buffer", "i32", "u32"],
    result: "i32",
  },
  posix_spawn_file_actions_addchdir_np: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  sigemptyset: { parameters: ["buffer"], result: "i32" },
  // libc's kill, not Deno.kill: the usual "no such process" after a chunk's exit would be a
  // thrown error whose construction (stack capture) showed up in the worker's profile.
  kill: { parameters: ["i32", "i32"], result: "i32" },
  sigfillset: { parameters: ["buffer"], result: "i32" },
  // Blocks until the child ends: run on Deno's blocking thread pool, never the event loop.
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32", nonblocking: true },
} as const;

let libcLib: Deno.DynamicLibrary<typeof LIBC_SYMBOLS> | null = null;
function libc(): Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"] {
  libcLib ??= Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  return libcLib.symbols;
}

// <spawn.h> / <fcntl.h> values on Linux (glibc).
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
const O_RDONLY = 0, O_WRONLY = 0o1, O_RDWR = 0o2, O_CREAT = 0o100, O_TRUNC = 0o1000;
const O_APPEND = 0o2000;
const ERRNO_NAMES: Record<number, string> = {
  1: "Operation not permitted",
  2: "No such file or directory",
  7: "Argument list too long",
  8: "Exec format error",
  12: "Cannot allocate memory",
  13: "Permission denied",
  20: "Not a directory",
  26: "Text file busy",
};
const ETXTBSY = 26;
const SIGKILL = 9;

/** A program could not be spawned; `errno` is the libc error number. */
export class SpawnError extends Error {
  /** The errno posix_spawn returned. */
  readonly errno: number;
  /** Creates the error for `path`. */
  constructor(path: string, errno: number) {
    super(`cannot run ${path}: ${ERRNO_NAMES[errno] ?? "error"} (os error ${errno})`);
    this.name = "SpawnError";
    this.errno = errno;
  }
}

const enc = new TextEncoder();
const cstr = (s: string): Uint8Array => enc.encode(s + "\0");

/** A NULL-terminated char*[] over `strs` (which the caller keeps alive during the call). */
function pointerArray(strs: Uint8Array[]): Uint8Array {
  const a = new BigUint64Array(strs.length + 1);
  for (let i = 0; i < strs.length; i++) {
    a[i] = BigInt(
      Deno.UnsafePointer.value(Deno.UnsafePointer.of(strs[i] as Uint8Array<ArrayBuffer>)),
    );
  }
  return new Uint8Array(a.buffer);
}

/** posix_spawn with stdin from /dev/null, stdout/stderr on files, cwd, clean env and signal
 * dispositions, in a new session. Returns the pid; throws SpawnError. */
async function spawnDirect(spec: RunSpec, stderrPath: string): Promise<number> {
  const c = libc();
  // Opaque glibc structs (80 and 336 bytes; sigset_t 128): generously sized buffers.
  const actions = new Uint8Array(256);
  const attr = new Uint8Array(512);
  const mask = new Uint8Array(128);
  const defaults = new Uint8Array(128);
  const path = cstr(spec.programPath);
  const devNull = cstr("/dev/null");
  const out = cstr(spec.stdoutPath);
  const err = cstr(stderrPath);
  const cwd = cstr(spec.cwd);
  const argv = [spec.programPath, ...spec.args].map(cstr);
  const envp = Object.entries(spec.env).map(([k, v]) => cstr(`${k}=${v}`));
  const argvPtrs = pointerArray(argv);
  const envpPtrs = pointerArray(envp);
  const pid = new Int32Array(1);
  c.posix_spawn_file_actions_init(actions);
  c.posix_spawnattr_init(attr);
  try {
    c.posix_spawn_file_actions_addopen(actions, 0, devNull, O_RDONLY, 0);
    c.posix_spawn_file_actions_addopen(actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644);
    c.posix_spawn_file_actions_addopen(actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644);
    c.posix_spawn_file_actions_addchdir_np(actions, cwd);
    // The Deno runtime ignores SIGPIPE (and may block signals on this thread): a program must
    // start with default dispositions and an empty mask, like a shell would give it.
    c.sigemptyset(mask);
    c.sigfillset(defaults);
    c.posix_spawnattr_setsigmask(attr, mask);
    c.posix_spawnattr_setsigdefault(attr, defaults);
    c.posix_spawnattr_setflags(
      attr,
      POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF,
    );
    const rc = await c.posix_spawn(
      new Uint8Array(pid.buffer),
      path,
      actions,
      attr,
      argvPtrs,
      envpPtrs,
    );
    if (rc !== 0) throw new SpawnError(spec.programPath, rc);
    return pid[0];
  } finally {
    c.posix_spawn_file_actions_destroy(actions);
    c.posix_spawnattr_destroy(attr);
    // Keeps every buffer the call reads reachable until it has returned (it runs on another
    // thread; the pointer arrays alone would not keep the strings alive).
    void [argv, envp, path, devNull, out, err, cwd, mask, defaults, argvPtrs, envpPtrs];
  }
}

/** A file a spawned process gets as one of its fds (opened by the spawn itself). */
export interface SpawnFile {
  /** Its fd number in the child. */
  fd: number;
  /** Path to open. */
  path: string;
  /** "r" (O_RDONLY), "w" (O_WRONLY|O_CREAT|O_TRUNC), "a" (append) or "rw" (O_RDWR: FIFOs). */
  mode: "r" | "w" | "a" | "rw";
}

/**
 * posix_spawn of argv[0] with `env`, exactly the fds of `files` and every other fd closed
 * (nothing of the worker's reaches a sandbox: sockets, the FUSE device, locks), in a new session
 * with default signal dispositions. Blocking, on the event loop's thread (see posix_spawn_sync:
 * bwrap's --die-with-parent). Returns the pid; throws SpawnError.
 */
export function spawnWithFiles(
  argv: string[],
  env: Record<string, string>,
  files: SpawnFile[],
): number {
  const c = libc();
  const actions = new Uint8Array(256);
  const attr = new Uint8Array(512);
  const mask = new Uint8Array(128);
  const defaults = new Uint8Array(128);
  const path = cstr(argv[0]);
  const paths = files.map((f) => cstr(f.path));
  const args = argv.map(cstr);
  const envp = Object.entries(env).map(([k, v]) => cstr(`${k}=${v}`));
  const argvPtrs = pointerArray(args);
  const envpPtrs = pointerArray(envp);
  const pid = new Int32Array(1);
  const flags = {
    r: O_RDONLY,
    w: O_WRONLY | O_CREAT | O_TRUNC,
    a: O_WRONLY | O_CREAT | O_APPEND,
    rw: O_RDWR,
  };
  c.posix_spawn_file_actions_init(actions);
  c.posix_spawnattr_init(attr);
  try {
    files.forEach((f, i) => {
      c.posix_spawn_file_actions_addopen(actions, f.fd, paths[i], flags[f.mode], 0o644);
    });
    c.posix_spawn_file_actions_addclosefrom_np(actions, Math.max(...files.map((f) => f.fd)) + 1);
    c.sigemptyset(mask);
    c.sigfillset(defaults);
    c.posix_spawnattr_setsigmask(attr, mask);
    c.posix_spawnattr_setsigdefault(attr, defaults);
    c.posix_spawnattr_setflags(
      attr,
      POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF,
    );
    const rc = c.posix_spawn_sync(
      new Uint8Array(pid.buffer),
      path,
      actions,
      attr,
      argvPtrs,
      envpPtrs,
    );
    if (rc !== 0) throw new SpawnError(argv[0], rc);
    return pid[0];
  } finally {
    c.posix_spawn_file_actions_destroy(actions);
    c.posix_spawnattr_destroy(attr);
    void [args, envp, path, paths, mask, defaults, argvPtrs, envpPtrs];
  }
}

/** posix_spawn of a sandboxed chunk: stdin /dev/null, stdout and stderr on their files, fd 3 on
 * the status file, every other fd closed. Throws SpawnError. */
function spawnSandboxed(spec: RunSpec, sb: SandboxRun, stderrPath: string): number {
  return spawnWithFiles(sb.argv, spec.env, [
    { fd: 0, path: "/dev/null", mode: "r" },
    { fd: 1, path: spec.stdoutPath, mode: "w" },
    { fd: 2, path: stderrPath, mode: "w" },
    { fd: 3, path: sb.statusPath, mode: "w" },
  ]);
}

/** How dsys-exec says the program ended (its status line), or null when it wrote none. */
export type ProgramEnd =
  | { kind: "exit"; code: number }
  | { kind: "signal"; signal: number }
  | { kind: "exec-error"; errno: number };

/** Parses dsys-exec's status line ("exit N", "signal N", "exec-error ERRNO"). */
export function parseStatusLine(text: string): ProgramEnd | null {
  const m = /^(exit|signal|exec-error) (\d+)\n?$/.exec(text);
  if (!m) return null;
  const n = Number(m[2]);
  if (m[1] === "exit") return { kind: "exit", code: n };
  if (m[1] === "signal") return { kind: "signal", signal: n };
  return { kind: "exec-error", errno: n };
}

/** Text of a file, "" when missing. */
function readSmall(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** Waits for `pid` to end; returns its raw wait status, or null if it cannot be waited for. */
export async function waitForExit(pid: number): Promise<number | null> {
  const status = new Int32Array(1);
  for (let i = 0; i < 50; i++) {
    const r = await libc().waitpid(pid, new Uint8Array(status.buffer), 0);
    if (r === pid) return status[0];
    // -1: EINTR (retry) or ECHILD (someone else reaped it: nothing more to learn).
    await new Promise((res) => setTimeout(res, 10));
  }
  return null;
}

/** Reads the last `cap` bytes of a file (empty if it is missing). */
export function readTail(path: string, cap: number): Uint8Array {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path, { read: true });
  } catch {
    return new Uint8Array(0);
  }
  try {
    const size = f.statSync().size;
    const n = Math.min(cap, size);
    const out = new Uint8Array(n);
    f.seekSync(size - n, Deno.SeekMode.Start);
    let got = 0;
    while (got < n) {
      const k = f.readSync(out.subarray(got));
      if (k === null) break;
      got += k;
    }
    return out.subarray(0, got);
  } finally {
    f.close();
  }
}

/** Size of a file, 0 when missing. */
export function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

/** A started program, however it runs (directly, in a one-chunk sandbox, in a warm slot). */
export interface ProgramRun {
  /** A pid of it (0 when it could not start). */
  readonly pid: number;
  /** Settles with the outcome; never rejects. */
  readonly result: Promise<RunResult>;
  /** Kills it for a worker shutdown (the result has `aborted`). */
  kill(): void;
  /** Kills it for a limit the worker enforces (like its time limit; not `aborted`). */
  stop(): void;
  /** True once it was killed. */
  readonly killed: boolean;
}

/** The text of an errno for a program that could not start. */
export function errnoText(errno: number): string {
  return `${ERRNO_NAMES[errno] ?? "error"} (os error ${errno})`;
}

/** A started program; `result` settles once it has ended. */
export class RunningProgram implements ProgramRun {
  /** Process id of what was spawned (the program, or sandboxed dsys-exec/bwrap: also the
   * process group and session id), or 0 if the spawn failed. */
  get pid(): number {
    return this.#pid;
  }
  /** Settles with the outcome; never rejects. */
  readonly result: Promise<RunResult>;
  #pid: number;
  #killed = false;
  #exited = false;
  #aborted = false;
  #sandbox: SandboxRun | undefined;

  /** Supervises the spawned `pid` (or reports `spawnError` when 0); use `startProgram`. */
  constructor(pid: number, spawnError: string | undefined, spec: RunSpec, t0: number) {
    this.#pid = pid;
    this.#sandbox = spec.sandbox;
    if (pid === 0) {
      this.result = Promise.resolve({
        exitCode: 0,
        signal: 0,
        timedOut: false,
        aborted: false,
        spawnError,
        durationMs: Math.round(performance.now() - t0),
        stderrTail: enc.encode(spawnError ?? ""),
        stdoutBytes: 0,
      });
      return;
    }
    this.result = this.#supervise(spec, t0);
  }

  async #supervise(spec: RunSpec, t0: number): Promise<RunResult> {
    let timedOut = false;
    const timer = spec.timeLimitMs > 0
      ? setTimeout(() => {
        timedOut = true;
        this.#killGroup();
      }, spec.timeLimitMs)
      : undefined;
    let raw: number | null;
    let end: ProgramEnd | null = null;
    let reapError: string | undefined;
    for (let tries = 1;; tries++) {
      raw = await waitForExit(this.#pid);
      if (!this.#sandbox) {
        // The chunk is over: whatever it left running in its process group (background jobs)
        // goes too, so it cannot write into the chunk's directories once they are reused or
        // uploaded. Usually none is left: -1 (ESRCH), ignored.
        libc().kill(-this.#pid, SIGKILL);
        break;
      }
      // Sandboxed: the PID namespace went with bwrap's init; the cgroup must be empty too
      // before anything of the chunk is read or its slot reused.
      await this.#sandbox.reap().catch((e) => {
        reapError = e instanceof Error ? e.message : String(e);
      });
      end = parseStatusLine(readSmall(this.#sandbox.statusPath));
      // See startProgram: the same short-lived ETXTBSY, seen by dsys-exec inside the sandbox.
      // Nothing of the program ran: run the sandbox again.
      if (
        end?.kind !== "exec-error" || end.errno !== ETXTBSY || tries >= 20 || this.#killed ||
        reapError
      ) break;
      await new Promise((r) => setTimeout(r, 5 * tries));
      try {
        this.#pid = spawnSandboxed(spec, this.#sandbox, stderrPathOf(spec));
      } catch (e) {
        end = { kind: "exec-error", errno: e instanceof SpawnError ? e.errno : 0 };
        raw = null;
        break;
      }
    }
    this.#exited = true;
    clearTimeout(timer);
    const durationMs = Math.round(performance.now() - t0);
    // Wait status: low 7 bits = terminating signal (0 = exited normally), bits 8..15 = code.
    let signal = raw === null ? 0 : raw & 0x7f;
    let exitCode = raw === null ? 255 : signal ? 0 : (raw >> 8) & 0xff;
    let spawnError: string | undefined;
    if (this.#sandbox) {
      if (end?.kind === "exit") [exitCode, signal] = [end.code, 0];
      else if (end?.kind === "signal") [exitCode, signal] = [0, end.signal];
      else if (end?.kind === "exec-error") {
        spawnError = `cannot run the program: ${ERRNO_NAMES[end.errno] ?? "error"} ` +
          `(os error ${end.errno})`;
      } else if (!this.#killed && raw !== null) {
        // No status line and not killed by us: the sandbox failed before the program ran
        // (bwrap or dsys-exec say why on stderr), or dsys-exec was killed (the worker's limit
        // checks then say by what).
        const why = new TextDecoder().decode(readTail(stderrPathOf(spec), 512)).trim();
        spawnError = `sandbox ended (${signal ? `signal ${signal}` : `exit ${exitCode}`}) ` +
          `before the program's end was known${why ? `: ${why}` : ""}`;
      }
    }
    const tail = readTail(stderrPathOf(spec), spec.stderrTailBytes ?? 4096);
    return {
      exitCode,
      signal,
      timedOut,
      aborted: this.#aborted,
      ...(spawnError ? { spawnError } : {}),
      ...(reapError ? { reapError } : {}),
      durationMs,
      stderrTail: raw === null && !this.#sandbox
        ? enc.encode(`worker lost track of process ${this.#pid}`)
        : tail.slice(),
      stdoutBytes: fileSize(spec.stdoutPath),
    };
  }

  #killGroup(): void {
    if (this.#exited || this.#pid === 0) return;
    this.#killed = true;
    if (this.#sandbox) {
      // Everything of the chunk, wherever it forked to: its cgroup; and the spawned process
      // itself, in case it has not joined the cgroup yet (dsys-exec does so first thing).
      this.#sandbox.killAll();
      libc().kill(this.#pid, SIGKILL);
      return;
    }
    // Negative pid: the whole process group the program leads (it was spawned in a new
    // session), so grandchildren die with it.
    if (libc().kill(-this.#pid, SIGKILL) !== 0) libc().kill(this.#pid, SIGKILL);
  }

  /** Kills the program's process group (worker shutdown); the result has `aborted` set. */
  kill(): void {
    if (this.#exited) return;
    this.#aborted = true;
    this.#killGroup();
  }

  /** Kills the program the way its time limit does, for a limit the worker enforces itself
   * (CPU time, processes, memory, disk): the result is not `aborted`. */
  stop(): void {
    this.#killGroup();
  }

  /** True once the program has been killed by the time limit or `kill()`. */
  get killed(): boolean {
    return this.#killed;
  }
}

function stderrPathOf(spec: RunSpec): string {
  return spec.stderrPath ?? `${spec.stdoutPath}.stderr`;
}

/** Starts a program; a spawn failure yields a RunningProgram whose result has `spawnError`. */
export async function startProgram(spec: RunSpec): Promise<RunningProgram> {
  const t0 = performance.now();
  // ETXTBSY: a program file still open for writing somewhere cannot be executed. A spawn of
  // another chunk (on a pool thread) copies this process's fd table, so while a new program file
  // is being written its write fd lives on in that child until it execs: a tiny window, retry.
  for (let i = 0;; i++) {
    try {
      const pid = spec.sandbox
        ? spawnSandboxed(spec, spec.sandbox, stderrPathOf(spec))
        : await spawnDirect(spec, stderrPathOf(spec));
      return new RunningProgram(pid, undefined, spec, t0);
    } catch (e) {
      if (e instanceof SpawnError && e.errno === ETXTBSY && i < 20) {
        await new Promise((r) => setTimeout(r, 5 * (i + 1)));
        continue;
      }
      return new RunningProgram(0, e instanceof Error ? e.message : String(e), spec, t0);
    }
  }
}
