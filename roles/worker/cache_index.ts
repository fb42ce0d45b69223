/**
 * What the worker tells the balancer about its file cache. The cache directory itself is the
 * source of truth (files named by the lowercase hex of their id, written by the fetch callback,
 * deleted by the FUSE module's LRU eviction, kept across restarts), so the index simply diffs
 * directory scans: a heartbeat carries the ids added and evicted since the last report the
 * balancer acknowledged, and a (re-)registration carries the full list.
 * @module
 */

import { uuidFromHex } from "../../wire/mod.ts";

const ID_NAME = /^[0-9a-f]{32}$/;

/** Diffs cache-directory scans against the last state the balancer acknowledged. */
export class CacheIndex {
  /** Cache directory (files named by id hex). */
  readonly dir: string;
  #reported = new Set<string>();

  /** Creates an index of `dir`; nothing counts as reported yet. */
  constructor(dir: string) {
    this.dir = dir;
  }

  /** Hex ids of the complete cache files present now (temp files are ignored). */
  async scan(): Promise<Set<string>> {
    const out = new Set<string>();
    try {
      for await (const e of Deno.readDir(this.dir)) {
        if (e.isFile && ID_NAME.test(e.name)) out.add(e.name);
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return out;
  }

  /** Full list for worker_register; call `commit(snapshot)` once the balancer acknowledged it. */
  async full(): Promise<{ snapshot: Set<string>; files: Uint8Array[] }> {
    const snapshot = await this.scan();
    return { snapshot, files: [...snapshot].map(uuidFromHex) };
  }

  /** Changes since the last commit, for worker_heartbeat. */
  async delta(): Promise<{ snapshot: Set<string>; added: Uint8Array[]; evicted: Uint8Array[] }> {
    const snapshot = await this.scan();
    const added: Uint8Array[] = [];
    const evicted: Uint8Array[] = [];
    for (const h of snapshot) if (!this.#reported.has(h)) added.push(uuidFromHex(h));
    for (const h of this.#reported) if (!snapshot.has(h)) evicted.push(uuidFromHex(h));
    return { snapshot, added, evicted };
  }

  /** Records that the balancer now knows `snapshot` (its register/heartbeat was acknowledged). */
  commit(snapshot: Set<string>): void {
    this.#reported = snapshot;
  }

  /** Removes leftovers of fetches interrupted by a crash (temp files never renamed). */
  async removeTemps(): Promise<number> {
    let n = 0;
    try {
      for await (const e of Deno.readDir(this.dir)) {
        if (e.isFile && !ID_NAME.test(e.name)) {
          await Deno.remove(`${this.dir}/${e.name}`).catch(() => {});
          n++;
        }
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return n;
  }
}
