import assert from "node:assert/strict";
import {
  type Assignment,
  ChunkScheduler,
  Deque,
  freeOf,
  type JobInfo,
  LOCALITY_SCAN,
  MAX_HEARTBEAT_MS,
  type WorkerInfo,
} from "../roles/balancer/chunk_scheduler.ts";
import { ChunkState, randomUuid, type Uuid, uuidToHex } from "../wire/mod.ts";

const MB = 1024 * 1024;

function job(numChunks: number, inputs: { id: Uuid; size: number }[] = []): JobInfo {
  return {
    job: randomUuid(),
    numChunks,
    timeLimitMs: 0,
    programId: randomUuid(),
    programSize: 10,
    argument: new Uint8Array(0),
    inputFiles: inputs.map((f, i) => ({ id: f.id, size: f.size, name: `in${i}` })),
  };
}

function all(n: number, attempt = 1) {
  return Array.from({ length: n }, (_, i) => ({ chunkIndex: i, attempt }));
}

function byWorker(as: Assignment[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const a of as) m.set(a.worker.key, (m.get(a.worker.key) ?? 0) + 1);
  return m;
}

Deno.test("scheduler: locality prefers the worker holding the most input bytes", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1000 });
  const big = randomUuid();
  const small = randomUuid();
  const [a, b, c] = [randomUuid(), randomUuid(), randomUuid()];
  s.register(a, 4, 4, [small], "a", 0);
  s.register(b, 4, 4, [big], "b", 0);
  s.register(c, 8, 8, [], "c", 0);
  const j = job(3, [{ id: big, size: 100 * MB }, { id: small, size: 1 * MB }]);
  s.dispatch(j, all(3), 0);
  const out = s.assign(1);
  assert.equal(out.length, 3);
  // b holds 100 MB of the inputs, a only 1 MB, c none although it has the most free slots.
  for (const x of out) assert.equal(x.worker.key, uuidToHex(b));

  // A job without input files: ties on bytes go to the most free slots (c: 8 free).
  const j2 = job(1);
  s.dispatch(j2, all(1), 2);
  const out2 = s.assign(3);
  assert.equal(out2.length, 1);
  assert.equal(out2[0].worker.key, uuidToHex(c));

  // Heartbeat deltas move locality: b evicts big, a adds it.
  s.heartbeat(b, 4, 1, [], [big], 4);
  s.heartbeat(a, 4, 4, [big], [], 4);
  const j3 = job(1, [{ id: big, size: 100 * MB }]);
  s.dispatch(j3, all(1), 5);
  const out3 = s.assign(6);
  assert.equal(out3[0].worker.key, uuidToHex(a));
});

Deno.test("scheduler: assigned inputs count as held; ties round-robin", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1000 });
  const f = randomUuid();
  const ws = [randomUuid(), randomUuid(), randomUuid()];
  for (const w of ws) s.register(w, 2, 2, [], "", 0);
  // Chunk 0 goes somewhere; from then on that worker holds f and wins until it is full.
  const j = job(2, [{ id: f, size: 10 }]);
  s.dispatch(j, all(2), 0);
  const out = s.assign(1);
  assert.equal(out.length, 2);
  assert.equal(out[0].worker.key, out[1].worker.key);
  // No-input jobs with equal free slots rotate over the other workers.
  const s2 = new ChunkScheduler({ deadAfterMs: 1000 });
  for (const w of ws) s2.register(w, 1, 1, [], "", 0);
  s2.dispatch(job(3), all(3), 0);
  const keys = s2.assign(1).map((x) => x.worker.key);
  assert.equal(new Set(keys).size, 3);
});

Deno.test("scheduler: never exceeds a worker's slots", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1000 });
  const f = randomUuid();
  const a = randomUuid();
  const b = randomUuid();
  s.register(a, 3, 3, [f], "", 0);
  s.register(b, 2, 2, [], "", 0);
  const j = job(20, [{ id: f, size: 1000 }]);
  s.dispatch(j, all(20), 0);
  const out = s.assign(1);
  assert.equal(out.length, 5);
  const m = byWorker(out);
  assert.equal(m.get(uuidToHex(a)), 3);
  assert.equal(m.get(uuidToHex(b)), 2);
  assert.equal(s.assign(2).length, 0);
  assert.equal(s.stats().queued, 15);
  // A finished chunk frees exactly one slot.
  const first = out[0];
  assert.ok(
    s.finished(first.worker.id, j.job, first.chunkIndex, first.attempt, ChunkState.Succeeded, 3),
  );
  const again = s.assign(4);
  assert.equal(again.length, 1);
  assert.equal(again[0].worker.key, first.worker.key);
});

Deno.test("scheduler: round-robin across jobs, a giant job does not starve a small one", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1000 });
  const w = randomUuid();
  s.register(w, 2, 2, [], "", 0);
  const giant = job(1000);
  const small = job(3);
  s.dispatch(giant, all(1000), 0);
  s.dispatch(small, all(3), 1);
  const ran: string[] = [];
  let now = 2;
  // Run to completion of the small job, 2 slots at a time.
  for (let round = 0; round < 10; round++) {
    for (const a of s.assign(now++)) {
      ran.push(uuidToHex(a.job.job) === uuidToHex(small.job) ? "S" : "G");
      s.finished(w, a.job.job, a.chunkIndex, a.attempt, ChunkState.Succeeded, now++);
    }
  }
  const smallDoneAt = ran.lastIndexOf("S");
  // The small job's 3 chunks interleave with the giant's: all done within the first 6 runs.
  assert.equal(ran.filter((x) => x === "S").length, 3);
  assert.ok(smallDoneAt < 6, `small job finished late: ${ran.join("")}`);
});

Deno.test("scheduler: dead worker's chunks requeue with attempt+1; late finish ignored", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1000 });
  const a = randomUuid();
  const b = randomUuid();
  const f = randomUuid();
  s.register(a, 2, 2, [f], "", 0);
  const j = job(2, [{ id: f, size: 5 }]);
  s.dispatch(j, all(2, 1), 0);
  const out = s.assign(10);
  assert.equal(out.length, 2);
  s.register(b, 2, 2, [], "", 500);
  // a goes silent; b heartbeats.
  s.heartbeat(b, 2, 2, [], [], 1200);
  assert.equal(s.reapDead(900).length, 0);
  const dead = s.reapDead(1000);
  assert.equal(dead.length, 1);
  assert.equal(dead[0].worker.key, uuidToHex(a));
  assert.deepEqual(dead[0].requeued.map((r) => r.attempt), [2, 2]);
  const re = s.assign(1001);
  assert.equal(re.length, 2);
  for (const x of re) {
    assert.equal(x.worker.key, uuidToHex(b));
    assert.equal(x.attempt, 2);
  }
  // The old attempt's chunk_finished (from a, attempt 1) is stale.
  assert.equal(s.finished(a, j.job, 0, 1, ChunkState.Succeeded, 1002), false);
  assert.equal(s.finished(b, j.job, 0, 1, ChunkState.Succeeded, 1002), false);
  assert.equal(s.finished(b, j.job, 0, 2, ChunkState.Succeeded, 1002), true);
  assert.equal(s.chunkState(j.job, 0).state, "finished");
  assert.equal(s.chunkState(j.job, 1).state, "running");
  // The dead worker must re-register: heartbeats are refused.
  assert.throws(() => s.heartbeat(a, 2, 2, [], [], 1003), /not registered/);
});

Deno.test("scheduler: re-dispatch of queued/running/finished chunks is ignored", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1000, rerunFinishedAfterMs: 10_000 });
  const w = randomUuid();
  s.register(w, 1, 1, [], "", 0);
  const j = job(3);
  assert.deepEqual(s.dispatch(j, all(3), 0), { queued: 3, ignored: 0 });
  const [a] = s.assign(1);
  s.finished(w, j.job, a.chunkIndex, a.attempt, ChunkState.Failed, 2);
  const [b] = s.assign(3);
  // Now: one finished, one running, one queued — the master re-sends all three.
  assert.deepEqual(s.dispatch(j, all(3), 4), { queued: 0, ignored: 3 });
  assert.equal(s.stats().queued, 1);
  assert.equal(s.stats().running, 1);
  s.finished(w, j.job, b.chunkIndex, b.attempt, ChunkState.Succeeded, 5);
  const [c] = s.assign(6);
  s.finished(w, j.job, c.chunkIndex, c.attempt, ChunkState.Succeeded, 7);
  assert.deepEqual(s.dispatch(j, all(3), 8), { queued: 0, ignored: 3 });
  assert.equal(s.assign(9).length, 0);
  s.heartbeat(w, 1, 1, [], [], 19_999);
  // Long after: the master still asks, so its result was lost; the chunk runs again.
  assert.deepEqual(s.dispatch(j, [{ chunkIndex: 0, attempt: 1 }], 20_000), {
    queued: 1,
    ignored: 0,
  });
  const [d] = s.assign(20_001);
  assert.equal(d.chunkIndex, 0);
  assert.equal(d.attempt, 2);
  // Invalid dispatches are errors with the job id in the text.
  assert.throws(() => s.dispatch(j, [{ chunkIndex: 3, attempt: 1 }], 0), /chunk 3 >= num_chunks/);
});

Deno.test("scheduler: a refused chunk goes to another worker", () => {
  const s = new ChunkScheduler({ deadAfterMs: 10_000, refuseBackoffMs: 500 });
  const f = randomUuid();
  const a = randomUuid();
  const b = randomUuid();
  s.register(a, 1, 1, [f], "", 0);
  s.register(b, 1, 1, [], "", 0);
  const j = job(1, [{ id: f, size: 100 }]);
  s.dispatch(j, all(1), 0);
  const [x] = s.assign(1);
  assert.equal(x.worker.key, uuidToHex(a));
  assert.ok(s.refused(a, j.job, 0, x.attempt, 2));
  // A repeated (stale) refusal changes nothing.
  assert.equal(s.refused(a, j.job, 0, x.attempt, 2), false);
  const [y] = s.assign(3);
  assert.equal(y.worker.key, uuidToHex(b));
  assert.equal(y.attempt, x.attempt);
  // If b refuses too and a is still in its back-off, the chunk waits, then retries a.
  assert.ok(s.refused(b, j.job, 0, y.attempt, 4));
  assert.equal(s.assign(5).length, 0); // a's back-off lasts until 502
  assert.equal(s.assign(600).length, 1);
  const st = s.chunkState(j.job, 0);
  assert.equal(st.state, "running");
  assert.equal(st.worker, uuidToHex(a));
});

Deno.test("scheduler: a restarted worker (re-register, all free) loses its chunks", () => {
  const s = new ChunkScheduler({ deadAfterMs: 10_000 });
  const a = randomUuid();
  s.register(a, 2, 2, [], "", 0);
  const j = job(2);
  s.dispatch(j, all(2, 1), 0);
  assert.equal(s.assign(1).length, 2);
  // Re-register while still busy (e.g. it switched balancers): chunks stay.
  assert.equal(s.register(a, 2, 0, [], "", 2).requeued.length, 0);
  // Re-register with everything free: it restarted, chunks come back with attempt 2.
  const { requeued } = s.register(a, 2, 2, [], "", 3);
  assert.deepEqual(requeued.map((r) => r.attempt), [2, 2]);
  const again = s.assign(4);
  assert.deepEqual(again.map((x) => x.attempt), [2, 2]);
});

Deno.test("scheduler: 20k queued chunks drain in full, fair passes over 160 slots", () => {
  // How fast this runs is measured by benchmarks, not asserted here; the test pins the work:
  // every pass fills every free slot, shares them evenly among the jobs, and 20,000 chunks
  // take exactly 20,000 / 160 passes.
  const s = new ChunkScheduler({ deadAfterMs: 10_000 });
  const ws = Array.from({ length: 20 }, () => randomUuid());
  for (const w of ws) s.register(w, 8, 8, [], "", 0);
  const jobs = Array.from({ length: 10 }, () => job(2000));
  const t0 = performance.now();
  for (const j of jobs) s.dispatch(j, all(2000), 0);
  let done = 0;
  let passes = 0;
  let now = 1;
  while (done < 20_000) {
    const out = s.assign(now++);
    passes++;
    assert.equal(out.length, 160, `pass ${passes} placed ${out.length} chunks`);
    const perJob = new Map<string, number>();
    for (const a of out) {
      const k = uuidToHex(a.job.job);
      perJob.set(k, (perJob.get(k) ?? 0) + 1);
    }
    assert.deepEqual([...perJob.values()], Array(10).fill(16), `pass ${passes}`);
    for (const a of out) {
      assert.ok(s.finished(a.worker.id, a.job.job, a.chunkIndex, a.attempt, 2, now));
      done++;
    }
    assert.ok(passes <= 125, "more passes than 20,000 / 160");
  }
  assert.equal(passes, 125);
  assert.equal(s.stats().finished, 20_000);
  assert.equal(s.stats().jobs, 0);
  assert.equal(s.assign(now).length, 0);
  console.log(`20k chunks in ${passes} passes, ${(performance.now() - t0).toFixed(0)} ms`);
});

Deno.test("scheduler: busy slots a worker reports beyond ours are not overbooked", () => {
  const s = new ChunkScheduler({ deadAfterMs: 10_000 });
  const a = randomUuid();
  // After a balancer restart: the worker runs 3 of 4 slots of work this balancer never placed.
  s.register(a, 4, 1, [], "", 0);
  s.dispatch(job(10), all(10), 0);
  assert.equal(s.assign(1).length, 1);
  assert.equal(s.stats().freeSlots, 0);
  // One of the unknown chunks ends (its chunk_finished is stale here): a slot frees up.
  assert.equal(s.finished(a, randomUuid(), 0, 1, ChunkState.Succeeded, 2), false);
  assert.equal(s.assign(3).length, 1);
  // A heartbeat saying everything but our two is free releases the rest.
  s.heartbeat(a, 4, 2, [], [], 4);
  assert.equal(s.assign(5).length, 2);
  // Silent workers get nothing even before they are reaped.
  s.dispatch(job(1), all(1), 6);
  const b = randomUuid();
  s.register(b, 1, 1, [], "", 0);
  assert.equal(s.assign(20_000).length, 0);
});

Deno.test("scheduler: an idle heartbeat gives up chunks placed long ago (lost reports)", () => {
  const s = new ChunkScheduler({ deadAfterMs: 10_000, idleGraceMs: 1000 });
  const a = randomUuid();
  s.register(a, 2, 2, [], "", 0);
  const j = job(2);
  s.dispatch(j, all(2, 1), 0);
  assert.equal(s.assign(100).length, 2);
  // Idle report soon after placement: the requests may not have arrived yet. Keep them.
  assert.equal(s.heartbeat(a, 2, 2, [], [], 500).requeued.length, 0);
  // Still idle a grace period later: they are not running there. New attempts.
  const { requeued } = s.heartbeat(a, 2, 2, [], [], 1100);
  assert.deepEqual(requeued.map((r) => r.attempt), [2, 2]);
  assert.equal(s.stats().queued, 2);
  // A busy report never gives anything up.
  const again = s.assign(1200);
  assert.equal(again.length, 2);
  assert.equal(s.heartbeat(a, 2, 0, [], [], 9000).requeued.length, 0);
});

Deno.test("scheduler: finished chunks are forgotten after 2 x rerunFinishedAfterMs", () => {
  const s = new ChunkScheduler({ deadAfterMs: 1e9, rerunFinishedAfterMs: 1000 });
  const w = randomUuid();
  s.register(w, 4, 4, [], "", 0);
  const j = job(4);
  s.dispatch(j, all(4), 0);
  for (const [i, a] of s.assign(1).entries()) {
    s.finished(w, j.job, a.chunkIndex, a.attempt, ChunkState.Succeeded, 100 * i);
  }
  assert.equal(s.prunable(1999), false);
  assert.equal(s.prunable(2000), true);
  assert.equal(s.pruneFinished(2150), 2);
  assert.equal(s.stats().finished, 2);
  assert.equal(s.chunkState(j.job, 0).state, "unknown");
  assert.equal(s.chunkState(j.job, 3).state, "finished");
});

Deno.test("deque: both ends, removal near the front, order kept against an array model", () => {
  const d = new Deque<number>();
  const model: number[] = [];
  let seed = 7;
  const r = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 20_000; i++) {
    const x = r();
    if (x < 0.45) {
      d.push(i);
      model.push(i);
    } else if (x < 0.6) {
      d.unshift(i);
      model.unshift(i);
    } else if (model.length > 0) {
      const k = Math.floor(r() * Math.min(model.length, 5));
      assert.equal(d.removeAt(k), model.splice(k, 1)[0]);
    }
    assert.equal(d.length, model.length);
  }
  assert.deepEqual(d.toArray(), model);
  assert.deepEqual(Deque.from(model).toArray(), model);
  for (let i = 0; i < model.length; i += 97) assert.equal(d.at(i), model[i]);
});

// ---------------------------------------------------------------------------------------------
// The free-slot indexes (roles/balancer/free_index.ts) against the rule they implement.

/** The placement rule of `assign`, by brute force over every worker (see its doc). */
function expectedWorker(
  s: ChunkScheduler,
  inputs: { key: string; size: number }[],
  nowMs: number,
): WorkerInfo | null {
  const ok = (w: WorkerInfo) => freeOf(w) > 0 && nowMs - w.lastSeenMs < s.deadAfter(w);
  const order = (a: WorkerInfo, b: WorkerInfo) =>
    freeOf(b) - freeOf(a) || a.lastAssignSeq - b.lastAssignSeq || a.ord - b.ord;
  const ws = s.workers();
  const holders = inputs.reduce(
    (n, f) => n + ws.filter((w) => freeOf(w) > 0 && w.files.has(f.key)).length,
    0,
  );
  const bytes = (w: WorkerInfo) =>
    inputs.reduce((n, f) => n + (w.files.has(f.key) ? f.size : 0), 0);
  if (holders <= LOCALITY_SCAN) {
    return ws.filter(ok).sort((a, b) => bytes(b) - bytes(a) || order(a, b))[0] ?? null;
  }
  const bySize = inputs.map((f, i) => ({ f, i })).sort((a, b) => b.f.size - a.f.size || a.i - b.i);
  for (const { f } of bySize) {
    const best = ws.filter((w) => ok(w) && w.files.has(f.key)).sort(order)[0];
    if (best) return best;
  }
  return ws.filter(ok).sort(order)[0] ?? null;
}

Deno.test("scheduler: indexed placement picks what a scan of every worker picks (120 seeds)", () => {
  for (let seed = 1; seed <= 120; seed++) {
    let x = seed;
    const r = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
    const pick = <T>(a: T[]) => a[Math.floor(r() * a.length)];
    const s = new ChunkScheduler({ deadAfterMs: 1000, idleGraceMs: 0 });
    // A twin fed the same calls, now and then replaced by an import of s's snapshot: it must
    // decide exactly alike (the standby takes over from such a copy).
    let twin = new ChunkScheduler({ deadAfterMs: 1000, idleGraceMs: 0 });
    const both = <T>(f: (t: ChunkScheduler) => T): T => {
      f(twin);
      return f(s);
    };
    const files = Array.from(
      { length: 5 },
      () => ({ id: randomUuid(), size: 1 + Math.floor(r() * 4) }),
    );
    // Few or many workers: both sides of LOCALITY_SCAN.
    const ids = Array.from({ length: seed % 3 === 0 ? 150 : 1 + (seed % 40) }, () => randomUuid());
    const silent = new Set<number>();
    let now = 0;
    const someFiles = () => files.filter(() => r() < 0.4).map((f) => f.id);
    for (const id of ids) {
      const slots = 1 + Math.floor(r() * 3);
      const has = someFiles();
      both((t) => t.register(id, slots, slots, has, "", now));
    }
    const running: Assignment[] = [];
    for (let step = 0; step < 120; step++) {
      now += 50;
      const op = r();
      if (op < 0.5) {
        const ins = files.filter(() => r() < 0.35);
        const j = job(1, ins);
        both((t) => t.dispatch(j, all(1), now));
        const want = expectedWorker(
          s,
          ins.map((f) => ({ key: uuidToHex(f.id), size: f.size })),
          now,
        );
        const twinGot = twin.assign(now);
        const got = s.assign(now);
        assert.deepEqual(got.map((a) => a.worker.key), twinGot.map((a) => a.worker.key));
        assert.equal(
          got.length,
          want ? 1 : 0,
          `seed ${seed} step ${step}: ${got.length} ${want?.key} ${JSON.stringify(s.stats())}`,
        );
        if (want) {
          assert.equal(got[0].worker.key, want.key, `seed ${seed} step ${step}`);
          running.push(got[0]);
        } else both((t) => t.cancel(j.job, [], now));
      } else if (op < 0.75 && running.length > 0) {
        const a = running.splice(Math.floor(r() * running.length), 1)[0];
        both((t) => t.finished(a.worker.id, a.job.job, a.chunkIndex, a.attempt, 2, now));
      } else if (op < 0.8) {
        silent.add(Math.floor(r() * ids.length));
      } else if (op < 0.85) {
        const dead = both((t) => t.reapDead(now));
        for (const d of dead) {
          // Their chunks would be queued before the next check's: cancel them.
          for (const q of d.requeued) both((t) => t.cancel(q.job, [], now));
          for (let i = running.length - 1; i >= 0; i--) {
            if (running[i].worker.key === d.worker.key) running.splice(i, 1);
          }
        }
      } else if (op < 0.9) {
        twin = new ChunkScheduler({ deadAfterMs: 1 });
        twin.importState(structuredClone(s.exportState()));
      } else {
        // A heartbeat with a cache delta (and, sometimes, busy slots we did not place).
        const i = Math.floor(r() * ids.length);
        const w = s.worker(ids[i]);
        if (w && !silent.has(i)) {
          const add = someFiles();
          const evict = r() < 0.5 ? [pick(files).id] : [];
          const free = Math.max(0, w.slots - w.running.size - (r() < 0.2 ? 1 : 0));
          both((t) => t.heartbeat(ids[i], w.slots, free, add, evict, now));
        }
      }
      // Everyone not silent heartbeats now and then (keeps them alive).
      if (step % 10 === 0) {
        for (const [i, id] of ids.entries()) {
          const w = s.worker(id);
          if (!w || silent.has(i)) continue;
          const free = w.slots - w.running.size - w.phantom;
          both((t) => t.heartbeat(id, w.slots, Math.max(0, free), [], [], now));
        }
      }
    }
  }
});

Deno.test("scheduler: heartbeat interval grows with the cluster, and the dead timeout with it", () => {
  const s = new ChunkScheduler({ deadAfterMs: 5000, heartbeatMs: 500, maxHeartbeatsPerSec: 100 });
  const ids = Array.from({ length: 1000 }, () => randomUuid());
  // Small cluster: the base interval, the configured timeout.
  assert.equal(s.register(ids[0], 1, 1, [], "", 0).heartbeatMs, 500);
  assert.equal(s.deadAfter(s.worker(ids[0])!), 5000);
  for (const id of ids.slice(1, 200)) s.register(id, 1, 1, [], "", 0);
  // 200 workers at 100 heartbeats/s: every 2 s each.
  assert.equal(s.heartbeat(ids[0], 1, 1, [], [], 10).heartbeatMs, 2000);
  assert.equal(s.deadAfter(s.worker(ids[0])!), 6000);
  for (const id of ids.slice(200)) s.register(id, 1, 1, [], "", 10);
  // 1,000: every 10 s, dead after 3 missed.
  const w = s.worker(ids[999])!;
  assert.equal(w.heartbeatMs, 10_000);
  assert.equal(s.deadAfter(w), 30_000);
  // ids[1] was last told the base interval: dead at 5 s; the others live on.
  const dead = s.reapDead(5000).map((d) => d.worker.key);
  assert.ok(dead.includes(uuidToHex(ids[1])));
  assert.ok(!dead.includes(uuidToHex(ids[0])) && !dead.includes(uuidToHex(ids[999])));
  // The told interval survives a snapshot (a standby that takes over keeps the timeouts).
  const copy = new ChunkScheduler({ deadAfterMs: 1 });
  copy.importState(structuredClone(s.exportState()));
  assert.equal(copy.worker(ids[999])!.heartbeatMs, 10_000);
  assert.equal(s.reapDead(29_999).filter((d) => d.worker.key === w.key).length, 0);
  assert.equal(s.reapDead(30_010).filter((d) => d.worker.key === w.key).length, 1);
  // Bounded: never past MAX_HEARTBEAT_MS; 0 turns adaptation off.
  const huge = new ChunkScheduler({ deadAfterMs: 5000, maxHeartbeatsPerSec: 1 });
  for (const id of ids.slice(0, 100)) huge.register(id, 1, 1, [], "", 0);
  assert.equal(huge.heartbeatInterval(), MAX_HEARTBEAT_MS);
  const off = new ChunkScheduler({ deadAfterMs: 5000, maxHeartbeatsPerSec: 0 });
  assert.equal(off.register(ids[0], 1, 1, [], "", 0).heartbeatMs, 0);
  assert.equal(off.deadAfter(off.worker(ids[0])!), 5000);
});

Deno.test("scheduler: a first wave over 2,000 idle holders of the input fills every slot", () => {
  // The shape that was quadratic before the index: a job whose input every worker holds.
  const s = new ChunkScheduler({ deadAfterMs: 10_000 });
  const f = randomUuid();
  const ids = Array.from({ length: 2000 }, () => randomUuid());
  for (const id of ids) s.register(id, 2, 2, [f], "", 0);
  const other = randomUuid();
  s.register(other, 8, 8, [], "", 0);
  const j = job(5000, [{ id: f, size: 100 }]);
  s.dispatch(j, all(5000), 0);
  const out = s.assign(1);
  assert.equal(out.length, 4008);
  const m = byWorker(out);
  for (const id of ids) assert.equal(m.get(uuidToHex(id)), 2);
  // The worker without the input was used only once every holder was full.
  assert.deepEqual(out.slice(4000).map((a) => a.worker.key), Array(8).fill(uuidToHex(other)));
});
