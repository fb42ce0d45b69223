/** Round trips, test vectors and boundary cases of the wire codec (wire/). */
import assert from "node:assert/strict";
import {
  decode,
  DEFAULT_LIMITS,
  encode,
  ErrorCode,
  FIELD_SIZE,
  fileIdOf,
  GENERIC_HEADER_SIZE,
  headerSize,
  type Message,
  MESSAGE_SPECS,
  MessageType,
  NIL_UUID,
  randomUuid,
  SPEC_BY_TYPE,
  uuidEquals,
  uuidFromHex,
  uuidFromString,
  uuidToHex,
  uuidToString,
  WireError,
  wireErrorReply,
} from "../wire/mod.ts";
import { EXAMPLES } from "../wire/examples.ts";
import { randomMessage, Rng } from "./wire_gen.ts";

const NODE = uuidFromString("00112233-4455-6677-8899-aabbccddeeff");
function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
function setU64(f: Uint8Array, pos: number, v: bigint): void {
  new DataView(f.buffer, f.byteOffset).setBigUint64(pos, v, true);
}
function setU32(f: Uint8Array, pos: number, v: number): void {
  new DataView(f.buffer, f.byteOffset).setUint32(pos, v, true);
}
/** Asserts decode fails with a WireError of `code`. */
function rejects(frame: Uint8Array, code: string, limits?: Parameters<typeof decode>[1]): void {
  assert.throws(() => decode(frame, limits), (e) => {
    assert.ok(e instanceof WireError, `expected WireError, got ${e}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}
/** Offset of a fixed field (after the generic header) in a message's header. */
function offsetOf(type: number, wire: string): number {
  let pos = GENERIC_HEADER_SIZE;
  for (const f of SPEC_BY_TYPE[type]!.fields) {
    if (f.wire === wire) return pos;
    pos += FIELD_SIZE[f.kind];
  }
  throw new Error(`no field ${wire}`);
}

Deno.test("uuid helpers", async () => {
  const s = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
  const id = uuidFromString(s);
  assert.equal(uuidToString(id), s);
  assert.equal(uuidToHex(id), "6ba7b8109dad41d180b400c04fd430c8");
  assert.ok(uuidEquals(uuidFromHex("6BA7B8109DAD41D180B400C04FD430C8"), id));
  assert.ok(uuidEquals(uuidFromString(uuidToHex(id)), id));
  assert.ok(!uuidEquals(id, NIL_UUID));
  const r = randomUuid();
  assert.equal(r.length, 16);
  assert.equal(r[6] >> 4, 4, "version 4");
  assert.match(uuidToString(r), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.throws(() => uuidFromString("nope"), WireError);
  assert.throws(() => uuidFromHex("abc"), WireError);
  assert.throws(() => uuidToHex(new Uint8Array(15)), WireError);
  const fid = await fileIdOf(new TextEncoder().encode("hello"));
  assert.equal(uuidToHex(fid), "2cf24dba5fb0a30e26e83b2ac5b9e29e");
});

Deno.test("generic header layout: type, uuid upper/lower as LE u64, header_length", () => {
  const f = encode({ type: MessageType.Ok, node: NODE, value: 0x0102030405 });
  assert.equal(
    hex(f),
    "02" + "7766554433221100" + "ffeeddccbbaa9988" + "2100000000000000" + "0504030201000000",
  );
});

Deno.test("design base sizes and schema invariants", () => {
  const base = (w: string) => MESSAGE_SPECS.find((s) => s.wire === w)!.base;
  assert.equal(GENERIC_HEADER_SIZE, 25);
  assert.equal(base("worker_request"), 73);
  assert.equal(base("worker_status"), 42);
  assert.equal(base("file_request"), 41);
  assert.equal(base("file_response"), 49);
  const codes = new Set<number>();
  for (const s of MESSAGE_SPECS) {
    assert.ok(!codes.has(s.type), `duplicate code ${s.type}`);
    codes.add(s.type);
    // Non-extension fields form exactly the base; extension fields only follow them.
    let pos = GENERIC_HEADER_SIZE;
    let seenExt = false;
    for (const f of s.fields) {
      if (f.ext) seenExt = true;
      else {
        assert.ok(!seenExt, `${s.wire}.${f.wire}: base field after an extension field`);
        pos += FIELD_SIZE[f.kind];
      }
    }
    assert.equal(pos, s.base, `${s.wire} base`);
    for (const f of s.fields) {
      if (f.lengthOf) assert.ok(s.sections.some((x) => x.key === f.lengthOf), f.wire);
    }
  }
  assert.deepEqual(
    Object.values(MessageType).sort((a, b) => a - b),
    [...codes].sort((a, b) => a - b),
  );
  assert.equal(EXAMPLES.length, MESSAGE_SPECS.length);
});

Deno.test("every example round-trips", () => {
  for (const m of EXAMPLES) {
    const f = encode(m);
    assert.equal(f[0], m.type);
    assert.deepStrictEqual(decode(f), m, SPEC_BY_TYPE[m.type]!.wire);
  }
});

Deno.test("random messages of every type round-trip", () => {
  const seed = Date.now() >>> 0;
  const r = new Rng(seed);
  for (let i = 0; i < 3000; i++) {
    const m = randomMessage(r);
    const f = encode(m);
    assert.deepStrictEqual(decode(f), m, `seed ${seed} #${i}`);
    assert.equal(encode(decode(f)).length, f.length);
  }
});

Deno.test("byte payloads are views into the frame (no copy)", () => {
  const data = new Uint8Array(1 << 20).fill(7);
  const f = encode({
    type: MessageType.FileResponse,
    node: NODE,
    file: NODE,
    fileLength: data.length,
    offset: 0,
    data,
  });
  const m = decode(f);
  assert.equal(m.type, MessageType.FileResponse);
  if (m.type !== MessageType.FileResponse) return;
  assert.equal(m.data.buffer, f.buffer);
  assert.equal(m.data.length, data.length);
});

Deno.test("a longer header than known is accepted; unknown trailing fields are ignored", () => {
  for (const m of EXAMPLES) {
    const f = encode(m);
    const hl = headerSize(SPEC_BY_TYPE[m.type]!);
    const extra = 11;
    const g = new Uint8Array(f.length + extra);
    g.set(f.subarray(0, hl));
    g.fill(0xab, hl, hl + extra);
    g.set(f.subarray(hl), hl + extra);
    setU64(g, 17, BigInt(hl + extra));
    assert.deepStrictEqual(decode(g), m);
  }
});

Deno.test("base-size headers (design structs only) decode with defaults", () => {
  // file_request of exactly 41 bytes, as the original design's struct.
  const fr = encode({
    type: MessageType.FileRequest,
    node: NODE,
    file: NODE,
    offset: 0,
    maxLength: 0,
  });
  const base = fr.slice(0, 41);
  setU64(base, 17, 41n);
  assert.deepStrictEqual(decode(base), {
    type: MessageType.FileRequest,
    node: NODE,
    file: NODE,
    offset: 0,
    maxLength: 0,
    capExpiryMs: 0,
    cap: new Uint8Array(0),
  });
  // worker_request of 73 bytes followed by one input file entry.
  const full = encode({
    type: MessageType.WorkerRequest,
    node: NODE,
    job: NODE,
    programId: NODE,
    programSize: 3,
    inputFiles: [{ id: NODE, size: 9, name: "in" }],
    chunkIndex: 0,
    numChunks: 0,
    argument: new Uint8Array(0),
    timeLimitMs: 0,
    attempt: 0,
  });
  // Its full header: 73 + every appended (ext) field, from the schema.
  const FULL = headerSize(SPEC_BY_TYPE[MessageType.WorkerRequest]!);
  const w = new Uint8Array(full.length - (FULL - 73));
  w.set(full.subarray(0, 73));
  w.set(full.subarray(FULL), 73);
  setU64(w, 17, 73n);
  const d = decode(w);
  assert.equal(d.type, MessageType.WorkerRequest);
  if (d.type === MessageType.WorkerRequest) {
    assert.deepStrictEqual([...d.programId], [...NODE]);
    assert.equal(d.programSize, 3);
    assert.equal(d.inputFiles[0].name, "in");
    assert.equal(d.argument.length, 0);
    assert.equal(d.chunkIndex + d.numChunks + d.timeLimitMs + d.attempt, 0);
  }
  // worker_status of 42 bytes.
  const ws = new Uint8Array(42);
  ws[0] = MessageType.WorkerStatus;
  setU64(ws, 17, 42n);
  ws[41] = 2;
  const s = decode(ws);
  assert.equal(s.type === MessageType.WorkerStatus && s.state, 2);
});

Deno.test("header_length bounds", () => {
  const f = encode(EXAMPLES.find((m) => m.type === MessageType.FileRequest)!);
  const short = f.slice();
  setU64(short, 17, 40n);
  rejects(short, "short_header");
  const cut = f.slice();
  setU64(cut, 17, 45n); // inside the offset field (41..49)
  rejects(cut, "bad_header_length");
  const past = f.slice();
  setU64(past, 17, BigInt(f.length + 1));
  rejects(past, "short_frame");
  const huge = f.slice();
  setU64(huge, 17, 1n << 62n);
  rejects(huge, "bad_header_length");
  rejects(f.subarray(0, 24), "short_frame");
  rejects(new Uint8Array(0), "short_frame");
});

Deno.test("unknown type, trailing bytes, bad enum/bool/utf8, unsafe integers", () => {
  const unk = encode(EXAMPLES[1]);
  unk[0] = 99;
  rejects(unk, "unknown_type");
  const ok = encode(EXAMPLES[1]);
  rejects(Uint8Array.from([...ok, 0]), "trailing_bytes");
  const big = ok.slice();
  setU64(big, 25, 1n << 60n);
  rejects(big, "bad_value");

  const ack = encode(EXAMPLES.find((m) => m.type === MessageType.FilePutAck)!);
  ack[offsetOf(MessageType.FilePutAck, "committed")] = 2;
  rejects(ack, "bad_value");
  const cf = encode(EXAMPLES.find((m) => m.type === MessageType.ChunkFinished)!);
  cf[offsetOf(MessageType.ChunkFinished, "state")] = 6;
  rejects(cf, "bad_value");

  const err = encode({ type: MessageType.Error, node: NODE, code: 1, text: "ab" });
  err[err.length - 1] = 0xff;
  rejects(err, "bad_utf8");
  const lone = encode({ type: MessageType.Error, node: NODE, code: 1, text: "x\ud800y" });
  const d = decode(lone);
  assert.equal(d.type === MessageType.Error && d.text, "x\ufffdy");
});

Deno.test("lengths and counts are checked against limits before allocating", () => {
  const wr = encode(EXAMPLES.find((m) => m.type === MessageType.WorkerRequest)!);
  const p = wr.slice();
  setU64(p, offsetOf(MessageType.WorkerRequest, "argument_length"), 1n << 60n);
  // too_large (not truncated) shows the limit was checked first; an attempt to allocate 2^60
  // bytes would have thrown a RangeError, which `rejects` does not accept.
  rejects(p, "too_large");
  const n = wr.slice();
  setU64(n, offsetOf(MessageType.WorkerRequest, "num_input_files"), 0xffff_ffffn);
  rejects(n, "too_large");
  const t = wr.slice();
  setU64(t, offsetOf(MessageType.WorkerRequest, "num_input_files"), 1000n);
  rejects(t, "truncated");
  const u = wr.slice();
  setU64(u, offsetOf(MessageType.WorkerRequest, "argument_length"), 1000n);
  rejects(u, "truncated");

  // A list whose entries are small but whose count is within limits and beyond the frame.
  const nl = encode(EXAMPLES.find((m) => m.type === MessageType.NodeListResponse)!);
  setU32(nl, offsetOf(MessageType.NodeListResponse, "num_nodes"), 500_000);
  rejects(nl, "truncated");
  // Nested: a file entry's name length beyond maxText.
  const ws = encode(EXAMPLES.find((m) => m.type === MessageType.WorkerStatus)!);
  const nameLenPos = headerSize(SPEC_BY_TYPE[MessageType.WorkerStatus]!) + 24;
  setU32(ws, nameLenPos, DEFAULT_LIMITS.maxText + 1);
  rejects(ws, "too_large");

  // Custom limits.
  const fp = encode({
    type: MessageType.FilePut,
    node: NODE,
    file: NODE,
    totalLength: 100,
    offset: 0,
    flags: 0,
    data: new Uint8Array(100),
  });
  assert.equal(decode(fp, { maxData: 100 }).type, MessageType.FilePut);
  rejects(fp, "too_large", { maxData: 99 });
  rejects(fp, "too_large", { maxFrame: fp.length - 1 });
  const js = encode(EXAMPLES.find((m) => m.type === MessageType.JobSubmit)!);
  rejects(js, "too_large", { maxChunks: 3 });
});

Deno.test("cross-field consistency", () => {
  const fr = encode({
    type: MessageType.FileResponse,
    node: NODE,
    file: NODE,
    fileLength: 10,
    offset: 8,
    data: new Uint8Array(2),
  });
  decode(fr);
  setU64(fr, offsetOf(MessageType.FileResponse, "offset"), 9n);
  rejects(fr, "bad_value");
  const wr = randomMessage(new Rng(1), MessageType.WorkerRequest) as Message & {
    chunkIndex: number;
    numChunks: number;
  };
  wr.chunkIndex = wr.numChunks;
  rejects(encode(wr), "bad_value");
});

Deno.test("encoder rejects bad fields with WireError", () => {
  const bad: unknown[] = [
    { type: 99, node: NODE },
    { type: MessageType.Ok, node: new Uint8Array(3), value: 1 },
    { type: MessageType.Ok, node: NODE, value: -1 },
    { type: MessageType.Ok, node: NODE, value: 1.5 },
    { type: MessageType.Ok, node: NODE, value: 2 ** 53 },
    { type: MessageType.Error, node: NODE, code: 1, text: 5 },
    { type: MessageType.FileStat, node: NODE },
    { type: MessageType.ChunkFinished, node: NODE, job: NODE, chunkIndex: 0, attempt: 0, state: 9 },
    { type: MessageType.WorkerRegister, node: NODE, slots: 1, freeSlots: 1, files: [1], label: "" },
    null,
  ];
  for (const m of bad) {
    assert.throws(
      () => encode(m as Message),
      (e) => e instanceof WireError && e.code === "bad_field",
    );
  }
});

Deno.test("wireErrorReply maps decode failures to error codes", () => {
  const f = encode(EXAMPLES[1]);
  f[0] = 200;
  try {
    decode(f);
    assert.fail("decode should throw");
  } catch (e) {
    assert.ok(e instanceof WireError);
    const reply = wireErrorReply(NODE, e);
    assert.equal(reply.code, ErrorCode.UnknownType);
    assert.match(reply.text, /unknown_type/);
    assert.equal(decode(encode(reply)).type, MessageType.Error);
  }
});

Deno.test("decode reads a frame that is a view at an offset of a larger buffer", () => {
  for (const m of EXAMPLES) {
    const f = encode(m);
    const big = new Uint8Array(f.length + 10).fill(0xee);
    big.set(f, 3);
    assert.deepStrictEqual(decode(big.subarray(3, 3 + f.length)), m);
  }
});
