/**
 * Recent positive answers of storage's `file_stat`, so that a client submitting job after job
 * with the same program (the common case: one program, many jobs) costs the leader one storage
 * round trip per {@linkcode STAT_CACHE_TTL_MS}, not one per submission.
 *
 * Only "exists, with this length, for this owner" is kept: a file that was missing or not the
 * submitter's is asked again next time (it may have been stored since). Files are
 * content-addressed and never change; one removed from storage within the TTL is accepted as if
 * the stat had come just before the removal, the same race an uncached stat has with a removal
 * between the stat and the chunk's fetch (the chunk then fails to fetch its program).
 * Pure: the caller passes the clock.
 *
 * @module
 */

/** How long a positive stat answer is reused, ms. */
export const STAT_CACHE_TTL_MS = 2000;
/** Most (file, owner) pairs remembered; the oldest goes first beyond that. */
export const STAT_CACHE_ENTRIES = 4096;

interface Cached {
  length: number;
  at: number;
}

/** A bounded, time-limited map from (file id, owner) to the file's length. */
export class StatCache {
  #m = new Map<string, Cached>();
  #ttl: number;
  #max: number;

  /** An empty cache; `ttlMs` and `maxEntries` default to the module's limits. */
  constructor(ttlMs = STAT_CACHE_TTL_MS, maxEntries = STAT_CACHE_ENTRIES) {
    if (!(ttlMs >= 0 && maxEntries >= 1)) {
      throw new RangeError(`StatCache: ttl ${ttlMs} ms, ${maxEntries} entries`);
    }
    this.#ttl = ttlMs;
    this.#max = maxEntries;
  }

  /** The length recorded for `key` at most the TTL before `now`, or undefined. */
  get(key: string, now: number): number | undefined {
    const c = this.#m.get(key);
    if (!c) return undefined;
    if (now - c.at >= this.#ttl || now < c.at) {
      this.#m.delete(key);
      return undefined;
    }
    return c.length;
  }

  /** Records that `key`'s file exists with `length` bytes, as learned at `now`. */
  put(key: string, length: number, now: number): void {
    this.#m.delete(key); // re-inserted last: Map order is the eviction order
    this.#m.set(key, { length, at: now });
    while (this.#m.size > this.#max) this.#m.delete(this.#m.keys().next().value!);
  }

  /** Entries held (for tests). */
  get size(): number {
    return this.#m.size;
  }
}

/** Cache key of a file id (hex) for an owner ("" = any owner: admins and insecure clusters). */
export function statKey(idHex: string, owner: string): string {
  return `${idHex}\0${owner}`;
}
