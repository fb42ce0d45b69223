/**
 * The masters' durable Raft storage (FileStorage) on the simulated disk (tests/sim/world/
 * sim_fs.ts) under crashes and storage faults, many seeds per run, against its durability
 * contract:
 *
 * - after a crash between operations, start-up recovers exactly what every resolved save,
 *   compaction and snapshot install left (entries with their bytes, hard state, snapshot);
 * - after a crash inside one (or a failed fsync in it), it recovers one of the states that
 *   operation passes through (before, after, or a documented intermediate), never anything else;
 *   torn tails are cut, and an honestly crashed disk never fails start-up;
 * - an fsync error surfaces as RaftStorageError, and the storage then refuses every later call
 *   (a later fsync would succeed without the lost pages: "fsyncgate");
 * - a bit flipped in a synced record is a RaftStorageError at start-up, except in the last
 *   record of the newest segment, which no checksum can tell from a torn write (counted);
 * - nothing but RaftStorageError ever escapes.
 *
 * Planted bugs (StorageOptions.plantedBug) show what the checker catches. A failure prints the
 * seed and the disk's fault log: `SEED=<n> deno test -A tests/raft_storage_faults_test.ts`
 * replays one seed.
 */
import assert from "node:assert/strict";
import {
  FileStorage,
  type PlantedStorageBug,
  RaftStorageError,
} from "../roles/master/raft/storage.ts";
import { type Entry, type HardState, mulberry32, type Snapshot } from "../roles/master/raft/mod.ts";
import { SimFs } from "./sim/world/sim_fs.ts";
import { RaftGroup, type StateMachine } from "../roles/master/raft_group.ts";
import { createLogger } from "../lib/log.ts";
import { randomUuid } from "../wire/mod.ts";
import { waitFor } from "./wait.ts";
import { crc32 } from "../lib/crc32.ts";

const DIR = "/m1/raft";
const te = new TextEncoder();
const td = new TextDecoder();

// ---------------------------------------------------------------- the model

/** A storage state as recovery reports it. */
interface St {
  hs: HardState;
  snap: Snapshot | null;
  ents: Entry[];
}

const baseOf = (s: St) => ({ index: s.snap?.index ?? 0, term: s.snap?.term ?? 0 });
const lastIndex = (s: St) => baseOf(s).index + s.ents.length;

function termAt(s: St, index: number): number | undefined {
  const b = baseOf(s);
  if (index === b.index) return b.term;
  return s.ents[index - b.index - 1]?.term;
}

/** Canonical text of a state, to compare (entry bytes included). */
function key(s: St): string {
  return JSON.stringify({
    hs: s.hs,
    snap: s.snap &&
      { i: s.snap.index, t: s.snap.term, v: s.snap.conf.voters, d: td.decode(s.snap.data) },
    ents: s.ents.map((e) =>
      `${e.index}@${e.term}${e.type === "conf" ? "c" : ""}:${td.decode(e.data)}`
    ),
  });
}

function fromStorage(st: FileStorage): St {
  const p = st.initialState();
  return { hs: p.hardState, snap: p.snapshot, ents: p.entries };
}

function withEntries(s: St, ents: Entry[]): St {
  const keep = s.ents.filter((e) => e.index < ents[0].index);
  return { ...s, ents: [...keep, ...ents] };
}

/** What recovery makes of a new snapshot file on top of an older log (storage.ts recover()). */
function snapOverLog(s: St, snap: Snapshot): St {
  const tail = termAt(s, snap.index) === snap.term
    ? s.ents.filter((e) => e.index > snap.index)
    : [];
  let hs = { ...s.hs };
  if (hs.commit < snap.index) hs.commit = snap.index;
  if (hs.term < snap.term) hs = { term: snap.term, vote: null, commit: hs.commit };
  return { hs, snap, ents: tail };
}

/** Every state a save may leave on disk if it does not complete, first "before", last "after". */
function saveStates(s: St, hs: HardState | null, ents: Entry[], snap: Snapshot | null): St[] {
  const out: St[] = [s];
  let cur = s;
  if (snap) {
    out.push(snapOverLog(s, snap)); // snapshot.bin renamed in, log not yet rewritten
    cur = { hs: hs ?? s.hs, snap, ents: [] }; // log rewritten: base marker + hard state
    out.push(cur);
  }
  if (ents.length) {
    cur = withEntries(cur, ents);
    out.push(cur); // entries record without the hard state record after it
  }
  if (hs) {
    cur = { ...cur, hs: { ...hs } };
    out.push(cur);
  }
  return out;
}

function compactStates(s: St, snap: Snapshot): St[] {
  if (s.snap && snap.index <= s.snap.index) return [s];
  const tail = termAt(s, snap.index) === snap.term
    ? s.ents.filter((e) => e.index > snap.index)
    : [];
  return [s, { hs: s.hs, snap, ents: tail }];
}

// ---------------------------------------------------------------- one seed

/** A broken contract (as opposed to a bug in this test). */
class Violation extends Error {}

/** What kinds of things happened in a run (summed over seeds). */
interface Counts {
  ops: number;
  saves: number;
  compactions: number;
  installs: number;
  reopens: number;
  crashesBetween: number;
  crashesInside: number;
  crashesInRecovery: number;
  syncErrors: number;
  refusedAfterError: number;
  tornTailsCut: number;
  flips: number;
  flipsDetected: number;
  flipsInTail: number;
  flipsHarmless: number;
  faultsLogged: number;
}

const zeroCounts = (): Counts => ({
  ops: 0,
  saves: 0,
  compactions: 0,
  installs: 0,
  reopens: 0,
  crashesBetween: 0,
  crashesInside: 0,
  crashesInRecovery: 0,
  syncErrors: 0,
  refusedAfterError: 0,
  tornTailsCut: 0,
  flips: 0,
  flipsDetected: 0,
  flipsInTail: 0,
  flipsHarmless: 0,
  faultsLogged: 0,
});

/** Where the frames of a segment file start (u32 length | u32 CRC | payload); null: not whole frames. */
function frameStarts(b: Uint8Array): number[] | null {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: number[] = [];
  let pos = 0;
  while (pos + 8 <= b.length) {
    const len = v.getUint32(pos);
    if (len === 0 || pos + 8 + len > b.length) break;
    if (crc32(b.subarray(pos + 8, pos + 8 + len)) !== v.getUint32(pos + 4)) break;
    out.push(pos);
    pos += 8 + len;
  }
  return pos === b.length ? out : null;
}

/**
 * Runs one seed: a random sequence of saves, overwrites, compactions, snapshot installs,
 * reopens, crashes (between and inside operations) and failed fsyncs, maybe a bit flip at the
 * end. Returns nothing, or throws a Violation naming the step.
 */
async function runSeed(seed: number, c: Counts, bug?: PlantedStorageBug): Promise<void> {
  const r = mulberry32(seed * 2654435761 + 1);
  const pick = (n: number) => Math.floor(r() * n);
  let crashAt = 0; // crash the disk just before its operation number crashAt (0: off)
  const disk: SimFs = new SimFs(seed, {
    // A third of the seeds have failing fsyncs (of files, of directories, or both).
    faults: {
      syncError: seed % 3 === 0 ? 0.03 : 0,
      dirSyncError: seed % 6 === 0 || seed % 6 === 3 ? 0.03 : 0,
    },
    latency: () => {
      if (crashAt !== 0 && disk.ops + 1 === crashAt) {
        crashAt = 0;
        disk.crash();
      }
      return Promise.resolve();
    },
  });
  const segmentBytes = [120, 300, 1 << 20][pick(3)];
  const opts = { fs: disk.mount(), segmentBytes, plantedBug: bug };
  let step = -1;
  const fail = (why: string): never => {
    const log = disk.log.slice(-12).map((f) => `  #${f.op} ${f.kind} ${f.path}: ${f.detail}`);
    throw new Violation(
      `seed ${seed} step ${step}: ${why}\nlast faults of ${disk.log.length}:\n${log.join("\n")}`,
    );
  };
  try {
    await workload();
  } finally {
    c.faultsLogged += disk.log.length;
  }
  async function workload(): Promise<void> {
    /**
     * Opens after a crash, sometimes crashing again during recovery; a failed fsync during
     * recovery is another crash and restart (as a supervisor restarts a master).
     */
    const open = async (): Promise<FileStorage> => {
      for (let attempt = 0; attempt < 20; attempt++) {
        opts.fs = disk.mount();
        const gen = disk.generation;
        if (r() < 0.1) crashAt = disk.ops + 1 + pick(6);
        try {
          const s = await FileStorage.open(DIR, opts);
          crashAt = 0;
          if (s.recovery.truncatedBytes > 0) c.tornTailsCut++;
          return s;
        } catch (e) {
          crashAt = 0;
          if (!(e instanceof RaftStorageError)) fail(`open threw ${e} (not a RaftStorageError)`);
          if (disk.generation !== gen) {
            c.crashesInRecovery++;
            continue;
          }
          if (!String(e).includes("EIO")) fail(`open of an honestly crashed disk failed: ${e}`);
          c.syncErrors++;
          disk.crash();
        }
      }
      return fail("no successful open in 20 attempts");
    };
    const expectOneOf = (got: St, states: St[], what: string): void => {
      const k = key(got);
      if (!states.some((s) => key(s) === k)) {
        fail(`${what}: recovered\n  ${k}\nnot one of\n  ${states.map(key).join("\n  ")}`);
      }
    };

    let st = await open();
    let model = fromStorage(st);
    if (key(model) !== key({ hs: { term: 0, vote: null, commit: 0 }, snap: null, ents: [] })) {
      fail(`a fresh directory recovered ${key(model)}`);
    }
    let term = 1;
    const steps = 20 + pick(30);
    for (step = 0; step < steps; step++) {
      const x = r();
      const last = lastIndex(model);
      const base = baseOf(model);
      let states: St[] = [];
      let run: () => Promise<void> = () => Promise.resolve();
      let kind: "save" | "compact" | "install" | "reopen" | "crash";
      if (x < 0.58) {
        kind = "save";
        // Append, or overwrite an uncommitted suffix under a newer term (a new leader's log).
        const lo = Math.max(model.hs.commit, base.index) + 1;
        const from = r() < 0.25 && last >= lo ? lo + pick(last - lo + 1) : last + 1;
        if (from <= last || r() < 0.1) term++;
        const n = r() < 0.15 ? 0 : 1 + pick(4);
        const ents: Entry[] = [];
        for (let i = 0; i < n; i++) {
          const size = r() < 0.05 ? 200 + pick(400) : pick(24);
          ents.push({
            index: from + i,
            term,
            type: r() < 0.05 ? "conf" : "normal",
            data: te.encode(`${seed}.${step}.${i}:${"x".repeat(size)}`),
          });
        }
        const top = n ? from + n - 1 : last;
        const commit = Math.min(top, model.hs.commit + pick(4));
        const hs: HardState | null = n && r() < 0.2
          ? null
          : { term, vote: r() < 0.5 ? "m2" : null, commit: Math.max(model.hs.commit, commit) };
        if (!hs && !n) continue;
        states = saveStates(model, hs, ents, null);
        run = () => st.save(hs, ents);
        c.saves++;
      } else if (x < 0.68 && model.hs.commit > base.index) {
        kind = "compact";
        const index = base.index + 1 + pick(model.hs.commit - base.index);
        const snap: Snapshot = {
          index,
          term: termAt(model, index)!,
          conf: { voters: ["m1", "m2", "m3"] },
          data: te.encode(`sm@${index}#${seed}`),
        };
        states = compactStates(model, snap);
        run = () => st.compact(snap);
        c.compactions++;
      } else if (x < 0.75) {
        kind = "install";
        // A leader's snapshot past (or conflicting with) this log, then maybe entries after it.
        term++;
        const index = Math.max(model.hs.commit, base.index) + 1 + pick(5);
        const snap: Snapshot = {
          index,
          term: r() < 0.5 && termAt(model, index) !== undefined ? termAt(model, index)! : term,
          conf: { voters: ["m1", "m2"] },
          data: te.encode(`installed@${index}#${seed}.${step}`),
        };
        const n = pick(3);
        const ents: Entry[] = [];
        for (let i = 1; i <= n; i++) {
          ents.push({ index: index + i, term, type: "normal", data: te.encode(`after-snap ${i}`) });
        }
        const hs: HardState = { term, vote: null, commit: index };
        states = saveStates(model, hs, ents, snap);
        run = () => st.save(hs, ents, snap);
        c.installs++;
      } else if (x < 0.85) {
        kind = "reopen";
      } else {
        kind = "crash";
      }

      if (kind === "reopen" || kind === "crash") {
        st.close();
        if (kind === "crash") {
          disk.crash();
          c.crashesBetween++;
        } else c.reopens++;
        st = await open();
        const got = fromStorage(st);
        if (TRACE) console.log(`step ${step} ${kind} at op ${disk.ops}`);
        if (key(got) !== key(model)) {
          fail(
            `${kind} lost or changed acknowledged state:\n  got  ${key(got)}\n  want ${key(model)}`,
          );
        }
        continue;
      }

      c.ops++;
      const gen = disk.generation;
      if (r() < 0.15) crashAt = disk.ops + 1 + pick(8);
      if (TRACE) {
        console.log(
          `step ${step} ${kind} at op ${disk.ops}${crashAt ? `, crash at ${crashAt}` : ""}`,
        );
        console.log(`  -> ${key(states.at(-1)!)}`);
      }
      let error: unknown = null;
      try {
        await run();
      } catch (e) {
        error = e;
      }
      crashAt = 0;
      if (error === null) {
        model = states.at(-1)!;
        const view = fromStorage(st);
        if (key(view) !== key(model)) {
          fail(`in memory after ${kind}: ${key(view)} != ${key(model)}`);
        }
        continue;
      }
      if (TRACE) console.log(`  failed: ${error}`);
      if (!(error instanceof RaftStorageError)) {
        fail(`${kind} threw ${error} (not a RaftStorageError)`);
      }
      if (disk.generation !== gen) c.crashesInside++;
      else {
        // An fsync failed (the disk did not crash): the storage must refuse from now on, or a
        // later save could be acknowledged on top of pages the failed fsync lost.
        if (!String(error).includes("EIO")) fail(`${kind} failed without a crash or EIO: ${error}`);
        c.syncErrors++;
        const again = await st.save({ ...model.hs }, []).then(() => null, (e) => e);
        if (!(again instanceof RaftStorageError)) {
          fail(`a save after a failed ${kind} was ${again ? `refused with ${again}` : "accepted"}`);
        }
        c.refusedAfterError++;
        disk.crash();
      }
      st.close();
      st = await open();
      const got = fromStorage(st);
      expectOneOf(got, states, `${kind} interrupted (${error})`);
      model = got;
      term = Math.max(term, got.hs.term);
    }

    // Maybe a bit flip in a synced record, then a restart.
    if (r() < 0.4) {
      st.close();
      const names = disk.durableNames(DIR).filter((n) =>
        n.startsWith("wal-") || n === "snapshot.bin"
      );
      const segs = names.filter((n) => n.startsWith("wal-") && !n.endsWith(".tmp")).sort();
      const candidates = names.filter((n) => disk.durableBytes(`${DIR}/${n}`).length > 0);
      if (candidates.length === 0) return;
      const name = candidates[pick(candidates.length)];
      const bytes = disk.durableBytes(`${DIR}/${name}`);
      // The last frame of the newest segment: a flip there looks exactly like a torn write.
      let tailFrom = Infinity;
      if (name === segs.at(-1)) {
        const starts = frameStarts(bytes);
        if (!starts) fail(`the newest segment ${name} holds a partial frame at a quiet moment`);
        tailFrom = starts!.at(-1) ?? 0;
      }
      const { offset } = disk.flipBit(`${DIR}/${name}`);
      disk.crash();
      c.flips++;
      opts.fs = disk.mount();
      let reopened: FileStorage | null = null;
      try {
        reopened = await FileStorage.open(DIR, opts);
      } catch (e) {
        if (!(e instanceof RaftStorageError)) fail(`a bit flip in ${name} threw ${e}`);
        c.flipsDetected++;
        return;
      }
      const got = fromStorage(reopened);
      reopened.close();
      if (offset >= tailFrom) {
        if (reopened.recovery.truncatedBytes !== bytes.length - tailFrom) {
          fail(`a flip in the tail record of ${name} was not cut as a torn tail`);
        }
        c.flipsInTail++;
        return;
      }
      if (key(got) === key(model) && name.endsWith(".tmp")) {
        c.flipsHarmless++;
        return;
      }
      fail(`a bit flip in ${name} at ${offset} was accepted silently: ${key(got)}`);
    }
    st.close();
  }
}

async function runSeeds(
  from: number,
  n: number,
  bug?: PlantedStorageBug,
): Promise<{ caught: number; first: string | null; counts: Counts }> {
  const counts = zeroCounts();
  let caught = 0;
  let first: string | null = null;
  for (let seed = from; seed < from + n; seed++) {
    try {
      await runSeed(seed, counts, bug);
    } catch (e) {
      if (!(e instanceof Violation)) throw e;
      caught++;
      first ??= e.message;
    }
  }
  return { caught, first, counts };
}

const TRACE = Deno.env.get("TRACE") !== undefined;
const SEEDS = Number(Deno.env.get("SEEDS") ?? 800);
const ONE = Deno.env.get("SEED");

Deno.test(`raft storage faults: ${ONE ? `seed ${ONE}` : `${SEEDS} seeds`} keep the durability contract`, async () => {
  if (ONE) {
    const c = zeroCounts();
    await runSeed(Number(ONE), c);
    console.log(JSON.stringify(c));
    return;
  }
  const res = await runSeeds(1, SEEDS);
  console.log(`${SEEDS} seeds: ${JSON.stringify(res.counts)}`);
  assert.equal(res.caught, 0, `${res.caught} seeds broke the contract; first: ${res.first}`);
  const c = res.counts;
  // The run exercised what it claims to (a few seeds of each, at least).
  for (const k of Object.keys(c) as (keyof Counts)[]) {
    if (k === "flipsHarmless" || k === "faultsLogged") continue;
    assert.ok(c[k] >= 10, `only ${c[k]} ${k} in ${SEEDS} seeds`);
  }
});

const BUGS = ["ack-before-fsync", "no-dir-fsync-after-rename", "trust-corrupt-tail"] as const;
for (const bug of ONE ? [] : BUGS) {
  Deno.test(`raft storage faults: the planted bug ${bug} is caught`, async () => {
    const n = 200;
    const res = await runSeeds(1, n, bug);
    console.log(
      `${bug}: caught by ${res.caught} of ${n} seeds; first: ${res.first?.split("\n")[0]}`,
    );
    assert.ok(res.caught > 0, `${bug} went unnoticed in ${n} seeds`);
  });
}

/** A state machine that records what it applied. */
function recorder(applied: string[]): StateMachine {
  return {
    apply(data) {
      applied.push(td.decode(data));
      return { kind: "reported", accepted: true, jobDone: false };
    },
    snapshot: () => te.encode(JSON.stringify(applied)),
    restore(data) {
      applied.splice(0, applied.length, ...JSON.parse(td.decode(data)));
    },
  };
}

Deno.test("raft storage faults: a failed fsync stops a RaftGroup member; what it acknowledged survives", async () => {
  const disk = new SimFs(5);
  const id = "m1@tcp://127.0.0.1:1"; // a lone member: it never dials anyone
  const fatal: { e: unknown; kind: string }[] = [];
  const logs: string[] = [];
  const applied: string[] = [];
  const g = RaftGroup.start({
    id,
    peers: [id],
    join: false,
    storage: await FileStorage.open(DIR, { fs: disk.mount() }),
    sm: recorder(applied),
    node: randomUuid(),
    log: createLogger("master", "m1", {}, (l) => logs.push(l)),
    tickMs: 5,
    onFatal: (e, kind) => fatal.push({ e, kind }),
  });
  try {
    await waitFor("the lone member to lead", () => g.isLeader());
    await g.propose(te.encode("durable"));
    disk.failSync(1, (p) => p.includes("/wal-"));
    await g.propose(te.encode("not acknowledged")).then(
      () => assert.fail("a proposal was acknowledged although its fsync failed"),
      () => {},
    );
    await waitFor("onFatal", () => fatal.length > 0);
    assert.equal(fatal.length, 1);
    assert.equal(fatal[0].kind, "storage");
    assert.ok(fatal[0].e instanceof RaftStorageError && /EIO/.test(String(fatal[0].e)));
    assert.ok(logs.some((l) => l.includes("raft storage failed")));
    assert.ok(disk.log.some((f) => f.kind === "sync-eio"));
  } finally {
    await g.close();
  }
  disk.crash();
  const st = await FileStorage.open(DIR, { fs: disk.mount() });
  const data = st.initialState().entries.map((e) => td.decode(e.data));
  assert.ok(data.includes("durable"), JSON.stringify(data));
  st.close();
});
