/**
 * Waiting in tests. Every wait has a deadline and fails loudly, naming what it waited for;
 * nothing here measures speed. Deadlines only turn a hang into a failure, so they are generous:
 * a loaded machine is slow, not wrong (speed is for `deno task bench`).
 * @module
 */
import { ChunkState, type JobStatusResponse, type Uuid, uuidToHex } from "../wire/mod.ts";
import type { DsysClient } from "../client/commands.ts";

/** Options of {@linkcode waitFor}. */
export interface WaitOptions {
  /** Give up (throw) after this long, ms. Default 30 s. */
  timeoutMs?: number;
  /** Pause between checks, ms. Default 20. */
  intervalMs?: number;
  /** Appended to the timeout error: what was last seen. */
  detail?: () => string;
}

/** Resolves with `p`, or rejects naming `what` if it does not settle within `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Checks `cond` until it returns a truthy value and resolves with that value; throws naming
 * `what` once `timeoutMs` have passed (a check still running then gets one more second).
 */
export async function waitFor<T>(
  what: string,
  cond: () => T | Promise<T>,
  opts: WaitOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const end = performance.now() + timeoutMs;
  const fail = () =>
    new Error(
      `timed out after ${timeoutMs} ms waiting for ${what}` +
        (opts.detail ? ` (${opts.detail()})` : ""),
    );
  for (;;) {
    const left = end - performance.now();
    const v = await within(Math.max(left, 0) + 1000, what, Promise.resolve(cond()))
      .catch((e) => {
        if (performance.now() >= end) throw fail();
        throw e;
      });
    if (v) return v;
    if (performance.now() >= end) throw fail();
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}

/** Polls a job's status until it succeeded or failed; throws with the last status on timeout. */
export async function waitForJob(
  client: DsysClient,
  job: Uuid,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<JobStatusResponse> {
  let last: JobStatusResponse | undefined;
  return await waitFor(`job ${uuidToHex(job)} to finish`, async () => {
    last = await client.status(job);
    const final = last.state === ChunkState.Succeeded || last.state === ChunkState.Failed ||
      last.state === ChunkState.Cancelled;
    return final ? last : null;
  }, {
    timeoutMs: opts.timeoutMs ?? 120_000,
    intervalMs: opts.intervalMs ?? 50,
    detail: () =>
      last
        ? `last status: state ${last.state}, of ${last.numChunks} chunks ${last.done} done, ` +
          `${last.failed} failed, ${last.running} running`
        : "no status yet",
  }) as JobStatusResponse;
}
