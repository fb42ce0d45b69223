/**
 * lib/metrics.ts: the Prometheus text format it writes (HELP/TYPE lines, label escaping,
 * cumulative histogram buckets, _sum and _count), the bounds it keeps (declared label values
 * only, a fixed series count), and lib/metrics_server.ts serving it over real HTTP.
 */
import assert from "node:assert/strict";
import { MetricsError, Registry, TEXT_CONTENT_TYPE } from "../lib/metrics.ts";
import {
  parseMetricsListen,
  registerProcessMetrics,
  startMetricsServer,
} from "../lib/metrics_server.ts";
import { createLogger } from "../lib/log.ts";

Deno.test("text format: counters, gauges and histograms as Prometheus writes them", () => {
  const r = new Registry();
  const c = r.counter("dsys_things_total", "Things done.\nSecond line \\ here.", {
    kind: ["a", 'q"uo\\te\n'],
  });
  const g = r.gauge("dsys_depth", "Queue depth.");
  const h = r.histogram("dsys_wait_seconds", "Wait time.", [0.1, 1], { op: ["get"] });
  c.inc({ kind: "a" });
  c.inc({ kind: "a" }, 2);
  c.inc({ kind: 'q"uo\\te\n' }, 0.5);
  g.set(-3);
  h.observe(0.05, { op: "get" });
  h.observe(0.1, { op: "get" }); // le is inclusive
  h.observe(0.5, { op: "get" });
  h.observe(7, { op: "get" });
  assert.deepEqual(
    r.render(),
    [
      "# HELP dsys_things_total Things done.\\nSecond line \\\\ here.",
      "# TYPE dsys_things_total counter",
      'dsys_things_total{kind="a"} 3',
      'dsys_things_total{kind="q\\"uo\\\\te\\n"} 0.5',
      "# HELP dsys_depth Queue depth.",
      "# TYPE dsys_depth gauge",
      "dsys_depth -3",
      "# HELP dsys_wait_seconds Wait time.",
      "# TYPE dsys_wait_seconds histogram",
      'dsys_wait_seconds_bucket{op="get",le="0.1"} 2',
      'dsys_wait_seconds_bucket{op="get",le="1"} 3',
      'dsys_wait_seconds_bucket{op="get",le="+Inf"} 4',
      'dsys_wait_seconds_sum{op="get"} 7.65',
      'dsys_wait_seconds_count{op="get"} 4',
      "",
    ].join("\n"),
  );
});

Deno.test("every declared series is there from the start, at 0", () => {
  const r = new Registry();
  r.counter("x_total", "X.", { a: ["1", "2"], b: ["y", "z"] });
  r.histogram("y_seconds", "Y.", [1]);
  const lines = r.render().split("\n").filter((l) => !l.startsWith("#") && l);
  assert.deepEqual(lines, [
    'x_total{a="1",b="y"} 0',
    'x_total{a="1",b="z"} 0',
    'x_total{a="2",b="y"} 0',
    'x_total{a="2",b="z"} 0',
    'y_seconds_bucket{le="1"} 0',
    'y_seconds_bucket{le="+Inf"} 0',
    "y_seconds_sum 0",
    "y_seconds_count 0",
  ]);
});

Deno.test("bounded: undeclared labels, values and names are refused", () => {
  const r = new Registry();
  const c = r.counter("x_total", "X.", { state: ["ok"] });
  assert.throws(
    () => c.inc({ state: "other" }),
    (e) => e instanceof MetricsError && e.message.includes("not a declared value"),
  );
  assert.throws(() => c.inc({}), MetricsError);
  assert.throws(() => c.inc({ state: "ok", extra: "1" }), MetricsError);
  assert.throws(() => c.inc({ state: "ok" }, -1), MetricsError);
  assert.throws(
    () => r.counter("x_total", "again"),
    (e) => e instanceof MetricsError && e.message.includes("declared twice"),
  );
  assert.throws(
    () => r.counter("x", "no suffix"),
    (e) => e instanceof MetricsError && e.message.includes("_total"),
  );
  assert.throws(() => r.gauge("bad-name", "."), MetricsError);
  assert.throws(() => r.gauge("g", ".", { __reserved: ["a"] }), MetricsError);
  assert.throws(() => r.histogram("h", ".", [1], { le: ["a"] }), MetricsError);
  assert.throws(
    () => r.histogram("h2", ".", [2, 1]),
    (e) => e instanceof MetricsError && e.message.includes("increasing"),
  );
  r.histogram("lat_seconds", ".", [1]);
  assert.throws(
    () => r.gauge("lat_seconds_count", "."),
    (e) => e instanceof MetricsError && e.message.includes("declared twice"),
  );
  const values = Array.from({ length: 17 }, (_, i) => String(i));
  assert.throws(
    () => r.gauge("wide", ".", { a: values, b: values }),
    (e) => e instanceof MetricsError && e.message.includes("series"),
  );
});

/** The samples of a page without labels, in order. */
function values(page: string): number[] {
  return page.split("\n").filter((l) => l && !l.startsWith("#")).map((l) =>
    Number(l.split(" ")[1])
  );
}

Deno.test("collectors run before each render; a failing one leaves its series stale", () => {
  const r = new Registry();
  const g = r.gauge("state_value", "S.");
  const c = r.counter("kept_total", "K.");
  let n = 0;
  r.onCollect(() => {
    g.set(++n);
    if (n === 3) throw new Error("collector bug");
    c.setTotal(n === 4 ? 0 : n * 10); // a source that was reset reads lower: ignored
  });
  assert.deepEqual(values(r.render()), [1, 10]);
  assert.deepEqual(values(r.render()), [2, 20]);
  assert.equal(r.lastCollectError, undefined);
  assert.deepEqual(values(r.render()), [3, 20]);
  assert.match(String(r.lastCollectError), /collector bug/);
  assert.deepEqual(values(r.render()), [4, 20]);
});

Deno.test("--metrics-listen: HOST:PORT, [V6]:PORT; anything else refused", () => {
  assert.deepEqual(parseMetricsListen("127.0.0.1:0"), { hostname: "127.0.0.1", port: 0 });
  assert.deepEqual(parseMetricsListen("[::1]:9100"), { hostname: "::1", port: 9100 });
  assert.deepEqual(parseMetricsListen("node-1.local:9100"), {
    hostname: "node-1.local",
    port: 9100,
  });
  for (const bad of ["", "9100", "host:", "host:65536", "tcp://h:1", "h:1/x", "[::1]"]) {
    assert.throws(() => parseMetricsListen(bad), /HOST:PORT/, bad);
  }
});

Deno.test("metrics server: GET /metrics over HTTP; other paths and methods refused", async () => {
  const r = new Registry();
  registerProcessMetrics(r, "master");
  const server = await startMetricsServer(
    r,
    "127.0.0.1:0",
    createLogger("test", "-", {}, () => {}),
  );
  try {
    const base = `http://${server.address}`;
    const res = await fetch(`${base}/metrics`);
    assert.deepEqual(res.status, 200);
    assert.deepEqual(res.headers.get("content-type"), TEXT_CONTENT_TYPE);
    const text = await res.text();
    const rss = /^process_resident_memory_bytes (\d+)$/m.exec(text);
    assert(rss && Number(rss[1]) > 1 << 20, `no plausible RSS in:\n${text}`);
    assert(/^process_cpu_seconds_total [0-9.e-]+$/m.test(text), text);
    assert(/^dsys_build_info\{role="master",version="[^"]+"\} 1$/m.test(text), text);
    const other = await fetch(`${base}/`);
    assert.deepEqual(other.status, 404);
    await other.body?.cancel();
    const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    assert.deepEqual(post.status, 405);
    await post.body?.cancel();
  } finally {
    await server.close();
  }
});
