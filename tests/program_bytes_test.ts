/**
 * No program byte passes through a master or a balancer (real processes): a job whose program is
 * 6 MiB of unique bytes runs on 3 masters, a primary and a standby balancer and 2 workers, and
 *
 * - every chunk prints the SHA-256 of the program file it ran: the workers got the exact bytes;
 * - storage sent the program at most once per worker (a program is a cached file by id);
 * - the masters' data directories (Raft log, snapshots) grew by kilobytes, not by the program;
 * - each node's own counter of the largest frame it received (lib/rpc.ts, logged when the node
 *   stops) shows no frame above 64 KiB reached a master or a balancer, while storage and the
 *   workers did get MiB-sized file_put / file_response frames (the counter sees big frames).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ChunkState } from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";

const MiB = 1024 * 1024;
const KiB = 1024;
const dec = new TextDecoder();

/** Bytes of all files under `dir`. */
async function du(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) n += await du(p);
    else if (e.isFile) n += (await Deno.stat(p).catch(() => ({ size: 0 }))).size;
  }
  return n;
}

/** The "largest frames received" record a node logs when it stops (waits for the log file). */
async function largestFrames(
  cluster: LocalCluster,
  name: string,
): Promise<Record<string, number>> {
  return await waitFor(`${name}'s largest-frames log record`, async () => {
    const log = await Deno.readTextFile(`${cluster.dataDir}/logs/${name}.log`).catch(() => "");
    const line = log.split("\n").find((l) => l.includes(`"msg":"largest frames received"`));
    return line ? JSON.parse(line).frames as Record<string, number> : null;
  }, { timeoutMs: 30_000, intervalMs: 50 }) as Record<string, number>;
}

Deno.test("a 6 MiB program goes client -> storage -> workers, never through masters or balancers", async () => {
  const cluster = await LocalCluster.start({
    masters: 3,
    workers: 2,
    slotsPerWorker: 2,
    standbyBalancer: true,
  });
  const client = new DsysClient(cluster.info, { deadlineMs: 60_000 });
  const masters = ["m1", "m2", "m3"];
  try {
    // 4.5 MiB of random bytes as base64 after an exit: the shell never reads that far.
    const noise = new Uint8Array(4.5 * MiB);
    for (let i = 0; i < noise.length; i += 65536) {
      crypto.getRandomValues(noise.subarray(i, i + 65536));
    }
    const program = new TextEncoder().encode(
      `#!/bin/sh\nsha256sum "$0" | cut -d' ' -f1\nexit 0\n#${
        Buffer.from(noise).toString("base64")
      }\n`,
    );
    assert.ok(program.length > 6 * MiB);
    const digest = createHash("sha256").update(program).digest("hex");

    const mastersBefore = await Promise.all(masters.map((m) => du(`${cluster.dataDir}/${m}`)));
    const storageBefore = await client.storage.stats();
    const job = await client.submit({
      program,
      programName: "big.sh",
      argument: "",
      chunks: 8,
      inputs: [],
      timeLimitMs: 60_000,
    });
    const s = await waitForJob(client, job);
    assert.equal(s.state, ChunkState.Succeeded, JSON.stringify(s.chunks.map((c) => c.reason)));
    for (const c of s.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await client.storage.getBytes(out.id)).trim(), digest);
    }
    // Storage sent the program's bytes once or twice (2 workers), never once per chunk.
    const storageAfter = await client.storage.stats();
    const sent = storageAfter.getBytes - storageBefore.getBytes;
    assert.ok(sent >= program.length, `storage sent ${sent} bytes`);
    assert.ok(sent < 2 * program.length + 64 * KiB, `storage sent ${sent} bytes for 8 chunks`);
    // Each master's log and snapshots hold the job's metadata: kilobytes (the program's bytes
    // would be 6 MiB on each).
    const mastersAfter = await Promise.all(masters.map((m) => du(`${cluster.dataDir}/${m}`)));
    masters.forEach((m, i) => {
      const grown = mastersAfter[i] - mastersBefore[i];
      assert.ok(grown < 256 * KiB, `${m}'s data grew by ${grown} bytes`);
    });
  } catch (e) {
    await cluster.printLogs();
    throw e;
  } finally {
    await client.close();
    await cluster.stop();
  }
  // What each node received, by its own count. Every master heard raft_message (the Raft group),
  // every balancer balancer_lease_reply (both ask for the lease), the leader got job_submit, the
  // primary balancer job_dispatch, a worker worker_request: the records are there, and all small.
  const frames = new Map<string, Record<string, number>>();
  for (const name of [...masters, "balancer", "balancer2", "worker1", "worker2", "storage"]) {
    frames.set(name, await largestFrames(cluster, name));
  }
  const controlPlane = [...masters, "balancer", "balancer2"];
  for (const name of controlPlane) {
    const f = frames.get(name)!;
    const expected = masters.includes(name) ? "raft_message" : "balancer_lease_reply";
    assert.ok(f[expected] > 0, `${name} received no ${expected}: ${JSON.stringify(f)}`);
    for (const [type, bytes] of Object.entries(f)) {
      assert.ok(bytes < 64 * KiB, `${name} received a ${bytes}-byte ${type}`);
    }
  }
  assert.ok(masters.some((m) => frames.get(m)!.job_submit > 0), "no master got job_submit");
  assert.ok(
    ["balancer", "balancer2"].some((b) => frames.get(b)!.job_dispatch > 0),
    "no balancer got job_dispatch",
  );
  const workers = ["worker1", "worker2"].map((w) => frames.get(w)!);
  assert.ok(workers.some((f) => f.worker_request > 0), "no worker got worker_request");
  for (const f of workers) {
    assert.ok((f.worker_request ?? 0) < 64 * KiB, `worker_request of ${f.worker_request} bytes`);
  }
  // The counter does see big frames: the upload into storage, the program's way to a worker.
  assert.ok(frames.get("storage")!.file_put >= MiB, JSON.stringify(frames.get("storage")));
  assert.ok(
    workers.some((f) => f.file_response >= MiB),
    "no worker fetched the program in MiB-sized file_responses",
  );
  await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
});
