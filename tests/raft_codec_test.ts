/**
 * Raft message codec: every message type round-trips exactly; malformed input (truncation,
 * bit flips, trailing bytes, bad tags, oversized counts) throws RaftCodecError and nothing else.
 */
import assert from "node:assert/strict";
import { decodeMessage, encodeMessage, RaftCodecError } from "../roles/master/raft/codec.ts";
import {
  makeMessage,
  type Message,
  MESSAGE_TYPES,
  type MessageType,
  mulberry32,
} from "../roles/master/raft/mod.ts";

const te = new TextEncoder();
const TYPES: readonly MessageType[] = MESSAGE_TYPES;

function sample(type: MessageType, r: () => number): Message {
  const big = Number.MAX_SAFE_INTEGER - Math.floor(r() * 1000);
  return makeMessage({
    type,
    from: "6f1c1f0e-0000-4000-8000-" + Math.floor(r() * 1e12).toString().padStart(12, "0"),
    to: "nœud-δ",
    term: Math.floor(r() * 1e6),
    logTerm: Math.floor(r() * 1e6),
    index: r() < 0.2 ? big : Math.floor(r() * 1e9),
    commit: Math.floor(r() * 1e9),
    reject: r() < 0.5,
    rejectHint: Math.floor(r() * 1e9),
    seq: Math.floor(r() * 1e6),
    ctx: r() < 0.5 ? new Uint8Array(0) : te.encode("read-" + r()),
    entries: type === "app"
      ? Array.from({ length: Math.floor(r() * 4) }, (_, i) => ({
        term: 3,
        index: 100 + i,
        type: i % 2 ? "conf" as const : "normal" as const,
        data: te.encode("x".repeat(Math.floor(r() * 50))),
      }))
      : [],
    snapshot: type === "snap"
      ? {
        index: 77,
        term: 5,
        conf: { voters: ["a", "b", "c"] },
        data: new Uint8Array([0, 1, 2, 255]),
      }
      : null,
  });
}

Deno.test("codec: every message type round-trips exactly", () => {
  const r = mulberry32(9);
  for (let i = 0; i < 50; i++) {
    for (const t of TYPES) {
      const m = sample(t, r);
      assert.deepEqual(decodeMessage(encodeMessage(m)), m);
    }
  }
});

Deno.test("codec: refuses values it cannot carry", () => {
  const m = makeMessage({ type: "app", from: "a", to: "b", term: -1 });
  assert.throws(() => encodeMessage(m), RaftCodecError);
  assert.throws(
    () => encodeMessage(makeMessage({ type: "app", from: "a", to: "b", index: 2 ** 60 })),
    RaftCodecError,
  );
});

Deno.test("codec: structural validation", () => {
  const good = encodeMessage(sample("heartbeat", mulberry32(1)));
  const bad = (b: Uint8Array, re: RegExp) =>
    assert.throws(() => decodeMessage(b), (e) => e instanceof RaftCodecError && re.test(e.message));
  bad(new Uint8Array(0), /truncated version/);
  bad(Uint8Array.of(9, 1), /unsupported version/);
  bad(Uint8Array.of(1, 0), /unknown type code/);
  bad(Uint8Array.of(1, 14), /unknown type code/);
  bad(new Uint8Array([...good, 0]), /trailing/);
  bad(good.subarray(0, good.length - 1), /truncated/);
  // A snap message without a snapshot, and a heartbeat with one, are both refused.
  const snap = encodeMessage(sample("snap", mulberry32(2)));
  const asHeartbeat = snap.slice();
  asHeartbeat[1] = 7;
  bad(asHeartbeat, /with snapshot/);
  // A huge entry count is refused before allocating anything.
  const m = encodeMessage(makeMessage({ type: "app", from: "a", to: "b" }));
  // The entry count is followed by the snapshot flag and the chunk flag (one byte each).
  const countAt = m.length - 6;
  const huge = m.slice();
  new DataView(huge.buffer).setUint32(countAt, 0xffffffff);
  bad(huge, /entry count/);
});

Deno.test("codec: fuzzed corruptions decode to a valid message or throw RaftCodecError", () => {
  const r = mulberry32(12345);
  let rejected = 0;
  for (let i = 0; i < 3000; i++) {
    const m = sample(TYPES[i % TYPES.length], r);
    const b = encodeMessage(m);
    const c = b.slice();
    const kind = r();
    let input: Uint8Array;
    if (kind < 0.4) {
      const flips = 1 + Math.floor(r() * 4);
      for (let k = 0; k < flips; k++) c[Math.floor(r() * c.length)] ^= 1 << Math.floor(r() * 8);
      input = c;
    } else if (kind < 0.7) {
      input = c.subarray(0, Math.floor(r() * c.length));
    } else if (kind < 0.85) {
      input = new Uint8Array([
        ...c,
        ...Array.from({ length: 1 + Math.floor(r() * 8) }, () => r() * 256),
      ]);
    } else {
      input = Uint8Array.from({ length: Math.floor(r() * 80) }, () => Math.floor(r() * 256));
    }
    try {
      const d = decodeMessage(input);
      // Whatever decodes must re-encode to the same bytes (the codec is canonical).
      assert.deepEqual(encodeMessage(d), input);
    } catch (e) {
      if (!(e instanceof RaftCodecError)) throw e;
      rejected++;
    }
  }
  assert.ok(rejected > 2000, `only ${rejected} rejected`);
});
