/**
 * A worker's sandboxes, one per slot: the slot's uid (host-wide lock), cgroup (limits and
 * counters), and per chunk a tmpfs and the argv of roles/worker/sandbox.ts; one /etc for all. Also
 * the watch over a running chunk's counters, and `limitFailure`, which says which limit (if
 * any) a chunk went over.
 *
 * A slot's chunk goes through: `begin` (tmpfs mounted, limits applied) → the runner runs
 * `runSpec()` (the cgroup is empty before its result settles) → `evidence` + `limitFailure` →
 * `seal` (tmpfs read-only: what is uploaded is what the chunk left) → upload → `end` (unmounted).
 * @module
 */

import { type FailureCode, FailureCode as FC } from "../../wire/mod.ts";
import type { Logger } from "../../lib/log.ts";
import { formatBytes } from "../../lib/bytes.ts";
import { type CgroupCounters, type SlotCgroup, WorkerCgroups } from "./cgroup.ts";
import { type ChunkLimits, type LimitPolicy, NetworkMode, SANDBOX } from "./limits.ts";
import type { SandboxRun } from "./runner.ts";
import {
  buildEtc,
  ChunkFs,
  execHelperPath,
  findOnPath,
  HostClaims,
  type HostLayout,
  probeHost,
  sandboxArgv,
  SandboxError,
  SYSTEM_DIRS,
} from "./sandbox.ts";
import { unmount } from "./sys.ts";
import { slotArgv, WarmSlot } from "./warm_slot.ts";
import type { ProgramRun } from "./runner.ts";

/** Options of {@link ChunkSandbox.setUp}. */
export interface ChunkSandboxOptions {
  /** The worker's node id, hex (names its cgroups and its host lock). */
  nodeHex: string;
  /** Slots (one uid and cgroup each). */
  slots: number;
  /** Directory of the slot directories (`slot-<i>`), emptied at worker start. */
  chunksDir: string;
  /** Per-slot uid range (default limits.ts SANDBOX). */
  uids?: { first: number; count: number };
  /** Host-wide lock directory (default /run/dsys-sandbox). */
  lockDir?: string;
  /** Limit defaults and maxima. */
  policy: LimitPolicy;
  /** Host files to hide when they lie in a directory the sandbox shows (the worker's keys). */
  hide: string[];
  /** For what it set up. */
  log: Logger;
  /** Run every chunk in a sandbox of its own (`--cold-sandbox`) instead of its slot's warm one
   * (roles/worker/warm_slot.ts). Chunks with the host network always run cold. */
  cold?: boolean;
}

/** Default host-wide lock directory (uids, workers). */
export const DEFAULT_LOCK_DIR = "/run/dsys-sandbox";

/** Why a chunk went over a limit, as a failure for its status. */
export interface LimitHit {
  /** Which limit. */
  failure: FailureCode;
  /** A sentence for `dsys status`. */
  reason: string;
}

/** What the worker measured of a chunk (its cgroup counters since it started, its tmpfs). */
export interface LimitEvidence extends CgroupCounters {
  /** The tmpfs had no block or inode left. */
  diskFull: boolean;
  /** Signal that ended the program (0 if none): SIGXCPU is the per-process CPU rlimit. */
  signal: number;
}

const SIGXCPU = 24;

/** Which limit the chunk went over, if any: the kernel's own records first (an OOM kill, a
 * refused fork), then CPU time, then the disk. */
export function limitFailure(e: LimitEvidence, limits: ChunkLimits): LimitHit | null {
  if (e.oomKills > 0) {
    return {
      failure: FC.Oom,
      reason: `out of memory: over its memory limit of ${formatBytes(limits.memoryBytes)} ` +
        `(the kernel killed ${e.oomKills} of its processes)`,
    };
  }
  if (e.forksRefused > 0) {
    return {
      failure: FC.Pids,
      reason: `over its limit of ${limits.maxProcs} processes (the kernel refused ` +
        `${e.forksRefused} fork${e.forksRefused === 1 ? "" : "s"})`,
    };
  }
  if (limits.cpuTimeMs > 0 && (e.cpuMs >= limits.cpuTimeMs || e.signal === SIGXCPU)) {
    return {
      failure: FC.CpuTime,
      reason: `over its CPU time limit of ${limits.cpuTimeMs} ms (used ${Math.round(e.cpuMs)} ms)`,
    };
  }
  if (e.diskFull) {
    return {
      failure: FC.OutputQuota,
      reason: `filled its disk limit of ${formatBytes(limits.diskBytes)} ` +
        "(output directory, TMPDIR, stdout and stderr together)",
    };
  }
  return null;
}

/** Mount points below `dir` (a crashed worker's chunk tmpfs), deepest first. */
function mountsBelow(dir: string): string[] {
  const text = Deno.readTextFileSync("/proc/self/mountinfo");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const p = line.split(" ")[4];
    if (!p) continue;
    const path = p.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    if (path.startsWith(dir + "/")) out.push(path);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** The sandboxes of one worker's slots. */
export class ChunkSandbox {
  /** Limit defaults and maxima. */
  readonly policy: LimitPolicy;
  #claims: HostClaims;
  #cgroups: WorkerCgroups;
  #host: HostLayout;
  #exec: string;
  #bwrap: string;
  #hide: { path: string; dir: boolean }[];
  #chunksDir: string;
  #etcDir: string;
  #cold: boolean;
  #log: Logger;
  /** Each slot's warm sandbox (null: not started yet, or gone; started again when needed). */
  #warm: (WarmSlot | null)[];
  /** Each slot's previous chunk's unmounts, which its next chunk waits for: they take an RCU
   * grace period each, better spent after the chunk's result is on its way than before. */
  #ending: Promise<void>[];

  private constructor(
    o: ChunkSandboxOptions,
    claims: HostClaims,
    cgroups: WorkerCgroups,
    host: HostLayout,
    exec: string,
    bwrap: string,
    hide: { path: string; dir: boolean }[],
  ) {
    this.policy = o.policy;
    this.#claims = claims;
    this.#cgroups = cgroups;
    this.#host = host;
    this.#exec = exec;
    this.#bwrap = bwrap;
    this.#hide = hide;
    this.#chunksDir = o.chunksDir;
    this.#etcDir = `${o.chunksDir}/.etc`;
    this.#cold = o.cold ?? false;
    this.#log = o.log;
    this.#warm = Array.from({ length: o.slots }, () => null);
    this.#ending = Array.from({ length: o.slots }, () => Promise.resolve());
  }

  /** Unmounts chunk tmpfs left below `chunksDir` by a worker that died (before it is wiped). */
  static unmountStale(chunksDir: string): void {
    for (const p of mountsBelow(chunksDir)) unmount(p);
  }

  /** Claims the slots' uids, makes their cgroups and directories; throws SandboxError (or
   * CgroupError) saying what the host lacks. */
  static async setUp(o: ChunkSandboxOptions): Promise<ChunkSandbox> {
    const bwrap = findOnPath("bwrap");
    if (!bwrap) {
      throw new SandboxError(
        "bwrap (Debian package bubblewrap) not found: run scripts/bootstrap.sh, or start the " +
          "worker with --no-sandbox on a trusted cluster",
      );
    }
    if (Deno.uid() !== 0) {
      throw new SandboxError(
        `the sandbox needs the worker to run as root (uid ${Deno.uid()}): it mounts each ` +
          "chunk's tmpfs, writes cgroups and starts chunks as per-slot uids",
      );
    }
    const exec = await execHelperPath();
    const name = `dsys-${o.nodeHex.slice(0, 12)}`;
    const claims = HostClaims.claim(
      o.lockDir ?? DEFAULT_LOCK_DIR,
      name,
      o.slots,
      o.uids ?? { first: SANDBOX.uidFirst, count: SANDBOX.uidCount },
    );
    let cgroups: WorkerCgroups;
    try {
      cgroups = WorkerCgroups.setUp(o.nodeHex, o.slots, (n) => claims.isStale(n));
    } catch (e) {
      claims.release();
      throw e;
    }
    const host = probeHost();
    // Hide what lies inside a directory the sandbox shows (keys are 0600 and the chunk's uid
    // could not read them anyway; this keeps even their names and sizes out).
    const shown = [...host.system.filter((e) => e.symlink === null).map((e) => e.path)];
    const hide: { path: string; dir: boolean }[] = [];
    for (const h of o.hide) {
      const abs = (() => {
        try {
          return Deno.realPathSync(h);
        } catch {
          return null;
        }
      })();
      if (abs && shown.some((d) => abs.startsWith(d + "/"))) {
        hide.push({ path: abs, dir: Deno.statSync(abs).isDirectory });
      }
    }
    for (let i = 0; i < o.slots; i++) {
      Deno.mkdirSync(`${o.chunksDir}/slot-${i}/view/fs`, { recursive: true });
    }
    const etc = buildEtc(`${o.chunksDir}/.etc`, claims.uids);
    o.log.info("sandbox ready", {
      bwrap,
      exec,
      uids: claims.uids.join(","),
      systemDirs: SYSTEM_DIRS.length,
      etcEntries: etc,
      limits: o.policy,
      warm: !o.cold,
    });
    const sb = new ChunkSandbox(o, claims, cgroups, host, exec, bwrap, hide);
    // Warm slots up front, so the first chunks do not wait for them.
    if (!sb.#cold) { for (let i = 0; i < o.slots; i++) await sb.#warmSlot(i); }
    return sb;
  }

  /** Slot `slot`'s warm sandbox, started (again) if need be; null when it cannot start (the
   * chunk then runs cold, and the next chunk tries again). */
  async #warmSlot(slot: number): Promise<WarmSlot | null> {
    const w = this.#warm[slot];
    if (w?.alive) return w;
    if (w) {
      w.close();
      await w.exited();
      this.#warm[slot] = null;
    }
    const cg = this.#cgroups.slots[slot];
    try {
      const started = await WarmSlot.start({
        dir: `${this.#chunksDir}/slot-${slot}`,
        argv: (viewDir) =>
          slotArgv({
            exec: this.#exec,
            bwrap: this.#bwrap,
            cgroupProcs: cg.procsFiles(),
            system: this.#host.system,
            hide: this.#hide,
            etcDir: this.#etcDir,
            viewDir,
            uid: this.uid(slot),
          }),
        cgroup: cg,
        log: this.#log,
      });
      this.#warm[slot] = started;
      return started;
    } catch (e) {
      this.#log.warn("warm slot could not start; its chunks run in sandboxes of their own", {
        slot,
        error: e,
      });
      await cg.reap().catch(() => {});
      return null;
    }
  }

  /** The uid of slot `i`'s chunks. */
  uid(slot: number): number {
    return this.#claims.uids[slot];
  }

  /** Prepares slot `slot` for a chunk with `limits`: a fresh tmpfs, the limits in its cgroup,
   * and its warm sandbox unless the chunk runs cold (host network, `--cold-sandbox`, or the warm
   * one would not start). No process of an earlier chunk may be left in the slot. Throws. */
  async begin(slot: number, limits: ChunkLimits): Promise<ChunkRun> {
    await this.#ending[slot];
    const dir = `${this.#chunksDir}/slot-${slot}`;
    const cg = this.#cgroups.slots[slot];
    let warm: WarmSlot | null = null;
    if (!this.#cold && limits.network === NetworkMode.Loopback) warm = await this.#warmSlot(slot);
    else if (this.#warm[slot]) {
      // A chunk of its own in this slot: the warm sandbox goes (the cgroup must hold the cold
      // chunk alone), and is started again for the slot's next loopback chunk.
      this.#warm[slot]!.close();
      await this.#warm[slot]!.exited();
      this.#warm[slot] = null;
      await cg.reap();
    }
    const own = warm?.ownPids ?? [];
    if (cg.procs().some((p) => !own.includes(p))) {
      throw new SandboxError(`slot ${slot} still has processes of an earlier chunk`);
    }
    const fs = new ChunkFs(`${dir}/view/fs`, `${dir}/status`);
    fs.mount(limits.diskBytes, this.uid(slot));
    try {
      cg.apply(limits.memoryBytes, limits.maxProcs + SANDBOX.overheadProcs);
    } catch (e) {
      fs.unmount();
      throw e;
    }
    return new ChunkRun(this, slot, dir, fs, cg, limits, warm);
  }

  /** argv of a chunk of `run` (sandbox.ts `sandboxArgv`). */
  argv(run: ChunkRun, program: string, args: string[], inputDir: string | null): string[] {
    return sandboxArgv({
      exec: this.#exec,
      bwrap: this.#bwrap,
      cgroupProcs: run.cgroup.procsFiles(),
      host: this.#host,
      hide: this.#hide,
      uid: this.uid(run.slot),
      program,
      args,
      inputDir,
      outDir: run.fs.out,
      tmpDir: run.fs.tmp,
      etcDir: this.#etcDir,
      network: run.limits.network,
      cpuTimeMs: run.limits.cpuTimeMs,
    });
  }

  /** @internal Records slot `slot`'s chunk's unmounts (ChunkRun.end). */
  _ending(slot: number, p: Promise<void>): void {
    this.#ending[slot] = p;
  }

  /** Kills every slot's processes, removes the cgroups and drops the host claims. */
  async close(): Promise<void> {
    await Promise.allSettled(this.#ending);
    for (const w of this.#warm) w?.close();
    await Promise.all(this.#warm.map((w) => w?.exited()));
    await this.#cgroups.close();
    this.#claims.release();
  }
}

/** One chunk in a slot's sandbox. */
export class ChunkRun {
  /** Limit that the watch found exceeded while the chunk ran (it was stopped for it). */
  hit: LimitHit | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Made by ChunkSandbox.begin. */
  constructor(
    readonly sandbox: ChunkSandbox,
    readonly slot: number,
    readonly dir: string,
    readonly fs: ChunkFs,
    readonly cgroup: SlotCgroup,
    readonly limits: ChunkLimits,
    /** The slot's warm sandbox the chunk runs in; null: a sandbox of its own. */
    readonly warm: WarmSlot | null,
  ) {}

  /** Starts the chunk in the slot's warm sandbox: its input directory and program mounted into
   * the slot's view, then the request. Only when `warm` is set. */
  async startWarm(
    program: string,
    args: string[],
    inputDir: string | null,
    env: Record<string, string>,
    timeLimitMs: number,
  ): Promise<ProgramRun> {
    const w = this.warm!;
    this.#mountedChunk = true;
    await w.mountChunk(inputDir, program);
    return w.run({
      args,
      env,
      cpuSecs: this.limits.cpuTimeMs > 0 ? Math.ceil(this.limits.cpuTimeMs / 1000) : 0,
      timeLimitMs,
    });
  }

  #mountedChunk = false;

  /** The runner's part: argv, status file, how to kill and reap. */
  runSpec(program: string, args: string[], inputDir: string | null): SandboxRun {
    return {
      argv: this.sandbox.argv(this, program, args, inputDir),
      statusPath: this.fs.status,
      killAll: () => this.cgroup.killAll(),
      reap: () => this.cgroup.reap(),
    };
  }

  /** Reads the chunk's counters every SANDBOX.pollMs while it runs and calls `stop` once it
   * went over a limit (a fork bomb held at its pids limit would otherwise spin until its time
   * limit; a process the OOM killer took leaves the rest of the chunk running). */
  watch(stop: () => void): void {
    this.#timer = setInterval(() => {
      if (this.hit) return;
      try {
        this.hit = limitFailure(
          { ...this.cgroup.counters(), diskFull: this.fs.full(), signal: 0 },
          this.limits,
        );
      } catch {
        return; // a counter file unreadable for a moment: the final check still runs
      }
      if (this.hit) stop();
    }, SANDBOX.pollMs);
  }

  /** Stops the watch; the limit the chunk went over, from the watch or the final counters. */
  finish(signal: number): LimitHit | null {
    clearInterval(this.#timer);
    if (this.hit) return this.hit;
    return limitFailure(
      { ...this.cgroup.counters(), diskFull: this.fs.full(), signal },
      this.limits,
    );
  }

  /** Makes the chunk's tmpfs read-only (after the chunk ended; before its outputs are read). */
  seal(): void {
    this.fs.seal();
  }

  /**
   * Unmounts the tmpfs (after the upload) and the chunk's view mounts, in the background: the
   * slot's next chunk waits for it (ChunkSandbox.begin). An unmount that fails shows there (the
   * slot's next chunk fails with it) and in `log`.
   */
  end(log: Logger): void {
    clearInterval(this.#timer);
    const mounted = this.#mountedChunk;
    this.#mountedChunk = false;
    const done = (async () => {
      if (mounted) await this.warm?.unmountChunk();
      await this.fs.unmountAsync();
    })();
    done.catch((e) =>
      log.error("chunk tmpfs could not be unmounted", { slot: this.slot, error: e })
    );
    this.sandbox._ending(this.slot, done);
  }
}
