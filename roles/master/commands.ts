/**
 * Binary encoding of the masters' log commands.
 *
 * A command reuses the wire encoding of the request it came from, so the log holds exactly the
 * bytes the protocol already specifies and validates (docs/wire.md), prefixed by what the
 * proposing leader decided:
 *
 *   submit: u8 4 | job uuid (16) | u64 submitted_at_ms | u8 n | owner (n bytes UTF-8)
 *           | job_submit frame (the program by file id and size, never its bytes)
 *   report: u8 2 | u64 at_ms | worker_status frame
 *   remove: u8 5 | u32 n | n × job uuid (16)     (n <= MAX_REMOVE; the leader's choice, below)
 *   lease:  u8 6 | u64 epoch | holder uuid (16) | u32 duration_ms | u8 n | endpoint (n bytes)
 *   cancel: u8 7 | u64 at_ms | u32 n | reason (n bytes UTF-8) | job_cancel frame (job, chunks)
 *   restore (snapshots only): u8 8 | u64 finished_at_ms | u64 cancelled_at_ms
 *           | job_status_response frame (the job's chunk records, with their histories)
 *   keep:   u8 9 | u64 at_ms | u8 n | user (n bytes UTF-8) | file_keep frame (op, replicas, files)
 *   delete: u8 10 | u64 at_ms | u32 n | n × file id (16)   (n <= MAX_DELETE)
 *
 * Kinds 1 and 3 (submits whose job_submit frame carried the program's bytes, before programs
 * became stored files) are no longer read: that job_submit layout is gone from the protocol, and
 * the log format is ours to change, so the new layout got a new major kind (4) rather than a
 * compatibility path. A log holding kind 1 or 3 fails to decode (CommandError); such a data
 * directory must be wiped.
 */
import {
  ChunkState,
  decode,
  encode,
  FileKeepOp,
  type JobSubmit,
  limitFieldsOf,
  MessageType,
  type WorkerStatus,
} from "../../wire/mod.ts";
import type { Command, JobSpec } from "./job_table.ts";

const REPORT = 2;
/** Submit with the program by id (kinds 1 and 3, with program bytes, are not read: see above). */
const SUBMIT = 4;
const REMOVE = 5;
const LEASE = 6;
const CANCEL = 7;
const RESTORE = 8;
const KEEP = 9;
const DELETE = 10;
/** Most files one delete command names (the leader batches what storage offers). */
export const MAX_DELETE = 4096;
/** Longest cancel reason kept in the log, bytes. */
const MAX_REASON = 1024;
/** Most jobs one remove command names (64 KiB of ids): the leader batches expired jobs. */
export const MAX_REMOVE = 4096;
/** Longest owner name (keyring names are at most 64 bytes). */
const MAX_OWNER = 255;

/** Raised for a log entry that is not a valid command (corruption or a bug, never user input). */
export class CommandError extends Error {
  constructor(message: string) {
    super(`CommandError: ${message}`);
    this.name = "CommandError";
  }
}

/** The job spec a submission creates, with the leader's job id and time. */
export function specFromSubmit(
  m: JobSubmit,
  jobId: Uint8Array,
  atMs: number,
  owner: string,
): JobSpec {
  return {
    owner,
    jobId,
    clientId: m.client,
    seq: m.sequence,
    programName: m.programName,
    programId: m.programId,
    programSize: m.programSize,
    argument: m.argument,
    numChunks: m.numChunks,
    timeLimitMs: m.timeLimitMs,
    inputs: m.inputFiles,
    submittedAtMs: atMs,
    ...(limitFieldsOf(m) ? { limits: limitFieldsOf(m)! } : {}),
    ...(m.retries ? { retries: m.retries } : {}),
    ...(m.maxFailedChunks ? { maxFailedChunks: m.maxFailedChunks } : {}),
  };
}

/** Encodes a command for the log. */
export function encodeCommand(cmd: Command): Uint8Array {
  if (cmd.kind === "keep") {
    const user = new TextEncoder().encode(cmd.user);
    if (user.length > MAX_OWNER) throw new CommandError(`keep user of ${user.length} bytes`);
    const frame = encode({
      type: MessageType.FileKeep,
      node: new Uint8Array(16),
      op: cmd.unkeep ? FileKeepOp.Unkeep : FileKeepOp.Keep,
      replicas: cmd.replicas,
      files: cmd.files,
    });
    const out = new Uint8Array(10 + user.length + frame.length);
    out[0] = KEEP;
    new DataView(out.buffer).setBigUint64(1, BigInt(cmd.atMs), true);
    out[9] = user.length;
    out.set(user, 10);
    out.set(frame, 10 + user.length);
    return out;
  }
  if (cmd.kind === "delete") {
    const n = cmd.files.length;
    if (n > MAX_DELETE) throw new CommandError(`delete of ${n} files > ${MAX_DELETE}`);
    const out = new Uint8Array(13 + 16 * n);
    const v = new DataView(out.buffer);
    out[0] = DELETE;
    v.setBigUint64(1, BigInt(cmd.atMs), true);
    v.setUint32(9, n, true);
    cmd.files.forEach((id, i) => {
      if (id.length !== 16) throw new CommandError(`file id of ${id.length} bytes`);
      out.set(id, 13 + 16 * i);
    });
    return out;
  }
  if (cmd.kind === "lease") {
    const l = cmd.lease;
    const ep = new TextEncoder().encode(l.endpoint);
    if (ep.length > MAX_OWNER) throw new CommandError(`lease endpoint of ${ep.length} bytes`);
    if (l.holder.length !== 16) throw new CommandError(`lease holder of ${l.holder.length} bytes`);
    const out = new Uint8Array(30 + ep.length);
    const v = new DataView(out.buffer);
    out[0] = LEASE;
    v.setBigUint64(1, BigInt(l.epoch), true);
    out.set(l.holder, 9);
    v.setUint32(25, l.durationMs, true);
    out[29] = ep.length;
    out.set(ep, 30);
    return out;
  }
  if (cmd.kind === "cancel") {
    const reason = new TextEncoder().encode(cmd.reason);
    if (reason.length > MAX_REASON) {
      throw new CommandError(`cancel reason of ${reason.length} bytes`);
    }
    const frame = encode({
      type: MessageType.JobCancel,
      node: cmd.jobId,
      job: cmd.jobId,
      chunks: cmd.chunks.map((chunkIndex) => ({ chunkIndex })),
    });
    const out = new Uint8Array(13 + reason.length + frame.length);
    const v = new DataView(out.buffer);
    out[0] = CANCEL;
    v.setBigUint64(1, BigInt(cmd.atMs), true);
    v.setUint32(9, reason.length, true);
    out.set(reason, 13);
    out.set(frame, 13 + reason.length);
    return out;
  }
  if (cmd.kind === "restore") {
    const frame = encode({
      type: MessageType.JobStatusResponse,
      node: cmd.jobId,
      job: cmd.jobId,
      state: ChunkState.Queued,
      numChunks: cmd.chunks.length,
      done: 0,
      failed: 0,
      running: 0,
      queued: 0,
      chunks: cmd.chunks,
    });
    const out = new Uint8Array(17 + frame.length);
    const v = new DataView(out.buffer);
    out[0] = RESTORE;
    v.setBigUint64(1, BigInt(cmd.finishedAtMs), true);
    v.setBigUint64(9, BigInt(cmd.cancelledAtMs), true);
    out.set(frame, 17);
    return out;
  }
  if (cmd.kind === "remove") {
    const n = cmd.jobIds.length;
    if (n > MAX_REMOVE) throw new CommandError(`remove of ${n} jobs > ${MAX_REMOVE}`);
    const out = new Uint8Array(5 + 16 * n);
    out[0] = REMOVE;
    new DataView(out.buffer).setUint32(1, n, true);
    cmd.jobIds.forEach((id, i) => {
      if (id.length !== 16) throw new CommandError(`job id of ${id.length} bytes`);
      out.set(id, 5 + 16 * i);
    });
    return out;
  }
  if (cmd.kind === "submit") {
    const s = cmd.spec;
    const frame = encode({
      type: MessageType.JobSubmit,
      node: s.clientId,
      client: s.clientId,
      sequence: s.seq,
      numChunks: s.numChunks,
      timeLimitMs: s.timeLimitMs,
      programId: s.programId,
      programSize: s.programSize,
      argument: s.argument,
      inputFiles: s.inputs,
      programName: s.programName,
      ...s.limits,
      retries: s.retries ?? 0,
      maxFailedChunks: s.maxFailedChunks ?? 0,
    });
    const owner = new TextEncoder().encode(s.owner);
    if (owner.length > MAX_OWNER) throw new CommandError(`owner of ${owner.length} bytes`);
    const out = new Uint8Array(26 + owner.length + frame.length);
    out[0] = SUBMIT;
    out.set(s.jobId, 1);
    new DataView(out.buffer).setBigUint64(17, BigInt(s.submittedAtMs), true);
    out[25] = owner.length;
    out.set(owner, 26);
    out.set(frame, 26 + owner.length);
    return out;
  }
  const frame = encode(cmd.status);
  const out = new Uint8Array(9 + frame.length);
  out[0] = REPORT;
  new DataView(out.buffer).setBigUint64(1, BigInt(cmd.atMs), true);
  out.set(frame, 9);
  return out;
}

/** Decodes a log command; throws CommandError when the bytes are not one. */
export function decodeCommand(data: Uint8Array): Command {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  try {
    if (data[0] === SUBMIT && data.length > 26) {
      const start = 26 + data[25];
      if (start >= data.length) throw new CommandError("submit truncated in its owner");
      const owner = new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(26, start));
      const m = decode(data.subarray(start));
      if (m.type !== MessageType.JobSubmit) throw new CommandError(`submit holds type ${m.type}`);
      const at = Number(view.getBigUint64(17, true));
      return { kind: "submit", spec: specFromSubmit(m, data.slice(1, 17), at, owner) };
    }
    if (data[0] === REMOVE && data.length >= 5) {
      const n = view.getUint32(1, true);
      if (n > MAX_REMOVE || data.length !== 5 + 16 * n) {
        throw new CommandError(`remove of ${n} jobs in ${data.length} bytes`);
      }
      const jobIds = Array.from({ length: n }, (_, i) => data.slice(5 + 16 * i, 21 + 16 * i));
      return { kind: "remove", jobIds };
    }
    if (data[0] === LEASE && data.length >= 30 && data.length === 30 + data[29]) {
      const endpoint = new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(30));
      return {
        kind: "lease",
        lease: {
          epoch: Number(view.getBigUint64(1, true)),
          holder: data.slice(9, 25),
          durationMs: view.getUint32(25, true),
          endpoint,
        },
      };
    }
    if (data[0] === CANCEL && data.length > 13) {
      const n = view.getUint32(9, true);
      if (n > MAX_REASON || 13 + n >= data.length) throw new CommandError("cancel truncated");
      const reason = new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(13, 13 + n));
      const m = decode(data.subarray(13 + n));
      if (m.type !== MessageType.JobCancel) throw new CommandError(`cancel holds type ${m.type}`);
      return {
        kind: "cancel",
        jobId: m.job,
        chunks: m.chunks.map((c) => c.chunkIndex),
        reason,
        atMs: Number(view.getBigUint64(1, true)),
      };
    }
    if (data[0] === RESTORE && data.length > 17) {
      const m = decode(data.subarray(17));
      if (m.type !== MessageType.JobStatusResponse) {
        throw new CommandError(`restore holds type ${m.type}`);
      }
      return {
        kind: "restore",
        jobId: m.job,
        chunks: m.chunks,
        finishedAtMs: Number(view.getBigUint64(1, true)),
        cancelledAtMs: Number(view.getBigUint64(9, true)),
      };
    }
    if (data[0] === KEEP && data.length > 10) {
      const start = 10 + data[9];
      if (start >= data.length) throw new CommandError("keep truncated in its user");
      const user = new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(10, start));
      const m = decode(data.subarray(start));
      if (m.type !== MessageType.FileKeep) throw new CommandError(`keep holds type ${m.type}`);
      return {
        kind: "keep",
        user,
        unkeep: m.op === FileKeepOp.Unkeep,
        replicas: m.replicas,
        files: m.files,
        atMs: Number(view.getBigUint64(1, true)),
      };
    }
    if (data[0] === DELETE && data.length >= 13) {
      const n = view.getUint32(9, true);
      if (n > MAX_DELETE || data.length !== 13 + 16 * n) {
        throw new CommandError(`delete of ${n} files in ${data.length} bytes`);
      }
      return {
        kind: "delete",
        files: Array.from({ length: n }, (_, i) => data.slice(13 + 16 * i, 29 + 16 * i)),
        atMs: Number(view.getBigUint64(1, true)),
      };
    }
    if (data[0] === REPORT && data.length > 9) {
      const m = decode(data.subarray(9));
      if (m.type !== MessageType.WorkerStatus) {
        throw new CommandError(`report holds type ${m.type}`);
      }
      return {
        kind: "report",
        status: m as WorkerStatus,
        atMs: Number(view.getBigUint64(1, true)),
      };
    }
  } catch (e) {
    if (e instanceof CommandError) throw e;
    throw new CommandError(`bad command payload: ${e}`);
  }
  throw new CommandError(`unknown command kind ${data[0]} (${data.length} bytes)`);
}
