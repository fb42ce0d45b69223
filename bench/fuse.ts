/**
 * FUSE benchmark: sequential read of a cached 1 GiB input through the worker's mount vs reading the
 * cache file directly, both with `dd bs=1M` in a child process (the serving process must not read
 * its own mount). Run alone: `deno run -A bench/fuse.ts [sizeMiB] [runs]`.
 * @module
 */

import { createHash } from "node:crypto";
import { FuseMount, idHex } from "../fuse/mod.ts";
import type { BenchRow } from "./types.ts";
// The same generator the FUSE tests use, so the input does not compress or dedupe.
import { randomBytes } from "../tests/fuse_helpers.ts";

/** One benchmark result (shared shape of every dsys benchmark). */
export type { BenchRow };

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

/**
 * Runs the FUSE benchmark; rows are medians of `runs` repetitions (each a mount read and a direct
 * read, the side that goes first alternating) with the range of the per-pair ratios as spread.
 */
export async function runFuseBench(sizeMiB = 1024, runs = 9): Promise<BenchRow[]> {
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
    const c = randomBytes(Math.min(CH, bytes - off), i);
    hash.update(c);
    for (let w = 0; w < c.length;) w += await f.write(c.subarray(w));
  }
  await f.sync();
  f.close();
  const id = new Uint8Array(hash.digest().subarray(0, 16));
  const cachePath = `${cacheDir}/${idHex(id)}`;
  await Deno.rename(tmp, cachePath);

  // The mount serves a cache file only once `fetch` has verified it against its id (as the
  // worker's fetch does for a file cached by an earlier run): hash the file that is there.
  const noFetch = async (want: Uint8Array, path: string) => {
    const h = createHash("sha256");
    const file = await Deno.open(path);
    try {
      for await (const c of file.readable) h.update(c);
    } catch (e) {
      file.close();
      throw e;
    }
    if (idHex(new Uint8Array(h.digest().subarray(0, 16))) !== idHex(want)) {
      throw new Error("bench input must already be cached (its cache file does not match)");
    }
  };
  // Default mount (kernel passthrough for cached files) and one forced through the user-space
  // read path (what kernels without passthrough, and files opened before caching, get).
  const pt = await FuseMount.mount({ mountpoint: `${base}/mnt`, cacheDir, fetch: noFetch });
  const us = await FuseMount.mount({
    mountpoint: `${base}/mnt-nopt`,
    cacheDir,
    fetch: noFetch,
    passthrough: false,
  });
  let n = 0;
  // Each measured read goes through a fresh path (a new inode), so the kernel's page cache of an
  // earlier run (kept by keep_cache) does not turn a FUSE read into a pure page-cache read.
  const freshPath = (m: FuseMount) => {
    const p = `run-${n++}/input.bin`;
    m.addFile({ path: p, id, size: bytes });
    return `${m.mountpoint}/${p}`;
  };
  const rows: BenchRow[] = [];
  const measure = async (name: string, m: FuseMount, cold: boolean, goal: string) => {
    const d: number[] = [];
    const b: number[] = [];
    let dropped = true;
    if (!cold) await ddRead(cachePath, bytes); // cache file in the page cache
    for (let i = 0; i < runs; i++) {
      // Alternate which side goes first: on a shared VM the disk is noisy right after a drop.
      for (const side of i % 2 ? ["b", "d"] : ["d", "b"]) {
        if (cold) dropped = (await dropCaches()) && dropped;
        if (side === "d") d.push(await ddRead(freshPath(m), bytes));
        else b.push(await ddRead(cachePath, bytes));
      }
    }
    const dsys = Math.round(median(d));
    const baseline = Math.round(median(b));
    const ratios = d.map((x, i) => x / b[i]);
    const cache = cold
      ? (dropped ? "page cache dropped" : "drop_caches FAILED")
      : "warm page cache";
    rows.push({
      name: `${name}, ${sizeMiB} MiB, ${cache}`,
      dsys,
      baseline,
      unit: "MB/s",
      ratio: +(dsys / baseline).toFixed(2),
      goal,
      spread: `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}`,
    });
  };
  try {
    await measure("seq read via mount (passthrough)", pt, true, "info (disk-bound)");
    await measure("seq read via mount (passthrough)", pt, false, ">= 0.95x");
    await measure("seq read via mount (user-space path)", us, true, "info");
    await measure("seq read via mount (user-space path)", us, false, "info");
  } finally {
    await pt.unmount();
    await us.unmount();
    await Deno.remove(base, { recursive: true });
    await dropCaches();
  }
  return rows;
}

if (import.meta.main) {
  const rows = await runFuseBench(Number(Deno.args[0] ?? 1024), Number(Deno.args[1] ?? 9));
  console.table(rows);
}
