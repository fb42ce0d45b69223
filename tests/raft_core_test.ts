/**
 * Targeted tests of the Raft core against the paper's scenarios: elections, pre-vote,
 * check-quorum, Figure 7 (log repair with fast backtracking), Figure 8 (no commit by
 * counting replicas of an old-term entry), leader transfer, snapshot install, ReadIndex,
 * membership changes, and the API contract.
 */
import assert from "node:assert/strict";
import {
  encodeConfChange,
  type Entry,
  makeMessage,
  type Message,
  mulberry32,
  NotLeaderError,
  ProposalDroppedError,
  RaftUsageError,
  RawNode,
} from "../roles/master/raft/mod.ts";
import { Cluster, logFromTerms } from "./raft_harness.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const init = (voters: string[]): Entry => ({
  term: 1,
  index: 1,
  type: "conf",
  data: encodeConfChange({ type: "init", voters }),
});
const isolate = (c: Cluster, id: string) => (c.drop = (m: Message) => m.from === id || m.to === id);
const heal = (c: Cluster) => (c.drop = () => false);

Deno.test("election: three nodes elect exactly one leader and agree on it", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  c.tick(3);
  const st = [...c.nodes.values()].map((n) => n.status());
  assert.equal(st.filter((s) => s.role === "leader").length, 1);
  for (const s of st) {
    assert.equal(s.lead, l);
    assert.equal(s.term, st[0].term);
  }
  // The leader's empty entry of its term committed everywhere.
  for (const s of st) assert.equal(s.commit, 2);
});

Deno.test("election: randomized timeout lies in [T, 2T)", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const n = new RawNode({
      id: "a",
      electionTick: 10,
      heartbeatTick: 1,
      rand: mulberry32(seed),
      peers: ["a", "b"],
    });
    let ticks = 0;
    while (n.status().role === "follower") {
      n.tick();
      ticks++;
    }
    assert.ok(ticks >= 10 && ticks < 20, `timeout ${ticks}`);
  }
});

Deno.test("pre-vote: a partitioned node does not inflate its term nor disrupt on return", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  const term = c.nodes.get(l)!.status().term;
  const victim = [...c.nodes.keys()].find((id) => id !== l)!;
  isolate(c, victim);
  c.tick(100);
  assert.equal(c.nodes.get(victim)!.status().term, term, "pre-vote keeps the term");
  heal(c);
  c.tick(5);
  assert.equal(c.leader(), l);
  assert.equal(c.nodes.get(l)!.status().term, term, "leader undisturbed");
});

Deno.test("without pre-vote/check-quorum a returning node does disrupt (contrast)", () => {
  const c = new Cluster(["a", "b", "c"], { preVote: false, checkQuorum: false });
  const l = c.elect();
  const term = c.nodes.get(l)!.status().term;
  const victim = [...c.nodes.keys()].find((id) => id !== l)!;
  isolate(c, victim);
  c.tick(100);
  assert.ok(c.nodes.get(victim)!.status().term > term + 3);
  heal(c);
  c.tick(30);
  assert.ok(c.nodes.get(c.elect())!.status().term > term, "term moved on");
});

Deno.test("check-quorum: an isolated leader steps down within an election timeout or two", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  isolate(c, l);
  let ticks = 0;
  while (c.nodes.get(l)!.status().role === "leader") {
    c.tick();
    ticks++;
    assert.ok(ticks <= 20, "still leader after 2 election timeouts");
  }
  assert.throws(() => c.nodes.get(l)!.propose(te.encode("x")), NotLeaderError);
});

Deno.test("Figure 7: a new leader repairs every follower log shape, with fast backtracking", () => {
  const ids = ["L", "a", "b", "c", "d", "e", "f"];
  const conf = init(ids);
  const shapes: Record<string, number[]> = {
    L: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
    b: [1, 1, 1, 4],
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    e: [1, 1, 1, 4, 4, 4, 4],
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
  };
  const c = new Cluster([]);
  for (const id of ids) {
    c.restore(id, {
      hardState: { term: 7, vote: null, commit: 1 },
      snapshot: null,
      entries: logFromTerms(shapes[id], conf),
    }, {
      maxEntriesPerMsg: 100,
    });
  }
  c.nodes.get("L")!.campaign();
  c.process("L");
  c.flush();
  assert.equal(c.leader(), "L");
  assert.equal(c.nodes.get("L")!.status().term, 8);
  c.tick(3);
  const want = c.logOf("L");
  assert.deepEqual(want.slice(-1), ["11@8"]);
  for (const id of ids) assert.deepEqual(c.logOf(id), want, `log of ${id}`);
  for (const id of ids) assert.equal(c.nodes.get(id)!.status().commit, 11);
  // f diverges at index 4 with 7 wrong entries: the term hint skips a term per round trip
  // instead of one index per round trip.
  const rejects = c.sent.filter((m) => m.from === "f" && m.type === "appResp" && m.reject).length;
  assert.ok(rejects <= 3, `f needed ${rejects} rejections`);
});

Deno.test("Figure 8: an old-term entry on a majority is not committed until a current-term one is", () => {
  const ids = ["s1", "s2", "s3", "s4", "s5"];
  const conf = init(ids);
  const c = new Cluster([]);
  const st = (terms: number[]) => ({
    hardState: { term: 3, vote: null, commit: 1 },
    snapshot: null,
    entries: logFromTerms(terms, conf),
  });
  // s1 led term 2 and wrote 2@2 to itself; s5 led term 3 and wrote 2@3 to s4.
  c.restore("s1", st([1, 2]), { maxEntriesPerMsg: 1 });
  c.restore("s2", st([1]), { maxEntriesPerMsg: 1 });
  c.restore("s3", st([1]), { maxEntriesPerMsg: 1 });
  c.restore("s4", st([1, 3]), { maxEntriesPerMsg: 1 });
  c.restore("s5", st([1, 3]), { maxEntriesPerMsg: 1 });
  // s1 wins term 4 with s2, s3; its term-4 entry (index 3) never leaves it.
  // (A probe carrying it to a node without index 2 is let through: it is rejected anyway.)
  c.drop = (m) =>
    m.type === "app" && m.entries.some((e) => e.index === 3) &&
    c.nodes.get(m.to)!.status().lastIndex >= 2;
  c.nodes.get("s1")!.campaign();
  c.process("s1");
  c.flush();
  assert.equal(c.leader(), "s1");
  c.tick(3);
  assert.deepEqual(c.logOf("s2"), ["1@1", "2@2"]);
  assert.deepEqual(c.logOf("s3"), ["1@1", "2@2"]);
  // 2@2 is on s1, s2, s3 (a majority) but it is from term 2: not committed.
  assert.equal(c.nodes.get("s1")!.status().commit, 1);
  // s1 crashes; s4 or s5 (2@3 beats 2@2) wins and overwrites index 2 — legal only because
  // 2@2 was never committed.
  c.stop("s1");
  heal(c);
  const l2 = c.elect();
  c.tick(3);
  assert.ok(l2 === "s4" || l2 === "s5", `leader ${l2}`);
  for (const id of ["s2", "s3", "s4", "s5"]) assert.equal(c.logOf(id)[1], "2@3", id);
  for (const id of ["s2", "s3", "s4", "s5"]) assert.ok(c.nodes.get(id)!.status().commit >= 3);
});

Deno.test("replication: batching limits entries per message; pipelining keeps several in flight", () => {
  const c = new Cluster(["a", "b", "c"], { maxEntriesPerMsg: 3, maxInflight: 4 });
  const l = c.elect();
  c.tick(2);
  c.sent = [];
  const n = c.nodes.get(l)!;
  // Hold the network: everything the leader sends stays queued.
  for (let i = 0; i < 20; i++) n.propose(te.encode(`v${i}`));
  c.process(l);
  const apps = c.sent.filter((m) => m.type === "app" && m.entries.length);
  assert.ok(apps.every((m) => m.entries.length <= 3));
  const perPeer = new Map<string, number>();
  for (const m of apps) perPeer.set(m.to, (perPeer.get(m.to) ?? 0) + 1);
  for (const k of perPeer.values()) assert.ok(k <= 20 && k >= 1);
  c.flush();
  c.tick(2);
  for (const id of c.nodes.keys()) {
    assert.deepEqual(c.appliedData(id), Array.from({ length: 20 }, (_, i) => `v${i}`));
  }
});

Deno.test("leader transfer: catches the target up, sends TimeoutNow, target leads", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  const target = [...c.nodes.keys()].find((id) => id !== l)!;
  // Make the target lag behind.
  c.drop = (m) => m.to === target && m.type === "app";
  for (let i = 0; i < 5; i++) c.nodes.get(l)!.propose(te.encode(`x${i}`));
  c.flush();
  heal(c);
  const oldTerm = c.nodes.get(l)!.status().term;
  c.nodes.get(l)!.transferLeader(target);
  assert.throws(() => c.nodes.get(l)!.propose(te.encode("during")), ProposalDroppedError);
  c.process(l);
  c.flush();
  assert.equal(c.leader(), target);
  assert.equal(c.nodes.get(target)!.status().term, oldTerm + 1);
  assert.ok(c.sent.some((m) => m.type === "timeoutNow" && m.to === target));
  assert.deepEqual(c.appliedData(target).slice(0, 5), ["x0", "x1", "x2", "x3", "x4"]);
});

Deno.test("snapshot: a follower behind the compacted log gets InstallSnapshot, then entries", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  const lag = [...c.nodes.keys()].find((id) => id !== l)!;
  isolate(c, lag);
  const ln = c.nodes.get(l)!;
  for (let i = 0; i < 20; i++) {
    ln.propose(te.encode(`v${i}`));
    c.process(l);
    c.flush();
  }
  c.tick(2);
  const applied = ln.status().applied;
  const snap = ln.compact(applied, te.encode(JSON.stringify(c.appliedData(l))));
  assert.equal(ln.status().firstIndex, applied + 1);
  ln.propose(te.encode("after"));
  c.process(l);
  heal(c);
  c.tick(5);
  assert.equal(c.installed.get(lag)!.length, 1);
  assert.equal(c.installed.get(lag)![0].index, snap.index);
  assert.deepEqual(
    JSON.parse(td.decode(c.installed.get(lag)![0].data)),
    c.appliedData(l).slice(0, 20),
  );
  assert.deepEqual(c.appliedData(lag), ["after"]);
  assert.equal(c.nodes.get(lag)!.status().commit, ln.status().commit);
  assert.deepEqual(c.nodes.get(lag)!.status().voters, ["a", "b", "c"]);
});

Deno.test("ReadIndex: served only after a heartbeat quorum; forwarded from followers", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  c.tick(2);
  const ln = c.nodes.get(l)!;
  ln.readIndex(te.encode("r1"));
  c.process(l);
  assert.equal(c.reads.get(l)!.length, 0, "no answer before the heartbeat round");
  c.flush();
  assert.deepEqual(c.reads.get(l)!.map((r) => td.decode(r.ctx)), ["r1"]);
  assert.equal(c.reads.get(l)![0].index, ln.status().commit);
  // From a follower: forwarded to the leader, answered back.
  const f = [...c.nodes.keys()].find((id) => id !== l)!;
  c.nodes.get(f)!.readIndex(te.encode("r2"));
  c.process(f);
  c.flush();
  assert.deepEqual(c.reads.get(f)!.map((r) => td.decode(r.ctx)), ["r2"]);
  // An isolated leader (no check-quorum step-down yet) must never answer.
  isolate(c, l);
  ln.readIndex(te.encode("r3"));
  c.process(l);
  c.tick(5);
  assert.equal(c.reads.get(l)!.length, 1);
  // A node that knows no leader refuses with NotLeaderError.
  const lone = new RawNode({
    id: "z",
    electionTick: 10,
    heartbeatTick: 1,
    rand: mulberry32(3),
    peers: ["z", "y"],
  });
  assert.throws(() => lone.readIndex(te.encode("r")), NotLeaderError);
});

Deno.test("membership: add a joiner, replace a node, remove the leader (it steps down)", () => {
  const c = new Cluster(["a", "b", "c", "d", "e"], {}, ["a", "b", "c"]);
  let l = c.elect();
  c.tick(2);
  c.nodes.get(l)!.proposeConfChange({ type: "add", node: "d" });
  // One change at a time.
  assert.throws(
    () => c.nodes.get(l)!.proposeConfChange({ type: "add", node: "e" }),
    ProposalDroppedError,
  );
  c.process(l);
  c.flush();
  c.tick(3);
  for (const id of ["a", "b", "c", "d"]) {
    assert.deepEqual(c.nodes.get(id)!.status().voters, ["a", "b", "c", "d"]);
  }
  // Replace: add e then (automatically, once that commits) remove a non-leader.
  const gone = ["a", "b", "c"].find((id) => id !== l)!;
  c.nodes.get(l)!.proposeConfChange({ type: "replace", add: "e", remove: gone });
  c.process(l);
  c.flush();
  c.tick(3);
  const expect = ["a", "b", "c", "d", "e"].filter((x) => x !== gone);
  assert.deepEqual(c.nodes.get(l)!.status().voters, expect);
  // Remove the leader itself.
  const old = l;
  c.nodes.get(l)!.proposeConfChange({ type: "remove", node: l });
  c.process(l);
  c.flush();
  c.tick(2);
  assert.notEqual(c.nodes.get(old)!.status().role, "leader");
  c.stop(old);
  c.stop(gone);
  l = c.elect();
  assert.ok(expect.includes(l) && l !== old);
  c.nodes.get(l)!.propose(te.encode("still works"));
  c.process(l);
  c.tick(3);
  for (const id of expect.filter((x) => x !== old)) {
    assert.ok(c.appliedData(id).includes("still works"));
  }
});

Deno.test("conf change refused before the new leader commits an entry of its term", () => {
  const c = new Cluster(["a", "b", "c"]);
  // Hold back every append so the leader's term entry cannot commit.
  c.drop = (m) => m.type === "app";
  const l = c.elect();
  assert.throws(
    () => c.nodes.get(l)!.proposeConfChange({ type: "add", node: "d" }),
    ProposalDroppedError,
  );
});

Deno.test("API contract: ready twice without advance, and proposals on followers", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  const f = [...c.nodes.keys()].find((id) => id !== l)!;
  const err = (() => {
    try {
      c.nodes.get(f)!.propose(te.encode("x"));
    } catch (e) {
      return e;
    }
  })();
  assert.ok(err instanceof NotLeaderError);
  assert.equal((err as NotLeaderError).leader, l);
  assert.match((err as Error).message, new RegExp(`leader is ${l}`));
  const n = c.nodes.get(l)!;
  n.propose(te.encode("y"));
  n.ready();
  assert.throws(() => n.ready(), RaftUsageError);
  n.advance();
  assert.throws(() => n.advance(), RaftUsageError);
});

Deno.test("restart: a node keeps term and vote from its hard state and re-applies its log", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  for (let i = 0; i < 3; i++) c.nodes.get(l)!.propose(te.encode(`p${i}`));
  c.process(l);
  c.flush();
  c.tick(2);
  const f = [...c.nodes.keys()].find((id) => id !== l)!;
  const before = c.nodes.get(f)!.status();
  const disk = c.disks.get(f)!;
  c.stop(f);
  c.applied.set(f, []);
  c.restore(f, { hardState: disk.hs, snapshot: disk.snapshot, entries: disk.entries });
  const after = c.nodes.get(f)!.status();
  assert.equal(after.term, before.term);
  assert.equal(after.vote, before.vote);
  assert.deepEqual(c.appliedData(f), ["p0", "p1", "p2"]);
});

Deno.test("replication: maxBytesPerMsg caps an append's payload (at least one entry goes)", () => {
  const c = new Cluster(["a", "b", "c"], { maxBytesPerMsg: 300, maxEntriesPerMsg: 1000 });
  const l = c.elect();
  c.tick(2);
  c.sent = [];
  for (let i = 0; i < 10; i++) c.nodes.get(l)!.propose(new Uint8Array(100));
  c.nodes.get(l)!.propose(new Uint8Array(1000)); // bigger than the cap on its own
  c.process(l);
  c.flush();
  c.tick(2);
  const apps = c.sent.filter((m) => m.type === "app" && m.entries.length);
  for (const m of apps) {
    const bytes = m.entries.reduce((s, e) => s + e.data.length + 24, 0);
    assert.ok(m.entries.length === 1 || bytes <= 300, `append of ${bytes} bytes`);
  }
  for (const id of c.nodes.keys()) assert.equal(c.nodes.get(id)!.status().commit, 13);
});

Deno.test("membership: a node added after compaction is brought up by a snapshot", () => {
  const c = new Cluster(["a", "b", "c", "d"], {}, ["a", "b", "c"]);
  const l = c.elect();
  const ln = c.nodes.get(l)!;
  for (let i = 0; i < 10; i++) ln.propose(te.encode(`v${i}`));
  c.process(l);
  c.flush();
  c.tick(2);
  ln.compact(ln.status().applied, te.encode("state"));
  ln.proposeConfChange({ type: "add", node: "d" });
  c.process(l);
  c.flush();
  c.tick(3);
  assert.equal(c.installed.get("d")!.length, 1);
  assert.deepEqual(c.installed.get("d")![0].conf.voters, ["a", "b", "c"]);
  assert.deepEqual(c.nodes.get("d")!.status().voters, ["a", "b", "c", "d"]);
  assert.equal(c.nodes.get("d")!.status().commit, ln.status().commit);
});

Deno.test("membership: a removed leader whose removal is uncommitted may still be elected", () => {
  // Thesis §4.2.2: the leader appends "remove self" and then loses leadership before it
  // commits. If it holds the only up-to-date log it must still be able to campaign.
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  c.tick(2);
  const others = [...c.nodes.keys()].filter((id) => id !== l);
  c.nodes.get(l)!.proposeConfChange({ type: "remove", node: l });
  // Only the first follower gets the entry; nobody hears back; the leader steps down.
  c.drop = (m) => m.from !== l || m.to !== others[0] || m.type !== "app";
  c.process(l);
  c.flush();
  c.tick(25);
  assert.notEqual(c.nodes.get(l)!.status().role, "leader");
  heal(c);
  // Whoever wins, the removal eventually commits and the cluster keeps working without l.
  c.tick(60);
  const w = c.elect();
  assert.deepEqual(c.nodes.get(w)!.status().voters, others.sort());
  c.stop(l);
  c.tick(40);
  const w2 = c.elect();
  assert.ok(others.includes(w2));
  c.nodes.get(w2)!.propose(te.encode("ok"));
  c.process(w2);
  c.tick(2);
  for (const id of others) assert.ok(c.appliedData(id).includes("ok"), id);
});

Deno.test("snapshot: a stale snapshot is answered with commit, never an unverified tail", () => {
  const conf = init(["L", "f", "g"]);
  const f = new RawNode({
    id: "f",
    electionTick: 10,
    heartbeatTick: 1,
    rand: mulberry32(5),
    restore: {
      hardState: { term: 3, vote: null, commit: 2 },
      snapshot: null,
      // 3@2 is an uncommitted entry from an old leader that the current one may not have.
      entries: logFromTerms([1, 1, 2], conf),
    },
  });
  while (f.hasReady()) {
    f.ready();
    f.advance();
  }
  f.step(makeMessage({
    type: "snap",
    from: "L",
    to: "f",
    term: 3,
    snapshot: { index: 2, term: 1, conf: { voters: ["L", "f", "g"] }, data: new Uint8Array(0) },
    chunk: { offset: 0, total: 0, crc: 0, last: true },
  }));
  const rd = f.ready();
  const resp = rd.messages.find((m) => m.type === "appResp")!;
  assert.equal(resp.index, 2, "must not claim index 3 matches the leader");
  assert.equal(rd.snapshot, null, "nothing to install");
});

Deno.test("ReadIndex: reads arriving together share one heartbeat round", () => {
  const c = new Cluster(["a", "b", "c"]);
  const l = c.elect();
  c.tick(2);
  c.sent = [];
  const ln = c.nodes.get(l)!;
  for (let i = 0; i < 10; i++) ln.readIndex(te.encode(`r${i}`));
  c.process(l);
  assert.equal(c.sent.filter((m) => m.type === "heartbeat").length, 2, "one round to 2 peers");
  c.flush();
  assert.deepEqual(
    c.reads.get(l)!.map((r) => td.decode(r.ctx)),
    Array.from({ length: 10 }, (_, i) => `r${i}`),
  );
});

Deno.test("ReadIndex: a new leader answers only once an entry of its term committed", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.drop = (m) => m.type === "app"; // the leader's empty entry cannot commit
  const l = c.elect();
  const ln = c.nodes.get(l)!;
  ln.readIndex(te.encode("early"));
  c.process(l);
  c.tick(3);
  assert.equal(c.reads.get(l)!.length, 0, "commit index of an old term is not safe to serve");
  heal(c);
  c.tick(3);
  const rs = c.reads.get(l)!;
  assert.equal(rs.length, 1);
  assert.ok(rs[0].index >= 2, `read index ${rs[0].index} covers the leader's entry`);
});
