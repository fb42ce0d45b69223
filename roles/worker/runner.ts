/**
 * Runs one job program as a child process, following the worker program interface
 * (docs/architecture.md): the program file is executed directly with argv = [program, argument?],
 * in its own process group so a time limit or a shutdown can kill everything it started; stdout
 * goes to a file (it can be large), only the last bytes of stderr are kept.
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
  /** How many trailing stderr bytes to keep (default 4096). */
  stderrTailBytes?: number;
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

// Why a grace period: a program can hand its stdout/stderr to a process outside its group (a
// daemon); waiting for EOF forever would hold the slot, so after exit we wait this long, then cut.
const STREAM_GRACE_MS = 2000;

/** A started program; `result` settles once it has ended and its output is drained. */
export class RunningProgram {
  /** Process id (also the process group id), or 0 if the spawn failed. */
  readonly pid: number;
  /** Settles with the outcome; never rejects. */
  readonly result: Promise<RunResult>;
  #killed = false;
  #exited = false;
  #aborted = false;

  /** Wraps a spawned child and its open stdout file (or a spawn failure); use `startProgram`. */
  constructor(
    child: Deno.ChildProcess | null,
    stdoutFile: Deno.FsFile | null,
    spawnError: string | undefined,
    spec: RunSpec,
  ) {
    const t0 = performance.now();
    this.pid = child?.pid ?? 0;
    if (!child || !stdoutFile) {
      this.result = Promise.resolve({
        exitCode: 0,
        signal: 0,
        timedOut: false,
        aborted: false,
        spawnError,
        durationMs: Math.round(performance.now() - t0),
        stderrTail: new TextEncoder().encode(spawnError ?? ""),
        stdoutBytes: 0,
      });
      return;
    }
    this.result = this.#supervise(child, stdoutFile, spec, t0);
  }

  async #supervise(
    child: Deno.ChildProcess,
    stdoutFile: Deno.FsFile,
    spec: RunSpec,
    t0: number,
  ): Promise<RunResult> {
    let timedOut = false;
    const timer = spec.timeLimitMs > 0
      ? setTimeout(() => {
        timedOut = true;
        this.#killGroup();
      }, spec.timeLimitMs)
      : undefined;
    const tail = new TailBuffer(spec.stderrTailBytes ?? 4096);
    let stdoutBytes = 0;
    const drainOut = (async () => {
      try {
        for await (const chunk of child.stdout) {
          let off = 0;
          while (off < chunk.length) off += await stdoutFile.write(chunk.subarray(off));
          stdoutBytes += chunk.length;
        }
      } catch { /* stream cut after the grace period */ }
    })();
    const drainErr = (async () => {
      try {
        for await (const chunk of child.stderr) tail.push(chunk);
      } catch { /* stream cut after the grace period */ }
    })();
    const status = await child.status;
    this.#exited = true;
    clearTimeout(timer);
    const durationMs = Math.round(performance.now() - t0);
    const drained = Promise.all([drainOut, drainErr]);
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const late = await Promise.race([
      drained.then(() => false),
      new Promise<boolean>((r) => graceTimer = setTimeout(() => r(true), STREAM_GRACE_MS)),
    ]);
    clearTimeout(graceTimer);
    if (late) {
      await Promise.allSettled([child.stdout.cancel(), child.stderr.cancel()]);
      await drained;
    }
    stdoutFile.close();
    const signal = signalNumber(status.signal);
    return {
      exitCode: signal ? 0 : status.code,
      signal,
      timedOut,
      aborted: this.#aborted,
      durationMs,
      stderrTail: tail.bytes(),
      stdoutBytes,
    };
  }

  #killGroup(): void {
    if (this.#exited || this.pid === 0) return;
    this.#killed = true;
    try {
      // Negative pid: the whole process group the program leads (it was spawned detached, i.e.
      // in a new session), so grandchildren die with it and cannot keep the pipes open.
      Deno.kill(-this.pid, "SIGKILL");
    } catch {
      try {
        Deno.kill(this.pid, "SIGKILL");
      } catch { /* already gone */ }
    }
  }

  /** Kills the program's process group (worker shutdown); the result has `aborted` set. */
  kill(): void {
    if (this.#exited) return;
    this.#aborted = true;
    this.#killGroup();
  }

  /** True once the program has been killed by the time limit or `kill()`. */
  get killed(): boolean {
    return this.#killed;
  }
}

async function spawnRetrying(spec: RunSpec): Promise<Deno.ChildProcess> {
  // ETXTBSY: another thread of this process may fork (spawning a concurrent chunk) while the
  // program file's write fd is still open in that fork; the window is tiny, so retry briefly.
  for (let i = 0;; i++) {
    try {
      return new Deno.Command(spec.programPath, {
        args: spec.args,
        env: spec.env,
        clearEnv: true,
        cwd: spec.cwd,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        // New session => new process group whose id is the child's pid (killed as -pid).
        detached: true,
      }).spawn();
    } catch (e) {
      const busy = e instanceof Error && /Text file busy|os error 26/.test(e.message);
      if (!busy || i >= 20) throw e;
      await new Promise((r) => setTimeout(r, 5 * (i + 1)));
    }
  }
}

/** Starts a program; a spawn failure yields a RunningProgram whose result has `spawnError`. */
export async function startProgram(spec: RunSpec): Promise<RunningProgram> {
  let out: Deno.FsFile | null = null;
  try {
    // Opened before the spawn, so a failure here cannot leave a child running unsupervised.
    out = await Deno.open(spec.stdoutPath, { write: true, create: true, truncate: true });
    return new RunningProgram(await spawnRetrying(spec), out, undefined, spec);
  } catch (e) {
    out?.close();
    return new RunningProgram(null, null, e instanceof Error ? e.message : String(e), spec);
  }
}
