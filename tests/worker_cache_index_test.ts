// Tests of the worker's cache index: what register/heartbeat report, from real directory scans.
import assert from "node:assert/strict";
import { CacheIndex } from "../roles/worker/cache_index.ts";
import { uuidToHex } from "../wire/mod.ts";

const A = "0123456789abcdef0123456789abcdef";
const B = "fedcba9876543210fedcba9876543210";

Deno.test("CacheIndex: full list, deltas only move on commit, temps are ignored and removed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-cacheidx-" });
  try {
    const idx = new CacheIndex(dir);
    await Deno.writeTextFile(`${dir}/${A}`, "a");
    await Deno.writeTextFile(`${dir}/${B}.part-123`, "partial download");
    const full = await idx.full();
    assert.deepEqual(full.files.map(uuidToHex), [A]);
    idx.commit(full.snapshot);

    await Deno.writeTextFile(`${dir}/${B}`, "b");
    const d1 = await idx.delta();
    assert.deepEqual(d1.added.map(uuidToHex), [B]);
    assert.deepEqual(d1.evicted, []);
    // Not committed (heartbeat lost): the next delta repeats it, plus the eviction of A.
    await Deno.remove(`${dir}/${A}`);
    const d2 = await idx.delta();
    assert.deepEqual(d2.added.map(uuidToHex), [B]);
    assert.deepEqual(d2.evicted.map(uuidToHex), [A]);
    idx.commit(d2.snapshot);
    const d3 = await idx.delta();
    assert.deepEqual([d3.added.length, d3.evicted.length], [0, 0]);

    assert.equal(await idx.removeTemps(), 1);
    assert.deepEqual([...await idx.scan()], [B]);
    // A missing directory is an empty cache, not an error.
    assert.equal((await new CacheIndex(`${dir}/nope`).scan()).size, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
