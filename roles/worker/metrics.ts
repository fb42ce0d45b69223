/**
 * A worker's metrics (`--metrics-listen`): the chunks it ran and how long they ran, and its input
 * cache: which inputs a chunk found cached (locality), the bytes fetched from storage, and the
 * FUSE mount's own counters, read at scrape time. The worker calls `chunkEnded`, `input` and
 * `fetched` where those happen; nothing else of it changes. Names: docs/operations.md.
 */
import { type Registry, RUN_TIME_BUCKETS_SECONDS } from "../../lib/metrics.ts";
import { ChunkState, type WorkerStatus } from "../../wire/mod.ts";
import type { WorkerNode } from "./main.ts";

const RESULTS = ["succeeded", "failed", "cancelled", "lost"] as const;

/** The worker's series on one registry. */
export class WorkerMetrics {
  readonly #registry: Registry;
  readonly #chunks;
  readonly #runSeconds;
  readonly #hits;
  readonly #misses;
  readonly #inputBytes;
  readonly #fetchedBytes;

  constructor(registry: Registry) {
    this.#registry = registry;
    this.#chunks = registry.counter(
      "dsys_worker_chunks_total",
      "Chunk attempts this worker ended, by result.",
      { result: RESULTS },
    );
    this.#runSeconds = registry.histogram(
      "dsys_worker_chunk_run_seconds",
      "Run time of each chunk's program, succeeded or failed (0: it never started), seconds.",
      RUN_TIME_BUCKETS_SECONDS,
    );
    this.#hits = registry.counter(
      "dsys_worker_cache_hits_total",
      "Input files a chunk found in the local cache when it started.",
    );
    this.#misses = registry.counter(
      "dsys_worker_cache_misses_total",
      "Input files not in the local cache when a chunk started (fetched on first read).",
    );
    this.#inputBytes = registry.counter(
      "dsys_worker_input_bytes_total",
      "Bytes of chunks' input files, by where they were when the chunk started (locality).",
      { source: ["cache", "storage"] },
    );
    this.#fetchedBytes = registry.counter(
      "dsys_worker_cache_fetched_bytes_total",
      "Bytes fetched from storage into the local cache (inputs and programs, verified).",
    );
  }

  /** Reads the node's counters (running chunks, the FUSE mount's) at every scrape. */
  watch(node: WorkerNode): void {
    const r = this.#registry;
    const running = r.gauge("dsys_worker_running_chunks", "Chunks running on this worker now.");
    const evictions = r.counter(
      "dsys_worker_cache_evictions_total",
      "Cache files evicted (least recently used first) to stay within --cache-bytes.",
    );
    const fetches = r.counter(
      "dsys_worker_cache_fetches_total",
      "Fetches of a missing cache file from storage, by result.",
      { result: ["started", "failed"] },
    );
    const opens = r.counter(
      "dsys_worker_fuse_opens_total",
      "Opens of input files through the FUSE mount, by how their reads are served " +
        "(passthrough: by the kernel from the cache file).",
      { path: ["passthrough", "fuse"] },
    );
    const readBytes = r.counter(
      "dsys_worker_fuse_read_bytes_total",
      "Bytes read through the FUSE mount in user space (passthrough reads are not seen).",
    );
    r.onCollect(() => {
      const s = node.stats();
      running.set(s.running);
      evictions.setTotal(s.fuse.evictions);
      fetches.setTotal(s.fuse.fetchRequests, { result: "started" });
      fetches.setTotal(s.fuse.fetchFailures, { result: "failed" });
      opens.setTotal(s.fuse.passthroughOpens, { path: "passthrough" });
      opens.setTotal(Math.max(0, s.fuse.opens - s.fuse.passthroughOpens), { path: "fuse" });
      readBytes.setTotal(s.fuse.readBytes);
    });
  }

  /** A chunk attempt ended: with `status` (its result), cancelled, or lost (shutting down). */
  chunkEnded(status: WorkerStatus | null, cancelled?: boolean, aborted?: boolean): void {
    if (cancelled) return this.#chunks.inc({ result: "cancelled" });
    if (aborted || !status) return this.#chunks.inc({ result: "lost" });
    const ok = status.state === ChunkState.Succeeded;
    this.#chunks.inc({ result: ok ? "succeeded" : "failed" });
    this.#runSeconds.observe(status.durationMs / 1000);
  }

  /** A chunk starts with an input file of `size` bytes whose cache file is `cachePath`. */
  input(size: number, cachePath: string): void {
    let cached = false;
    try {
      cached = Deno.statSync(cachePath).isFile;
    } catch { /* not cached */ }
    (cached ? this.#hits : this.#misses).inc();
    this.#inputBytes.inc({ source: cached ? "cache" : "storage" }, size);
  }

  /** `bytes` were fetched from storage into the cache. */
  fetched(bytes: number): void {
    this.#fetchedBytes.inc(undefined, bytes);
  }
}
