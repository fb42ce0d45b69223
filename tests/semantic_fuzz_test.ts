/**
 * Semantic fuzzer: structurally valid but adversarial messages of every type, sent with VALID
 * keys of every role (an authenticated peer gone bad) to a running secure cluster — random
 * member ids and endpoints, short read contexts, huge indices, terms from the future, results
 * for chunks never placed, ids of real jobs and files. At least 20,000 messages per target role
 * (masters, balancer, storage). Afterwards every node still runs, answers, and the group still
 * commits a job end to end. Seeded: a failure prints the seed (`DSYS_FUZZ_SEED` replays it).
 */
import assert from "node:assert/strict";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { Credentials } from "../lib/security.ts";
import {
  ChunkState,
  ErrorCode,
  type Message,
  MESSAGE_SPECS,
  MessageType,
  randomUuid,
  type Uuid,
} from "../wire/mod.ts";
import { terminate } from "../wire/zmq/mod.ts";
import { randomMessage, Rng } from "./wire_gen.ts";
import { waitForJob } from "./wait.ts";
import { encodeMessage } from "../roles/master/raft/codec.ts";
import { makeMessage, MAX_INDEX, MAX_TERM, MESSAGE_TYPES } from "../roles/master/raft/types.ts";

const SEED = Number(Deno.env.get("DSYS_FUZZ_SEED") ?? (Math.random() * 2 ** 32) >>> 0);
const PER_ROLE = Number(Deno.env.get("DSYS_FUZZ_PER_ROLE") ?? 20_000);
const WINDOW = 256;
const enc = new TextEncoder();

/** Known ids the fuzzer mixes in, so messages reach past "not found" into real state. */
interface Known {
  jobs: Uuid[];
  files: Uuid[];
  members: string[];
  /** Stored programs (by id and size). */
  programs: { id: Uuid; size: number }[];
}

const BAD_MEMBERS = [
  "m1@tcp://127.0.0.1:notaport",
  "evil@tcp://[::1:7100",
  "m9@tcp://10.255.255.1:7100",
  "@tcp://127.0.0.1:1",
  "m1",
  "",
  "m1@tcp://127.0.0.1:1" + "x".repeat(300),
];

/** A hostile Raft payload: real-looking or bad member ids, future terms, short contexts. */
function hostileRaft(r: Rng, k: Known, to: string): Uint8Array {
  const from = r.chance(0.5) ? r.pick(k.members) : r.pick(BAD_MEMBERS);
  const big = () => r.pick([0, 1, 2 ** 31, MAX_INDEX, MAX_INDEX - 1, r.int(1000)]);
  const m = makeMessage({
    type: r.pick(MESSAGE_TYPES),
    from,
    to: r.chance(0.8) ? to : r.pick(BAD_MEMBERS),
    // Terms from the future, and past MAX_TERM (refused). Not MAX_TERM itself: a member key that
    // drives the group's term to the top of the term space stalls elections for good, which no
    // Raft can prevent (a member is trusted; see docs/architecture.md, "What is still trusted").
    term: r.pick([0, 1, r.int(50), r.int(1_000_000), MAX_TERM + 1, 2 ** 53]),
    logTerm: r.pick([0, 1, r.int(50), MAX_TERM + 1]),
    index: big(),
    commit: big(),
    reject: r.chance(0.3),
    rejectHint: big(),
    seq: r.int(100),
    ctx: r.bytes(r.pick([0, 3, 7, 8, 9])),
    entries: r.chance(0.3)
      ? [{ term: r.int(5), index: big(), type: "normal", data: r.bytes(r.int(40)) }]
      : [],
  });
  try {
    return encodeMessage(m);
  } catch {
    return r.bytes(r.int(80)); // the encoder refused it: send garbage of the same size class
  }
}

/** Message types each target serves. */
const SERVES = {
  master: [
    MessageType.JobSubmit,
    MessageType.WorkerStatus,
    MessageType.JobStatusRequest,
    MessageType.JobListRequest,
    MessageType.JobRemove,
    MessageType.NodeListRequest,
    MessageType.ClusterChange,
    MessageType.BalancerLease,
  ],
  balancer: [
    MessageType.WorkerRegister,
    MessageType.WorkerHeartbeat,
    MessageType.ChunkFinished,
    MessageType.JobDispatch,
    MessageType.NodeListRequest,
    MessageType.BalancerSync,
  ],
  storage: [
    MessageType.FileRequest,
    MessageType.FilePut,
    MessageType.FileStat,
    MessageType.StorageStatsRequest,
  ],
} as const;

/** A random message (of a type the target serves, mostly), with known ids mixed in. */
function adversarial(r: Rng, role: string, k: Known, serves: readonly number[]): Message {
  const mine = MESSAGE_SPECS.filter((s) =>
    s.senders.includes(role as "client") && s.type !== MessageType.Error &&
    s.type !== MessageType.Ok
  ).map((s) => s.type);
  // Mostly what the target serves (any type, so FORBIDDEN is exercised too); now and then a
  // type of another role (WRONG_ROLE).
  const served = MESSAGE_SPECS.map((s) => s.type).filter((t) => serves.includes(t));
  const types = r.chance(0.9) && served.length ? served : mine;
  const m = randomMessage(r, r.pick(types)) as unknown as Record<string, unknown>;
  if ("job" in m && r.chance(0.6) && k.jobs.length) m.job = r.pick(k.jobs);
  if ("file" in m && r.chance(0.6) && k.files.length) m.file = r.pick(k.files);
  if ("chunkIndex" in m) m.chunkIndex = r.pick([0, 1, 3, 2 ** 31, 0xffff_ffff]);
  if ("attempt" in m) m.attempt = r.pick([0, 1, 2, 0xffff_ffff]);
  if ("member" in m) m.member = r.pick([...BAD_MEMBERS, ...k.members]);
  if ("inputFiles" in m && r.chance(0.5) && k.files.length) {
    m.inputFiles = [{ id: r.pick(k.files), size: r.int(10), name: "in" }];
  }
  if (m.type === MessageType.JobSubmit) {
    // Valid submissions do run: keep them tiny so they cannot starve the final check.
    m.numChunks = 1 + r.int(2);
    m.timeLimitMs = 2000;
    // Half of them name a stored program (the admin's: others' keys get NOT_FOUND), the rest
    // any known file or none.
    const p = r.chance(0.5) && k.programs.length
      ? r.pick(k.programs)
      : { id: r.pick([...k.files, r.bytes(16)]), size: r.int(30) };
    m.programId = p.id;
    m.programSize = p.size;
  }
  if (m.type === MessageType.WorkerRegister || m.type === MessageType.WorkerHeartbeat) {
    m.slots = r.int(3);
    m.freeSlots = r.int(3);
  }
  return m as unknown as Message;
}

/** Sends `n` messages through `clients` with `WINDOW` in flight; returns replies by outcome. */
async function blast(
  n: number,
  next: () => { c: RpcClient; m: Message },
  outcomes: Map<string, number>,
): Promise<void> {
  let sent = 0;
  const one = async (): Promise<void> => {
    while (sent < n) {
      sent++;
      const { c, m } = next();
      let key: string;
      if (m.type === MessageType.RaftMessage) {
        await c.send(m).catch(() => {});
        key = "one-way";
      } else {
        try {
          await c.request(m, 20_000);
          key = "ok";
        } catch (e) {
          key = e instanceof RpcError ? `code ${e.code}` : `throw ${e}`;
        }
      }
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, one));
}

Deno.test(`semantic fuzz: ${PER_ROLE} adversarial messages per role from valid keys (seed ${SEED})`, async () => {
  const cluster = await LocalCluster.start({
    masters: 3,
    workers: 1,
    users: ["mallory"],
    extraArgs: { balancer: ["--dead-after-ms", "2000"] },
  });
  const r = new Rng(SEED);
  const clients: RpcClient[] = [];
  try {
    const admin = new DsysClient(cluster.info, { deadlineMs: 60_000 });
    // Real state to aim at: a finished job, a stored file, the members.
    const [put] = await admin.put([new URL("../README.md", import.meta.url).pathname]);
    const seedJob = await admin.submit({
      program: enc.encode("#!/bin/sh\necho seed\n"),
      programName: "seed.sh",
      argument: "",
      chunks: 2,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const seeded = await waitForJob(admin, seedJob);
    assert.equal(seeded.state, ChunkState.Succeeded);
    const program = await admin.storage.putBytes(enc.encode("#!/bin/sh\nexit 0\n"));
    const known: Known = {
      jobs: [seedJob, randomUuid()],
      files: [put.id, randomUuid()],
      members: cluster.info.masters,
      programs: [program],
    };
    await cluster.admitKey("intruder", "worker");
    const keys = cluster.keysDir!;
    const as = (name: string, ep: string, role: "master" | "balancer" | "storage") => {
      const c = new RpcClient(ep, {
        node: randomUuid(),
        auth: Credentials.loadSync(`${keys}/${name}.key`, cluster.keyringPath!),
        serverRole: role,
        timeoutMs: 20_000,
      });
      clients.push(c);
      return c;
    };
    const bal = cluster.info.balancer.split(",")[0];
    const outcomes = new Map<string, number>();
    // Masters: client, worker and member keys; member keys carry hostile Raft payloads.
    const masterSenders = cluster.info.masters.flatMap((ep) => [
      { role: "client", c: as("mallory", ep, "master") },
      { role: "worker", c: as("intruder", ep, "master") },
      { role: "master", c: as(ep.split("@")[0] === "m1" ? "m2" : "m1", ep, "master") },
    ]);
    await blast(PER_ROLE, () => {
      const s = r.pick(masterSenders);
      if (s.role === "master") {
        const to = s.c.endpoint;
        return {
          c: s.c,
          m: { type: MessageType.RaftMessage, node: s.c.node, data: hostileRaft(r, known, to) },
        };
      }
      return { c: s.c, m: adversarial(r, s.role, known, SERVES.master) };
    }, outcomes);
    const balancerSenders = [
      { role: "worker", c: as("intruder", bal, "balancer") },
      { role: "client", c: as("mallory", bal, "balancer") },
      { role: "master", c: as("m1", bal, "balancer") },
    ];
    await blast(PER_ROLE, () => {
      const s = r.pick(balancerSenders);
      return { c: s.c, m: adversarial(r, s.role, known, SERVES.balancer) };
    }, outcomes);
    const storageSenders = [
      { role: "client", c: as("mallory", cluster.info.storage, "storage") },
      { role: "worker", c: as("intruder", cluster.info.storage, "storage") },
      { role: "master", c: as("m1", cluster.info.storage, "storage") },
    ];
    await blast(PER_ROLE, () => {
      const s = r.pick(storageSenders);
      return { c: s.c, m: adversarial(r, s.role, known, SERVES.storage) };
    }, outcomes);
    console.log(`seed ${SEED}: outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`);
    // Every request got an answer (no timeouts, no thrown transport errors).
    for (const [k, v] of outcomes) {
      assert.ok(!k.startsWith("throw"), `seed ${SEED}: ${v} requests threw ${k}`);
      assert.ok(
        k !== `code ${ErrorCode.Unavailable}` || v < PER_ROLE / 100,
        `seed ${SEED}: ${v} requests unanswered or unavailable`,
      );
    }
    // Nobody crashed; the group still commits and runs a job end to end.
    for (const [name, p] of cluster.procs) {
      const alive = await Promise.race([p.exited.then(() => false), Promise.resolve(true)]);
      assert.ok(alive, `seed ${SEED}: ${name} exited`);
    }
    const after = await admin.submit({
      program: enc.encode('#!/bin/sh\necho "after $DSYS_CHUNK_INDEX"\n'),
      programName: "after.sh",
      argument: "",
      chunks: 3,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const s = await waitForJob(admin, after);
    assert.equal(s.state, ChunkState.Succeeded, `seed ${SEED}`);
    const nodes = await admin.nodes();
    assert.ok(nodes.filter((n) => n.role === 1).length === 3);
    await admin.close();
  } catch (e) {
    console.error(`semantic fuzz failed with seed ${SEED} (DSYS_FUZZ_SEED=${SEED} replays it)`);
    await cluster.printLogs(30);
    throw e;
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
    await terminate();
  }
});
