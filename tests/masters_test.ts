/**
 * The Raft-replicated masters as real processes: kill -9 of the leader under a stream of
 * submissions loses no acknowledged job and duplicates none; a restarted master catches up; a
 * master wiped clean rejoins (under a new name) by snapshot; 5 masters survive two failures.
 */
import assert from "node:assert/strict";
import type { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ClusterOp, MessageType, uuidToHex } from "../wire/mod.ts";
import { waitFor } from "./wait.ts";
import { jobIds, leaderName, withCluster } from "./cluster_helpers.ts";

const PROGRAM = new TextEncoder().encode("#!/bin/sh\necho hi\n");

/** Submits a 1-chunk job; resolves with its id once the masters acknowledge it. */
function submitOne(c: DsysClient): Promise<Uint8Array> {
  return c.submit({
    program: PROGRAM,
    programName: "hi.sh",
    argument: "",
    chunks: 1,
    inputs: [],
    timeLimitMs: 10_000,
  });
}

/** Submits from `clients` in parallel until `stop()`; `acked` fills as submissions are acknowledged. */
function submitStream(clients: DsysClient[]) {
  let done = false;
  const acked: string[] = [];
  const running = Promise.all(clients.map(async (c) => {
    while (!done) {
      const job = await submitOne(c);
      acked.push(uuidToHex(job));
    }
  }));
  return {
    acked,
    async stop() {
      done = true;
      await running;
    },
  };
}

function withMasters(
  n: number,
  extra: string[],
  f: (c: LocalCluster, client: DsysClient) => Promise<void>,
): Promise<void> {
  return withCluster({ masters: n, workers: 0, extraArgs: { master: extra } }, f, {
    deadlineMs: 20_000,
    logLines: 12,
  });
}

Deno.test("masters: kill -9 of the leader under load loses and duplicates nothing; it catches up", async () => {
  await withMasters(3, ["--snapshot-every", "40"], async (cluster, client) => {
    const clients = Array.from(
      { length: 4 },
      () => new DsysClient(cluster.info, { deadlineMs: 20_000 }),
    );
    const stream = submitStream(clients);
    await waitFor("10 acknowledged submissions", () => stream.acked.length >= 10, {
      timeoutMs: 60_000,
    });
    const victim = await leaderName(cluster, client);
    const proc = cluster.procs.get(victim)!;
    await cluster.kill(victim);
    const atKill = stream.acked.length;
    // Progress under the new leader: 10 more acknowledged after the kill.
    await waitFor("submissions after the kill", () => stream.acked.length >= atKill + 10, {
      timeoutMs: 60_000,
    });
    await stream.stop();
    const acked = stream.acked;
    await Promise.all(clients.map((c) => c.close()));
    const jobs = await jobIds(client);
    assert.equal(new Set(jobs).size, jobs.length, "a job id appears twice");
    for (const id of acked) assert.ok(jobs.includes(id), `acknowledged job ${id} lost`);
    // The exactly-once table: every client's retries mapped to one job each.
    assert.equal(jobs.length, acked.length, "a submission created more than one job");

    // The killed master restarts, catches up and can lead with the full table.
    await cluster.restart(victim, proc);
    const member = `${victim}@${proc.endpoint}`;
    await waitFor(`leadership to move to ${victim}`, async () => {
      try {
        await client.masters.request({
          type: MessageType.ClusterChange,
          node: client.node,
          op: ClusterOp.TransferLeader,
          member,
        });
        // Give the transfer a moment before looking (a retry cadence, not a proof).
        await new Promise((r) => setTimeout(r, 300));
        return (await leaderName(cluster, client)) === victim;
      } catch {
        return false; // retry
      }
    }, { timeoutMs: 90_000, intervalMs: 100 });
    const after = await jobIds(client);
    assert.deepEqual(after.sort(), jobs.sort());
  });
});

Deno.test("masters: a master wiped clean rejoins under a new name by snapshot", async () => {
  await withMasters(3, ["--snapshot-every", "20"], async (cluster, client) => {
    for (let i = 0; i < 60; i++) {
      await submitOne(client);
    }
    const before = await jobIds(client);
    const leader = await leaderName(cluster, client);
    const victim = ["m1", "m2", "m3"].find((m) => m !== leader)!;
    const proc = cluster.procs.get(victim)!;
    await cluster.kill(victim);
    const dataIdx = proc.args.indexOf("--data");
    await Deno.remove(proc.args[dataIdx + 1], { recursive: true });
    const change = (op: number, member: string) =>
      client.masters.request({ type: MessageType.ClusterChange, node: client.node, op, member });
    await change(ClusterOp.RemoveMaster, `${victim}@${proc.endpoint}`);
    const fresh = `${victim}b`;
    await cluster.admitKey(fresh, "master");
    await change(ClusterOp.AddMaster, `${fresh}@${proc.endpoint}`);
    const args = [...proc.args];
    args[args.indexOf("--id") + 1] = fresh;
    const p = args.indexOf("--peers");
    args.splice(p, 2, "--join");
    await cluster.spawn(fresh, "master", args);
    await waitFor(`leadership to move to ${fresh}`, async () => {
      try {
        await change(ClusterOp.TransferLeader, `${fresh}@${proc.endpoint}`);
        // Give the transfer a moment before looking (a retry cadence, not a proof).
        await new Promise((r) => setTimeout(r, 300));
        return (await leaderName(cluster, client)) === fresh;
      } catch {
        return false; // retry
      }
    }, { timeoutMs: 90_000, intervalMs: 100 });
    assert.deepEqual((await jobIds(client)).sort(), before.sort());
    const log = await Deno.readTextFile(`${cluster.dataDir}/logs/${fresh}.log`);
    assert.match(log, /installed snapshot/);
  });
});

Deno.test("masters: 5 masters keep committing with two killed", async () => {
  await withMasters(5, [], async (cluster, client) => {
    const first = await submitOne(client);
    const leader = await leaderName(cluster, client);
    const others = ["m1", "m2", "m3", "m4", "m5"].filter((m) => m !== leader);
    await cluster.kill(leader);
    await cluster.kill(others[0]);
    const second = await submitOne(client);
    const jobs = await jobIds(client);
    assert.ok(jobs.includes(uuidToHex(first)) && jobs.includes(uuidToHex(second)));
  });
});
