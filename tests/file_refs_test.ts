/**
 * What keeps a file alive in the masters' state (roles/master/file_refs.ts, JobTable): keeps,
 * job references, tombstones; the submission that races a delete; snapshots and the log codec
 * of the keep and delete commands. Pure: no processes.
 */
import assert from "node:assert/strict";
import { FileRefs, MAX_TOMBSTONES, TOMBSTONE_MS } from "../roles/master/file_refs.ts";
import { type Command, type JobSpec, JobTable } from "../roles/master/job_table.ts";
import { decodeCommand, encodeCommand } from "../roles/master/commands.ts";
import { decodeSnapshot, encodeSnapshot } from "../roles/master/snapshot.ts";
import { ChunkState, FailureCode, MessageType, uuidFromHex, uuidToHex } from "../wire/mod.ts";

const id = (n: number) => uuidFromHex(n.toString(16).padStart(32, "0"));
const hex = (n: number) => uuidToHex(id(n));

function spec(job: number, program: number, inputs: number[]): JobSpec {
  return {
    jobId: id(1000 + job),
    clientId: id(2000 + job),
    seq: 1,
    programName: "p",
    programId: id(program),
    programSize: 10,
    argument: new Uint8Array(0),
    numChunks: 1,
    timeLimitMs: 1000,
    inputs: inputs.map((i) => ({ id: id(i), size: 5, name: `in${i}` })),
    submittedAtMs: 1,
    owner: "alice",
  };
}

Deno.test("file refs: keeps count once per user, unkeep releases, bounds refuse whole batches", () => {
  const r = new FileRefs();
  const f = [{ id: id(1), size: 5, name: "a" }, { id: id(2), size: 6, name: "b" }];
  assert.equal(r.keep("alice", f, 2, 100), 2);
  assert.equal(r.keep("alice", f, 2, 200), 0, "kept already");
  assert.equal(r.keep("bob", [f[0]], 3, 300), 1);
  assert.equal(r.keepCount, 3);
  assert.ok(r.referenced(hex(1)) && r.referenced(hex(2)));
  assert.deepEqual(r.kept("alice").map((k) => [k.id, k.replicas]), [[hex(1), 2], [hex(2), 2]]);
  assert.equal(r.unkeep("alice", [id(1), id(3)]), 1);
  assert.ok(r.referenced(hex(1)), "bob still keeps it");
  assert.equal(r.unkeep("bob", [id(1)]), 1);
  assert.equal(r.referenced(hex(1)), false);
  assert.equal(r.keepCount, 1);
  r.ref(id(1), 1);
  assert.ok(r.referenced(hex(1)), "a job reference keeps it too");
  r.ref(id(1), -1);
  assert.throws(() => r.ref(id(1), -1), /below zero/);
});

Deno.test("file refs: delete tombstones only the unreferenced; tombstones expire and are bounded", () => {
  const r = new FileRefs();
  r.keep("alice", [{ id: id(1), size: 1, name: "" }], 1, 0);
  r.ref(id(2), 1);
  assert.deepEqual(r.delete([id(1), id(2), id(3)], 1000), [hex(3)]);
  assert.ok(r.isDeleted(hex(3)) && !r.isDeleted(hex(1)));
  // A keep (stored again) revives; so does revive (a chunk output written again).
  r.keep("bob", [{ id: id(3), size: 1, name: "" }], 1, 2000);
  assert.equal(r.isDeleted(hex(3)), false);
  r.delete([id(4)], 3000);
  r.revive(hex(4));
  assert.equal(r.isDeleted(hex(4)), false);
  // Expiry: a delete an hour later drops the older tombstones.
  r.delete([id(5)], 4000);
  r.delete([id(6)], 4000 + TOMBSTONE_MS + 1);
  assert.equal(r.isDeleted(hex(5)), false);
  assert.ok(r.isDeleted(hex(6)));
  // Bound: never more than MAX_TOMBSTONES, the oldest go first.
  const many = Array.from({ length: MAX_TOMBSTONES + 10 }, (_, i) => id(100_000 + i));
  for (let i = 0; i < many.length; i += 4096) r.delete(many.slice(i, i + 4096), 5_000_000);
  assert.equal(r.deleted.size, MAX_TOMBSTONES);
  assert.equal(r.isDeleted(uuidToHex(many[0])), false);
  assert.ok(r.isDeleted(uuidToHex(many.at(-1)!)));
});

Deno.test("job table: a submission applied after the delete of its input is refused; before it, it wins", () => {
  const t = new JobTable();
  // Applied first: the job holds a reference, so the delete passes over the file.
  t.apply({ kind: "submit", spec: spec(1, 10, [11]) });
  const d = t.apply({ kind: "delete", files: [id(10), id(11), id(12)], atMs: 5 });
  assert.deepEqual(d, { kind: "deleted", files: [hex(12)] });
  // Applied after the delete of its input: refused, no job, no reference taken.
  const r = t.apply({ kind: "submit", spec: spec(2, 10, [12]) });
  assert.equal(r.kind, "submitted");
  assert.match((r as { refused?: string }).refused ?? "", /was deleted/);
  assert.equal(t.jobs.size, 1);
  assert.equal(t.fileRefs.get(hex(12)), undefined);
  // A chunk output with the same bytes as a deleted file makes it live again.
  t.apply({ kind: "delete", files: [id(13)], atMs: 6 });
  t.apply({
    kind: "report",
    atMs: 7,
    status: {
      type: MessageType.WorkerStatus,
      node: id(9),
      job: id(1001),
      chunkIndex: 0,
      attempt: 1,
      state: ChunkState.Succeeded,
      exitCode: 0,
      signal: 0,
      failure: FailureCode.None,
      durationMs: 1,
      outputs: [{ id: id(13), size: 0, name: "stdout" }],
      stderrTail: new Uint8Array(0),
      reason: "",
    },
  });
  assert.equal(t.files.isDeleted(hex(13)), false);
  assert.equal(t.fileRefs.get(hex(13)), 1);
  // Removing the job releases its references: the delete now takes them.
  t.apply({ kind: "remove", jobIds: [id(1001)] });
  assert.deepEqual(
    (t.apply({ kind: "delete", files: [id(10), id(11), id(13)], atMs: 8 }) as { files: string[] })
      .files,
    [hex(10), hex(11), hex(13)],
  );
});

Deno.test("keep and delete commands round-trip through the log codec and snapshots", () => {
  const cmds: Command[] = [
    {
      kind: "keep",
      user: "alice",
      unkeep: false,
      replicas: 2,
      files: [{ id: id(1), size: 5, name: "a.txt" }, { id: id(2), size: 7, name: "b" }],
      atMs: 42,
    },
    {
      kind: "keep",
      user: "bob",
      unkeep: true,
      replicas: 0,
      files: [{ id: id(1), size: 0, name: "" }],
      atMs: 43,
    },
    { kind: "delete", files: [id(3), id(4)], atMs: 44 },
  ];
  for (const c of cmds) assert.deepEqual(decodeCommand(encodeCommand(c)), c);
  const t = new JobTable();
  t.apply({ kind: "submit", spec: spec(1, 10, [11]) });
  for (const c of cmds) t.apply(c);
  t.apply({
    kind: "keep",
    user: "bob",
    unkeep: false,
    replicas: 3,
    files: [{ id: id(1), size: 5, name: "x" }],
    atMs: 50,
  });
  t.apply({ kind: "delete", files: [id(5)], atMs: 60 });
  const back = decodeSnapshot(encodeSnapshot(t));
  assert.deepEqual(back.files.kept("alice"), t.files.kept("alice"));
  assert.deepEqual(back.files.kept("bob"), t.files.kept("bob"));
  assert.deepEqual([...back.files.deleted], [...t.files.deleted]);
  assert.deepEqual([...back.fileRefs], [...t.fileRefs]);
  assert.equal(back.files.keepCount, t.files.keepCount);
});
