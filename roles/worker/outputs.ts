/**
 * A chunk's outputs to storage: every regular file its program left in its output directory
 * (and its stdout), checked against its disk limit, stored as the job owner's files through the
 * worker's one `WorkerStorage`. I/O of the worker shell (main.ts), one concern.
 * @module
 */
import type { FileEntry } from "../../wire/mod.ts";
import type { Logger } from "../../lib/log.ts";
import type { WorkerStorage } from "./storage_access.ts";

/** Outputs up to this size are read into memory and uploaded in one piece: cheaper per file
 * than streaming (no chunk-sized read buffer, one read). */
export const SMALL_OUTPUT_BYTES = 1 << 20;

/** The outputs could not be read (their directory was replaced by a symlink or a file). */
export class OutputError extends Error {
  /** Creates the error; the message names the directory. */
  constructor(message: string) {
    super(message);
    this.name = "OutputError";
  }
}

/** The outputs of a chunk claim more bytes than its disk limit allows. */
export class OutputQuotaError extends Error {
  /** Creates the error; the message gives the bytes and the limit. */
  constructor(message: string) {
    super(message);
    this.name = "OutputQuotaError";
  }
}

/** Uploads every regular file in `outDir` (and stdout when non-empty), stored as the job
 * owner's files (`owner` of the worker_request; none without security). More than
 * `maxBytes` in all (sparse files can claim sizes their tmpfs never held) is refused. */
export async function uploadOutputs(
  storage: WorkerStorage,
  outDir: string,
  stdoutPath: string,
  stdoutBytes: number,
  log: Logger,
  owner: string | undefined,
  maxBytes: number,
): Promise<FileEntry[]> {
  const files: { name: string; path: string }[] = [];
  if (!isRealDir(outDir)) {
    // Replaced by a symlink (or a file): never upload what it points at.
    throw new OutputError(`output directory ${outDir} is no longer a directory`);
  }
  // Synchronous listing: usually an empty directory, one getdents instead of async ops.
  const walk = (rel: string) => {
    const abs = rel ? `${outDir}/${rel}` : outDir;
    const names = [...Deno.readDirSync(abs)];
    names.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of names) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      // Symlinks are skipped on purpose: they could point at any file of the worker.
      if (e.isFile) files.push({ name: r, path: `${outDir}/${r}` });
      else if (e.isDirectory) walk(r);
    }
  };
  walk("");
  if (stdoutBytes > 0) {
    if (files.some((f) => f.name === "stdout")) {
      log.warn("program left a file named stdout; captured stdout not uploaded");
    } else files.unshift({ name: "stdout", path: stdoutPath });
  }
  const sizes = files.map((f) => Deno.statSync(f.path).size);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > maxBytes) {
    throw new OutputQuotaError(
      `outputs of ${total} bytes in all exceed its disk limit of ${maxBytes} bytes`,
    );
  }
  const out: FileEntry[] = [];
  for (const [i, f] of files.entries()) {
    // Either way the call resolves only once storage has the file durably.
    const small = sizes[i] <= SMALL_OUTPUT_BYTES;
    const put = owner ? { owner } : {};
    const r = small
      ? await storage.putBytes(Deno.readFileSync(f.path), put)
      : await storage.putFile(f.path, put);
    out.push({ id: r.id, size: r.size, name: f.name });
  }
  return out;
}

/** True when `path` is a directory itself, not a symlink to one. */
export function isRealDir(path: string): boolean {
  try {
    return Deno.lstatSync(path).isDirectory;
  } catch {
    return false;
  }
}
