/**
 * The masters' dashboard in a real browser: a cluster whose master serves `--dashboard-listen`,
 * headless Chromium (tests/chromium.ts) logged in with the master's token; a job is submitted and
 * chosen on the page, and its chunks must turn from queued or running to succeeded on the page
 * with no reload. Also: requests without the token are refused. `DSYS_DASHBOARD_SCREENSHOT=PATH`
 * writes the final page there (docs/dashboard.png was made so).
 *
 * And with three masters: the page opened on a follower shows the leader's live view (proxied),
 * its chunk links serve the chunk's log (stored, and live from the worker while it runs) and the
 * exact bytes of each output, with the page's cookie only; the page then survives the leader's
 * death, showing the new leader's view without a reload.
 */
import assert from "node:assert/strict";
import { leaderName, withCluster } from "./cluster_helpers.ts";
import { startChromium } from "./chromium.ts";
import { waitFor, waitForJob } from "./wait.ts";
import { ChunkState, NodeRole, uuidToHex } from "../wire/mod.ts";
import { MAX_EVENT_STREAMS } from "../roles/master/dashboard.ts";

const CHUNKS = 8;
/** Longer than a page update, so that each chunk is seen queued or running. */
const PROGRAM = new TextEncoder().encode(`#!/bin/sh
sleep 1
echo "chunk $DSYS_CHUNK_INDEX"
`);

Deno.test("dashboard: a job's chunks turn to succeeded in Chromium without a reload", async () => {
  await withCluster({
    workers: 2,
    slotsPerWorker: 1,
    extraArgs: { master: ["--dashboard-listen", "127.0.0.1:0"] },
  }, async (cluster, client) => {
    const master = cluster.procs.get("master")!;
    assert.match(master.dashboard ?? "", /^127\.0\.0\.1:\d+$/);
    const base = `http://${master.dashboard}`;
    const token = (await Deno.readTextFile(`${cluster.dataDir}/master/dashboard.token`)).trim();
    const status = async (url: string, init?: RequestInit) => {
      const r = await fetch(url, { redirect: "manual", ...init });
      await r.body?.cancel();
      return r.status;
    };
    assert.equal(await status(`${base}/`), 401);
    assert.equal(await status(`${base}/events`), 401);
    assert.equal(await status(`${base}/?token=${"0".repeat(64)}`), 403);
    assert.equal(await status(`${base}/events`, { headers: { cookie: "dsys_dashboard=x" } }), 401);
    assert.equal(await status(`${base}/?token=${token}`), 303);
    const bearer = { headers: { authorization: `Bearer ${token}` } };
    // `dsys dashboard` prints the login URL (and says what it needs when it has nothing).
    const dsys = async (args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL("../mod.ts", import.meta.url).pathname, "dashboard", ...args],
        env: { DSYS_CLUSTER: `${cluster.dataDir}/no-such-cluster.json`, DISPLAY: "" },
        stdin: "null",
      }).output();
      return { code: out.code, out: new TextDecoder().decode(out.stdout).trim() };
    };
    const printed = await dsys([
      "--url",
      base,
      "--token-file",
      `${cluster.dataDir}/master/dashboard.token`,
    ]);
    assert.deepEqual(printed, { code: 0, out: `${base}/?token=${token}` });
    assert.equal((await dsys([])).code, 1);
    assert.equal(await status(`${base}/events?job=nothex`, bearer), 400);
    assert.equal(await status(`${base}/events?chunk=1`, bearer), 400);
    assert.equal(await status(`${base}/events?job=${"a".repeat(32)}&chunk=-1`, bearer), 400);
    // Bounded: MAX_EVENT_STREAMS streams at once, the next refused; closing them frees them.
    const streams = await Promise.all(
      Array.from({ length: MAX_EVENT_STREAMS }, () => fetch(`${base}/events`, bearer)),
    );
    assert.deepEqual(new Set(streams.map((r) => r.status)), new Set([200]));
    assert.equal(await status(`${base}/events`, bearer), 503);
    for (const r of streams) await r.body?.cancel();
    await waitFor("a stream to be served again once the others closed", async () => {
      const r = await fetch(`${base}/events`, bearer);
      await r.body?.cancel();
      return r.status === 200;
    }, { timeoutMs: 10_000, intervalMs: 50 });
    // Garbage instead of HTTP is dropped; the master serves on.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(base.split(":")[2]) });
    // The server may reset the connection before all of it is written: that is a refusal too.
    await conn.write(new Uint8Array(65536).fill(0xff)).catch(() => 0);
    conn.close();
    assert.equal(await status(`${base}/`, bearer), 200);

    const browser = await startChromium();
    try {
      await browser.goto(`${base}/?token=${token}`);
      await waitFor("the dashboard to load", () =>
        browser.evaluate<boolean>(
          `location.pathname === "/" && !location.search.includes("token") &&
           document.readyState === "complete" && !!document.getElementById("jobs") &&
           document.getElementById("master").textContent.includes("(leader)")`,
        ), { timeoutMs: 30_000, intervalMs: 100 });
      // A reload would lose this, and the recorder below.
      await browser.evaluate(`window.loadedOnce = true; window.seen = new Set();
        new MutationObserver(() => {
          for (const c of document.querySelectorAll("#grid .cell")) seen.add(c.dataset.state);
        }).observe(document.getElementById("grid"), { subtree: true, childList: true,
          attributes: true }); true`);

      const job = await client.submit({
        program: PROGRAM,
        programName: "sleepy.sh",
        argument: "",
        chunks: CHUNKS,
        inputs: [],
        timeLimitMs: 60_000,
      });
      const id = uuidToHex(job);
      await waitFor("the job in the page's list; chosen", () =>
        browser.evaluate<boolean>(`(() => {
          const row = document.querySelector('tr.job[data-job="${id}"]');
          row?.click();
          return !!row;
        })()`), { timeoutMs: 30_000, intervalMs: 100 });
      await waitFor(
        "the job's chunk grid, some chunks not yet succeeded",
        () =>
          browser.evaluate<boolean>(
            `document.querySelectorAll("#grid .cell").length === ${CHUNKS} &&
           (seen.has("queued") || seen.has("running"))`,
          ),
        { timeoutMs: 30_000, intervalMs: 50 },
      );
      const s = await waitForJob(client, job);
      assert.equal(s.state, ChunkState.Succeeded);
      // Each chunk's only output is its stdout, "chunk N\n".
      const outputBytes = s.chunks.reduce(
        (a, c) => a + c.outputs.reduce((b, o) => b + o.size, 0),
        0,
      );
      assert.equal(
        outputBytes,
        Array.from({ length: CHUNKS }, (_, i) => `chunk ${i}\n`.length).reduce((a, b) => a + b, 0),
      );
      let shown = "";
      await waitFor("every chunk succeeded on the page", async () => {
        shown = await browser.evaluate<string>(
          `Array.from(document.querySelectorAll("#grid .cell"), (c) => c.dataset.state).join()`,
        );
        return shown === Array(CHUNKS).fill("succeeded").join();
      }, { timeoutMs: 30_000, intervalMs: 100, detail: () => `grid: ${shown}` });
      assert.equal(await browser.evaluate<boolean>("window.loadedOnce === true"), true);
      const title = await browser.evaluate<string>(
        `document.getElementById("detail-title").textContent`,
      );
      assert.equal(title, `job ${id}: ${CHUNKS} of ${CHUNKS} succeeded, 0 failed`);
      // The cluster view (the masters' node list) and the throughput chart, live too.
      let nodes = "";
      await waitFor("the cluster's nodes, and the job's chunks in the chart", async () => {
        nodes = await browser.evaluate<string>(`Array.from(document.querySelectorAll(
          "#nodes tbody tr"), (tr) => Array.from(tr.cells, (c) => c.textContent).join("|")).join("\\n")`);
        const total = await browser.evaluate<string>(
          `document.getElementById("chart").dataset.total`,
        );
        const bytes = await browser.evaluate<string>(
          `document.getElementById("bytes-chart").dataset.total`,
        );
        const rows = nodes.split("\n");
        const has = (re: RegExp) => rows.some((r) => re.test(r));
        return rows.length === 5 && has(/^master\|master\|tcp:.*\|alive\|leader\|$/) &&
          has(/^balancer\|balancer\|tcp:.*\|alive\|primary\|$/) && has(/^storage\|storage\|/) &&
          rows.filter((r) =>
              /^worker\|worker\d\|.*\|alive: \d+ files cached\|\|1 free of 1$/.test(r)
            ).length === 2 &&
          total === String(CHUNKS) && bytes === String(outputBytes);
      }, { timeoutMs: 30_000, intervalMs: 200, detail: () => `nodes:\n${nodes}` });
      // One chunk in detail: its outputs, and how to get them and its logs.
      const three = s.chunks[3].outputs.find((o) => o.name === "stdout")!;
      let detail = "";
      await waitFor("chunk 3's detail", async () => {
        detail = await browser.evaluate<string>(`(() => {
          document.querySelector('#grid .cell[data-chunk="3"]').click();
          return ["chunk-title", "chunk-outputs", "chunk-commands"]
            .map((id) => document.getElementById(id).textContent).join("|");
        })()`);
        return detail.startsWith("chunk 3: succeeded, attempt 1|") &&
          detail.includes(`stdout (8 bytes, file ${uuidToHex(three.id)})`) &&
          detail.includes(`dsys logs ${id} --chunk 3`);
      }, { timeoutMs: 30_000, intervalMs: 200, detail: () => detail });
      assert.equal(await browser.evaluate<boolean>("window.loadedOnce === true"), true);
      const shot = Deno.env.get("DSYS_DASHBOARD_SCREENSHOT");
      if (shot) await Deno.writeFile(shot, await browser.screenshot());
    } finally {
      await browser.close();
    }
  });
});

/**
 * Chunk i prints "chunk i" and writes 3 MiB of random bytes as the output data.bin (streamed by
 * the master in 1 MiB pieces).
 */
const WRITER = new TextEncoder().encode(`#!/bin/sh
sleep 1
echo "chunk $DSYS_CHUNK_INDEX"
head -c 3145728 /dev/urandom > "$DSYS_OUTPUT_DIR/data.bin"
`);
/** Prints a line, then runs until cancelled. */
const RUNNER = new TextEncoder().encode(`#!/bin/sh
echo "running $DSYS_CHUNK_INDEX"
exec sleep 600
`);

Deno.test("dashboard: a follower shows the leader's live view, its log and output links, across the leader's death", async () => {
  await withCluster({
    masters: 3,
    workers: 2,
    slotsPerWorker: 1,
    extraArgs: { master: ["--dashboard-listen", "127.0.0.1:0"] },
  }, async (cluster, client) => {
    const leader = await leaderName(cluster, client);
    const follower = ["m1", "m2", "m3"].find((m) => m !== leader)!;
    const base = `http://${cluster.procs.get(follower)!.dashboard}`;
    // One token for the whole cluster (derived from the cluster secret): any master's file.
    const tokens = await Promise.all(
      ["m1", "m2", "m3"].map(async (m) =>
        (await Deno.readTextFile(`${cluster.dataDir}/${m}/dashboard.token`)).trim()
      ),
    );
    assert.equal(new Set(tokens).size, 1);
    const token = tokens[0];
    // A master names its dashboard in its own node list entry: how followers find the leader's.
    const entry = (await client.nodes()).find((n) => n.role === NodeRole.Master && n.detail);
    assert.equal(entry?.detail, `dashboard http://${cluster.procs.get(entry!.name)!.dashboard}`);
    const cookie = { headers: { cookie: `dsys_dashboard=${token}` } };

    const browser = await startChromium();
    try {
      await browser.goto(`${base}/?token=${token}`);
      let shown = "";
      const masterLine = () =>
        browser.evaluate<string>(`document.getElementById("master")?.textContent ?? ""`);
      await waitFor("the follower's page to show the leader's view", async () => {
        shown = await masterLine();
        return new RegExp(`^master ${leader}@\\S+ \\(leader\\), term \\d+, via ${follower}@`)
          .test(shown);
      }, { timeoutMs: 30_000, intervalMs: 100, detail: () => shown });
      await browser.evaluate(`window.loadedOnce = true; window.seen = new Set();
        new MutationObserver(() => {
          for (const c of document.querySelectorAll("#grid .cell")) seen.add(c.dataset.state);
        }).observe(document.getElementById("grid"), { subtree: true, childList: true,
          attributes: true }); true`);
      const chunks = 4;
      const job = await client.submit({
        program: WRITER,
        programName: "writer.sh",
        argument: "",
        chunks,
        inputs: [],
        timeLimitMs: 60_000,
      });
      const id = uuidToHex(job);
      await waitFor("the job in the page's list; chosen", () =>
        browser.evaluate<boolean>(`(() => {
          const row = document.querySelector('tr.job[data-job="${id}"]');
          row?.click();
          return !!row;
        })()`), { timeoutMs: 30_000, intervalMs: 100 });
      await waitFor("the job's grid with chunks queued or running", () =>
        browser.evaluate<boolean>(
          `document.querySelectorAll("#grid .cell").length === ${chunks} &&
           (seen.has("queued") || seen.has("running"))`,
        ), { timeoutMs: 30_000, intervalMs: 50 });
      const s = await waitForJob(client, job);
      assert.equal(s.state, ChunkState.Succeeded);
      let grid = "";
      await waitFor("every chunk succeeded on the follower's page", async () => {
        grid = await browser.evaluate<string>(
          `Array.from(document.querySelectorAll("#grid .cell"), (c) => c.dataset.state).join()`,
        );
        return grid === Array(chunks).fill("succeeded").join();
      }, { timeoutMs: 30_000, intervalMs: 100, detail: () => `grid: ${grid}` });

      // Chunk 2's links, followed by the page itself (its HttpOnly cookie, through the follower).
      let links = "";
      await waitFor("chunk 2's log and output links", async () => {
        links = await browser.evaluate<string>(`(() => {
          document.querySelector('#grid .cell[data-chunk="2"]').click();
          return Array.from(document.querySelectorAll("#chunk-logs a, #chunk-outputs a"),
            (a) => a.textContent + "=" + a.getAttribute("href")).join(" ");
        })()`);
        return links.includes("data.bin=") && links.includes("stdout=log?");
      }, { timeoutMs: 30_000, intervalMs: 200, detail: () => links });
      const fetched = await browser.evaluate<string>(`Promise.all(
        [document.getElementById("log-stdout"), document.getElementById("log-stderr"),
         ...Array.from(document.querySelectorAll("#chunk-outputs a"))
           .filter((a) => a.textContent === "stdout")]
          .map((a) => fetch(a.href).then(async (r) => r.status + ":" + await r.text()))
      ).then((t) => JSON.stringify(t))`);
      assert.deepEqual(JSON.parse(fetched), ["200:chunk 2\n", "200:", "200:chunk 2\n"]);
      const out = s.chunks[2].outputs.find((o) => o.name === "data.bin")!;
      const href = await browser.evaluate<string>(
        `Array.from(document.querySelectorAll("#chunk-outputs a")).find((a) =>
          a.textContent === "data.bin").href`,
      );
      assert.equal(href, `${base}/output?job=${id}&chunk=2&name=data.bin`);
      const r = await fetch(href, cookie);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-length"), String(out.size));
      assert.equal(r.headers.get("content-type"), "application/octet-stream");
      assert.match(r.headers.get("content-disposition") ?? "", /^attachment; filename="data.bin"/);
      const got = new Uint8Array(await r.arrayBuffer());
      assert.equal(got.length, 3 * 2 ** 20);
      assert.deepEqual(got, await client.storage.getBytes(out.id));
      // Not without the cookie; not a chunk or output that does not exist.
      const status = async (url: string, init?: RequestInit) => {
        const res = await fetch(url, init);
        await res.body?.cancel();
        return res.status;
      };
      assert.equal(await status(href), 401);
      assert.equal(await status(`${base}/output?job=${id}&chunk=2&name=nothing`, cookie), 404);
      assert.equal(await status(`${base}/log?job=${id}&chunk=${chunks}`, cookie), 404);
      assert.equal(await status(`${base}/log?job=${id}&chunk=x`, cookie), 400);

      // A running chunk's log comes live from its worker.
      const running = await client.submit({
        program: RUNNER,
        programName: "runner.sh",
        argument: "",
        chunks: 1,
        inputs: [],
        timeLimitMs: 120_000,
      });
      let log = "";
      await waitFor("the running chunk's log through the follower", async () => {
        const res = await fetch(`${base}/log?job=${uuidToHex(running)}&chunk=0`, cookie);
        log = `${res.status}:${await res.text()}`;
        return log === "200:running 0\n";
      }, { timeoutMs: 30_000, intervalMs: 200, detail: () => log });
      const worker = uuidToHex((await client.status(running)).chunks[0].worker);
      // On the page it is running too (the leader's running reports, not in the table).
      let cell = "";
      await waitFor("the running chunk shown running, on its worker", async () => {
        cell = await browser.evaluate<string>(`(() => {
          document.querySelector('tr.job[data-job="${uuidToHex(running)}"]')?.click();
          document.querySelector('#grid .cell[data-chunk="0"]')?.click();
          return (document.querySelector('#grid .cell[data-chunk="0"]')?.dataset.state ?? "") +
            "|" + document.getElementById("chunk-info").textContent;
        })()`);
        return cell.startsWith("running|") && cell.includes(`worker ${worker}`);
      }, { timeoutMs: 30_000, intervalMs: 200, detail: () => cell });
      await client.cancel(running);

      // The leader dies; the page, still open on the follower, shows the new leader's view.
      await cluster.kill(leader);
      await waitFor("the page to show a new leader's view, no reload", async () => {
        shown = await masterLine();
        const m = /^master (m\d)@.* \(leader\)/.exec(shown);
        return m !== null && m[1] !== leader && await browser.evaluate<boolean>(
          `window.loadedOnce === true && !!document.querySelector('tr.job[data-job="${id}"]') &&
           document.querySelector('#grid .cell[data-chunk="0"]')?.dataset.state === "cancelled"`,
        );
      }, { timeoutMs: 60_000, intervalMs: 200, detail: () => shown });
    } finally {
      await browser.close();
    }
  });
});
