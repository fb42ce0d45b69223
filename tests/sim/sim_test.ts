/**
 * CI entry for the deterministic Raft simulation: 2,000 seeds with random faults, safety
 * checked after every event, liveness and linearizability checked at the end of each run.
 * SIM_FROM / SIM_SEEDS env vars shift or resize the range (a failing seed is printed and
 * reproduces exactly with `deno task sim --seeds 1 --from <seed>`).
 */
import assert from "node:assert/strict";
import { runSeed } from "./sim.ts";
import { checkHistory, type Operation } from "./linearizability.ts";
import { codecRoundTrip } from "./codec_roundtrip.ts";

const FROM = Number(Deno.env.get("SIM_FROM") ?? "1");
const SEEDS = Number(Deno.env.get("SIM_SEEDS") ?? "2000");

Deno.test(`sim: ${SEEDS} seeds from ${FROM} keep safety, liveness, linearizability`, () => {
  const failures: string[] = [];
  const totals: Record<string, number> = {};
  for (let s = FROM; s < FROM + SEEDS; s++) {
    const r = runSeed(s);
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) failures.push(r.error!);
  }
  assert.deepEqual(failures, [], failures.slice(0, 3).join("\n\n"));
  // The seeds must actually exercise the faults they claim to.
  for (const k of ["crashes", "persistCrashes", "partitions", "transfers", "confChanges"]) {
    assert.ok(totals[k] > 50, `too few ${k}: ${totals[k]}`);
  }
  assert.ok(totals.snapshotsInstalled > 50, `snapshots installed: ${totals.snapshotsInstalled}`);
  assert.ok(totals.duplicates > 50, `dedup never exercised: ${totals.duplicates}`);
  // The leader's appends sent while its own write is unsynced (splitReadyMessages).
  assert.ok(totals.earlyMessages > 1000, `early appends: ${totals.earlyMessages}`);
  assert.equal(totals.ops, totals.okOps, "every client operation completed");
});

Deno.test("sim: a seed reproduces exactly", () => {
  const a = runSeed(4242);
  const b = runSeed(4242);
  assert.equal(a.ok, true, a.error);
  assert.deepEqual(a.stats, b.stats);
});

Deno.test("sim: messages survive the binary codec (100 seeds through codec.ts)", () => {
  for (let s = 1; s <= 100; s++) {
    const r = runSeed(s, { codec: codecRoundTrip });
    assert.equal(r.ok, true, r.error);
  }
});

function op(
  client: string,
  kind: "put" | "get",
  value: string | null,
  call: number,
  ret: number,
): Operation {
  return { client, key: "k", kind, value, call, ret };
}

Deno.test("linearizability checker: accepts valid, rejects stale read and lost write", () => {
  // put(1) overlaps get → either answer is fine.
  assert.ok(checkHistory([op("a", "put", "1", 0, 10), op("b", "get", "1", 5, 6)]).ok);
  assert.ok(checkHistory([op("a", "put", "1", 0, 10), op("b", "get", null, 5, 6)]).ok);
  // get after put returned must see it (stale read).
  assert.equal(
    checkHistory([op("a", "put", "1", 0, 1), op("b", "get", null, 2, 3)]).ok,
    false,
  );
  // two sequential reads may not go back in time.
  assert.equal(
    checkHistory([
      op("a", "put", "1", 0, 100),
      op("b", "get", "1", 10, 11),
      op("c", "get", null, 20, 21),
    ]).ok,
    false,
  );
  // a put that never returned may take effect at any time after its call, or never.
  assert.ok(
    checkHistory([
      op("a", "put", "1", 0, Infinity),
      op("b", "get", null, 5, 6),
      op(
        "b",
        "get",
        "1",
        7,
        8,
      ),
    ]).ok,
  );
  assert.equal(
    checkHistory([op("a", "put", "1", 10, Infinity), op("b", "get", "1", 0, 5)]).ok,
    false,
  );
  // independent keys are checked separately.
  const h = [op("a", "put", "1", 0, 1), { ...op("b", "get", null, 2, 3), key: "other" }];
  assert.ok(checkHistory(h).ok);
});
