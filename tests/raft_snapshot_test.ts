/**
 * Snapshot transfer in chunks (roles/master/raft/README.md, "Snapshot transfer").
 *
 * Core (in-memory cluster, tests/raft_harness.ts): a snapshot travels as chunks no bigger than
 * `snapshotChunkBytes`, views of the stored snapshot, at most `snapshotWindow` ahead of the
 * follower's acknowledgements, and is installed byte for byte once whole; the leader starts no
 * second transfer while one is in flight, counts it delivered only on the follower's answer, and
 * after a failure retries with a growing backoff (never a resend loop); a lost chunk is resent
 * from the last acknowledged one; a follower that lost its partial copy makes the leader start
 * over. Hostile chunks (bad offsets, totals, flags, checksums, sizes, acknowledgements of bytes
 * never sent) are refused before any state changes; duplicates, gaps and chunks of unknown
 * transfers are ignored and counted.
 *
 * Real processes: 3 masters with a small chunk size; a follower wiped clean rejoins under a new
 * name, receives a many-chunk snapshot, installs it, and the leader sent it a bounded number of
 * times; with it the group commits after another member is killed.
 */
import assert from "node:assert/strict";
import {
  makeMessage,
  type Message,
  mulberry32,
  type RaftConfig,
  RaftMessageError,
  RaftSnapshotDataError,
  type RawNode,
  SNAPSHOT_STALLS,
} from "../roles/master/raft/mod.ts";
import { crc32 } from "../lib/crc32.ts";
import { Cluster } from "./raft_harness.ts";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ClusterOp, MessageType, uuidToHex } from "../wire/mod.ts";
import { SNAPSHOT_CHUNK_ENV } from "../roles/master/raft_group.ts";
import { waitFor } from "./wait.ts";
import { jobIds, leaderName } from "./cluster_helpers.ts";

const te = new TextEncoder();
const ELECTION = 10; // the harness's electionTick

/** `n` seeded pseudo-random bytes. */
function bytes(n: number, seed = 1): Uint8Array {
  const r = mulberry32(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

interface Setup {
  c: Cluster;
  l: string;
  lag: string;
  ln: RawNode;
  data: Uint8Array;
}

/**
 * 3 nodes; `lag` is cut off while the leader commits and compacts with `size` bytes of state, so
 * it can only catch up by snapshot. The network stays cut (c.drop) until the test opens it.
 */
function setup(size: number, cfg: Partial<RaftConfig> = {}): Setup {
  const c = new Cluster(["a", "b", "c"], { snapshotChunkBytes: 1000, snapshotWindow: 3, ...cfg });
  const l = c.elect();
  c.tick(2);
  const lag = ["a", "b", "c"].find((x) => x !== l)!;
  c.drop = (m) => m.to === lag || m.from === lag;
  const ln = c.nodes.get(l)!;
  for (let i = 0; i < 5; i++) ln.propose(te.encode(`v${i}`));
  c.process(l);
  c.tick(2);
  const data = bytes(size);
  ln.compact(ln.status().applied, data);
  return { c, l, lag, ln, data };
}

const snapsTo = (c: Cluster, to: string) => c.sent.filter((m) => m.type === "snap" && m.to === to);
const state = (s: Setup) => s.ln.status().progress.get(s.lag)!.state;

/** Everything step() may change that a test can see. */
function fingerprint(n: RawNode): string {
  const s = n.status();
  return JSON.stringify({
    ...s,
    progress: [...s.progress],
    stats: n.snapshotStats,
    ready: n.hasReady(),
    snap: [n.log.snapIndex, n.log.snapTerm],
  });
}

Deno.test("snapshot transfer: chunks of at most snapshotChunkBytes, views of the stored snapshot, installed byte for byte", () => {
  const s = setup(10_500);
  const { c, l, lag, ln, data } = s;
  c.drop = () => false;
  c.tick(3);
  const installed = c.installed.get(lag)!;
  assert.equal(installed.length, 1);
  assert.deepEqual(installed[0].data, data);
  const snaps = snapsTo(c, lag);
  // One transfer, nothing resent on a lossless network: 11 chunks in order.
  assert.deepEqual(
    snaps.map((m) => m.chunk!.offset),
    Array.from({ length: 11 }, (_, i) => i * 1000),
  );
  assert.deepEqual(snaps.map((m) => m.snapshot!.data.length), [...Array(10).fill(1000), 500]);
  assert.deepEqual(snaps.map((m) => m.chunk!.last), [...Array(10).fill(false), true]);
  assert.ok(snaps.every((m) => m.chunk!.total === 10_500 && m.seq === snaps[0].seq));
  assert.equal(snaps[10].chunk!.crc, crc32(data), "the last chunk carries the whole's CRC");
  // Streamed from the stored snapshot: every chunk is a view of its bytes, not a copy.
  assert.ok(snaps.every((m) => m.snapshot!.data.buffer === ln.log.snapshot!.data.buffer));
  assert.equal(ln.snapshotStats.sent, 1);
  assert.equal(ln.snapshotStats.retransmits, 0);
  assert.equal(c.nodes.get(lag)!.snapshotStats.received, 1);
  assert.equal(state(s), "replicate");
  // And it replicates from there.
  ln.propose(te.encode("after"));
  c.process(l);
  c.tick(2);
  assert.deepEqual(c.appliedData(lag), ["after"]);
  assert.equal(c.nodes.get(lag)!.status().commit, ln.status().commit);
});

Deno.test("snapshot transfer: at most snapshotWindow chunks ahead of the acknowledgements; lost acks are recovered", () => {
  const s = setup(10_500);
  const { c, lag, ln, data } = s;
  c.drop = (m) => m.from === lag && m.type === "snapResp";
  c.tick(1);
  assert.equal(snapsTo(c, lag).length, 3, "the window: 3 chunks, then wait");
  assert.equal(state(s), "snapshot");
  c.tick(ELECTION - 2);
  assert.equal(snapsTo(c, lag).length, 3, "nothing more without an acknowledgement");
  c.drop = () => false;
  c.tick(4);
  // The timeout resent chunk 0..2; the follower answered how far it is; the rest followed.
  assert.equal(ln.snapshotStats.retransmits, 1);
  assert.equal(ln.snapshotStats.sent, 1);
  assert.deepEqual(c.installed.get(lag)![0].data, data);
  assert.equal(state(s), "replicate");
});

Deno.test("snapshot transfer: a lost chunk is resent from the last acknowledged one, in the same transfer", () => {
  const s = setup(10_500);
  const { c, lag, ln, data } = s;
  let lost = false;
  c.drop = (m) => {
    if (m.type === "snap" && m.chunk!.offset === 4000 && !lost) return lost = true;
    return false;
  };
  c.tick(ELECTION + 3);
  assert.ok(lost);
  assert.deepEqual(c.installed.get(lag)![0].data, data);
  assert.equal(ln.snapshotStats.sent, 1, "one transfer");
  assert.ok(ln.snapshotStats.retransmits >= 1);
  assert.ok(c.nodes.get(lag)!.snapshotStats.chunksIgnored >= 1, "chunks after the gap ignored");
  const offsets = snapsTo(c, lag).map((m) => m.chunk!.offset);
  assert.equal(offsets.filter((o) => o < 4000).length, 4, "what was acknowledged is not resent");
});

Deno.test("snapshot transfer: counted delivered only on the follower's answer; failures back off, never a resend loop", () => {
  const s = setup(5_000);
  const { c, l, lag, ln } = s;
  // The follower gets the whole snapshot and installs it, but its answer (the appResp after
  // installing) never reaches the leader.
  c.drop = (m) => m.from === lag && m.type === "appResp" && !m.reject;
  const starts: number[] = [];
  let seen = 0;
  for (let t = 0; t < 400; t++) {
    c.tick(1);
    const seqs = new Set(snapsTo(c, lag).map((m) => m.seq));
    if (seqs.size > seen) {
      seen = seqs.size;
      starts.push(t);
    }
    // In flight (state snapshot) or backing off: never a transfer on top of another.
    assert.equal(ln.snapshotStats.sent, seqs.size);
  }
  assert.equal(c.installed.get(lag)!.length, 1, "the follower did install it");
  const gaps = starts.slice(1).map((t, i) => t - starts[i]);
  // Each attempt waits out its timeouts, then a backoff that doubles (capped).
  const fail = (SNAPSHOT_STALLS + 1) * ELECTION;
  for (let i = 0; i < gaps.length; i++) {
    assert.ok(gaps[i] >= fail + ELECTION * Math.min(2 ** i, 8), `gaps ${gaps}`);
  }
  assert.ok(starts.length >= 3 && starts.length <= 6, `transfers at ticks ${starts}`);
  assert.equal(ln.snapshotStats.failed, starts.length - (state(s) === "snapshot" ? 1 : 0));
  // Bounded traffic: per attempt the chunks once, plus a window per timeout.
  assert.ok(ln.snapshotStats.chunksSent <= starts.length * (5 + 3 * SNAPSHOT_STALLS));
  // Once the answers get through, the follower replicates and the backoff is forgotten.
  c.drop = () => false;
  c.tick(ELECTION * 12);
  assert.equal(state(s), "replicate");
  ln.propose(te.encode("after"));
  c.process(l);
  c.tick(2);
  assert.deepEqual(c.appliedData(lag), ["after"]);
});

Deno.test("snapshot transfer: reportSnapshot(true) changes nothing, reportSnapshot(false) fails it with a backoff", () => {
  const s = setup(5_000);
  const { c, lag, ln } = s;
  // The leader hears nothing about the chunks (but learns the follower is behind).
  c.drop = (m) => m.from === lag && (m.type === "snapResp" || (m.type === "appResp" && !m.reject));
  c.tick(1);
  assert.equal(state(s), "snapshot");
  ln.reportSnapshot(lag, true);
  assert.equal(state(s), "snapshot", "a sent snapshot is not a delivered one");
  ln.reportSnapshot(lag, false);
  assert.equal(state(s), "probe");
  assert.equal(ln.snapshotStats.failed, 1);
  const before = snapsTo(c, lag).length;
  c.tick(ELECTION - 1);
  assert.equal(snapsTo(c, lag).length, before, "nothing sent during the backoff");
  assert.equal(ln.snapshotStats.sent, 1);
  c.drop = () => false;
  c.tick(3);
  assert.equal(ln.snapshotStats.sent, 2);
  assert.equal(state(s), "replicate");
});

Deno.test("snapshot transfer: a follower that restarted mid-transfer rejects the next chunk; the leader starts over", () => {
  const s = setup(10_500, { snapshotWindow: 1 });
  const { c, lag, ln, data } = s;
  let restarted = false;
  c.drop = (m) => {
    if (m.type === "snap" && m.to === lag && m.chunk!.offset === 3000 && !restarted) {
      restarted = true;
      const d = c.disks.get(lag)!;
      c.stop(lag);
      c.start(lag, {
        restore: { hardState: d.hs, snapshot: d.snapshot, entries: d.entries },
        snapshotChunkBytes: 1000,
      });
      return true; // lost with the crash
    }
    return false;
  };
  c.tick(ELECTION * 2 + 3);
  assert.ok(restarted);
  assert.deepEqual(c.installed.get(lag)!.at(-1)!.data, data);
  assert.equal(ln.snapshotStats.sent, 1, "the same transfer, started over");
  assert.equal(ln.snapshotStats.failed, 0);
  assert.ok(c.sent.some((m) => m.type === "snapResp" && m.reject));
});

Deno.test("snapshot transfer: a follower refuses a snapshot over maxSnapshotBytes; the leader backs off", () => {
  const c = new Cluster(["a", "b", "c"], { snapshotChunkBytes: 1000 });
  const l = c.elect();
  c.tick(2);
  const lag = ["a", "b", "c"].find((x) => x !== l)!;
  const d = c.disks.get(lag)!;
  c.stop(lag);
  const ln = c.nodes.get(l)!;
  for (let i = 0; i < 5; i++) ln.propose(te.encode(`v${i}`));
  c.process(l);
  c.tick(2);
  ln.compact(ln.status().applied, bytes(5_000));
  const f = c.start(lag, {
    restore: { hardState: d.hs, snapshot: d.snapshot, entries: d.entries },
    maxSnapshotBytes: 4_999,
  });
  let refused = 0;
  const step = f.step.bind(f);
  f.step = (m: Message) => {
    try {
      step(m);
    } catch (e) {
      assert.ok(e instanceof RaftMessageError && /exceeds maxSnapshotBytes/.test(e.message));
      refused++;
    }
  };
  c.tick(300);
  assert.ok(refused > 0);
  assert.equal(c.installed.get(lag)!.length, 0);
  // 300 ticks: each failed attempt takes its timeouts plus a backoff of 1, 2, 4, 8, 8...
  // election timeouts: a handful of transfers, not one per heartbeat.
  assert.ok(ln.snapshotStats.sent >= 2 && ln.snapshotStats.sent <= 5, `${ln.snapshotStats.sent}`);
  // The others keep committing.
  ln.propose(te.encode("still"));
  c.process(l);
  c.tick(2);
  assert.ok(
    ["a", "b", "c"].filter((x) => x !== lag).every((x) => c.appliedData(x).includes("still")),
  );
});

/**
 * A follower in the middle of a transfer: chunks [0, 2000) of 5,000 bytes received; `next` is
 * the real chunk at 2000, `rest` the chunks after it.
 */
function midTransfer(cfg: Partial<RaftConfig> = {}) {
  const s = setup(5_000, { snapshotWindow: 5, ...cfg });
  const { c, lag } = s;
  const held: Message[] = [];
  c.drop = (m) => {
    if (m.type === "snap" && m.to === lag && m.chunk!.offset >= 2000) {
      held.push(m);
      return true;
    }
    return m.from === lag && m.type === "snapResp";
  };
  c.tick(1);
  c.drop = () => true; // quiet: the test drives the follower by hand
  const f = c.nodes.get(lag)!;
  while (f.hasReady()) {
    f.ready();
    f.advance();
  }
  assert.deepEqual(held.map((m) => m.chunk!.offset), [2000, 3000, 4000]);
  return { ...s, f, next: held[0], rest: held.slice(1) };
}

function refuse(f: RawNode, m: Message, re: RegExp): void {
  const before = fingerprint(f);
  assert.throws(
    () => f.step(m),
    (e) => e instanceof RaftMessageError && re.test(e.message),
    re.source,
  );
  assert.equal(fingerprint(f), before, `refused ${re.source} changed state`);
}

function drain(f: RawNode): Message[] {
  const out: Message[] = [];
  while (f.hasReady()) {
    out.push(...f.ready().messages);
    f.advance();
  }
  return out;
}

Deno.test("hostile chunks: impossible chunks are refused before any state changes; the transfer then completes", () => {
  const { f, next, rest, data } = midTransfer();
  const chunk = (
    m: Message,
    c: Partial<NonNullable<Message["chunk"]>>,
    d?: Uint8Array,
  ): Message => ({
    ...m,
    chunk: { ...m.chunk!, ...c },
    snapshot: { ...m.snapshot!, data: d ?? m.snapshot!.data },
  });
  refuse(f, chunk(next, { total: 2500 }), /beyond total/);
  refuse(f, chunk(next, { offset: 4500 }), /beyond total/);
  refuse(f, chunk(next, { offset: 6000 }), /beyond total/);
  refuse(f, chunk(next, { last: true }), /last=true/);
  refuse(f, chunk(rest[1], { last: false }), /last=false/);
  refuse(f, chunk(next, { crc: next.chunk!.crc ^ 1 }), /checksum mismatch/);
  refuse(f, chunk(next, {}, next.snapshot!.data.map((b) => b ^ 0xff)), /checksum mismatch/);
  refuse(f, chunk(next, { offset: 0, crc: 12345 }), /checksum mismatch/);
  refuse(f, chunk(next, {}, new Uint8Array(0)), /empty chunk/);
  for (const v of [-1, 0.5, NaN, 2 ** 53, Infinity]) {
    refuse(f, chunk(next, { offset: v }), /out of range/);
    refuse(f, chunk(next, { total: v }), /out of range|beyond total/);
  }
  refuse(f, chunk(next, { crc: 2 ** 32 }), /crc .* out of range/);
  refuse(f, chunk(next, { total: 2 ** 31 }), /exceeds maxSnapshotBytes/);
  refuse(f, { ...next, chunk: null }, /without a snapshot chunk/);
  refuse(
    f,
    makeMessage({
      type: "heartbeat",
      from: next.from,
      to: f.id,
      term: next.term,
      chunk: next.chunk,
    }),
    /with a snapshot chunk/,
  );
  refuse(
    f,
    makeMessage({ type: "snapResp", from: next.from, to: f.id, term: next.term }),
    /without a snapshot chunk/,
  );
  // Not impossible, just not the next one: ignored and counted, answered with how far we are.
  const ignored = f.snapshotStats.chunksIgnored;
  f.step(rest[0]); // a gap (3000 before 2000)
  f.step({
    ...next,
    chunk: { ...next.chunk!, offset: 1000 },
    snapshot: { ...next.snapshot!, data: data.subarray(1000, 2000) },
  }); // duplicate
  assert.equal(f.snapshotStats.chunksIgnored, ignored + 2);
  const acks = drain(f).filter((m) => m.type === "snapResp");
  assert.deepEqual(acks.map((m) => [m.chunk!.offset, m.reject]), [[2000, false], [2000, false]]);
  assert.ok(acks.every((m) => m.chunk!.crc === crc32(data.subarray(0, 2000))));
  // A chunk of a transfer it does not know (another seq): rejected, so its leader starts over.
  f.step({ ...rest[0], seq: next.seq + 7 });
  const rej = drain(f).filter((m) => m.type === "snapResp");
  assert.deepEqual(rej.map((m) => [m.chunk!.offset, m.reject, m.seq]), [[0, true, next.seq + 7]]);
  // The real chunks still complete it, byte for byte.
  for (const m of [next, ...rest]) f.step(m);
  const rd = f.ready();
  assert.deepEqual(rd.snapshot!.data, data);
  f.advance();
  assert.equal(f.snapshotStats.received, 1);
});

Deno.test("hostile chunks: a leader refuses acknowledgements of bytes it never sent", () => {
  const { c, l, lag, ln } = setup(5_000, { snapshotWindow: 1 });
  c.drop = (m) => m.from === lag && m.type === "snapResp";
  c.tick(1);
  c.drop = () => true;
  const t = ln.status().term;
  const seq = snapsTo(c, lag)[0].seq;
  const index = ln.log.snapIndex;
  const ack = (offset: number, crc: number, extra: Partial<Message> = {}) =>
    makeMessage({
      type: "snapResp",
      from: lag,
      to: l,
      term: t,
      index,
      seq,
      chunk: { offset, total: 5000, crc, last: false },
      ...extra,
    });
  // Window 1: only chunk 0 was sent.
  refuse(ln, ack(2000, crc32(ln.log.snapshot!.data.subarray(0, 2000))), /never sent/);
  refuse(ln, ack(5000, crc32(ln.log.snapshot!.data)), /never sent/);
  refuse(ln, ack(500, 0), /never sent/); // not a chunk end
  refuse(ln, ack(1000, 42), /never sent/); // wrong checksum
  refuse(
    ln,
    ack(1000, crc32(ln.log.snapshot!.data.subarray(0, 1000)), {
      chunk: { offset: 1000, total: 4000, crc: 0, last: false },
    }),
    /never sent/,
  );
  // An acknowledgement of another transfer is stale, not impossible: ignored.
  const before = fingerprint(ln);
  ln.step(ack(3000, 0, { seq: seq + 5 }));
  assert.equal(fingerprint(ln), before);
  // The true one moves it on.
  ln.step(ack(1000, crc32(ln.log.snapshot!.data.subarray(0, 1000))));
  assert.ok(drain(ln).some((m) => m.type === "snap" && m.chunk!.offset === 1000));
});

Deno.test("hostile chunks: data the application refuses is refused with RaftSnapshotDataError, nothing installed", () => {
  const refusals: number[] = [];
  const { f, next, rest } = midTransfer({
    checkSnapshot: (d) => {
      refusals.push(d.length);
      throw new Error("not a snapshot");
    },
  });
  f.step(next);
  f.step(rest[0]);
  const before = fingerprint(f);
  assert.throws(() => f.step(rest[1]), RaftSnapshotDataError);
  assert.equal(fingerprint(f), before);
  assert.deepEqual(refusals, [5000], "checked once, whole");
  assert.equal(f.ready().snapshot, null);
});

Deno.test("hostile chunks: 5,000 fuzzed chunks and acks: only RaftMessageError escapes, refusals change nothing", () => {
  const r = mulberry32(99);
  const { f, next, rest, data, ln, l } = midTransfer();
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  const num = () =>
    pick([0, 1, 999, 1000, 1999, 2000, 2001, 3000, 5000, 5001, 2 ** 31, 2 ** 48, -1, NaN]);
  const real = [next, ...rest];
  /** A real chunk with at least one field changed (so the real transfer never moves on). */
  const mutant = (base: Message, i: number): Message => {
    const c = { ...base.chunk! };
    const snap = { ...base.snapshot! };
    let seq = base.seq;
    const fields = ["seq", "offset", "total", "crc", "last", "index", "term", "data"];
    const change = new Set([pick(fields), ...fields.filter(() => r() < 0.15)]);
    if (change.has("seq")) seq = pick([base.seq + 1, 0, num()]);
    if (change.has("offset")) c.offset = pick([0, c.offset + 1000, c.offset - 1000, num()]);
    if (change.has("total")) c.total = pick([c.total + 1, c.total - 1, num()]);
    if (change.has("crc")) c.crc = (c.crc ^ (1 + Math.floor(r() * 0xffff))) >>> 0;
    if (change.has("last")) c.last = !c.last;
    if (change.has("index")) snap.index = pick([snap.index + 1, snap.index - 1, num()]);
    if (change.has("term")) snap.term = pick([snap.term + 1, 0, num()]);
    if (change.has("data")) snap.data = bytes(pick([0, 1, 999, 1000, 1001]), i);
    const b = base.chunk!, bs = base.snapshot!;
    if (
      seq === base.seq && c.offset === b.offset && c.total === b.total && c.crc === b.crc &&
      c.last === b.last && snap.index === bs.index && snap.term === bs.term && snap.data === bs.data
    ) c.crc = (c.crc ^ 1) >>> 0; // a "mutation" that picked the same value
    return { ...base, seq, chunk: c, snapshot: snap };
  };
  let refused = 0, toLeader = 0;
  for (let i = 0; i < 5000; i++) {
    const base = pick(real);
    const leader = r() < 0.3;
    const m: Message = leader
      ? makeMessage({
        type: "snapResp",
        from: f.id,
        to: l,
        term: ln.status().term,
        index: pick([base.snapshot!.index, num()]),
        seq: pick([base.seq, base.seq + 1, 0]),
        reject: r() < 0.2,
        chunk: {
          offset: num(),
          total: pick([5000, num()]),
          crc: pick([0, base.chunk!.crc, num()]),
          last: r() < 0.5,
        },
      })
      : mutant(base, i);
    const node = leader ? ln : f;
    if (leader) toLeader++;
    const before = fingerprint(node);
    try {
      node.step(m);
    } catch (e) {
      if (!(e instanceof RaftMessageError)) throw new Error(`case ${i}: ${e}`, { cause: e });
      refused++;
      assert.equal(fingerprint(node), before, `case ${i}: refused ${e.message} changed state`);
    }
    drain(node);
  }
  assert.ok(refused > 1500 && toLeader > 1000, `${refused} refused, ${toLeader} acks`);
  assert.equal(f.snapshotStats.received, 0, "no mutant completed a snapshot");
  // The partial copy is intact: the real chunks in order deliver the exact snapshot.
  for (const m of real) f.step(m);
  const rd = f.ready();
  assert.deepEqual(rd.snapshot!.data, data);
  f.advance();
});

// ---------------------------------------------------------------- real processes

const PROGRAM = te.encode("#!/bin/sh\necho hi\n");
const CHUNK = 1024;

/** The JSON log lines of a node that contain `msg`. */
async function logLines(
  c: LocalCluster,
  name: string,
  msg: string,
): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(`${c.dataDir}/logs/${name}.log`).catch(() => "");
  return text.split("\n").filter((l) => l.includes(msg)).map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return { line: l };
    }
  });
}

Deno.test("masters: a wiped follower rejoins by a snapshot of many chunks, sent a bounded number of times", async () => {
  // The masters inherit the environment: snapshots of a few KiB span many 1 KiB chunks.
  Deno.env.set(SNAPSHOT_CHUNK_ENV, String(CHUNK));
  let cluster: LocalCluster;
  try {
    cluster = await LocalCluster.start({
      masters: 3,
      workers: 0,
      extraArgs: { master: ["--snapshot-every", "20"] },
    });
  } finally {
    Deno.env.delete(SNAPSHOT_CHUNK_ENV);
  }
  const client = new DsysClient(cluster.info, { deadlineMs: 20_000 });
  try {
    const submit = () =>
      client.submit({
        program: PROGRAM,
        programName: "hi.sh",
        argument: "x".repeat(200),
        chunks: 1,
        inputs: [],
        timeLimitMs: 10_000,
      });
    for (let i = 0; i < 40; i++) await submit();
    const before = await jobIds(client);
    const leader = await leaderName(cluster, client);
    const victim = ["m1", "m2", "m3"].find((m) => m !== leader)!;
    const proc = cluster.procs.get(victim)!;
    await cluster.kill(victim);
    await Deno.remove(proc.args[proc.args.indexOf("--data") + 1], { recursive: true });
    const change = (op: number, member: string) =>
      client.masters.request({ type: MessageType.ClusterChange, node: client.node, op, member });
    await change(ClusterOp.RemoveMaster, `${victim}@${proc.endpoint}`);
    const fresh = `${victim}b`;
    const freshId = `${fresh}@${proc.endpoint}`;
    await cluster.admitKey(fresh, "master");
    await change(ClusterOp.AddMaster, freshId);
    const args = [...proc.args];
    args[args.indexOf("--id") + 1] = fresh;
    args.splice(args.indexOf("--peers"), 2, "--join");
    Deno.env.set(SNAPSHOT_CHUNK_ENV, String(CHUNK));
    try {
      await cluster.spawn(fresh, "master", args);
    } finally {
      Deno.env.delete(SNAPSHOT_CHUNK_ENV);
    }
    const installed = await waitFor(`${fresh} to install a snapshot`, async () => {
      const l = await logLines(cluster, fresh, "installed snapshot");
      return l.length ? l[0] : null;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    const bytes = Number(installed!.bytes);
    assert.ok(bytes > 4 * CHUNK, `snapshot of ${bytes} bytes spans several ${CHUNK}-byte chunks`);

    // With the fresh member caught up, the group commits even without one of the old ones.
    const now = await leaderName(cluster, client);
    const other = ["m1", "m2", "m3"].find((m) => m !== victim && m !== now)!;
    await cluster.kill(other);
    const job = uuidToHex(await submit());
    const after = await jobIds(client);
    assert.deepEqual(after.sort(), [...before, job].sort());

    // Every master that led sent the fresh member a snapshot a bounded number of times.
    let sent = 0;
    for (const m of ["m1", "m2", "m3"]) {
      const lines = await logLines(cluster, m, "sending snapshot");
      sent += lines.filter((l) => l.to === freshId).length;
    }
    assert.ok(sent >= 1 && sent <= 3, `the fresh member was sent ${sent} snapshots`);
    const fails = await logLines(cluster, fresh, "dropped raft message");
    assert.deepEqual(fails.map((l) => l.msg), [], "the fresh member dropped nothing");
  } catch (e) {
    await cluster.printLogs(15);
    throw e;
  } finally {
    await client.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
  }
});
