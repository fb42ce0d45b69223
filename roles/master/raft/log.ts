/**
 * The in-memory view of the Raft log kept by the core: a snapshot boundary followed by entries.
 * The core holds every entry after the last snapshot in memory (masters compact regularly), and
 * tracks which suffix is not yet persisted so Ready can hand exactly that to storage.
 */
import {
  type ConfState,
  type Entry,
  invariant,
  RaftInvariantError,
  type Snapshot,
} from "./types.ts";

/** In-memory Raft log with persistence and apply cursors. */
export class RaftLog {
  /** Last compacted index/term and the configuration at that point. */
  snapIndex = 0;
  snapTerm = 0;
  snapConf: ConfState = { voters: [] };
  /** Full snapshot (with data) if one exists, to send to slow followers. */
  snapshot: Snapshot | null = null;
  /** entries[i].index === snapIndex + 1 + i */
  entries: Entry[] = [];
  committed = 0;
  applied = 0;
  /** First index not yet handed to storage for persistence. */
  unstableFrom = 1;

  /**
   * @param id owner id, used in error messages
   * @param onAppend told about every append (and the truncation point, 0 if none) so the core
   *   can track configuration entries, which take effect as soon as they are in the log.
   */
  constructor(
    readonly id: string,
    readonly onAppend: (ents: Entry[], truncatedAt: number) => void = () => {},
  ) {}

  /** Index of the first entry still in the log (may be > lastIndex when empty). */
  firstIndex(): number {
    return this.snapIndex + 1;
  }

  /** Index of the last entry (or the snapshot index when there are none). */
  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  /** Term of the last entry. */
  lastTerm(): number {
    return this.term(this.lastIndex())!;
  }

  /** Term of entry i, or undefined when i is compacted away or beyond the end. */
  term(i: number): number | undefined {
    if (i === this.snapIndex) return this.snapTerm;
    if (i < this.snapIndex || i > this.lastIndex()) return undefined;
    return this.entries[i - this.snapIndex - 1].term;
  }

  /** Whether the log contains an entry with this index and term. */
  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  /** The entry at i (must exist and not be compacted). */
  entry(i: number): Entry {
    const e = this.entries[i - this.snapIndex - 1];
    if (!e || e.index !== i) throw new RaftInvariantError(`raft ${this.id}: no entry ${i}`);
    return e;
  }

  /** Entries [lo, hi) limited to maxEntries and (softly, at least one) maxBytes. */
  slice(lo: number, hi: number, maxEntries = Infinity, maxBytes = Infinity): Entry[] {
    if (lo <= this.snapIndex) {
      throw new RaftInvariantError(
        `raft ${this.id}: slice from ${lo} but compacted to ${this.snapIndex}`,
      );
    }
    hi = Math.min(hi, this.lastIndex() + 1, lo + maxEntries);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entries[i - this.snapIndex - 1];
      bytes += e.data.length + 24;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Whether a candidate log (lastTerm, lastIndex) is at least as up to date as ours (§5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Appends entries after truncating any conflicting suffix. Returns the index of the first
   * entry that replaced an existing one (truncation point), or 0 if nothing was truncated.
   */
  append(ents: Entry[]): number {
    if (ents.length === 0) return 0;
    const first = ents[0].index;
    if (first <= this.committed) {
      throw new RaftInvariantError(
        `raft ${this.id}: append at ${first} would overwrite committed ${this.committed}`,
      );
    }
    if (first > this.lastIndex() + 1) {
      throw new RaftInvariantError(
        `raft ${this.id}: gap: append ${first} after ${this.lastIndex()}`,
      );
    }
    // Log Matching rests on these: indexes contiguous, terms never decreasing along the log.
    let prevTerm = this.term(first - 1) ?? 0;
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i];
      invariant(
        e.index === first + i && e.term >= prevTerm,
        () =>
          `raft ${this.id}: append of ${e.index}@${e.term} at ${first + i} after term ${prevTerm}`,
      );
      prevTerm = e.term;
    }
    let truncated = 0;
    if (first <= this.lastIndex()) {
      truncated = first;
      this.entries.length = first - this.snapIndex - 1;
    }
    for (const e of ents) this.entries.push(e);
    this.unstableFrom = Math.min(this.unstableFrom, first);
    this.onAppend(ents, truncated);
    return truncated;
  }

  /**
   * Follower side of AppendEntries: if (index, logTerm) matches, appends the new part of ents
   * and advances commit. Returns the last new index, or -1 on mismatch.
   */
  maybeAppend(index: number, logTerm: number, commit: number, ents: Entry[]): number {
    if (!this.matchTerm(index, logTerm)) return -1;
    const lastNew = index + ents.length;
    // Skip entries we already have (same index+term ⇒ identical by Log Matching).
    let k = 0;
    while (k < ents.length) {
      const e = ents[k];
      const t = this.term(e.index);
      if (t === undefined && e.index <= this.snapIndex) {
        k++; // already compacted ⇒ committed ⇒ identical
        continue;
      }
      if (t !== e.term) break;
      k++;
    }
    if (k < ents.length) this.append(ents.slice(k));
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /** Advances commit (never backwards). */
  commitTo(c: number): boolean {
    if (c <= this.committed) return false;
    if (c > this.lastIndex()) {
      throw new RaftInvariantError(
        `raft ${this.id}: commit ${c} beyond last index ${this.lastIndex()}`,
      );
    }
    this.committed = c;
    return true;
  }

  /**
   * Largest index <= i whose term is <= t (etcd's findConflictByTerm), used for the reject hint
   * and by the leader to skip a whole term of mismatching entries at once.
   */
  findConflictByTerm(i: number, t: number): [number, number] {
    i = Math.min(i, this.lastIndex());
    for (; i > this.snapIndex; i--) {
      const ti = this.term(i)!;
      if (ti <= t) return [i, ti];
    }
    return [this.snapIndex, this.snapTerm];
  }

  /** Resets the log to a snapshot (follower install). */
  restore(s: Snapshot): void {
    this.snapIndex = s.index;
    this.snapTerm = s.term;
    this.snapConf = { voters: [...s.conf.voters] };
    this.snapshot = s;
    this.entries = [];
    this.committed = s.index;
    this.unstableFrom = s.index + 1;
  }

  /** Drops entries up to and including index (index must be applied). */
  compact(s: Snapshot): void {
    if (s.index <= this.snapIndex) return;
    if (s.index > this.applied) {
      throw new RaftInvariantError(
        `raft ${this.id}: compact to ${s.index} beyond applied ${this.applied}`,
      );
    }
    this.entries = this.entries.slice(s.index - this.snapIndex);
    this.snapIndex = s.index;
    this.snapTerm = s.term;
    this.snapConf = { voters: [...s.conf.voters] };
    this.snapshot = s;
    this.unstableFrom = Math.max(this.unstableFrom, s.index + 1);
  }
}
