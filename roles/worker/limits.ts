/**
 * Per-chunk resource limits, in one place: what a job may ask for at submit (`dsys submit
 * --memory --procs --cpu-time --disk --network`), the worker's defaults for what it did not ask
 * for and the maxima it allows (`--default-* / --max-*`, `--allow-host-network`), and the fixed
 * numbers of the sandbox that enforces them (roles/worker/sandbox.ts). The relations between
 * them are asserted when this module loads, so an edit that breaks one fails every test.
 * @module
 */

import type { LimitFields } from "../../wire/mod.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** `network` of a job: what its chunks may reach (wire value, u8). */
export const NetworkMode = {
  /** A network namespace of its own with only loopback: nothing of the cluster or the world. */
  Loopback: 0,
  /** The worker's network, for jobs that must reach the outside; only where the worker allows. */
  Host: 1,
} as const;
/** Any network mode. */
export type NetworkMode = typeof NetworkMode[keyof typeof NetworkMode];

/** What a job asks for per chunk: the limit fields of job_submit / job_dispatch /
 * worker_request (wire/messages.ts); 0 or absent = the worker's default. */
export type LimitRequest = LimitFields;

/** The limits a chunk runs with. */
export interface ChunkLimits {
  /** Bytes of memory (cgroup memory limit; swap is not allowed on top). */
  memoryBytes: number;
  /** Tasks (processes and threads) of the program (cgroup pids limit, minus the sandbox's own). */
  maxProcs: number;
  /** CPU ms of all its processes; 0 = none beyond the wall-clock time limit. */
  cpuTimeMs: number;
  /** Size of the chunk's tmpfs (output dir, TMPDIR, stdout, stderr). */
  diskBytes: number;
  /** What the chunk's network namespace is. */
  network: NetworkMode;
}

/** A worker's policy: defaults for what a job leaves at 0, and the most it may ask for. */
export interface LimitPolicy {
  /** Limits of a chunk whose job asked for nothing. */
  defaults: Omit<ChunkLimits, "network">;
  /** The most a job may ask for (cpuTimeMs 0 = no maximum). */
  maxima: Omit<ChunkLimits, "network">;
  /** Whether a job may ask for NetworkMode.Host. */
  allowHostNetwork: boolean;
}

/** Defaults and maxima of a worker started without `--default-*` / `--max-*` flags. */
export const DEFAULT_POLICY: Readonly<LimitPolicy> = Object.freeze({
  defaults: Object.freeze({
    memoryBytes: 1 * GiB,
    maxProcs: 256,
    cpuTimeMs: 0,
    diskBytes: 256 * MiB,
  }),
  maxima: Object.freeze({
    memoryBytes: 16 * GiB,
    maxProcs: 4096,
    cpuTimeMs: 0,
    diskBytes: 4 * GiB,
  }),
  allowHostNetwork: false,
});

/** The fixed numbers of the sandbox (roles/worker/sandbox.ts, roles/worker/cgroup.ts). */
export const SANDBOX = Object.freeze({
  /** Processes of the sandbox itself in the chunk's cgroup, added to the pids limit so that
   * `maxProcs` is at least what the program gets: a warm slot's bwrap and dsys-exec and the
   * chunk's two (its namespaces' creator and init); a sandbox of its own has three (bwrap,
   * bwrap's init, dsys-exec). */
  overheadProcs: 4,
  /** Smallest memory limit a job may set: bwrap and a shell need a few MiB. */
  minMemoryBytes: 16 * MiB,
  /** Smallest tmpfs: room for stdout, stderr and the status line. */
  minDiskBytes: 64 * 1024,
  /** Inodes of a chunk's tmpfs (files and directories it may create). */
  tmpfsInodes: 65_536,
  /** How often the worker reads a running chunk's counters (OOM kills, refused forks, CPU
   * time, a full tmpfs) to stop it as soon as it went over a limit, ms. */
  pollMs: 100,
  /** Longest wait for a killed chunk's cgroup to empty before the worker gives up on the slot. */
  killDeadlineMs: 10_000,
  /** Default range of per-slot uids (and gids), far from system, user and subuid ranges. */
  uidFirst: 2_000_000_000,
  uidCount: 65_536,
});

/** Why a job's request cannot run here (errors are values: the worker fails the chunk with it). */
export interface LimitRefusal {
  /** Which limit. */
  limit: keyof LimitRequest;
  /** What the job asked for. */
  asked: number;
  /** The most this worker allows (0 for network: none). */
  allowed: number;
  /** A sentence for `dsys status`. */
  reason: string;
}

/** The limits of a chunk, from its job's request and the worker's policy; a request beyond the
 * policy is refused rather than silently lowered (the job would fail later, less clearly). */
export function resolveLimits(
  req: LimitRequest,
  policy: LimitPolicy,
): { ok: true; limits: ChunkLimits } | { ok: false; refusal: LimitRefusal } {
  const refuse = (limit: keyof LimitRequest, asked: number, allowed: number, reason: string) => ({
    ok: false as const,
    refusal: { limit, asked, allowed, reason },
  });
  const pick = (k: "memoryBytes" | "maxProcs" | "cpuTimeMs" | "diskBytes") => req[k] || 0;
  const out: ChunkLimits = {
    memoryBytes: pick("memoryBytes") || policy.defaults.memoryBytes,
    maxProcs: pick("maxProcs") || policy.defaults.maxProcs,
    cpuTimeMs: pick("cpuTimeMs") || policy.defaults.cpuTimeMs,
    diskBytes: pick("diskBytes") || policy.defaults.diskBytes,
    network: NetworkMode.Loopback,
  };
  for (const k of ["memoryBytes", "maxProcs", "cpuTimeMs", "diskBytes"] as const) {
    const max = policy.maxima[k];
    if (max > 0 && out[k] > max) {
      return refuse(k, out[k], max, `the job asks for ${k} ${out[k]}, this worker allows ${max}`);
    }
  }
  if (out.memoryBytes < SANDBOX.minMemoryBytes) {
    return refuse(
      "memoryBytes",
      out.memoryBytes,
      SANDBOX.minMemoryBytes,
      `memoryBytes ${out.memoryBytes} is below the least a sandbox needs (${SANDBOX.minMemoryBytes})`,
    );
  }
  if (out.diskBytes < SANDBOX.minDiskBytes) {
    return refuse(
      "diskBytes",
      out.diskBytes,
      SANDBOX.minDiskBytes,
      `diskBytes ${out.diskBytes} is below the least a chunk needs (${SANDBOX.minDiskBytes})`,
    );
  }
  const net = req.network ?? NetworkMode.Loopback;
  if (net === NetworkMode.Host) {
    if (!policy.allowHostNetwork) {
      return refuse(
        "network",
        net,
        0,
        "the job asks for the host network; this worker allows loopback only " +
          "(start it with --allow-host-network to allow it)",
      );
    }
    out.network = NetworkMode.Host;
  } else if (net !== NetworkMode.Loopback) {
    return refuse("network", net, 0, `unknown network mode ${net}`);
  }
  return { ok: true, limits: out };
}

/** Checks a policy's relations; returns what is wrong ("" when it holds). */
export function checkPolicy(p: LimitPolicy): string {
  const d = p.defaults, m = p.maxima;
  for (const k of ["memoryBytes", "maxProcs", "diskBytes"] as const) {
    if (!(Number.isSafeInteger(d[k]) && d[k] > 0)) return `default ${k} must be > 0`;
    if (!(Number.isSafeInteger(m[k]) && m[k] >= d[k])) return `max ${k} must be >= its default`;
  }
  if (m.cpuTimeMs > 0 && !(d.cpuTimeMs > 0 && d.cpuTimeMs <= m.cpuTimeMs)) {
    return "with a max cpuTimeMs, the default must be > 0 and <= it";
  }
  if (d.memoryBytes < SANDBOX.minMemoryBytes) return "default memoryBytes below the sandbox's";
  if (d.diskBytes < SANDBOX.minDiskBytes) return "default diskBytes below the sandbox's";
  // A chunk's tmpfs pages are charged to its memory cgroup: a disk quota above the memory limit
  // would make a chunk that fills its disk end with OOM rather than OUTPUT_QUOTA.
  if (d.diskBytes > d.memoryBytes) return "default diskBytes must be <= default memoryBytes";
  return "";
}

const policyProblem = checkPolicy(DEFAULT_POLICY);
if (policyProblem) throw new Error(`limits.ts: DEFAULT_POLICY: ${policyProblem}`);
if (SANDBOX.uidFirst + SANDBOX.uidCount >= 2 ** 31) {
  throw new Error("limits.ts: sandbox uids must stay below 2^31 (signed uid_t in some tools)");
}
if (SANDBOX.pollMs * 10 > SANDBOX.killDeadlineMs) {
  throw new Error("limits.ts: the kill deadline must be many poll periods");
}
