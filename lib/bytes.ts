/**
 * Byte sizes on the command line: `512MiB`, `1GiB`, `64K`, `4096` (binary multiples: K, M, G, T,
 * each optionally followed by `iB` or `B`, any case). A bare number is bytes.
 * @module
 */

const UNIT: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Raised for text that is not a byte size. */
export class ByteSizeError extends Error {
  /** Creates the error for `text`. */
  constructor(readonly text: string, message: string) {
    super(message);
    this.name = "ByteSizeError";
  }
}

/** Parses a byte size into a whole number of bytes; throws ByteSizeError. */
export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) {
    throw new ByteSizeError(
      text,
      `${JSON.stringify(text)} is not a byte size (e.g. 4096, 64K, 512MiB, 1GiB)`,
    );
  }
  const n = Math.round(Number(m[1]) * UNIT[m[2].toLowerCase()]);
  if (!Number.isSafeInteger(n)) throw new ByteSizeError(text, `${text} is too large`);
  return n;
}

/** Formats bytes the way parseBytes reads them, in the largest unit that divides them exactly. */
export function formatBytes(n: number): string {
  for (const [suffix, unit] of [["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20]] as const) {
    if (n >= unit && n % unit === 0) return `${n / unit}${suffix}`;
  }
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}KiB`;
  return `${n}`;
}
