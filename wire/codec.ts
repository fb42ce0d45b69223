/**
 * Schema-driven encoder/decoder for the messages of messages.ts. One message = one frame:
 * the 25-byte generic header, the message's fixed fields (together `header_length` bytes),
 * then the payload sections in declaration order. All integers little-endian.
 * @module
 */

import { WireError } from "./errors.ts";
import {
  DEFAULT_LIMITS,
  ErrorCode,
  type ErrorMessage,
  FIELD_SIZE,
  type FieldSpec,
  GENERIC_HEADER_SIZE,
  headerSize,
  type Message,
  type MessageSpec,
  MessageType,
  recordFixedSize,
  type RecordSpec,
  type SectionKind,
  type SectionSpec,
  SPEC_BY_TYPE,
  type WireLimits,
} from "./messages.ts";
import type { Uuid } from "./uuid.ts";

type Obj = Record<string, unknown>;
const TWO32 = 0x1_0000_0000;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// ---------------------------------------------------------------------------------------------
// Encoding

/** Encodes `msg` into exactly one frame. Throws WireError("bad_field") on invalid fields. */
export function encode(msg: Message): Uint8Array {
  const spec = specOf(msg);
  const m = withExtensionDefaults(msg as unknown as Obj, spec);
  checkUuid(m.node, spec.wire, "node");
  const hl = headerSize(spec);
  let size = hl;
  for (const s of spec.sections) size += sectionSize(m, s, spec.wire);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  out[0] = spec.type;
  putUuid(out, 1, m.node as Uuid);
  putU64(dv, 17, hl);
  let pos = writeFields(out, dv, GENERIC_HEADER_SIZE, m, spec.fields, spec.sections, spec.wire);
  for (const s of spec.sections) pos = writeSection(out, dv, pos, m, s, spec.wire);
  if (pos !== size) throw new Error(`wire encoder size mismatch for ${spec.wire}: ${pos}/${size}`);
  return out;
}

/**
 * The fixed header field values `encode` writes after the generic header, in wire order,
 * derived lengths/counts included (uuids as 32-hex strings). Used by the C cross-check and
 * the doc generator.
 */
export function fixedFieldValues(msg: Message): { wire: string; kind: string; value: string }[] {
  const spec = specOf(msg);
  const m = withExtensionDefaults(msg as unknown as Obj, spec);
  return spec.fields.map((f) => {
    const v = fieldValue(m, f, spec.sections, spec.wire);
    const value = f.kind === "uuid"
      ? Array.from(v as Uuid, (b) => b.toString(16).padStart(2, "0")).join("")
      : String(typeof v === "boolean" ? (v ? 1 : 0) : v);
    return { wire: f.wire, kind: f.kind, value };
  });
}

const EMPTY: Record<SectionKind, () => unknown> = {
  bytes: () => new Uint8Array(0),
  rest: () => new Uint8Array(0),
  text: () => "",
  ids: () => [],
  list: () => [],
};

/**
 * `o` with every absent extension field as 0 and every absent extension section as empty, so
 * senders that predate an extension (and optional TS properties) encode what decode of an
 * older frame gives: the same message.
 */
function withExtensionDefaults(o: Obj, spec: MessageSpec): Obj {
  let out: Obj | null = null;
  for (const f of spec.fields) {
    if (!f.ext) continue;
    const key = f.lengthOf ?? f.key;
    if (o[key] !== undefined) continue;
    out ??= { ...o };
    if (f.lengthOf === undefined) out[key] = f.kind === "bool" ? false : 0;
    else out[key] = EMPTY[spec.sections.find((s) => s.key === f.lengthOf)!.kind]();
  }
  return out ?? o;
}

function specOf(msg: Message): MessageSpec {
  const t = (msg as { type?: unknown } | null)?.type;
  const spec = typeof t === "number" ? SPEC_BY_TYPE[t] : undefined;
  if (!spec) throw new WireError("bad_field", `encode: unknown message type ${String(t)}`);
  return spec;
}

function sectionSize(o: Obj, s: SectionSpec, ctx: string): number {
  const v = o[s.key];
  switch (s.kind) {
    case "bytes":
    case "rest":
      if (!(v instanceof Uint8Array)) throw badField(ctx, s.wire, "must be a Uint8Array");
      return v.length;
    case "text":
      if (typeof v !== "string") throw badField(ctx, s.wire, "must be a string");
      return utf8Length(v);
    case "ids":
      if (!Array.isArray(v)) throw badField(ctx, s.wire, "must be an array of ids");
      return 16 * v.length;
    case "list": {
      if (!Array.isArray(v)) throw badField(ctx, s.wire, "must be an array");
      const rec = s.record!;
      const fixed = recordFixedSize(rec);
      let n = 0;
      for (const e of v) {
        if (typeof e !== "object" || e === null) throw badField(ctx, s.wire, "entry not an object");
        n += fixed;
        for (const rs of rec.sections) n += sectionSize(e as Obj, rs, `${ctx}.${s.wire}`);
      }
      return n;
    }
  }
}

function fieldValue(o: Obj, f: FieldSpec, sections: readonly SectionSpec[], ctx: string) {
  if (f.lengthOf === undefined) return o[f.key];
  const s = sections.find((x) => x.key === f.lengthOf)!;
  const v = o[s.key];
  if (s.kind === "text") {
    if (typeof v !== "string") throw badField(ctx, s.wire, "must be a string");
    return utf8Length(v);
  }
  if (!(v instanceof Uint8Array) && !Array.isArray(v)) {
    throw badField(ctx, s.wire, "must be a Uint8Array or an array");
  }
  return v.length;
}

function writeFields(
  out: Uint8Array,
  dv: DataView,
  pos: number,
  o: Obj,
  fields: readonly FieldSpec[],
  sections: readonly SectionSpec[],
  ctx: string,
): number {
  for (const f of fields) {
    const v = fieldValue(o, f, sections, ctx);
    switch (f.kind) {
      case "u8":
        dv.setUint8(pos, checkInt(v, 0, f.max ?? 0xff, ctx, f.wire));
        break;
      case "bool":
        if (typeof v !== "boolean") throw badField(ctx, f.wire, "must be a boolean");
        dv.setUint8(pos, v ? 1 : 0);
        break;
      case "u32":
        dv.setUint32(pos, checkInt(v, 0, f.max ?? 0xffff_ffff, ctx, f.wire), true);
        break;
      case "i32":
        dv.setInt32(pos, checkInt(v, -0x8000_0000, 0x7fff_ffff, ctx, f.wire), true);
        break;
      case "u64":
        putU64(dv, pos, checkInt(v, 0, Number.MAX_SAFE_INTEGER, ctx, f.wire));
        break;
      case "uuid":
        checkUuid(v, ctx, f.wire);
        putUuid(out, pos, v as Uuid);
        break;
    }
    pos += FIELD_SIZE[f.kind];
  }
  return pos;
}

function writeSection(
  out: Uint8Array,
  dv: DataView,
  pos: number,
  o: Obj,
  s: SectionSpec,
  ctx: string,
): number {
  const v = o[s.key];
  switch (s.kind) {
    case "bytes":
    case "rest":
      out.set(v as Uint8Array, pos);
      return pos + (v as Uint8Array).length;
    case "text":
      return pos + utf8.encodeInto(v as string, out.subarray(pos)).written;
    case "ids":
      for (const id of v as unknown[]) {
        checkUuid(id, ctx, s.wire);
        out.set(id as Uuid, pos);
        pos += 16;
      }
      return pos;
    case "list": {
      const rec = s.record!;
      const c = `${ctx}.${s.wire}`;
      for (const e of v as Obj[]) {
        pos = writeFields(out, dv, pos, e, rec.fields, rec.sections, c);
        for (const rs of rec.sections) pos = writeSection(out, dv, pos, e, rs, c);
      }
      return pos;
    }
  }
}

function putU64(dv: DataView, pos: number, n: number): void {
  dv.setUint32(pos, n % TWO32, true);
  dv.setUint32(pos + 4, Math.floor(n / TWO32), true);
}

/** upper = bytes 0..7 read big-endian, lower = bytes 8..15; each stored as LE u64. */
function putUuid(out: Uint8Array, pos: number, id: Uuid): void {
  for (let i = 0; i < 8; i++) {
    out[pos + i] = id[7 - i];
    out[pos + 8 + i] = id[15 - i];
  }
}

function checkInt(v: unknown, min: number, max: number, ctx: string, name: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw badField(ctx, name, `must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

function checkUuid(v: unknown, ctx: string, name: string): void {
  if (!(v instanceof Uint8Array) || v.length !== 16) {
    throw badField(ctx, name, "must be a 16-byte Uint8Array");
  }
}

function badField(ctx: string, name: string, why: string): WireError {
  return new WireError("bad_field", `encode ${ctx}.${name}: ${why}`);
}

/** Bytes `TextEncoder` produces for `s` (lone surrogates become U+FFFD, 3 bytes). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes one frame. Validates type, header_length, every length/count against `limits`
 * (before allocating), enum ranges, UTF-8 text and consistency; throws only WireError.
 * Byte payloads (argument, data, stderr, tokens) are subarray views into `frame`: copy them
 * if the frame's buffer is reused.
 */
export function decode(frame: Uint8Array, limits?: Partial<WireLimits>): Message {
  if (!(frame instanceof Uint8Array)) throw new WireError("bad_field", "decode: not a Uint8Array");
  const lim: WireLimits = limits ? { ...DEFAULT_LIMITS, ...limits } : DEFAULT_LIMITS;
  if (frame.length > lim.maxFrame) {
    throw new WireError("too_large", `frame of ${frame.length} bytes > maxFrame ${lim.maxFrame}`);
  }
  if (frame.length < GENERIC_HEADER_SIZE) {
    throw new WireError("short_frame", `frame of ${frame.length} bytes < generic header (25)`);
  }
  const type = frame[0];
  const spec = SPEC_BY_TYPE[type];
  if (!spec) throw new WireError("unknown_type", `message_type ${type}`, type);
  const r = new Reader(frame, spec, lim);
  const node = r.uuid(1);
  const hl = r.u64(17);
  if (hl < spec.base) {
    throw r.err("short_header", `header_length ${hl} < base size ${spec.base}`);
  }
  if (hl > lim.maxHeader) {
    throw r.err("bad_header_length", `header_length ${hl} > maxHeader ${lim.maxHeader}`);
  }
  if (hl > frame.length) {
    throw r.err("short_frame", `header_length ${hl} > frame length ${frame.length}`);
  }
  const msg: Obj = { type, node };
  r.pos = GENERIC_HEADER_SIZE;
  r.end = hl;
  const lengths = r.fields(spec.fields, msg, true);
  r.pos = hl;
  r.end = frame.length;
  r.sections(spec.sections, msg, lengths, spec.wire);
  if (r.pos !== frame.length) {
    throw r.err("trailing_bytes", `${frame.length - r.pos} bytes after the last section`);
  }
  semanticCheck(msg, r);
  return msg as unknown as Message;
}

class Reader {
  readonly dv: DataView;
  pos = 0;
  end = 0;
  constructor(readonly buf: Uint8Array, readonly spec: MessageSpec, readonly lim: WireLimits) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  err(code: ConstructorParameters<typeof WireError>[0], detail: string): WireError {
    return new WireError(code, `${this.spec.wire}: ${detail}`, this.spec.type);
  }

  /** Reads a u64 as a number; values above 2^53 come back imprecise (caller validates). */
  u64(pos: number): number {
    return this.dv.getUint32(pos + 4, true) * TWO32 + this.dv.getUint32(pos, true);
  }

  uuid(pos: number): Uuid {
    const id = new Uint8Array(16);
    for (let i = 0; i < 8; i++) {
      id[7 - i] = this.buf[pos + i];
      id[15 - i] = this.buf[pos + 8 + i];
    }
    return id;
  }

  /** Reads fixed fields into `o`; returns derived lengths keyed by section key. */
  fields(fields: readonly FieldSpec[], o: Obj, header: boolean): Map<string, number> {
    const lengths = new Map<string, number>();
    for (const f of fields) {
      const size = FIELD_SIZE[f.kind];
      let v: number | boolean | Uuid;
      if (this.pos + size > this.end) {
        // Only header extension fields may be absent (hl >= base guarantees the rest).
        if (!header || this.pos < this.end) {
          throw this.err(
            header ? "bad_header_length" : "truncated",
            header ? `header_length ${this.end} cuts field ${f.wire}` : `record field ${f.wire}`,
          );
        }
        v = f.kind === "bool" ? false : f.kind === "uuid" ? new Uint8Array(16) : 0;
      } else {
        v = this.field(f);
      }
      this.pos += size;
      if (f.lengthOf !== undefined) lengths.set(f.lengthOf, v as number);
      else o[f.key] = v;
    }
    return lengths;
  }

  field(f: FieldSpec): number | boolean | Uuid {
    const p = this.pos;
    switch (f.kind) {
      case "uuid":
        return this.uuid(p);
      case "bool": {
        const b = this.buf[p];
        if (b > 1) throw this.err("bad_value", `${f.wire} = ${b}, must be 0 or 1`);
        return b === 1;
      }
      case "i32":
        return this.dv.getInt32(p, true);
    }
    const v = f.kind === "u8"
      ? this.buf[p]
      : f.kind === "u32"
      ? this.dv.getUint32(p, true)
      : this.u64(p);
    if (f.max !== undefined && v > f.max) {
      throw this.err("bad_value", `${f.wire} = ${v} > ${f.max}`);
    }
    if (f.limit !== undefined && v > this.lim[f.limit]) {
      throw this.err("too_large", `${f.wire} = ${v} > ${f.limit} ${this.lim[f.limit]}`);
    }
    if (f.lengthOf === undefined && !Number.isSafeInteger(v)) {
      throw this.err("bad_value", `${f.wire} exceeds 2^53-1`);
    }
    return v;
  }

  sections(secs: readonly SectionSpec[], o: Obj, lengths: Map<string, number>, ctx: string): void {
    for (const s of secs) {
      const remaining = this.end - this.pos;
      const max = this.lim[s.limit];
      if (s.kind === "rest") {
        if (remaining > max) {
          throw this.err("too_large", `${s.wire}: ${remaining} > ${s.limit} ${max}`);
        }
        o[s.key] = this.buf.subarray(this.pos, this.end);
        this.pos = this.end;
        continue;
      }
      const n = lengths.get(s.key) ?? 0;
      if (n > max) throw this.err("too_large", `${ctx}.${s.wire}: ${n} > ${s.limit} ${max}`);
      const unit = s.kind === "ids" ? 16 : s.kind === "list" ? recordFixedSize(s.record!) : 1;
      if (n * unit > remaining) {
        throw this.err("truncated", `${ctx}.${s.wire}: needs ${n * unit} bytes, ${remaining} left`);
      }
      switch (s.kind) {
        case "bytes":
          o[s.key] = this.buf.subarray(this.pos, this.pos + n);
          this.pos += n;
          break;
        case "text":
          o[s.key] = this.text(n, `${ctx}.${s.wire}`);
          break;
        case "ids": {
          const a: Uuid[] = new Array(n);
          for (let i = 0; i < n; i++, this.pos += 16) {
            a[i] = this.buf.slice(this.pos, this.pos + 16);
          }
          o[s.key] = a;
          break;
        }
        case "list": {
          const rec: RecordSpec = s.record!;
          const a: Obj[] = [];
          for (let i = 0; i < n; i++) {
            const e: Obj = {};
            const l = this.fields(rec.fields, e, false);
            this.sections(rec.sections, e, l, `${ctx}.${s.wire}[${i}]`);
            a.push(e);
          }
          o[s.key] = a;
          break;
        }
      }
    }
  }

  text(n: number, ctx: string): string {
    const bytes = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return strictUtf8.decode(bytes);
    } catch {
      throw this.err("bad_utf8", `${ctx} is not valid UTF-8`);
    }
  }
}

/** Cross-field rules that the layout alone cannot express. */
function semanticCheck(m: Obj, r: Reader): void {
  const n = (k: string) => m[k] as number;
  switch (m.type) {
    case MessageType.FileResponse:
    case MessageType.FilePut: {
      const total = n(m.type === MessageType.FilePut ? "totalLength" : "fileLength");
      const len = (m.data as Uint8Array).length;
      if (n("offset") + len > total) {
        throw r.err("bad_value", `offset ${n("offset")} + ${len} bytes > file length ${total}`);
      }
      break;
    }
    case MessageType.WorkerRequest:
      if (n("numChunks") > 0 && n("chunkIndex") >= n("numChunks")) {
        throw r.err("bad_value", `chunk_index ${n("chunkIndex")} >= num_chunks ${n("numChunks")}`);
      }
      break;
    case MessageType.JobDispatch:
      for (const c of m.chunks as { chunkIndex: number }[]) {
        if (c.chunkIndex >= n("numChunks")) {
          throw r.err("bad_value", `chunk_index ${c.chunkIndex} >= num_chunks ${n("numChunks")}`);
        }
      }
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for servers

/** Builds an `error` reply. */
export function errorReply(node: Uuid, code: number, text: string): ErrorMessage {
  return { type: MessageType.Error, node, code, text };
}

/** Maps a decode failure to the `error` reply a server sends back (BAD_MESSAGE, …). */
export function wireErrorReply(node: Uuid, e: WireError): ErrorMessage {
  const code = e.code === "unknown_type"
    ? ErrorCode.UnknownType
    : e.code === "too_large"
    ? ErrorCode.TooLarge
    : ErrorCode.BadMessage;
  return errorReply(node, code, e.message);
}

/** The message_type of a frame without decoding it (undefined when shorter than 1 byte). */
export function peekType(frame: Uint8Array): number | undefined {
  return frame.length > 0 ? frame[0] : undefined;
}
