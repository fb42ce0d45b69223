/**
 * Helpers shared by the storage tests: content ids, random file bytes, and running the system
 * commands that make a small real filesystem (mount needs root).
 * @module
 */
import { createHash } from "node:crypto";
import type { Uuid } from "../wire/mod.ts";

/** The content id of `b`: the first 16 bytes of its SHA-256. */
export function idOf(b: Uint8Array): Uuid {
  return new Uint8Array(createHash("sha256").update(b).digest()).slice(0, 16);
}

/** `n` random bytes (in 64 KiB pieces: getRandomValues' limit). */
export function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
}

/** True where the tests may mount a filesystem (Linux, as root). */
export const canMount = Deno.build.os === "linux" && Deno.uid() === 0;

/** Runs `cmd args…` within a 30 s deadline; throws with its exit code and stderr on failure. */
export async function run(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000), // killed (and failing) past the deadline
  }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")}: exit ${out.code}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}
