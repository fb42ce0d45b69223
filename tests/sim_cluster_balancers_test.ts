/**
 * The cluster simulation (tests/sim/cluster/run.ts: real masters on simulated clock, network and
 * disk, clients, a fault schedule per seed) with the real balancer pair and simulated workers in
 * place of the stand-in (tests/sim/cluster/balancer_roles.ts), and masters with keys, so that
 * the lease, dispatch, placement, fencing and ticket-checked worker_status run end to end under
 * master crashes, leader changes, partitions, lossy links, storage faults and balancer crashes.
 * Every check of the cluster simulation holds, plus the balancer roles' own (epoch-owner,
 * placed-twice, one-primary, and wrong-worker: a hostile worker key's forged worker_status and
 * chunk_finished are never taken), and a planted balancer bug is caught.
 *
 * DSYS_SIM_CLUSTER_BALANCER_SEEDS sets the number of seeds (default 300).
 */
import assert from "node:assert/strict";
import { report, runClusterSeed } from "./sim/cluster/run.ts";
import { runClusterSeeds } from "./sim/cluster/batch.ts";
import { balancerCluster } from "./sim/cluster/balancer_roles.ts";

const SEEDS = Number(Deno.env.get("DSYS_SIM_CLUSTER_BALANCER_SEEDS") ?? 300);

Deno.test("cluster sim with the real balancers: a seed replays exactly", async () => {
  const a = balancerCluster(), b = balancerCluster();
  const x = await runClusterSeed(5, { roles: a.roles, masterAuth: a.masterAuth });
  const y = await runClusterSeed(5, { roles: b.roles, masterAuth: b.masterAuth });
  assert.ok(x.ok, report(x));
  assert.ok(a.stats.pushes > 0 && x.stats.acked > 0, "the run placed and completed jobs");
  assert.deepEqual(y.trace, x.trace);
  assert.deepEqual(b.stats, a.stats);
});

Deno.test(`cluster sim with the real balancers: ${SEEDS} seeds keep every invariant`, async () => {
  const bc = balancerCluster();
  const totals: Record<string, number> = {};
  const failures: string[] = [];
  const seeds = Array.from({ length: SEEDS }, (_, i) => i + 1);
  await runClusterSeeds(seeds, { roles: bc.roles, masterAuth: bc.masterAuth }, 16, (r) => {
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) failures.push(report(r));
  });
  console.log(
    `${SEEDS} seeds: ${totals.acked} jobs acknowledged, ${totals.chunks} chunks, ` +
      `balancers ${JSON.stringify(bc.stats)}, ${totals["fault:crash-balancer"]} balancer crashes`,
  );
  assert.deepEqual(failures, [], failures.join("\n"));
  assert.ok(totals.acked >= SEEDS, `acknowledged jobs: ${totals.acked}`);
  assert.ok(bc.stats.runs >= totals.chunks / 2, `runs ${bc.stats.runs}`);
  assert.ok((totals["fault:crash-balancer"] ?? 0) > 0, "no balancer was crashed");
  assert.ok(bc.stats.forgedRefused > SEEDS, `forged reports refused: ${bc.stats.forgedRefused}`);
});

Deno.test("cluster sim with the real balancers: a forged chunk_finished taken is caught", async () => {
  // The balancer's planted bug finish-from-any-worker (no sender check on chunk_finished): the
  // hostile worker's forged report is taken, which `wrong-worker` reports.
  const bc = balancerCluster({ plantedBug: "finish-from-any-worker" });
  for (let seed = 1; seed <= 30; seed++) {
    const r = await runClusterSeed(seed, { roles: bc.roles, masterAuth: bc.masterAuth });
    if (r.ok) continue;
    assert.match(r.violations.join("\n"), /wrong-worker: a forged chunk_finished/);
    console.log(`finish-from-any-worker: first caught by seed ${seed}: ${r.violations[0]}`);
    return;
  }
  assert.fail("finish-from-any-worker not caught by seeds 1..30");
});
