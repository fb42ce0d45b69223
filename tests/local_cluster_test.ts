/**
 * The test cluster helper itself: a worker a test kills (SIGKILL) leaves its FUSE mount and its
 * slots' mounts behind (the kernel keeps a mount whose daemon died); withCluster removes them.
 */
import assert from "node:assert/strict";
import { withCluster } from "./cluster_helpers.ts";
import { waitFor } from "./wait.ts";
Deno.test("withCluster: a worker killed mid-chunk leaves nothing mounted", async () => {
  let dir = "";
  await withCluster({ workers: 1 }, async (cluster, client) => {
    dir = cluster.dataDir;
    await client.submit({
      program: new TextEncoder().encode("#!/bin/sh\nsleep 30\n"),
      programName: "s",
      argument: "",
      chunks: 1,
      inputs: [],
      timeLimitMs: 60000,
    });
    await waitFor(
      "a slot mount",
      async () =>
        (await Deno.readTextFile("/proc/self/mountinfo")).includes(`${dir}/worker1/chunks`),
    );
    await cluster.kill("worker1", "SIGKILL");
  });
  const left = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n").filter((l) =>
    l.includes(dir)
  );
  assert.deepEqual(left, []);
});
