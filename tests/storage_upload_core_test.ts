/**
 * The storage node's upload core (roles/storage/upload_core.ts), driven without a disk: unit
 * cases of the protocol, and a seeded random run of interleaved chunks, retries, restarts and
 * failures against a simulated disk, with the invariants checked after every step.
 * @module
 */
import nodeAssert from "node:assert/strict";
import {
  type ChunkArrived,
  UploadCore,
  type UploadCoreOptions,
  type UploadEffect,
  type UploadInput,
  UploadInvariantError,
} from "../roles/storage/upload_core.ts";
import {
  ErrorCode,
  type FilePut,
  FilePutFlags,
  MessageType,
  randomUuid,
  type Uuid,
} from "../wire/mod.ts";
import { FileStore } from "../roles/storage/store.ts";
import { RequestError } from "../lib/rpc.ts";
import { createLogger } from "../lib/log.ts";
import { idOf } from "./storage_helpers.ts";
import { waitFor } from "./wait.ts";

function assert(ok: unknown, message?: string): asserts ok {
  nodeAssert.ok(ok, message);
}
const assertEquals = <T>(a: T, b: T, message?: string) => nodeAssert.deepStrictEqual(a, b, message);
const assertThrows = (f: () => unknown, cls: new (...args: never[]) => Error) =>
  nodeAssert.throws(f, cls);

const OPTS: UploadCoreOptions = {
  blockBytes: 8,
  idleUploadMs: 1000,
  maxQueuedBytes: 100,
  nodeName: "n1",
};

let nextId = 1;
function chunk(
  offset: number,
  length: number,
  totalLength: number,
  more: Partial<ChunkArrived> = {},
): ChunkArrived {
  return {
    kind: "chunk",
    id: nextId++,
    key: "aa.u1",
    hex: "aa",
    offset,
    length,
    totalLength,
    last: offset + length === totalLength,
    owner: null,
    here: null,
    ownerHas: true,
    nowMs: 0,
    ...more,
  };
}

/** Steps and checks every invariant after the step. */
function step(core: UploadCore, input: UploadInput): UploadEffect[] {
  const out = core.step(input);
  core.checkInvariants();
  return out;
}

function kinds(effects: UploadEffect[]): string[] {
  return effects.map((e) => e.kind);
}

function only<K extends UploadEffect["kind"]>(
  effects: UploadEffect[],
  kind: K,
): Extract<UploadEffect, { kind: K }>[] {
  return effects.filter((e) => e.kind === kind) as Extract<UploadEffect, { kind: K }>[];
}

Deno.test("upload core: in-order chunks are written, synced as a group, acked, verified, committed", () => {
  const core = new UploadCore(OPTS);
  const a = chunk(0, 10, 30);
  let out = step(core, a);
  assertEquals(out, [{
    kind: "open",
    upload: 1,
    key: "aa.u1",
    hex: "aa",
    total: 30,
    fresh: true,
    verifyOnly: false,
  }]);
  const b = chunk(10, 10, 30);
  assertEquals(step(core, b), [], "queued while the temp opens");
  out = step(core, { kind: "opened", upload: 1, size: 0 });
  assertEquals(out, [{ kind: "write", upload: 1, chunk: a.id, from: 0, length: 10, at: 0 }]);
  const c = chunk(20, 10, 30);
  assertEquals(step(core, c), [], "arrives during the batch: next batch");
  out = step(core, { kind: "write_done", upload: 1 });
  assertEquals(out, [
    { kind: "count", bytes: 10 },
    { kind: "write", upload: 1, chunk: b.id, from: 0, length: 10, at: 10 },
  ]);
  out = step(core, { kind: "write_done", upload: 1 });
  assertEquals(kinds(out), ["count", "sync"], "one fsync for the batch");
  assertEquals(core.progress("aa.u1"), { written: 20, durable: 0, phase: "syncing" });
  out = step(core, { kind: "sync_done", upload: 1 });
  assertEquals(out, [
    { kind: "ack", chunk: a.id, durable: 20, committed: false },
    { kind: "ack", chunk: b.id, durable: 20, committed: false },
    { kind: "write", upload: 1, chunk: c.id, from: 0, length: 10, at: 20 },
  ]);
  assertEquals(kinds(step(core, { kind: "write_done", upload: 1 })), ["count", "sync"]);
  assertEquals(step(core, { kind: "sync_done", upload: 1 }), [{ kind: "verify", upload: 1 }]);
  assertEquals(step(core, { kind: "verify_done", upload: 1, mismatch: null }), [
    { kind: "commit", upload: 1, owner: null, verifyOnly: false },
  ]);
  assertEquals(step(core, { kind: "commit_done", upload: 1 }), [
    { kind: "drop", upload: 1, removeTemp: false, error: null },
    { kind: "ack", chunk: c.id, durable: 30, committed: true },
  ]);
  assertEquals(core.size, 0, "a committed upload takes no more chunks");
  assertEquals(core.queuedBytes, 0);
});

/** An upload of total 30 at written = durable = 10 (chunk [0,10) acked). */
function at10(): UploadCore {
  const core = new UploadCore(OPTS);
  step(core, chunk(0, 10, 30));
  step(core, { kind: "opened", upload: 1, size: 0 });
  step(core, { kind: "write_done", upload: 1 });
  step(core, { kind: "sync_done", upload: 1 });
  assertEquals(core.progress("aa.u1"), { written: 10, durable: 10, phase: "idle" });
  return core;
}

Deno.test("upload core: a gap is WRONG_OFFSET with the offset to resume at; the upload goes on", () => {
  const core = at10();
  const gap = chunk(20, 10, 30);
  const out = step(core, gap);
  assertEquals(out.length, 1);
  const e = only(out, "error")[0];
  assertEquals(e.chunk, gap.id);
  assertEquals(e.error.code, ErrorCode.WrongOffset);
  assertEquals(e.error.value, 10);
  assertEquals(core.progress("aa.u1")?.phase, "idle");
  // Another total length in the same upload is refused, and so is a chunk past the total.
  const other = only(step(core, chunk(10, 5, 40)), "error")[0];
  assertEquals(other.error.code, ErrorCode.BadRequest);
  const beyond = only(step(core, chunk(25, 10, 30)), "error")[0];
  assertEquals(beyond.error.code, ErrorCode.BadRequest);
  assertEquals(core.pendingChunks, 0);
});

Deno.test("upload core: after a restart an upload resumes from its temp, or restarts at 0", () => {
  const core = new UploadCore(OPTS); // a new process: nothing in memory
  const resume = chunk(20, 10, 30);
  assertEquals(only(step(core, resume), "open")[0].fresh, false);
  let out = step(core, { kind: "opened", upload: 1, size: 20 });
  assertEquals(out, [{ kind: "write", upload: 1, chunk: resume.id, from: 0, length: 10, at: 20 }]);
  // A resume from further back than the temp holds is told where the temp ends.
  const core2 = new UploadCore(OPTS);
  const late = chunk(20, 10, 30);
  step(core2, late);
  out = step(core2, { kind: "opened", upload: 1, size: 12 });
  assertEquals(only(out, "error")[0].error.value, 12);
  // No temp at all: WRONG_OFFSET 0, the temp path is cleaned, and a start at 0 opens afresh.
  const core3 = new UploadCore(OPTS);
  const lost = chunk(20, 10, 30);
  step(core3, lost);
  out = step(core3, { kind: "open_missing", upload: 1 });
  assertEquals(only(out, "error")[0].error, {
    code: ErrorCode.WrongOffset,
    message: "file aa: expected offset 0, got 20",
    value: 0,
  });
  assertEquals(only(out, "drop")[0].removeTemp, true);
  step(core3, { kind: "dropped", upload: 1 });
  assertEquals(only(step(core3, chunk(0, 10, 30)), "open")[0].fresh, true);
});

Deno.test("upload core: a retried chunk is acked without a write; an overlapping one writes its new part", () => {
  const core = at10();
  const dup = chunk(0, 10, 30);
  assertEquals(step(core, dup), [
    { kind: "count", bytes: 10 },
    { kind: "sync", upload: 1 },
  ]);
  assertEquals(step(core, { kind: "sync_done", upload: 1 }), [
    { kind: "ack", chunk: dup.id, durable: 10, committed: false },
  ]);
  const overlap = chunk(5, 10, 30);
  assertEquals(step(core, overlap), [
    { kind: "write", upload: 1, chunk: overlap.id, from: 5, length: 5, at: 10 },
  ]);
});

Deno.test("upload core: the shortcut for a file already here is for its owners only", () => {
  const core = new UploadCore(OPTS);
  const here = { size: 30, corrupt: false };
  const owner = chunk(10, 10, 30, { owner: "ann", here, ownerHas: true });
  assertEquals(step(core, owner), [
    { kind: "touch", hex: "aa" },
    { kind: "count", bytes: 10 },
    { kind: "ack", chunk: owner.id, durable: 30, committed: true },
  ]);
  const stranger = chunk(10, 10, 30, { owner: "bob", here, ownerHas: false });
  const e = only(step(core, stranger), "error")[0];
  assertEquals([e.error.code, e.error.value], [ErrorCode.WrongOffset, 0]);
  // Sending all of it from 0 verifies the bytes (no temp) and makes bob an owner on commit.
  const all = chunk(0, 30, 30, { owner: "bob", here, ownerHas: false });
  const open = only(step(core, all), "open")[0];
  assertEquals(open.verifyOnly, true);
  assertEquals(kinds(step(core, { kind: "opened", upload: 1, size: 0 })), ["write"]);
  assertEquals(kinds(step(core, { kind: "write_done", upload: 1 })), ["count", "verify"]);
  assertEquals(step(core, { kind: "verify_done", upload: 1, mismatch: null }), [
    { kind: "commit", upload: 1, owner: "bob", verifyOnly: true },
  ]);
  // A corrupt copy is not a shortcut: it is replaced by a full upload; a small one whole.
  const small = chunk(0, 8, 8, { key: "cc.u1", hex: "cc", here: { size: 8, corrupt: true } });
  assertEquals(step(core, small), [
    { kind: "touch", hex: "cc" },
    { kind: "put_whole", chunk: small.id, owner: null },
  ]);
  assertEquals(step(core, { kind: "whole_done", chunk: small.id, error: null }), [
    { kind: "count", bytes: 8 },
    { kind: "ack", chunk: small.id, durable: 8, committed: true },
  ]);
});

Deno.test("upload core: a full disk mid-upload fails every chunk of it and drops the temp", () => {
  const core = at10();
  const b = chunk(10, 10, 30);
  step(core, b); // write outstanding
  const c = chunk(20, 10, 30);
  step(core, c); // queued
  const noSpace = { code: ErrorCode.NoSpace, message: "no space", value: 0 };
  const out = step(core, { kind: "failed", upload: 1, error: noSpace });
  assertEquals(out, [
    { kind: "error", chunk: b.id, error: noSpace },
    { kind: "error", chunk: c.id, error: noSpace },
    { kind: "drop", upload: 1, removeTemp: true, error: noSpace },
  ]);
  // Until the temp is gone, a chunk of it gets the same answer (not a new upload on the temp).
  const late = chunk(10, 10, 30);
  assertEquals(step(core, late), [{ kind: "error", chunk: late.id, error: noSpace }]);
  assertEquals(step(core, { kind: "dropped", upload: 1 }), []);
  assertEquals(core.size, 0);
  // The retry starts over at 0 on a fresh temp.
  assertEquals(only(step(core, chunk(0, 10, 30)), "open")[0].fresh, true);
  assertEquals(core.queuedBytes, 10);
});

Deno.test("upload core: queued bytes stay within the budget; over it is UNAVAILABLE", () => {
  const core = new UploadCore({ ...OPTS, maxQueuedBytes: 20 });
  const a = chunk(0, 15, 30);
  step(core, a);
  assertEquals(core.queuedBytes, 15);
  const b = chunk(15, 10, 30);
  const refused = only(step(core, b), "error")[0];
  assertEquals(refused.error.code, ErrorCode.Unavailable);
  assertEquals(core.queuedBytes, 15, "a refused chunk is not charged");
  step(core, { kind: "opened", upload: 1, size: 0 });
  step(core, { kind: "write_done", upload: 1 });
  step(core, { kind: "sync_done", upload: 1 });
  assertEquals(core.queuedBytes, 0, "an answered chunk is given back");
  step(core, chunk(15, 10, 30));
  assertEquals(core.queuedBytes, 10);
});

Deno.test("upload core: idle uploads are dropped (temp kept); closing answers everything", () => {
  const core = at10();
  assertEquals(step(core, { kind: "tick", nowMs: 500 }), []);
  assertEquals(step(core, { kind: "tick", nowMs: 1001 }), [
    { kind: "drop", upload: 1, removeTemp: false, error: null },
  ]);
  assertEquals(core.size, 0);
  const c = chunk(10, 10, 30, { nowMs: 2000 });
  step(core, c);
  step(core, { kind: "close" });
  assert(core.busy);
  const refused = chunk(0, 1, 30, { key: "bb.u1", hex: "bb" });
  assertEquals(only(step(core, refused), "error")[0].error.code, ErrorCode.Unavailable);
  const out = step(core, { kind: "shutdown" });
  assertEquals(only(out, "error").map((e) => e.chunk), [c.id]);
  assertEquals(core.pendingChunks, 0);
  // What was outstanding may still end: ignored after shutdown, a bug before.
  assertEquals(step(core, { kind: "opened", upload: 2, size: 10 }), []);
  const fresh = new UploadCore(OPTS);
  assertThrows(() => fresh.step({ kind: "write_done", upload: 7 }), UploadInvariantError);
});

// ---------------------------------------------------------------------------------------------
// Seeded random run against a simulated disk

/** Small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** How often each input and answer occurred over all random runs. */
const seen = new Map<string, number>();

interface Temp {
  bytes: number;
  synced: number;
  /** Holds bytes of a chunk that lies about the content (fails verification). */
  bad: boolean;
}

interface SimUpload {
  key: string;
  hex: string;
  total: number;
  verifyOnly: boolean;
  bad: boolean;
}

/** The shell, simulated: a disk of temps and committed files, and effects outstanding. */
class Sim {
  core: UploadCore;
  temps = new Map<string, Temp>();
  committed = new Map<string, number>();
  owners = new Map<string, Set<string>>();
  uploads = new Map<number, SimUpload>();
  /** The latest upload opened per key. */
  byKey = new Map<string, SimUpload>();
  /** The one effect outstanding per upload (and per whole-file put, by chunk id). */
  ops = new Map<string, UploadEffect>();
  sent = new Map<number, ChunkArrived & { bad: boolean }>();
  answers = new Map<number, Extract<UploadEffect, { kind: "ack" | "error" }>>();
  counted = 0;
  log: string[] = [];

  constructor(readonly opts: UploadCoreOptions) {
    this.core = new UploadCore(opts);
  }

  step(input: UploadInput): UploadEffect[] {
    this.log.push(JSON.stringify(input));
    const kind = input.kind === "opened" && input.size > 0 ? "resumed" : input.kind;
    seen.set(kind, (seen.get(kind) ?? 0) + 1);
    const out = this.core.step(input);
    this.core.checkInvariants();
    for (const e of out) this.#effect(e);
    if (input.kind === "commit_done") {
      const u = this.uploads.get(input.upload)!;
      assert(!this.core.hasKey(u.key), "a committed upload takes no more chunks");
    }
    return out;
  }

  #effect(e: UploadEffect): void {
    this.log.push(`  -> ${JSON.stringify(e)}`);
    switch (e.kind) {
      case "ack":
      case "error": {
        assert(!this.answers.has(e.chunk), `chunk ${e.chunk} answered twice`);
        const c = this.sent.get(e.chunk);
        assert(c, `answer to a chunk never sent: ${e.chunk}`);
        this.answers.set(e.chunk, e);
        const what = e.kind === "ack"
          ? `ack${e.committed ? " committed" : ""}`
          : `code ${e.error.code}`;
        seen.set(what, (seen.get(what) ?? 0) + 1);
        if (e.kind === "ack") {
          if (e.committed) {
            assertEquals(
              this.committed.get(c.hex),
              c.totalLength,
              "committed ack of a file not here",
            );
            assertEquals(e.durable, c.totalLength);
          } else if (this.byKey.get(c.key)?.verifyOnly) {
            assert(e.durable <= c.totalLength, "ack past the file");
          } else {
            const t = this.temps.get(c.key);
            assert(t, "ack of an upload without a temp");
            assert(e.durable <= t.synced, `ack durable ${e.durable} > synced ${t.synced}`);
            assert(e.durable >= c.offset + c.length, "ack before the chunk's bytes are written");
          }
        } else if (
          e.error.code === ErrorCode.WrongOffset && e.error.value > 0 &&
          !this.byKey.get(c.key)?.verifyOnly
        ) {
          const t = this.temps.get(c.key);
          assert(t && e.error.value <= t.bytes, "WRONG_OFFSET past what the temp holds");
        }
        return;
      }
      case "count":
        this.counted += e.bytes;
        return;
      case "touch":
        return;
      case "open": {
        const u = { key: e.key, hex: e.hex, total: e.total, verifyOnly: e.verifyOnly, bad: false };
        this.uploads.set(e.upload, u);
        this.byKey.set(e.key, u);
        break;
      }
      case "write": {
        const u = this.uploads.get(e.upload)!;
        const c = this.sent.get(e.chunk)!;
        assertEquals(e.at, c.offset + e.from, "write not at the chunk's own offset");
        assert(e.length > 0 && e.from + e.length <= c.length, "write outside the chunk");
        if (!u.verifyOnly) {
          assertEquals(e.at, this.temps.get(u.key)!.bytes, "write leaves a hole or overwrites");
        }
        break;
      }
      case "drop":
        if (!e.removeTemp) return;
        break;
    }
    const key = e.kind === "put_whole" ? `w${e.chunk}` : `u${(e as { upload: number }).upload}`;
    assert(!this.ops.has(key), `two effects outstanding for ${key}`);
    this.ops.set(key, e);
  }

  /** Carries out outstanding effect `key`: it succeeds, or fails with `fail`. */
  finish(key: string, fail: boolean, r: () => number): void {
    const e = this.ops.get(key)!;
    this.ops.delete(key);
    const error = {
      code: r() < 0.5 ? ErrorCode.NoSpace : ErrorCode.Internal,
      message: "disk says no",
      value: 0,
    };
    if (e.kind === "put_whole") {
      const c = this.sent.get(e.chunk)!;
      if (!fail && !c.bad) this.committed.set(c.hex, c.totalLength);
      const verdict = c.bad ? { ...error, code: ErrorCode.Conflict } : error;
      this.step({ kind: "whole_done", chunk: e.chunk, error: fail || c.bad ? verdict : null });
      return;
    }
    if (e.kind === "drop") {
      this.temps.delete(this.uploads.get(e.upload)!.key);
      this.step({ kind: "dropped", upload: e.upload });
      return;
    }
    const upload = (e as { upload: number }).upload;
    const u = this.uploads.get(upload)!;
    if (fail) {
      this.step({ kind: "failed", upload, error });
      return;
    }
    switch (e.kind) {
      case "open": {
        if (u.verifyOnly) {
          this.step({ kind: "opened", upload, size: 0 });
          return;
        }
        let t = this.temps.get(u.key);
        if (e.fresh) {
          t = { bytes: 0, synced: 0, bad: false };
          this.temps.set(u.key, t);
        } else if (!t) {
          this.step({ kind: "open_missing", upload });
          return;
        }
        t.synced = t.bytes; // the shell syncs what it found
        u.bad = t.bad;
        this.step({ kind: "opened", upload, size: t.bytes });
        return;
      }
      case "write": {
        const c = this.sent.get(e.chunk)!;
        if (c.bad) u.bad = true;
        if (!u.verifyOnly) {
          const t = this.temps.get(u.key)!;
          t.bytes = e.at + e.length;
          t.bad ||= c.bad;
        }
        this.step({ kind: "write_done", upload });
        return;
      }
      case "sync": {
        const t = this.temps.get(u.key)!;
        t.synced = t.bytes;
        this.step({ kind: "sync_done", upload });
        return;
      }
      case "verify":
        this.step({ kind: "verify_done", upload, mismatch: u.bad ? "content hashes wrong" : null });
        return;
      case "commit":
        if (!u.verifyOnly) {
          assertEquals(this.temps.get(u.key)!.bytes, u.total, "commit of a short temp");
          this.temps.delete(u.key);
        }
        this.committed.set(u.hex, u.total);
        if (e.owner !== null) {
          const set = this.owners.get(u.hex) ?? new Set();
          set.add(e.owner);
          this.owners.set(u.hex, set);
        }
        this.step({ kind: "commit_done", upload });
        return;
    }
  }

  /** A crash and restart: memory is lost, the disk stays (writes not synced may stay too). */
  restart(): void {
    this.step({ kind: "shutdown" });
    // Effects still outstanding end against the old core: ignored.
    const old = this.core;
    for (const [key, e] of this.ops) {
      if (e.kind === "put_whole") old.step({ kind: "whole_done", chunk: e.chunk, error: null });
      else {old.step({
          kind: "failed",
          upload: (e as { upload: number }).upload,
          error: {
            code: ErrorCode.Internal,
            message: "crash",
            value: 0,
          },
        });}
      this.ops.delete(key);
    }
    this.core = new UploadCore(this.opts);
    this.uploads.clear();
  }
}

interface Client {
  next: number;
}

function randomRun(seed: number, steps = 300): Sim {
  const r = rng(seed);
  const maxQueuedBytes = 20 + Math.floor(r() * 150);
  const sim = new Sim({ blockBytes: 8, idleUploadMs: 50, maxQueuedBytes, nodeName: "n" });
  const files = [
    { hex: "f0", total: 5 + Math.floor(r() * 40) },
    { hex: "f1", total: Math.floor(r() * 8) },
    { hex: "f2", total: 20 + Math.floor(r() * 30) },
  ];
  const owners = [null, "ann", "bob"];
  const clients = new Map<string, Client>();
  let now = 0;
  let id = 1;
  try {
    for (let i = 0; i < steps; i++) {
      const x = r();
      if (x < 0.35) {
        const f = files[Math.floor(r() * files.length)];
        const owner = owners[Math.floor(r() * owners.length)];
        const key = `${f.hex}.${owner ?? "-"}`;
        const cl = clients.get(key) ?? { next: 0 };
        clients.set(key, cl);
        let offset = cl.next;
        const y = r();
        if (y < 0.1) offset = 0;
        else if (y < 0.2) offset = Math.floor(r() * (f.total + 1)); // a retry or a gap
        offset = Math.min(offset, f.total);
        let length = Math.min(1 + Math.floor(r() * 12), f.total - offset);
        let total = f.total;
        if (r() < 0.03) total += 1; // another total length
        if (r() < 0.02) length += 1; // past the end
        const here = sim.committed.has(f.hex)
          ? { size: sim.committed.get(f.hex)!, corrupt: r() < 0.05 }
          : null;
        const c = {
          kind: "chunk" as const,
          id: id++,
          key,
          hex: f.hex,
          offset,
          length,
          totalLength: total,
          last: offset + length === total,
          owner,
          here,
          ownerHas: owner === null || (sim.owners.get(f.hex)?.has(owner) ?? false),
          nowMs: now,
          bad: r() < 0.03,
        };
        sim.sent.set(c.id, c);
        cl.next = c.last ? 0 : offset + length;
        const { bad: _bad, ...input } = c;
        for (const e of sim.step(input)) {
          if (e.kind === "error" && e.chunk === c.id) {
            cl.next = e.error.code === ErrorCode.WrongOffset ? e.error.value : 0;
          }
        }
      } else if (x < 0.9) {
        if (sim.ops.size === 0) continue;
        const keys = [...sim.ops.keys()];
        const key = keys[Math.floor(r() * keys.length)];
        const e = sim.ops.get(key)!;
        sim.finish(key, e.kind !== "drop" && r() < 0.06, r);
      } else if (x < 0.97) {
        now += Math.floor(r() * 40);
        sim.step({ kind: "tick", nowMs: now });
      } else {
        sim.restart();
      }
    }
    // Drain: every effect succeeds; then every chunk sent has been answered exactly once.
    for (let k = 0; k < 10_000 && sim.ops.size > 0; k++) {
      sim.finish([...sim.ops.keys()][0], false, r);
    }
    assertEquals(sim.ops.size, 0, "effects never end");
    assertEquals(sim.core.pendingChunks, 0, "chunks left unanswered");
    assertEquals(sim.core.queuedBytes, 0);
    for (const idSent of sim.sent.keys()) {
      assert(sim.answers.has(idSent), `chunk ${idSent} unanswered`);
    }
  } catch (e) {
    throw new Error(
      `seed ${seed}: ${(e as Error).message}\n${sim.log.slice(-40).join("\n")}`,
      { cause: e },
    );
  }
  return sim;
}

const SEEDS = 400;

Deno.test(`upload core: ${SEEDS} seeded random runs keep every invariant after every step`, () => {
  seen.clear();
  for (let seed = 1; seed <= SEEDS; seed++) randomRun(seed);
  console.log(JSON.stringify(Object.fromEntries(seen)));
  // The runs reach every kind of input and answer (else they would check little).
  for (
    const what of [
      "resumed",
      "open_missing",
      "commit_done",
      "whole_done",
      "failed",
      "dropped",
      "ack",
      "ack committed",
      `code ${ErrorCode.WrongOffset}`,
      `code ${ErrorCode.NoSpace}`,
      `code ${ErrorCode.Unavailable}`,
      `code ${ErrorCode.Conflict}`,
      `code ${ErrorCode.BadRequest}`,
    ]
  ) assert((seen.get(what) ?? 0) >= 100, `only ${seen.get(what) ?? 0} times ${what}`);
});

// ---------------------------------------------------------------------------------------------
// The shell on a real disk: what the core decides is what the store does

function put(file: Uuid, node: Uuid, data: Uint8Array, offset: number, total: number): FilePut {
  return {
    type: MessageType.FilePut,
    node,
    file,
    totalLength: total,
    offset,
    flags: offset + data.length === total ? FilePutFlags.Last : 0,
    data,
  };
}

Deno.test("store shell: an idle upload lets go of its temp's fd, then resumes from the temp", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-upload-core-" });
  const log = createLogger("storage", "test", {}, () => {});
  const store = await FileStore.open({
    dir,
    node: randomUuid(),
    nodeName: "s",
    log,
    idleUploadMs: 50,
  });
  try {
    const bytes = crypto.getRandomValues(new Uint8Array(3000));
    const file = idOf(bytes);
    const node = randomUuid();
    const first = await store.put(put(file, node, bytes.subarray(0, 1000), 0, 3000));
    assertEquals([first.durableLength, first.committed], [1000, false]);
    await waitFor("the idle upload dropped", () => store.openUploads === 0, { timeoutMs: 10_000 });
    // A new upload state, rehashed from the temp: a gap is told where the temp ends.
    const gap = await store.put(put(file, node, bytes.subarray(2000), 2000, 3000)).catch((e) => e);
    assert(gap instanceof RequestError, `not refused: ${JSON.stringify(gap)}`);
    assertEquals([gap.code, gap.value], [ErrorCode.WrongOffset, 1000]);
    const last = await store.put(put(file, node, bytes.subarray(1000), 1000, 3000));
    assertEquals([last.durableLength, last.committed], [3000, true]);
    const got = await store.get({
      type: MessageType.FileRequest,
      node,
      file,
      offset: 0,
      maxLength: 0,
    });
    assertEquals(got.data, bytes);
    assertEquals(store.openUploads, 0);
    assertEquals([...Deno.readDirSync(`${dir}/tmp`)].length, 0, "a temp left behind");
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
