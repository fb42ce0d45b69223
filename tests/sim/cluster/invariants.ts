/**
 * The safety invariants checked after every step of the cluster simulation (cheap, incremental)
 * over the real masters' Raft members and job tables:
 *
 * - **one leader per term**: no two members ever lead in the same term;
 * - **log matching**: every entry a member knows as committed has the same term and data as
 *   every other member's entry at that index (entries compacted into a snapshot are skipped);
 * - **state machines agree**: two members that applied the same index have the same job table
 *   (compared by a hash of its snapshot encoding, taken whenever a member's applied index moves).
 * @module
 */
import { encodeSnapshot } from "../../../roles/master/snapshot.ts";
import type { SimMaster } from "./master_node.ts";
import type { World } from "./world.ts";

/** FNV-1a of bytes, as 8 hex digits (a digest for comparisons, not security). */
export function fnv(b: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** Most committed entries / table digests remembered (a run is far shorter). */
const MAX_REMEMBERED = 1_000_000;

/** The incremental checker; call {@link check} after every step. */
export class SafetyChecker {
  #world: World;
  #masters: SimMaster[];
  #leaders = new Map<number, string>();
  #committed = new Map<number, string>();
  #tables = new Map<number, { digest: string; by: string }>();
  /** Per member incarnation: commit index checked up to, applied index last hashed. */
  #checkedCommit = new Map<string, number>();
  #hashedApplied = new Map<string, number>();
  /** Largest term seen, and table digests taken (for the statistics). */
  maxTerm = 0;
  digests = 0;

  constructor(world: World, masters: SimMaster[]) {
    this.#world = world;
    this.#masters = masters;
  }

  /** Checks every live member once. */
  check(): void {
    for (const m of this.#masters) {
      const raft = m.raft;
      if (!m.up || !raft) continue;
      const who = `${m.name}#${m.starts}`;
      const term = raft.term;
      if (term > this.maxTerm) this.maxTerm = term;
      if (raft.isLeader()) {
        const t = raft.node.status().term;
        const other = this.#leaders.get(t);
        if (other === undefined) {
          this.#leaders.set(t, m.name);
          this.#world.note(`leader ${m.name} term ${t}`);
        } else if (other !== m.name) {
          this.#world.violate(`two leaders in term ${t}: ${other} and ${m.name}`);
        }
      }
      const log = raft.node.log;
      const commit = log.committed;
      let from = this.#checkedCommit.get(who) ?? 0;
      if (from < log.firstIndex() - 1) from = log.firstIndex() - 1;
      for (let i = from + 1; i <= Math.min(commit, log.lastIndex()); i++) {
        const e = log.entry(i);
        const d = `${e.term}/${e.type}/${fnv(e.data)}`;
        const seen = this.#committed.get(i);
        if (seen === undefined) {
          if (this.#committed.size < MAX_REMEMBERED) this.#committed.set(i, d);
        } else if (seen !== d) {
          this.#world.violate(`log mismatch at committed index ${i}: ${seen} vs ${d} (${m.name})`);
        }
      }
      this.#checkedCommit.set(who, Math.max(from, commit));
      const applied = raft.applied;
      const table = m.table;
      if (table && this.#hashedApplied.get(who) !== applied) {
        this.#hashedApplied.set(who, applied);
        const digest = fnv(encodeSnapshot(table));
        this.digests++;
        const seen = this.#tables.get(applied);
        if (seen === undefined) {
          if (this.#tables.size < MAX_REMEMBERED) this.#tables.set(applied, { digest, by: m.name });
        } else if (seen.digest !== digest) {
          this.#world.violate(
            `state machines differ at applied index ${applied}: ${seen.by} ${seen.digest}, ` +
              `${m.name} ${digest}`,
          );
        }
      }
    }
  }
}
