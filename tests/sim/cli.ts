/**
 * Long simulation runs: `deno task sim --seeds N --from S [--codec] [--verbose]`.
 * Prints every failing seed with its violation; rerun one with `--seeds 1 --from <seed>`.
 */
import { parseArgs } from "node:util";
import { runSeed } from "./sim.ts";
import { codecRoundTrip } from "./codec_roundtrip.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seeds: { type: "string", default: "1000" },
    from: { type: "string", default: "1" },
    codec: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
});
const n = Number(values.seeds);
const from = Number(values.from);
const t0 = performance.now();
const totals: Record<string, number> = {};
let failed = 0;
for (let s = from; s < from + n; s++) {
  const r = runSeed(s, values.codec ? { codec: codecRoundTrip } : {});
  for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
  if (!r.ok) {
    failed++;
    console.log(`FAIL ${r.error}`);
  } else if (values.verbose) console.log(`ok seed ${s} ${JSON.stringify(r.stats)}`);
}
const ms = performance.now() - t0;
console.log(
  `${n - failed}/${n} seeds ok (from ${from}) in ${(ms / 1000).toFixed(1)}s (${
    (ms / n).toFixed(1)
  } ms/seed)`,
);
console.log(JSON.stringify(totals));
if (failed) Deno.exit(1);
