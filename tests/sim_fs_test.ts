/**
 * The simulated disk (tests/sim/world/sim_fs.ts): what a crash keeps and loses, failed fsyncs
 * as on Linux, bit flips, stale handles of a crashed process, and determinism by seed. Each
 * probabilistic claim is checked over many seeds, including that every outcome it allows
 * actually occurs.
 */
import assert from "node:assert/strict";
import { SimFs, SimFsError } from "./sim/world/sim_fs.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const SEEDS = 300;

async function read(disk: SimFs, path: string): Promise<string | null> {
  try {
    return td.decode(await disk.mount().readFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** A file /d/f durably holding `synced`, then `unsynced` appended without an fsync. */
async function fileWithTail(seed: number, synced: string, unsynced: string): Promise<SimFs> {
  const disk = new SimFs(seed);
  const fs = disk.mount();
  await fs.mkdirAll("/d");
  await fs.syncDir("/");
  const f = await fs.openAppend("/d/f", { create: true });
  await f.append(te.encode(synced));
  await f.syncData();
  await fs.syncDir("/d");
  await f.append(te.encode(unsynced));
  return disk;
}

Deno.test("sim fs: synced bytes survive a crash; unsynced ones are kept, lost, torn or garbled", async () => {
  const seen = new Set<string>();
  for (let seed = 0; seed < SEEDS; seed++) {
    const disk = await fileWithTail(seed, "SYNCED|", "unsynced-tail");
    assert.equal(await read(disk, "/d/f"), "SYNCED|unsynced-tail", "reads see the page cache");
    disk.crash();
    const got = (await read(disk, "/d/f"))!;
    assert.ok(got.startsWith("SYNCED|"), `seed ${seed}: synced bytes lost: ${got}`);
    const rest = got.slice("SYNCED|".length);
    const kinds = disk.log.map((f) => f.kind);
    if (rest === "unsynced-tail") seen.add("kept");
    else if (rest === "") seen.add("lost");
    else {
      // A prefix of the write, then garbage (zeros or random) if the log says so.
      const torn = disk.log.find((f) => f.kind === "torn");
      const keep = torn ? Number(/: (\d+) kept/.exec(torn.detail)![1]) : 0;
      assert.ok(got.length >= 7 + keep);
      assert.equal(rest.slice(0, keep), "unsynced-tail".slice(0, keep), `seed ${seed}`);
      if (rest.length > keep) {
        assert.ok(kinds.includes("garbage"), `seed ${seed}: extra bytes without a logged garbage`);
        seen.add(
          disk.log.find((f) => f.kind === "garbage")!.detail.includes("zero") ? "zeros" : "random",
        );
      }
      if (keep > 0) seen.add("torn");
    }
  }
  assert.deepEqual([...seen].sort(), ["kept", "lost", "random", "torn", "zeros"]);
});

Deno.test("sim fs: a create, rename or remove survives a crash only once its directory is fsync'd", async () => {
  const seen = new Set<string>();
  for (let seed = 0; seed < SEEDS; seed++) {
    const disk = new SimFs(seed);
    const fs = disk.mount();
    assert.deepEqual(await fs.mkdirAll("/a/b"), ["/a", "/a/b"]);
    assert.deepEqual(await fs.mkdirAll("/a/b"), []);
    await fs.syncDir("/");
    await fs.syncDir("/a");
    const put = async (name: string, s: string) => {
      const f = await fs.openAppend(`/a/b/${name}`, { create: true, truncate: true });
      await f.append(te.encode(s));
      await f.syncData();
      f.close();
    };
    await put("old", "OLD");
    await put("gone", "GONE");
    await fs.syncDir("/a/b");
    // Unsynced: a new file, a rename over "old", a remove.
    await put("new.tmp", "NEW");
    await fs.rename("/a/b/new.tmp", "/a/b/old");
    await fs.remove("/a/b/gone");
    await put("fresh", "FRESH");
    assert.deepEqual((await fs.list("/a/b")).map((e) => e.name).sort(), ["fresh", "old"]);
    disk.crash();
    const names = (await disk.mount().list("/a/b")).map((e) => e.name).sort().join(",");
    const old = await read(disk, "/a/b/old");
    // Entry changes reach the disk in order (a prefix), each one whole.
    const allowed = [
      ["gone,old", "OLD"], // nothing
      ["gone,new.tmp,old", "OLD"], // the create
      ["gone,old", "NEW"], // the rename
      ["old", "NEW"], // the remove
      ["fresh,old", "NEW"], // everything
    ];
    assert.ok(
      allowed.some(([n, o]) => n === names && o === old),
      `seed ${seed}: ${names} with old=${old}`,
    );
    seen.add(`${names} old=${old}`);
  }
  assert.equal(seen.size, 5, [...seen].join(" / "));
  // And once synced, every entry change is durable.
  const disk = new SimFs(1);
  const fs = disk.mount();
  await fs.mkdirAll("/x");
  await fs.syncDir("/");
  const f = await fs.openAppend("/x/f", { create: true });
  await f.append(te.encode("data"));
  await f.syncData();
  await fs.syncDir("/x");
  disk.crash();
  assert.equal(await read(disk, "/x/f"), "data");
});

Deno.test("sim fs: a directory made but never fsync'd in its parent can vanish with its files", async () => {
  let vanished = 0;
  for (let seed = 0; seed < 60; seed++) {
    const disk = new SimFs(seed);
    const fs = disk.mount();
    await fs.mkdirAll("/new");
    const f = await fs.openAppend("/new/f", { create: true });
    await f.append(te.encode("x"));
    await f.syncData();
    await fs.syncDir("/new"); // the file is durable in /new, but /new is not in /
    disk.crash();
    if (await read(disk, "/new/f") === null) vanished++;
  }
  assert.ok(vanished > 0 && vanished < 60, `vanished in ${vanished} of 60`);
});

Deno.test("sim fs: a failed fsync reports EIO once; the pages it dropped stay lost (fsyncgate)", async () => {
  let lostAfterLaterSync = 0;
  let droppedFromCache = 0;
  for (let seed = 0; seed < SEEDS; seed++) {
    const disk = await fileWithTail(seed, "A|", "B-written-before-the-error");
    disk.failSync(1, (p) => p === "/d/f");
    const fs = disk.mount();
    const f = await fs.openAppend("/d/f");
    const e = await f.syncData().then(() => null, (e) => e);
    assert.ok(e instanceof SimFsError && e.code === "EIO", String(e));
    assert.ok(disk.log.some((x) => x.kind === "sync-eio"));
    await f.syncData(); // nothing pending any more: succeeds, and writes nothing
    const cached = await read(disk, "/d/f");
    // Reads see the page cache, or (pages dropped) what reached the disk: a prefix, maybe torn.
    if (cached !== "A|B-written-before-the-error") {
      assert.ok("A|B-written-before-the-error".startsWith(cached!), cached!);
      assert.ok(disk.log.some((x) => x.kind === "dropped-pages"));
      droppedFromCache++;
    }
    disk.crash();
    const got = (await read(disk, "/d/f"))!;
    assert.ok(got.startsWith("A|"), got);
    if (got !== "A|B-written-before-the-error") lostAfterLaterSync++;
  }
  assert.ok(lostAfterLaterSync > 0, "a failed fsync never lost anything");
  assert.ok(droppedFromCache > 0, "a failed fsync never dropped the cached pages");
  // Rates: syncs fail at random too, each logged.
  const disk = new SimFs(7, { faults: { syncError: 0.5 } });
  const fs = disk.mount();
  const f = await fs.openAppend("/f", { create: true });
  let failed = 0;
  for (let i = 0; i < 40; i++) {
    await f.append(te.encode("x"));
    await f.syncData().catch(() => failed++);
  }
  assert.ok(failed > 5 && failed < 35, `failed ${failed} of 40`);
  assert.equal(disk.log.filter((x) => x.kind === "sync-eio").length, failed);
});

Deno.test("sim fs: a bit flip changes one synced bit, seen by reads and kept by crashes", async () => {
  const disk = await fileWithTail(3, "0123456789", "");
  const { offset, bit } = disk.flipBit("/d/f", 4, 1);
  assert.deepEqual({ offset, bit }, { offset: 4, bit: 1 });
  assert.equal(await read(disk, "/d/f"), "0123656789");
  disk.crash();
  assert.equal(await read(disk, "/d/f"), "0123656789");
  assert.deepEqual(disk.log.filter((f) => f.kind === "bit-flip").map((f) => f.detail), [
    "offset 4 bit 1",
  ]);
  const r = disk.flipBit("/d/f"); // drawn from the PRNG, within the durable bytes
  assert.ok(r.offset >= 0 && r.offset < 10 && r.bit >= 0 && r.bit < 8);
  assert.throws(() => disk.flipBit("/d/f", 10), SimFsError);
});

Deno.test("sim fs: a crashed process's mount and handles fail with ESTALE, also mid-operation", async () => {
  const disk = new SimFs(1);
  const fs = disk.mount();
  const f = await fs.openAppend("/f", { create: true });
  disk.crash();
  for (const p of [f.append(te.encode("x")), f.syncData(), fs.list("/"), fs.readFile("/f")]) {
    const e = await p.then(() => null, (e) => e);
    assert.ok(e instanceof SimFsError && e.code === "ESTALE", String(e));
  }
  // A crash while an operation waits for its latency: it fails and changes nothing.
  let crashNext = false;
  const slow = new SimFs(2, {
    latency: () => {
      if (crashNext) slow.crash();
      crashNext = false;
      return Promise.resolve();
    },
  });
  const m = slow.mount();
  await m.mkdirAll("/d");
  await m.syncDir("/");
  crashNext = true;
  const e = await m.openAppend("/d/f", { create: true }).then(() => null, (e) => e);
  assert.ok(e instanceof SimFsError && e.code === "ESTALE", String(e));
  assert.deepEqual(await slow.mount().list("/d"), []);
  // Missing files are Deno's NotFound, as on the real disk.
  await assert.rejects(() => slow.mount().readFile("/d/nope"), Deno.errors.NotFound);
  await assert.rejects(() => slow.mount().openAppend("/d/nope"), Deno.errors.NotFound);
});

Deno.test("sim fs: the same seed and operations give the same bytes and the same fault log", async () => {
  const run = async (seed: number) => {
    const disk = new SimFs(seed, { faults: { syncError: 0.2, dirSyncError: 0.2 } });
    for (let round = 0; round < 20; round++) {
      const fs = disk.mount();
      await fs.mkdirAll("/d");
      await fs.syncDir("/").catch(() => {});
      const f = await fs.openAppend(`/d/f${round % 3}`, { create: true });
      for (let i = 0; i < 5; i++) {
        await f.append(te.encode(`r${round}.${i};`));
        if (i % 2) await f.syncData().catch(() => {});
      }
      await fs.syncDir("/d").catch(() => {});
      disk.crash();
    }
    const fs = disk.mount();
    const files = await Promise.all(
      (await fs.list("/d")).map(async (e) =>
        `${e.name}=${td.decode(await fs.readFile(`/d/${e.name}`))}`
      ),
    );
    return JSON.stringify({ log: disk.log, files: files.sort() });
  };
  assert.equal(await run(42), await run(42));
  assert.notEqual(await run(42), await run(43));
});
