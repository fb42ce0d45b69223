/**
 * One primary balancer, fenced (issue 8, part 3): the split-brain scenario of the issue with real
 * processes. The primary is killed mid-job, the standby takes the masters' lease, and the old
 * primary is restarted with its original flags, three times over. Every balancer is started
 * alike; before the lease a restarted balancer came back as a second primary and chunks ran
 * twice.
 */
import assert from "node:assert/strict";
import { primaryBalancer, withCluster } from "./cluster_helpers.ts";
import { RpcClient } from "../lib/rpc.ts";
import { Credentials } from "../lib/security.ts";
import { ChunkState, MessageType, NodeFlags, NodeRole, randomUuid } from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The JSON log records of `name` (every process that ran under that name: logs append). */
async function records(dataDir: string, name: string): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(`${dataDir}/logs/${name}.log`).catch(() => "");
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line));
    } catch { /* a line cut by kill -9 */ }
  }
  return out;
}

Deno.test("balancer failover: kill the primary and restart it with its original flags, 3 times; one primary, no chunk run twice", async () => {
  await withCluster({
    workers: 4,
    slotsPerWorker: 2,
    standbyBalancer: true,
    extraArgs: { master: ["--balancer-lease-ms", "1500"] },
  }, async (cluster, client) => {
    const chunks = 64;
    const job = await client.submit({
      program: enc.encode('#!/bin/sh\nsleep 1\necho "$DSYS_CHUNK_INDEX"\n'),
      programName: "slow.sh",
      argument: "",
      chunks,
      inputs: [],
      timeLimitMs: 60_000,
    });
    let done = 0;
    for (let round = 0; round < 3; round++) {
      const primary = await primaryBalancer(cluster, client);
      // Some progress under this primary first, so every round kills one that placed chunks.
      const before = done;
      done = await waitFor(`round ${round}: chunks finishing under ${primary}`, async () => {
        const d = (await client.status(job)).done;
        return d >= Math.min(chunks, before + 4) ? d : 0;
      }, { timeoutMs: 60_000 });
      assert.ok(done < chunks, `the job finished before kill ${round + 1}: make it longer`);
      const proc = cluster.procs.get(primary)!;
      await cluster.kill(primary);
      const other = await primaryBalancer(cluster, client);
      assert.notEqual(other, primary);
      // The old primary comes back with exactly the flags it had (and its port): a standby now.
      await cluster.restart(primary, proc);
    }
    const s = await waitForJob(client, job, { timeoutMs: 120_000 });
    assert.equal(s.state, ChunkState.Succeeded);
    for (const c of s.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await client.storage.getBytes(out.id)), `${c.chunkIndex}\n`);
    }

    // One primary: asked directly, exactly one of the two (both running) says it is.
    const creds = Credentials.loadSync(cluster.info.key!, cluster.info.keyring!);
    try {
      const flags = await Promise.all(["balancer", "balancer2"].map(async (name) => {
        const c = new RpcClient(`${name}@${cluster.procs.get(name)!.endpoint}`, {
          node: randomUuid(),
          auth: creds,
          timeoutMs: 10_000,
        });
        try {
          const r = await c.request({ type: MessageType.NodeListRequest, node: c.node });
          assert.equal(r.type, MessageType.NodeListResponse);
          if (r.type !== MessageType.NodeListResponse) return 0;
          return r.nodes.find((n) => n.role === NodeRole.Balancer)!.flags & NodeFlags.Leader;
        } finally {
          await c.close();
        }
      }));
      assert.deepEqual(flags.sort(), [0, NodeFlags.Leader], "exactly one primary");
    } finally {
      creds.close();
    }

    // Each epoch was held by one balancer once, and every takeover made a new one.
    const held: number[] = [];
    const unconfirmed = new Set<string>();
    for (const name of ["balancer", "balancer2"]) {
      for (const r of await records(cluster.dataDir, name)) {
        if (r.msg === "primary balancer lease held: placing chunks") held.push(r.epoch as number);
        if (r.msg === "worker_request unconfirmed: new attempt elsewhere") {
          unconfirmed.add(`${r.job}/${r.chunk}`);
        }
      }
    }
    assert.equal(new Set(held).size, held.length, `epochs held: ${held}`);
    assert.ok(held.length >= 4, `epochs held: ${held} (1 + a takeover per kill)`);

    // No chunk ran twice: no worker died, so every chunk was accepted by a worker exactly once
    // (a push the balancer never heard back about within its timeout, on an overloaded
    // machine, is the one case where a new attempt is placed while the first may run).
    const runs = new Map<string, number>();
    const seen = new Map<string, string[]>();
    let fenced = 0;
    for (let i = 1; i <= 4; i++) {
      for (const r of await records(cluster.dataDir, `worker${i}`)) {
        if (r.msg === "chunk accepted") {
          const k = `${r.job}/${r.chunk}`;
          runs.set(k, (runs.get(k) ?? 0) + 1);
          seen.set(k, [...seen.get(k) ?? [], `worker${i} ${JSON.stringify(r)}`]);
        }
        if (r.msg === "worker_request of an old balancer epoch refused") fenced++;
      }
    }
    assert.equal(runs.size, chunks, "every chunk ran");
    for (const [k, n] of runs) {
      if (n === 1 || (n === 2 && unconfirmed.has(k))) continue;
      const [, chunk] = k.split("/");
      const about: string[] = [];
      for (const name of ["balancer", "balancer2", "master"]) {
        for (const r of await records(cluster.dataDir, name)) {
          if (String(r.chunk) === chunk || /lease|primary|took|dead|requeued/.test(String(r.msg))) {
            about.push(`${name} ${JSON.stringify(r)}`);
          }
        }
      }
      assert.fail(`chunk ${k} ran ${n} times:\n${seen.get(k)!.join("\n")}\n${about.join("\n")}`);
    }
    console.log(
      `failover x3: epochs ${held.join(",")}; runs ${[...runs.values()].reduce((a, b) => a + b)}` +
        ` for ${chunks} chunks; unconfirmed pushes ${unconfirmed.size}; fenced pushes ${fenced}`,
    );
  }, { logLines: 30 });
});
