/**
 * `dsys submit`'s per-chunk limit flags: `--memory SIZE`, `--procs N`, `--cpu-time DURATION`,
 * `--disk SIZE`, `--network none|host` (sizes as lib/bytes.ts reads them, durations as
 * lib/duration.ts). Absent = the workers' defaults; what each bounds: roles/worker/limits.ts.
 * @module
 */
import { parseBytes } from "../lib/bytes.ts";
import { parseDuration } from "../lib/duration.ts";
import type { LimitFields } from "../wire/mod.ts";
import { ClientError } from "./commands.ts";

/** parseArgs option definitions (spread into `dsys submit`'s). */
export const SUBMIT_LIMIT_FLAGS = {
  memory: { type: "string" },
  procs: { type: "string" },
  "cpu-time": { type: "string" },
  disk: { type: "string" },
  network: { type: "string" },
} as const;

/** The limit fields the flags ask for; throws ClientError naming a bad flag. */
export function limitFlagsOf(values: Record<string, unknown>): LimitFields {
  const out: LimitFields = {};
  const get = (k: keyof typeof SUBMIT_LIMIT_FLAGS) => values[k] as string | undefined;
  const wrap = <T>(flag: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw new ClientError(`--${flag}: ${(e as Error).message}`);
    }
  };
  const memory = get("memory"), procs = get("procs"), cpu = get("cpu-time"), disk = get("disk");
  if (memory !== undefined) out.memoryBytes = wrap("memory", () => parseBytes(memory));
  if (disk !== undefined) out.diskBytes = wrap("disk", () => parseBytes(disk));
  if (cpu !== undefined) out.cpuTimeMs = wrap("cpu-time", () => parseDuration(cpu));
  if (procs !== undefined) {
    const n = Number(procs);
    if (!Number.isSafeInteger(n) || n < 1 || n > 0xffffffff) {
      throw new ClientError(`--procs must be a whole number >= 1, got ${procs}`);
    }
    out.maxProcs = n;
  }
  const net = get("network");
  if (net !== undefined) {
    if (net !== "none" && net !== "host") {
      throw new ClientError(`--network must be none or host, got ${net}`);
    }
    out.network = net === "host" ? 1 : 0;
  }
  return out;
}
