/**
 * What keeps a stored file alive, as part of the masters' replicated state (JobTable holds one):
 * references from live jobs (program, inputs, outputs of finished chunks), users' explicit keeps
 * (`dsys put` keeps what it stored until `dsys rm FILE`), and tombstones of files the cluster
 * deleted. Pure and deterministic like JobTable: times come inside the commands.
 *
 * Deletion (docs/architecture.md, "How files are deleted"): the leader commits a `delete` command
 * for files that storage nodes report and nothing references; applying it tombstones each file
 * that is still unreferenced at that point in the log. A submission applied after it that names a
 * tombstoned file is refused (so it cannot take a reference to bytes being deleted), and one
 * applied before it took its reference first (so the file is not tombstoned). A keep (the file was
 * put again) or a chunk result naming it as an output (written again) clears the tombstone.
 *
 * Bounded: at most {@linkcode MAX_KEEPS} keeps in all and {@linkcode MAX_KEEPS_PER_USER} per
 * user (further keeps are refused); tombstones live {@linkcode TOMBSTONE_MS} after the delete
 * and at most {@linkcode MAX_TOMBSTONES} (the oldest go first): they only need to outlive a
 * submission in flight and the storage nodes' next collection.
 * @module
 */
import { uuidToHex as hex } from "../../wire/mod.ts";

/** Most keeps the cluster holds. */
export const MAX_KEEPS = 1_000_000;
/** Most files one user may keep. */
export const MAX_KEEPS_PER_USER = 100_000;
/** How long a tombstone lasts after its delete, ms (by the proposing leader's clock). */
export const TOMBSTONE_MS = 3_600_000;
/** Most tombstones held. */
export const MAX_TOMBSTONES = 100_000;

/** One user's keep of one file. */
export interface Keep {
  size: number;
  /** Replicas the put asked for. */
  replicas: number;
  /** Name the file was put under (display only). */
  name: string;
  atMs: number;
}

/** A user's kept file as `dsys ls` shows it. */
export interface KeptFile extends Keep {
  id: string;
  /** References from live jobs. */
  refs: number;
}

/** References, keeps and tombstones of files (hex ids). */
export class FileRefs {
  /** References from live jobs per file: taken on accept / result, released on removal. */
  readonly jobRefs = new Map<string, number>();
  /** Keeps per file, by user. */
  readonly keeps = new Map<string, Map<string, Keep>>();
  /** Kept files per user (the same keeps, indexed for `dsys ls` and the per-user bound). */
  readonly byUser = new Map<string, Set<string>>();
  /** Tombstones: deleted file -> when its delete was applied (insertion order = age order). */
  readonly deleted = new Map<string, number>();
  #keeps = 0;

  /** Number of keeps in all. */
  get keepCount(): number {
    return this.#keeps;
  }

  /** Adds `delta` job references to `file`. */
  ref(file: Uint8Array, delta: number): void {
    const key = hex(file);
    const n = (this.jobRefs.get(key) ?? 0) + delta;
    if (n < 0) throw new Error(`file ${key}: reference count below zero`); // a bug, never input
    if (n === 0) this.jobRefs.delete(key);
    else this.jobRefs.set(key, n);
  }

  /** True when a live job or a keep refers to file `key` (hex). */
  referenced(key: string): boolean {
    return this.jobRefs.has(key) || this.keeps.has(key);
  }

  /** True when file `key` (hex) was deleted by the cluster (and not stored again since). */
  isDeleted(key: string): boolean {
    return this.deleted.has(key);
  }

  /** The file was written again (a chunk's output): it is live, whatever was deleted before. */
  revive(key: string): void {
    this.deleted.delete(key);
  }

  /**
   * `user` keeps these files; returns how many keeps are new. Refused as a whole (null) when it
   * would pass a bound.
   */
  keep(
    user: string,
    files: { id: Uint8Array; size: number; name: string }[],
    replicas: number,
    atMs: number,
  ): number | null {
    const mine = this.byUser.get(user);
    const fresh = files.filter((f) => !this.keeps.get(hex(f.id))?.has(user));
    const unique = new Set(fresh.map((f) => hex(f.id)));
    if (
      this.#keeps + unique.size > MAX_KEEPS ||
      (mine?.size ?? 0) + unique.size > MAX_KEEPS_PER_USER
    ) return null;
    for (const f of files) {
      const key = hex(f.id);
      let users = this.keeps.get(key);
      if (!users) this.keeps.set(key, users = new Map());
      if (!users.has(user)) this.#keeps++;
      users.set(user, { size: f.size, replicas, name: f.name, atMs });
      let set = this.byUser.get(user);
      if (!set) this.byUser.set(user, set = new Set());
      set.add(key);
      this.deleted.delete(key); // put again: live
    }
    return unique.size;
  }

  /** `user` no longer keeps these files; returns how many keeps went. */
  unkeep(user: string, ids: Uint8Array[]): number {
    let n = 0;
    for (const id of ids) {
      const key = hex(id);
      const users = this.keeps.get(key);
      if (!users?.delete(user)) continue;
      n++;
      this.#keeps--;
      if (users.size === 0) this.keeps.delete(key);
      const set = this.byUser.get(user)!;
      set.delete(key);
      if (set.size === 0) this.byUser.delete(user);
    }
    return n;
  }

  /**
   * Tombstones each of these files that nothing references now; returns their hex ids. Expired
   * tombstones (older than TOMBSTONE_MS at `atMs`) and those past the bound go first.
   */
  delete(ids: Uint8Array[], atMs: number): string[] {
    for (const [key, at] of this.deleted) {
      if (at > atMs - TOMBSTONE_MS && this.deleted.size < MAX_TOMBSTONES) break;
      this.deleted.delete(key);
    }
    const out: string[] = [];
    for (const id of ids) {
      const key = hex(id);
      if (this.referenced(key)) continue;
      if (!this.deleted.has(key) && this.deleted.size >= MAX_TOMBSTONES) {
        // Full: the oldest tombstone goes (a submission naming it finds it gone from storage).
        const oldest = this.deleted.keys().next().value!;
        this.deleted.delete(oldest);
      }
      this.deleted.delete(key); // re-inserted: newest
      this.deleted.set(key, atMs);
      out.push(key);
    }
    if (this.deleted.size > MAX_TOMBSTONES) throw new Error("tombstones over their bound");
    return out;
  }

  /** The files `user` keeps, newest keep first, with their job references. */
  kept(user: string): KeptFile[] {
    const out: KeptFile[] = [];
    for (const key of this.byUser.get(user) ?? []) {
      const k = this.keeps.get(key)!.get(user)!;
      out.push({ id: key, ...k, refs: this.jobRefs.get(key) ?? 0 });
    }
    return out.sort((a, b) => b.atMs - a.atMs || (a.id < b.id ? -1 : 1));
  }
}
