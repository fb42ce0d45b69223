/**
 * Snapshots of the job table, for Raft log compaction and InstallSnapshot.
 *
 * A snapshot is the shortest command sequence that rebuilds the table: the balancer lease's
 * `lease` grant (when there is one), then each job's `submit` (in submission order, which also
 * rebuilds every client's exactly-once session) followed by one `restore` with the job's chunks
 * that are no longer as submitted (results, cancels, retry histories), set as they are rather
 * than replayed (a replay in another order could stop a job with `maxFailedChunks` at another
 * chunk). It holds live jobs only: a removed job (finished for the
 * retention, or `dsys rm`) simply is not in the table any more. Replaying the submits rebuilds
 * the exactly-once sessions (a session is what its live jobs say, see `Session` in
 * job_table.ts) and, with the restores, the file reference counts. Then one `keep` per user's
 * kept file (as it was kept: size, replicas, name, time), and the tombstones as `delete`
 * commands, oldest first, grouped by their time (a tombstoned file is never referenced, so each
 * applies). It reuses the log's command
 * encoding, so there is one format to validate, not two:
 *
 *   u32 magic "DSJT" | u32 version 1 | u32 count | count × (u32 length | command bytes)
 */
import { ChunkState, uuidFromHex } from "../../wire/mod.ts";
import { type Command, JobTable } from "./job_table.ts";
import { CommandError, decodeCommand, encodeCommand, MAX_DELETE } from "./commands.ts";

const MAGIC = 0x544a5344; // "DSJT" little-endian

/** The commands that rebuild `table`. */
export function snapshotCommands(table: JobTable): Command[] {
  const cmds: Command[] = [];
  // The current lease, first (decodeSnapshot sets it as it is rather than applying it).
  if (table.lease) cmds.push({ kind: "lease", lease: table.lease });
  for (const job of table.jobs.values()) {
    cmds.push({ kind: "submit", spec: job.spec });
    // Every chunk that is not as submitted (a result, a cancel, retries behind it), as it is.
    const changed = job.chunks.filter((c) =>
      c.state !== ChunkState.Queued || c.history.length > 0 || c.attempt > 0
    );
    if (changed.length > 0 || job.finishedAtMs > 0 || job.cancelledAtMs > 0) {
      cmds.push({
        kind: "restore",
        jobId: job.spec.jobId,
        chunks: changed,
        finishedAtMs: job.finishedAtMs,
        cancelledAtMs: job.cancelledAtMs,
      });
    }
  }
  for (const [file, users] of table.files.keeps) {
    for (const [user, k] of users) {
      cmds.push({
        kind: "keep",
        user,
        unkeep: false,
        replicas: k.replicas,
        files: [{ id: uuidFromHex(file), size: k.size, name: k.name }],
        atMs: k.atMs,
      });
    }
  }
  let group: { files: Uint8Array[]; atMs: number } | null = null;
  for (const [file, atMs] of table.files.deleted) {
    if (!group || group.atMs !== atMs || group.files.length >= MAX_DELETE) {
      if (group) cmds.push({ kind: "delete", ...group });
      group = { files: [], atMs };
    }
    group.files.push(uuidFromHex(file));
  }
  if (group) cmds.push({ kind: "delete", ...group });
  return cmds;
}

/** Serializes the table. */
export function encodeSnapshot(table: JobTable): Uint8Array {
  const parts = snapshotCommands(table).map(encodeCommand);
  const size = 12 + parts.reduce((a, p) => a + 4 + p.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint32(0, MAGIC, true);
  v.setUint32(4, 1, true);
  v.setUint32(8, parts.length, true);
  let off = 12;
  for (const p of parts) {
    v.setUint32(off, p.length, true);
    out.set(p, off + 4);
    off += 4 + p.length;
  }
  return out;
}

/** Rebuilds a table from a snapshot; throws CommandError on a malformed one. */
export function decodeSnapshot(data: Uint8Array): JobTable {
  const table = new JobTable();
  if (data.length === 0) return table; // the empty snapshot of a new group
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length < 12 || v.getUint32(0, true) !== MAGIC || v.getUint32(4, true) !== 1) {
    throw new CommandError("not a job-table snapshot (bad magic or version)");
  }
  const count = v.getUint32(8, true);
  let off = 12;
  for (let i = 0; i < count; i++) {
    if (off + 4 > data.length) throw new CommandError(`snapshot truncated at entry ${i}`);
    const len = v.getUint32(off, true);
    if (off + 4 + len > data.length) throw new CommandError(`snapshot entry ${i} overruns`);
    const cmd = decodeCommand(data.subarray(off + 4, off + 4 + len));
    // The lease is state, not a step: set it as it was (apply would want epoch 1 first).
    if (cmd.kind === "lease") table.lease = cmd.lease;
    else table.apply(cmd);
    off += 4 + len;
  }
  if (off !== data.length) throw new CommandError("trailing bytes after snapshot entries");
  return table;
}
