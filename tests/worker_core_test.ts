// Unit tests of the worker's pure core (roles/worker/chunk_lifecycle.ts), driven without
// processes: the test plays the shell, feeding inputs and answering the effects. The last test
// is a seeded random walk (DSYS_CORE_SEEDS seeds, default 400) of placements, duplicates,
// cancels, epochs, shutdowns, lost answers and ticks, with the invariants checked after every
// step by the core itself and by a model of what the shell saw.
import assert from "node:assert/strict";
import {
  chunkKey,
  ChunkLifecycle,
  type LifecycleEffect,
  type LifecycleInput,
  LifecycleInvariantError,
  MAX_UNACKED_FINISHES,
  type ProgramEnd,
  REPORT_BACKOFF_MAX_MS,
  REPORT_BACKOFF_MIN_MS,
} from "../roles/worker/chunk_lifecycle.ts";
import { heartbeatPeriod, MAX_TOLD_HEARTBEAT_MS } from "../roles/worker/heartbeat.ts";
import {
  type ChunkFinished,
  ChunkState as CS,
  FailureCode as FC,
  MessageType,
  type Uuid,
  uuidToHex,
  type WorkerRequest,
} from "../wire/mod.ts";

const NODE = new Uint8Array(16).fill(7);
const PROGRAM = new Uint8Array(16).fill(1);
const INPUT = new Uint8Array(16).fill(2);

function jobId(n: number): Uuid {
  const u = new Uint8Array(16);
  u[0] = 0x40;
  u[15] = n;
  return u;
}

function req(
  job: number,
  chunkIndex: number,
  attempt = 1,
  epoch = 1,
  inputs = false,
): WorkerRequest {
  return {
    type: MessageType.WorkerRequest,
    node: new Uint8Array(16),
    job: jobId(job),
    programId: PROGRAM,
    programSize: 10,
    inputFiles: inputs ? [{ id: INPUT, size: 5, name: "in.txt" }] : [],
    chunkIndex,
    numChunks: 8,
    argument: new Uint8Array(0),
    timeLimitMs: 1000,
    attempt,
    epoch,
    ticket: new Uint8Array(32).fill(9),
  };
}

const exit0: ProgramEnd = {
  exitCode: 0,
  signal: 0,
  timedOut: false,
  aborted: false,
  durationMs: 5,
  stderrTail: new Uint8Array(0),
  limitHit: null,
};

type Kind = LifecycleEffect["kind"];
type Of<K extends Kind> = Extract<LifecycleEffect, { kind: K }>;

function only<K extends Kind>(effects: LifecycleEffect[], kind: K): Of<K> {
  const hits = effects.filter((e) => e.kind === kind);
  assert.equal(hits.length, 1, `one ${kind} in ${JSON.stringify(effects.map((e) => e.kind))}`);
  return hits[0] as Of<K>;
}

const kinds = (effects: LifecycleEffect[]) => effects.map((e) => e.kind);

/** Drives one chunk from placement to where `stage` begins; returns its key. */
const STAGES = [
  "fetching",
  "preparing",
  "starting",
  "running",
  "uploading",
  "cleaning",
  "reporting",
] as const;
type Stage = typeof STAGES[number];

function driveTo(core: ChunkLifecycle, r: WorkerRequest, stage: Stage): string {
  const key = chunkKey(r);
  const steps: [Stage, LifecycleInput][] = [
    ["preparing", { kind: "program_ready", key }],
    ["starting", { kind: "prepared", key }],
    ["running", { kind: "spawned", key, pid: 42 }],
    ["uploading", { kind: "exited", key, end: exit0 }],
    ["cleaning", { kind: "uploaded", key, outputs: [] }],
    ["reporting", { kind: "cleaned", key, slotUsable: true }],
  ];
  assert.equal(only(core.step({ kind: "place", req: r }), "ack").accepted, true);
  for (const [reached, input] of steps) {
    if (core.chunk(key)!.phase === stage) break;
    core.step(input);
    assert.equal(core.chunk(key)!.phase, reached);
  }
  assert.equal(core.chunk(key)!.phase, stage);
  return key;
}

Deno.test("worker core: the normal path, effect by effect", () => {
  const core = new ChunkLifecycle(NODE, 2);
  const r = req(1, 0, 1, 1, true);
  const key = chunkKey(r);
  let fx = core.step({ kind: "place", req: r });
  assert.deepEqual(kinds(fx), ["ack", "fetch_program"]);
  assert.deepEqual(only(fx, "ack"), {
    kind: "ack",
    key,
    accepted: true,
    reason: "",
    why: "new",
    epoch: 1,
    newest: 1,
  });
  assert.equal(core.freeSlots(), 1);
  fx = core.step({ kind: "program_ready", key });
  const slot = only(fx, "prepare").slot;
  assert.ok(slot === 0 || slot === 1);
  assert.deepEqual(core.step({ kind: "prepared", key }), [{ kind: "spawn", key, slot }]);
  fx = core.step({ kind: "spawned", key, pid: 42 });
  const running = only(fx, "report_running").status;
  assert.equal(running.state, CS.Running);
  assert.deepEqual(running.ticket, r.ticket);
  assert.deepEqual(core.step({ kind: "exited", key, end: exit0 }), [{ kind: "upload", key }]);
  const outputs = [{ id: INPUT, size: 5, name: "stdout" }];
  fx = core.step({ kind: "uploaded", key, outputs });
  const clean = only(fx, "clean_up");
  assert.equal(clean.slot, slot);
  assert.equal(clean.ended?.state, CS.Succeeded);
  fx = core.step({ kind: "cleaned", key, slotUsable: true });
  const st = only(fx, "send_status").status;
  assert.equal(st.state, CS.Succeeded);
  assert.deepEqual(st.outputs, outputs);
  assert.equal(core.chunk(key)!.phase, "reporting");
  assert.equal(core.freeSlots(), 1, "the slot stays taken until the masters answered");
  fx = core.step({ kind: "status_answer", key, answer: "acked", nowMs: 0 });
  assert.deepEqual(kinds(fx), ["send_finished", "forget"]);
  const fin = only(fx, "send_finished");
  assert.equal(fin.report.state, CS.Succeeded);
  assert.equal(fin.hadInputs, true);
  assert.equal(core.size(), 0);
  assert.equal(core.freeSlots(), 2);
  assert.equal(core.stats().reported, 1);
  // The chunk read inputs: the cache changed, so the balancer hears it now.
  assert.deepEqual(
    core.step({ kind: "finished_answer", report: fin.report, answer: "acked", hadInputs: true }),
    [{ kind: "wake" }],
  );
  assert.deepEqual(
    core.step({ kind: "finished_answer", report: fin.report, answer: "acked", hadInputs: false }),
    [],
  );
});

Deno.test("worker core: failures become definite results", () => {
  const core = new ChunkLifecycle(NODE, 4);
  // A program that cannot be fetched: the fetch error the mount saw is the reason.
  const a = chunkKey(req(1, 0));
  core.step({ kind: "place", req: req(1, 0) });
  core.step({ kind: "fetch_error", file: uuidToHex(PROGRAM), text: "NOT_FOUND" });
  let fx = core.step({ kind: "program_failed", key: a, text: "EIO" });
  assert.equal(only(fx, "clean_up").ended, null);
  fx = core.step({ kind: "cleaned", key: a, slotUsable: true });
  const s = only(fx, "send_status").status;
  assert.equal(s.failure, FC.InputUnavailable);
  assert.match(s.reason, /could not be fetched: NOT_FOUND/);
  // Limits beyond the worker's policy.
  const b = chunkKey(req(1, 1));
  core.step({ kind: "place", req: req(1, 1) });
  core.step({ kind: "program_ready", key: b });
  core.step({ kind: "prepare_failed", key: b, failure: FC.Policy, reason: "too much" });
  fx = core.step({ kind: "cleaned", key: b, slotUsable: true });
  assert.equal(only(fx, "send_status").status.failure, FC.Policy);
  // An upload over the disk limit keeps the program's own reason in brackets.
  const c = driveTo(core, req(1, 2), "running");
  const end = { ...exit0, exitCode: 3 };
  core.step({ kind: "exited", key: c, end });
  core.step({ kind: "upload_failed", key: c, quota: true, text: "over 10 bytes" });
  fx = core.step({ kind: "cleaned", key: c, slotUsable: true });
  const u = only(fx, "send_status").status;
  assert.equal(u.failure, FC.OutputQuota);
  assert.equal(u.reason, "over 10 bytes (exit code 3)");
  assert.equal(u.exitCode, 3);
  // Processes that would not go: failed, nothing uploaded, the slot taken out of use.
  const d = driveTo(core, req(1, 3), "running");
  fx = core.step({ kind: "exited", key: d, end: { ...exit0, reapError: "EBUSY" } });
  assert.equal(only(fx, "clean_up").ended?.failure, FC.Internal);
  core.step({ kind: "cleaned", key: d, slotUsable: false });
  assert.equal(core.brokenSlots(), 1);
});

Deno.test("worker core: cancel at every stage stops the chunk and reports it cancelled", () => {
  for (const stage of STAGES) {
    const core = new ChunkLifecycle(NODE, 2);
    const r = req(3, 1);
    const key = driveTo(core, r, stage);
    const other = driveTo(core, req(4, 1), "running"); // another job's chunk is left alone
    const fx = core.step({ kind: "cancel", job: jobId(3), chunks: [] });
    assert.equal(only(fx, "cancel_ack").count, 1, stage);
    const expect: Partial<Record<Stage, Kind>> = { fetching: "abort_fetch", running: "kill" };
    assert.deepEqual(kinds(fx), [...(expect[stage] ? [expect[stage]!] : []), "cancel_ack"], stage);
    // Idempotent: a second cancel stops nothing more.
    assert.equal(
      only(core.step({ kind: "cancel", job: jobId(3), chunks: [] }), "cancel_ack").count,
      0,
    );
    assert.equal(core.logTarget(jobId(3), 1), null, "a cancelled chunk has no live log");
    // The shell finishes what was under way; the chunk never starts and is not reported.
    const all: LifecycleEffect[] = [];
    const feed = (i: LifecycleInput) => {
      const out = core.step(i);
      all.push(...out);
      return out;
    };
    const finishStage: Record<Stage, () => void> = {
      fetching: () => feed({ kind: "program_failed", key, text: "aborted" }),
      preparing: () => feed({ kind: "prepared", key }),
      starting: () => {
        assert.deepEqual(kinds(feed({ kind: "spawned", key, pid: 9 })), ["kill"]);
        feed({ kind: "exited", key, end: { ...exit0, aborted: true, signal: 9 } });
      },
      running: () => feed({ kind: "exited", key, end: { ...exit0, aborted: true, signal: 9 } }),
      uploading: () => feed({ kind: "uploaded", key, outputs: [] }),
      cleaning: () => {},
      reporting: () => feed({ kind: "status_answer", key, answer: "acked", nowMs: 0 }),
    };
    finishStage[stage]();
    if (stage !== "reporting") {
      assert.equal(core.chunk(key)?.phase, "cleaning", stage);
      feed({ kind: "cleaned", key, slotUsable: true });
    }
    assert.ok(!all.some((e) => e.kind === "spawn"), `${stage}: a cancelled chunk started`);
    assert.ok(!all.some((e) => e.kind === "upload"), `${stage}: a cancelled chunk uploaded`);
    const fin = only(all, "send_finished").report;
    if (stage === "reporting") {
      // Its result was decided (and sent) before the cancel: the masters keep whichever came
      // first, and the balancer hears the same result.
      assert.equal(fin.state, CS.Succeeded);
    } else {
      assert.ok(!all.some((e) => e.kind === "send_status"), `${stage}: reported to the masters`);
      assert.equal(fin.state, CS.Cancelled, stage);
    }
    assert.equal(core.size(), 1, stage);
    assert.equal(core.chunk(other)!.phase, "running");
    // Pushed again later: not run again; its end is told again.
    const again = core.step({ kind: "place", req: r });
    assert.deepEqual(kinds(again), ["ack", "send_finished"]);
    assert.equal(only(again, "send_finished").report.state, fin.state);
  }
});

Deno.test("worker core: cancel names chunks; other chunks of the job run on", () => {
  const core = new ChunkLifecycle(NODE, 3);
  const a = driveTo(core, req(1, 0), "running");
  const b = driveTo(core, req(1, 1), "running");
  const fx = core.step({ kind: "cancel", job: jobId(1), chunks: [1, 7] });
  assert.equal(only(fx, "cancel_ack").count, 1);
  assert.deepEqual(only(fx, "kill"), { kind: "kill", key: b });
  assert.equal(core.chunk(a)!.cancelled, false);
  assert.equal(core.logTarget(jobId(1), 0)?.key, a);
});

Deno.test("worker core: fencing by a newer balancer epoch", () => {
  const core = new ChunkLifecycle(NODE, 4);
  const running = driveTo(core, req(1, 0, 1, 5), "running");
  let ack = only(core.step({ kind: "place", req: req(1, 1, 1, 4) }), "ack");
  assert.equal(ack.accepted, false);
  assert.equal(ack.why, "fenced");
  assert.equal(ack.reason, "stale balancer epoch 4 (newest seen 5)");
  assert.equal(core.size(), 1);
  assert.deepEqual(core.stats(), { accepted: 1, refused: 1, reported: 0, fenced: 1 });
  assert.equal(only(core.step({ kind: "place", req: req(1, 1, 1, 5) }), "ack").accepted, true);
  assert.equal(only(core.step({ kind: "place", req: req(1, 2, 1, 6) }), "ack").accepted, true);
  // Once epoch 6 was seen, epoch 5's pushes are stale, even a duplicate of a running chunk.
  ack = only(core.step({ kind: "place", req: req(1, 0, 1, 5) }), "ack");
  assert.equal(ack.why, "fenced");
  assert.equal(core.stats().fenced, 2);
  // What was accepted before runs on: fencing refuses placements, it does not kill.
  assert.equal(core.chunk(running)!.phase, "running");
  // A balancer run without masters (epoch 0 / absent) is fenced once epochs were seen.
  const noEpoch = { ...req(2, 0), epoch: undefined };
  assert.equal(only(core.step({ kind: "place", req: noEpoch }), "ack").why, "fenced");
});

Deno.test("worker core: a lost acknowledgement: the status is re-sent with backoff", () => {
  const core = new ChunkLifecycle(NODE, 1);
  const key = driveTo(core, req(1, 0), "reporting");
  const first = core.chunk(key)!.outcome!;
  let now = 1000;
  let wait = REPORT_BACKOFF_MIN_MS;
  const waits: number[] = [];
  for (let i = 0; i < 6; i++) {
    assert.deepEqual(core.step({ kind: "status_answer", key, answer: "retry", nowMs: now }), []);
    assert.deepEqual(core.step({ kind: "tick", nowMs: now + wait - 1 }), [], "not before due");
    const fx = core.step({ kind: "tick", nowMs: now + wait });
    assert.equal(only(fx, "send_status").status, first, "the same status, again");
    assert.deepEqual(core.step({ kind: "tick", nowMs: now + wait + 10_000 }), [], "one at a time");
    waits.push(wait);
    now += wait;
    wait = Math.min(REPORT_BACKOFF_MAX_MS, wait * 2);
  }
  assert.deepEqual(waits, [200, 400, 800, 1600, 2000, 2000]);
  assert.equal(core.freeSlots(), 0, "the slot is held until the masters answered");
  const fx = core.step({ kind: "status_answer", key, answer: "acked", nowMs: now });
  const report = only(fx, "send_finished").report;
  assert.equal(core.freeSlots(), 1);
  // chunk_finished lost too: kept, and re-sent by the shell's balancer loop.
  assert.deepEqual(
    core.step({ kind: "finished_answer", report, answer: "unavailable", hadInputs: false }),
    [{ kind: "wake" }],
  );
  assert.equal(core.unackedHead(), report);
  core.step({ kind: "resent", report });
  assert.equal(core.unackedCount(), 0);
  // A rejected status is an answer too: not re-sent.
  const k2 = driveTo(core, req(1, 1), "reporting");
  const fx2 = core.step({ kind: "status_answer", key: k2, answer: "rejected", nowMs: now });
  assert.equal(only(fx2, "send_finished").report.state, CS.Succeeded);
  assert.equal(core.stats().reported, 1);
});

Deno.test("worker core: unacknowledged chunk_finished reports are bounded, oldest dropped", () => {
  const core = new ChunkLifecycle(NODE, 1);
  const reports: ChunkFinished[] = [];
  for (let i = 0; i < MAX_UNACKED_FINISHES + 5; i++) {
    const report: ChunkFinished = {
      type: MessageType.ChunkFinished,
      node: NODE,
      job: jobId(1),
      chunkIndex: i,
      attempt: 1,
      state: CS.Succeeded,
    };
    reports.push(report);
    core.step({ kind: "finished_answer", report, answer: "unavailable", hadInputs: false });
  }
  assert.equal(core.unackedCount(), MAX_UNACKED_FINISHES);
  assert.equal(core.unackedHead(), reports[5]);
  // An answer for one dropped meanwhile changes nothing.
  core.step({ kind: "resent", report: reports[0] });
  assert.equal(core.unackedCount(), MAX_UNACKED_FINISHES);
});

Deno.test("worker core: slot accounting", () => {
  const core = new ChunkLifecycle(NODE, 2);
  const a = driveTo(core, req(1, 0), "running");
  const b = driveTo(core, req(1, 1), "preparing");
  assert.notEqual(core.chunk(a)!.slot, core.chunk(b)!.slot);
  assert.equal(core.freeSlots(), 0);
  const full = only(core.step({ kind: "place", req: req(1, 2) }), "ack");
  assert.deepEqual([full.accepted, full.why, full.reason], [
    false,
    "full",
    "no free slot (2 of 2 busy)",
  ]);
  // a ends; its slot turns out unusable (its processes would not go).
  core.step({ kind: "exited", key: a, end: exit0 });
  core.step({ kind: "uploaded", key: a, outputs: [] });
  core.step({ kind: "cleaned", key: a, slotUsable: false });
  assert.equal(core.brokenSlots(), 1);
  assert.equal(core.freeSlots(), 0, "a still reports");
  core.step({ kind: "status_answer", key: a, answer: "acked", nowMs: 0 });
  assert.equal(core.freeSlots(), 0, "one slot broken, one busy");
  // b ends but is still reporting: its slot index is free again, its slot count is not.
  core.step({ kind: "prepared", key: b });
  core.step({ kind: "spawned", key: b, pid: 1 });
  core.step({ kind: "exited", key: b, end: exit0 });
  core.step({ kind: "uploaded", key: b, outputs: [] });
  core.step({ kind: "cleaned", key: b, slotUsable: true });
  core.step({ kind: "status_answer", key: b, answer: "acked", nowMs: 0 });
  assert.equal(core.freeSlots(), 1);
  // With one slot broken, a second chunk is accepted (the balancer counts 2 slots) but has no
  // usable slot: a definite failure, nothing started.
  const c = driveTo(core, req(1, 3), "fetching");
  const d = req(1, 4);
  const fx = core.step({ kind: "place", req: d });
  assert.equal(only(fx, "ack").accepted, true);
  assert.deepEqual(only(fx, "clean_up"), {
    kind: "clean_up",
    key: chunkKey(d),
    slot: null,
    ended: null,
  });
  const st = only(
    core.step({ kind: "cleaned", key: chunkKey(d), slotUsable: true }),
    "send_status",
  );
  assert.match(st.status.reason, /no usable slot/);
  assert.equal(core.chunk(c)!.phase, "fetching");
});

Deno.test("worker core: duplicates of the same placement", () => {
  const core = new ChunkLifecycle(NODE, 2);
  const r = req(1, 0);
  const key = driveTo(core, r, "running");
  for (let i = 0; i < 3; i++) {
    const fx = core.step({ kind: "place", req: { ...r } });
    assert.deepEqual(kinds(fx), ["ack"], "a duplicate starts nothing");
    assert.equal(only(fx, "ack").why, "duplicate");
  }
  assert.equal(core.size(), 1);
  assert.equal(core.stats().accepted, 1);
  // Another attempt of the same chunk is another placement.
  assert.equal(only(core.step({ kind: "place", req: req(1, 0, 2) }), "ack").why, "new");
  core.step({ kind: "exited", key, end: { ...exit0, exitCode: 1 } });
  core.step({ kind: "uploaded", key, outputs: [] });
  core.step({ kind: "cleaned", key, slotUsable: true });
  const fin = only(
    core.step({ kind: "status_answer", key, answer: "acked", nowMs: 0 }),
    "send_finished",
  );
  assert.equal(fin.report.state, CS.Failed);
  // After it finished: answered from memory, with the same outcome, never run again.
  const fx = core.step({ kind: "place", req: r });
  assert.deepEqual(kinds(fx), ["ack", "send_finished"]);
  assert.equal(only(fx, "ack").why, "finished");
  assert.equal(only(fx, "send_finished").report.state, CS.Failed);
  assert.equal(core.finishedState(key), CS.Failed);
});

Deno.test("worker core: shutdown kills, tells the masters the chunks are lost, refuses work", () => {
  const core = new ChunkLifecycle(NODE, 3);
  const f = driveTo(core, req(1, 0), "fetching");
  const r = driveTo(core, req(1, 1), "running");
  const p = driveTo(core, req(1, 2), "reporting");
  core.step({ kind: "status_answer", key: p, answer: "retry", nowMs: 0 });
  const fx = core.step({ kind: "shutdown" });
  assert.deepEqual(fx, [{ kind: "abort_fetch", key: f }, { kind: "kill", key: r }]);
  assert.equal(only(core.step({ kind: "place", req: req(2, 0) }), "ack").why, "closing");
  core.step({ kind: "program_failed", key: f, text: "aborted" });
  let out = core.step({ kind: "cleaned", key: f, slotUsable: true });
  assert.deepEqual(kinds(out), ["send_lost", "forget", "wake"]);
  assert.equal(only(out, "send_lost").status.state, CS.Lost);
  assert.equal(only(out, "send_lost").status.failure, FC.WorkerLost);
  core.step({ kind: "exited", key: r, end: { ...exit0, aborted: true } });
  out = core.step({ kind: "cleaned", key: r, slotUsable: true });
  assert.equal(only(out, "send_lost").status.chunkIndex, 1);
  // The reporting chunk gets its due retry; a failure now gives up (no chunk_finished).
  only(core.step({ kind: "tick", nowMs: 10_000 }), "send_status");
  out = core.step({ kind: "status_answer", key: p, answer: "retry", nowMs: 10_000 });
  assert.deepEqual(kinds(out), ["forget", "wake"]);
  assert.equal(core.size(), 0);
});

Deno.test("worker core: the shell's mistakes are caught, not absorbed", () => {
  const core = new ChunkLifecycle(NODE, 1);
  assert.throws(() => core.step({ kind: "prepared", key: "nope" }), LifecycleInvariantError);
  const key = driveTo(core, req(1, 0), "fetching");
  assert.throws(() => core.step({ kind: "exited", key, end: exit0 }), LifecycleInvariantError);
  assert.throws(() => new ChunkLifecycle(NODE, 0), LifecycleInvariantError);
});

// ------------------------------------------------------------------------------------------
// Seeded random walk

class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  next(): number {
    // mulberry32
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: T[]): T {
    return xs[this.int(xs.length)];
  }
}

/** What the simulated shell has under way for a chunk (one thing at a time per chunk). */
type Task =
  | { kind: "fetch"; key: string; aborted: boolean }
  | { kind: "prepare"; key: string; slot: number }
  | { kind: "spawn"; key: string; slot: number }
  | { kind: "program"; key: string; slot: number; killed: boolean; pid: number }
  | { kind: "upload"; key: string }
  | { kind: "clean"; key: string; slot: number | null }
  | { kind: "status"; key: string }
  | { kind: "finished"; report: ChunkFinished; hadInputs: boolean };

/** One random run; returns a description of the first broken invariant, or null. */
function randomRun(seed: number, steps: number): string | null {
  const rng = new Rng(seed);
  const slots = 1 + rng.int(3);
  const core = new ChunkLifecycle(NODE, slots);
  let now = 0;
  let epoch = 1;
  const tasks: Task[] = [];
  const placed: WorkerRequest[] = [];
  /** First final state told about each attempt (to the masters or the balancer). */
  const finals = new Map<string, number>();
  /** Attempts stopped (cancel or shutdown) while on the worker: they must never start. */
  const stopped = new Set<string>();
  /** Attempts whose program runs now (spawned and not exited), by slot. */
  const runningIn = new Map<number, string>();
  /** Slot indexes handed to chunks (from prepare until cleaned). */
  const slotOf = new Map<string, number>();
  /** Accepted attempts not yet forgotten. */
  const live = new Set<string>();
  const trail: string[] = [];
  let closing = false;

  const fail = (what: string) =>
    `seed ${seed} (${slots} slots): ${what}\n  last inputs: ${trail.slice(-12).join("\n    ")}`;

  const apply = (input: LifecycleInput): string | null => {
    trail.push(JSON.stringify(input, (k, v) => (k === "req" ? chunkKey(v) : v)));
    let fx: LifecycleEffect[];
    try {
      fx = core.step(input);
    } catch (e) {
      return fail(`core threw ${e instanceof Error ? e.message : e}`);
    }
    const acks = fx.filter((e) => e.kind === "ack");
    if (input.kind === "place" && acks.length !== 1) return fail("a place without one ack");
    if (input.kind !== "place" && acks.length > 0) return fail("an ack without a place");
    if (input.kind === "cancel" && fx.filter((e) => e.kind === "cancel_ack").length !== 1) {
      return fail("a cancel without one cancel_ack");
    }
    if (input.kind === "cancel" || input.kind === "shutdown") {
      for (const c of core.chunks()) if (c.aborted) stopped.add(c.key);
    }
    for (const e of fx) {
      switch (e.kind) {
        case "ack":
          if (e.accepted && e.why === "new") live.add(e.key);
          break;
        case "fetch_program":
          tasks.push({ kind: "fetch", key: e.key, aborted: false });
          break;
        case "abort_fetch": {
          const t = tasks.find((t) => t.kind === "fetch" && t.key === e.key);
          if (!t) return fail(`abort_fetch of ${e.key} with no fetch under way`);
          (t as { aborted: boolean }).aborted = true;
          break;
        }
        case "prepare":
          if ([...slotOf.values()].includes(e.slot)) return fail(`slot ${e.slot} handed out twice`);
          slotOf.set(e.key, e.slot);
          tasks.push({ kind: "prepare", key: e.key, slot: e.slot });
          break;
        case "spawn":
          if (stopped.has(e.key)) return fail(`stopped chunk ${e.key} started`);
          if ([...runningIn.values()].includes(e.key)) return fail(`${e.key} started twice`);
          if (runningIn.has(e.slot)) return fail(`slot ${e.slot} runs two programs`);
          if (slotOf.get(e.key) !== e.slot) return fail(`${e.key} spawned outside its slot`);
          tasks.push({ kind: "spawn", key: e.key, slot: e.slot });
          break;
        case "kill": {
          const t = tasks.find((t) => t.kind === "program" && t.key === e.key);
          if (!t) return fail(`kill of ${e.key}, which does not run`);
          (t as { killed: boolean }).killed = true;
          break;
        }
        case "report_running":
          if (stopped.has(chunkKey(e.status))) return fail("a stopped chunk reported running");
          break;
        case "upload":
          tasks.push({ kind: "upload", key: e.key });
          break;
        case "clean_up":
          tasks.push({ kind: "clean", key: e.key, slot: e.slot });
          break;
        case "send_status": {
          const k = e.key;
          const prev = finals.get(k);
          if (prev !== undefined && prev !== e.status.state) {
            return fail(`${k} reported ${e.status.state} after ${prev}`);
          }
          finals.set(k, e.status.state);
          tasks.push({ kind: "status", key: k });
          break;
        }
        case "send_finished": {
          const k = chunkKey(e.report);
          const prev = finals.get(k);
          if (prev !== undefined && prev !== e.report.state) {
            return fail(`${k} finished as ${e.report.state} after ${prev}`);
          }
          finals.set(k, e.report.state);
          tasks.push({ kind: "finished", report: e.report, hadInputs: e.hadInputs });
          break;
        }
        case "forget":
          if (!live.delete(e.key)) return fail(`forget of ${e.key}, not live`);
          if (tasks.some((t) => "key" in t && t.key === e.key)) {
            return fail(`${e.key} forgotten with work under way`);
          }
          break;
        case "send_lost":
        case "wake":
        case "cancel_ack":
          break;
      }
    }
    // After a cancel or a shutdown nothing stopped may still run unkilled.
    for (const t of tasks) {
      if (t.kind === "program" && stopped.has(t.key) && !t.killed) {
        return fail(`stopped chunk ${t.key} still runs, not killed`);
      }
      if (t.kind === "fetch" && stopped.has(t.key) && !t.aborted) {
        return fail(`stopped chunk ${t.key} still waits for its program`);
      }
    }
    if (core.size() !== live.size) return fail(`core holds ${core.size()}, shell ${live.size}`);
    if (core.size() > slots) return fail(`${core.size()} chunks in ${slots} slots`);
    if (core.freeSlots() !== Math.max(0, slots - core.brokenSlots() - core.size())) {
      return fail("free slots miscounted");
    }
    return null;
  };

  /** Completes task `i`; `good` picks the happy outcome (used to drain at the end). */
  const complete = (i: number, good: boolean): string | null => {
    const t = tasks.splice(i, 1)[0];
    const p = (x: number) => !good && rng.chance(x);
    switch (t.kind) {
      case "fetch":
        return apply(
          t.aborted || p(0.2)
            ? { kind: "program_failed", key: t.key, text: "unreachable" }
            : { kind: "program_ready", key: t.key },
        );
      case "prepare":
        return apply(
          p(0.15)
            ? { kind: "prepare_failed", key: t.key, failure: FC.Policy, reason: "limits" }
            : { kind: "prepared", key: t.key },
        );
      case "spawn": {
        if (p(0.1)) return apply({ kind: "spawn_failed", key: t.key, text: "bwrap died" });
        const pid = p(0.05) ? 0 : 100 + rng.int(1000);
        tasks.push({ kind: "program", key: t.key, slot: t.slot, killed: false, pid });
        runningIn.set(t.slot, t.key);
        return apply({ kind: "spawned", key: t.key, pid });
      }
      case "program": {
        runningIn.delete(t.slot);
        const end: ProgramEnd = { ...exit0, aborted: t.killed };
        if (t.killed) end.signal = 9;
        else if (t.pid === 0) end.spawnError = "ENOENT";
        else {
          const r = good ? 1 : rng.next();
          if (r < 0.3) end.exitCode = 1 + rng.int(3);
          else if (r < 0.4) end.timedOut = true;
          else if (r < 0.45) end.reapError = "EBUSY";
          else if (r < 0.55) end.limitHit = { failure: FC.Oom, reason: "oom" };
        }
        return apply({ kind: "exited", key: t.key, end });
      }
      case "upload":
        return apply(
          p(0.15)
            ? { kind: "upload_failed", key: t.key, quota: rng.chance(0.5), text: "storage" }
            : { kind: "uploaded", key: t.key, outputs: [] },
        );
      case "clean":
        slotOf.delete(t.key);
        return apply({ kind: "cleaned", key: t.key, slotUsable: !p(0.05) });
      case "status": {
        const answer = good
          ? "acked"
          : rng.pick(["acked", "acked", "retry", "retry", "rejected"] as const);
        return apply({ kind: "status_answer", key: t.key, answer, nowMs: now });
      }
      case "finished": {
        const answer = good
          ? "acked"
          : rng.pick(["acked", "acked", "unavailable", "rejected"] as const);
        return apply({ kind: "finished_answer", report: t.report, answer, hadInputs: t.hadInputs });
      }
    }
  };

  for (let s = 0; s < steps; s++) {
    const roll = rng.next();
    let err: string | null = null;
    if (roll < 0.18) {
      if (rng.chance(0.1)) epoch += 1;
      const r = req(
        rng.int(3),
        rng.int(4),
        1 + rng.int(2),
        epoch - (rng.chance(0.1) ? 1 : 0),
        rng.chance(0.3),
      );
      placed.push(r);
      err = apply({ kind: "place", req: r });
    } else if (roll < 0.26 && placed.length > 0) {
      err = apply({ kind: "place", req: { ...rng.pick(placed), epoch } });
    } else if (roll < 0.31) {
      const chunks = rng.chance(0.5) ? [] : [rng.int(4), rng.int(4)];
      err = apply({ kind: "cancel", job: jobId(rng.int(3)), chunks });
    } else if (roll < 0.312 && !closing) {
      closing = true;
      err = apply({ kind: "shutdown" });
    } else if (roll < 0.4) {
      now += rng.int(1500);
      err = apply({ kind: "tick", nowMs: now });
    } else if (roll < 0.42) {
      err = apply({
        kind: "fetch_error",
        file: uuidToHex(rng.chance(0.5) ? PROGRAM : INPUT),
        text: "EIO",
      });
    } else if (roll < 0.46 && core.unackedCount() > 0) {
      err = apply({ kind: "resent", report: core.unackedHead()! });
    } else if (tasks.length > 0) {
      err = complete(rng.int(tasks.length), false);
    }
    if (err) return err;
  }
  // Drain: every task ends well, retries come due, until nothing is left under way.
  for (let guard = 0; tasks.length > 0 || core.size() > 0; guard++) {
    if (guard > 10_000) return fail(`does not drain: ${core.size()} chunks, ${tasks.length} tasks`);
    const err = tasks.length > 0 ? complete(0, true) : apply({ kind: "tick", nowMs: now += 5000 });
    if (err) return err;
  }
  while (core.unackedCount() > 0) {
    const err = apply({ kind: "resent", report: core.unackedHead()! });
    if (err) return err;
  }
  if (live.size !== 0) return fail(`chunks never forgotten: ${[...live].join(", ")}`);
  if (core.freeSlots() !== slots - core.brokenSlots()) return fail("slots not all free at the end");
  if (runningIn.size !== 0 || slotOf.size !== 0) return fail("a program or slot left behind");
  return null;
}

Deno.test("worker core: random input sequences keep every invariant", () => {
  const seeds = Number(Deno.env.get("DSYS_CORE_SEEDS") ?? 400);
  const first = Number(Deno.env.get("DSYS_CORE_FIRST_SEED") ?? 1);
  for (let seed = first; seed < first + seeds; seed++) {
    const err = randomRun(seed, 400);
    if (err) assert.fail(err);
  }
});

Deno.test("worker heartbeat period: what the balancer told, bounded; its own without an answer", () => {
  assert.equal(heartbeatPeriod(500, null), 500); // no answer: look for a balancer at our pace
  assert.equal(heartbeatPeriod(500, 0), 500); // an older balancer, or adaptation off
  assert.equal(heartbeatPeriod(500, 5000), 5000);
  assert.equal(heartbeatPeriod(500, 100), 500); // never faster than configured
  assert.equal(heartbeatPeriod(500, 2 ** 52), MAX_TOLD_HEARTBEAT_MS); // never silenced
});
