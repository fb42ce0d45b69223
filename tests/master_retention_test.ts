/**
 * Retention in the job table: finished jobs leave through `remove` commands, taking their file
 * references and (with their last job) their client's session with them; a snapshot of the
 * table rebuilds exactly what the log did, and once every job is removed nothing is left.
 */
import assert from "node:assert/strict";
import { type JobSpec, JobTable, sessionKey } from "../roles/master/job_table.ts";
import { decodeCommand, encodeCommand, MAX_REMOVE } from "../roles/master/commands.ts";
import { decodeSnapshot, encodeSnapshot } from "../roles/master/snapshot.ts";
import {
  ChunkState,
  FailureCode,
  type FileEntry,
  MessageType,
  randomUuid,
  uuidToHex as hex,
  type WorkerStatus,
} from "../wire/mod.ts";
import { Rng } from "./wire_gen.ts";
import { DurationError, formatDuration, parseDuration } from "../lib/duration.ts";
import { parseMasterArgs } from "../roles/master/main.ts";

function spec(client: Uint8Array, seq: number, opts: {
  chunks?: number;
  owner?: string;
  inputs?: Uint8Array[];
  program?: Uint8Array;
} = {}): JobSpec {
  const s: JobSpec = {
    owner: opts.owner ?? "alice",
    jobId: randomUuid(),
    clientId: client,
    seq,
    programName: "p.sh",
    programId: opts.program ?? randomUuid(),
    programSize: 15,
    argument: new Uint8Array(0),
    numChunks: opts.chunks ?? 1,
    timeLimitMs: 1000,
    inputs: (opts.inputs ?? []).map((id, i): FileEntry => ({
      id,
      name: `in${i}`,
      size: 1,
    })),
    submittedAtMs: 1700000000000,
  };
  return s;
}

function result(
  job: Uint8Array,
  chunk: number,
  outputs: Uint8Array[],
  ok = true,
): WorkerStatus {
  return {
    type: MessageType.WorkerStatus,
    node: randomUuid(),
    job,
    state: ok ? ChunkState.Succeeded : ChunkState.Failed,
    chunkIndex: chunk,
    attempt: 1,
    exitCode: ok ? 0 : 1,
    signal: 0,
    failure: ok ? FailureCode.None : FailureCode.ExitCode,
    durationMs: 3,
    outputs: outputs.map((id, i) => ({ id, name: `out${i}`, size: 2 })),
    stderrTail: new Uint8Array(0),
    reason: "",
  };
}

/** Everything of a table that must survive a snapshot, as plain data. */
function state(t: JobTable) {
  return {
    jobs: [...t.jobs.entries()].map((
      [k, j],
    ) => [k, j.chunks, j.done, j.failed]),
    sessions: [...t.sessions.entries()].map(([k, s]) => [
      k,
      s.seq,
      hex(s.jobId),
      s.jobs.map((j) => hex(j.jobId)),
    ]).sort(), // (the order of sessions means nothing)
    fileRefs: [...t.fileRefs.entries()].sort(),
  };
}

const submit = (t: JobTable, s: JobSpec) => t.apply({ kind: "submit", spec: s });
const remove = (t: JobTable, ...ids: Uint8Array[]) => t.apply({ kind: "remove", jobIds: ids });

Deno.test("retention: remove takes finished jobs only, with their file references", () => {
  const t = new JobTable();
  const c = randomUuid();
  const shared = randomUuid(), prog = randomUuid(), out = randomUuid();
  const a = spec(c, 1, { chunks: 2, inputs: [shared, shared], program: prog });
  const b = spec(c, 2, { inputs: [shared], program: prog });
  submit(t, a);
  submit(t, b);
  // Inputs count per naming (twice by a, once by b), and so does the program.
  assert.equal(t.fileRefs.get(hex(prog)), 2);
  assert.equal(t.fileRefs.get(hex(shared)), 3);
  const outsBefore = t.fileRefs.get(hex(out)) ?? 0;
  t.apply({ kind: "report", status: result(a.jobId, 0, [out]), atMs: 10 });
  assert.equal(t.fileRefs.get(hex(out)), outsBefore + 1);
  // a is still running: not removed, nothing released.
  assert.deepEqual(remove(t, a.jobId), { kind: "removed", removed: 0 });
  assert.ok(t.get(a.jobId));
  t.apply({
    kind: "report",
    status: result(a.jobId, 1, [out, out], false),
    atMs: 11,
  });
  assert.equal(t.get(a.jobId)!.finishedAtMs, 11);
  assert.equal(t.fileRefs.get(hex(out)), outsBefore + 3);
  // Removing an unknown id and a finished job in one command: only the job counts.
  assert.deepEqual(remove(t, randomUuid(), a.jobId), {
    kind: "removed",
    removed: 1,
  });
  assert.equal(t.get(a.jobId), undefined);
  assert.equal(t.fileRefs.get(hex(shared)), 1);
  assert.equal(t.fileRefs.get(hex(prog)), 1);
  assert.equal(t.fileRefs.has(hex(out)), false);
  // Removed twice: nothing more happens.
  assert.deepEqual(remove(t, a.jobId), { kind: "removed", removed: 0 });
  t.apply({ kind: "report", status: result(b.jobId, 0, []), atMs: 12 });
  remove(t, b.jobId);
  assert.equal(t.jobs.size, 0);
  assert.equal(t.fileRefs.size, 0);
  assert.equal(t.sessions.size, 0);
  // A result for a removed job is rejected (its worker may report late).
  const late = t.apply({
    kind: "report",
    status: result(b.jobId, 0, [out]),
    atMs: 13,
  });
  assert.deepEqual(late, { kind: "reported", accepted: false, jobDone: false });
  assert.equal(t.fileRefs.size, 0);
});

Deno.test("retention: a session lasts while one of its jobs does; a retry after that is a new job", () => {
  const t = new JobTable();
  const c = randomUuid();
  const key = sessionKey("alice", c);
  const j1 = spec(c, 1), j2 = spec(c, 2), j3 = spec(c, 3);
  for (const s of [j1, j2, j3]) submit(t, s);
  assert.equal(t.sessions.get(key)!.seq, 3);
  // A retry of seq 2 finds its own job.
  const r2 = submit(t, spec(c, 2));
  assert.ok(
    r2.kind === "submitted" && r2.duplicate && hex(r2.jobId) === hex(j2.jobId),
  );
  for (const s of [j1, j2, j3]) {
    t.apply({ kind: "report", status: result(s.jobId, 0, []), atMs: 5 });
  }
  // The newest job removed: the session falls back to the newest one left (seq 2), and a
  // retry of seq 3 creates a new job.
  remove(t, j3.jobId);
  assert.equal(t.sessions.get(key)!.seq, 2);
  const r3 = submit(t, spec(c, 3));
  assert.ok(r3.kind === "submitted" && !r3.duplicate);
  assert.equal(t.sessions.get(key)!.seq, 3);
  t.apply({ kind: "report", status: result(r3.jobId, 0, []), atMs: 6 });
  remove(t, j1.jobId, j2.jobId);
  assert.deepEqual(t.sessions.get(key)!.jobs.map((j) => j.seq), [3]);
  remove(t, r3.jobId);
  assert.equal(
    t.sessions.has(key),
    false,
    "the session ends with its last job",
  );
  const again = submit(t, spec(c, 1));
  assert.ok(
    again.kind === "submitted" && !again.duplicate,
    "a retry after expiry is a new job",
  );
});

Deno.test("retention: remove commands round-trip and malformed ones are refused", () => {
  const ids = Array.from({ length: 3 }, () => randomUuid());
  const cmd = decodeCommand(encodeCommand({ kind: "remove", jobIds: ids }));
  assert.equal(cmd.kind, "remove");
  assert.deepEqual(cmd.kind === "remove" && cmd.jobIds.map(hex), ids.map(hex));
  const empty = decodeCommand(encodeCommand({ kind: "remove", jobIds: [] }));
  assert.deepEqual(empty, { kind: "remove", jobIds: [] });
  const bytes = encodeCommand({ kind: "remove", jobIds: ids });
  assert.throws(
    () => decodeCommand(bytes.subarray(0, bytes.length - 1)),
    /remove of 3 jobs/,
  );
  assert.throws(
    () => decodeCommand(new Uint8Array([...bytes, 0])),
    /remove of 3 jobs/,
  );
  assert.throws(() => decodeCommand(new Uint8Array([5, 1, 0])));
  const tooMany = Array.from({ length: MAX_REMOVE + 1 }, () => ids[0]);
  assert.throws(
    () => encodeCommand({ kind: "remove", jobIds: tooMany }),
    /remove of 4097/,
  );
});

Deno.test("retention: under random submits, results and removals a snapshot rebuilds the table exactly, and everything returns to zero", () => {
  const seed = Date.now() >>> 0;
  const r = new Rng(seed);
  const t = new JobTable();
  const clients = Array.from(
    { length: 5 },
    () => ({ id: randomUuid(), seq: 0 }),
  );
  const files = Array.from({ length: 12 }, () => randomUuid());
  const pick = <T>(a: T[]) => a[r.int(a.length)];
  const finished: Uint8Array[] = [];
  let peakJobs = 0;
  for (let step = 0; step < 3000; step++) {
    const p = r.int(100);
    if (p < 35) {
      const c = pick(clients);
      // Now and then a retry of the client's last submission.
      const seq = c.seq > 0 && r.chance(0.15) ? c.seq : ++c.seq;
      const inputs = Array.from({ length: r.int(3) }, () => pick(files));
      const owner = r.chance(0.5) ? "alice" : "bob";
      submit(
        t,
        spec(c.id, seq, {
          chunks: 1 + r.int(3),
          inputs,
          program: pick(files),
          owner,
        }),
      );
    } else if (p < 75 && t.jobs.size > 0) {
      const job = pick([...t.jobs.values()]);
      const outs = Array.from({ length: r.int(3) }, () => pick(files));
      const chunk = r.int(job.chunks.length);
      const res = t.apply({
        kind: "report",
        status: result(job.spec.jobId, chunk, outs, r.chance(0.8)),
        atMs: step,
      });
      if (res.kind === "reported" && res.jobDone) finished.push(job.spec.jobId);
    } else if (finished.length > 0) {
      // Remove a few finished jobs, now and then with a running or unknown one in the batch.
      const batch = finished.splice(0, 1 + r.int(3));
      if (r.chance(0.3) && t.jobs.size) {
        batch.push(pick([...t.jobs.values()]).spec.jobId);
      }
      if (r.chance(0.2)) batch.push(randomUuid());
      t.apply(decodeCommand(encodeCommand({ kind: "remove", jobIds: batch })));
      for (const id of batch) {
        const j = t.get(id);
        if (
          j && j.done + j.failed === j.chunks.length && !finished.includes(id)
        ) {
          finished.push(id);
        }
      }
    }
    peakJobs = Math.max(peakJobs, t.jobs.size);
    if (step % 97 === 0) {
      assert.deepEqual(
        state(decodeSnapshot(encodeSnapshot(t))),
        state(t),
        `seed ${seed}`,
      );
      // The counts are exactly what the live jobs name.
      const want = new Map<string, number>();
      for (const j of t.jobs.values()) {
        const outputs = j.chunks.flatMap((c) => c.outputs.map((o) => o.id));
        for (const id of [j.spec.programId, ...j.spec.inputs.map((f) => f.id), ...outputs]) {
          want.set(hex(id), (want.get(hex(id)) ?? 0) + 1);
        }
      }
      assert.deepEqual(
        [...t.fileRefs.entries()].sort(),
        [...want.entries()].sort(),
        `seed ${seed}`,
      );
    }
  }
  assert.ok(
    peakJobs > 10,
    `seed ${seed}: the workload kept jobs live (${peakJobs})`,
  );
  // Finish and remove everything: no job, session or reference is left.
  for (const j of [...t.jobs.values()]) {
    for (const c of JobTable.unfinishedChunks(j)) {
      t.apply({
        kind: "report",
        status: result(j.spec.jobId, c, [pick(files)]),
        atMs: 1,
      });
    }
  }
  assert.ok(t.fileRefs.size > 0);
  remove(t, ...[...t.jobs.values()].map((j) => j.spec.jobId));
  assert.equal(t.jobs.size, 0, `seed ${seed}`);
  assert.equal(t.sessions.size, 0, `seed ${seed}`);
  assert.equal(t.fileRefs.size, 0, `seed ${seed}`);
  assert.equal(decodeSnapshot(encodeSnapshot(t)).jobs.size, 0);
});

Deno.test("retention: --job-retention takes a duration; default 24 h", () => {
  assert.equal(parseDuration("24h"), 86_400_000);
  assert.equal(parseDuration("10m"), 600_000);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("2d"), 172_800_000);
  for (const bad of ["", "10", "h", "5 m", "-1s", "1x", "s10", "1e3s"]) {
    assert.throws(() => parseDuration(bad), DurationError, JSON.stringify(bad));
  }
  for (const ms of [1, 500, 30_000, 5_400_000, 86_400_000, 90_061_001]) {
    assert.equal(parseDuration(formatDuration(ms)), ms);
  }
  assert.equal(formatDuration(5_400_000), "1h30m");
  const base = ["--peers", "m1@tcp://127.0.0.1:7100", "--id", "m1"];
  assert.equal(parseMasterArgs(base).retentionMs, undefined); // the service's 24 h default
  assert.equal(parseMasterArgs([...base, "--job-retention", "2s"]).retentionMs, 2000);
  assert.throws(() => parseMasterArgs([...base, "--job-retention", "10"]), /not a duration/);
  assert.throws(() => parseMasterArgs([...base, "--job-retention", "0s"]), /must be positive/);
});
