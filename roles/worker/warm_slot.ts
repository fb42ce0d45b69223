/**
 * A slot's warm sandbox: one bubblewrap sandbox per slot, started once, in which each chunk of
 * the slot gets fresh PID, mount and IPC namespaces of its own (build/dsys-exec `slot`). What a
 * one-chunk sandbox (roles/worker/sandbox.ts) pays per chunk — a copy of the host's mount table,
 * some twenty bind mounts and their teardown, a network namespace, moving into the cgroups — the
 * warm slot pays once; a chunk costs an unshare, a /proc mount and its namespaces' teardown.
 *
 * Why isolation between chunks still holds: each chunk has its own PID namespace (whose end ends
 * every process it started), mount namespace (/proc of that PID namespace; /dev/shm on its own
 * tmpfs) and IPC namespace; what it may write (output dir, /tmp, stdout, stderr) is a tmpfs the
 * worker mounts for that chunk only and removes after it; it runs as the slot's uid with no
 * capabilities, so it cannot change what it shares with the slot's later chunks — the network
 * namespace (loopback only; its sockets close with its processes), UTS, the read-only system,
 * /etc and /dev — and the slot's own processes (bwrap and dsys-exec, uid 0) are neither in its
 * PID namespace nor signalable by it. No process of a chunk is left when the next one starts:
 * the worker waits for the slot's cgroup to hold only the slot's own processes.
 *
 * Per-chunk files reach the sandbox through mount propagation: the worker makes
 * `<slot>/view` a shared mount, and the sandbox binds it at /dsys/view and its `in`, `out`, `tmp`
 * and `program` at /dsys/in, /dsys/out, /tmp and /dsys/program (slaves: they show what the
 * worker mounts on those places later). For each chunk the worker mounts its tmpfs at
 * `view/fs`, binds `fs/out` and `fs/tmp` onto `view/out` and `view/tmp`, the job's input
 * directory onto `view/in` and the program onto `view/program`; the chunk's init opens its
 * stdout and stderr in `/dsys/view/fs` and binds `fs/shm` as its /dev/shm.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import type { SlotCgroup } from "./cgroup.ts";
import {
  errnoText,
  fileSize,
  type ProgramEnd,
  type ProgramRun,
  readTail,
  type RunResult,
  spawnWithFiles,
  waitForExit,
} from "./runner.ts";
import { INSIDE } from "./sandbox.ts";
import { bindMount, killPid, makeFifo, makeSharedMount, unmount, unmountAsync } from "./sys.ts";
import { SANDBOX } from "./limits.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Where the slot's per-chunk mounts go, inside the sandbox. */
export const VIEW = "/dsys/view";

/** The argv of a slot's sandbox (pure): the one-chunk sandbox's system view, no PID namespace
 * of its own (each chunk makes one), the view bound as a slave, and dsys-exec `slot`. */
export function slotArgv(p: {
  exec: string;
  bwrap: string;
  cgroupProcs: string[];
  system: { path: string; symlink: string | null }[];
  hide: { path: string; dir: boolean }[];
  etcDir: string;
  viewDir: string;
  uid: number;
}): string[] {
  const a: string[] = [p.exec, "enter", ...p.cgroupProcs, "--", p.bwrap];
  a.push("--die-with-parent", "--new-session");
  a.push("--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try");
  a.push("--hostname", "dsys-chunk");
  for (const e of p.system) {
    if (e.symlink !== null) a.push("--symlink", e.symlink, e.path);
    else a.push("--ro-bind", e.path, e.path);
  }
  a.push("--ro-bind", p.etcDir, "/etc");
  for (const h of p.hide) {
    if (h.dir) a.push("--tmpfs", h.path, "--remount-ro", h.path);
    else a.push("--ro-bind", "/dev/null", h.path);
  }
  a.push("--dev", "/dev", "--dir", "/proc");
  a.push("--perms", "0755", "--dir", "/dsys");
  a.push("--bind", p.viewDir, VIEW);
  a.push("--bind", `${p.viewDir}/in`, INSIDE.input);
  a.push("--bind", `${p.viewDir}/out`, INSIDE.output);
  a.push("--bind", `${p.viewDir}/tmp`, INSIDE.tmp);
  a.push("--bind", `${p.viewDir}/program`, INSIDE.program);
  a.push("--ro-bind", p.exec, INSIDE.exec);
  a.push("--chdir", "/");
  // dsys-exec `slot` makes each chunk's namespaces (CAP_SYS_ADMIN) and drops to the slot's uid
  // in the chunk (CAP_SETUID, CAP_SETGID); the chunk's program has no capability at all.
  a.push("--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID");
  a.push("--", INSIDE.exec, "slot", "--uid", String(p.uid), "--req-fd", "3", "--rep-fd", "4");
  return a;
}

/** A request line of dsys-exec `slot`: length, newline, NUL-separated fields. */
export function slotRequest(
  seq: number,
  cpuSecs: number,
  argv: string[],
  env: string[],
): Uint8Array {
  const fields = [
    String(seq),
    String(cpuSecs),
    String(argv.length),
    ...argv,
    String(env.length),
    ...env,
  ];
  const body = enc.encode(fields.map((f) => f + "\0").join(""));
  const head = enc.encode(`${body.length}\n`);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** One parsed line of the slot's replies. */
export type SlotReply =
  | { kind: "ready"; pid: number }
  | { kind: "started"; seq: number; pid: number }
  | { kind: "end"; seq: number }
  | { kind: "status"; seq: number; end: ProgramEnd };

/** Parses a reply line of dsys-exec `slot` (null for anything else). */
export function parseSlotReply(line: string): SlotReply | null {
  let m = /^ready (\d+)$/.exec(line);
  if (m) return { kind: "ready", pid: Number(m[1]) };
  m = /^(\d+) (started|end|exit|signal|exec-error)(?: (\d+))?$/.exec(line);
  if (!m) return null;
  const seq = Number(m[1]), n = Number(m[3] ?? NaN);
  switch (m[2]) {
    case "started":
      return Number.isFinite(n) ? { kind: "started", seq, pid: n } : null;
    case "end":
      return { kind: "end", seq };
    case "exit":
      return Number.isFinite(n) ? { kind: "status", seq, end: { kind: "exit", code: n } } : null;
    case "signal":
      return Number.isFinite(n)
        ? { kind: "status", seq, end: { kind: "signal", signal: n } }
        : null;
    default:
      return Number.isFinite(n)
        ? { kind: "status", seq, end: { kind: "exec-error", errno: n } }
        : null;
  }
}

/** What the slot knows of one chunk. */
interface Pending {
  pid: number;
  end: ProgramEnd | null;
  ended: boolean;
  wake: () => void;
}

/** One slot's warm sandbox. */
export class WarmSlot {
  /** The slot's view directory on the host (`<slot>/view`). */
  readonly viewDir: string;
  #outer: number;
  #helper = 0;
  #req: Deno.FsFile;
  #rep: Deno.FsFile;
  #cgroup: SlotCgroup;
  #seq = 0;
  #pending = new Map<number, Pending>();
  #dead = false;
  #exited: Promise<void>;
  #log: Logger;

  private constructor(
    viewDir: string,
    outer: number,
    req: Deno.FsFile,
    rep: Deno.FsFile,
    cgroup: SlotCgroup,
    log: Logger,
  ) {
    this.viewDir = viewDir;
    this.#outer = outer;
    this.#req = req;
    this.#rep = rep;
    this.#cgroup = cgroup;
    this.#log = log;
    this.#exited = waitForExit(outer).then((st) => {
      this.#die(`the slot's sandbox ended (wait status ${st})`);
    });
  }

  /** Starts the slot's sandbox: `<dir>/view` made a shared mount, FIFOs to talk to dsys-exec,
   * bwrap spawned into the slot's cgroup (which must be empty). Throws when it does not say
   * ready within the kill deadline. */
  static async start(o: {
    dir: string;
    argv: (viewDir: string) => string[];
    cgroup: SlotCgroup;
    log: Logger;
  }): Promise<WarmSlot> {
    const viewDir = `${o.dir}/view`;
    for (const d of ["", "/fs", "/in", "/out", "/tmp"]) {
      Deno.mkdirSync(`${viewDir}${d}`, { recursive: true });
    }
    Deno.chmodSync(`${viewDir}/in`, 0o555);
    Deno.writeFileSync(`${viewDir}/program`, new Uint8Array(0), { mode: 0o755 });
    makeSharedMount(viewDir);
    const reqPath = `${o.dir}/slot.req`, repPath = `${o.dir}/slot.rep`;
    makeFifo(reqPath);
    makeFifo(repPath);
    const outer = spawnWithFiles(o.argv(viewDir), {}, [
      { fd: 0, path: "/dev/null", mode: "r" },
      { fd: 1, path: "/dev/null", mode: "w" },
      { fd: 2, path: `${o.dir}/slot.log`, mode: "a" },
      { fd: 3, path: reqPath, mode: "rw" },
      { fd: 4, path: repPath, mode: "rw" },
    ]);
    // The child holds both FIFOs open (read and write), so these opens do not wait.
    const req = await Deno.open(reqPath, { write: true });
    const rep = await Deno.open(repPath, { read: true });
    const slot = new WarmSlot(viewDir, outer, req, rep, o.cgroup, o.log);
    const ready = slot.#readReplies();
    const deadline = performance.now() + SANDBOX.killDeadlineMs;
    while (slot.#helper === 0 && !slot.#dead && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 2));
    }
    if (slot.#helper === 0) {
      slot.close();
      await ready.catch(() => {});
      const why = dec.decode(readTail(`${o.dir}/slot.log`, 512)).trim();
      throw new Error(`the slot's sandbox did not start${why ? `: ${why}` : ""}`);
    }
    // Its own processes are never the OOM killer's pick: a chunk over its memory limit is.
    for (const pid of [outer, slot.#helper]) {
      try {
        Deno.writeTextFileSync(`/proc/${pid}/oom_score_adj`, "-1000");
      } catch { /* gone: the slot is dead anyway */ }
    }
    return slot;
  }

  /** True while the sandbox runs. */
  get alive(): boolean {
    return !this.#dead;
  }

  /** Pids of the slot's own processes (bwrap, dsys-exec slot). */
  get ownPids(): number[] {
    return [this.#outer, this.#helper];
  }

  async #readReplies(): Promise<void> {
    let buf = "";
    const chunk = new Uint8Array(4096);
    for (;;) {
      const n = await this.#rep.read(chunk).catch(() => null);
      if (n === null) break;
      buf += dec.decode(chunk.subarray(0, n), { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const r = parseSlotReply(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (!r) continue;
        if (r.kind === "ready") {
          this.#helper = r.pid;
          continue;
        }
        const p = this.#pending.get(r.seq);
        if (!p) continue;
        if (r.kind === "started") p.pid = r.pid;
        else if (r.kind === "status") p.end = r.end;
        else p.ended = true;
        p.wake();
      }
    }
    this.#die("the slot's sandbox closed its replies");
  }

  #die(why: string): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#log.warn("warm slot gone", { view: this.viewDir, why });
    for (const p of this.#pending.values()) p.wake();
  }

  /** Chunk processes in the slot's cgroup (everything but the slot's own). */
  #chunkPids(): number[] {
    const own = this.ownPids;
    return this.#cgroup.procs().filter((p) => !own.includes(p));
  }

  /** Kills every process of the running chunk (the slot's own stay). */
  killChunk(): void {
    for (const pid of this.#chunkPids()) killPid(pid, 9);
  }

  /**
   * Runs a chunk whose files the worker has mounted into the view: the program at
   * /dsys/program with `argv` after it, `env`, RLIMIT_CPU `cpuSecs` (0 = none), killed after
   * `timeLimitMs` (0 = none). stdout and stderr are `<view>/fs/stdout` and `stderr`.
   */
  run(
    spec: { args: string[]; env: Record<string, string>; cpuSecs: number; timeLimitMs: number },
  ): ProgramRun {
    return new WarmRun(this, ++this.#seq, spec);
  }

  /** @internal Sends a chunk's request and waits for its end; used by WarmRun. */
  async _execute(
    seq: number,
    spec: { args: string[]; env: Record<string, string>; cpuSecs: number },
    run: WarmRun,
  ): Promise<{ end: ProgramEnd | null; reapError?: string; lost?: string }> {
    let wake = () => {};
    const p: Pending = { pid: 0, end: null, ended: false, wake: () => wake() };
    this.#pending.set(seq, p);
    try {
      const env = Object.entries(spec.env).map(([k, v]) => `${k}=${v}`);
      const msg = slotRequest(seq, spec.cpuSecs, [INSIDE.program, ...spec.args], env);
      try {
        for (let off = 0; off < msg.length;) off += await this.#req.write(msg.subarray(off));
      } catch (e) {
        this.#die(`request not sent: ${e}`);
      }
      // Its end: C (which outlives the chunk's init) said so. C writes that line before it exits,
      // so once C is gone the line is on its way, unless C was killed: then its being gone is the
      // end (a killed chunk's init says nothing either).
      const deadline = () => performance.now() + SANDBOX.killDeadlineMs;
      let killedAt = 0, goneAt = 0;
      for (;;) {
        if (p.ended || this.#dead) break;
        if (p.pid !== 0 && !pidAlive(p.pid)) {
          if (run.killed) break;
          goneAt ||= deadline();
          if (performance.now() > goneAt) break;
        }
        if (run.killed) {
          killedAt ||= deadline();
          this.killChunk();
          if (p.pid !== 0) killPid(p.pid, 9);
          if (performance.now() > killedAt) break;
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, run.killed || goneAt ? 5 : 1000);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
      // Nothing of the chunk may be left before its files are read or the slot is reused (a
      // dead slot's cgroup is emptied entirely: the next chunk starts a new sandbox).
      const end = performance.now() + SANDBOX.killDeadlineMs;
      for (let i = 0;; i++) {
        const left = this.#dead ? this.#cgroup.procs() : this.#chunkPids();
        if (left.length === 0) break;
        for (const pid of left) killPid(pid, 9);
        if (performance.now() > end) {
          return { end: p.end, reapError: `processes ${left.join(",")} survive SIGKILL` };
        }
        await new Promise((r) => setTimeout(r, Math.min(20, 1 + i)));
      }
      if (this.#dead) return { end: p.end, lost: "the slot's sandbox ended while the chunk ran" };
      return { end: p.end };
    } finally {
      this.#pending.delete(seq);
    }
  }

  /** Stops the sandbox (every process in the slot's cgroup) and its FIFOs. */
  close(): void {
    this.#die("closed");
    for (const pid of this.#cgroup.procs()) killPid(pid, 9);
    killPid(this.#outer, 9);
    try {
      this.#req.close();
    } catch { /* closed */ }
    try {
      this.#rep.close();
    } catch { /* closed */ }
    try {
      unmount(this.viewDir);
    } catch { /* the next start of the worker wipes it */ }
  }

  /** Resolves once the sandbox's bwrap has exited. */
  exited(): Promise<void> {
    return this.#exited;
  }

  /** The program file bound at view/program (kept for the slot's next chunk of it). */
  #program: string | null = null;
  #input = false;
  #fs = false;

  /** Mounts a chunk's input directory and program into the view (the tmpfs is ChunkFs's). The
   * program stays bound after the chunk: the next chunk of the slot most often runs the same
   * program file (a job's chunks), and a bind of a root-owned 0755 file gives a chunk nothing
   * (it sees only the program it runs). */
  async mountChunk(inputDir: string | null, program: string): Promise<void> {
    // The chunk's tmpfs (mounted at view/fs by ChunkFs) under the names the sandbox shows.
    bindMount(`${this.viewDir}/fs/out`, `${this.viewDir}/out`);
    this.#fs = true;
    bindMount(`${this.viewDir}/fs/tmp`, `${this.viewDir}/tmp`);
    if (this.#program !== program) {
      if (this.#program !== null) await unmountAsync(`${this.viewDir}/program`);
      this.#program = null;
      bindMount(program, `${this.viewDir}/program`);
      this.#program = program;
    }
    if (inputDir !== null) {
      bindMount(inputDir, `${this.viewDir}/in`);
      this.#input = true;
    }
  }

  /** Unmounts the chunk's input directory and its tmpfs's binds (idempotent). */
  async unmountChunk(): Promise<void> {
    if (this.#input) {
      this.#input = false;
      await unmountAsync(`${this.viewDir}/in`);
    }
    if (this.#fs) {
      this.#fs = false;
      await unmountAsync(`${this.viewDir}/out`);
      await unmountAsync(`${this.viewDir}/tmp`);
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    return killPid(pid, 0);
  } catch {
    return true; // EPERM: exists
  }
}

/** A chunk running in a warm slot. */
class WarmRun implements ProgramRun {
  readonly result: Promise<RunResult>;
  #slot: WarmSlot;
  #killed = false;
  #aborted = false;
  #done = false;

  constructor(
    slot: WarmSlot,
    seq: number,
    spec: { args: string[]; env: Record<string, string>; cpuSecs: number; timeLimitMs: number },
  ) {
    this.#slot = slot;
    this.result = this.#supervise(seq, spec);
  }

  get pid(): number {
    return this.#slot.ownPids[1] || this.#slot.ownPids[0];
  }

  get killed(): boolean {
    return this.#killed;
  }

  async #supervise(
    seq: number,
    spec: { args: string[]; env: Record<string, string>; cpuSecs: number; timeLimitMs: number },
  ): Promise<RunResult> {
    const t0 = performance.now();
    let timedOut = false;
    const timer = spec.timeLimitMs > 0
      ? setTimeout(() => {
        timedOut = true;
        this.#kill();
      }, spec.timeLimitMs)
      : undefined;
    const r = await this.#slot._execute(seq, spec, this);
    this.#done = true;
    clearTimeout(timer);
    const fs = `${this.#slot.viewDir}/fs`;
    let exitCode = 0, signal = 0;
    let spawnError: string | undefined;
    if (r.end?.kind === "exit") exitCode = r.end.code;
    else if (r.end?.kind === "signal") signal = r.end.signal;
    else if (r.end?.kind === "exec-error") {
      spawnError = `cannot run the program: ${errnoText(r.end.errno)}`;
    } else if (this.#killed) signal = 9; // killed before its init could say how it ended
    else if (r.lost) spawnError = r.lost;
    else spawnError = "the chunk ended without saying how (its init was killed)";
    return {
      exitCode,
      signal,
      timedOut,
      aborted: this.#aborted,
      ...(spawnError ? { spawnError } : {}),
      ...(r.reapError ? { reapError: r.reapError } : {}),
      durationMs: Math.round(performance.now() - t0),
      stderrTail: readTail(`${fs}/stderr`, 4096).slice(),
      stdoutBytes: fileSize(`${fs}/stdout`),
    };
  }

  #kill(): void {
    if (this.#done) return;
    this.#killed = true;
    this.#slot.killChunk();
  }

  kill(): void {
    if (this.#done) return;
    this.#aborted = true;
    this.#kill();
  }

  stop(): void {
    this.#kill();
  }
}
