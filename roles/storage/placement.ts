/**
 * Where a file's replicas belong: rendezvous (highest-random-weight) hashing over the storage
 * membership, computed alike by every client, worker, master and storage node from the
 * membership the masters' leader hands out (storage_nodes). Pure: no I/O, no clock.
 *
 * Every node gets a score per file, `SHA-256(file id || node id)` read as a number; a file's
 * order is the nodes by descending score. Its replicas belong on the first R nodes of that order
 * that can hold them (not dead; a full or failing node only if it already holds the file). Why
 * rendezvous rather than a catalog of locations (docs/architecture.md, "The storage tier"):
 * nothing per file is replicated through Raft, a master failover rebuilds nothing, and a node
 * joining or leaving moves only the files whose first R change (about R/N of them).
 *
 * `planReplicas` is the repair decision for one file on one holder, given which nodes were seen
 * holding it: whether this node is the one to copy it (the first holder in the order: exactly
 * one live holder acts, so copies are not made twice), to which nodes, and whether this node's
 * own copy is surplus (it is not among the targets and every target holds the file).
 * @module
 */
import { createHash } from "node:crypto";
import { NodeState, type StorageEntry, StorageFlags, uuidToHex } from "../../wire/mod.ts";

/** A storage node as placement sees it. */
export interface Member {
  /** Node id, hex. */
  hex: string;
  state: NodeState;
  /** StorageFlags bits. */
  flags: number;
  endpoint: string;
}

/** The membership entries as placement members. */
export function members(entries: readonly StorageEntry[]): Member[] {
  return entries.map((e) => ({
    hex: uuidToHex(e.id),
    state: e.state,
    flags: e.flags,
    endpoint: e.endpoint,
  }));
}

const HEX_RE = /^[0-9a-f]{32}$/;

/** Rendezvous score of node `nodeHex` for file `fileHex`: 48 bits of SHA-256(file || node). */
export function score(fileHex: string, nodeHex: string): number {
  if (!HEX_RE.test(fileHex) || !HEX_RE.test(nodeHex)) {
    throw new Error(`placement: bad id ${fileHex} / ${nodeHex}`);
  }
  const d = createHash("sha256").update(Buffer.from(fileHex + nodeHex, "hex")).digest();
  return d.readUIntBE(0, 6);
}

/** All members, the file's preferred order first (ties, never seen in practice, by id). */
export function order<M extends { hex: string }>(fileHex: string, all: readonly M[]): M[] {
  const scored = all.map((m) => ({ m, s: score(fileHex, m.hex) }));
  scored.sort((a, b) => b.s - a.s || (a.m.hex < b.m.hex ? -1 : 1));
  return scored.map((x) => x.m);
}

/** True when the node takes new files (alive, neither full nor failing). */
export function takesFiles(m: Member): boolean {
  return m.state === NodeState.Alive &&
    (m.flags & (StorageFlags.Full | StorageFlags.Failing)) === 0;
}

/**
 * Where a new put goes: the members that take files, in the file's order. The first R are the
 * replicas; the rest are the fallbacks, tried in order when one of those fails mid-put.
 */
export function putOrder(fileHex: string, all: readonly Member[]): Member[] {
  return order(fileHex, all.filter(takesFiles));
}

/**
 * Where to read a file from: every member that is not dead, the file's order first, alive
 * before suspect (a suspect node may be down); then the dead ones, as a last resort (a node
 * declared dead may be back before the masters noticed).
 */
export function readOrder(fileHex: string, all: readonly Member[]): Member[] {
  const o = order(fileHex, all);
  const rank = (m: Member) =>
    m.state === NodeState.Alive ? 0 : m.state === NodeState.Suspect ? 1 : 2;
  return o.map((m, i) => ({ m, i })).sort((a, b) => rank(a.m) - rank(b.m) || a.i - b.i).map((x) =>
    x.m
  );
}

/** The repair decision for one file on one of its holders. */
export interface ReplicaPlan {
  /** Where the file's replicas belong (R members, fewer when the cluster has fewer). */
  targets: string[];
  /** Targets this node must copy the file to (empty unless it is the first holder). */
  copyTo: string[];
  /** This node's copy is surplus: it is no target, and every target holds the file. */
  dropLocal: boolean;
  /** Holders among the targets: below R means under-replicated. */
  healthy: number;
}

/**
 * Decides what holder `self` does about one file with `replicas` wanted, given the membership
 * (`self` included or not: it counts as alive) and `holds`, the members seen holding the file
 * (`self` is assumed to). Dead members neither count nor receive copies.
 */
export function planReplicas(
  fileHex: string,
  self: string,
  all: readonly Member[],
  holds: ReadonlySet<string>,
  replicas: number,
): ReplicaPlan {
  if (!Number.isInteger(replicas) || replicas < 1) {
    throw new Error(`placement: replicas ${replicas} must be a positive integer`);
  }
  const live = all.filter((m) => m.state !== NodeState.Dead && m.hex !== self);
  const me: Member = { hex: self, state: NodeState.Alive, flags: 0, endpoint: "" };
  const o = order(fileHex, [...live, me]);
  const held = (m: Member) => m.hex === self || holds.has(m.hex);
  const targets: Member[] = [];
  for (const m of o) {
    if (targets.length >= replicas) break;
    // A node that holds the file keeps its replica even when full; others must take files.
    if (held(m) || (m.state === NodeState.Alive && takesFiles(m))) targets.push(m);
  }
  const firstHolder = o.find(held)!;
  const copyTo = firstHolder.hex === self ? targets.filter((m) => !held(m)).map((m) => m.hex) : [];
  const inTargets = targets.some((m) => m.hex === self);
  const healthy = targets.filter(held).length;
  const dropLocal = !inTargets && targets.length >= replicas && healthy === targets.length;
  // Invariants: a drop never leaves fewer than R verified holders among the targets; a copy
  // only goes to a target without the file.
  if (dropLocal && healthy < replicas) throw new Error("placement: drop below R");
  for (const c of copyTo) {
    if (holds.has(c) || c === self) throw new Error("placement: copy to a holder");
  }
  return { targets: targets.map((m) => m.hex), copyTo, dropLocal, healthy };
}
