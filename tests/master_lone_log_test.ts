/**
 * The lone master's log (SingleNodeLog) is compacted like the Raft group's: its files stay
 * bounded by the live jobs, a restart rebuilds the same table, and a crash between writing the
 * snapshot and switching logs replays every command exactly once.
 */
import assert from "node:assert/strict";
import { SingleNodeLog } from "../roles/master/replicated_log.ts";
import { JobTable } from "../roles/master/job_table.ts";
import { decodeCommand, encodeCommand } from "../roles/master/commands.ts";
import { decodeSnapshot, encodeSnapshot } from "../roles/master/snapshot.ts";
import { ChunkState, FailureCode, MessageType, randomUuid, uuidToHex } from "../wire/mod.ts";

/** A table behind a log in `dir`, as roles/master/main.ts wires them. */
async function openMaster(dir: string, every: number) {
  const box = { table: new JobTable() };
  const log = await SingleNodeLog.open(
    dir,
    (d) => box.table.apply(decodeCommand(d)),
    "tcp://127.0.0.1:1",
    {
      snapshot: () => encodeSnapshot(box.table),
      restore: (d) => (box.table = decodeSnapshot(d)),
      snapshotEvery: every,
    },
  );
  return { box, log };
}

function submit(client: Uint8Array, seq: number) {
  return encodeCommand({
    kind: "submit",
    spec: {
      jobId: randomUuid(),
      clientId: client,
      seq,
      programName: "p.sh",
      programId: randomUuid(),
      programSize: 10,
      argument: new Uint8Array(0),
      numChunks: 1,
      timeLimitMs: 1000,
      inputs: [],
      submittedAtMs: seq,
      owner: "alice",
    },
  });
}

function finish(job: Uint8Array) {
  return encodeCommand({
    kind: "report",
    atMs: 1,
    status: {
      type: MessageType.WorkerStatus,
      node: randomUuid(),
      job,
      state: ChunkState.Succeeded,
      chunkIndex: 0,
      attempt: 1,
      exitCode: 0,
      signal: 0,
      failure: FailureCode.None,
      durationMs: 1,
      outputs: [],
      stderrTail: new Uint8Array(0),
      reason: "",
    },
  });
}

const canon = (t: JobTable) => [...t.jobs.keys()].sort().join(",");

async function logFiles(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of Deno.readDir(dir)) {
    out.set(e.name, (await Deno.stat(`${dir}/${e.name}`)).size);
  }
  return out;
}

Deno.test("lone master log: compacts every N commands, stays bounded, restarts to the same table", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-lone-log-" });
  try {
    const client = randomUuid();
    let { box, log } = await openMaster(dir, 50);
    // 400 jobs submitted, finished and removed, 10 left live: the history must not stay.
    let seq = 0;
    const live: Uint8Array[] = [];
    for (let i = 0; i < 410; i++) {
      const r = await log.propose(submit(client, ++seq));
      assert.equal(r.kind, "submitted");
      if (r.kind !== "submitted") continue;
      await log.propose(finish(r.jobId));
      if (i < 400) await log.propose(encodeCommand({ kind: "remove", jobIds: [r.jobId] }));
      else live.push(r.jobId);
    }
    assert.ok(log.compactions >= 20, `${log.compactions} compactions`);
    const before = canon(box.table);
    assert.equal(box.table.jobs.size, 10);
    await log.close();
    const files = await logFiles(dir);
    const total = [...files.values()].reduce((a, b) => a + b, 0);
    // One snapshot of 10 live jobs and fewer than 50 commands since: a few KiB, not 1,210 commands.
    assert.ok(files.has("snapshot"), [...files.keys()].join(","));
    assert.equal([...files.keys()].filter((n) => n.startsWith("commands")).length, 1);
    assert.ok(total < 16 * 1024, `log files hold ${total} bytes`);
    ({ box, log } = await openMaster(dir, 50));
    assert.equal(canon(box.table), before);
    for (const id of live) assert.ok(box.table.get(id), uuidToHex(id));
    // The exactly-once session survived: a retry of the last submission is a duplicate.
    const dup = await log.propose(submit(client, seq));
    assert.equal(dup.kind === "submitted" && dup.duplicate, true);
    await log.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lone master log: a crash after the snapshot but before the log switch replays once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-lone-crash-" });
  try {
    const client = randomUuid();
    let { box, log } = await openMaster(dir, 1_000_000);
    for (let seq = 1; seq <= 5; seq++) await log.propose(submit(client, seq));
    await log.close();
    // What a compaction writes first, by hand: a generation-1 snapshot of the 5 jobs, and the
    // leftover empty log a crashed earlier attempt could have made. The generation-0 log with
    // the same 5 submits is still there, as if the process died right after the rename.
    const body = encodeSnapshot(box.table);
    const snap = new Uint8Array(16 + body.length);
    const v = new DataView(snap.buffer);
    v.setUint32(0, 0x534c5344, true);
    v.setUint32(4, 1, true);
    v.setBigUint64(8, 1n, true);
    snap.set(body, 16);
    await Deno.writeFile(`${dir}/snapshot`, snap);
    const jobs = canon(box.table);
    ({ box, log } = await openMaster(dir, 1_000_000));
    assert.equal(canon(box.table), jobs, "each job once");
    assert.equal(box.table.jobs.size, 5);
    const names = [...(await logFiles(dir)).keys()].sort();
    assert.deepEqual(names, ["commands-1.log", "snapshot"], "the old log is gone");
    await log.propose(submit(client, 6));
    await log.close();
    ({ box, log } = await openMaster(dir, 1_000_000));
    assert.equal(box.table.jobs.size, 6);
    await log.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
