/**
 * The production master shells under the deterministic simulator (tests/sim/cluster/): real
 * RaftGroup + FileStorage + JobTable + MasterService on the simulated clock, network and disk,
 * with clients and a balancer/worker stand-in speaking the real messages, under a fault schedule
 * from each seed; every invariant after every step and at the end (tests/sim/cluster/run.ts).
 *
 * DSYS_SIM_CLUSTER_SEEDS sets the number of seeds (default 1000), DSYS_SIM_CLUSTER_FROM the first.
 * A failing seed prints its replay command and fault schedule.
 */
import assert from "node:assert/strict";
import { type ClusterSimResult, report, runClusterSeed } from "./sim/cluster/run.ts";
import { runClusterSeeds } from "./sim/cluster/batch.ts";
import type { PlantedBug } from "../roles/master/service.ts";

const SEEDS = Number(Deno.env.get("DSYS_SIM_CLUSTER_SEEDS") ?? 1000);
const FROM = Number(Deno.env.get("DSYS_SIM_CLUSTER_FROM") ?? 1);
/** Seeds run at once (they share nothing; see batch.ts). */
const CONCURRENCY = 16;

Deno.test("cluster sim: a seed replays exactly, alone or interleaved with other seeds", async () => {
  const alone = await runClusterSeed(11);
  const again = await runClusterSeed(11);
  const batch: ClusterSimResult[] = [];
  await runClusterSeeds([9, 10, 11, 12], {}, 4, (r) => batch.push(r));
  const inBatch = batch.find((r) => r.seed === 11)!;
  assert.ok(alone.ok && alone.stats.acked > 0 && alone.trace.length > 5, "the run did something");
  assert.deepEqual(again.trace, alone.trace);
  assert.deepEqual(inBatch.trace, alone.trace);
  assert.deepEqual(inBatch.stats, alone.stats);
  const other = batch.find((r) => r.seed === 12)!;
  assert.notDeepEqual(other.trace, alone.trace);
});

Deno.test(`cluster sim: ${SEEDS} seeds of real masters under faults keep every invariant`, async () => {
  const totals: Record<string, number> = {};
  const failures: string[] = [];
  const seeds = Array.from({ length: SEEDS }, (_, i) => FROM + i);
  await runClusterSeeds(seeds, {}, CONCURRENCY, (r) => {
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) failures.push(report(r));
  });
  console.log(`cluster sim: ${SEEDS} seeds, totals ${JSON.stringify(totals)}`);
  assert.deepEqual(failures, [], failures.join("\n"));
  // The runs did what they claim: a real workload, every kind of fault, leader changes.
  assert.ok(totals.acked >= SEEDS, `acknowledged jobs: ${totals.acked}`);
  assert.ok(totals.reads >= SEEDS, `status reads: ${totals.reads}`);
  for (
    const k of [
      "crash",
      "crash-leader",
      "isolate",
      "isolate-leader",
      "one-way",
      "isolate-all",
      "split",
      "lossy",
      "crash-balancer",
      "storage-flaky",
      "fsync-eio",
      "bit-flip",
    ]
  ) {
    if (SEEDS >= 200) assert.ok((totals[`fault:${k}`] ?? 0) > 0, `no ${k} fault happened`);
  }
  assert.ok(totals.maxTerm > 2 * SEEDS, `terms: ${totals.maxTerm}`);
  if (SEEDS >= 200) {
    // Storage faults reached the disks: torn writes at crashes, failed fsyncs, flipped bits
    // (each refused at start-up: an unrefused one would have failed its seed).
    for (const k of ["disk:torn", "disk:sync-eio", "disk:bit-flip", "fault:refusedCorruptDisk"]) {
      assert.ok((totals[k] ?? 0) > 0, `no ${k}`);
    }
  }
  assert.ok(totals.masters > 3 * SEEDS, "some seeds ran 5 masters");
});

/** Runs `n` seeds with `bug` planted; returns how many caught it. */
async function caught(bug: PlantedBug, n: number): Promise<number> {
  let c = 0;
  const seeds = Array.from({ length: n }, (_, i) => FROM + i);
  await runClusterSeeds(seeds, { bugs: [bug] }, CONCURRENCY, (r) => {
    if (!r.ok) c++;
  });
  return c;
}

Deno.test("cluster sim: planted bugs in the master shell are caught", async () => {
  const n = Math.min(SEEDS, 60);
  const ack = await caught("ack-before-commit", n);
  const follower = await caught("status-from-follower", n);
  console.log(
    `planted bugs caught in ${n} seeds: ack-before-commit ${ack}, status-from-follower ${follower}`,
  );
  assert.ok(ack > 0, "acknowledging before commit was never caught");
  assert.ok(follower > 0, "status reads served by followers were never caught");
});
