/**
 * The storage tier's pure parts without processes: rendezvous placement and the repair
 * decision (roles/storage/placement.ts), the leader's membership (roles/master/
 * storage_directory.ts). A seeded simulation applies every holder's plan to random
 * memberships and checks, after every step, that no copy is lost below R and that the replicas
 * converge onto exactly the file's targets.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  type Member,
  order,
  planReplicas,
  putOrder,
  readOrder,
} from "../roles/storage/placement.ts";
import { defaultReplicas, StorageDirectory } from "../roles/master/storage_directory.ts";
import { MessageType, NodeState, StorageFlags, uuidFromHex } from "../wire/mod.ts";
import { Rng } from "./wire_gen.ts";

const hexOf = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 32);
const member = (name: string, state: NodeState = NodeState.Alive, flags = 0): Member => ({
  hex: hexOf(name),
  state,
  flags,
  endpoint: `tcp://${name}:1`,
});

Deno.test("placement: the order is a stable function of file and membership", () => {
  const nodes = ["a", "b", "c", "d", "e"].map((n) => member(n));
  const f = hexOf("file");
  const o = order(f, nodes).map((m) => m.hex);
  assert.deepEqual(
    order(f, [...nodes].reverse()).map((m) => m.hex),
    o,
    "input order is irrelevant",
  );
  // Removing a node keeps the others' relative order (only its files move).
  const without = order(f, nodes.filter((m) => m.hex !== o[0])).map((m) => m.hex);
  assert.deepEqual(without, o.slice(1));
  // Files spread over the nodes: each node is first for some of 500 files.
  const firsts = new Map<string, number>();
  for (let i = 0; i < 500; i++) {
    const first = order(hexOf(`f${i}`), nodes)[0].hex;
    firsts.set(first, (firsts.get(first) ?? 0) + 1);
  }
  assert.equal(firsts.size, 5);
  for (const n of firsts.values()) assert.ok(n > 50, `uneven spread ${[...firsts.values()]}`);
});

Deno.test("placement: puts skip dead, suspect, full and failing nodes; reads try them last", () => {
  const nodes = [
    member("a"),
    member("b", NodeState.Suspect),
    member("c", NodeState.Dead),
    member("d", NodeState.Alive, StorageFlags.Full),
    member("e", NodeState.Alive, StorageFlags.Failing),
    member("f"),
  ];
  const f = hexOf("x");
  assert.deepEqual(
    new Set(putOrder(f, nodes).map((m) => m.endpoint)),
    new Set(["tcp://a:1", "tcp://f:1"]),
  );
  const r = readOrder(f, nodes);
  assert.equal(r.length, 6);
  assert.equal(r[r.length - 1].state, NodeState.Dead, "dead last");
  assert.equal(r[r.length - 2].state, NodeState.Suspect, "suspect before dead, after alive");
});

Deno.test("placement: the first holder copies to the missing targets; a surplus copy is dropped", () => {
  const nodes = ["a", "b", "c", "d"].map((n) => member(n));
  const f = hexOf("file-1");
  const o = order(f, nodes);
  // Held only on the 4th in order: it copies to the first two; nobody else acts.
  const last = o[3].hex;
  const p = planReplicas(f, last, nodes, new Set(), 2);
  assert.deepEqual(p.targets, [o[0].hex, o[1].hex]);
  assert.deepEqual(p.copyTo, [o[0].hex, o[1].hex]);
  assert.equal(p.dropLocal, false, "never dropped before the targets hold it");
  assert.equal(p.healthy, 0);
  // Once both targets hold it, the 4th copy is surplus; the targets themselves do nothing.
  const held = new Set([o[0].hex, o[1].hex]);
  assert.equal(planReplicas(f, last, nodes, held, 2).dropLocal, true);
  const t = planReplicas(f, o[0].hex, nodes, new Set([o[1].hex, last]), 2);
  assert.deepEqual(t.copyTo, []);
  assert.equal(t.dropLocal, false);
  assert.equal(t.healthy, 2);
  // A dead first target is replaced by the next node.
  const dead = nodes.map((m) => m.hex === o[0].hex ? { ...m, state: NodeState.Dead } : m);
  const d = planReplicas(f, o[1].hex, dead, new Set(), 2);
  assert.deepEqual(d.targets, [o[1].hex, o[2].hex]);
  assert.deepEqual(d.copyTo, [o[2].hex]);
  // A full node keeps a replica it holds, but gets no new one.
  const full = nodes.map((m) => m.hex === o[0].hex ? { ...m, flags: StorageFlags.Full } : m);
  assert.deepEqual(planReplicas(f, o[1].hex, full, new Set([o[0].hex]), 2).copyTo, []);
  assert.deepEqual(planReplicas(f, o[1].hex, full, new Set(), 2).copyTo, [o[2].hex]);
});

Deno.test("placement: random memberships converge to R replicas on the targets, never below (300 seeds)", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const rng = new Rng(seed);
    const n = 2 + rng.u32() % 7;
    const replicas = 1 + rng.u32() % 3;
    const nodes: Member[] = Array.from({ length: n }, (_, i) => {
      const roll = rng.u32() % 10;
      const state = roll === 0 ? NodeState.Dead : NodeState.Alive;
      const flags = roll === 1 ? StorageFlags.Full : 0;
      return member(`s${seed}-${i}`, state, flags);
    });
    const f = hexOf(`file-${seed}`);
    const live = nodes.filter((m) => m.state !== NodeState.Dead);
    if (live.length === 0) continue;
    const holders = new Set<string>();
    for (const m of live) if (rng.u32() % 3 === 0) holders.add(m.hex);
    if (holders.size === 0) holders.add(live[rng.u32() % live.length].hex);
    const takers = live.filter((m) => m.flags === 0 || holders.has(m.hex)).length;
    const want = Math.min(replicas, takers);
    const ctx = `seed ${seed} n=${n} R=${replicas}`;
    for (let round = 0; round < 12; round++) {
      // Every holder plans on the same snapshot, as concurrent scans on the nodes do.
      const snapshot = new Set(holders);
      const before = holders.size;
      const plans = [...snapshot].map((self) =>
        planReplicas(f, self, nodes, new Set([...snapshot].filter((h) => h !== self)), replicas)
      );
      const copiers = plans.filter((p) => p.copyTo.length > 0).length;
      assert.ok(copiers <= 1, `${ctx}: ${copiers} holders copied in one round (one should)`);
      [...snapshot].forEach((self, i) => {
        // A copy fails a third of the time (the target died, a timeout): repaired next round.
        for (const c of plans[i].copyTo) if (round >= 8 || rng.u32() % 3 !== 0) holders.add(c);
        if (plans[i].dropLocal) holders.delete(self);
      });
      assert.ok(holders.size >= Math.min(before, want), `${ctx}: drops went below R`);
      assert.ok(holders.size >= 1, `${ctx}: the last copy was dropped`);
    }
    const any = [...holders][0];
    const p = planReplicas(f, any, nodes, new Set([...holders].filter((h) => h !== any)), replicas);
    assert.equal(holders.size, want, `${ctx}: ${holders.size} replicas after repair, want ${want}`);
    assert.deepEqual(new Set(p.targets), holders, `${ctx}: replicas are not the targets`);
  }
});

Deno.test("storage directory: alive, suspect, dead; a new leader declares nobody dead for a repair delay", () => {
  const dir = new StorageDirectory({ repairAfterMs: 10_000, suspectAfterMs: 3000, maxNodes: 2 });
  const beat = (name: string) => ({
    type: MessageType.StorageHeartbeat,
    node: uuidFromHex(hexOf(name)),
    flags: 0,
    capacityBytes: 100,
    usedBytes: 1,
    files: 1,
    underReplicatedFiles: 0,
    underReplicatedBytes: 0,
    endpoint: `tcp://${name}:1`,
    detail: "",
  } as const);
  dir.setLeader(true, 1, 0);
  dir.heartbeat(beat("a"), 0, 0);
  dir.heartbeat(beat("b"), 0, 0);
  assert.deepEqual(dir.list(1000).map((e) => e.state), [NodeState.Alive, NodeState.Alive]);
  dir.heartbeat(beat("a"), 4000, 0);
  assert.deepEqual(dir.list(4000).map((e) => e.state), [NodeState.Alive, NodeState.Suspect]);
  dir.heartbeat(beat("a"), 11_000, 0);
  assert.deepEqual(dir.list(11_000).map((e) => e.state), [NodeState.Alive, NodeState.Dead]);
  // Bounded: a third node evicts the one silent the longest.
  dir.heartbeat(beat("c"), 11_000, 0);
  assert.equal(dir.size, 2);
  assert.deepEqual(dir.list(11_000).map((e) => e.endpoint).sort(), ["tcp://a:1", "tcp://c:1"]);
  // A leader in a new term keeps what it heard as a follower, but declares nobody dead before
  // it has led for a full repair delay.
  dir.setLeader(false, 1, 15_000);
  dir.heartbeat(beat("a"), 15_000, 0); // a follower records heartbeats too
  dir.setLeader(true, 2, 20_000);
  assert.equal(dir.size, 2);
  assert.deepEqual(dir.list(29_000).map((e) => e.state), [NodeState.Suspect, NodeState.Suspect]);
  dir.heartbeat(beat("a"), 29_000, 0);
  assert.deepEqual(dir.list(30_001).map((e) => e.state), [NodeState.Alive, NodeState.Dead]);
  // Default replicas: 2 once two nodes are known (a dead one counts), else 1; a flag wins.
  assert.equal(defaultReplicas(0, dir.list(30_001)), 2);
  assert.equal(defaultReplicas(0, dir.list(30_001).slice(0, 1)), 1);
  assert.equal(defaultReplicas(3, []), 3);
});
