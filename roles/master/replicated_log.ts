/**
 * How the master service agrees on commands: propose bytes, get the state machine's result once
 * the command is durable and committed. The single-master phase uses `SingleNodeLog` (a local
 * fsync'd log); the Raft group implements the same interface, so the service does not change.
 */
import { RecordFile } from "../../lib/record_file.ts";
import { writeFileDurable } from "../../lib/fsutil.ts";
import type { Logger } from "../../lib/log.ts";
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

/** Options of a SingleNodeLog: compaction, like the Raft group's `--snapshot-every`. */
export interface SingleNodeLogOptions {
  /** The state machine as bytes (for compaction); without it the log is never compacted. */
  snapshot?: () => Uint8Array;
  /** Replaces the state machine with a snapshot's, at open (before the log is replayed). */
  restore?: (data: Uint8Array) => void;
  /** Compact after this many commands (default 10,000). */
  snapshotEvery?: number;
  /** A failure after which the files no longer say what was acknowledged: exit, be restarted. */
  onFatal?: (e: unknown) => void;
  log?: Logger;
}

/** Magic of the lone master's snapshot file, "DSLS". */
const SNAP_MAGIC = 0x534c5344;
const SNAP_HEADER = 16;

/** The log file of generation `gen` (0 keeps the name logs had before compaction existed). */
function logName(dir: string, gen: number): string {
  return gen === 0 ? `${dir}/commands.log` : `${dir}/commands-${gen}.log`;
}

/**
 * One master alone: a command is committed when it is fsync'd to the local log file.
 *
 * Compaction keeps the files bounded by the live state, not the history: every `snapshotEvery`
 * commands the state machine is written to `snapshot` (generation g + 1, temp + fsync + rename),
 * and appends move to a new, empty `commands-<g+1>.log`; the old log is deleted. At open, the
 * snapshot's generation names the only log to replay, so a crash anywhere in between replays
 * each command exactly once: before the rename the old snapshot and log stand, after it the new
 * snapshot holds everything the old log did. While a compaction runs, new proposals wait, and it
 * starts only once every command in flight has been applied (so the snapshot has them all).
 */
export class SingleNodeLog implements ReplicatedLog {
  #file: RecordFile;
  #apply: ApplyFn;
  #endpoint: string;
  #dir: string;
  #gen: number;
  #o: SingleNodeLogOptions;
  #sinceSnapshot: number;
  /** Proposals between append and apply. */
  #inflight = 0;
  #idle: (() => void) | null = null;
  /** The running compaction: proposals wait for it. */
  #gate: Promise<void> | null = null;
  /** Compactions done since open (for tests and logs). */
  compactions = 0;

  private constructor(
    file: RecordFile,
    apply: ApplyFn,
    endpoint: string,
    dir: string,
    gen: number,
    replayed: number,
    o: SingleNodeLogOptions,
  ) {
    this.#file = file;
    this.#apply = apply;
    this.#endpoint = endpoint;
    this.#dir = dir;
    this.#gen = gen;
    this.#sinceSnapshot = replayed;
    this.#o = o;
  }

  /**
   * Opens `dir`: restores the snapshot (if any), replays its generation's log through `apply`,
   * and deletes logs of other generations (left by a crash during compaction).
   */
  static async open(
    dir: string,
    apply: ApplyFn,
    endpoint: string,
    o: SingleNodeLogOptions = {},
  ): Promise<SingleNodeLog> {
    await Deno.mkdir(dir, { recursive: true });
    let gen = 0;
    const snap = await Deno.readFile(`${dir}/snapshot`).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    });
    if (snap) {
      const v = new DataView(snap.buffer, snap.byteOffset, snap.byteLength);
      if (snap.length < SNAP_HEADER || v.getUint32(0, true) !== SNAP_MAGIC) {
        throw new Error(`${dir}/snapshot is not a dsys master snapshot`);
      }
      gen = Number(v.getBigUint64(8, true));
      if (!o.restore) throw new Error(`${dir}/snapshot exists but no restore function was given`);
      o.restore(snap.subarray(SNAP_HEADER));
    }
    const { file, records } = await RecordFile.open(logName(dir, gen));
    for (const r of records) apply(r);
    for await (const e of Deno.readDir(dir)) {
      if (/^commands(-\d+)?\.log$/.test(e.name) && `${dir}/${e.name}` !== logName(dir, gen)) {
        await Deno.remove(`${dir}/${e.name}`);
      }
    }
    return new SingleNodeLog(file, apply, endpoint, dir, gen, records.length, o);
  }

  async propose(data: Uint8Array): Promise<ApplyResult> {
    while (this.#gate) await this.#gate;
    this.#inflight++;
    let res: ApplyResult;
    try {
      // RecordFile resolves appends in order, so commands apply in log order.
      await this.#file.append(data);
      res = this.#apply(data);
    } finally {
      if (--this.#inflight === 0) this.#idle?.();
    }
    if (++this.#sinceSnapshot >= (this.#o.snapshotEvery ?? 10_000) && this.#o.snapshot) {
      this.#gate ??= this.#compact().finally(() => (this.#gate = null));
    }
    return res;
  }

  async #compact(): Promise<void> {
    if (this.#inflight > 0) await new Promise<void>((r) => (this.#idle = r));
    this.#idle = null;
    const next = this.#gen + 1;
    const body = this.#o.snapshot!();
    const out = new Uint8Array(SNAP_HEADER + body.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, SNAP_MAGIC, true);
    v.setUint32(4, 1, true);
    v.setBigUint64(8, BigInt(next), true);
    out.set(body, SNAP_HEADER);
    // A log of the next generation can only be an empty leftover of a compaction that crashed
    // before its snapshot was renamed into place.
    await Deno.remove(logName(this.#dir, next)).catch(() => {});
    try {
      await writeFileDurable(`${this.#dir}/snapshot`, out);
    } catch (e) {
      // Nothing changed: the old snapshot and log still hold everything. Try again later.
      this.#sinceSnapshot = 0;
      this.#o.log?.warn("lone master log compaction failed; will retry", { error: e });
      return;
    }
    try {
      // From the rename on, the old log is no longer read at start-up: appends must go to the new.
      const { file } = await RecordFile.open(logName(this.#dir, next));
      const old = this.#file;
      const oldPath = logName(this.#dir, this.#gen);
      this.#file = file;
      this.#gen = next;
      this.#sinceSnapshot = 0;
      this.compactions++;
      await old.close();
      await Deno.remove(oldPath);
    } catch (e) {
      (this.#o.onFatal ?? ((x) => {
        throw x;
      }))(e);
    }
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

  async close(): Promise<void> {
    while (this.#gate) await this.#gate;
    await this.#file.close();
  }
}
