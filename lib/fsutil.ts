/** Durable file-system helpers: acknowledge only what is on disk. */

/** Writes `data` to `path` durably: temp file, fsync, rename, fsync of the directory. */
export async function writeFileDurable(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await writeFull(f, data);
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
  await syncDir(dirname(path));
}

/**
 * Writes the file at `path` through a temp file next to it, so `path` never holds partial bytes:
 * `fill` writes the temp (it may throw: the temp is then removed), which is fdatasync'd unless
 * `fsync` is false, renamed into place, and the directory fsync'd (also unless `fsync` is false).
 * Returns what `fill` returned.
 */
export async function writeViaTemp<T>(
  path: string,
  fsync: boolean,
  fill: (f: Deno.FsFile) => Promise<T>,
): Promise<T> {
  const tmp = `${path}.part-${crypto.randomUUID()}`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  let out: T;
  try {
    out = await fill(f);
    if (fsync) await f.syncData();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  await Deno.rename(tmp, path);
  if (fsync) await syncDir(dirname(path));
  return out;
}

/** fsyncs a directory so that a rename or create inside it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/** The directory part of a path ("." when there is none). */
export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return path.slice(0, i);
}

/** True when the path exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Writes all of `data` (a single write may be short). */
export async function writeFull(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await f.write(data.subarray(off));
}

/** Reads until `buf` is full or the file ends; returns the bytes read. */
export async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let n = 0;
  while (n < buf.length) {
    const k = await f.read(buf.subarray(n));
    if (k === null) break;
    n += k;
  }
  return n;
}
