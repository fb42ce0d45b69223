/**
 * `dsys dev`: starts an embedded local cluster, stores the sample corpus, runs the word-count job
 * in N chunks through the workers' FUSE mounts, merges the chunks' outputs, prints the result and
 * shuts everything down (Ctrl-C too). `--keep` leaves the cluster running for the other commands.
 */
import { parseArgs } from "node:util";
import { ChunkState, uuidToHex } from "../wire/mod.ts";
import { LocalCluster } from "./local_cluster.ts";
import { DsysClient } from "./commands.ts";
import { waitWithProgress } from "./cli.ts";
import { clusterFilePath } from "./cluster.ts";

const SAMPLE = new URL("../examples/wordcount/", import.meta.url);

/** Merges "COUNT WORD" lines into a frequency table. */
export function mergeCounts(texts: string[]): Map<string, number> {
  const total = new Map<string, number>();
  for (const t of texts) {
    for (const line of t.split("\n")) {
      const sp = line.indexOf(" ");
      if (sp <= 0) continue;
      const word = line.slice(sp + 1);
      total.set(word, (total.get(word) ?? 0) + Number(line.slice(0, sp)));
    }
  }
  return total;
}

/** Runs `dsys dev`; returns the exit code. */
export async function runDev(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      workers: { type: "string", default: "3" },
      masters: { type: "string", default: "1" },
      storage: { type: "string", default: "3" },
      slots: { type: "string", default: "2" },
      chunks: { type: "string", default: "8" },
      data: { type: "string" },
      keep: { type: "boolean", default: false },
      "metrics-listen": { type: "string" },
      dashboard: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: dsys dev [--masters 1|3|5] [--storage N] [--workers N] [--slots N] [--chunks N]\n" +
        "                [--data DIR] [--keep] [--metrics-listen HOST:PORT] [--dashboard]\n" +
        "Starts a local cluster (3 storage nodes by default: every file on 2 of them), runs the\n" +
        "sample word-count job, prints the result.\n" +
        "--metrics-listen: every node serves Prometheus metrics, on PORT, PORT+1, … (0: free ports).\n" +
        "--dashboard: the masters serve the web dashboard (its URLs, with their tokens, are printed).",
    );
    return 0;
  }
  const t0 = Date.now();
  console.log("starting local cluster…");
  const cluster = await LocalCluster.start({
    dataDir: values.data,
    workers: Number(values.workers),
    masters: Number(values.masters),
    slotsPerWorker: Number(values.slots),
    storageNodes: Number(values.storage),
    standbyBalancer: true,
    metricsListen: values["metrics-listen"],
    ...(values.dashboard ? { extraArgs: { master: ["--dashboard-listen", "127.0.0.1:0"] } } : {}),
  });
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    console.log("stopping cluster…");
    await cluster.stop();
  };
  const onSignal = () => {
    shutdown().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const client = new DsysClient(cluster.info);
  try {
    console.log(
      `cluster up in ${Date.now() - t0} ms: masters ${cluster.info.masters.join(" ")}, balancer ` +
        `${cluster.info.balancer}, storage ${cluster.info.storage} (${values.storage} nodes), ` +
        `${values.workers} workers ` +
        `(data and logs in ${cluster.dataDir})`,
    );
    for (const p of cluster.procs.values()) {
      if (!p.dashboard) continue;
      const tokenFile = `${p.args[p.args.indexOf("--data") + 1]}/dashboard.token`;
      const token = (await Deno.readTextFile(tokenFile)).trim();
      console.log(`dashboard (${p.name}): http://${p.dashboard}/?token=${token}`);
      // The cluster file (--keep) names the first, for `dsys dashboard`.
      cluster.info.dashboard ??= `http://${p.dashboard}`;
      cluster.info.dashboardTokenFile ??= tokenFile;
    }
    if (values["metrics-listen"]) {
      const eps = [...cluster.procs.values()].map((p) => `${p.name} http://${p.metrics}/metrics`);
      console.log(`metrics: ${eps.join(", ")}`);
    }
    const corpus: string[] = [];
    for await (const e of Deno.readDir(new URL("corpus/", SAMPLE))) {
      if (e.isFile) corpus.push(new URL(`corpus/${e.name}`, SAMPLE).pathname);
    }
    corpus.sort();
    const stored = await client.put(corpus);
    console.log(
      `stored ${stored.length} input files (${stored.reduce((a, s) => a + s.size, 0)} bytes)`,
    );
    const program = await Deno.readFile(new URL("wordcount.sh", SAMPLE));
    const job = await client.submit({
      program,
      programName: "wordcount.sh",
      argument: "",
      chunks: Number(values.chunks),
      inputs: stored.map((s) => ({ id: s.id, name: s.path.split("/").pop()! })),
      timeLimitMs: 60_000,
    });
    console.log(`job ${uuidToHex(job)}: ${values.chunks} chunks`);
    const s = await waitWithProgress(client, job, true);
    if (s.state !== ChunkState.Succeeded) {
      console.error(`job failed: ${s.failed} chunks failed`);
      for (const c of s.chunks.filter((c) => c.state === ChunkState.Failed)) {
        console.error(`  chunk ${c.chunkIndex}: ${c.reason}`);
      }
      return 3;
    }
    const texts: string[] = [];
    for (const c of s.chunks) {
      const out = c.outputs.find((o) => o.name === "counts.txt");
      if (!out) throw new Error(`chunk ${c.chunkIndex} produced no counts.txt`);
      texts.push(new TextDecoder().decode(await client.storage.getBytes(out.id)));
    }
    const total = mergeCounts(texts);
    const words = [...total.values()].reduce((a, b) => a + b, 0);
    console.log(`\n${words} words, ${total.size} distinct; most frequent:`);
    const top = [...total.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    for (const [w, n] of top.slice(0, 15)) console.log(`  ${String(n).padStart(7)}  ${w}`);
    console.log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (values.keep) {
      const path = clusterFilePath();
      await Deno.mkdir(path.slice(0, path.lastIndexOf("/")) || ".", { recursive: true });
      await Deno.writeTextFile(path, JSON.stringify(cluster.info, null, 2) + "\n");
      console.log(
        `\ncluster kept running (${path}); try: scripts/dsys nodes, scripts/dsys status ` +
          `${uuidToHex(job)}. Ctrl-C stops it.`,
      );
      await new Promise(() => {}); // until a signal
    }
    return 0;
  } finally {
    await client.close();
    if (!values.keep) {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
      await shutdown();
    }
  }
}
