/**
 * Durations on the command line: `24h`, `10m`, `30s`, `500ms`, `1d`, or several in a row
 * (`1h30m`). A unit is required: a bare number would leave its unit to guesswork.
 * @module
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Raised for text that is not a duration. */
export class DurationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DurationError";
  }
}

/** Parses a duration into milliseconds (rounded to a whole number); throws DurationError. */
export function parseDuration(text: string): number {
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/.test(text)
    ? [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)]
    : [];
  if (parts.length === 0) {
    throw new DurationError(
      `${JSON.stringify(text)} is not a duration (e.g. 24h, 10m, 30s, 500ms, 1h30m)`,
    );
  }
  const ms = parts.reduce((sum, [, n, unit]) => sum + Number(n) * UNIT_MS[unit], 0);
  if (!Number.isSafeInteger(Math.round(ms))) throw new DurationError(`${text} is too long`);
  return Math.round(ms);
}

/** Formats milliseconds the way parseDuration reads them, largest units first (`1h30m`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  let left = Math.round(ms);
  let out = "";
  for (const unit of ["d", "h", "m", "s", "ms"]) {
    const n = Math.floor(left / UNIT_MS[unit]);
    if (n > 0) {
      out += `${n}${unit}`;
      left -= n * UNIT_MS[unit];
    }
  }
  return out;
}
