/**
 * `deno run -A tests/chaos/recheck.ts DATA_DIR`: the invariant checks of a kept chaos run again,
 * from its `chaos-dump.json` and its logs (after a change to the checker, or to look closer at
 * a failure without running the cluster again). The end-of-run checks that need the live
 * cluster (clean stop, nothing left behind) are not repeated.
 * @module
 */
import { checkJobOnce, checkJobs, checkLinearizable, checkRuns } from "./checker.ts";
import { decodeDump } from "./harness.ts";
import { logFacts } from "./logs.ts";

const dir = Deno.args[0];
if (!dir) {
  console.error("usage: deno run -A tests/chaos/recheck.ts DATA_DIR");
  Deno.exit(1);
}
const d = decodeDump(await Deno.readTextFile(`${dir}/chaos-dump.json`));
const violations = [
  ...checkJobs(d.history, d.finals, d.outputs),
  ...checkJobOnce(d.history),
  ...checkLinearizable(d.history, d.finals),
];
const runs = checkRuns(await logFacts(`${dir}/logs`), d.disturbances, d.history, d.finals);
violations.push(...runs.violations);
console.log(
  `seed ${d.seed}: ${d.history.submits.length} submissions, ${runs.chunks} chunks, ${runs.runs} runs; ` +
    `re-runs ${JSON.stringify(runs.reruns)}; known bugs ${JSON.stringify(runs.knownBugs)}`,
);
for (const u of runs.unexplainedDeaths) console.log(`  no fault explains: ${u}`);
for (const v of violations) console.log(`  VIOLATION ${v.invariant}: ${v.detail}`);
Deno.exit(violations.length === 0 ? 0 : 1);
