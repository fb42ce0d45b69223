/**
 * `deno task chaos --minutes N --seed S [--keep] [--no-netns]`: one chaos run (./harness.ts).
 * Prints each fault with its time as it happens, then the summary line; on a broken invariant
 * also the violations, the seed and the fault schedule to replay, and exits 1.
 * @module
 */
import { parseArgs } from "node:util";
import { emergencyStop, formatReport, runChaos } from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    minutes: { type: "string", default: "5" },
    seed: { type: "string" },
    keep: { type: "boolean", default: false },
    "no-netns": { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const minutes = Number(values.minutes);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
if (!(minutes > 0) || !Number.isInteger(seed)) {
  console.error(
    "usage: deno task chaos [--minutes N] [--seed S] [--keep] [--no-netns] [--json FILE]",
  );
  Deno.exit(1);
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    console.log(`chaos: ${sig}: stopping (seed ${seed})`);
    emergencyStop().finally(() => Deno.exit(130));
  });
}
const report = await runChaos({
  seed,
  faultMs: Math.round(minutes * 60_000),
  keep: values.keep,
  netns: !values["no-netns"],
});
console.log(formatReport(report));
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2));
Deno.exit(report.violations.length === 0 ? 0 : 1);
