import assert from "node:assert/strict";
import { type JobSpec, JobTable, sessionKey } from "../roles/master/job_table.ts";
import { decodeCommand, encodeCommand } from "../roles/master/commands.ts";
import { decodeSnapshot, encodeSnapshot } from "../roles/master/snapshot.ts";
import {
  ChunkState,
  FailureCode,
  MessageType,
  randomUuid,
  uuidToHex,
  type WorkerStatus,
} from "../wire/mod.ts";

const enc = new TextEncoder();

function spec(client: Uint8Array, seq: number, chunks = 3, owner = "alice"): JobSpec {
  return {
    owner,
    jobId: randomUuid(),
    clientId: client,
    seq,
    programName: "p.sh",
    programId: randomUuid(),
    programSize: 18,
    argument: enc.encode("arg"),
    numChunks: chunks,
    timeLimitMs: 1000,
    inputs: [{ id: randomUuid(), name: "in.txt", size: 12 }],
    submittedAtMs: 1700000000000,
  };
}

function status(job: Uint8Array, chunk: number, state: number, attempt = 1): WorkerStatus {
  return {
    type: MessageType.WorkerStatus,
    node: randomUuid(),
    job,
    state: state as WorkerStatus["state"],
    chunkIndex: chunk,
    attempt,
    exitCode: state === ChunkState.Failed ? 2 : 0,
    signal: 0,
    failure: state === ChunkState.Failed ? FailureCode.ExitCode : FailureCode.None,
    durationMs: 5,
    outputs: [{ id: randomUuid(), name: "out", size: 3 }],
    stderrTail: enc.encode("oops"),
    reason: state === ChunkState.Failed ? "exit 2" : "",
  };
}

Deno.test("job table: exactly-once submissions, first final result wins, job completes", () => {
  const t = new JobTable();
  const client = randomUuid();
  const a = spec(client, 1);
  const r1 = t.apply({ kind: "submit", spec: a });
  assert.deepEqual(r1, { kind: "submitted", jobId: a.jobId, duplicate: false });
  // A retry of the same (client, seq) with a new leader-chosen id returns the first job.
  const retry = t.apply({ kind: "submit", spec: { ...spec(client, 1), jobId: randomUuid() } });
  assert.equal(retry.kind === "submitted" && retry.duplicate, true);
  assert.equal(retry.kind === "submitted" && uuidToHex(retry.jobId), uuidToHex(a.jobId));
  assert.equal(t.jobs.size, 1);

  const rep = (chunk: number, state: number) =>
    t.apply({ kind: "report", status: status(a.jobId, chunk, state), atMs: 5 });
  assert.deepEqual(rep(0, ChunkState.Succeeded), {
    kind: "reported",
    accepted: true,
    jobDone: false,
  });
  assert.deepEqual(rep(0, ChunkState.Failed), {
    kind: "reported",
    accepted: false,
    jobDone: false,
  });
  assert.deepEqual(rep(1, ChunkState.Running), {
    kind: "reported",
    accepted: false,
    jobDone: false,
  });
  assert.deepEqual(rep(7, ChunkState.Succeeded), {
    kind: "reported",
    accepted: false,
    jobDone: false,
  });
  assert.deepEqual(JobTable.unfinishedChunks(t.get(a.jobId)!), [1, 2]);
  rep(1, ChunkState.Failed);
  assert.deepEqual(rep(2, ChunkState.Succeeded), {
    kind: "reported",
    accepted: true,
    jobDone: true,
  });
  assert.equal(JobTable.jobState(t.get(a.jobId)!), ChunkState.Failed);
});

Deno.test("commands and snapshots round-trip; a restored table equals the original", () => {
  const t = new JobTable();
  const c1 = randomUuid(), c2 = randomUuid();
  const jobs = [spec(c1, 1), spec(c1, 2, 5), spec(c2, 1, 1)];
  for (const s of jobs) {
    const cmd = { kind: "submit" as const, spec: s };
    t.apply(decodeCommand(encodeCommand(cmd)));
  }
  const st = status(jobs[1].jobId, 3, ChunkState.Succeeded, 2);
  t.apply(decodeCommand(encodeCommand({ kind: "report", status: st, atMs: 9 })));
  t.apply({ kind: "report", status: status(jobs[2].jobId, 0, ChunkState.Failed), atMs: 10 });

  const restored = decodeSnapshot(encodeSnapshot(t));
  assert.equal(restored.jobs.size, 3);
  for (const [k, j] of t.jobs) {
    const r = restored.jobs.get(k)!;
    assert.deepEqual(r.chunks, j.chunks);
    assert.equal(r.done, j.done);
    assert.equal(r.failed, j.failed);
    assert.deepEqual(r.spec, j.spec);
  }
  assert.deepEqual([...restored.sessions.keys()], [...t.sessions.keys()]);
  assert.equal(restored.sessions.get(sessionKey("alice", c1))!.seq, 2);
  assert.ok(uuidToHex(c1).length === 32);
  // Sessions survive the snapshot: a retry of (c1, 2) is still a duplicate.
  const dup = restored.apply({ kind: "submit", spec: spec(c1, 2) });
  assert.equal(dup.kind === "submitted" && dup.duplicate, true);
  assert.throws(() => decodeSnapshot(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])));
  assert.throws(() => decodeCommand(new Uint8Array([9, 9, 9])));
});

Deno.test("job table: sessions are per owner; a replayed client id of another user makes a new job", () => {
  const t = new JobTable();
  const client = randomUuid();
  const a = t.apply({ kind: "submit", spec: spec(client, 1, 1, "alice") });
  const b = t.apply({ kind: "submit", spec: spec(client, 1, 1, "mallory") });
  assert.equal(a.kind === "submitted" && a.duplicate, false);
  assert.equal(b.kind === "submitted" && b.duplicate, false, "not alice's job handed to mallory");
  assert.notDeepEqual(a.kind === "submitted" && a.jobId, b.kind === "submitted" && b.jobId);
  const again = t.apply({ kind: "submit", spec: spec(client, 1, 1, "alice") });
  assert.equal(again.kind === "submitted" && again.duplicate, true);
  // The owner survives the log encoding.
  const job = [...t.jobs.values()][1];
  const cmd = decodeCommand(encodeCommand({ kind: "submit", spec: job.spec }));
  assert.equal(cmd.kind === "submit" && cmd.spec.owner, "mallory");
});
