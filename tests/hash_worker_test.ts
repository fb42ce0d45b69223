/**
 * lib/hash_worker.ts: digests from the worker threads equal node:crypto's over the same bytes
 * (streams of many sizes and split points, at once; files; per-block hashes of a buffer moved
 * to a worker and back), with the pool on and off; a caller
 * may reuse its buffer right after update; an idle pool does not keep a process alive.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { HASH_BUFFER_BYTES, HashPool } from "../lib/hash_worker.ts";
import { bytesOf } from "./storage_helpers.ts";

const MiB = 1024 * 1024;

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const ref = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

for (const workers of [2, 0]) {
  Deno.test(`hash pool (${workers} workers): streams and files hash like node:crypto`, async () => {
    const pool = new HashPool(workers);
    assert.equal(pool.enabled, workers > 0);
    try {
      const sizes = [0, 1, 1000, HASH_BUFFER_BYTES - 1, HASH_BUFFER_BYTES + 7, 9 * MiB + 3];
      // Several streams at once, each fed in uneven pieces through one reused buffer.
      await Promise.all(sizes.map(async (n, i) => {
        const data = bytesOf(i + 1, n);
        const s = pool.stream();
        const scratch = new Uint8Array(3 * MiB);
        for (let off = 0, k = 0; off < n; k++) {
          const len = Math.min(n - off, [1, 5000, 3 * MiB, 777_777][k % 4]);
          scratch.set(data.subarray(off, off + len));
          await s.update(scratch.subarray(0, len));
          scratch.fill(0); // the stream copied it: reuse is safe
          off += len;
        }
        assert.equal(hex(await s.digest()), ref(data), `stream of ${n} bytes`);
      }));
      // Whole + per-block streams (a node's upload), blocks of 1 MiB, fed unevenly.
      await Promise.all([0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 5].map(async (n, i) => {
        const data = bytesOf(i + 50, n);
        const s = pool.blockStream(MiB);
        for (let off = 0, k = 0; off < n; k++) {
          const len = Math.min(n - off, [333_333, 1, 2 * MiB][k % 3]);
          await s.update(data.subarray(off, off + len));
          off += len;
        }
        const r = await s.finish();
        assert.equal(hex(r.digest), ref(data), `whole of ${n}`);
        const want = n === 0 ? ref(data) : Array.from(
          { length: Math.ceil(n / MiB) },
          (_, b) => ref(data.subarray(b * MiB, (b + 1) * MiB)),
        ).join("");
        assert.equal(hex(r.blocks), want, `blocks of ${n}`);
      }));
      const aborted = pool.stream();
      await aborted.update(bytesOf(9, 1000));
      aborted.abort();
      const dir = await Deno.makeTempDir();
      try {
        const data = bytesOf(7, 5 * MiB + 11);
        await Deno.writeFile(`${dir}/f`, data);
        const r = await pool.file(`${dir}/f`);
        assert.equal(r.size, data.length);
        assert.equal(hex(r.digest), ref(data));
        await assert.rejects(pool.file(`${dir}/missing`));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      // Per-block hashes of an owned buffer: moved to a worker and back, same bytes.
      for (const n of [1, 1000, 3 * MiB, 3 * MiB + 5]) {
        const data = bytesOf(n, n);
        const want = Array.from(
          { length: Math.ceil(n / MiB) },
          (_, b) => ref(data.subarray(b * MiB, (b + 1) * MiB)),
        ).join("");
        const owned = data.slice();
        const r = await pool.blocks(owned, MiB);
        assert.equal(hex(r.digests), want, `blocks of ${n} bytes`);
        assert.deepEqual(r.data, data);
        // A view of a larger buffer is hashed in place (it cannot be moved).
        const big = new Uint8Array(n + 10);
        big.set(data, 10);
        const v = await pool.blocks(big.subarray(10), MiB);
        assert.equal(hex(v.digests), want);
        assert.equal(big.length, n + 10, "not detached");
      }
      assert.equal(pool.queuedBytes, 0);
    } finally {
      await pool.close();
    }
  });
}

Deno.test("hash pool: a process whose pool is idle exits on its own", async () => {
  const mod = new URL("../lib/hash_worker.ts", import.meta.url).href;
  const code = `import { sha256Stream } from "${mod}";
    const s = sha256Stream();
    await s.update(new Uint8Array(1 << 20));
    console.log(Array.from(await s.digest(), (x) => x.toString(16).padStart(2, "0")).join(""));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).trim(), ref(new Uint8Array(1 << 20)));
});
