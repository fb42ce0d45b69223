/**
 * The dashboard's one page: plain HTML, CSS and a small script, no build step and nothing
 * fetched from elsewhere. The script follows `/events` (server-sent events: one whole
 * DashboardView per change) and redraws the job list and the chosen job's chunk grid in place,
 * so the page is never reloaded; on a follower master the stream is the leader's, proxied, and
 * a `via` event names the follower. Text from the table (owners, program names, failure reasons,
 * output names) is set as text, never as HTML; the chunk's log and output links are relative
 * URLs of this dashboard (`log?…`, `output?…`).
 */

/** The page's HTML. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dsys</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em; }
  #master { color: #666; margin-bottom: 1em; }
  table { border-collapse: collapse; margin-bottom: 1.5em; }
  th, td { padding: .25em .8em; text-align: left; border-bottom: 1px solid #ddd; }
  tr.job { cursor: pointer; }
  tr.job:hover, tr.selected { background: #eef4ff; }
  .bar { width: 120px; height: 10px; background: #eee; display: inline-block; }
  .bar > div { height: 10px; background: #2a9d4b; }
  #grid { display: flex; flex-wrap: wrap; gap: 2px; max-width: 820px; }
  .cell { width: 14px; height: 14px; border-radius: 2px; }
  .s0 { background: #c9ccd1; } .s1 { background: #3b82f6; } .s2 { background: #2a9d4b; }
  .s3 { background: #d64545; } .s4 { background: #e0a020; } .s5 { background: #7c7c7c; }
  .legend { margin-bottom: .6em; }
  .legend span { display: inline-block; margin-right: 1em; }
  .legend .cell { display: inline-block; vertical-align: middle; margin-right: .3em; }
  #status { color: #a00; }
  .cell { cursor: pointer; } .cell.chosen { outline: 2px solid #222; }
  pre { background: #f4f4f4; padding: .5em; max-width: 820px; overflow-x: auto; }
  h3 { font-size: 1em; margin: .8em 0 .3em; }
  h2 { font-size: 1.1em; margin: 1em 0 .4em; }
  .charts { display: flex; gap: 2em; flex-wrap: wrap; }
  .chart { border: 1px solid #ddd; background: #fafafa; }
  .chart polyline { fill: none; stroke: #2a9d4b; stroke-width: 1.5; }
  #bytes-chart polyline { stroke: #3b82f6; }
  .chart text { font-size: 10px; fill: #666; }
  td.alive { color: #2a9d4b; } td.suspect { color: #e0a020; } td.dead { color: #d64545; }
</style>
</head>
<body>
<h1>dsys</h1>
<div id="master"></div>
<div id="status"></div>
<h2>cluster</h2>
<table id="nodes"><thead><tr><th>role</th><th>name</th><th>endpoint</th><th>state</th>
<th></th><th>slots</th></tr></thead><tbody></tbody></table>
<div class="charts">
<div><h2>chunks finished per second (last 10 min)</h2>
<svg id="chart" class="chart" width="480" height="90" viewBox="0 0 600 100"
preserveAspectRatio="none"><polyline points=""></polyline><text x="4" y="12"></text></svg></div>
<div><h2>output bytes stored per second</h2>
<svg id="bytes-chart" class="chart" width="480" height="90" viewBox="0 0 600 100"
preserveAspectRatio="none"><polyline points=""></polyline><text x="4" y="12"></text></svg></div>
</div>
<h2>jobs</h2>
<table id="jobs"><thead><tr><th>job</th><th>owner</th><th>program</th><th>state</th>
<th>progress</th><th>age</th></tr></thead><tbody></tbody></table>
<div id="detail" hidden>
  <h2 id="detail-title"></h2>
  <div class="legend"></div>
  <div id="grid"></div>
  <ul id="failures"></ul>
  <div id="chunk" hidden>
    <h2 id="chunk-title"></h2>
    <div id="chunk-info"></div>
    <h3>logs</h3><div id="chunk-logs"></div>
    <h3>outputs</h3><ul id="chunk-outputs"></ul>
    <ul id="chunk-history"></ul>
    <h3>stderr (last bytes)</h3><pre id="chunk-stderr"></pre>
    <h3>from the command line</h3><pre id="chunk-commands"></pre>
  </div>
</div>
<script type="module">
const STATES = ["queued", "running", "succeeded", "failed", "lost", "cancelled"];
const params = new URLSearchParams(location.search);
let selected = params.get("job");
let chosenChunk = params.has("chunk") ? Number(params.get("chunk")) : null;
let source = null;
let via = "";
const $ = (id) => document.getElementById(id);
const legend = document.querySelector(".legend");
STATES.forEach((s, i) => {
  const span = document.createElement("span");
  const c = document.createElement("div");
  c.className = "cell s" + i;
  span.append(c, s);
  legend.append(span);
});
function age(ms) {
  const s = Math.floor(ms / 1000);
  return s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h";
}
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function renderCluster(v) {
  $("nodes").tBodies[0].replaceChildren(...v.nodes.map((n) => {
    const tr = document.createElement("tr");
    tr.dataset.role = n.role;
    tr.dataset.name = n.name;
    const lead = n.lead ? (n.role === "master" ? "leader" : n.role === "balancer" ? "primary" : "") : "";
    const slots = n.role === "worker" ? n.freeSlots + " free of " + n.slots : "";
    tr.append(cell(n.role), cell(n.name), cell(n.endpoint), cell(n.state + (n.detail ? ": " + n.detail : ""), n.state),
      cell(lead), cell(slots));
    return tr;
  }));
  drawChart($("chart"), v.chunksPerSecond, (x) => x + " chunks/s");
  drawChart($("bytes-chart"), v.bytesPerSecond, bytes);
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i] + "/s";
}
function drawChart(chart, vals, label) {
  const max = Math.max(1, ...vals);
  chart.dataset.max = String(Math.max(0, ...vals));
  chart.dataset.total = String(vals.reduce((a, b) => a + b, 0));
  // Newest at the right edge; a minute fills the width until there is more history.
  const step = 598 / Math.max(60, vals.length - 1);
  chart.querySelector("polyline").setAttribute("points",
    vals.map((x, i) => (599 - step * (vals.length - 1 - i)) + "," + (98 - 84 * x / max)).join(" "));
  chart.querySelector("text").textContent = "max " + label(max);
}
function render(v) {
  renderCluster(v);
  $("master").textContent = "master " + v.master + (v.leader ? " (leader)" :
    " (follower: no leader's dashboard reachable, so its own view, which may lag)") +
    (v.term ? ", term " + v.term : "") + (via ? ", via " + via : "");
  const body = $("jobs").tBodies[0];
  body.replaceChildren(...v.jobs.map((j) => {
    const tr = document.createElement("tr");
    tr.className = "job" + (j.id === selected ? " selected" : "");
    tr.dataset.job = j.id;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = (100 * j.succeeded / Math.max(1, j.chunks)) + "%";
    bar.append(fill);
    const cells = [j.id.slice(0, 12), j.owner || "-", j.program, STATES[j.state] ?? j.state, null,
      age(j.ageMs)];
    for (const c of cells) {
      const td = document.createElement("td");
      if (c === null) td.append(bar, " " + j.succeeded + "/" + j.chunks);
      else td.textContent = c;
      tr.append(td);
    }
    tr.onclick = () => choose(j.id);
    return tr;
  }));
  const d = v.job;
  $("detail").hidden = !d;
  if (!d) return;
  $("detail-title").textContent = "job " + d.id + ": " + d.succeeded + " of " + d.chunks +
    " succeeded, " + d.failed + " failed";
  const grid = $("grid");
  if (grid.childElementCount !== d.grid.length) {
    grid.replaceChildren(...Array.from(d.grid, (_, i) => {
      const c = document.createElement("div");
      c.dataset.chunk = String(i);
      c.onclick = () => chooseChunk(i);
      return c;
    }));
  }
  Array.from(d.grid).forEach((s, i) => {
    const c = grid.children[i];
    const cls = "cell s" + s + (i === chosenChunk ? " chosen" : "");
    if (c.className !== cls) c.className = cls;
    c.dataset.state = STATES[Number(s)] ?? s;
    c.title = "chunk " + i + ": " + c.dataset.state + ", attempt " + d.attempts[i];
  });
  $("failures").replaceChildren(...d.failures.map((f) => {
    const li = document.createElement("li");
    li.textContent = "chunk " + f.chunk + ": " + f.reason;
    return li;
  }));
  renderChunk(d, v.chunk);
}
function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}
function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.target = "_blank";
  a.textContent = text;
  return a;
}
function renderChunk(d, c) {
  $("chunk").hidden = !c;
  if (!c) return;
  $("chunk-title").textContent = "chunk " + c.index + ": " + (STATES[c.state] ?? c.state) +
    ", attempt " + c.attempt;
  $("chunk-info").textContent = [
    c.durationMs ? "ran " + (c.durationMs / 1000).toFixed(1) + " s" : "",
    c.failure ? "failure " + c.failure : "", c.exitCode ? "exit code " + c.exitCode : "",
    c.signal ? "signal " + c.signal : "", c.worker ? "worker " + c.worker : "", c.reason,
  ].filter(Boolean).join("; ");
  const q = "job=" + d.id + "&chunk=" + c.index;
  $("chunk-logs").replaceChildren(...["stdout", "stderr"].flatMap((s, i) => {
    const a = link("log?" + q + "&stream=" + s, s);
    a.id = "log-" + s;
    return i ? [" · ", a] : [a];
  }), c.state === 1 ? " (what it has written so far)" : c.state === 2 || c.state === 3 ?
    " (stored; stderr: its last bytes)" : "");
  $("chunk-outputs").replaceChildren(...c.outputs.map((o) => {
    const li = document.createElement("li");
    li.append(link("output?" + q + "&name=" + encodeURIComponent(o.name), o.name),
      " (" + o.size + " bytes, file " + o.id + ")");
    return li;
  }));
  $("chunk-history").replaceChildren(...c.history.map((h) =>
    item("attempt " + h.attempt + " failed: " + h.failure + " " + h.reason)));
  $("chunk-stderr").textContent = c.stderrTail || "(empty)";
  $("chunk-commands").textContent = "dsys logs " + d.id + " --chunk " + c.index +
    "        # its stdout (--stderr), live while it runs\\n" +
    "dsys get " + d.id + " --out results/   # results/chunk-" + String(c.index).padStart(5, "0") +
    "/<output name>";
}
function connect() {
  source?.close();
  const q = selected ? "?job=" + encodeURIComponent(selected) +
    (chosenChunk !== null ? "&chunk=" + chosenChunk : "") : "";
  source = new EventSource("events" + q);
  source.onopen = () => { via = ""; };
  source.addEventListener("via", (e) => { via = JSON.parse(e.data).via; });
  source.onmessage = (e) => { $("status").textContent = ""; render(JSON.parse(e.data)); };
  source.onerror = () => { $("status").textContent = "connection lost; retrying"; };
}
// Choosing what is already shown keeps its stream: a new one would start without the running
// overlay, which a stream learns only after its first ask (a page clicked often never saw it).
function choose(id) {
  if (id === selected && source) return;
  chosenChunk = null;
  selected = id;
  history.replaceState(null, "", "?job=" + encodeURIComponent(id));
  connect();
}
function chooseChunk(i) {
  if (i === chosenChunk && source) return;
  chosenChunk = i;
  history.replaceState(null, "", "?job=" + encodeURIComponent(selected) + "&chunk=" + i);
  connect();
}
connect();
</script>
</body>
</html>
`;
