/**
 * A node's `--metrics-listen HOST:PORT` endpoint: `GET /metrics` answers the registry in the
 * Prometheus text format over plain HTTP (`Deno.serve`), as Prometheus scrapes it. Nothing else is
 * served. The page holds counts, sizes and durations only (no ids, names, keys or file
 * contents) and reading it changes nothing; still, it is unauthenticated, so bind it to an
 * address only the monitoring host reaches (docs/operations.md, "What to watch").
 */
import process from "node:process";
import type { Logger } from "./log.ts";
import { type Registry, TEXT_CONTENT_TYPE } from "./metrics.ts";
import { VERSION } from "./version.ts";

/** A bad `--metrics-listen` value. */
export class MetricsListenError extends Error {
  constructor(message: string) {
    super(`MetricsListenError: ${message}`);
    this.name = "MetricsListenError";
  }
}

/** `HOST:PORT` or `[V6]:PORT` (port 0: any free port) as hostname and port. */
export function parseMetricsListen(s: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([a-zA-Z0-9.-]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new MetricsListenError(`--metrics-listen ${s} is not HOST:PORT (port 0 = any free port)`);
  }
  return { hostname: m[1] ?? m[2], port };
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** Where it listens, `HOST:PORT` (the bound port when 0 was asked). */
  address: string;
  close(): Promise<void>;
}

/** Serves `registry` at `http://listen/metrics` until closed. */
export async function startMetricsServer(
  registry: Registry,
  listen: string,
  log: Logger,
): Promise<MetricsServer> {
  const { hostname, port } = parseMetricsListen(listen);
  const ready = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname,
    port,
    onListen: (addr) => ready.resolve(addr as Deno.NetAddr),
    onError: (e) => {
      log.error("metrics scrape failed", { error: e });
      return new Response("internal error\n", { status: 500 });
    },
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (path !== "/metrics") return new Response("not found: try /metrics\n", { status: 404 });
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    const text = registry.render();
    if (registry.lastCollectError !== undefined) {
      log.error("a metrics collector failed; its series are stale", {
        error: registry.lastCollectError,
      });
      registry.lastCollectError = undefined;
    }
    return new Response(req.method === "HEAD" ? null : text, {
      headers: { "content-type": TEXT_CONTENT_TYPE },
    });
  });
  const addr = await ready.promise;
  const address = addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
  log.info("metrics listening", { metrics: address });
  return {
    address,
    async close() {
      await server.shutdown();
    },
  };
}

/**
 * The process series every role has, by the Prometheus client conventions
 * (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_start_time_seconds`),
 * plus `dsys_build_info{role,version}` (always 1).
 */
export function registerProcessMetrics(registry: Registry, role: string): void {
  const rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  const heap = registry.gauge("process_heap_bytes", "JavaScript heap in use, bytes.");
  const cpu = registry.counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
  );
  const start = registry.gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
  );
  const info = registry.gauge("dsys_build_info", "The node's role and version (always 1).", {
    role: [role],
    version: [VERSION],
  });
  info.set(1, { role, version: VERSION });
  start.set(Math.round(performance.timeOrigin) / 1000);
  registry.onCollect(() => {
    const mem = Deno.memoryUsage();
    rss.set(mem.rss);
    heap.set(mem.heapUsed);
    const { user, system } = process.cpuUsage(); // microseconds
    cpu.setTotal((user + system) / 1e6);
  });
}
