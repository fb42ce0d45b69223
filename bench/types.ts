/** One benchmark result: dsys against a baseline measured in the same run. */
export interface BenchRow {
  name: string;
  dsys: number;
  baseline: number;
  unit: string;
  /** dsys / baseline for higher-is-better units (baseline / dsys for latencies). */
  ratio: number;
  goal: string;
  /** Range of the per-round ratios when the row is a median of rounds ("0.91-1.08"). */
  spread?: string;
}

/** Renders rows as a markdown table. */
export function markdownTable(rows: BenchRow[], baselineName = "baseline"): string {
  const head =
    `| benchmark | dsys | ${baselineName} | unit | ratio | goal |\n|---|---:|---:|---|---:|---|`;
  const fmt = (n: number) =>
    n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(n >= 10 ? 1 : 2);
  return [
    head,
    ...rows.map((r) =>
      `| ${r.name} | ${fmt(r.dsys)} | ${fmt(r.baseline)} | ${r.unit} | ${r.ratio.toFixed(2)}x${
        r.spread ? ` (${r.spread})` : ""
      } | ${r.goal} |`
    ),
  ].join("\n");
}
