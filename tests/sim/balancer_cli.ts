/**
 * Long runs of the balancer simulation (tests/sim/balancer_sim.ts):
 * `deno run -A tests/sim/balancer_cli.ts --seeds N --from S [--bug place-twice|finish-from-any-worker] [--trace]`.
 * Prints every seed with a violation (with its trace when `--trace`, or when one seed is run),
 * then a summary line; exits 1 on a violation unless a bug was planted (then the violations
 * are what is measured: how many seeds catch it).
 */
import { parseArgs } from "node:util";
import { runBalancerSim } from "./balancer_sim.ts";
import type { BalancerPlantedBug } from "../../roles/balancer/service.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seeds: { type: "string", default: "1000" },
    from: { type: "string", default: "1" },
    bug: { type: "string" },
    trace: { type: "boolean", default: false },
  },
});
const n = Number(values.seeds), from = Number(values.from);
const bug = values.bug as BalancerPlantedBug | undefined;
if (bug && bug !== "place-twice" && bug !== "finish-from-any-worker") {
  throw new Error(`--bug ${bug}: one of place-twice, finish-from-any-worker`);
}
const trace = values.trace || n === 1;
const t0 = performance.now();
const totals: Record<string, number> = {};
let caught = 0;
for (let s = from; s < from + n; s++) {
  const r = await runBalancerSim({ seed: s, trace, ...(bug ? { plantedBug: bug } : {}) });
  for (
    const k of ["chunks", "runs", "takeoverReruns", "newAttemptOverlaps", "forgedRefused"] as const
  ) {
    totals[k] = (totals[k] ?? 0) + r[k];
  }
  for (const [k, v] of Object.entries(r.faults)) totals[k] = (totals[k] ?? 0) + v;
  if (r.violations.length > 0) {
    caught++;
    console.log(`seed ${s}: ${r.violations.join("; ")}`);
    if (trace) console.log(r.trace.join("\n"));
  }
}
const ms = performance.now() - t0;
console.log(
  `${n} seeds from ${from}${bug ? ` with bug ${bug}` : ""}: ${caught} with a violation, ` +
    `${(ms / 1000).toFixed(1)} s (${(ms / n).toFixed(1)} ms/seed)`,
);
console.log(JSON.stringify(totals));
if (caught > 0 && !bug) Deno.exit(1);
