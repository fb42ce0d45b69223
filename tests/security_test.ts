/**
 * The trust boundary with real processes and real keys: who gets in (ZAP: keyring keys only),
 * who may send what (FORBIDDEN by role), whose jobs are whose, revocation that takes effect on
 * a live connection, and nodes that refuse to run unauthenticated off loopback.
 */
import assert from "node:assert/strict";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { addKey, initCluster, revokeKey, writeKeyring } from "../client/keys.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { Credentials, type KeyFile, Keyring, newKeyFile } from "../lib/security.ts";
import { ChunkState, ClusterOp, ErrorCode, MessageType, randomUuid } from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";
import { clientAs, codeOf, withCluster } from "./cluster_helpers.ts";

const enc = new TextEncoder();

function creds(cluster: LocalCluster, name: string): Credentials {
  return Credentials.loadSync(`${cluster.keysDir}/${name}.key`, cluster.keyringPath!);
}

const job = (text: string) => ({
  program: enc.encode(`#!/bin/sh\necho ${text}\n`),
  programName: "echo.sh",
  argument: "",
  chunks: 1,
  inputs: [],
  timeLimitMs: 30_000,
});

Deno.test("security: unknown keys are refused at the handshake by every role", async () => {
  await withCluster({ workers: 1, users: ["alice"] }, async (cluster) => {
    const stranger: KeyFile = newKeyFile("stranger", "client");
    // Its own keyring (it trusts the real servers' keys) but the cluster does not know it.
    const ring = new Keyring([
      ...Keyring.parse(await Deno.readTextFile(cluster.keyringPath!)).all(),
      { role: "client", name: "stranger", publicKey: stranger.publicKey, admin: false },
    ]);
    const strangerCreds = new Credentials(stranger, ring);
    const servers: [string, string, "master" | "balancer" | "storage"][] = [
      ["master", cluster.info.masters[0], "master"],
      ["balancer", cluster.info.balancer, "balancer"],
      ["storage", cluster.info.storage, "storage"],
    ];
    for (const [name, ep, role] of servers) {
      const c = new RpcClient(ep, { node: randomUuid(), auth: strangerCreds, serverRole: role });
      const code = await codeOf(
        c.request({ type: MessageType.NodeListRequest, node: c.node }, 1500),
      );
      await c.close();
      assert.equal(code, ErrorCode.Unavailable, `${name} answered an unknown key`);
      await waitFor(`${name} to log the refused handshake`, async () => {
        const log = await Deno.readTextFile(`${cluster.dataDir}/logs/${name}.log`);
        return log.includes(stranger.publicKey) && log.includes("handshake refused");
      });
    }
    // The cluster keeps serving its own keys.
    const alice = clientAs(cluster, "alice");
    const s = await waitForJob(alice, await alice.submit(job("still-up")));
    assert.equal(s.state, ChunkState.Succeeded);
    await alice.close();
  });
});

Deno.test("security: each role may send only its own message types (FORBIDDEN otherwise)", async () => {
  await withCluster({ workers: 1, users: ["alice"] }, async (cluster) => {
    const master = cluster.info.masters[0];
    const as = (name: string, ep: string, role: "master" | "balancer" | "storage") =>
      new RpcClient(ep, { node: randomUuid(), auth: creds(cluster, name), serverRole: role });
    // A worker key may not submit jobs; a client key may not speak Raft or dispatch work.
    const worker = as("worker1", master, "master");
    const alice = as("alice", master, "master");
    const aliceB = as("alice", cluster.info.balancer, "balancer");
    const cases: [string, RpcClient, Parameters<RpcClient["request"]>[0]][] = [
      ["worker job_submit", worker, {
        type: MessageType.JobSubmit,
        node: worker.node,
        client: worker.node,
        sequence: 1,
        numChunks: 1,
        timeLimitMs: 0,
        programId: randomUuid(),
        programSize: 10,
        argument: new Uint8Array(0),
        inputFiles: [],
        programName: "x",
      }],
      ["client raft_message", alice, {
        type: MessageType.RaftMessage,
        node: alice.node,
        data: new Uint8Array(64),
      }],
      ["client cluster_change", alice, {
        type: MessageType.ClusterChange,
        node: alice.node,
        op: ClusterOp.RemoveMaster,
        member: "m1@tcp://127.0.0.1:1",
      }],
      ["client worker_register", aliceB, {
        type: MessageType.WorkerRegister,
        node: alice.node,
        slots: 64,
        freeSlots: 64,
        files: [],
        label: "evil",
      }],
      ["client job_dispatch", aliceB, {
        type: MessageType.JobDispatch,
        node: alice.node,
        job: randomUuid(),
        numChunks: 1,
        timeLimitMs: 0,
        programId: randomUuid(),
        programSize: 10,
        argument: new Uint8Array(0),
        inputFiles: [],
        chunks: [{ chunkIndex: 0, attempt: 1 }],
      }],
      ["client storage_stats", as("alice", cluster.info.storage, "storage"), {
        type: MessageType.StorageStatsRequest,
        node: alice.node,
      }],
    ];
    for (const [what, c, msg] of cases) {
      assert.equal(await codeOf(c.request(msg, 5000)), ErrorCode.Forbidden, what);
    }
    for (const [, c] of cases) await c.close();
    await worker.close();
    // The admin may read storage stats and change the cluster (here: a bad member is refused
    // as a BAD_REQUEST/NOT_FOUND, past authorization).
    const admin = as("admin", master, "master");
    const code = await codeOf(admin.request({
      type: MessageType.ClusterChange,
      node: admin.node,
      op: ClusterOp.RemoveMaster,
      member: "m9@tcp://127.0.0.1:1",
    }, 5000));
    assert.notEqual(code, ErrorCode.Forbidden);
    await admin.close();
  });
});

Deno.test("security: jobs belong to their submitter; others get FORBIDDEN, admins see all", async () => {
  await withCluster({ workers: 1, users: ["alice", "bob"] }, async (cluster) => {
    const alice = clientAs(cluster, "alice");
    const bob = clientAs(cluster, "bob");
    const admin = new DsysClient(cluster.info);
    try {
      const a = await alice.submit(job("alice"));
      const s = await waitForJob(alice, a);
      assert.equal(s.state, ChunkState.Succeeded);
      assert.equal(await codeOf(bob.status(a)), ErrorCode.Forbidden);
      const bobJobs = await bob.masters.request({
        type: MessageType.JobListRequest,
        node: bob.node,
      });
      assert.ok(bobJobs.type === MessageType.JobListResponse && bobJobs.jobs.length === 0);
      const all = await admin.masters.request({
        type: MessageType.JobListRequest,
        node: admin.node,
      });
      assert.ok(all.type === MessageType.JobListResponse && all.jobs.length === 1);
      assert.equal((await admin.status(a)).state, ChunkState.Succeeded);
      // Alice's output is hers: bob cannot read it from storage, alice can.
      const out = s.chunks[0].outputs.find((o) => o.name === "stdout")!;
      assert.equal(new TextDecoder().decode(await alice.storage.getBytes(out.id)), "alice\n");
      await assert.rejects(bob.storage.getBytes(out.id));
      // Bob cannot use alice's file as an input by naming its id.
      const [put] = await alice.put([await tmpFile("alice's data\n")]);
      await assert.rejects(
        bob.submit({ ...job("steal"), inputs: [{ id: put.id, name: "in" }] }),
        (e: unknown) => e instanceof RpcError && e.code === ErrorCode.NotFound,
      );
      // Nor alice's program: a program is a stored file like an input, and only its owners
      // may run it. Bob gets NOT_FOUND for her program's id ...
      const prog = await alice.storage.putBytes(enc.encode("#!/bin/sh\necho alice-only\n"));
      await assert.rejects(
        bob.submit({ ...job("steal"), program: prog }),
        (e: unknown) =>
          e instanceof RpcError && e.code === ErrorCode.NotFound && /program/.test(e.text),
      );
      // ... until he stores the same bytes himself (possession is proof), then it runs for him.
      const mine = await bob.submit({
        ...job("x"),
        program: enc.encode("#!/bin/sh\necho alice-only\n"),
      });
      assert.equal((await waitForJob(bob, mine)).state, ChunkState.Succeeded);
    } finally {
      await alice.close();
      await bob.close();
      await admin.close();
    }
  });
});

async function tmpFile(text: string): Promise<string> {
  const p = await Deno.makeTempFile({ prefix: "dsys-sec-" });
  await Deno.writeTextFile(p, text);
  return p;
}

Deno.test("security: a revoked key is refused on its live connection; an added key gets in", async () => {
  await withCluster({ workers: 1, users: ["carol"] }, async (cluster) => {
    const ring = cluster.keyringPath!;
    const carol = clientAs(cluster, "carol");
    assert.equal((await waitForJob(carol, await carol.submit(job("ok")))).state, 2);
    await revokeKey(ring, "carol");
    // Same session, same connection: refused once the master re-read the keyring.
    await waitFor("the master to refuse carol", async () => {
      const code = await codeOf(carol.masters.request({
        type: MessageType.JobListRequest,
        node: carol.node,
      }, 2000));
      return code === ErrorCode.Forbidden;
    });
    await carol.close();
    const keyPath = await addKey(ring, "client", "dave");
    assert.ok((await Deno.stat(keyPath)).mode! % 0o1000 === 0o600);
    const dave = clientAs(cluster, "dave");
    try {
      await waitFor("dave to be let in", async () => {
        const code = await codeOf(dave.masters.request(
          { type: MessageType.JobListRequest, node: dave.node },
          2000,
        ));
        return code === null;
      });
    } finally {
      await dave.close();
    }
  });
});

Deno.test("security: a node refuses to listen off loopback without keys unless --insecure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-insecure-" });
  try {
    const run = (extra: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../mod.ts", import.meta.url).href,
          "run",
          "--role",
          "storage",
          "--listen",
          "tcp://0.0.0.0:0",
          "--data",
          `${dir}/s`,
          ...extra,
        ],
        stdout: "piped",
        stderr: "piped",
      });
    const refused = await run([]).output();
    assert.notEqual(refused.code, 0);
    assert.match(
      new TextDecoder().decode(refused.stderr),
      /refusing to listen on tcp:\/\/0\.0\.0\.0/,
    );
    // With --insecure it starts (and says so loudly); stop it once it listens.
    const child = run(["--insecure"]).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    const deadline = setTimeout(() => child.kill("SIGKILL"), 30_000);
    while (!out.includes('"listening"')) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    child.kill("SIGTERM");
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const err = await new Response(child.stderr).text();
    await child.status;
    clearTimeout(deadline);
    assert.match(out, /"listening"/);
    assert.match(err, /INSECURE/);
    // dsys init writes owner-only key files and a keyring every node can parse.
    const ids = await initCluster(`${dir}/keys`, { masters: 3, workers: 2 });
    assert.equal(ids.length, 3 + 2 + 1 + 2 + 1);
    const parsed = Keyring.parse(await Deno.readTextFile(`${dir}/keys/keyring`));
    assert.equal(parsed.ofRole("master").length, 3);
    assert.equal(parsed.byName("admin")?.admin, true);
    assert.equal((await Deno.stat(`${dir}/keys/m1.key`)).mode! & 0o077, 0);
    const m1 = Credentials.loadSync(`${dir}/keys/m1.key`, `${dir}/keys/keyring`);
    assert.equal(m1.clusterSecret?.length, 32);
    const w1 = Credentials.loadSync(`${dir}/keys/w1.key`, `${dir}/keys/keyring`);
    assert.equal(w1.clusterSecret, undefined, "workers never hold the cluster secret");
    m1.close();
    w1.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("security: a client refused at the handshake gets in once its key is added (socket rebuilt)", async () => {
  await withCluster({ workers: 0 }, async (cluster) => {
    const ring = cluster.keyringPath!;
    const late = newKeyFile("late", "client");
    const me = { role: "client" as const, name: "late", publicKey: late.publicKey, admin: false };
    const mine = new Credentials(late, Keyring.parse(await Deno.readTextFile(ring)).with(me));
    const c = new RpcClient(cluster.info.masters[0], { node: randomUuid(), auth: mine });
    try {
      const list = () => c.request({ type: MessageType.JobListRequest, node: c.node }, 1000);
      assert.equal(
        await codeOf(list()),
        ErrorCode.Unavailable,
        "refused before it is on the keyring",
      );
      await writeKeyring(ring, Keyring.parse(await Deno.readTextFile(ring)).with(me));
      await waitFor("the same client to be answered", async () => (await codeOf(list())) === null);
      assert.ok(
        c.rebuilds >= 1,
        "libzmq does not retry a refused handshake: the socket was rebuilt",
      );
    } finally {
      await c.close();
    }
  });
});
