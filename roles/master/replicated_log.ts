/**
 * How the master service agrees on commands: propose bytes, get the state machine's result once
 * the command is durable and committed. The single-master phase uses `SingleNodeLog` (a local
 * fsync'd log); the Raft group implements the same interface, so the service does not change.
 */
import { RecordFile } from "../../lib/record_file.ts";
import type { ApplyResult } from "./job_table.ts";

/** Applies one committed command to the state machine and returns its result. */
export type ApplyFn = (data: Uint8Array) => ApplyResult;

/** A log of commands agreed by the masters. */
export interface ReplicatedLog {
  /** Proposes a command; resolves with its apply result once committed (durable on a majority). */
  propose(data: Uint8Array): Promise<ApplyResult>;
  /** True when this master may accept proposals. */
  isLeader(): boolean;
  /** The leader's client endpoint, or "" when unknown. */
  leaderEndpoint(): string;
  /** Resolves when a read of the local state machine is linearizable. */
  readBarrier(): Promise<void>;
  /** Stops the log. */
  close(): Promise<void>;
}

/** One master alone: a command is committed when it is fsync'd to the local log file. */
export class SingleNodeLog implements ReplicatedLog {
  #file: RecordFile;
  #apply: ApplyFn;
  #endpoint: string;

  private constructor(file: RecordFile, apply: ApplyFn, endpoint: string) {
    this.#file = file;
    this.#apply = apply;
    this.#endpoint = endpoint;
  }

  /** Opens `<dir>/commands.log`, replaying every durable command through `apply`. */
  static async open(dir: string, apply: ApplyFn, endpoint: string): Promise<SingleNodeLog> {
    await Deno.mkdir(dir, { recursive: true });
    const { file, records } = await RecordFile.open(`${dir}/commands.log`);
    for (const r of records) apply(r);
    return new SingleNodeLog(file, apply, endpoint);
  }

  async propose(data: Uint8Array): Promise<ApplyResult> {
    // RecordFile resolves appends in order, so commands apply in log order.
    await this.#file.append(data);
    return this.#apply(data);
  }

  isLeader(): boolean {
    return true;
  }

  leaderEndpoint(): string {
    return this.#endpoint;
  }

  readBarrier(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return this.#file.close();
  }
}
