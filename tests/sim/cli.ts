/**
 * Long simulation runs.
 *
 * The Raft core (tests/sim/sim.ts): `deno task sim --seeds N --from S [--codec] [--verbose]`.
 * Prints every failing seed with its violation; rerun one with `--seeds 1 --from <seed>`.
 *
 * The real master shells (tests/sim/cluster/): `deno task sim --cluster --seeds N --from S
 * [--bug NAME] [--masters 3|5] [--workload-ms MS] [--concurrency C]`; one seed with its trace:
 * `deno task sim --cluster --seed S --verbose`. `--bug` plants a test-only bug (PlantedBug in
 * roles/master/service.ts) and counts the seeds that catch it.
 */
import { parseArgs } from "node:util";
import { runSeed } from "./sim.ts";
import { codecRoundTrip } from "./codec_roundtrip.ts";
import { type ClusterSimOptions, report } from "./cluster/run.ts";
import { runClusterSeeds } from "./cluster/batch.ts";
import type { PlantedBug } from "../../roles/master/service.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seeds: { type: "string", default: "1000" },
    from: { type: "string", default: "1" },
    seed: { type: "string" },
    codec: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    cluster: { type: "boolean", default: false },
    bug: { type: "string", multiple: true },
    masters: { type: "string" },
    "workload-ms": { type: "string" },
    concurrency: { type: "string", default: "16" },
  },
});
const n = values.seed !== undefined ? 1 : Number(values.seeds);
const from = Number(values.seed ?? values.from);
const t0 = performance.now();
const totals: Record<string, number> = {};
let failed = 0;

if (values.cluster) {
  const o: ClusterSimOptions = {
    bugs: (values.bug ?? []) as PlantedBug[],
    masters: values.masters ? Number(values.masters) : undefined,
    workloadMs: values["workload-ms"] ? Number(values["workload-ms"]) : undefined,
  };
  // The flags a replay needs besides --seed.
  const flags = [
    ...o.bugs!.map((b) => ` --bug ${b}`),
    o.masters ? ` --masters ${o.masters}` : "",
    o.workloadMs ? ` --workload-ms ${o.workloadMs}` : "",
  ].join("");
  const seeds = Array.from({ length: n }, (_, i) => from + i);
  await runClusterSeeds(seeds, o, Number(values.concurrency), (r) => {
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (values.verbose && n === 1) { for (const line of r.trace) console.log(`  ${line}`); }
    if (!r.ok) {
      failed++;
      console.log(o.bugs!.length ? `caught: seed ${r.seed}: ${r.violations[0]}` : report(r, flags));
    } else if (values.verbose) console.log(`ok seed ${r.seed} ${JSON.stringify(r.stats)}`);
  });
  if (o.bugs!.length) console.log(`${o.bugs!.join("+")}: caught by ${failed} of ${n} seeds`);
} else {
  for (let s = from; s < from + n; s++) {
    const r = runSeed(s, values.codec ? { codec: codecRoundTrip } : {});
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) {
      failed++;
      console.log(`FAIL ${r.error}`);
    } else if (values.verbose) console.log(`ok seed ${s} ${JSON.stringify(r.stats)}`);
  }
}
const ms = performance.now() - t0;
console.log(
  `${n - failed}/${n} seeds ok (from ${from}) in ${(ms / 1000).toFixed(1)}s (${
    (ms / n).toFixed(1)
  } ms/seed)`,
);
console.log(JSON.stringify(totals));
// With a planted bug, failing seeds are the point: exit 0 unless none caught it.
const bugRun = values.cluster && (values.bug?.length ?? 0) > 0;
if (bugRun ? failed === 0 : failed > 0) Deno.exit(1);
