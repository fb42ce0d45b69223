/**
 * Binary codec for Raft messages (carried by masters inside a `raft_message` wire frame).
 *
 * Layout (all integers big-endian; u64 = two u32 halves, must be a safe integer):
 *   u8 version(=1) | u8 type | str from | str to | u64 term | u64 logTerm | u64 index
 *   | u64 commit | u8 reject(0/1) | u64 rejectHint | u64 seq | bytes ctx
 *   | u32 nEntries × (u64 term | u64 index | u8 entryType | bytes data)
 *   | u8 hasSnapshot [ u64 index | u64 term | u16 nVoters × str | bytes data ]
 *   | u8 hasChunk [ u64 offset | u64 total | u32 crc | u8 last(0/1) ]   (snap / snapResp only)
 * str = u16 length + UTF-8; bytes = u32 length + raw. Decoding validates every field and
 * rejects trailing bytes, throwing {@link RaftCodecError} with the offending offset.
 */
import {
  type Entry,
  type Message,
  MESSAGE_TYPES,
  type MessageType,
  RaftError,
  type Snapshot,
  type SnapshotChunk,
} from "./types.ts";

/** Malformed encoded message (truncated, bad tag, out-of-range number, trailing bytes...). */
export class RaftCodecError extends RaftError {
  /** @param offset byte offset where decoding failed */
  constructor(readonly offset: number, reason: string) {
    super(`raft codec: ${reason} at byte ${offset}`);
  }
}

const VERSION = 1;
const TYPES: readonly MessageType[] = MESSAGE_TYPES;
const TYPE_CODE = new Map(TYPES.map((t, i) => [t, i + 1]));
/** Upper bound on a single message (guards allocation on hostile input). */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

class Writer {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  pos = 0;
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.pos));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }
  u8(v: number): void {
    this.ensure(1);
    this.view.setUint8(this.pos++, v);
  }
  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.pos, v);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, v);
    this.pos += 4;
  }
  u64(v: number, what: string): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RaftCodecError(this.pos, `${what}=${v} is not a u53`);
    }
    this.u32(Math.floor(v / 0x1_0000_0000));
    this.u32(v >>> 0);
  }
  str(s: string): void {
    const b = enc.encode(s);
    if (b.length > 0xffff) throw new RaftCodecError(this.pos, `string of ${b.length} bytes`);
    this.u16(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

class Reader {
  view: DataView;
  pos = 0;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number, what: string): void {
    if (this.pos + n > this.buf.length) {
      throw new RaftCodecError(
        this.pos,
        `truncated ${what} (need ${n}, have ${this.buf.length - this.pos})`,
      );
    }
  }
  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  u64(what: string): number {
    const at = this.pos;
    const hi = this.u32(what);
    const lo = this.u32(what);
    if (hi > 0x1f_ffff) throw new RaftCodecError(at, `${what} exceeds 2^53`);
    return hi * 0x1_0000_0000 + lo;
  }
  bool(what: string): boolean {
    const at = this.pos;
    const v = this.u8(what);
    if (v > 1) throw new RaftCodecError(at, `${what} flag is ${v}`);
    return v === 1;
  }
  str(what: string): string {
    const n = this.u16(what);
    this.need(n, what);
    const at = this.pos;
    this.pos += n;
    try {
      return dec.decode(this.buf.subarray(at, at + n));
    } catch {
      throw new RaftCodecError(at, `${what} is not UTF-8`);
    }
  }
  bytes(what: string): Uint8Array {
    const n = this.u32(what);
    this.need(n, what);
    const b = this.buf.slice(this.pos, this.pos + n); // copy: the frame buffer may be reused
    this.pos += n;
    return b;
  }
}

/** Encodes a message to bytes. Throws RaftCodecError on unencodable values. */
export function encodeMessage(m: Message): Uint8Array {
  const w = new Writer();
  w.u8(VERSION);
  const code = TYPE_CODE.get(m.type);
  if (code === undefined) throw new RaftCodecError(1, `unknown message type ${m.type}`);
  w.u8(code);
  w.str(m.from);
  w.str(m.to);
  w.u64(m.term, "term");
  w.u64(m.logTerm, "logTerm");
  w.u64(m.index, "index");
  w.u64(m.commit, "commit");
  w.u8(m.reject ? 1 : 0);
  w.u64(m.rejectHint, "rejectHint");
  w.u64(m.seq, "seq");
  w.bytes(m.ctx);
  w.u32(m.entries.length);
  for (const e of m.entries) {
    w.u64(e.term, "entry.term");
    w.u64(e.index, "entry.index");
    w.u8(e.type === "conf" ? 1 : 0);
    w.bytes(e.data);
  }
  if (m.snapshot) {
    const s = m.snapshot;
    w.u8(1);
    w.u64(s.index, "snapshot.index");
    w.u64(s.term, "snapshot.term");
    w.u16(s.conf.voters.length);
    for (const v of s.conf.voters) w.str(v);
    w.bytes(s.data);
  } else {
    w.u8(0);
  }
  if (m.chunk) {
    const c = m.chunk;
    w.u8(1);
    w.u64(c.offset, "chunk.offset");
    w.u64(c.total, "chunk.total");
    if (!Number.isInteger(c.crc) || c.crc < 0 || c.crc > 0xffff_ffff) {
      throw new RaftCodecError(w.pos, `chunk.crc=${c.crc} is not a u32`);
    }
    w.u32(c.crc);
    w.u8(c.last ? 1 : 0);
  } else {
    w.u8(0);
  }
  return w.buf.slice(0, w.pos);
}

/** Decodes and validates a message; throws RaftCodecError on any malformation. */
export function decodeMessage(buf: Uint8Array): Message {
  if (buf.length > MAX_MESSAGE_BYTES) throw new RaftCodecError(0, `message of ${buf.length} bytes`);
  const r = new Reader(buf);
  const ver = r.u8("version");
  if (ver !== VERSION) throw new RaftCodecError(0, `unsupported version ${ver}`);
  const code = r.u8("type");
  const type = TYPES[code - 1];
  if (type === undefined) throw new RaftCodecError(1, `unknown type code ${code}`);
  const from = r.str("from");
  const to = r.str("to");
  const term = r.u64("term");
  const logTerm = r.u64("logTerm");
  const index = r.u64("index");
  const commit = r.u64("commit");
  const reject = r.bool("reject");
  const rejectHint = r.u64("rejectHint");
  const seq = r.u64("seq");
  const ctx = r.bytes("ctx");
  const nEnt = r.u32("entry count");
  // Each entry needs at least 21 bytes: refuse counts the buffer cannot possibly hold.
  if (nEnt * 21 > buf.length - r.pos) {
    throw new RaftCodecError(r.pos - 4, `entry count ${nEnt} too large`);
  }
  const entries: Entry[] = [];
  for (let i = 0; i < nEnt; i++) {
    const et = r.u64("entry.term");
    const ei = r.u64("entry.index");
    const at = r.pos;
    const k = r.u8("entry.type");
    if (k > 1) throw new RaftCodecError(at, `entry type ${k}`);
    if (i > 0 && ei !== entries[i - 1].index + 1) {
      throw new RaftCodecError(at - 8, `entry index ${ei} after ${entries[i - 1].index}`);
    }
    entries.push({
      term: et,
      index: ei,
      type: k === 1 ? "conf" : "normal",
      data: r.bytes("entry.data"),
    });
  }
  let snapshot: Snapshot | null = null;
  if (r.bool("hasSnapshot")) {
    const si = r.u64("snapshot.index");
    const st = r.u64("snapshot.term");
    const nv = r.u16("voter count");
    const voters: string[] = [];
    for (let i = 0; i < nv; i++) voters.push(r.str("voter"));
    snapshot = { index: si, term: st, conf: { voters }, data: r.bytes("snapshot.data") };
  }
  let chunk: SnapshotChunk | null = null;
  const chunkAt = r.pos;
  if (r.bool("hasChunk")) {
    chunk = {
      offset: r.u64("chunk.offset"),
      total: r.u64("chunk.total"),
      crc: r.u32("chunk.crc"),
      last: r.bool("chunk.last"),
    };
  }
  if (r.pos !== buf.length) throw new RaftCodecError(r.pos, `${buf.length - r.pos} trailing bytes`);
  if ((type === "snap") !== (snapshot !== null)) {
    throw new RaftCodecError(r.pos, `${type} message ${snapshot ? "with" : "without"} snapshot`);
  }
  if (entries.length > 0 && type !== "app") {
    throw new RaftCodecError(r.pos, `${type} message carries entries`);
  }
  if (chunk && type !== "snap" && type !== "snapResp") {
    throw new RaftCodecError(chunkAt, `${type} message carries a snapshot chunk`);
  }
  return {
    type,
    from,
    to,
    term,
    logTerm,
    index,
    entries,
    commit,
    reject,
    rejectHint,
    seq,
    ctx,
    snapshot,
    chunk,
  };
}
