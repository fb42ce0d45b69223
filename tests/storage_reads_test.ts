/**
 * Reads through the storage tier client (roles/storage/replicated_client.ts) against two real
 * storage node processes holding the same file: a corrupt block on the first replica in the
 * read order makes the read continue on the other at the offset reached (and the result still
 * verifies); concurrent reads of one file go to different replicas (the least loaded first).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ReplicatedStorage } from "../roles/storage/replicated_client.ts";
import { StaticMembership } from "../roles/storage/membership.ts";
import { readOrder } from "../roles/storage/placement.ts";
import { randomUuid, uuidToHex } from "../wire/mod.ts";
import { terminate } from "../wire/zmq/mod.ts";
import { randomBytes, StorageProc } from "./storage_helpers.ts";

const MiB = 1024 * 1024;

Deno.test("tier reads: a corrupt block fails over mid-file; concurrent reads spread over replicas", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  const nodes = await Promise.all(dirs.map((d) => StorageProc.start(null, d)));
  const membership = new StaticMembership(nodes.map((n) => n.endpoint), 2);
  const tier = new ReplicatedStorage(membership, randomUuid(), {
    auth: null,
    chunkBytes: 256 * 1024,
  });
  try {
    const data = randomBytes(3 * MiB);
    const put = await tier.putBytes(data);
    assert.equal(put.nodes.length, 2, "on both nodes");
    const hex = uuidToHex(put.id);
    const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

    // Two reads at once: each replica serves one of them whole.
    const [a, b] = await Promise.all([tier.getBytes(put.id), tier.getBytes(put.id)]);
    assert.equal(sha(a), sha(data));
    assert.equal(sha(b), sha(data));
    for (const s of await tier.nodeStats()) {
      assert.ok(s.stats!.getBytes >= data.length, `${s.endpoint} served a whole read`);
    }

    // Corrupt the middle block (blocks are 1 MiB) of the replica the read starts on: the read
    // starts there, fails at that block, and continues on the other replica.
    const first = readOrder(hex, (await membership.view()).members)[0].endpoint;
    const i = nodes.findIndex((n) => n.endpoint === first);
    const path = `${dirs[i]}/files/${hex}`;
    const bytes = await Deno.readFile(path);
    bytes[MiB + MiB / 2] ^= 0xff;
    await Deno.writeFile(path, bytes);
    const before = await tier.nodeStats();
    const got = await tier.getBytes(put.id);
    assert.equal(sha(got), sha(data), "read completed from the other replica, verified");
    const after = await tier.nodeStats();
    const served = (list: typeof after, ep: string, other: boolean) =>
      list.find((s) => other ? s.endpoint !== ep : s.endpoint === ep)!.stats!.getBytes;
    const fromFirst = served(after, first, false) - served(before, first, false);
    const fromOther = served(after, first, true) - served(before, first, true);
    assert.ok(fromFirst >= MiB && fromFirst < data.length, `first replica served ${fromFirst} B`);
    assert.ok(
      fromOther > 0 && fromOther <= data.length - MiB,
      `other replica served ${fromOther} B`,
    );
  } finally {
    await tier.close();
    for (const n of nodes) await n.kill("SIGKILL");
    for (const d of dirs) await Deno.remove(d, { recursive: true });
    await terminate();
  }
});
