/**
 * Kernel-enforced limits of a worker's chunks: one cgroup per slot for memory, processes and
 * CPU accounting, on cgroup v1 (a hierarchy per controller, as on this project's CI machine) or
 * v2 (the unified hierarchy), chosen per controller by what the host mounts.
 *
 * Layout: under the worker's own cgroup of each hierarchy (read from /proc/self/cgroup, so a
 * service manager's delegation and accounting keep holding), `dsys-<node>/slot-<i>`. A slot's
 * cgroup is reused by its chunks: its limits are rewritten before each chunk, and the event
 * counters (OOM kills, refused forks, CPU time) are read as differences from what they were at
 * the chunk's start. The chunk's processes enter it before bwrap starts (build/dsys-exec
 * `enter`), so nothing of a chunk runs outside it.
 *
 * Pure parts (which hierarchy, which files) are functions of /proc text, unit-tested with the
 * layouts of v1, v2 and hybrid hosts; `WorkerCgroups` is the thin I/O shell.
 * @module
 */

import { killPid } from "./sys.ts";
import { SANDBOX } from "./limits.ts";

/** The resources the worker limits or measures, and the controller each needs. */
export type Resource = "memory" | "pids" | "cpu";

/** Where one resource's cgroups live. */
export interface Hierarchy {
  /** 1 or 2. */
  version: 1 | 2;
  /** The worker's own cgroup directory in that hierarchy (mount point + its path). */
  self: string;
}

/** A host's cgroup layout for the worker, or why it cannot limit chunks. */
export type CgroupLayout =
  | { ok: true; hierarchies: Record<Resource, Hierarchy>; v2Mount: string | null }
  | { ok: false; error: string };

/** The v1 controller each resource uses (v2: memory, pids; CPU time is v2's cpu.stat). */
const V1_CONTROLLER: Record<Resource, string> = { memory: "memory", pids: "pids", cpu: "cpuacct" };

/** One mount of /proc/self/mountinfo that is a cgroup filesystem. */
interface CgroupMount {
  version: 1 | 2;
  /** Mount point. */
  point: string;
  /** Root of the hierarchy this mount shows (not "/" inside some containers). */
  root: string;
  /** v1: controllers of the hierarchy. */
  controllers: string[];
}

/** Decodes mountinfo's octal escapes (`\040` for a space). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** The cgroup mounts listed in /proc/self/mountinfo text. */
export function cgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const post = line.slice(sep + 3).split(" ");
    const fstype = post[0];
    if (fstype !== "cgroup" && fstype !== "cgroup2") continue;
    const opts = (post[2] ?? "").split(",");
    out.push({
      version: fstype === "cgroup2" ? 2 : 1,
      point: unescape(pre[4]),
      root: unescape(pre[3]),
      controllers: fstype === "cgroup" ? opts.filter((o) => !o.includes("=") && o !== "rw") : [],
    });
  }
  return out;
}

/** The process's cgroup path per v1 controller and for v2 ("" key), from /proc/self/cgroup. */
export function selfPaths(procSelfCgroup: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of procSelfCgroup.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === "0" && m[2] === "") out.set("", m[3]);
    else for (const ctrl of m[2].split(",")) out.set(ctrl, m[3]);
  }
  return out;
}

/** Joins a mount point, the mount's root and the process's path into its cgroup directory. */
function dirOf(m: CgroupMount, path: string): string | null {
  // The path is relative to the hierarchy's root; a mount of a sub-tree shows only paths under
  // its root (a process outside it cannot be found through this mount).
  const root = m.root === "/" ? "" : m.root;
  if (root && path !== root && !path.startsWith(root + "/")) return null;
  const rel = path.slice(root.length);
  return (m.point + (rel === "/" ? "" : rel)).replace(/\/+$/, "") || "/";
}

/**
 * Picks, per resource, the hierarchy that has its controller: a v1 hierarchy when one is
 * mounted with it (hybrid hosts keep controllers there), else v2 when `v2Controllers` (the
 * text of the v2 cgroup.controllers file of the worker's own cgroup's parent level) offers it.
 * CPU time needs no v2 controller: every v2 cgroup has cpu.stat.
 */
export function cgroupLayout(
  mountinfo: string,
  procSelfCgroup: string,
  v2Controllers: (dir: string) => string | null,
): CgroupLayout {
  const mounts = cgroupMounts(mountinfo);
  const paths = selfPaths(procSelfCgroup);
  const v2 = mounts.find((m) => m.version === 2);
  const v2Path = paths.get("");
  const v2Self = v2 && v2Path !== undefined ? dirOf(v2, v2Path) : null;
  const offered = v2Self ? (v2Controllers(v2Self) ?? "").split(/\s+/) : [];
  const hierarchies = {} as Record<Resource, Hierarchy>;
  const missing: string[] = [];
  for (const r of ["memory", "pids", "cpu"] as const) {
    const ctrl = V1_CONTROLLER[r];
    const v1 = mounts.find((m) => m.version === 1 && m.controllers.includes(ctrl));
    const p = paths.get(ctrl);
    const v1Self = v1 && p !== undefined ? dirOf(v1, p) : null;
    if (v1Self) hierarchies[r] = { version: 1, self: v1Self };
    else if (v2Self && (r === "cpu" || offered.includes(r))) {
      hierarchies[r] = { version: 2, self: v2Self };
    } else missing.push(ctrl);
  }
  if (missing.length > 0) {
    return {
      ok: false,
      error: `no cgroup hierarchy with the ${missing.join(", ")} controller(s) is mounted for ` +
        "this process (cgroup v1 or v2); the sandbox needs them to limit chunks " +
        "(or run the worker with --no-sandbox on a trusted cluster)",
    };
  }
  return { ok: true, hierarchies, v2Mount: v2?.point ?? null };
}

/** The files a slot's limits go to, per hierarchy version. */
export function limitFiles(
  version: 1 | 2,
  r: Resource,
): { limit: string[]; counter: string } {
  if (r === "memory") {
    return version === 1
      ? {
        limit: ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        counter: "memory.oom_control",
      }
      : { limit: ["memory.max", "memory.swap.max"], counter: "memory.events" };
  }
  if (r === "pids") return { limit: ["pids.max"], counter: "pids.events" };
  return { limit: [], counter: version === 1 ? "cpuacct.usage" : "cpu.stat" };
}

/** Reads `key value` lines (memory.oom_control, memory.events, pids.events, cpu.stat). */
export function keyedValue(text: string, key: string): number {
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === key) return Number(v) || 0;
  }
  return 0;
}

/** A slot's event counters, cumulative since its cgroup was made. */
export interface CgroupCounters {
  /** Processes the OOM killer killed. */
  oomKills: number;
  /** Forks (and clones) refused by the pids limit. */
  forksRefused: number;
  /** CPU time of all its processes, ms. */
  cpuMs: number;
}

/** Parses the counter files of a slot into numbers. */
export function parseCounters(
  files: {
    memory: { version: 1 | 2; text: string };
    pids: string;
    cpu: { version: 1 | 2; text: string };
  },
): CgroupCounters {
  return {
    // v1 memory.oom_control has `oom_kill N`; v2 memory.events has `oom_kill N` too.
    oomKills: keyedValue(files.memory.text, "oom_kill"),
    forksRefused: keyedValue(files.pids, "max"),
    cpuMs: files.cpu.version === 1
      ? Number(files.cpu.text.trim()) / 1e6 // cpuacct.usage: ns
      : keyedValue(files.cpu.text, "usage_usec") / 1e3,
  };
}

/** Raised when the cgroups cannot be set up or written (the message names the file). */
export class CgroupError extends Error {
  /** Creates an error about `path`. */
  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(`cgroup ${path}: ${message}`, options);
    this.name = "CgroupError";
  }
}

function write(path: string, value: string): void {
  try {
    Deno.writeTextFileSync(path, value);
  } catch (e) {
    throw new CgroupError(path, `cannot write ${JSON.stringify(value)}: ${e}`, { cause: e });
  }
}

function read(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    throw new CgroupError(path, `cannot read: ${e}`, { cause: e });
  }
}

/** Pids listed in a cgroup.procs file (empty when it is gone). */
function procsOf(path: string): number[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return [];
  }
  return text.split("\n").filter((s) => s).map(Number);
}

/** Removes a cgroup directory tree bottom-up (a cgroup with processes cannot be removed). */
function removeTree(dir: string): void {
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  for (const e of entries) if (e.isDirectory) removeTree(`${dir}/${e.name}`);
  for (const pid of procsOf(`${dir}/cgroup.procs`)) killPid(pid, 9);
  try {
    Deno.removeSync(dir);
  } catch { /* still has processes dying: the next start removes it */ }
}

/** One slot's cgroup in every hierarchy the worker uses. */
export class SlotCgroup {
  /** Directory per resource (the same directory for resources sharing a hierarchy). */
  readonly dirs: Record<Resource, string>;
  #versions: Record<Resource, 1 | 2>;
  #base: CgroupCounters = { oomKills: 0, forksRefused: 0, cpuMs: 0 };
  /** The limits the files hold (written by the last `apply`), null before the first. */
  #applied: { memoryBytes: number; tasks: number } | null = null;

  /** Wraps existing directories; use WorkerCgroups.setUp. */
  constructor(dirs: Record<Resource, string>, versions: Record<Resource, 1 | 2>) {
    this.dirs = dirs;
    this.#versions = versions;
  }

  /** The cgroup.procs files a process writes itself into to join (one per hierarchy). */
  procsFiles(): string[] {
    return [...new Set(Object.values(this.dirs))].map((d) => `${d}/cgroup.procs`);
  }

  /** Pids of the processes in the slot now. */
  procs(): number[] {
    return procsOf(`${this.dirs.pids}/cgroup.procs`);
  }

  /** Sets the limits of the next chunk and takes the counters' baseline. The slot must be
   * empty. `tasks` includes the sandbox's own processes. */
  apply(memoryBytes: number, tasks: number): void {
    // A job's chunks mostly ask for the same limits: the files already hold them (only this
    // worker writes them; the chunks' uids cannot), so only the baseline is taken.
    const a = this.#applied;
    if (a && a.memoryBytes === memoryBytes && a.tasks === tasks) {
      this.#base = this.#raw();
      return;
    }
    this.#applied = null; // unknown until every write below succeeded
    const mem = this.dirs.memory;
    if (this.#versions.memory === 1) {
      // memsw (memory + swap) must stay >= the memory limit at every step: raise memsw first
      // when growing, lower memory first when shrinking. Without swap accounting the file is
      // absent and memory alone is the bound.
      const memsw = `${mem}/memory.memsw.limit_in_bytes`;
      const hasMemsw = exists(memsw);
      const current = Number(read(`${mem}/memory.limit_in_bytes`).trim());
      const v = String(memoryBytes);
      if (memoryBytes >= current) {
        if (hasMemsw) write(memsw, v);
        this.#writeMemoryLimit(`${mem}/memory.limit_in_bytes`, v);
      } else {
        this.#writeMemoryLimit(`${mem}/memory.limit_in_bytes`, v);
        if (hasMemsw) write(memsw, v);
      }
    } else {
      write(`${mem}/memory.max`, String(memoryBytes));
      if (exists(`${mem}/memory.swap.max`)) write(`${mem}/memory.swap.max`, "0");
      // The whole chunk goes when one of its processes is OOM-killed (it failed anyway).
      if (exists(`${mem}/memory.oom.group`)) write(`${mem}/memory.oom.group`, "1");
    }
    write(`${this.dirs.pids}/pids.max`, String(tasks));
    this.#applied = { memoryBytes, tasks };
    this.#base = this.#raw();
  }

  /** v1 refuses a limit below the current usage (EBUSY) until the slot's leftover page cache
   * is reclaimed: force_empty reclaims it (the slot has no processes now). */
  #writeMemoryLimit(path: string, v: string): void {
    try {
      Deno.writeTextFileSync(path, v);
    } catch {
      write(`${this.dirs.memory}/memory.force_empty`, "0");
      write(path, v);
    }
  }

  #raw(): CgroupCounters {
    const m = this.#versions.memory, c = this.#versions.cpu;
    return parseCounters({
      memory: { version: m, text: read(`${this.dirs.memory}/${limitFiles(m, "memory").counter}`) },
      pids: read(`${this.dirs.pids}/pids.events`),
      cpu: { version: c, text: read(`${this.dirs.cpu}/${limitFiles(c, "cpu").counter}`) },
    });
  }

  /** What the current chunk has done since `apply`. */
  counters(): CgroupCounters {
    const r = this.#raw();
    return {
      oomKills: r.oomKills - this.#base.oomKills,
      forksRefused: r.forksRefused - this.#base.forksRefused,
      cpuMs: r.cpuMs - this.#base.cpuMs,
    };
  }

  /** SIGKILLs every process in the slot. Killing the sandbox's PID-namespace init takes every
   * process of the namespace with it at once, so a fork racing this pass cannot survive it. */
  killAll(): void {
    for (const pid of this.procs()) killPid(pid, 9);
  }

  /** Kills what is left until the slot is empty; throws CgroupError after the deadline. */
  async reap(deadlineMs = SANDBOX.killDeadlineMs): Promise<void> {
    const end = performance.now() + deadlineMs;
    for (let i = 0;; i++) {
      const left = this.procs();
      if (left.length === 0) return;
      for (const pid of left) killPid(pid, 9);
      if (performance.now() > end) {
        throw new CgroupError(this.dirs.pids, `processes ${left.join(",")} survive SIGKILL`);
      }
      // Dying processes leave cgroup.procs once the kernel has torn them down: moments.
      await new Promise((r) => setTimeout(r, Math.min(50, 1 + i)));
    }
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The cgroups of one worker: `dsys-<node>/slot-<i>` under its own cgroup, per hierarchy. */
export class WorkerCgroups {
  /** One per slot, by slot index. */
  readonly slots: SlotCgroup[];
  #parents: string[];

  private constructor(slots: SlotCgroup[], parents: string[]) {
    this.slots = slots;
    this.#parents = parents;
  }

  /**
   * Makes (or re-makes) the worker's cgroups: reads the host's layout, removes what a previous
   * run of this node left (killing leftovers), and creates one cgroup per slot. `staleSibling`
   * says whether a sibling `dsys-*` directory belongs to a worker that is gone (its lock is
   * free), so crashed workers' directories do not pile up. Throws CgroupError.
   */
  static setUp(
    nodeHex: string,
    slots: number,
    staleSibling: (name: string) => boolean,
  ): WorkerCgroups {
    const layout = cgroupLayout(
      Deno.readTextFileSync("/proc/self/mountinfo"),
      Deno.readTextFileSync("/proc/self/cgroup"),
      (dir) => {
        try {
          return Deno.readTextFileSync(`${dir}/cgroup.controllers`);
        } catch {
          return null;
        }
      },
    );
    if (!layout.ok) throw new CgroupError("/proc/self/cgroup", layout.error);
    const name = `dsys-${nodeHex.slice(0, 12)}`;
    const parentOf = {} as Record<Resource, string>;
    const parents = new Set<string>();
    for (const r of ["memory", "pids", "cpu"] as const) {
      const h = layout.hierarchies[r];
      parentOf[r] = `${h.self}/${name}`;
      if (parents.has(parentOf[r])) continue;
      parents.add(parentOf[r]);
      // Siblings of crashed workers (their lock is free), and our own previous run's tree.
      for (const e of safeReadDir(h.self)) {
        if (
          e.isDirectory && e.name.startsWith("dsys-") && (e.name === name || staleSibling(e.name))
        ) {
          removeTree(`${h.self}/${e.name}`);
        }
      }
      try {
        Deno.mkdirSync(parentOf[r]);
      } catch (e) {
        throw new CgroupError(parentOf[r], `cannot create: ${e}`, { cause: e });
      }
      if (h.version === 2) enableV2(h.self, parentOf[r], layout.hierarchies);
    }
    const versions = {
      memory: layout.hierarchies.memory.version,
      pids: layout.hierarchies.pids.version,
      cpu: layout.hierarchies.cpu.version,
    };
    const out: SlotCgroup[] = [];
    for (let i = 0; i < slots; i++) {
      const dirs = {} as Record<Resource, string>;
      for (const r of ["memory", "pids", "cpu"] as const) {
        dirs[r] = `${parentOf[r]}/slot-${i}`;
        if (!exists(dirs[r])) Deno.mkdirSync(dirs[r]);
      }
      out.push(new SlotCgroup(dirs, versions));
    }
    return new WorkerCgroups(out, [...parents]);
  }

  /** Kills every slot's processes and removes the worker's cgroups (at shutdown). */
  async close(): Promise<void> {
    for (const s of this.slots) {
      s.killAll();
      await s.reap().catch(() => {});
    }
    for (const p of this.#parents) removeTree(p);
  }
}

function safeReadDir(dir: string): Deno.DirEntry[] {
  try {
    return [...Deno.readDirSync(dir)];
  } catch {
    return [];
  }
}

/** v2: the controllers must be enabled in every parent's subtree_control down to the slots. A
 * cgroup with processes of its own cannot enable them (the "no internal processes" rule), which
 * is why the worker's cgroups hang below a directory of their own. */
function enableV2(self: string, parent: string, h: Record<Resource, Hierarchy>): void {
  const want = (["memory", "pids"] as const).filter((x) =>
    h[x].version === 2 && h[x].self === self
  );
  if (want.length === 0) return;
  const line = want.map((x) => `+${x}`).join(" ");
  for (const dir of [self, parent]) {
    const have = (() => {
      try {
        return Deno.readTextFileSync(`${dir}/cgroup.subtree_control`).split(/\s+/);
      } catch {
        return [];
      }
    })();
    if (want.every((x) => have.includes(x))) continue;
    try {
      Deno.writeTextFileSync(`${dir}/cgroup.subtree_control`, line);
    } catch (e) {
      throw new CgroupError(
        dir,
        `cannot enable ${line} (cgroup v2 allows that only in a cgroup without processes of ` +
          "its own: run the worker in a delegated cgroup, e.g. a systemd unit with " +
          `Delegate=yes, or with --no-sandbox): ${e}`,
        { cause: e },
      );
    }
  }
}
