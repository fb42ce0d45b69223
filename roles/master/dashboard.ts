/**
 * The masters' web dashboard (`--dashboard-listen HOST:PORT`): the cluster's nodes, chunks
 * finished per second, the jobs this master's table holds and one job's chunks, updated live over
 * server-sent events (issue 14, part 3; docs/operations.md says what is not there yet).
 *
 * Authenticated by a token: a random 256-bit secret in `<data>/dashboard.token` (mode 0600,
 * made at first start), shown to whoever can read that file (the master's operator; `dsys dev`
 * prints the URL). `GET /?token=T` sets it as an HttpOnly, SameSite=Strict cookie; every other
 * request needs that cookie (or `Authorization: Bearer T`). The token shows every job (like an
 * admin key). Plain HTTP: put it behind TLS or keep it on a private address.
 *
 * Bounded: at most MAX_EVENT_STREAMS streams at once; each sends a view (bounded by
 * dashboard_view.ts) only when it changed, checked every UPDATE_MS.
 */
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "../../lib/log.ts";
import { parseMetricsListen } from "../../lib/metrics_server.ts";
import { DASHBOARD_HTML } from "./dashboard_page.ts";
import {
  dashboardView,
  finishedChunks,
  nodeSummaries,
  type NodeSummary,
  OutputBytes,
  THROUGHPUT_PERIOD_MS,
  ThroughputRing,
} from "./dashboard_view.ts";
import type { JobTable } from "./job_table.ts";
import type { NodeEntry } from "../../wire/mod.ts";

/** Streams of `/events` served at once; more are refused (503). */
export const MAX_EVENT_STREAMS = 32;
/** How often a stream checks for a changed view, ms. */
export const UPDATE_MS = 250;
/** How often the node list is asked for while a page is open, ms. */
const NODES_MS = 2000;
/** A comment line is sent this often on a quiet stream, so proxies keep it open, ms. */
const KEEPALIVE_MS = 15_000;
const COOKIE = "dsys_dashboard";
const HEX_ID = /^[0-9a-f]{32}$/;

/** Reads the dashboard token of a master's data directory, making one on first use. */
export async function dashboardToken(dataDir: string): Promise<string> {
  const path = `${dataDir}/dashboard.token`;
  try {
    const t = (await Deno.readTextFile(path)).trim();
    if (/^[0-9a-f]{64}$/.test(t)) return t;
    throw new Error(`${path} is not 64 hex digits: delete it to make a new token`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const token = Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  await Deno.writeTextFile(path, token + "\n", { mode: 0o600, createNew: true });
  return token;
}

/** A running dashboard. */
export interface Dashboard {
  /** `HOST:PORT` it listens on. */
  address: string;
  close(): Promise<void>;
}

/** Options of the dashboard server. */
export interface DashboardOptions {
  listen: string;
  token: string;
  log: Logger;
  /** This master's Raft id (or endpoint), shown on the page. */
  self: string;
  /** The current job table. */
  table: () => JobTable;
  isLeader: () => boolean;
  /** The cluster's nodes, as `dsys nodes` lists them. */
  nodes: () => Promise<NodeEntry[]>;
}

function tokenOk(given: string | null, token: string): boolean {
  if (given === null) return false;
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function requestToken(req: Request): string | null {
  const auth = req.headers.get("authorization");
  if (auth?.startsWith("Bearer ")) return auth.slice(7);
  for (const part of (req.headers.get("cookie") ?? "").split(";")) {
    const [k, v] = part.trim().split("=");
    if (k === COOKIE && v !== undefined) return v;
  }
  return null;
}

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** Starts the dashboard's HTTP server. */
export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const { hostname, port } = parseMetricsListen(o.listen);
  let streams = 0;
  const closers = new Set<() => void>();
  const chunkRate = new ThroughputRing();
  const byteRate = new ThroughputRing();
  const outputBytes = new OutputBytes();
  const sample = () => {
    chunkRate.sample(finishedChunks(o.table()));
    byteRate.sample(outputBytes.total(o.table()));
  };
  const sampler = setInterval(sample, THROUGHPUT_PERIOD_MS);
  sample();
  // The node list costs a request to each balancer and storage: asked only while someone looks.
  let nodes: NodeSummary[] = [];
  let nodesAsked = 0;
  const refreshNodes = () => {
    if (Date.now() - nodesAsked < NODES_MS) return;
    nodesAsked = Date.now();
    o.nodes().then((n) => nodes = nodeSummaries(n), (e) => {
      o.log.debug("dashboard: node list failed", { error: e });
    });
  };
  const view = (job: string | null, chunk: number | null) => {
    refreshNodes();
    return dashboardView(o.table(), o.self, o.isLeader(), job, Date.now(), {
      nodes,
      chunksPerSecond: chunkRate.values,
      bytesPerSecond: byteRate.values,
    }, chunk);
  };
  const ready = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname,
    port,
    onListen: (addr) => ready.resolve(addr as Deno.NetAddr),
    onError: (e) => {
      o.log.error("dashboard request failed", { error: e });
      return new Response("internal error\n", { status: 500 });
    },
  }, (req) => {
    const url = new URL(req.url);
    if (req.method !== "GET") return new Response("method not allowed\n", { status: 405 });
    const fromQuery = url.searchParams.get("token");
    if (url.pathname === "/" && fromQuery !== null) {
      if (!tokenOk(fromQuery, o.token)) return new Response("bad token\n", { status: 403 });
      // Into a cookie, and out of the address bar (and the history).
      const job = url.searchParams.get("job");
      return new Response(null, {
        status: 303,
        headers: {
          location: job && HEX_ID.test(job) ? `/?job=${job}` : "/",
          "set-cookie": `${COOKIE}=${o.token}; HttpOnly; SameSite=Strict; Path=/`,
          ...SECURITY_HEADERS,
        },
      });
    }
    if (!tokenOk(requestToken(req), o.token)) {
      return new Response("open the URL with ?token=… (the master's <data>/dashboard.token)\n", {
        status: 401,
      });
    }
    if (url.pathname === "/") {
      return new Response(DASHBOARD_HTML, {
        headers: { "content-type": "text/html; charset=utf-8", ...SECURITY_HEADERS },
      });
    }
    if (url.pathname !== "/events") return new Response("not found\n", { status: 404 });
    const job = url.searchParams.get("job");
    if (job !== null && !HEX_ID.test(job)) {
      return new Response("job must be 32 hex digits\n", { status: 400 });
    }
    const chunkText = url.searchParams.get("chunk");
    const chunk = chunkText === null ? null : Number(chunkText);
    if (chunk !== null && (!/^\d{1,7}$/.test(chunkText!) || job === null)) {
      return new Response("chunk must be a chunk index of the job\n", { status: 400 });
    }
    if (streams >= MAX_EVENT_STREAMS) {
      return new Response("too many dashboard streams\n", { status: 503 });
    }
    streams++;
    const enc = new TextEncoder();
    let timer: ReturnType<typeof setInterval> | undefined;
    let last = "";
    let quietSince = Date.now();
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(timer);
      streams--;
      closers.delete(stop);
    };
    let stop = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(ctrl) {
        const tick = () => {
          try {
            const text = JSON.stringify(view(job, chunk));
            if (text !== last) {
              last = text;
              quietSince = Date.now();
              ctrl.enqueue(enc.encode(`data: ${text}\n\n`));
            } else if (Date.now() - quietSince > KEEPALIVE_MS) {
              quietSince = Date.now();
              ctrl.enqueue(enc.encode(": keepalive\n\n"));
            }
          } catch (e) {
            o.log.warn("dashboard stream ended", { error: e });
            end();
            try {
              ctrl.close();
            } catch { /* closed */ }
          }
        };
        stop = () => {
          end();
          try {
            ctrl.close();
          } catch { /* closed */ }
        };
        closers.add(stop);
        tick();
        timer = setInterval(tick, UPDATE_MS);
      },
      cancel: end,
    });
    return new Response(body, {
      headers: { "content-type": "text/event-stream", ...SECURITY_HEADERS },
    });
  });
  const addr = await ready.promise;
  const address = `${addr.hostname}:${addr.port}`;
  o.log.info("dashboard listening", { dashboard: address });
  return {
    address,
    async close() {
      clearInterval(sampler);
      for (const c of [...closers]) c();
      await server.shutdown();
    },
  };
}
