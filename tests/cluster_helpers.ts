/**
 * Helpers for tests that run a real local cluster (client/local_cluster.ts): its lifecycle, a
 * client with a given user's key, the leader's name, and error codes of requests.
 * @module
 */
import assert from "node:assert/strict";
import { LocalCluster, type LocalClusterOptions } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { RpcError } from "../lib/rpc.ts";
import { MessageType, NodeFlags, NodeRole, uuidToHex } from "../wire/mod.ts";
import { terminate } from "../wire/zmq/mod.ts";
import { waitFor } from "./wait.ts";

/**
 * Starts a cluster, runs `f` with it and an admin client, prints the nodes' last log lines if
 * `f` fails, and always stops the cluster, removes its data and closes every socket.
 */
export async function withCluster(
  opts: LocalClusterOptions,
  f: (cluster: LocalCluster, admin: DsysClient) => Promise<void>,
  o: { logLines?: number; deadlineMs?: number } = {},
): Promise<void> {
  const cluster = await LocalCluster.start(opts);
  const admin = new DsysClient(cluster.info, { deadlineMs: o.deadlineMs ?? 30_000 });
  try {
    await f(cluster, admin);
  } catch (e) {
    await cluster.printLogs(o.logLines ?? 15);
    throw e;
  } finally {
    await admin.close();
    await cluster.stop();
    // A worker the test killed (SIGKILL) and did not restart leaves its FUSE mount and its slots'
    // mounts behind: the kernel keeps a mount whose daemon died. Nothing else would remove them.
    await unmountUnder(cluster.dataDir);
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
    await terminate();
  }
}

/** Lazily unmounts every mount point under `dir`, deepest first. */
export async function unmountUnder(dir: string): Promise<void> {
  const info = await Deno.readTextFile("/proc/self/mountinfo").catch(() => "");
  const points = info.split("\n").map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of new Set(points)) {
    await new Deno.Command("umount", { args: ["-l", p], stdout: "null", stderr: "null" }).output()
      .catch(() => {});
  }
}

/** A client of `cluster` with the key of user `name` (made by `users` at start). */
export function clientAs(cluster: LocalCluster, name: string, deadlineMs = 30_000): DsysClient {
  return new DsysClient({ ...cluster.info, key: `${cluster.keysDir}/${name}.key` }, {
    deadlineMs,
  });
}

/** The error code a request ends with (null when it succeeded). */
export async function codeOf(p: Promise<unknown>): Promise<number | null> {
  try {
    await p;
    return null;
  } catch (e) {
    if (e instanceof RpcError) return e.code;
    throw e;
  }
}

/** The name of the master that is leader now (and running), waiting through elections. */
export async function leaderName(c: LocalCluster, client: DsysClient): Promise<string> {
  return await waitFor("a leader", async () => {
    try {
      const nodes = await client.nodes();
      const l = nodes.find((n) => n.role === 1 && (n.flags & NodeFlags.Leader));
      if (l && c.procs.has(l.name)) return l.name;
    } catch { /* election in progress */ }
    return "";
  }, { timeoutMs: 60_000, intervalMs: 100 });
}

/** Ids (hex) of the jobs the masters list for `client`. */
export async function jobIds(client: DsysClient): Promise<string[]> {
  const r = await client.masters.request({ type: MessageType.JobListRequest, node: client.node });
  assert.equal(r.type, MessageType.JobListResponse);
  return r.type === MessageType.JobListResponse ? r.jobs.map((j) => uuidToHex(j.job)) : [];
}

/**
 * The name of the balancer that holds the primary lease now (and runs), as the masters' node list
 * says (the balancer entry flagged leader), waiting through a failover.
 */
export async function primaryBalancer(c: LocalCluster, client: DsysClient): Promise<string> {
  return await waitFor("a primary balancer", async () => {
    try {
      const nodes = await client.nodes();
      const b = nodes.find((n) => n.role === NodeRole.Balancer && (n.flags & NodeFlags.Leader));
      for (const p of c.procs.values()) {
        if (b && p.role === "balancer" && p.endpoint === b.endpoint) return p.name;
      }
    } catch { /* masters busy */ }
    return "";
  }, { timeoutMs: 60_000, intervalMs: 100 });
}
