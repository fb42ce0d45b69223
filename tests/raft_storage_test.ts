/**
 * Durable Raft storage against real files: round trips, overwrite semantics, torn and
 * corrupt tails, segment rolling, compaction/snapshot install, and a RawNode restart.
 */
import assert from "node:assert/strict";
import { FileStorage, StorageError } from "../roles/master/raft/storage.ts";
import { crc32 } from "../lib/crc32.ts";
import {
  type Entry,
  type HardState,
  mulberry32,
  RawNode,
  type Snapshot,
} from "../roles/master/raft/mod.ts";

const te = new TextEncoder();
const ent = (index: number, term: number, s = `e${index}`): Entry => ({
  index,
  term,
  type: "normal",
  data: te.encode(s),
});
const range = (a: number, b: number, term: number) => {
  const out: Entry[] = [];
  for (let i = a; i <= b; i++) out.push(ent(i, term));
  return out;
};

async function segFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const d of Deno.readDir(dir)) if (d.name.startsWith("wal-")) out.push(d.name);
  return out.sort();
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "raft_storage_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("crc32 matches the IEEE check value", () => {
  assert.equal(crc32(te.encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

Deno.test("storage: entries and hard state survive reopen; overwrite truncates the suffix", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir);
    await s.save({ term: 1, vote: "a", commit: 0 }, range(1, 5, 1));
    await s.save({ term: 2, vote: "b", commit: 3 }, [ent(4, 2, "x"), ent(5, 2, "y")]);
    await s.save(null, [ent(6, 2)]);
    s.close();
    const r = await FileStorage.open(dir);
    const st = r.initialState();
    assert.deepEqual(st.hardState, { term: 2, vote: "b", commit: 3 });
    assert.deepEqual(st.entries.map((e) => `${e.index}@${e.term}`), [
      "1@1",
      "2@1",
      "3@1",
      "4@2",
      "5@2",
      "6@2",
    ]);
    assert.equal(new TextDecoder().decode(st.entries[3].data), "x");
    assert.equal(r.recovery.truncatedBytes, 0);
    r.close();
  }));

Deno.test("storage: a record cut mid-way (torn write) is truncated on start-up", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir);
    await s.save({ term: 1, vote: null, commit: 2 }, range(1, 3, 1));
    await s.save(null, range(4, 6, 1));
    s.close();
    const [seg] = await segFiles(dir);
    const path = `${dir}/${seg}`;
    const size = (await Deno.stat(path)).size;
    // Cut 5 bytes off the last record (entries 4..6).
    await Deno.truncate(path, size - 5);
    const r = await FileStorage.open(dir);
    assert.deepEqual(r.initialState().entries.map((e) => e.index), [1, 2, 3]);
    assert.ok(r.recovery.truncatedBytes > 0);
    // Appending after recovery works and survives another restart.
    await r.save({ term: 2, vote: null, commit: 3 }, range(4, 4, 2));
    r.close();
    const r2 = await FileStorage.open(dir);
    assert.deepEqual(r2.initialState().entries.map((e) => `${e.index}@${e.term}`), [
      "1@1",
      "2@1",
      "3@1",
      "4@2",
    ]);
    assert.equal(r2.recovery.truncatedBytes, 0);
    assert.deepEqual(r2.hardState(), { term: 2, vote: null, commit: 3 });
    r2.close();
  }));

Deno.test("storage: corrupt tail bytes fail the CRC and are dropped; zeroed tail too", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir);
    await s.save({ term: 1, vote: null, commit: 0 }, range(1, 2, 1));
    await s.save(null, range(3, 4, 1));
    s.close();
    const [seg] = await segFiles(dir);
    const path = `${dir}/${seg}`;
    const b = await Deno.readFile(path);
    b[b.length - 2] ^= 0xff; // flip a payload byte of the last record
    await Deno.writeFile(path, b);
    let r = await FileStorage.open(dir);
    assert.deepEqual(r.initialState().entries.map((e) => e.index), [1, 2]);
    r.close();
    // A file extended with zeros (metadata persisted, data not) is a torn tail as well.
    const f = await Deno.open(path, { append: true });
    await f.write(new Uint8Array(64));
    f.close();
    r = await FileStorage.open(dir);
    assert.equal(r.recovery.truncatedBytes, 64);
    assert.deepEqual(r.initialState().entries.map((e) => e.index), [1, 2]);
    r.close();
  }));

Deno.test("storage: corruption inside a sealed segment is an error, not silent loss", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir, { segmentBytes: 200 });
    for (let i = 1; i <= 20; i++) await s.save({ term: 1, vote: null, commit: i - 1 }, [ent(i, 1)]);
    s.close();
    const segs = await segFiles(dir);
    assert.ok(segs.length >= 3, `segments: ${segs.length}`);
    const first = `${dir}/${segs[0]}`;
    const b = await Deno.readFile(first);
    b[12] ^= 0x55;
    await Deno.writeFile(first, b);
    await assert.rejects(() => FileStorage.open(dir), StorageError);
  }));

Deno.test("storage: segments roll; compaction drops old segments and keeps the tail", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir, { segmentBytes: 256 });
    for (let i = 1; i <= 30; i++) await s.save({ term: 1, vote: "n1", commit: i }, [ent(i, 1)]);
    assert.ok((await segFiles(dir)).length > 3);
    const snap: Snapshot = {
      index: 25,
      term: 1,
      conf: { voters: ["n1"] },
      data: te.encode("sm@25"),
    };
    await s.compact(snap);
    assert.equal((await segFiles(dir)).length, 1);
    await s.save(null, [ent(31, 1)]);
    s.close();
    const r = await FileStorage.open(dir);
    const st = r.initialState();
    assert.equal(st.snapshot?.index, 25);
    assert.equal(new TextDecoder().decode(st.snapshot!.data), "sm@25");
    assert.deepEqual(st.snapshot?.conf.voters, ["n1"]);
    assert.deepEqual(st.entries.map((e) => e.index), [26, 27, 28, 29, 30, 31]);
    assert.deepEqual(st.hardState, { term: 1, vote: "n1", commit: 30 });
    r.close();
  }));

Deno.test("storage: an installed snapshot replaces a conflicting log; leftovers are cleaned", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir);
    await s.save({ term: 3, vote: null, commit: 2 }, range(1, 8, 2));
    const snap: Snapshot = {
      index: 6,
      term: 3,
      conf: { voters: ["a", "b"] },
      data: te.encode("S"),
    };
    await s.save({ term: 3, vote: null, commit: 6 }, [ent(7, 3)], snap);
    s.close();
    // A crashed rewrite leaves a .tmp file behind: it must be ignored and removed.
    await Deno.writeFile(`${dir}/wal-00000000000000ff.log.tmp`, new Uint8Array([1, 2, 3]));
    const r = await FileStorage.open(dir);
    const st = r.initialState();
    assert.equal(st.snapshot?.index, 6);
    assert.deepEqual(st.entries.map((e) => `${e.index}@${e.term}`), ["7@3"]);
    assert.deepEqual(st.hardState, { term: 3, vote: null, commit: 6 });
    r.close();
    for await (const d of Deno.readDir(dir)) assert.ok(!d.name.endsWith(".tmp"), d.name);
  }));

Deno.test("storage: snapshot file newer than the log (crash before rewrite) is honoured", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir);
    await s.save({ term: 1, vote: null, commit: 10 }, range(1, 10, 1));
    s.close();
    const seg = (await segFiles(dir))[0];
    const saved = await Deno.readFile(`${dir}/${seg}`);
    const s2 = await FileStorage.open(dir);
    await s2.compact({ index: 8, term: 1, conf: { voters: ["n1"] }, data: te.encode("x") });
    s2.close();
    // Put the pre-compaction log back as if the crash hit right after snapshot.bin was renamed.
    for (const f of await segFiles(dir)) await Deno.remove(`${dir}/${f}`);
    await Deno.writeFile(`${dir}/${seg}`, saved);
    const r = await FileStorage.open(dir);
    assert.equal(r.snapshot()?.index, 8);
    assert.deepEqual(r.initialState().entries.map((e) => e.index), [9, 10]);
    // Start-up finished the rewrite: later appends replay on top of the snapshot (they used to
    // go after the old log's base and fail the next start-up).
    await r.save({ term: 2, vote: null, commit: 10 }, [ent(11, 2)]);
    r.close();
    const r2 = await FileStorage.open(dir);
    assert.deepEqual(r2.initialState().entries.map((e) => `${e.index}@${e.term}`), [
      "9@1",
      "10@1",
      "11@2",
    ]);
    assert.deepEqual(await segFiles(dir), [(await segFiles(dir)).at(-1)]);
    r2.close();
  }));

Deno.test("storage: a bad record in the newest segment with valid ones after it is an error", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir);
    for (let i = 1; i <= 6; i++) await s.save({ term: 1, vote: null, commit: i - 1 }, [ent(i, 1)]);
    s.close();
    const [seg] = await segFiles(dir);
    const path = `${dir}/${seg}`;
    const b = await Deno.readFile(path);
    b[20] ^= 0x04; // inside the first record: five acknowledged saves follow it
    await Deno.writeFile(path, b);
    await assert.rejects(() => FileStorage.open(dir), StorageError);
    assert.equal((await Deno.stat(path)).size, b.length, "nothing was truncated");
  }));

Deno.test("storage: after a failed save every later save is refused", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(`${dir}/raft`, { segmentBytes: 1 });
    await s.save({ term: 1, vote: null, commit: 0 }, [ent(1, 1)]);
    await Deno.remove(`${dir}/raft`, { recursive: true }); // the next segment cannot be made
    await assert.rejects(() => s.save(null, [ent(2, 1)]), StorageError);
    await Deno.mkdir(`${dir}/raft`); // even once the disk "works" again
    const e = await s.save(null, [ent(2, 1)]).then(() => null, (e) => e);
    assert.ok(e instanceof StorageError && /refused/.test(e.message), String(e));
    s.close();
  }));

Deno.test("storage + RawNode: a single-node cluster restarts from disk with its data", () =>
  withDir(async (dir) => {
    const drive = async (node: RawNode, st: FileStorage, applied: string[]) => {
      while (node.hasReady()) {
        const rd = node.ready();
        await st.saveReady(rd);
        for (const e of rd.committedEntries) {
          if (e.type === "normal" && e.data.length) applied.push(new TextDecoder().decode(e.data));
        }
        node.advance();
      }
    };
    let st = await FileStorage.open(dir);
    let node = new RawNode({
      id: "n1",
      electionTick: 10,
      heartbeatTick: 1,
      rand: mulberry32(1),
      peers: ["n1"],
    });
    const applied: string[] = [];
    for (let i = 0; i < 30 && node.status().role !== "leader"; i++) {
      node.tick();
      await drive(node, st, applied);
    }
    assert.equal(node.status().role, "leader");
    for (const v of ["a", "b", "c"]) {
      node.propose(te.encode(v));
      await drive(node, st, applied);
    }
    assert.deepEqual(applied, ["a", "b", "c"]);
    const snap = node.compact(node.status().applied, te.encode("a,b,c"));
    await st.compact(snap);
    node.propose(te.encode("d"));
    await drive(node, st, applied);
    st.close();

    st = await FileStorage.open(dir);
    const restored = st.initialState();
    node = new RawNode({
      id: "n1",
      electionTick: 10,
      heartbeatTick: 1,
      rand: mulberry32(2),
      restore: restored,
    });
    const again: string[] = [];
    await drive(node, st, again);
    // The snapshot covers a,b,c; "d" is re-applied from the log.
    assert.equal(new TextDecoder().decode(restored.snapshot!.data), "a,b,c");
    assert.deepEqual(again, ["d"]);
    assert.equal(node.status().term, 2);
    st.close();
  }));

Deno.test("storage: cutting the file at any byte recovers exactly a prefix of the saves", () =>
  withDir(async (dir) => {
    const src = `${dir}/src`;
    const s = await FileStorage.open(src);
    const ends: number[] = []; // file size after each save
    for (let i = 1; i <= 8; i++) {
      await s.save({ term: i, vote: null, commit: i - 1 }, [ent(i, i, "x".repeat(i * 3))]);
      const [seg] = await segFiles(src);
      ends.push((await Deno.stat(`${src}/${seg}`)).size);
    }
    s.close();
    const [seg] = await segFiles(src);
    const full = await Deno.readFile(`${src}/${seg}`);
    for (let cut = 0; cut <= full.length; cut += 3) {
      const d = `${dir}/cut${cut}`;
      await Deno.mkdir(d);
      await Deno.writeFile(`${d}/${seg}`, full.subarray(0, cut));
      const r = await FileStorage.open(d);
      // Each save is two records, entries then hard state (a fixed 30 bytes here): a cut
      // keeps every record that is wholly before it and nothing after.
      const recEnds = ends.flatMap((e) => [e - 30, e]);
      const k = recEnds.filter((e) => e <= cut).length;
      const st = r.initialState();
      const nEnt = Math.ceil(k / 2);
      assert.deepEqual(
        st.entries.map((e) => e.index),
        Array.from({ length: nEnt }, (_, i) => i + 1),
      );
      assert.equal(st.hardState.term, Math.floor(k / 2));
      assert.equal(r.recovery.truncatedBytes, cut - (k ? recEnds[k - 1] : 0));
      r.close();
    }
  }));

Deno.test("storage: random saves, overwrites, compactions, torn writes and reopens match a model", () =>
  withDir(async (dir) => {
    const r = mulberry32(77);
    type Model = { hs: HardState; snap: number; ents: string[] }; // ents as "index@term"
    const model: Model = { hs: { term: 0, vote: null, commit: 0 }, snap: 0, ents: [] };
    const view = (s: FileStorage): Model => {
      const st = s.initialState();
      return {
        hs: st.hardState,
        snap: st.snapshot?.index ?? 0,
        ents: st.entries.map((e) => `${e.index}@${e.term}`),
      };
    };
    let s = await FileStorage.open(dir, { segmentBytes: 300 });
    let term = 1;
    const seen = { torn: 0, overwrite: 0, compact: 0, reopen: 0 };
    for (let step = 0; step < 300; step++) {
      const last = model.snap + model.ents.length;
      const x = r();
      if (x < 0.6) {
        // append, sometimes overwriting an uncommitted suffix with a newer term
        const from = r() < 0.25 && last > model.hs.commit
          ? model.hs.commit + 1 + Math.floor(r() * (last - model.hs.commit))
          : last + 1;
        if (from < last + 1) {
          term++;
          seen.overwrite++;
        }
        const n = 1 + Math.floor(r() * 4);
        const ents = range(from, from + n - 1, term);
        const commit = Math.max(
          model.hs.commit,
          Math.min(from + n - 1, model.hs.commit + Math.floor(r() * 3)),
        );
        const hs: HardState = { term, vote: r() < 0.5 ? "n2" : null, commit };
        // Torn write: cut the segment somewhere inside the bytes this save appends.
        const torn = r() < 0.15;
        const segs0 = await segFiles(dir);
        const size0 = segs0.length ? (await Deno.stat(`${dir}/${segs0.at(-1)}`)).size : 0;
        await s.save(hs, ents);
        if (torn) {
          seen.torn++;
          s.close();
          const segs = await segFiles(dir);
          const path = `${dir}/${segs.at(-1)}`;
          const size = (await Deno.stat(path)).size;
          const base = segs.at(-1) === segs0.at(-1) ? size0 : 0;
          await Deno.truncate(path, base + Math.floor(r() * (size - base)));
          s = await FileStorage.open(dir, { segmentBytes: 300 });
          const got = view(s);
          // Either nothing of the save survived, or its entries without the hard state.
          const keep = model.ents.slice(0, from - model.snap - 1);
          const withEnts = [...keep, ...ents.map((e) => `${e.index}@${e.term}`)];
          const pre = JSON.stringify({ ...model });
          const mid = JSON.stringify({ ...model, ents: withEnts });
          assert.ok(
            [pre, mid].includes(JSON.stringify(got)),
            `step ${step}: ${JSON.stringify(got)} not in\n${pre}\n${mid}`,
          );
          model.ents = got.ents;
          term = Math.max(term, got.hs.term);
          continue;
        }
        model.ents = [
          ...model.ents.slice(0, from - model.snap - 1),
          ...ents.map((e) => `${e.index}@${e.term}`),
        ];
        model.hs = hs;
      } else if (x < 0.75 && model.hs.commit > model.snap) {
        const idx = model.snap + 1 + Math.floor(r() * (model.hs.commit - model.snap));
        const t = Number(model.ents[idx - model.snap - 1].split("@")[1]);
        await s.compact({
          index: idx,
          term: t,
          conf: { voters: ["n1"] },
          data: te.encode(`s${idx}`),
        });
        model.ents = model.ents.slice(idx - model.snap);
        model.snap = idx;
        seen.compact++;
      } else {
        s.close();
        s = await FileStorage.open(dir, { segmentBytes: 300 });
        seen.reopen++;
      }
      assert.deepEqual(view(s), model, `step ${step}`);
    }
    s.close();
    for (const [k, v] of Object.entries(seen)) assert.ok(v >= 10, `only ${v} ${k}`);
    const fin = await FileStorage.open(dir, { segmentBytes: 300 });
    assert.deepEqual(view(fin), model);
    fin.close();
  }));

Deno.test("storage: a crash before old segments are deleted (all or some) replays cleanly", () =>
  withDir(async (dir) => {
    const s = await FileStorage.open(dir, { segmentBytes: 200 });
    for (let i = 1; i <= 20; i++) await s.save({ term: 1, vote: null, commit: i }, [ent(i, 1)]);
    const olds = await segFiles(dir);
    assert.ok(olds.length >= 3);
    const saved = await Promise.all(olds.map((f) => Deno.readFile(`${dir}/${f}`)));
    await s.compact({ index: 15, term: 1, conf: { voters: ["n1"] }, data: te.encode("S") });
    s.close();
    const want = [16, 17, 18, 19, 20];
    // All old segments still there (crash right after the rewrite was renamed in) ...
    for (let i = 0; i < olds.length; i++) await Deno.writeFile(`${dir}/${olds[i]}`, saved[i]);
    let r = await FileStorage.open(dir);
    assert.deepEqual(r.initialState().entries.map((e) => e.index), want);
    r.close();
    // ... or only the oldest ones (deletion goes newest first).
    for (const f of olds.slice(1)) await Deno.remove(`${dir}/${f}`).catch(() => {});
    await Deno.writeFile(`${dir}/${olds[0]}`, saved[0]);
    r = await FileStorage.open(dir);
    assert.deepEqual(r.initialState().entries.map((e) => e.index), want);
    assert.equal(r.snapshot()?.index, 15);
    r.close();
  }));
