/**
 * The storage tier with real processes and disks: 3 storage nodes, R = 2, registering with the
 * masters. A node killed (kill -9) during a stream of puts and during a running job loses no
 * acknowledged file, the job completes, and the dead node's files return to 2 replicas on the
 * others; a wiped node rejoins empty and is refilled; a flipped byte is found by the scrub and
 * repaired from the other replica.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { withCluster } from "./cluster_helpers.ts";
import { LocalCluster } from "../client/local_cluster.ts";
import {
  ChunkState,
  type NodeEntry,
  NodeRole,
  NodeState,
  uuidFromHex,
  uuidToHex,
} from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";
import { DsysClient } from "../client/commands.ts";
import { bytesOf, run } from "./storage_helpers.ts";

const enc = new TextEncoder();
const NAMES = LocalCluster.storageNames(3);
const TIER = {
  storageNodes: 3,
  workers: 2,
  slotsPerWorker: 2,
  extraArgs: {
    master: ["--repair-after", "2s"],
    storage: ["--repair-every", "300ms", "--scrub-rate", "67108864"],
  },
};

/** Which storage nodes (by name) hold committed file `hex` on disk. */
async function holders(c: LocalCluster, hex: string, names = NAMES): Promise<string[]> {
  const out: string[] = [];
  for (const n of names) {
    try {
      await Deno.stat(`${c.dataDir}/${n}/files/${hex}`);
      out.push(n);
    } catch { /* not here */ }
  }
  return out;
}

/** Waits until every file is on at least 2 of the running storage nodes `live`. */
async function waitReplicated(c: LocalCluster, hexes: string[], live: string[], what: string) {
  let short: string[] = [];
  await waitFor(what, async () => {
    short = [];
    for (const h of hexes) if ((await holders(c, h, live)).length < 2) short.push(h);
    return short.length === 0;
  }, { timeoutMs: 60_000, intervalMs: 200, detail: () => `short of replicas: ${short.join(" ")}` });
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex").slice(0, 32);

Deno.test("storage tier: puts go to 2 of 3 nodes; dsys nodes lists them with their usage", async () => {
  await withCluster(TIER, async (cluster, client) => {
    const dir = await Deno.makeTempDir();
    const hexes: string[] = [];
    for (let i = 0; i < 6; i++) {
      await Deno.writeFile(`${dir}/f${i}`, bytesOf(i + 1, 20_000 + i));
    }
    const put = await client.put(Array.from({ length: 6 }, (_, i) => `${dir}/f${i}`));
    for (const p of put) {
      hexes.push(uuidToHex(p.id));
      assert.equal(p.nodes.length, 2, "acknowledged on 2 replicas");
      // Exactly 2 once placement and repair agree (a node the client saw suspect under load may
      // have been skipped; repair then moves the copy and drops the surplus).
      await waitFor(
        "2 holders",
        async () => (await holders(cluster, uuidToHex(p.id))).length === 2,
      );
    }
    // One file with 3 replicas asked for explicitly.
    const [three] = await client.put([`${dir}/f0`], { replicas: 3 });
    assert.equal(three.nodes.length, 3);
    await waitFor(
      "all 3 nodes to hold the 3-replica file",
      async () => (await holders(cluster, uuidToHex(three.id))).length === 3,
    );
    const storage = await waitFor("3 storage nodes in dsys nodes", async () => {
      const s = (await client.nodes()).filter((n) => n.role === NodeRole.Storage);
      return s.length === 3 && s.every((n) => n.state === NodeState.Alive) ? s : null;
    });
    for (const s of storage!) assert.match(s.detail, /GiB used, \d+ files/);
    await Deno.remove(dir, { recursive: true });
  });
});

Deno.test("storage tier: kill -9 a node during puts and a running job; nothing acknowledged is lost, R is restored", async () => {
  await withCluster({ ...TIER, metricsListen: "127.0.0.1:0" }, async (cluster, client) => {
    const dir = await Deno.makeTempDir();
    // Inputs of the job, stored before the kill.
    const inputs: { id: Uint8Array; name: string; data: Uint8Array }[] = [];
    for (let i = 0; i < 4; i++) {
      const data = bytesOf(100 + i, 300_000);
      await Deno.writeFile(`${dir}/in${i}`, data);
      const [p] = await client.put([`${dir}/in${i}`]);
      inputs.push({ id: p.id, name: `in${i}`, data });
    }
    // Each chunk prints the SHA-256 of every input, read through the FUSE mount, slowly.
    const job = await client.submit({
      program: enc.encode(
        '#!/bin/sh\nset -eu\nsleep 1\nfor f in "$DSYS_INPUT_DIR"/*; do sha256sum < "$f"; done\n',
      ),
      programName: "hash.sh",
      argument: "",
      chunks: 8,
      inputs: inputs.map((f) => ({ id: f.id, name: f.name })),
      timeLimitMs: 120_000,
    });
    // A stream of puts; the victim dies in the middle of it.
    const acked: { hex: string; data: Uint8Array }[] = [];
    const victim = "storage2";
    const puts = (async () => {
      for (let i = 0; i < 24; i++) {
        const data = bytesOf(1000 + i, 50_000 + 997 * i);
        await Deno.writeFile(`${dir}/p${i}`, data);
        const [p] = await client.put([`${dir}/p${i}`]);
        assert.equal(p.nodes.length, 2);
        acked.push({ hex: uuidToHex(p.id), data });
        if (i === 8) await cluster.kill(victim, "SIGKILL");
      }
    })();
    await puts;
    const s = await waitForJob(client, job, { timeoutMs: 180_000 });
    assert.equal(s.state, ChunkState.Succeeded, JSON.stringify(s.chunks.map((c) => c.reason)));
    const expected = inputs.map((f) => createHash("sha256").update(f.data).digest("hex"))
      .map((h) => `${h}  -\n`).join("");
    for (const c of s.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(new TextDecoder().decode(await client.storage.getBytes(out.id)), expected);
    }
    // Every acknowledged file reads back intact with the victim dead.
    for (const a of acked) {
      const got = await client.storage.getBytes(uuidFromHex(a.hex));
      assert.equal(sha(got), a.hex);
    }
    // Once the masters declare it dead (--repair-after 2s), its files are copied to the others.
    const live = NAMES.filter((n) => n !== victim);
    const all = [...acked.map((a) => a.hex), ...inputs.map((f) => uuidToHex(f.id))];
    await waitReplicated(cluster, all, live, "every file back at 2 replicas on the live nodes");
    // The survivors' metrics say what repair did: copies made, nothing under-replicated left.
    const metric = async (name: string): Promise<number> => {
      let sum = 0;
      for (const n of live) {
        const page = await (await fetch(`http://${cluster.procs.get(n)!.metrics}/metrics`)).text();
        const line = page.split("\n").find((l) => l.startsWith(`${name} `));
        sum += Number(line?.split(" ")[1] ?? NaN);
      }
      return sum;
    };
    assert.ok(await metric("dsys_storage_repair_copies_total") > 0, "repair copies counted");
    await waitFor(
      "no under-replicated files in the metrics",
      async () => await metric("dsys_storage_under_replicated_files") === 0,
    );
    await waitFor(
      "the victim listed dead",
      async () =>
        (await client.nodes()).some((n) =>
          n.role === NodeRole.Storage && n.state === NodeState.Dead
        ),
    );
    await Deno.remove(dir, { recursive: true });
  }, { deadlineMs: 60_000 });
});

Deno.test("storage tier: a wiped node rejoins empty and is refilled; a flipped byte is repaired", async () => {
  await withCluster(TIER, async (cluster, client) => {
    const dir = await Deno.makeTempDir();
    const files: { hex: string; data: Uint8Array }[] = [];
    for (let i = 0; i < 12; i++) {
      const data = bytesOf(5000 + i, 40_000 + 131 * i);
      await Deno.writeFile(`${dir}/w${i}`, data);
      const [p] = await client.put([`${dir}/w${i}`]);
      files.push({ hex: uuidToHex(p.id), data });
    }
    // Wipe storage3's data directory while it is down, and start it again.
    const wiped = "storage3";
    await cluster.kill(wiped, "SIGKILL");
    await Deno.remove(`${cluster.dataDir}/${wiped}`, { recursive: true });
    await cluster.startStorage(wiped);
    const hexes = files.map((f) => f.hex);
    await waitReplicated(cluster, hexes, NAMES, "every file at 2 replicas after the wipe");
    await waitFor("the wiped node refilled by repair", async () => {
      for (const h of hexes) if ((await holders(cluster, h, [wiped])).length > 0) return true;
      return false;
    }, { timeoutMs: 60_000 });

    // Flip one byte of one replica on disk: the scrub finds it, deletes it, repair recopies it.
    // First the refill must have settled on exactly 2 copies (a third, surplus one is deleted
    // rather than recopied): flip one of the 2 that belong there.
    const f = files[0];
    await waitFor(
      "the file on exactly 2 nodes",
      async () => (await holders(cluster, f.hex)).length === 2,
      { timeoutMs: 60_000 },
    );
    const [on] = await holders(cluster, f.hex);
    const path = `${cluster.dataDir}/${on}/files/${f.hex}`;
    const bytes = await Deno.readFile(path);
    bytes[1234] ^= 0x40;
    await Deno.writeFile(path, bytes);
    await waitFor("the flipped replica repaired", async () => {
      try {
        const now = await Deno.readFile(path);
        return sha(now) === f.hex;
      } catch {
        return false; // deleted by the scrub, not yet recopied
      }
    }, { timeoutMs: 60_000, intervalMs: 100 });
    const log = await Deno.readTextFile(`${cluster.dataDir}/logs/${on}.log`);
    assert.match(log, /corrupt/, "the scrub (or a read) reported the corruption");
    // Every file reads back intact.
    for (const x of files) {
      const got = await client.storage.getBytes(uuidFromHex(x.hex));
      assert.equal(sha(got), x.hex);
    }
    await Deno.remove(dir, { recursive: true });
  });
});

Deno.test("storage tier: deletion — a file a running job uses stays; unreferenced files go from every replica", async () => {
  const opts = {
    ...TIER,
    extraArgs: {
      master: ["--repair-after", "2s", "--delete-grace", "2s"],
      storage: ["--repair-every", "300ms", "--gc-every", "300ms"],
    },
  };
  await withCluster(opts, async (cluster, client) => {
    const dir = await Deno.makeTempDir();
    const input = bytesOf(7001, 30_000);
    const other = bytesOf(7002, 30_000);
    await Deno.writeFile(`${dir}/input`, input);
    await Deno.writeFile(`${dir}/other`, other);
    const [a, b] = await client.put([`${dir}/input`, `${dir}/other`]);
    const [aHex, bHex] = [uuidToHex(a.id), uuidToHex(b.id)];
    // `dsys ls`: both kept, with their replicas; no job refers to them yet.
    const ls = await client.files();
    assert.deepEqual(
      ls.map((f) => [uuidToHex(f.id), f.size, f.replicas, f.refs]).sort(),
      [[aHex, 30_000, 2, 0], [bHex, 30_000, 2, 0]].sort(),
    );
    // A job reads the input after a pause, long enough for a collection round to pass.
    const gate = `${dir}/go`;
    const job = await client.submit({
      program: enc.encode(
        '#!/bin/sh\nset -eu\nsleep 6\nsha256sum < "$DSYS_INPUT_DIR/input"\n',
      ),
      programName: "late.sh",
      argument: gate,
      chunks: 1,
      inputs: [{ id: a.id, name: "input" }],
      timeLimitMs: 120_000,
    });
    assert.equal((await client.files()).find((f) => uuidToHex(f.id) === aHex)?.refs, 1);
    // Nobody keeps either file now; only the running job refers to the input.
    assert.equal(await client.unkeep([a.id, b.id]), 2);
    await waitFor(
      "the unreferenced file gone from every replica",
      async () => (await holders(cluster, bHex)).length === 0,
      { timeoutMs: 60_000, intervalMs: 100 },
    );
    assert.equal((await holders(cluster, aHex)).length, 2, "the job's input is kept while it runs");
    const s = await waitForJob(client, job, { timeoutMs: 120_000 });
    assert.equal(s.state, ChunkState.Succeeded, JSON.stringify(s.chunks.map((c) => c.reason)));
    const want = createHash("sha256").update(input).digest("hex");
    const stdout = s.chunks[0].outputs.find((o) => o.name === "stdout")!;
    assert.equal(
      new TextDecoder().decode(await client.storage.getBytes(stdout.id)),
      `${want}  -\n`,
    );
    // Removing the job releases the input, the program and the outputs: all go.
    assert.equal(await client.remove(job), true);
    await waitFor(
      "the job's files gone from every replica",
      async () =>
        (await holders(cluster, aHex)).length === 0 &&
        (await holders(cluster, uuidToHex(stdout.id))).length === 0,
      {
        timeoutMs: 60_000,
        intervalMs: 100,
      },
    );
    // A job submitted after the delete that names the file is refused (no worker is ever asked
    // to read it, from storage or from its cache).
    await assert.rejects(
      client.submit({
        program: enc.encode('#!/bin/sh\ncat "$DSYS_INPUT_DIR/input"\n'),
        programName: "cat.sh",
        argument: "",
        chunks: 1,
        inputs: [{ id: a.id, name: "input" }],
        timeLimitMs: 10_000,
      }),
      (e: Error) => /not found|deleted/i.test(e.message),
    );
    // Stored again, it is live again and a job can use it.
    const [again] = await client.put([`${dir}/input`]);
    assert.equal(uuidToHex(again.id), aHex);
    const job2 = await client.submit({
      program: enc.encode('#!/bin/sh\nsha256sum < "$DSYS_INPUT_DIR/input"\n'),
      programName: "hash.sh",
      argument: "",
      chunks: 1,
      inputs: [{ id: a.id, name: "input" }],
      timeLimitMs: 60_000,
    });
    const s2 = await waitForJob(client, job2, { timeoutMs: 60_000 });
    assert.equal(s2.state, ChunkState.Succeeded);
    await Deno.remove(dir, { recursive: true });
  }, { deadlineMs: 60_000 });
});

Deno.test("storage tier: a full node says so and takes no new files; the others take them", async () => {
  await withCluster({ ...TIER, storageNodes: 1 }, async (cluster, client) => {
    // A second node that may hold 1 MiB.
    await cluster.admitKey("small", "storage");
    await cluster.spawn("small", "storage", [
      "--listen",
      "tcp://127.0.0.1:0",
      "--data",
      `${cluster.dataDir}/small`,
      "--masters",
      cluster.info.masters.join(","),
      "--capacity",
      String(1024 * 1024),
    ]);
    await waitFor(
      "2 storage nodes alive",
      async () =>
        (await client.nodes()).filter((n) =>
          n.role === NodeRole.Storage && n.state === NodeState.Alive
        )
          .length === 2,
    );
    const dir = await Deno.makeTempDir();
    const onSmall = async (hex: string) => (await holders(cluster, hex, ["small"])).length > 0;
    // Fill it: one-replica files until the small node holds more than its capacity.
    let filled = 0;
    for (let i = 0; filled <= 1024 * 1024; i++) {
      assert.ok(i < 200, "the small node never got files");
      const data = bytesOf(9000 + i, 200_000);
      await Deno.writeFile(`${dir}/f${i}`, data);
      const [p] = await client.put([`${dir}/f${i}`], { replicas: 1 });
      if (await onSmall(uuidToHex(p.id))) filled += data.length;
    }
    const full = await waitFor(
      "the small node listed full",
      async () =>
        (await client.nodes()).find((n) => n.name === "small" && /capacity/.test(n.detail)),
    );
    assert.equal(full!.state, NodeState.Alive, "full, not dead: it still serves");
    // A new client (fresh membership): every new file goes to the other node.
    const fresh = new DsysClient(cluster.info);
    try {
      for (let i = 0; i < 8; i++) {
        await Deno.writeFile(`${dir}/g${i}`, bytesOf(9500 + i, 100_000));
        const [p] = await fresh.put([`${dir}/g${i}`], { replicas: 1 });
        const hex = uuidToHex(p.id);
        assert.equal(await onSmall(hex), false, `file ${i} went to the full node`);
        assert.deepEqual(await holders(cluster, hex, ["storage"]), ["storage"]);
      }
    } finally {
      await fresh.close();
    }
    await Deno.remove(dir, { recursive: true });
  });
});

Deno.test("storage tier: a node whose disk fills mid-put: the put goes on elsewhere, the node says full", async () => {
  await withCluster({ ...TIER, storageNodes: 1 }, async (cluster, client) => {
    // The second node's data directory is a 3 MiB tmpfs; --reserve 0 so only ENOSPC tells.
    const data = `${cluster.dataDir}/tiny`;
    await Deno.mkdir(data);
    await run("mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", data);
    let watching = false;
    try {
      await cluster.admitKey("tiny", "storage");
      await cluster.spawn("tiny", "storage", [
        "--listen",
        "tcp://127.0.0.1:0",
        "--data",
        data,
        "--masters",
        cluster.info.masters.join(","),
        "--reserve",
        "0",
      ]);
      await waitFor(
        "2 storage nodes alive",
        async () =>
          (await client.nodes()).filter((n) =>
            n.role === NodeRole.Storage && n.state === NodeState.Alive
          ).length === 2,
      );
      const dir = await Deno.makeTempDir();
      // The node says "disk full" for a while after each ENOSPC (roles/storage/tier_member.ts),
      // not for ever: on a loaded machine the puts below can outlast that, so the node list is
      // watched while they run rather than only once they are done.
      let full: NodeEntry | undefined;
      watching = true;
      const watcher = (async () => {
        while (watching && !full) {
          full = (await client.nodes().catch(() => [])).find((n) =>
            n.name === "tiny" && /disk full/.test(n.detail)
          );
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      // Every put succeeds with its one replica, although the tiny node runs out of space.
      let onTiny = 0;
      for (let i = 0; i < 24; i++) {
        const bytes = bytesOf(11_000 + i, 400_000);
        await Deno.writeFile(`${dir}/f${i}`, bytes);
        const [p] = await client.put([`${dir}/f${i}`], { replicas: 1 });
        assert.equal(p.nodes.length, 1);
        const where = await holders(cluster, uuidToHex(p.id), ["storage", "tiny"]);
        assert.equal(where.length, 1, `file ${i} is on one node: ${where}`);
        if (where[0] === "tiny") onTiny++;
        const got = await client.storage.getBytes(p.id);
        assert.equal(sha(got), uuidToHex(p.id));
      }
      assert.ok(onTiny > 0 && onTiny < 8, `${onTiny} files fit on the 3 MiB node`);
      const seen = await waitFor("the tiny node listed full", () => full);
      assert.equal(seen!.state, NodeState.Alive);
      watching = false;
      await watcher;
      await Deno.remove(dir, { recursive: true });
    } finally {
      watching = false;
      await cluster.kill("tiny", "SIGKILL").catch(() => {});
      await run("umount", "-l", data);
    }
  });
});
