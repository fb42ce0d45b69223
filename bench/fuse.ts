/**
 * FUSE benchmark: sequential read of a cached 1 GiB input through the worker's mount vs reading the
 * cache file directly, both with `dd bs=1M` in a child process (the serving process must not read
 * its own mount). Run alone: `deno run -A bench/fuse.ts [sizeMiB] [runs]`.
 * @module
 */

import { createHash } from "node:crypto";
import { FuseMount, idHex } from "../fuse/mod.ts";

/** One benchmark result: dsys vs baseline in `unit`; ratio = dsys / baseline. */
export type BenchRow = {
  name: string;
  dsys: number;
  baseline: number;
  unit: string;
  ratio: number;
  goal: string;
};

/** Deterministic pseudo-random chunk (xorshift32) so the input does not compress or dedupe. */
function chunk(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  const w = new Uint32Array(out.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    w[i] = x;
  }
  return out;
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; err: string }> {
  const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  return { ok: r.success, err: new TextDecoder().decode(r.stderr) };
}

/** Writes back dirty pages, then drops the page cache. False when the kernel refuses. */
async function dropCaches(): Promise<boolean> {
  await run("sync", []);
  try {
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3");
    return true;
  } catch {
    return false;
  }
}

/** Reads `path` with `dd bs=1M` in a child; returns MB/s (10^6 bytes) from dd's own timing. */
async function ddRead(path: string, bytes: number): Promise<number> {
  const r = await run("dd", [`if=${path}`, "of=/dev/null", "bs=1M"]);
  if (!r.ok) throw new Error(`dd ${path} failed: ${r.err.trim()}`);
  const m = r.err.match(/copied, ([0-9.e+-]+) s/);
  if (!m) throw new Error(`dd ${path}: cannot parse timing from: ${r.err.trim()}`);
  return bytes / 1e6 / Number(m[1]);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Runs the FUSE benchmark; rows are medians of `runs` repetitions. */
export async function runFuseBench(sizeMiB = 1024, runs = 3): Promise<BenchRow[]> {
  const bytes = sizeMiB * 1024 * 1024;
  const base = await Deno.makeTempDir({ prefix: "dsys-fuse-bench-" });
  const cacheDir = `${base}/cache`;
  await Deno.mkdir(cacheDir);
  // Build the cached input directly in the cache dir (the fetch path is covered by the tests).
  const tmp = `${cacheDir}/input.tmp`;
  const hash = createHash("sha256");
  const f = await Deno.open(tmp, { write: true, create: true });
  const CH = 64 * 1024 * 1024;
  for (let off = 0, i = 1; off < bytes; off += CH, i++) {
    const c = chunk(Math.min(CH, bytes - off), i);
    hash.update(c);
    for (let w = 0; w < c.length;) w += await f.write(c.subarray(w));
  }
  await f.sync();
  f.close();
  const id = new Uint8Array(hash.digest().subarray(0, 16));
  const cachePath = `${cacheDir}/${idHex(id)}`;
  await Deno.rename(tmp, cachePath);

  const m = await FuseMount.mount({
    mountpoint: `${base}/mnt`,
    cacheDir,
    fetch: () => Promise.reject(new Error("bench input must already be cached")),
  });
  let n = 0;
  // Each measured read goes through a fresh path (a new inode), so the kernel's page cache of an
  // earlier run (kept by keep_cache) does not turn a FUSE read into a pure page-cache read.
  const freshPath = () => {
    const p = `run-${n++}/input.bin`;
    m.addFile({ path: p, id, size: bytes });
    return `${m.mountpoint}/${p}`;
  };
  const rows: BenchRow[] = [];
  const row = (name: string, d: number[], b: number[], goal: string) => {
    const dsys = Math.round(median(d));
    const baseline = Math.round(median(b));
    rows.push({ name, dsys, baseline, unit: "MB/s", ratio: +(dsys / baseline).toFixed(2), goal });
  };
  try {
    const cold = { d: [] as number[], b: [] as number[] };
    let dropped = true;
    for (let i = 0; i < runs; i++) {
      dropped = (await dropCaches()) && dropped;
      cold.d.push(await ddRead(freshPath(), bytes));
      dropped = (await dropCaches()) && dropped;
      cold.b.push(await ddRead(cachePath, bytes));
    }
    row(
      `seq read ${sizeMiB} MiB cached input, page cache ${dropped ? "dropped" : "NOT dropped"}`,
      cold.d,
      cold.b,
      ">= 0.7x",
    );
    const warm = { d: [] as number[], b: [] as number[] };
    await ddRead(cachePath, bytes); // cache file in the page cache; FUSE inode still cold
    for (let i = 0; i < runs; i++) {
      warm.d.push(await ddRead(freshPath(), bytes));
      warm.b.push(await ddRead(cachePath, bytes));
    }
    row(
      `seq read ${sizeMiB} MiB, cache file in page cache (FUSE first read)`,
      warm.d,
      warm.b,
      "info",
    );
    const again = { d: [] as number[], b: [] as number[] };
    const p = freshPath();
    await ddRead(p, bytes);
    for (let i = 0; i < runs; i++) {
      again.d.push(await ddRead(p, bytes));
      again.b.push(await ddRead(cachePath, bytes));
    }
    row(`seq re-read ${sizeMiB} MiB through mount (keep_cache)`, again.d, again.b, "info");
  } finally {
    await m.unmount();
    await Deno.remove(base, { recursive: true });
    await dropCaches();
  }
  return rows;
}

if (import.meta.main) {
  const rows = await runFuseBench(Number(Deno.args[0] ?? 1024), Number(Deno.args[1] ?? 3));
  console.table(rows);
}
