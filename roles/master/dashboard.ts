/**
 * The masters' web dashboard (`--dashboard-listen HOST:PORT`): the cluster's nodes, chunks
 * finished per second, the jobs and one job's chunks, updated live over server-sent events, and
 * each chunk's log and output files (issue 14, part 3; docs/operations.md, "The dashboard").
 *
 * **Any master shows the leader's view.** A follower's table may lag, and only the leader knows
 * the storage nodes, so a follower proxies `/events`, `/log` and `/output` to the leader's
 * dashboard (found by dashboard_leader.ts), marking its streams with a `via` event; it serves
 * its own view only while it knows no reachable leader's. Proxying rather than redirecting keeps
 * the browser on the address it was given: a page open on a follower survives the leader's
 * death (its stream ends, EventSource reconnects, the follower proxies to the new leader or now
 * leads itself), and one login works whichever master leads. A proxied request carries
 * `x-dsys-via` and is always served locally, so two masters that disagree on the leader cannot
 * bounce a request between them.
 *
 * **Authenticated by a token**, the same on every master of a keyed cluster: HMAC-SHA256 of the
 * cluster secret (which every master holds) and a fixed label, so any master's
 * `<data>/dashboard.token` (mode 0600, rewritten at start) logs in to all of them and a
 * follower authenticates to the leader with it (`Authorization: Bearer`). It reveals nothing of
 * the secret; changing it means changing the cluster secret. Without keys (`--insecure`) each
 * master makes a random token of its own, and a follower can then only show its own view.
 * `GET /?token=T` sets it as an HttpOnly, SameSite=Strict cookie and redirects to a URL without
 * it; every other request needs that cookie (or the Bearer header). It is never logged. The token
 * is an admin's view: every job, every log, every output (the dashboard has no users). Plain
 * HTTP: put it behind TLS or keep it on a private address.
 *
 * **Bounded:** at most MAX_EVENT_STREAMS streams and MAX_DOWNLOADS log or output responses at
 * once (proxied ones included); a stream sends a view (bounded by dashboard_view.ts) only when
 * it changed, checked every UPDATE_MS; files and logs are streamed in pieces (dashboard_files.ts).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
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
import { JobTable } from "./job_table.ts";
import { ChunkState, type NodeEntry, uuidFromHex } from "../../wire/mod.ts";
import type { ChunkFiles } from "./dashboard_files.ts";
import type { LeaderDashboard } from "./dashboard_leader.ts";

/** Streams of `/events` served at once; more are refused (503). */
export const MAX_EVENT_STREAMS = 32;
/** How often a stream checks for a changed view, ms. */
export const UPDATE_MS = 250;
/** Log and output responses served at once (proxied ones included); more are refused (503). */
export const MAX_DOWNLOADS = 8;
/** Header of a request a follower proxies to the leader (its value: the follower's name). */
export const VIA_HEADER = "x-dsys-via";
/** How long an EventSource waits before it reconnects to a stream that ended, ms. */
const RECONNECT_MS = 500;
/** How often a follower's own stream checks whether a leader's dashboard is known again, ms. */
const LEADER_CHECK_MS = 1000;
/** How long a follower waits for the leader's dashboard to answer a proxied request, ms. */
const PROXY_HEADERS_MS = 5000;
/** How often a stream asks which of its job's chunks run, ms. */
const RUNNING_MS = 1000;
/** How often the node list is asked for while a page is open, ms. */
const NODES_MS = 2000;
/** A comment line is sent this often on a quiet stream, so proxies keep it open, ms. */
const KEEPALIVE_MS = 15_000;
const COOKIE = "dsys_dashboard";
const HEX_ID = /^[0-9a-f]{32}$/;

const TOKEN_LABEL = "dsys dashboard token v1";

/**
 * The dashboard token of a master: with the cluster secret, the HMAC of it (the same on every
 * master), else a random one kept in `<data>/dashboard.token`. Written there either way (mode
 * 0600), for the operator and `dsys dashboard`.
 */
export async function dashboardToken(dataDir: string, clusterSecret?: Uint8Array): Promise<string> {
  const path = `${dataDir}/dashboard.token`;
  let kept: string | null = null;
  try {
    kept = (await Deno.readTextFile(path)).trim();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (clusterSecret) {
    const token = createHmac("sha256", clusterSecret).update(TOKEN_LABEL).digest("hex");
    if (kept !== token) {
      const tmp = `${path}.tmp`;
      await Deno.writeTextFile(tmp, token + "\n", { mode: 0o600 });
      await Deno.chmod(tmp, 0o600);
      await Deno.rename(tmp, path);
    }
    return token;
  }
  if (kept !== null) {
    if (/^[0-9a-f]{64}$/.test(kept)) return kept;
    throw new Error(`${path} is not 64 hex digits: delete it to make a new token`);
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
  /** `http://HOST:PORT` other masters reach it at (the leader's is proxied to). */
  url: string;
  close(): Promise<void>;
}

/** Options of the dashboard server. */
export interface DashboardOptions {
  listen: string;
  /**
   * `HOST:PORT` other masters reach it at (`--dashboard-advertise`); default: the address it
   * listens on, with the host of `endpoint` for a wildcard one (0.0.0.0, ::).
   */
  advertise?: string;
  /** This master's ZeroMQ endpoint, `tcp://HOST:PORT`. */
  endpoint: string;
  token: string;
  log: Logger;
  /** This master's Raft id (or endpoint), shown on the page. */
  self: string;
  /** The current job table. */
  table: () => JobTable;
  isLeader: () => boolean;
  /** This master's Raft term (absent: a lone master). */
  term?: () => number;
  /** The cluster's nodes, as `dsys nodes` lists them. */
  nodes: () => Promise<NodeEntry[]>;
  /** Where the leader's dashboard is, for a follower (absent: a lone master). */
  leader?: LeaderDashboard;
  /**
   * The chunks of `job` that run now, by index, with the node id of the worker running each
   * (the leader knows them from the workers' running reports, outside the table).
   */
  running: (job: Uint8Array) => Promise<Map<number, Uint8Array>>;
  /** The chunk links' bytes. */
  files: ChunkFiles;
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

const text = (status: number, body: string) =>
  new Response(body + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...SECURITY_HEADERS },
  });

/** Headers of a file or log: its bytes are a job's, so nothing in them may run on this origin. */
const FILE_HEADERS = {
  ...SECURITY_HEADERS,
  "content-security-policy": "sandbox; default-src 'none'",
};
const TEXT_NAME = /(^stdout$|^stderr$|\.(txt|log|csv|tsv|json|md)$)/;

/** Content-Type and -Disposition of an output named `name` (text inline, else a download). */
function fileHeaders(name: string): Record<string, string> {
  if (TEXT_NAME.test(name)) return { "content-type": "text/plain; charset=utf-8" };
  const ascii = name.replace(/[^A-Za-z0-9._-]/g, "_");
  return {
    "content-type": "application/octet-stream",
    "content-disposition": `attachment; filename="${ascii}"; filename*=UTF-8''${
      encodeURIComponent(name)
    }`,
  };
}

/** Response headers passed on from the leader's dashboard by a proxying follower. */
const PASSED_HEADERS = ["content-type", "content-length", "content-disposition"];

/** `HOST:PORT` of a dashboard bound to `addr`, a wildcard host replaced by `endpoint`'s. */
export function advertisedAddress(addr: Deno.NetAddr, endpoint: string): string {
  let host = addr.hostname;
  if (host === "0.0.0.0" || host === "::") {
    host = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):\d+$/.exec(endpoint)?.[1] ?? host;
  }
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `${host}:${addr.port}`;
}

/** Starts the dashboard's HTTP server. */
export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const { hostname, port } = parseMetricsListen(o.listen);
  let streams = 0;
  let downloads = 0;
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
  const view = (
    job: string | null,
    chunk: number | null,
    running: ReadonlyMap<number, Uint8Array>,
  ) => {
    refreshNodes();
    return dashboardView(
      o.table(),
      o.self,
      o.isLeader(),
      job,
      Date.now(),
      {
        nodes,
        chunksPerSecond: chunkRate.values,
        bytesPerSecond: byteRate.values,
        term: o.term?.() ?? 0,
      },
      chunk,
      running,
    );
  };

  /**
   * `body` as a response body that holds its slot (given back by `release`) until it ends, is
   * cancelled, `superseded` says so (checked every LEADER_CHECK_MS) or the dashboard closes;
   * `prefix` is sent first, `abort` is called at the end (a proxied fetch's connection).
   */
  const tracked = (
    body: ReadableStream<Uint8Array>,
    release: () => void,
    prefix?: Uint8Array,
    superseded?: () => boolean,
    abort?: () => void,
  ): ReadableStream<Uint8Array> => {
    const reader = body.getReader();
    let ended = false;
    let stop = () => {};
    let watch: ReturnType<typeof setInterval> | undefined;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(watch);
      release();
      closers.delete(stop);
      abort?.();
    };
    return new ReadableStream<Uint8Array>({
      start(ctrl) {
        stop = () => {
          end();
          reader.cancel().catch(() => {});
          try {
            ctrl.close();
          } catch { /* closed */ }
        };
        closers.add(stop);
        if (prefix) ctrl.enqueue(prefix);
        if (superseded) watch = setInterval(() => superseded() && stop(), LEADER_CHECK_MS);
      },
      async pull(ctrl) {
        try {
          const { value, done } = await reader.read();
          if (ended) return;
          if (done) {
            end();
            ctrl.close();
          } else ctrl.enqueue(value);
        } catch (e) {
          if (ended) return;
          end();
          o.log.debug("dashboard response ended", { error: e });
          ctrl.error(e);
        }
      },
      cancel() {
        end();
        reader.cancel().catch(() => {});
      },
    }, { highWaterMark: 1 });
  };

  /**
   * The leader's answer to this request, streamed through (null: this master leads, knows no
   * leader's dashboard, or the leader's could not be reached or refused a stream).
   */
  const proxied = async (url: URL, isStream: boolean): Promise<Response | null> => {
    const leader = o.leader?.leaderId() ?? null;
    const upstream = await o.leader?.url();
    if (!upstream) return null;
    let r: Response;
    // A leader that does not answer (paused, cut off) must not hold the page: its headers are
    // waited for PROXY_HEADERS_MS; the body is ended by the leader change watch below.
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), PROXY_HEADERS_MS);
    try {
      r = await fetch(upstream + url.pathname + url.search, {
        headers: { authorization: `Bearer ${o.token}`, [VIA_HEADER]: o.self },
        redirect: "manual",
        signal: ctl.signal,
      });
    } catch (e) {
      clearTimeout(timer);
      o.leader!.invalidate();
      o.log.info("dashboard: the leader's dashboard is unreachable; serving this master's view", {
        leader: upstream,
        error: e,
      });
      return null;
    }
    clearTimeout(timer);
    if (isStream && r.status !== 200) {
      await r.body?.cancel();
      o.leader!.invalidate();
      o.log.info("dashboard: the leader's dashboard refused a stream; serving this master's view", {
        leader: upstream,
        status: r.status,
      });
      return null;
    }
    const headers: Record<string, string> = { ...(isStream ? SECURITY_HEADERS : FILE_HEADERS) };
    for (const h of PASSED_HEADERS) {
      const v = r.headers.get(h);
      if (v !== null) headers[h] = v;
    }
    if (!r.body) return new Response(null, { status: r.status, headers });
    const release = isStream ? () => streams-- : () => downloads--;
    if (isStream) streams++;
    else downloads++;
    const via = isStream
      ? new TextEncoder().encode(
        `retry: ${RECONNECT_MS}\nevent: via\ndata: ${JSON.stringify({ via: o.self })}\n\n`,
      )
      : undefined;
    // A stream ends when the leader changes (or this master now leads): the page reconnects.
    const moved = isStream
      ? () => o.isLeader() || (o.leader!.leaderId() ?? null) !== leader
      : undefined;
    return new Response(tracked(r.body, release, via, moved, () => ctl.abort()), {
      status: r.status,
      headers,
    });
  };

  /**
   * A stream of this master's view. `proxiedFor`: a follower proxies it, so it ends once this
   * master no longer leads (the follower reconnects to the new leader). Otherwise, on a follower,
   * it ends once a leader's dashboard is known again, so the page reconnects through a proxy.
   */
  const events = (job: string | null, chunk: number | null, proxiedFor: boolean): Response => {
    streams++;
    let checking = false;
    let checkedAt = 0;
    let closed = false;
    // The shown job's running chunks, asked for every RUNNING_MS while it is unfinished.
    let running: ReadonlyMap<number, Uint8Array> = new Map();
    let runningAsked = 0;
    let asking = false;
    const refreshRunning = () => {
      const rec = job === null ? undefined : o.table().jobs.get(job);
      if (!rec || JobTable.isFinished(rec)) {
        running = new Map();
        return;
      }
      if (asking || Date.now() - runningAsked < RUNNING_MS) return;
      asking = true;
      runningAsked = Date.now();
      o.running(rec.spec.jobId).then((r) => running = r, (e) => {
        o.log.debug("dashboard: running chunks not known", { error: e });
      }).finally(() => asking = false);
    };
    /** Should this stream end, so that the page reconnects to the leader's view? */
    const superseded = (close: () => void) => {
      if (proxiedFor) {
        if (!o.isLeader()) close();
        return;
      }
      if (!o.leader || o.isLeader() || checking || Date.now() - checkedAt < LEADER_CHECK_MS) return;
      checking = true;
      checkedAt = Date.now();
      o.leader.url().then((u) => {
        if (u) close();
      }, () => {}).finally(() => checking = false);
    };
    const enc = new TextEncoder();
    let last = "";
    let quietSince = Date.now();
    let timer: ReturnType<typeof setInterval> | undefined;
    const body = new ReadableStream<Uint8Array>({
      start(ctrl) {
        ctrl.enqueue(enc.encode(`retry: ${RECONNECT_MS}\n\n`));
        const close = () => {
          if (closed) return;
          closed = true;
          clearInterval(timer);
          try {
            ctrl.close();
          } catch { /* closed */ }
        };
        const tick = () => {
          superseded(close);
          if (closed) return;
          try {
            refreshRunning();
            const t = JSON.stringify(view(job, chunk, running));
            if (t !== last) {
              last = t;
              quietSince = Date.now();
              ctrl.enqueue(enc.encode(`data: ${t}\n\n`));
            } else if (Date.now() - quietSince > KEEPALIVE_MS) {
              quietSince = Date.now();
              ctrl.enqueue(enc.encode(": keepalive\n\n"));
            }
          } catch (e) {
            o.log.warn("dashboard stream ended", { error: e });
            close();
          }
        };
        tick();
        timer = setInterval(tick, UPDATE_MS);
      },
      cancel: () => {
        closed = true;
        clearInterval(timer);
      },
    });
    return new Response(
      tracked(body, () => {
        clearInterval(timer);
        streams--;
      }),
      { headers: { "content-type": "text/event-stream", ...SECURITY_HEADERS } },
    );
  };

  /** `/log` and `/output` of this master's table. */
  const chunkFile = async (url: URL, path: string): Promise<Response> => {
    const job = url.searchParams.get("job") ?? "";
    const chunkText = url.searchParams.get("chunk") ?? "";
    if (!HEX_ID.test(job) || !/^\d{1,7}$/.test(chunkText)) {
      return text(400, "give job=<32 hex digits>&chunk=<index>");
    }
    const rec = o.table().jobs.get(job);
    const c = rec?.chunks[Number(chunkText)];
    if (!rec || !c) return text(404, `no chunk ${chunkText} of job ${job} here`);
    let body: ReadableStream<Uint8Array> | null;
    let running: Uint8Array | undefined;
    const headers: Record<string, string> = { ...FILE_HEADERS };
    if (path === "/output") {
      const name = url.searchParams.get("name") ?? "";
      const out = c.outputs.find((f) => f.name === name);
      if (!out) return text(404, `chunk ${c.chunkIndex} has no output ${JSON.stringify(name)}`);
      Object.assign(headers, fileHeaders(name), { "content-length": String(out.size) });
      body = o.files.file(out.id, out.size);
    } else {
      const stream = url.searchParams.get("stream") ?? "stdout";
      if (stream !== "stdout" && stream !== "stderr") {
        return text(400, "stream must be stdout or stderr");
      }
      headers["content-type"] = "text/plain; charset=utf-8";
      const final = c.state === ChunkState.Succeeded || c.state === ChunkState.Failed ||
        c.state === ChunkState.Cancelled;
      if (final && stream === "stderr") {
        // Only its last bytes were kept (README, "The program interface").
        headers["content-length"] = String(c.stderrTail.length);
        return new Response(c.stderrTail.slice(), { headers });
      }
      const out = final ? c.outputs.find((f) => f.name === "stdout") : undefined;
      if (out) {
        headers["content-length"] = String(out.size);
        body = o.files.file(out.id, out.size);
      } else if (final) {
        body = null;
      } else if ((running = (await o.running(uuidFromHex(job))).get(c.chunkIndex))) {
        body = await o.files.runningLog(
          running,
          uuidFromHex(job),
          c.chunkIndex,
          stream === "stderr" ? 2 : 1,
        );
        if (!body) return text(404, `chunk ${c.chunkIndex} does not run on its worker any more`);
      } else return text(404, `chunk ${c.chunkIndex} has not started`);
      if (!body) return new Response(new Uint8Array(0), { headers });
    }
    downloads++;
    return new Response(tracked(body, () => downloads--), { headers });
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
  }, async (req) => {
    const url = new URL(req.url);
    if (req.method !== "GET") return text(405, "method not allowed");
    const fromQuery = url.searchParams.get("token");
    if (url.pathname === "/" && fromQuery !== null) {
      if (!tokenOk(fromQuery, o.token)) return text(403, "bad token");
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
      return text(401, "open the URL with ?token=… (the master's <data>/dashboard.token)");
    }
    if (url.pathname === "/") {
      return new Response(DASHBOARD_HTML, {
        headers: { "content-type": "text/html; charset=utf-8", ...SECURITY_HEADERS },
      });
    }
    const isStream = url.pathname === "/events";
    if (!isStream && url.pathname !== "/log" && url.pathname !== "/output") {
      return text(404, "not found");
    }
    if (isStream) {
      const job = url.searchParams.get("job");
      if (job !== null && !HEX_ID.test(job)) return text(400, "job must be 32 hex digits");
      const chunkText = url.searchParams.get("chunk");
      if (chunkText !== null && (!/^\d{1,7}$/.test(chunkText) || job === null)) {
        return text(400, "chunk must be a chunk index of the job");
      }
      if (streams >= MAX_EVENT_STREAMS) return text(503, "too many dashboard streams");
      const proxiedFor = req.headers.has(VIA_HEADER);
      // A follower asks only the leader: a master that no longer leads says so.
      if (proxiedFor && !o.isLeader()) return text(503, "this master is not the leader");
      if (!proxiedFor) {
        const p = await proxied(url, true);
        if (p) return p;
      }
      return events(job, chunkText === null ? null : Number(chunkText), proxiedFor);
    }
    if (downloads >= MAX_DOWNLOADS) return text(503, "too many dashboard downloads at once");
    if (!req.headers.has(VIA_HEADER)) {
      const p = await proxied(url, false);
      if (p) return p;
    }
    return await chunkFile(url, url.pathname);
  });
  const addr = await ready.promise;
  const address = `${addr.hostname}:${addr.port}`;
  const url = `http://${o.advertise ?? advertisedAddress(addr, o.endpoint)}`;
  o.log.info("dashboard listening", { dashboard: address, url });
  return {
    address,
    url,
    async close() {
      clearInterval(sampler);
      for (const c of [...closers]) c();
      await server.shutdown();
    },
  };
}
