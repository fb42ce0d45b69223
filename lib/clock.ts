/**
 * The time a node's I/O shell sees: a monotonic clock, the wall clock and timers, behind one
 * interface so that the deterministic simulator (tests/sim/) can run the real shells on virtual
 * time. Production code takes a {@link Clock} (default {@link systemClock}) instead of calling
 * `performance.now`, `Date.now` or `setTimeout` itself.
 * @module
 */

/**
 * A timer handle, as returned by {@link Clock.setTimeout} and {@link Clock.setInterval}: the
 * runtime's own handle for {@link systemClock}, a number for the simulator's clock.
 */
export type TimerId = ReturnType<typeof setTimeout> | number;

/** Time and timers. */
export interface Clock {
  /** Monotonic milliseconds (never goes back; only differences mean anything). */
  monotonic(): number;
  /** Wall-clock milliseconds since the Unix epoch (may jump). */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): TimerId;
  /** Calls `fn` every `ms` milliseconds until cleared. */
  setInterval(fn: () => void, ms: number): TimerId;
  /** Cancels a timeout (undefined: nothing). */
  clearTimeout(id: TimerId | undefined): void;
  /** Cancels an interval (undefined: nothing). */
  clearInterval(id: TimerId | undefined): void;
}

/** The process's clock and timers. */
export const systemClock: Clock = {
  monotonic: () => performance.now(),
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearTimeout: (id) => clearTimeout(id as ReturnType<typeof setTimeout> | undefined),
  clearInterval: (id) => clearInterval(id as ReturnType<typeof setInterval> | undefined),
};

/** Resolves after `ms` milliseconds of `clock`'s time. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}
