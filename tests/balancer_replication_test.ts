import assert from "node:assert/strict";
import { ChunkScheduler } from "../roles/balancer/chunk_scheduler.ts";
import {
  applyEvent,
  decodeSyncBody,
  encodeSyncBody,
  EventLog,
  type SchedulerEvent,
} from "../roles/balancer/replication.ts";
import { ChunkState, randomUuid, type Uuid, uuidToHex } from "../wire/mod.ts";

/** Small deterministic PRNG (mulberry32), so a failure reproduces. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** State as canonical bytes, to compare two schedulers. */
function canon(s: ChunkScheduler): string {
  return new TextDecoder().decode(encodeSyncBody({ snapshot: s.exportState(), events: [] }));
}

Deno.test("replication: snapshot + replayed events reproduce the primary exactly", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const r = rng(seed);
    const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
    const primary = new ChunkScheduler({
      deadAfterMs: 500,
      refuseBackoffMs: 50,
      rerunFinishedAfterMs: 5000,
      idleGraceMs: 300,
    });
    const log = new EventLog({ maxEvents: 100_000 });
    const files: Uuid[] = Array.from({ length: 6 }, () => randomUuid());
    const workers: Uuid[] = [];
    const jobIds = new Map<string, Uuid>();
    let now = 1000;
    const run = (ev: SchedulerEvent) => {
      const res = applyEvent(primary, ev);
      log.append(ev, now);
      return res;
    };
    // The standby joins after some history: it starts from a snapshot.
    let standby: ChunkScheduler | null = null;
    let seq = 0;
    log.since(0, 0, now); // a follower exists from the start, so events are kept
    for (let step = 0; step < 3000; step++) {
      now += Math.floor(r() * 20);
      const x = r();
      if (x < 0.05 || workers.length === 0) {
        const id = workers.length < 6 && r() < 0.7 ? randomUuid() : pick(workers);
        if (!workers.includes(id)) workers.push(id);
        const slots = 1 + Math.floor(r() * 4);
        run({
          t: "register",
          now,
          id,
          slots,
          free: Math.floor(r() * (slots + 1)),
          files: files.filter(() => r() < 0.3),
          label: "w",
        });
      } else if (x < 0.12) {
        const n = 1 + Math.floor(r() * 30);
        const job = randomUuid();
        jobIds.set(uuidToHex(job), job);
        run({
          t: "dispatch",
          now,
          info: {
            job,
            numChunks: n,
            timeLimitMs: 0,
            programId: files[0],
            programSize: 3,
            argument: new Uint8Array(0),
            inputFiles: files.filter(() => r() < 0.3).map((id, i) => ({
              id,
              size: 1 + Math.floor(r() * 1e6),
              name: `f${i}`,
            })),
          },
          chunks: Array.from({ length: n }, (_, i) => ({ chunkIndex: i, attempt: 1 })),
        });
      } else if (x < 0.45) {
        const id = pick(workers);
        if (primary.worker(id)) {
          run({
            t: "heartbeat",
            now,
            id,
            slots: primary.worker(id)!.slots,
            free: 0,
            added: files.filter(() => r() < 0.1),
            evicted: files.filter(() => r() < 0.1),
          });
        }
      } else if (x < 0.6) {
        run({ t: "assign", now });
      } else if (x < 0.64) {
        run({ t: "reap", now });
      } else if (x < 0.65) {
        run(r() < 0.5 ? { t: "prune", now } : { t: "touchAll", now });
      } else {
        // Some outcome for a running chunk.
        const busy = primary.workers().filter((w) => w.running.size > 0);
        const w = busy.length > 0 ? pick(busy) : null;
        if (w) {
          const t = pick([...w.running.values()]);
          const job = jobIds.get(t.jobKey)!;
          const base = { now, worker: w.id, job, chunk: t.chunkIndex, attempt: t.attempt };
          const y = r();
          if (y < 0.8) run({ t: "finished", ...base, state: ChunkState.Succeeded });
          else if (y < 0.9) run({ t: "refused", ...base });
          else run({ t: "unconfirmed", ...base });
        }
      }
      if (step === 700) {
        // Snapshot: a fresh scheduler importing the exported state (through the codec).
        const snap = decodeSyncBody(
          encodeSyncBody({ snapshot: primary.exportState(), events: [] }),
        );
        standby = new ChunkScheduler({ deadAfterMs: 1, refuseBackoffMs: 1 });
        standby.importState(snap.snapshot!);
        seq = log.lastSeq;
        assert.equal(canon(standby), canon(primary));
      }
      if (standby && step % 97 === 0) {
        // Pull in small batches, through the codec.
        const evs = log.since(seq, 4096, now)!;
        const decoded = decodeSyncBody(encodeSyncBody({ events: evs }));
        for (const ev of decoded.events) applyEvent(standby, ev);
        seq += decoded.events.length;
      }
    }
    const rest = log.since(seq, Infinity, now)!;
    const last = decodeSyncBody(encodeSyncBody({ events: rest }));
    for (const ev of last.events) applyEvent(standby!, ev);
    assert.equal(canon(standby!), canon(primary), `seed ${seed}: states differ`);
    // And they keep deciding the same.
    const a = primary.assign(now + 1).map((x) => [x.worker.key, x.chunkIndex, x.attempt]);
    const b = standby!.assign(now + 1).map((x) => [x.worker.key, x.chunkIndex, x.attempt]);
    assert.deepEqual(b, a);
    assert.ok(primary.stats().finished > 0, "the random run finished some chunks");
  }
});

Deno.test("replication: event log drops history without followers and when over budget", () => {
  const log = new EventLog({ maxEvents: 10, followerTtlMs: 1000 });
  const ev: SchedulerEvent = { t: "assign", now: 0 };
  for (let i = 0; i < 5; i++) log.append(ev, 0);
  // Nobody followed yet: nothing kept, a follower must snapshot.
  assert.equal(log.lastSeq, 5);
  assert.equal(log.since(0, 1e9, 0), null);
  for (let i = 0; i < 5; i++) log.append(ev, 1);
  assert.equal(log.since(5, 1e9, 2)?.length, 5);
  for (let i = 0; i < 20; i++) log.append(ev, 3);
  assert.equal(log.since(5, 1e9, 4), null, "over maxEvents: old events gone");
  assert.equal(log.since(20, 1e9, 4)?.length, 10);
  assert.equal(log.since(31, 1e9, 4), null, "a position from the future (other epoch)");
  // Follower silent for longer than the TTL: history is dropped again.
  log.append(ev, 5000);
  assert.equal(log.since(30, 1e9, 5000), null);
});
