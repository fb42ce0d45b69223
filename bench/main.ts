/**
 * `deno task bench`: runs every benchmark module that is present, prints one markdown table per
 * benchmark with the date and the machine (cores, CPU model, load average before and after), and
 * writes the whole report to docs/benchmarks-latest.md (docs/benchmarks.md is curated by hand
 * from it). One benchmark failing does not stop the others; the exit code is 1 if any failed.
 *
 * `deno run -A bench/main.ts [--only raft,e2e] [--out FILE]`
 * @module
 */
import { parseArgs } from "node:util";
import { runZmqBench } from "./zmq.ts";
import { runStorageBench } from "./storage.ts";
import { runFuseBench } from "./fuse.ts";
import { runFuseColdBench } from "./fuse_cold.ts";
import { runE2eBench } from "./e2e.ts";
import { runRaftBench } from "./raft.ts";
import { runCancelBench } from "./cancel.ts";
import { runScaleBench } from "./scale.ts";
import { type BenchRow, markdownTable } from "./types.ts";

/** A benchmark the driver knows: where it lives and what its baseline is. */
export interface BenchSpec {
  /** Name for `--only`. */
  name: string;
  /** Module path relative to bench/. */
  file: string;
  /** Title of its report section. */
  title: string;
  /** Column header of its baseline. */
  baseline: string;
  /** Statically imported runner; absent for modules loaded with `import()` when present. */
  run?: () => Promise<BenchRow[]>;
  /** Exported function name looked up after a dynamic import. */
  fn: string;
}

/**
 * Every benchmark, in run order. Present modules are imported statically (type-checked with the
 * driver); a spec without `run` is imported only if its file exists, so a benchmark can be listed
 * here before its module is written.
 */
export const BENCHES: BenchSpec[] = [
  {
    name: "zmq",
    file: "zmq.ts",
    fn: "runZmqBench",
    run: () => runZmqBench(),
    title: "Messaging (ZeroMQ)",
    baseline: "Node.js + zeromq.js",
  },
  {
    name: "storage",
    file: "storage.ts",
    fn: "runStorageBench",
    run: () => runStorageBench(),
    title: "Storage",
    baseline: "baseline",
  },
  {
    name: "fuse",
    file: "fuse.ts",
    fn: "runFuseBench",
    run: () => runFuseBench(),
    title: "FUSE inputs",
    baseline: "direct read",
  },
  {
    name: "fuse-cold",
    file: "fuse_cold.ts",
    fn: "runFuseColdBench",
    run: () => runFuseColdBench(),
    title: "FUSE inputs, cold (fetched on first read)",
    baseline: "storage get",
  },
  {
    name: "e2e",
    file: "e2e.ts",
    fn: "runE2eBench",
    run: () => runE2eBench(),
    title: "End to end",
    baseline: "xargs -P",
  },
  {
    name: "cancel",
    file: "cancel.ts",
    fn: "runCancelBench",
    run: () => runCancelBench(),
    title: "Cancel latency (dsys cancel to the last process gone)",
    baseline: "kill -9 of the known pids",
  },
  {
    name: "scale",
    file: "scale.ts",
    fn: "runScaleBench",
    run: () => runScaleBench(),
    title: "Balancer scale (simulated workers: placement, idle, restart, memory)",
    baseline: "4 workers, or the goal",
  },
  {
    name: "raft",
    file: "raft.ts",
    fn: "runRaftBench",
    run: () => runRaftBench(),
    title: "Masters (consensus)",
    baseline: "etcd 3.4 (3 members)",
  },
];

/** A command-line usage error (unknown benchmark name), naming what is known. */
export class BenchUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BenchUsageError";
  }
}

/** The benchmarks `--only a,b` selects (all when `only` is empty); throws on an unknown name. */
export function selectBenches(only: string | undefined, all: BenchSpec[] = BENCHES): BenchSpec[] {
  if (!only) return all;
  const want = only.split(",").map((s) => s.trim()).filter(Boolean);
  for (const w of want) {
    if (!all.some((b) => b.name === w)) {
      throw new BenchUsageError(
        `unknown benchmark ${JSON.stringify(w)}; known: ${all.map((b) => b.name).join(", ")}`,
      );
    }
  }
  return all.filter((b) => want.includes(b.name));
}

/** What the report says about the machine. */
export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  /** `/proc/loadavg`'s 1, 5, 15 minute averages. */
  load: string;
}

/** Cores, CPU model and load average, read from /proc (the bench runs on Linux). */
export async function machineInfo(): Promise<MachineInfo> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const loadavg = await Deno.readTextFile("/proc/loadavg").catch(() => "");
  return {
    nproc: navigator.hardwareConcurrency,
    cpuModel: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? "unknown",
    load: loadavg.split(" ").slice(0, 3).join(" ") || "unknown",
  };
}

/** The runner of `b`: its static import, or its module's export when the file exists. */
async function loadRunner(b: BenchSpec): Promise<(() => Promise<BenchRow[]>) | null> {
  if (b.run) return b.run;
  const url = new URL(`./${b.file}`, import.meta.url);
  try {
    await Deno.stat(url);
  } catch {
    return null;
  }
  const mod = await import(url.href);
  const fn = mod[b.fn];
  if (typeof fn !== "function") {
    throw new BenchUsageError(`bench/${b.file} does not export a function ${b.fn}`);
  }
  return () => fn();
}

/** The result of a driver run. */
export interface BenchReport {
  /** The whole markdown report. */
  markdown: string;
  /** Names of benchmarks that threw. */
  failed: string[];
  /** Names skipped because their module does not exist yet. */
  missing: string[];
}

/**
 * Runs `benches` one after the other (they share a 2-core machine: running them together would
 * measure each other), each section with its time and the load average around it.
 */
export async function runBenches(
  benches: BenchSpec[],
  print: (s: string) => void = console.log,
): Promise<BenchReport> {
  const m = await machineInfo();
  const parts = [
    "# dsys benchmarks: latest run",
    "",
    `Generated by \`deno task bench\` on ${new Date().toISOString()}. Machine: ${m.nproc} cores, ` +
    `${m.cpuModel}, Deno ${Deno.version.deno}, load average (1/5/15 min) at start ${m.load}.`,
    "Other processes may share the machine: compare each row with its baseline from the same run.",
  ];
  print(parts.join("\n"));
  const failed: string[] = [], missing: string[] = [];
  for (const b of benches) {
    const head = `\n## ${b.title} (\`${b.name}\`)\n`;
    let section: string;
    const before = (await machineInfo()).load;
    const t0 = performance.now();
    try {
      const run = await loadRunner(b);
      if (!run) {
        missing.push(b.name);
        console.error(`bench ${b.name}: skipped, bench/${b.file} does not exist yet`);
        section = `${head}\nSkipped: bench/${b.file} does not exist yet.`;
      } else {
        const rows = await run();
        const secs = (performance.now() - t0) / 1000;
        const after = (await machineInfo()).load;
        section = `${head}\n${markdownTable(rows, b.baseline)}\n\n` +
          `Took ${secs.toFixed(0)} s; load average before ${before}, after ${after}.`;
      }
    } catch (e) {
      failed.push(b.name);
      const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
      section = `${head}\nFAILED: ${msg.split("\n").slice(0, 6).join("\n")}`;
      console.error(`bench ${b.name} failed: ${msg}`);
    }
    print(section);
    parts.push(section);
  }
  const end = (await machineInfo()).load;
  const tail = `\nLoad average at the end: ${end}.`;
  print(tail);
  parts.push(tail);
  return { markdown: parts.join("\n") + "\n", failed, missing };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      only: { type: "string" },
      out: {
        type: "string",
        default: new URL("../docs/benchmarks-latest.md", import.meta.url).pathname,
      },
    },
  });
  let benches: BenchSpec[];
  try {
    benches = selectBenches(values.only);
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    Deno.exit(2);
  }
  const report = await runBenches(benches);
  await Deno.writeTextFile(values.out, report.markdown);
  // The report lives in the repo, whose `deno fmt --check` also covers markdown.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", values.out] }).output();
  console.error(
    `bench: report written to ${values.out}` +
      (report.missing.length ? `; not present yet: ${report.missing.join(", ")}` : "") +
      (report.failed.length ? `; FAILED: ${report.failed.join(", ")}` : ""),
  );
  if (report.failed.length) Deno.exit(1);
}
