/**
 * Metrics end to end: a real cluster (three masters, two balancers, storage, two workers), every
 * node started with `--metrics-listen 127.0.0.1:0`, scraped by a real Prometheus (tests/
 * prometheus.ts); a job runs, and the series it should move moved, as Prometheus's query API
 * reads them. Each node's page also passes `promtool check metrics` (Prometheus's own parser
 * and naming lint).
 */
import assert from "node:assert/strict";
import { withCluster } from "./cluster_helpers.ts";
import { type Prometheus, type Sample, startPrometheus } from "./prometheus.ts";
import { waitFor, waitForJob } from "./wait.ts";
import { ChunkState } from "../wire/mod.ts";
import type { LocalCluster } from "../client/local_cluster.ts";

const CHUNKS = 6;
const INPUT_BYTES = 300_000;
/** Every chunk reads the whole input through its worker's FUSE mount (wc -c would only stat it). */
const PROGRAM = new TextEncoder().encode(`#!/bin/sh
sha256sum < "$DSYS_INPUT_DIR/in.bin"
`);

/** One value per node (the `node` target label) of an instant query. */
async function perNode(prom: Prometheus, promql: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const s of await prom.query(promql) as Sample[]) out.set(s.labels.node, s.value);
  return out;
}

/** The names of the cluster's nodes of `role`. */
function nodesOf(cluster: LocalCluster, role: string): string[] {
  return [...cluster.procs.values()].filter((p) => p.role === role).map((p) => p.name);
}

/** Runs `promtool check metrics` on a node's page: the text format and naming conventions. */
async function promtoolCheck(name: string, page: string): Promise<void> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(page));
  await w.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `promtool check metrics on ${name}'s page:\n${text}`);
}

Deno.test("metrics: Prometheus scrapes every role; a job moves the series it should", async () => {
  await withCluster({
    masters: 3,
    workers: 2,
    slotsPerWorker: 2,
    standbyBalancer: true,
    metricsListen: "127.0.0.1:0",
  }, async (cluster, client) => {
    const procs = [...cluster.procs.values()];
    for (const p of procs) assert.match(p.metrics ?? "", /^127\.0\.0\.1:\d+$/, p.name);
    const prom = await startPrometheus(
      procs.map((p) => ({ address: p.metrics!, labels: { node: p.name } })),
    );
    try {
      const masters = nodesOf(cluster, "master");
      const balancers = nodesOf(cluster, "balancer");
      const workers = nodesOf(cluster, "worker");
      await waitFor("Prometheus to scrape every node", async () => {
        const up = await perNode(prom, "up");
        return procs.every((p) => up.get(p.name) === 1);
      }, { timeoutMs: 60_000, intervalMs: 200 });

      const before = {
        commit: await perNode(prom, "dsys_raft_commit_index"),
        fsyncs: await perNode(prom, "dsys_raft_fsync_seconds_count"),
        commits: await perNode(prom, "dsys_raft_commit_latency_seconds_count"),
        placements: await perNode(prom, "dsys_balancer_placements_total"),
        finished: await perNode(prom, "dsys_balancer_chunks_finished_total"),
        zmq: await perNode(prom, "sum by (node) (dsys_zmq_messages_total)"),
        putBytes: await perNode(prom, "dsys_storage_put_bytes_total"),
        getBytes: await perNode(prom, "dsys_storage_get_bytes_total"),
        succeeded: await perNode(prom, 'dsys_worker_chunks_total{result="succeeded"}'),
        runs: await perNode(prom, "dsys_worker_chunk_run_seconds_count"),
        inputBytes: await perNode(prom, "sum by (node) (dsys_worker_input_bytes_total)"),
        fetched: await perNode(prom, "dsys_worker_cache_fetched_bytes_total"),
      };
      const dir = await Deno.makeTempDir();
      const input = new Uint8Array(INPUT_BYTES).map((_, i) => (i * 7) & 0xff);
      await Deno.writeFile(`${dir}/in.bin`, input);
      const [put] = await client.put([`${dir}/in.bin`]);
      await Deno.remove(dir, { recursive: true });
      const job = await client.submit({
        program: PROGRAM,
        programName: "count.sh",
        argument: "",
        chunks: CHUNKS,
        inputs: [{ id: put.id, name: "in.bin" }],
        timeLimitMs: 60_000,
      });
      const s = await waitForJob(client, job);
      assert.equal(s.state, ChunkState.Succeeded, JSON.stringify(s.chunks.map((c) => c.reason)));

      // What the job must have moved, as Prometheus sees it (scraped every second).
      const sum = (m: Map<string, number>, names: string[]) =>
        names.reduce((a, n) => a + (m.get(n) ?? 0), 0);
      const checks: [string, () => Promise<boolean>][] = [
        ["every master counts the job's chunks succeeded", async () => {
          const m = await perNode(prom, 'dsys_master_chunks{state="succeeded"}');
          return masters.every((n) => m.get(n) === CHUNKS);
        }],
        ["every master counts one succeeded job", async () => {
          const m = await perNode(prom, 'dsys_master_jobs{state="succeeded"}');
          return masters.every((n) => m.get(n) === 1);
        }],
        ["the commit index rose on every master", async () => {
          const m = await perNode(prom, "dsys_raft_commit_index");
          return masters.every((n) => (m.get(n) ?? 0) > (before.commit.get(n) ?? Infinity));
        }],
        ["every master fsync'd more Raft entries", async () => {
          const m = await perNode(prom, "dsys_raft_fsync_seconds_count");
          return masters.every((n) => (m.get(n) ?? 0) > (before.fsyncs.get(n) ?? Infinity));
        }],
        ["commit latencies were observed (the submission and the reports)", async () => {
          const m = await perNode(prom, "dsys_raft_commit_latency_seconds_count");
          return sum(m, masters) >= sum(before.commits, masters) + 2;
        }],
        ["one leader, a term on every master, a leader change seen by each", async () => {
          const lead = await perNode(prom, "dsys_raft_leader");
          const term = await perNode(prom, "dsys_raft_term");
          const changes = await perNode(prom, "dsys_raft_leader_changes_total");
          return sum(lead, masters) === 1 && masters.every((n) => (term.get(n) ?? 0) >= 1) &&
            masters.every((n) => (changes.get(n) ?? 0) >= 1);
        }],
        ["the primary balancer placed every chunk", async () => {
          const m = await perNode(prom, "dsys_balancer_placements_total");
          return sum(m, balancers) >= sum(before.placements, balancers) + CHUNKS;
        }],
        ["the balancers saw every chunk finish; one primary; queue empty", async () => {
          const f = await perNode(prom, "dsys_balancer_chunks_finished_total");
          const primary = await perNode(prom, "dsys_balancer_primary");
          const depth = await perNode(prom, "dsys_balancer_queue_depth");
          return sum(f, balancers) >= sum(before.finished, balancers) + CHUNKS &&
            sum(primary, balancers) === 1 && balancers.every((n) => depth.get(n) === 0);
        }],
        [
          "storage took the input and the program, and served the input to the workers",
          async () => {
            const put = await perNode(prom, "dsys_storage_put_bytes_total");
            const got = await perNode(prom, "dsys_storage_get_bytes_total");
            const stored = await perNode(prom, "dsys_storage_stored_bytes");
            const puts = await perNode(prom, 'dsys_storage_request_seconds_count{op="put"}');
            return (put.get("storage") ?? 0) >=
                (before.putBytes.get("storage") ?? Infinity) + INPUT_BYTES + PROGRAM.length &&
              (got.get("storage") ?? 0) >=
                (before.getBytes.get("storage") ?? Infinity) + INPUT_BYTES &&
              (stored.get("storage") ?? 0) >= INPUT_BYTES + PROGRAM.length &&
              (puts.get("storage") ?? 0) >= 2;
          },
        ],
        ["the workers ran every chunk, and their run times were observed", async () => {
          const ok = await perNode(prom, 'dsys_worker_chunks_total{result="succeeded"}');
          const runs = await perNode(prom, "dsys_worker_chunk_run_seconds_count");
          // At least: a chunk may run twice (a push whose answer was lost) but ends once.
          return sum(ok, workers) >= sum(before.succeeded, workers) + CHUNKS &&
            sum(runs, workers) >= sum(before.runs, workers) + CHUNKS;
        }],
        [
          "every chunk's input counted, cached or fetched; the fetched bytes reached the cache",
          async () => {
            const input = await perNode(prom, "sum by (node) (dsys_worker_input_bytes_total)");
            const hits = await perNode(prom, "dsys_worker_cache_hits_total");
            const misses = await perNode(prom, "dsys_worker_cache_misses_total");
            const fetched = await perNode(prom, "dsys_worker_cache_fetched_bytes_total");
            // Each worker fetched the input once at most (then it was cached); some worker did.
            return sum(input, workers) >= sum(before.inputBytes, workers) + CHUNKS * INPUT_BYTES &&
              sum(hits, workers) + sum(misses, workers) >= CHUNKS && sum(misses, workers) >= 1 &&
              sum(fetched, workers) >= sum(before.fetched, workers) + INPUT_BYTES;
          },
        ],
        ["every node has RSS and CPU time", async () => {
          const rss = await perNode(prom, "process_resident_memory_bytes");
          const cpu = await perNode(prom, "process_cpu_seconds_total");
          return procs.every((p) => (rss.get(p.name) ?? 0) > 1 << 20 && (cpu.get(p.name) ?? 0) > 0);
        }],
        ["every node sent and received ZeroMQ messages during the job", async () => {
          const m = await perNode(prom, "sum by (node) (dsys_zmq_messages_total)");
          return procs.every((p) => (m.get(p.name) ?? 0) > (before.zmq.get(p.name) ?? Infinity));
        }],
      ];
      const failing = async () => {
        const out: string[] = [];
        for (const [what, ok] of checks) if (!(await ok())) out.push(what);
        return out;
      };
      let last: string[] = [];
      try {
        await waitFor("the job's series to move in Prometheus", async () => {
          last = await failing();
          return last.length === 0;
        }, { timeoutMs: 60_000, intervalMs: 500, detail: () => `not yet: ${last.join("; ")}` });
      } catch (e) {
        // What Prometheus has of the roles' own series, to see which one stayed put.
        const seen = await prom.query('{__name__=~"dsys_(storage|worker|balancer|master)_.*"}');
        console.error(JSON.stringify(before));
        for (const x of seen) console.error(JSON.stringify(x.labels), x.value);
        throw e;
      }

      // Garbage instead of HTTP, and a wrong path, are refused; every node serves on.
      for (const p of procs) {
        const [hostname, port] = p.metrics!.split(":");
        const conn = await Deno.connect({ hostname, port: Number(port) });
        await conn.write(new Uint8Array(65536).fill(0x41)).catch(() => 0); // a reset refuses too
        conn.close();
        const r = await fetch(`http://${p.metrics}/other`);
        await r.body?.cancel();
        assert.equal(r.status, 404, p.name);
      }
      // Each node's page as it is now, through Prometheus's own parser and lint.
      for (const p of procs) {
        const page = await (await fetch(`http://${p.metrics}/metrics`)).text();
        await promtoolCheck(p.name, page);
      }
    } finally {
      await prom.close();
    }
  });
});
