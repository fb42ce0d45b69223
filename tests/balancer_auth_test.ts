/**
 * Trust boundaries between workers, the balancer and the masters, with real processes and real
 * keys: a process holding a valid worker key ("evil", added to the keyring while the cluster
 * runs) cannot take another worker's node id, report a chunk placed on another worker, or get
 * a chunk result accepted without the placement ticket of its own key; a master key cannot pull
 * the balancer's state; and jobs still run to completion with the right outputs.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { addKey } from "../client/keys.ts";
import { placementTicket } from "../lib/capability.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { Credentials, Keyring } from "../lib/security.ts";
import {
  ChunkState,
  ErrorCode,
  FailureCode,
  type Message,
  MessageType,
  NIL_UUID,
  randomUuid,
  type Uuid,
  uuidToHex,
  type WorkerStatus,
} from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Chunks announce themselves (attempt in `$1/started-N`), wait for `$1/release`, then print
 * the sha256 of their input. */
const GATED = enc.encode(`#!/bin/sh
set -eu
echo "$DSYS_ATTEMPT" > "$1/.started-$DSYS_CHUNK_INDEX"
mv "$1/.started-$DSYS_CHUNK_INDEX" "$1/started-$DSYS_CHUNK_INDEX"
while [ ! -e "$1/release" ]; do sleep 0.05; done
sha256sum < "$DSYS_INPUT_DIR/data.txt" | cut -d' ' -f1
`);

/** The error code `send` is refused with (it must be refused, by an answer, not a timeout). */
async function refusal(what: string, send: () => Promise<Message>): Promise<number> {
  try {
    const r = await send();
    throw new Error(`${what}: accepted (reply type ${r.type}), expected a refusal`);
  } catch (e) {
    if (!(e instanceof RpcError) || e.code === ErrorCode.Unavailable) throw e;
    return e.code;
  }
}

/**
 * A client whose `probe` got an answer (any reply or error reply, not a timeout). A node
 * refuses the handshake of a key it does not know yet (it re-reads the keyring every second),
 * and a DEALER whose handshake was refused does not try again: so each try is a new client.
 */
async function connectOnceKnown(
  what: string,
  make: () => RpcClient,
  probe: (c: RpcClient) => Promise<Message>,
): Promise<RpcClient> {
  return await waitFor(what, async (): Promise<RpcClient | null> => {
    const c = make();
    try {
      await probe(c);
      return c;
    } catch (e) {
      if (e instanceof RpcError && e.code !== ErrorCode.Unavailable) return c;
      await c.close();
      if (e instanceof RpcError) return null;
      throw e;
    }
  }) as RpcClient;
}

function sha256Hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

Deno.test("balancer auth: worker keys are bound to node ids and placements; tickets decide", async () => {
  // The gated program reports its start and waits through files in a host directory, which a
  // sandboxed chunk cannot see (tests/sandbox_attack_test.ts checks that it cannot): this test is
  // about the balancer's trust rules, so its workers run chunks unsandboxed.
  const cluster = await LocalCluster.start({
    workers: 2,
    slotsPerWorker: 2,
    extraArgs: { worker: ["--no-sandbox"] },
  });
  const client = new DsysClient(cluster.info);
  const closers: (() => Promise<void> | void)[] = [];
  const dir = await Deno.makeTempDir();
  try {
    const keysDir = cluster.keysDir!;
    const ringPath = cluster.keyringPath!;
    const data = enc.encode(Array.from({ length: 500 }, (_, i) => `row ${i}`).join("\n"));
    await Deno.writeFile(`${dir}/data.txt`, data);
    const [put] = await client.put([`${dir}/data.txt`]);
    const digest = sha256Hex(data);

    // ---- A valid worker key of our own: "evil", on the keyring, with its own node id.
    const evilKey = await addKey(ringPath, "worker", "evil");
    const evil = Credentials.loadSync(evilKey, ringPath);
    closers.push(() => evil.close());
    const evilId = randomUuid();
    const connect = (ep: string, routingId: Uuid, role: "balancer" | "master") =>
      new RpcClient(ep, { node: evilId, routingId, auth: evil, serverRole: role, timeoutMs: 5000 });
    const register = (node: Uuid): Message => ({
      type: MessageType.WorkerRegister,
      node,
      slots: 0, // never given work: it answers no pushes
      freeSlots: 0,
      files: [],
      label: "evil",
    });
    // Its own node id is fine, once the balancer has re-read the keyring.
    const toBalancer = await connectOnceKnown(
      "the balancer to let the new worker key in",
      () => connect(cluster.info.balancer, evilId, "balancer"),
      (c) => c.request(register(evilId), 500),
    );
    closers.push(() => toBalancer.close());
    assert.equal((await toBalancer.request(register(evilId))).type, MessageType.Ok);

    // ---- A job whose chunks stay placed (running) until released.
    const job = await client.submit({
      program: GATED,
      programName: "gated.sh",
      argument: dir,
      chunks: 2,
      inputs: [{ id: put.id, name: "data.txt" }],
      timeLimitMs: 60_000,
    });
    const attempt = Number(
      await waitFor("chunk 0 to start", async () => {
        try {
          return (await Deno.readTextFile(`${dir}/started-0`)).trim();
        } catch {
          return "";
        }
      }),
    );

    // (b) chunk_finished for a chunk placed on another worker, under evil's own node id.
    const finished = (node: Uuid): Message => ({
      type: MessageType.ChunkFinished,
      node,
      job,
      chunkIndex: 0,
      attempt,
      state: ChunkState.Succeeded,
    });
    assert.equal(
      await refusal(
        "chunk_finished for another worker's chunk",
        () => toBalancer.request(finished(evilId)),
      ),
      ErrorCode.Forbidden,
    );

    // (c) A forged result for that chunk at the master: no ticket, a made-up one, and the
    // tickets the balancer gave the workers (what a routing-id hijacker would have received).
    const secret = await Deno.readFile(`${keysDir}/cluster.secret`);
    const ring = Keyring.parse(await Deno.readTextFile(ringPath));
    const status = (ticket?: Uint8Array): WorkerStatus => ({
      type: MessageType.WorkerStatus,
      node: evilId,
      job,
      state: ChunkState.Succeeded,
      chunkIndex: 0,
      attempt,
      exitCode: 0,
      signal: 0,
      failure: FailureCode.None,
      durationMs: 1,
      outputs: [{ id: put.id, size: data.length, name: "stdout" }],
      stderrTail: new Uint8Array(0),
      reason: "",
      ...(ticket ? { ticket } : {}),
    });
    // (A status for a job the master does not know is answered NOT_FOUND: the key got in.)
    const toMaster = await connectOnceKnown(
      "the master to let the new worker key in",
      () => connect(cluster.info.masters[0], evilId, "master"),
      (c) => c.request({ ...status(), job: randomUuid() }, 500),
    );
    closers.push(() => toMaster.close());
    const victimTickets = ["worker1", "worker2"].map((name) =>
      placementTicket(secret, ring.byName(name)!.publicKey, job, 0, attempt)
    );
    for (
      const [what, ticket] of [
        ["no ticket", undefined],
        ["a forged ticket", crypto.getRandomValues(new Uint8Array(32))],
        ["worker1's ticket", victimTickets[0]],
        ["worker2's ticket", victimTickets[1]],
      ] as const
    ) {
      assert.equal(
        await refusal(`worker_status with ${what}`, () => toMaster.request(status(ticket))),
        ErrorCode.Forbidden,
        what,
      );
    }

    // The real workers' tickets still work: released, the job completes with real outputs.
    await Deno.writeTextFile(`${dir}/release`, "");
    const s = await waitForJob(client, job);
    assert.equal(s.state, ChunkState.Succeeded, JSON.stringify(s.chunks.map((c) => c.reason)));
    for (const c of s.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout");
      assert.ok(out, `chunk ${c.chunkIndex} has a stdout output`);
      assert.notEqual(uuidToHex(out.id), uuidToHex(put.id), "not the forged output");
      assert.equal(dec.decode(await client.storage.getBytes(out.id)), digest + "\n");
    }

    // (a) Registering (or heartbeating) under worker1's node id, through worker1's routing id
    // (a hijack of its connection at the balancer's ROUTER).
    const victim = await Deno.readFile(`${cluster.dataDir}/worker1/node-id`);
    const hijack = connect(cluster.info.balancer, victim, "balancer");
    closers.push(() => hijack.close());
    assert.equal(
      await refusal("registration under worker1's node id", () => hijack.request(register(victim))),
      ErrorCode.Forbidden,
    );
    assert.equal(
      await refusal("heartbeat under worker1's node id", () =>
        hijack.request({
          type: MessageType.WorkerHeartbeat,
          node: victim,
          slots: 8,
          freeSlots: 8,
          added: [],
          evicted: [],
        })),
      ErrorCode.Forbidden,
    );
    await hijack.close();
    // Claiming worker1's node id through evil's own routing id is refused too.
    assert.equal(
      await refusal(
        "registration of worker1's node id via another routing id",
        () => toBalancer.request(register(victim)),
      ),
      ErrorCode.Forbidden,
    );
    // The balancer logged who tried to take whose node id.
    await waitFor("the balancer's warning naming both keys", async () => {
      const log = await Deno.readTextFile(`${cluster.dataDir}/logs/balancer.log`);
      return log.split("\n").some((l) =>
        l.includes('"boundTo":"worker1"') && l.includes('"from":"evil"')
      );
    });

    // (4) A master key may not pull balancer state (balancer_sync is for balancer keys only).
    const masterCreds = Credentials.loadSync(`${keysDir}/master.key`, ringPath);
    closers.push(() => masterCreds.close());
    const asMaster = new RpcClient(cluster.info.balancer, {
      node: randomUuid(),
      auth: masterCreds,
      serverRole: "balancer",
      timeoutMs: 2000,
    });
    closers.push(() => asMaster.close());
    assert.equal(
      await refusal("a master pulling balancer state", () =>
        asMaster.request({
          type: MessageType.BalancerSync,
          node: asMaster.node,
          stream: NIL_UUID,
          after: 0,
          waitMs: 0,
        })),
      ErrorCode.Forbidden,
    );

    // ---- After all that, a normal job still runs to completion with correct outputs.
    const job2 = await client.submit({
      program: enc.encode('#!/bin/sh\nwc -l < "$DSYS_INPUT_DIR/data.txt"\n'),
      programName: "wc.sh",
      argument: "",
      chunks: 6,
      inputs: [{ id: put.id, name: "data.txt" }],
      timeLimitMs: 60_000,
    });
    const s2 = await waitForJob(client, job2);
    assert.equal(s2.state, ChunkState.Succeeded, JSON.stringify(s2.chunks.map((c) => c.reason)));
    for (const c of s2.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await client.storage.getBytes(out.id)).trim(), "499");
    }
  } catch (e) {
    await cluster.printLogs(20);
    throw e;
  } finally {
    for (const c of closers.reverse()) await c();
    await client.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
