/**
 * Seeded random generators for wire tests: valid random messages of every type (schema-driven)
 * and a small fast PRNG, so failures reproduce from the printed seed.
 * @module
 */

import {
  type FieldSpec,
  type Message,
  MESSAGE_SPECS,
  MessageType,
  type RecordSpec,
  type SectionSpec,
} from "../wire/mod.ts";

/** sfc32-style 32-bit PRNG: deterministic for a seed, fast enough for 100k+ frames. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  /** Seeds the generator (any 32-bit integer). */
  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }
  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    this.a >>>= 0;
    this.b >>>= 0;
    this.c >>>= 0;
    this.d >>>= 0;
    let t = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    t = (t + this.d) | 0;
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return n <= 0x1_0000_0000 ? Math.floor((this.u32() / 0x1_0000_0000) * n) : Math.floor(
      (this.u32() * 0x1_0000_0000 + this.u32()) / 2 ** 64 * n,
    );
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  /** Random bytes of length n. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
  /** One element of `a`. */
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
}

const U64_EDGES = [0, 1, 255, 256, 0xffff_ffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER];
const U32_EDGES = [0, 1, 0x7fff_ffff, 0xffff_ffff];
const I32_EDGES = [0, -1, 1, -0x8000_0000, 0x7fff_ffff];
const TEXTS = ["", "a", "héllo wörld", "日本語", "emoji 🚀", "tcp://127.0.0.1:7001", "\u0000nul"];

function fieldValue(r: Rng, f: FieldSpec): unknown {
  switch (f.kind) {
    case "uuid":
      return r.bytes(16);
    case "bool":
      return r.chance(0.5);
    case "u8":
      return r.int((f.max ?? 255) + 1);
    case "u32": {
      const max = f.max ?? (f.limit ? 1000 : 0xffff_ffff);
      return r.chance(0.3) && max === 0xffff_ffff ? r.pick(U32_EDGES) : r.int(max + 1);
    }
    case "i32":
      return r.chance(0.3) ? r.pick(I32_EDGES) : r.int(0x1_0000_0000) - 0x8000_0000;
    case "u64":
      return r.chance(0.3) ? r.pick(U64_EDGES) : r.int(Number.MAX_SAFE_INTEGER);
  }
}

function sectionValue(r: Rng, s: SectionSpec): unknown {
  const n = r.chance(0.2) ? 0 : r.int(s.kind === "list" || s.kind === "ids" ? 4 : 40);
  switch (s.kind) {
    case "bytes":
    case "rest":
      return r.bytes(n);
    case "text":
      return r.chance(0.5)
        ? r.pick(TEXTS)
        : String.fromCharCode(...r.bytes(n % 20).map((b) => 32 + (b % 90)));
    case "ids":
      return Array.from({ length: n }, () => r.bytes(16));
    case "list":
      return Array.from({ length: n }, () => struct(r, s.record!));
  }
}

function struct(r: Rng, spec: Pick<RecordSpec, "fields" | "sections">): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const f of spec.fields) if (f.lengthOf === undefined) o[f.key] = fieldValue(r, f);
  for (const s of spec.sections) o[s.key] = sectionValue(r, s);
  return o;
}

/** A random valid message of the given type (or of a random type). */
export function randomMessage(r: Rng, type?: number): Message {
  const spec = type === undefined
    ? r.pick(MESSAGE_SPECS)
    : MESSAGE_SPECS.find((s) => s.type === type)!;
  const o = struct(r, spec);
  o.type = spec.type;
  o.node = r.bytes(16);
  // Cross-field rules the decoder enforces.
  const data = o.data as Uint8Array | undefined;
  if (spec.type === MessageType.FileResponse || spec.type === MessageType.FilePut) {
    const total = spec.type === MessageType.FilePut ? "totalLength" : "fileLength";
    o.offset = r.int(1000);
    o[total] = (o.offset as number) + data!.length + r.int(3);
  }
  if (spec.type === MessageType.WorkerRequest) {
    o.numChunks = 1 + r.int(1000);
    o.chunkIndex = r.int(o.numChunks as number);
  }
  if (spec.type === MessageType.JobDispatch) {
    o.numChunks = 1 + r.int(1000);
    for (const c of o.chunks as { chunkIndex: number }[]) {
      c.chunkIndex = r.int(o.numChunks as number);
    }
  }
  return o as unknown as Message;
}
