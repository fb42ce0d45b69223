/**
 * Binary encoding of the masters' log commands.
 *
 * A command reuses the wire encoding of the request it came from, so the log holds exactly the
 * bytes the protocol already specifies and validates (docs/wire.md), prefixed by what the
 * proposing leader decided:
 *
 *   submit: u8 1 | job uuid (16) | u64 submitted_at_ms | job_submit frame
 *   report: u8 2 | u64 at_ms | worker_status frame
 */
import { decode, encode, type JobSubmit, MessageType, type WorkerStatus } from "../../wire/mod.ts";
import type { Command, JobSpec } from "./job_table.ts";

const SUBMIT = 1;
const REPORT = 2;

/** Raised for a log entry that is not a valid command (corruption or a bug, never user input). */
export class CommandError extends Error {
  constructor(message: string) {
    super(`CommandError: ${message}`);
    this.name = "CommandError";
  }
}

/** The job spec a submission creates, with the leader's job id and time. */
export function specFromSubmit(m: JobSubmit, jobId: Uint8Array, atMs: number): JobSpec {
  return {
    jobId,
    clientId: m.client,
    seq: m.sequence,
    programName: m.programName,
    program: m.program,
    argument: m.argument,
    numChunks: m.numChunks,
    timeLimitMs: m.timeLimitMs,
    inputs: m.inputFiles,
    submittedAtMs: atMs,
  };
}

/** Encodes a command for the log. */
export function encodeCommand(cmd: Command): Uint8Array {
  if (cmd.kind === "submit") {
    const s = cmd.spec;
    const frame = encode({
      type: MessageType.JobSubmit,
      node: s.clientId,
      client: s.clientId,
      sequence: s.seq,
      numChunks: s.numChunks,
      timeLimitMs: s.timeLimitMs,
      program: s.program,
      argument: s.argument,
      inputFiles: s.inputs,
      programName: s.programName,
    });
    const out = new Uint8Array(25 + frame.length);
    out[0] = SUBMIT;
    out.set(s.jobId, 1);
    new DataView(out.buffer).setBigUint64(17, BigInt(s.submittedAtMs), true);
    out.set(frame, 25);
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
    if (data[0] === SUBMIT && data.length > 25) {
      const m = decode(data.subarray(25));
      if (m.type !== MessageType.JobSubmit) throw new CommandError(`submit holds type ${m.type}`);
      const at = Number(view.getBigUint64(17, true));
      return { kind: "submit", spec: specFromSubmit(m, data.slice(1, 17), at) };
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
