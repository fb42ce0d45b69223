/**
 * The scheduler's index of workers with free slots, in placement order: most free slots first,
 * then the one given work least recently (`lastAssignSeq`), then the one registered first. So
 * finding the best worker for a chunk without locality costs O(log workers) instead of a scan of
 * every worker (issue 13: placement cost flat from 4 to 10,000 workers).
 *
 * One binary heap per free-slot count (a worker's free count is small: its slots), ordered by
 * (lastAssignSeq, registration order). Updates are lazy: a changed worker gets a new entry and
 * its version number moves on, so older entries are recognised as stale and dropped when they
 * surface; a heap is rebuilt from its live entries once stale ones outnumber them. Everything
 * depends only on the workers' fields, never on the order of updates, so a scheduler rebuilt
 * from a snapshot picks exactly what the original would (the standby relies on that).
 * @module
 */

/** What the index needs of a worker. */
export interface Indexed {
  /** Unique key (worker hex id). */
  readonly key: string;
}

interface Entry<W> {
  w: W;
  seq: number;
  ord: number;
  ver: number;
}

interface Current<W> {
  w: W;
  free: number;
  seq: number;
  ord: number;
  ver: number;
}

/** Stale entries a heap may hold beyond its live ones before it is rebuilt. */
const SLACK = 32;

function before<W>(a: Entry<W>, b: Entry<W>): boolean {
  return a.seq < b.seq || (a.seq === b.seq && a.ord < b.ord);
}

function siftUp<W>(h: Entry<W>[], i: number): void {
  const x = h[i];
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!before(x, h[p])) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = x;
}

function siftDown<W>(h: Entry<W>[], i: number): void {
  const n = h.length;
  const x = h[i];
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && before(h[r], h[l]) ? r : l;
    if (!before(h[c], x)) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

function pop<W>(h: Entry<W>[]): Entry<W> {
  const top = h[0];
  const last = h.pop()!;
  if (h.length > 0) {
    h[0] = last;
    siftDown(h, 0);
  }
  return top;
}

/** Workers with free slots in placement order; see module doc. */
export class FreeIndex<W extends Indexed> {
  /** Free-slot count -> heap of entries (some stale). */
  #heaps = new Map<number, Entry<W>[]>();
  /** Free-slot count -> live workers with that count. */
  #live = new Map<number, number>();
  /** Free-slot counts present, largest first. */
  #counts: number[] = [];
  #cur = new Map<string, Current<W>>();
  #ver = 0;
  #totalFree = 0;

  /** Workers in the index (free slots > 0). */
  get size(): number {
    return this.#cur.size;
  }

  /** Free slots of all indexed workers together. */
  get totalFree(): number {
    return this.#totalFree;
  }

  /**
   * Records worker `w` with `free` slots, last given work at `seq`, registered `ord`-th
   * (0 free: not in the index). A no-op when nothing changed.
   */
  set(w: W, free: number, seq: number, ord: number): void {
    const cur = this.#cur.get(w.key);
    if (cur && cur.free === free && cur.seq === seq && cur.ord === ord) return;
    if (cur) {
      this.#dropLive(cur.free);
      this.#totalFree -= cur.free;
    }
    if (free <= 0) {
      this.#cur.delete(w.key);
      return;
    }
    const ver = ++this.#ver;
    this.#cur.set(w.key, { w, free, seq, ord, ver });
    this.#totalFree += free;
    let h = this.#heaps.get(free);
    if (!h) {
      h = [];
      this.#heaps.set(free, h);
      this.#counts.push(free);
      this.#counts.sort((a, b) => b - a);
    }
    this.#live.set(free, (this.#live.get(free) ?? 0) + 1);
    h.push({ w, seq, ord, ver });
    siftUp(h, h.length - 1);
    if (h.length > 2 * this.#live.get(free)! + SLACK) this.#rebuild(h);
  }

  /** The indexed workers, in no particular order. */
  *values(): IterableIterator<W> {
    for (const c of this.#cur.values()) yield c.w;
  }

  /** Removes a worker (it left). */
  delete(w: W): void {
    this.set(w, 0, 0, 0);
  }

  /** Empties the index. */
  clear(): void {
    this.#heaps.clear();
    this.#live.clear();
    this.#counts = [];
    this.#cur.clear();
    this.#totalFree = 0;
  }

  /**
   * The first worker in placement order that `accept` takes, or null. Cost: O(log n) per
   * worker looked at (skipped ones, e.g. silent or avoided, are looked at too).
   */
  first(accept: (w: W) => boolean): W | null {
    for (const free of this.#counts) {
      const h = this.#heaps.get(free)!;
      const skipped: Entry<W>[] = [];
      let found: W | null = null;
      while (h.length > 0) {
        const e = pop(h);
        if (this.#cur.get(e.w.key)?.ver !== e.ver) continue; // stale: dropped for good
        skipped.push(e);
        if (accept(e.w)) {
          found = e.w;
          break;
        }
      }
      for (const e of skipped) {
        h.push(e);
        siftUp(h, h.length - 1);
      }
      if (found) return found;
    }
    return null;
  }

  #dropLive(free: number): void {
    const n = this.#live.get(free)! - 1;
    if (n > 0) {
      this.#live.set(free, n);
      return;
    }
    // No live worker has this count any more: forget the heap (only stale entries left).
    this.#live.delete(free);
    this.#heaps.delete(free);
    this.#counts = this.#counts.filter((c) => c !== free);
  }

  #rebuild(h: Entry<W>[]): void {
    const live = h.filter((e) => this.#cur.get(e.w.key)?.ver === e.ver);
    h.length = 0;
    for (const e of live) {
      h.push(e);
      siftUp(h, h.length - 1);
    }
  }
}

/**
 * Per cached file, the workers that hold it and have a free slot, each set a FreeIndex of its
 * own: the best holder of a chunk's input is found in O(log n), without looking at busy workers
 * or at those that lack the file. The price is paid by the worker: every change of its free
 * slots or last assignment re-files it under each of its cached files (O(its files × log n)).
 */
export class FreeHolders<W extends Indexed> {
  #byFile = new Map<string, FreeIndex<W>>();

  /** Workers with a free slot holding `file`. */
  of(file: string): FreeIndex<W> | undefined {
    return this.#byFile.get(file);
  }

  /** Files `w` under `file` with its current placement key (see FreeIndex.set). */
  set(file: string, w: W, free: number, seq: number, ord: number): void {
    let idx = this.#byFile.get(file);
    if (!idx) this.#byFile.set(file, idx = new FreeIndex());
    idx.set(w, free, seq, ord);
    if (idx.size === 0) this.#byFile.delete(file);
  }

  /** Removes `w` from the set of `file`. */
  delete(file: string, w: W): void {
    const idx = this.#byFile.get(file);
    if (!idx) return;
    idx.delete(w);
    if (idx.size === 0) this.#byFile.delete(file);
  }

  /** Empties the index. */
  clear(): void {
    this.#byFile.clear();
  }

  /** Files with at least one free holder (for tests and stats). */
  get files(): number {
    return this.#byFile.size;
  }
}
