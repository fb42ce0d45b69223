// Real FUSE mounts (needs root and /dev/fuse). Every read of the mount happens in a child process:
// the test process serves the mount, so reading it synchronously here would deadlock.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FuseError, FuseMount, mountsAt } from "../fuse/mod.ts";
import { FakeStorage, hex, randomBytes, sh } from "./fuse_helpers.ts";
import { waitFor } from "./wait.ts";

const enc = new TextEncoder();

interface Env {
  base: string;
  mnt: string;
  cache: string;
  store: FakeStorage;
  m: FuseMount;
}

/** Mounts a fresh filesystem in a temp dir, runs `body`, then always unmounts and cleans up. */
async function withMount(
  body: (env: Env) => Promise<void>,
  opts: { fetchTimeoutMs?: number; cacheMaxBytes?: number } = {},
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "dsys-fuse-" });
  await Deno.mkdir(`${base}/store`);
  const store = new FakeStorage(`${base}/store`);
  const mnt = `${base}/mnt`;
  const cache = `${base}/cache`;
  const m = await FuseMount.mount({
    mountpoint: mnt,
    cacheDir: cache,
    fetch: store.fetch,
    ...opts,
  });
  try {
    await body({ base, mnt, cache, store, m });
  } finally {
    await m.unmount();
    await store.settle();
    assert.deepEqual(await mountsAt(mnt), [], "unmount must leave no mount behind");
    await Deno.remove(base, { recursive: true });
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

Deno.test("fuse: names and sizes appear; ls -l and stat do not fetch", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const a = enc.encode("alpha\n");
    const b = randomBytes(100_000, 7);
    m.addFile({ path: "job-1/a.txt", id: await store.put(a), size: a.length });
    m.addFile({ path: "job-1/sub/b.bin", id: await store.put(b), size: b.length });
    m.addFile({ path: "job-2/a.txt", id: await store.put(a), size: a.length });
    const ls = await sh("ls", "-lR", mnt);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /job-1/);
    assert.match(ls.stdout, /job-2/);
    assert.match(ls.stdout, /-r--r--r-- .* 6 .* a\.txt/);
    assert.match(ls.stdout, /-r--r--r-- .* 100000 .* b\.bin/);
    const st = await sh("stat", "-c", "%s %F", `${mnt}/job-1/sub/b.bin`, `${mnt}/job-1/sub`);
    assert.equal(st.stdout, "100000 regular file\n0 directory\n");
    const missing = await sh("stat", `${mnt}/job-1/nope`);
    assert.notEqual(missing.code, 0);
    assert.equal(store.total(), 0, "metadata operations must not fetch");
    assert.equal(m.stats().fetchRequests, 0);
    assert.equal(m.stats().files, 3);
    // Opening without reading does not fetch either.
    const open = await sh("bash", "-c", `exec 3<"$1"; exec 3<&-`, "-", `${mnt}/job-1/a.txt`);
    assert.equal(open.code, 0, open.stderr);
    assert.equal(store.total(), 0, "open must not fetch");
  });
});

Deno.test("fuse: first read fetches once; later reads (other processes) hit the cache", async () => {
  await withMount(async ({ mnt, cache, store, m }) => {
    const data = randomBytes(3 * 1024 * 1024 + 17, 3);
    const id = await store.put(data);
    m.addFile({ path: "job/x.bin", id, size: data.length });
    const want = createHash("sha256").update(data).digest("hex");
    const r1 = await sh("sha256sum", `${mnt}/job/x.bin`);
    assert.equal(r1.stdout.split(" ")[0], want);
    assert.equal(store.total(), 1);
    assert.ok(await exists(`${cache}/${hex(id)}`), "cache file is named by id hex");
    // While a process that opened the file before it was cached still holds it, other opens use
    // the FUSE page cache too (the kernel refuses mixing that with passthrough on one inode).
    const holder = new Deno.Command("bash", {
      args: ["-c", `exec 3<"$1"; echo opened; read -r _`, "-", `${mnt}/job/x.bin`],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const hr = holder.stdout.getReader();
    await hr.read();
    const r2 = await sh("sha256sum", `${mnt}/job/x.bin`);
    assert.equal(r2.stdout.split(" ")[0], want, r2.stderr);
    const hw = holder.stdin.getWriter();
    await hw.write(enc.encode("\n"));
    await hw.close();
    hr.releaseLock();
    await holder.stdout.cancel();
    assert.equal((await holder.status).code, 0);
    // Once cached, opens are handed to the kernel (passthrough) when it supports that.
    const pt0 = m.stats().passthroughOpens;
    const r2b = await sh("sha256sum", `${mnt}/job/x.bin`);
    assert.equal(r2b.stdout.split(" ")[0], want, r2b.stderr);
    const [maj, min] = Deno.osRelease().split(".").map(Number);
    if (maj > 6 || (maj === 6 && min >= 9)) {
      assert.ok(m.stats().passthroughOpens > pt0, "Linux >= 6.9 supports FUSE passthrough");
    }
    const r3 = await sh("dd", `if=${mnt}/job/x.bin`, "of=/dev/null", "bs=1M", "skip=1");
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal(store.total(), 1, "only the first read fetches");
    // The same content under another path shares the cache entry.
    m.addFile({ path: "job2/same.bin", id, size: data.length });
    const r4 = await sh("sha256sum", `${mnt}/job2/same.bin`);
    assert.equal(r4.stdout.split(" ")[0], want);
    assert.equal(store.total(), 1);
    const s = m.stats();
    assert.equal(s.fetchRequests, 1);
    assert.ok(s.reads >= 1 && s.readBytes >= data.length, JSON.stringify(s));
  });
});

Deno.test("fuse: concurrent first reads of one file trigger exactly one fetch", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const data = randomBytes(512 * 1024, 11);
    const id = await store.put(data);
    m.addFile({ path: "j/c.bin", id, size: data.length });
    store.delayMs = 300; // keeps the fetch in flight while every reader arrives
    const want = createHash("sha256").update(data).digest("hex");
    const rs = await Promise.all(
      Array.from({ length: 6 }, () => sh("sha256sum", `${mnt}/j/c.bin`)),
    );
    for (const r of rs) assert.equal(r.stdout.split(" ")[0], want, r.stderr);
    assert.equal(store.total(), 1);
    assert.equal(m.stats().fetchRequests, 1);
  });
});

Deno.test("fuse: a failing fetch gives EIO to the reader; a later read retries", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const data = enc.encode("retry me\n");
    const id = await store.put(data);
    m.addFile({ path: "j/f.txt", id, size: data.length });
    store.failNext.set(hex(id), 1000);
    const bad = await sh("cat", `${mnt}/j/f.txt`);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /Input\/output error/);
    const failed = store.total();
    assert.ok(failed >= 1);
    assert.ok(m.stats().fetchFailures >= 1);
    store.failNext.clear();
    const good = await sh("cat", `${mnt}/j/f.txt`);
    assert.equal(good.code, 0, good.stderr);
    assert.equal(good.stdout, "retry me\n");
    assert.equal(store.total(), failed + 1);
  });
});

Deno.test("fuse: a fetch slower than fetchTimeoutMs gives EIO, the mount stays usable", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const slow = enc.encode("slow\n");
    const fast = enc.encode("fast\n");
    m.addFile({ path: "j/slow", id: await store.put(slow), size: slow.length });
    m.addFile({ path: "j/fast", id: await store.put(fast), size: fast.length });
    store.delayMs = 1500;
    const r = await sh("cat", `${mnt}/j/slow`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Input\/output error/);
    store.delayMs = 0;
    const ok = await sh("cat", `${mnt}/j/fast`);
    assert.equal(ok.stdout, "fast\n", ok.stderr);
    await store.settle();
    const again = await sh("cat", `${mnt}/j/slow`);
    assert.equal(again.stdout, "slow\n", again.stderr);
  }, { fetchTimeoutMs: 400 });
});

Deno.test("fuse: a 256 MiB file read through the mount matches the source", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const data = randomBytes(256 * 1024 * 1024, 42);
    const id = await store.put(data);
    const want = createHash("sha256").update(data).digest("hex");
    m.addFile({ path: "big/input.bin", id, size: data.length });
    const r = await sh("sha256sum", `${mnt}/big/input.bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split(" ")[0], want);
    assert.equal(store.total(), 1);
  });
});

Deno.test("fuse: prefetch warms the cache once, shared with concurrent readers", async () => {
  await withMount(async ({ mnt, cache, store, m }) => {
    const data = randomBytes(300_000, 21);
    const id = await store.put(data);
    m.addFile({ path: "j/p", id, size: data.length });
    store.delayMs = 200;
    const [, r] = await Promise.all([
      m.prefetch(id),
      sh("cmp", `${mnt}/j/p`, `${store.dir}/${hex(id)}`),
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await m.prefetch(id); // already cached: no fetch
    assert.equal(store.total(), 1);
    assert.ok(await exists(`${cache}/${hex(id)}`));
    const bad = await store.put(enc.encode("never stored"));
    await Deno.remove(`${store.dir}/${hex(bad)}`);
    await assert.rejects(m.prefetch(bad), FuseError);
  });
});

Deno.test("fuse: a cache file of the wrong size is replaced by a fresh fetch", async () => {
  await withMount(async ({ mnt, cache, store, m }) => {
    const data = enc.encode("the real bytes\n");
    const id = await store.put(data);
    await Deno.writeTextFile(`${cache}/${hex(id)}`, "junk");
    m.addFile({ path: "j/r", id, size: data.length });
    const r = await sh("cat", `${mnt}/j/r`);
    assert.equal(r.stdout, "the real bytes\n", r.stderr);
    assert.equal(store.total(), 1);
  });
});

Deno.test("fuse: removePath hides a job's files; addFile rejects conflicts", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const a = enc.encode("a\n");
    const id = await store.put(a);
    m.addFile({ path: "job-1/a", id, size: a.length });
    m.addFile({ path: "job-2/a", id, size: a.length });
    assert.equal((await sh("cat", `${mnt}/job-1/a`)).stdout, "a\n");
    m.addFile({ path: "job-1/a", id, size: a.length }); // idempotent
    assert.throws(() => m.addFile({ path: "job-1/a", id, size: 3 }), FuseError);
    assert.throws(() => m.addFile({ path: "job-1/a/b", id, size: 2 }), FuseError);
    assert.throws(() => m.addFile({ path: "../x", id, size: 2 }), FuseError);
    assert.throws(() => m.addFile({ path: "x", id: id.subarray(0, 8), size: 2 }), FuseError);
    assert.equal(m.removePath("job-1"), true);
    assert.equal(m.removePath("job-1"), false);
    const ls = await sh("ls", mnt);
    assert.equal(ls.stdout, "job-2\n");
    assert.notEqual((await sh("stat", `${mnt}/job-1/a`)).code, 0, "removed path is gone");
    assert.equal(m.stats().files, 1);
    // A removed path can be registered again.
    m.addFile({ path: "job-1/a", id, size: a.length });
    assert.equal((await sh("cat", `${mnt}/job-1/a`)).stdout, "a\n");
  });
});

Deno.test("fuse: eviction skips open and pinned files; LRU keeps the cache bounded", async () => {
  const MiB = 1024 * 1024;
  await withMount(async ({ mnt, cache, store, m }) => {
    const files = [1, 2, 3].map((s) => randomBytes(MiB, s));
    const ids: Uint8Array[] = [];
    for (const [i, f] of files.entries()) {
      ids.push(await store.put(f));
      m.addFile({ path: `j/${i}`, id: ids[i], size: f.length });
    }
    // Hold file 0 open in a child while trying to evict it.
    const holder = new Deno.Command("bash", {
      args: [
        "-c",
        `exec 3<"$1"; head -c 1 <&3 >/dev/null; echo opened; read -r _`,
        "-",
        `${mnt}/j/0`,
      ],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const reader = holder.stdout.getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), "opened\n");
    assert.equal(store.total(), 1);
    assert.equal(m.evict(ids[0]), false, "open file must not be evicted");
    const w = holder.stdin.getWriter();
    await w.write(enc.encode("\n"));
    await w.close();
    reader.releaseLock();
    await holder.stdout.cancel();
    assert.equal((await holder.status).code, 0);
    // RELEASE reaches us asynchronously after the child's close.
    assert.equal(m.pin(ids[0]), 1);
    assert.equal(m.evict(ids[0]), false, "pinned file must not be evicted");
    assert.equal(m.unpin(ids[0]), 0);
    await waitFor("file 0 evictable", () => m.evict(ids[0]));
    assert.equal(await exists(`${cache}/${hex(ids[0])}`), false);
    // Next read fetches again.
    assert.equal((await sh("cmp", `${mnt}/j/0`, `${store.dir}/${hex(ids[0])}`)).code, 0);
    assert.equal(store.total(), 2);
    // LRU: with room for two files, reading 1 then 2 evicts 0 (least recently used).
    for (const i of [1, 2]) {
      const r = await sh("cmp", `${mnt}/j/${i}`, `${store.dir}/${hex(ids[i])}`);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    }
    await waitFor("LRU evicted file 0", async () => !(await exists(`${cache}/${hex(ids[0])}`)));
    assert.ok(await exists(`${cache}/${hex(ids[1])}`));
    assert.ok(await exists(`${cache}/${hex(ids[2])}`));
    assert.ok(m.stats().evictions >= 2);
  }, { cacheMaxBytes: 2.5 * MiB });
});

Deno.test("fuse: unmount while a file is held open still completes", async () => {
  await withMount(async ({ mnt, store, m }) => {
    const a = enc.encode("held\n");
    m.addFile({ path: "j/h", id: await store.put(a), size: a.length });
    const holder = new Deno.Command("bash", {
      args: ["-c", `exec 3<"$1"; echo opened; read -r _`, "-", `${mnt}/j/h`],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const reader = holder.stdout.getReader();
    await reader.read();
    await m.unmount(); // lazy detach + connection abort after a grace period
    assert.deepEqual(await mountsAt(mnt), []);
    const w = holder.stdin.getWriter();
    await w.write(enc.encode("\n"));
    await w.close();
    reader.releaseLock();
    await holder.stdout.cancel();
    await holder.status;
  });
});

Deno.test("fuse: mounting over a dead mount left by a SIGKILLed server works", async () => {
  const base = await Deno.makeTempDir({ prefix: "dsys-fuse-kill-" });
  const mnt = `${base}/mnt`;
  const cache = `${base}/cache`;
  await Deno.mkdir(`${base}/store`);
  const store = new FakeStorage(`${base}/store`);
  const data = randomBytes(200_000, 5);
  const id = await store.put(data);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./fuse_child_server.ts", import.meta.url).pathname,
      mnt,
      cache,
      store.dir,
      hex(id),
      String(data.length),
    ],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const line = await reader.read();
  assert.equal(new TextDecoder().decode(line.value), "ready\n");
  reader.releaseLock();
  const r1 = await sh("cmp", `${mnt}/job/data.bin`, `${store.dir}/${hex(id)}`);
  assert.equal(r1.code, 0, r1.stdout + r1.stderr);
  child.kill("SIGKILL");
  await child.status;
  await child.stdout.cancel();
  assert.ok((await mountsAt(mnt)).length > 0, "the killed server leaves a dead mount");
  assert.match((await sh("stat", mnt)).stderr, /not connected/);

  const m = await FuseMount.mount({ mountpoint: mnt, cacheDir: cache, fetch: store.fetch });
  try {
    assert.equal((await mountsAt(mnt)).length, 1);
    m.addFile({ path: "job/data.bin", id, size: data.length });
    const r2 = await sh("cmp", `${mnt}/job/data.bin`, `${store.dir}/${hex(id)}`);
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.equal(store.total(), 0, "the cache file written before the kill is reused");
    // …once verified: a new mount serves no cache file it has not seen checked.
    assert.equal(store.verified.get(hex(id)), 1);
    // A second mount at a live mountpoint is refused.
    await assert.rejects(
      FuseMount.mount({ mountpoint: mnt, cacheDir: cache, fetch: store.fetch }),
      FuseError,
    );
  } finally {
    await m.unmount();
  }
  assert.deepEqual(await mountsAt(mnt), []);
  await Deno.remove(base, { recursive: true });
});
