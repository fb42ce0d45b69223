/**
 * The worker's sandbox and limit flags: `--no-sandbox`, `--cold-sandbox` (every chunk in a
 * sandbox of its own rather than in its slot's warm one), `--sandbox-uids FIRST-LAST`,
 * `--allow-host-network`, and the per-chunk defaults and maxima `--default-memory`,
 * `--max-memory`, `--default-procs`, `--max-procs`, `--default-cpu-time`, `--max-cpu-time`,
 * `--default-disk`, `--max-disk` (sizes as lib/bytes.ts reads them, times as lib/duration.ts).
 * @module
 */

import { parseBytes } from "../../lib/bytes.ts";
import { parseDuration } from "../../lib/duration.ts";
import { checkPolicy, DEFAULT_POLICY, type LimitPolicy } from "./limits.ts";
import { parseUidRange, SandboxError } from "./sandbox.ts";

/** parseArgs option definitions of the sandbox flags (spread into the worker's). */
export const SANDBOX_FLAGS = {
  "no-sandbox": { type: "boolean", default: false },
  "cold-sandbox": { type: "boolean", default: false },
  "sandbox-uids": { type: "string" },
  "allow-host-network": { type: "boolean", default: false },
  "default-memory": { type: "string" },
  "max-memory": { type: "string" },
  "default-procs": { type: "string" },
  "max-procs": { type: "string" },
  "default-cpu-time": { type: "string" },
  "max-cpu-time": { type: "string" },
  "default-disk": { type: "string" },
  "max-disk": { type: "string" },
} as const;

/** The sandbox part of the worker's options. */
export interface SandboxOptions {
  /** False with `--no-sandbox`. */
  sandbox: boolean;
  /** `--cold-sandbox`: no warm slot sandboxes (roles/worker/warm_slot.ts). */
  coldSandbox: boolean;
  /** `--sandbox-uids`, when given. */
  sandboxUids?: { first: number; count: number };
  /** Defaults and maxima of chunk limits. */
  limits: LimitPolicy;
}

/** Reads the sandbox flags out of parsed values; throws SandboxError naming the flag. */
export function sandboxOptions(values: Record<string, unknown>): SandboxOptions {
  const str = (k: keyof typeof SANDBOX_FLAGS) => values[k] as string | undefined;
  const size = (k: keyof typeof SANDBOX_FLAGS, dflt: number): number => {
    const v = str(k);
    if (v === undefined) return dflt;
    try {
      return parseBytes(v);
    } catch (e) {
      throw new SandboxError(`worker: --${k}: ${(e as Error).message}`);
    }
  };
  const count = (k: keyof typeof SANDBOX_FLAGS, dflt: number): number => {
    const v = str(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new SandboxError(`worker: --${k} must be an integer >= 1, got ${v}`);
    }
    return n;
  };
  const time = (k: keyof typeof SANDBOX_FLAGS, dflt: number): number => {
    const v = str(k);
    if (v === undefined) return dflt;
    if (v === "0" || v === "none") return 0;
    try {
      return parseDuration(v);
    } catch (e) {
      throw new SandboxError(`worker: --${k}: ${(e as Error).message} (or none)`);
    }
  };
  const d = DEFAULT_POLICY.defaults, m = DEFAULT_POLICY.maxima;
  const limits: LimitPolicy = {
    defaults: {
      memoryBytes: size("default-memory", d.memoryBytes),
      maxProcs: count("default-procs", d.maxProcs),
      cpuTimeMs: time("default-cpu-time", d.cpuTimeMs),
      diskBytes: size("default-disk", d.diskBytes),
    },
    maxima: {
      memoryBytes: size("max-memory", m.memoryBytes),
      maxProcs: count("max-procs", m.maxProcs),
      cpuTimeMs: time("max-cpu-time", m.cpuTimeMs),
      diskBytes: size("max-disk", m.diskBytes),
    },
    allowHostNetwork: values["allow-host-network"] === true,
  };
  const problem = checkPolicy(limits);
  if (problem) throw new SandboxError(`worker: chunk limits: ${problem}`);
  const uids = str("sandbox-uids");
  return {
    sandbox: values["no-sandbox"] !== true,
    coldSandbox: values["cold-sandbox"] === true,
    ...(uids !== undefined ? { sandboxUids: parseUidRange(uids) } : {}),
    limits,
  };
}
