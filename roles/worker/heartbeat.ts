/**
 * How often the worker heartbeats: the balancer tells it in the `ok` reply to each
 * worker_register and worker_heartbeat (docs/wire.md, worker_heartbeat), growing the interval
 * with the cluster so that all workers together stay near the rate it can serve. Pure.
 * @module
 */

/** Longest interval a worker accepts from a balancer, ms (a bad value must not silence it). */
export const MAX_TOLD_HEARTBEAT_MS = 60_000;

/**
 * The interval until the next heartbeat, ms: what the balancer told (`told`, the reply's
 * value; null = no reply: the request failed), bounded to [own, MAX_TOLD_HEARTBEAT_MS]. No
 * reply, or 0 (an older balancer, or adaptation off), gives the worker's own interval, so a
 * worker whose balancer went away looks for the next one at its own pace.
 */
export function heartbeatPeriod(ownMs: number, told: number | null): number {
  if (told === null || !Number.isFinite(told) || told <= 0) return ownMs;
  return Math.max(ownMs, Math.min(told, MAX_TOLD_HEARTBEAT_MS));
}
