/**
 * The per-job byte bound of docs/architecture.md ("How big a job is in the control plane"): a
 * job's spec in the replicated state (its submit command; a snapshot entry is the same bytes
 * behind a 4-byte length) is exactly 164 bytes + owner + program name + argument + 28 per input +
 * the input names, and its job_dispatch, worker_request and balancer sync event are metadata of
 * the same kind: none of them depends on the program's size, which may be the masters' maximum.
 */
import assert from "node:assert/strict";
import { decodeCommand, encodeCommand } from "../roles/master/commands.ts";
import { decodeSnapshot, encodeSnapshot } from "../roles/master/snapshot.ts";
import { type JobSpec, JobTable } from "../roles/master/job_table.ts";
import { DEFAULT_SUBMIT_LIMITS } from "../roles/master/service.ts";
import { encodeSyncBody } from "../roles/balancer/replication.ts";
import {
  encode,
  type FileEntry,
  headerSize,
  MessageType,
  randomUuid,
  SPEC_BY_TYPE,
  uuidToHex,
} from "../wire/mod.ts";

const enc = new TextEncoder();
const len = (s: string) => enc.encode(s).length;
/** The bound of docs/architecture.md for a job's spec. */
const specBytes = (s: JobSpec) =>
  164 + len(s.owner) + len(s.programName) + s.argument.length +
  s.inputs.reduce((n, f) => n + 28 + len(f.name), 0);

function spec(programSize: number, inputs: FileEntry[], argument: Uint8Array): JobSpec {
  return {
    owner: "a".repeat(64), // keyring names are at most 64 bytes
    jobId: randomUuid(),
    clientId: randomUuid(),
    seq: 1,
    programName: "p".repeat(255),
    programId: randomUuid(),
    programSize,
    argument,
    numChunks: 10_000,
    timeLimitMs: 24 * 3600_000,
    inputs,
    submittedAtMs: 1_700_000_000_000,
  };
}

/** A maximal-ish job: every limit of the masters at its top, and the largest program. */
function maximal(programSize = DEFAULT_SUBMIT_LIMITS.maxProgramBytes): JobSpec {
  const inputs = Array.from({ length: DEFAULT_SUBMIT_LIMITS.maxInputs }, (_, i) => ({
    id: randomUuid(),
    size: 1 << 40,
    name: `input-${String(i).padStart(5, "0")}-${"n".repeat(50)}`,
  }));
  return spec(programSize, inputs, new Uint8Array(DEFAULT_SUBMIT_LIMITS.maxArgumentBytes));
}

Deno.test("a job's submit command is 164 bytes + owner + names + argument + 28 per input", () => {
  for (const s of [spec(1, [], new Uint8Array(0)), maximal(1), maximal()]) {
    const cmd = encodeCommand({ kind: "submit", spec: s });
    assert.equal(cmd.length, specBytes(s), `${s.inputs.length} inputs`);
    const back = decodeCommand(cmd);
    assert.ok(back.kind === "submit");
    assert.equal(uuidToHex(back.spec.programId), uuidToHex(s.programId));
    assert.equal(back.spec.programSize, s.programSize);
  }
  // The program's size is a number in the command, whatever it is.
  const small = maximal(1), big = { ...small, programSize: DEFAULT_SUBMIT_LIMITS.maxProgramBytes };
  assert.equal(
    encodeCommand({ kind: "submit", spec: small }).length,
    encodeCommand({ kind: "submit", spec: big }).length,
  );
  // The maximal job is ~440 KiB (its 4096 names and 64 KiB argument), far below its program.
  const max = maximal();
  assert.ok(specBytes(max) < 512 * 1024, `${specBytes(max)}`);
  assert.ok(specBytes(max) < max.programSize / 32);
});

Deno.test("a chunk's report is 95 bytes + ticket + 28 per output + names + stderr + reason", () => {
  const outputs = [{ id: randomUuid(), size: 1 << 30, name: "stdout" }];
  const report = (ticket?: Uint8Array) =>
    encodeCommand({
      kind: "report",
      atMs: 1,
      status: {
        type: MessageType.WorkerStatus,
        node: randomUuid(),
        job: randomUuid(),
        state: 2,
        chunkIndex: 0,
        attempt: 1,
        exitCode: 0,
        signal: 0,
        failure: 0,
        durationMs: 5,
        outputs,
        stderrTail: new Uint8Array(4096),
        reason: "ok",
        ...(ticket ? { ticket } : {}),
      },
    }).length;
  assert.equal(report(), 95 + 28 + 6 + 4096 + 2);
  assert.equal(report(new Uint8Array(32)), 95 + 32 + 28 + 6 + 4096 + 2);
});

Deno.test("a snapshot holds a job as its submit command behind a 4-byte length", () => {
  const t = new JobTable();
  const s = maximal();
  t.apply({ kind: "submit", spec: s });
  const snap = encodeSnapshot(t);
  assert.equal(snap.length, 12 + 4 + specBytes(s)); // header, then one entry
  const back = decodeSnapshot(snap).get(s.jobId)!;
  assert.equal(back.spec.programSize, s.programSize);
  assert.equal(uuidToHex(back.spec.programId), uuidToHex(s.programId));
});

Deno.test("job_dispatch, worker_request and the balancer's sync event carry metadata only", () => {
  const s = maximal();
  const chunks = Array.from({ length: 1000 }, (_, i) => ({ chunkIndex: i, attempt: 1 }));
  const names = s.inputs.reduce((n, f) => n + 28 + len(f.name), 0);
  const dispatch = (programSize: number) =>
    encode({
      type: MessageType.JobDispatch,
      node: randomUuid(),
      job: s.jobId,
      numChunks: s.numChunks,
      timeLimitMs: s.timeLimitMs,
      programId: s.programId,
      programSize,
      argument: s.argument,
      inputFiles: s.inputs,
      chunks,
      owner: s.owner,
    }).length;
  assert.equal(dispatch(1), dispatch(s.programSize));
  assert.equal(
    dispatch(s.programSize),
    126 + s.argument.length + names + 8 * chunks.length + len(s.owner),
  );
  const request = encode({
    type: MessageType.WorkerRequest,
    node: randomUuid(),
    job: s.jobId,
    programId: s.programId,
    programSize: s.programSize,
    inputFiles: s.inputs,
    chunkIndex: 0,
    numChunks: s.numChunks,
    argument: s.argument,
    timeLimitMs: s.timeLimitMs,
    attempt: 1,
    capExpiryMs: 1,
    caps: new Uint8Array(32 * s.inputs.length),
    ticket: new Uint8Array(32),
    owner: s.owner,
    programCap: new Uint8Array(32),
  }).length;
  // The header, the inputs with one capability each, ticket, program capability, owner.
  assert.equal(
    request,
    headerSize(SPEC_BY_TYPE[MessageType.WorkerRequest]!) + s.argument.length + names +
      32 * s.inputs.length + 64 + len(s.owner),
  );
  // The standby's copy: the dispatch event as JSON (bytes as base64).
  const sync = (programSize: number) =>
    encodeSyncBody({
      events: [{
        t: "dispatch",
        now: 1,
        info: {
          job: s.jobId,
          numChunks: s.numChunks,
          timeLimitMs: s.timeLimitMs,
          programId: s.programId,
          programSize,
          argument: new Uint8Array(0),
          inputFiles: [],
          owner: s.owner,
        },
        chunks: [{ chunkIndex: 0, attempt: 1 }],
      }],
    }).length;
  assert.ok(sync(s.programSize) < 512, `${sync(s.programSize)} bytes`);
  assert.ok(sync(s.programSize) - sync(1) <= 8, "only the digits of the size differ");
});
