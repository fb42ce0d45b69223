/**
 * The balancer simulation: two real balancers (tests/sim/world/balancer_node.ts: the production
 * BalancerService, StandbyFollower and LeaseKeeper), simulated workers speaking the real worker
 * protocol with the real worker core (tests/sim/world/sim_worker.ts), a hostile worker key, and
 * three simulated masters that grant the lease through the real master `LeaseTimer`
 * (roles/master/lease.ts) and check placement tickets with the real `checkPlacementTicket`, all
 * on the deterministic SimClock and SimNet (tests/sim/world/) and under faults drawn from one
 * seed: balancer and worker crashes and restarts, balancer and worker pauses, partitions
 * (symmetric and one-way), master leader changes, storms of slow messages, and message loss,
 * duplication, delay and reordering.
 *
 * The masters are a stand-in (one replicated state, a leader that changes, the lease and
 * worker_status handled as roles/master/service.ts does, jobs dispatched to the lease holder
 * every second): what is under test is the balancer pair and the worker protocol.
 *
 * Invariants (a violation is recorded when it happens, and the run stops):
 * - `one-primary`: after every step, at most one balancer may place (not standby and inside its
 *   lease by its own clock);
 * - `epoch-owner`: every worker_request of one epoch is pushed by one balancer process (one
 *   incarnation of one node): an epoch is never shared, not even with a restart of its holder;
 * - `placed-twice`: under one epoch, an attempt of a chunk starts at most once (on any worker,
 *   at any time): one primary never hands out the same attempt twice, because every path that
 *   places a chunk again after it may have started (dead worker, unconfirmed push, idle worker,
 *   a re-dispatch of a finished chunk) takes the next attempt number. What is allowed, and
 *   counted: a new attempt while an older one may still run; the same attempt again under a
 *   later epoch (a takeover by a balancer that had not heard of the placement: the standby was
 *   not following, see docs/testing.md);
 * - `wrong-worker`: no worker_status (at the masters) and no chunk_finished (at a balancer) is
 *   accepted from a worker that does not hold that attempt (the hostile worker reports attempts
 *   running elsewhere, under the victim's node id, with a made-up ticket);
 * - `finished`: once faults stop (everything healed and restarted), every chunk of every job
 *   gets a result at the masters before the deadline.
 * @module
 */
import { mulberry32, SimClock } from "./world/clock.ts";
import { type NetFaults, SimNet } from "./world/net.ts";
import { SimWorker } from "./world/sim_worker.ts";
import { SimBalancerNode, type SimLogRecord } from "./world/balancer_node.ts";
import type { BalancerPlantedBug } from "../../roles/balancer/service.ts";
import { LeaseTimer } from "../../roles/master/lease.ts";
import type { BalancerLeaseRecord } from "../../roles/master/job_table.ts";
import { checkPlacementTicket } from "../../lib/capability.ts";
import { type Clock, sleep } from "../../lib/clock.ts";
import { RequestError } from "../../lib/rpc.ts";
import type { RequestChannel } from "../../lib/transport.ts";
import { Credentials, type Identity, type KeyFile, Keyring } from "../../lib/security.ts";
import { splitNamedEndpoint } from "../../lib/named_endpoint.ts";
import { z85Encode } from "../../wire/zmq/mod.ts";
import {
  ChunkState,
  ErrorCode,
  type Message,
  MessageType,
  type Uuid,
  uuidToHex,
  type WorkerRequest,
  type WorkerStatus,
} from "../../wire/mod.ts";

/** Options of one run. */
export interface BalancerSimOptions {
  seed: number;
  /** Honest workers (default 3), 2 slots each. */
  workers?: number;
  /** Jobs submitted (default 3, at random times in the first half of the faults). */
  jobs?: number;
  /** Faults happen until this virtual time, ms (default 6000). */
  faultsUntilMs?: number;
  /** Every chunk must be finished by this virtual time, ms (default 60000). */
  endMs?: number;
  /** Test-only bug planted in both balancers. */
  plantedBug?: BalancerPlantedBug;
  /** Keep the trace of faults and balancer log records (printed on a violation). */
  trace?: boolean;
}

/** What one run did. */
export interface BalancerSimResult {
  seed: number;
  violations: string[];
  /** Virtual time at the end, ms. */
  endMs: number;
  steps: number;
  chunks: number;
  runs: number;
  /** Re-runs of the same attempt under a later epoch (an unsynced takeover). */
  takeoverReruns: number;
  /** A new attempt started while an older one of the chunk ran. */
  newAttemptOverlaps: number;
  faults: Record<string, number>;
  /** Highest lease epoch granted. */
  epochs: number;
  /** Forged reports refused (by balancers and masters). */
  forgedRefused: number;
  trace: string[];
}

const LEASE_MS = 1000;
const DISPATCH_MS = 1000;

/** A seeded PRNG per purpose, so adding draws to one does not shift the others. */
function streams(seed: number) {
  let n = 0;
  return () => mulberry32((Math.imul(seed >>> 0, 0x9e3779b1) ^ (++n * 0x85ebca77)) >>> 0);
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function bytes(rand: () => number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
}

interface Job {
  id: Uuid;
  hex: string;
  numChunks: number;
  programId: Uuid;
  /** Result per chunk (null: none yet). */
  results: (WorkerStatus | null)[];
}

interface Run {
  worker: SimWorker;
  req: WorkerRequest;
  live: boolean;
}

/** Runs one seed; see the module doc. */
export async function runBalancerSim(o: BalancerSimOptions): Promise<BalancerSimResult> {
  const next = streams(o.seed);
  const faultRand = next(), netRand = next(), keyRand = next(), jobRand = next();
  const clock = new SimClock();
  const faults: Partial<NetFaults> = {
    drop: 0.01,
    duplicate: 0.01,
    minDelayMs: 1,
    maxDelayMs: 4,
    slow: 0.02,
    slowDelayMs: 1500,
  };
  const net = new SimNet(clock, netRand, faults);
  const faultsUntil = o.faultsUntilMs ?? 6000;
  const endMs = o.endMs ?? 60_000;
  const violations: string[] = [];
  const trace: string[] = [];
  const note = (s: string) => {
    if (o.trace) trace.push(`${clock.monotonic().toFixed(0).padStart(6)} ${s}`);
  };
  const violate = (s: string) => {
    violations.push(`${clock.monotonic().toFixed(0)} ms: ${s}`);
    note(`VIOLATION ${s}`);
  };
  const count: Record<string, number> = {};
  const fault = (kind: string, what: string) => {
    count[kind] = (count[kind] ?? 0) + 1;
    note(`fault ${kind} ${what}`);
  };
  const log = (r: SimLogRecord) => {
    if (o.trace && r.level !== "info") {
      note(`${r.node} ${r.level} ${r.msg} ${JSON.stringify(r.fields ?? {})}`);
    }
  };

  // ---- keys: a keyring of made-up Z85 keys, the cluster secret for masters and balancers
  const secret = bytes(keyRand, 32);
  const ids: Identity[] = [];
  const keyFiles = new Map<string, KeyFile>();
  const ident = (name: string, role: Identity["role"]): Identity => {
    const id: Identity = { name, role, publicKey: z85Encode(bytes(keyRand, 32)), admin: false };
    ids.push(id);
    keyFiles.set(name, {
      name,
      role,
      publicKey: id.publicKey,
      secretKey: z85Encode(bytes(keyRand, 32)),
      ...(role !== "worker" ? { clusterSecret: hex(secret) } : {}),
    });
    return id;
  };
  const masterNames = ["m1", "m2", "m3"];
  const masterEps = masterNames.map((n) => `${n}@tcp://${n}:7100`);
  const masterIds = masterNames.map((n) => ident(n, "master"));
  const balNames = ["b1", "b2"];
  const balIds = balNames.map((n) => ident(n, "balancer"));
  const nWorkers = o.workers ?? 3;
  const workerNames = Array.from({ length: nWorkers }, (_, i) => `w${i + 1}`);
  const workerIds = workerNames.map((n) => ident(n, "worker"));
  const rogueId = ident("rogue", "worker");
  const ring = new Keyring(ids);
  const credsOf = (name: string) => new Credentials(keyFiles.get(name)!, ring);

  // ---- masters (a stand-in; see module doc)
  const jobs: Job[] = [];
  const state = {
    leader: 0,
    term: 1,
    lease: null as BalancerLeaseRecord | null,
    maxEpoch: 0,
  };
  const timers = masterNames.map(() => new LeaseTimer(LEASE_MS));
  const seen = masterNames.map(() => new Map<string, number>());
  let forgedRefused = 0;
  /** Attempts each worker identity accepted: `name job/chunk/attempt`. */
  const held = new Set<string>();
  const attemptKey = (m: { job: Uuid; chunkIndex: number; attempt: number }) =>
    `${uuidToHex(m.job)}/${m.chunkIndex}/${m.attempt}`;

  const masterHosts = masterNames.map((n, i) => net.host(n, masterIds[i]));
  const masterClients = masterNames.map(() => new Map<string, RequestChannel>());
  const leaderEp = () => masterEps[state.leader];
  const requireLeader = (i: number) => {
    if (state.leader !== i) throw new RequestError(ErrorCode.NotLeader, leaderEp());
  };
  const dispatch = (i: number) => {
    const l = state.lease;
    if (state.leader !== i || !l) return;
    const host = masterHosts[i];
    let ch = masterClients[i].get(l.endpoint);
    if (!ch || ch.endpoint !== l.endpoint) {
      ch = host.dial(l.endpoint, { node: masterNodeId(i), timeoutMs: 5000 });
      masterClients[i].set(l.endpoint, ch);
    }
    for (const j of jobs) {
      const chunks = j.results.flatMap((r, c) => (r ? [] : [{ chunkIndex: c, attempt: 0 }]));
      if (chunks.length === 0) continue;
      ch.request({
        type: MessageType.JobDispatch,
        node: masterNodeId(i),
        job: j.id,
        numChunks: j.numChunks,
        timeLimitMs: 60_000,
        programId: j.programId,
        programSize: 100,
        argument: new Uint8Array(0),
        inputFiles: [],
        chunks,
        owner: "alice",
      }).catch(() => {});
    }
  };
  const masterNodeIds = masterNames.map(() => bytes(keyRand, 16));
  function masterNodeId(i: number): Uuid {
    return masterNodeIds[i];
  }
  const masterHandler =
    (i: number) =>
    async (msg: Message, _peer: Uint8Array, from: Identity | null): Promise<Message> => {
      const mclock: Clock = masterHosts[i].clock;
      const node = masterNodeId(i);
      if (msg.type === MessageType.BalancerLease) {
        requireLeader(i);
        const term = state.term;
        const receivedAt = mclock.monotonic();
        if (from && splitNamedEndpoint(msg.endpoint).name !== from.name) {
          throw new RequestError(ErrorCode.Forbidden, "endpoint not named for the sender's key");
        }
        const me = uuidToHex(msg.node);
        seen[i].set(me, receivedAt);
        const rivalAsked = [...seen[i]].some(([k, t]) => k !== me && receivedAt - t <= LEASE_MS);
        const timer = timers[i];
        const ask = { node: msg.node, epoch: msg.epoch, endpoint: msg.endpoint };
        const d = timer.decide(state.lease, ask, receivedAt, term, rivalAsked);
        let granted = false;
        if (d.kind === "renew") {
          await sleep(mclock, 1 + Math.floor(faultRand() * 4)); // the read barrier's round
          if (state.leader !== i || state.term !== term) {
            throw new RequestError(ErrorCode.NotLeader, leaderEp());
          }
          granted = timer.renewed(state.lease, msg.node, d.epoch, receivedAt, term);
        } else if (d.kind === "grant") {
          await sleep(mclock, 2 + Math.floor(faultRand() * 8)); // the commit
          if (state.leader !== i || state.term !== term) {
            timer.grantDone(false, mclock.monotonic());
            throw new RequestError(ErrorCode.NotLeader, leaderEp());
          }
          if (d.lease.epoch !== (state.lease?.epoch ?? 0) + 1) {
            timer.grantDone(false, mclock.monotonic());
          } else {
            state.lease = d.lease;
            state.maxEpoch = d.lease.epoch;
            granted = true;
            timer.grantDone(true, mclock.monotonic());
            note(
              `lease epoch ${d.lease.epoch} granted to ${d.lease.endpoint} by ${masterNames[i]}`,
            );
            dispatch(i);
          }
        }
        const l = state.lease;
        return {
          type: MessageType.BalancerLeaseReply,
          node,
          epoch: l?.epoch ?? 0,
          holder: l?.holder ?? new Uint8Array(16),
          durationMs: l?.durationMs ?? LEASE_MS,
          granted,
          endpoint: l?.endpoint ?? "",
        };
      }
      if (msg.type === MessageType.WorkerStatus) {
        requireLeader(i);
        const job = jobs.find((j) => j.hex === uuidToHex(msg.job));
        if (!job) throw new RequestError(ErrorCode.NotFound, "job not found");
        if (msg.chunkIndex >= job.numChunks) throw new RequestError(ErrorCode.BadRequest, "range");
        if (
          from &&
          !checkPlacementTicket(
            secret,
            from.publicKey,
            msg.job,
            msg.chunkIndex,
            msg.attempt,
            msg.ticket,
          )
        ) {
          if (from.name === "rogue") forgedRefused++;
          throw new RequestError(ErrorCode.Forbidden, "not placed on this worker");
        }
        if (msg.state !== ChunkState.Succeeded && msg.state !== ChunkState.Failed) {
          return { type: MessageType.Ok, node, value: 0 };
        }
        await sleep(mclock, 1 + Math.floor(faultRand() * 4)); // the commit
        if (state.leader !== i) throw new RequestError(ErrorCode.NotLeader, leaderEp());
        const accepted = job.results[msg.chunkIndex] === null;
        if (accepted) {
          job.results[msg.chunkIndex] = msg;
          if (!held.has(`${from?.name} ${attemptKey(msg)}`)) {
            violate(
              `wrong-worker: worker_status of ${attemptKey(msg)} accepted from ${from?.name}, ` +
                `which does not hold it`,
            );
          }
        }
        return { type: MessageType.Ok, node, value: accepted ? 1 : 0 };
      }
      throw new RequestError(ErrorCode.WrongRole, `master stand-in does not serve ${msg.type}`);
    };
  masterHosts.forEach((h, i) => {
    h.listen(masterEps[i], masterHandler(i), masterNodeId(i).slice());
    h.clock.setInterval(() => dispatch(i), DISPATCH_MS);
  });

  // ---- checker state
  const runs = new Map<string, Run[]>(); // by job/chunk
  let nRuns = 0, takeoverReruns = 0, newAttemptOverlaps = 0;
  /** epoch -> the balancer process that pushes it. */
  const epochOwner = new Map<number, string>();
  const observer = {
    accepted(w: SimWorker, req: WorkerRequest) {
      held.add(`${w.name} ${attemptKey(req)}`);
    },
    program(w: SimWorker, req: WorkerRequest, what: "start" | "end") {
      const ck = `${uuidToHex(req.job)}/${req.chunkIndex}`;
      let list = runs.get(ck);
      if (!list) runs.set(ck, list = []);
      if (what === "end") {
        const r = list.find((r) => r.live && r.worker === w && r.req.attempt === req.attempt);
        if (r) r.live = false;
        return;
      }
      nRuns++;
      for (const r of list) {
        if (r.req.attempt === req.attempt && (r.req.epoch ?? 0) === (req.epoch ?? 0)) {
          violate(
            `placed-twice: ${attemptKey(req)} started on ${r.worker.name} and again on ` +
              `${w.name}, both pushed under epoch ${req.epoch}`,
          );
        } else if (!r.live) continue;
        else if (r.req.attempt !== req.attempt) newAttemptOverlaps++;
        else takeoverReruns++;
      }
      list.push({ worker: w, req, live: true });
    },
  };

  // ---- balancers
  const balancers = balNames.map((n, i) =>
    new SimBalancerNode({
      host: net.host(n, balIds[i]),
      name: n,
      node: bytes(keyRand, 16),
      endpoint: `${n}@tcp://${n}:7200`,
      masters: masterEps,
      auth: credsOf(n),
      rand: next(),
      deadAfterMs: 2000,
      pushTimeoutMs: 1000,
      syncMs: 100,
      ...(o.plantedBug ? { plantedBug: o.plantedBug } : {}),
      log,
      onPush: (b: SimBalancerNode, incarnation: number, m: Message) => {
        if (m.type !== MessageType.WorkerRequest) return;
        const who = `${b.name}#${incarnation}`;
        const e = m.epoch ?? 0;
        const owner = epochOwner.get(e);
        if (owner === undefined) epochOwner.set(e, who);
        else if (owner !== who) {
          violate(`epoch-owner: epoch ${e} pushed by ${owner} and by ${who}`);
        }
      },
    })
  );
  for (const b of balancers) b.start();
  const balEps = balancers.map((b) => b.endpoint);

  // ---- workers
  const workerNodes = workerNames.map(() => bytes(keyRand, 16));
  const workerRands = workerNames.map(() => next());
  const runRand = next();
  const workers: (SimWorker | null)[] = workerNames.map(() => null);
  const startWorker = (i: number) => {
    const host = net.host(workerNames[i], workerIds[i]);
    host.restart();
    const w = new SimWorker({
      host,
      node: workerNodes[i],
      balancers: i % 2 === 0 ? balEps : [...balEps].reverse(),
      masters: masterEps,
      slots: 2,
      rand: workerRands[i],
      runMs: () => (runRand() < 0.3 ? 0 : Math.floor(runRand() * 1500)),
      heartbeatMs: 500,
      name: workerNames[i],
      observer,
    });
    workers[i] = w;
    w.start();
  };
  const crashWorker = (i: number) => {
    const w = workers[i];
    if (!w) return;
    w.crash();
    net.host(workerNames[i]).crash();
    workers[i] = null;
    for (const list of runs.values()) {
      for (const r of list) if (r.worker === w) r.live = false;
    }
  };
  workerNames.forEach((_, i) => startWorker(i));

  // ---- the hostile worker: reports attempts running elsewhere as its own and as the victim's
  const rogueHost = net.host("rogue", rogueId);
  const rogueNode = bytes(keyRand, 16);
  const rogueBal = balEps.map((ep) => rogueHost.dial(ep, { node: rogueNode, timeoutMs: 1000 }));
  const rogueMasters = masterEps.map((ep) =>
    rogueHost.dial(ep, { node: rogueNode, timeoutMs: 1000 })
  );
  const rogueRand = next();
  rogueHost.clock.setInterval(() => {
    const live = [...runs.values()].flat().filter((r) => r.live);
    if (live.length === 0) return;
    const r = live[Math.floor(rogueRand() * live.length)];
    const victim = r.worker.node;
    const base = { job: r.req.job, chunkIndex: r.req.chunkIndex, attempt: r.req.attempt };
    for (const ch of rogueBal) {
      ch.request({
        type: MessageType.ChunkFinished,
        node: victim,
        ...base,
        state: ChunkState.Succeeded,
      })
        .then((reply) => {
          if (reply.type === MessageType.Ok && reply.value === 1) {
            violate(
              `wrong-worker: chunk_finished of ${attemptKey(base)} from the rogue key accepted ` +
                `by ${ch.endpoint} (placed on ${r.worker.name})`,
            );
          }
        }, (e) => {
          if (e instanceof Error && "code" in e && e.code === ErrorCode.Forbidden) forgedRefused++;
        });
    }
    const status: WorkerStatus = {
      type: MessageType.WorkerStatus,
      node: victim,
      ...base,
      state: ChunkState.Succeeded,
      exitCode: 0,
      signal: 0,
      failure: 0,
      durationMs: 1,
      outputs: [],
      stderrTail: new Uint8Array(0),
      reason: "",
      ticket: bytes(rogueRand, 32),
    };
    rogueMasters[state.leader].request(status).catch(() => {});
  }, 400);

  // ---- jobs, submitted at random times
  const nJobs = o.jobs ?? 4;
  for (let k = 0; k < nJobs; k++) {
    const at = k === 0 ? 0 : Math.floor(jobRand() * faultsUntil * 0.8);
    const numChunks = 2 + Math.floor(jobRand() * 7);
    const id = bytes(jobRand, 16), programId = bytes(jobRand, 16);
    clock.setTimeout(() => {
      jobs.push({
        id,
        hex: uuidToHex(id),
        numChunks,
        programId,
        results: Array(numChunks).fill(null),
      });
      note(`job ${uuidToHex(id).slice(0, 8)} submitted: ${numChunks} chunks`);
      dispatch(state.leader);
    }, at);
  }

  // ---- faults
  const down = new Set<string>();
  let storms = 0;
  const schedule = (at: number) => {
    if (at >= faultsUntil) return;
    clock.setTimeout(() => {
      injectOne();
      schedule(clock.monotonic() + 200 + Math.floor(faultRand() * 700));
    }, at - clock.monotonic());
  };
  const after = (ms: number, fn: () => void) => clock.setTimeout(fn, ms);
  const primaryIndex = () => balancers.findIndex((b) => b.service && !b.service.isStandby);
  const injectOne = () => {
    const x = faultRand();
    const dur = 100 + Math.floor(faultRand() * 2500);
    if (x < 0.2) {
      // Crash a balancer (the primary half of the time) and restart it with its original flags.
      const p = primaryIndex();
      const i = p >= 0 && faultRand() < 0.5 ? p : Math.floor(faultRand() * balancers.length);
      const b = balancers[i];
      if (!b.up) return;
      fault("balancer-crash", `${b.name}${i === p ? " (primary)" : ""} for ${dur} ms`);
      b.crash();
      down.add(b.name);
      after(dur, () => {
        if (!down.delete(b.name)) return;
        note(`restart ${b.name}`);
        b.start();
      });
    } else if (x < 0.3) {
      // Pause a balancer (the primary half of the time): it wakes up deposed, or renews.
      const p = primaryIndex();
      const i = p >= 0 && faultRand() < 0.5 ? p : Math.floor(faultRand() * balancers.length);
      const b = balancers[i];
      if (!b.up || b.paused) return;
      fault("balancer-pause", `${b.name}${i === p ? " (primary)" : ""} for ${dur} ms`);
      b.pause(dur);
    } else if (x < 0.42) {
      const i = Math.floor(faultRand() * nWorkers);
      if (!workers[i]) return;
      fault("worker-crash", `${workerNames[i]} for ${dur} ms`);
      crashWorker(i);
      down.add(workerNames[i]);
      after(dur, () => {
        if (!down.delete(workerNames[i])) return;
        note(`restart ${workerNames[i]}`);
        startWorker(i);
      });
    } else if (x < 0.55) {
      const i = Math.floor(faultRand() * nWorkers);
      const w = workers[i];
      if (!w || w.paused) return;
      fault("worker-pause", `${workerNames[i]} for ${dur} ms`);
      w.pause(dur);
    } else if (x < 0.8) {
      const all = [...masterNames, ...balNames, ...workerNames];
      const side = all.filter(() => faultRand() < 0.3);
      if (side.length === 0 || side.length === all.length) return;
      const rest = all.filter((n) => !side.includes(n));
      const oneWay = faultRand() < 0.4;
      fault(
        oneWay ? "partition-one-way" : "partition",
        `[${side.join(",")}] ${oneWay ? "->" : "|"} rest for ${dur} ms`,
      );
      net.partition(side, rest, oneWay);
      after(dur, () => net.heal());
    } else if (x < 0.9) {
      // A storm: a third of the messages held up to 2 s (pushes time out, acks come late).
      fault("slow-network", `for ${dur} ms`);
      storms++;
      net.faults = { ...net.faults, slow: 0.3, slowDelayMs: 2000 };
      after(dur, () => {
        if (--storms === 0 && clock.monotonic() < faultsUntil) {
          net.faults = { ...net.faults, slow: faults.slow!, slowDelayMs: faults.slowDelayMs! };
        }
      });
    } else {
      const old = state.leader;
      state.leader = (old + 1 + Math.floor(faultRand() * 2)) % masterNames.length;
      state.term++;
      fault("leader-change", `${masterNames[old]} -> ${masterNames[state.leader]}`);
    }
  };
  schedule(300);
  clock.setTimeout(() => {
    // Faults stop: heal, restart what is down; the network turns calm.
    net.heal();
    net.faults = { ...net.faults, drop: 0, duplicate: 0, slow: 0 };
    for (const name of [...down]) {
      down.delete(name);
      const b = balancers.find((b) => b.name === name);
      if (b) b.start();
      else startWorker(workerNames.indexOf(name));
    }
    note("faults stop");
  }, faultsUntil);

  // ---- run
  const allDone = () =>
    clock.monotonic() > faultsUntil && jobs.length === nJobs &&
    jobs.every((j) => j.results.every((r) => r !== null));
  const steps = await clock.run(endMs, {
    until: () => violations.length > 0 || allDone(),
    afterStep: () => {
      let placing = 0;
      for (const b of balancers) {
        const s = b.service;
        if (s && !s.isStandby && s.lease?.isPrimary(b.clock.monotonic())) placing++;
      }
      if (placing > 1) violate(`one-primary: ${placing} balancers may place at once`);
    },
  });
  if (violations.length === 0 && !allDone()) {
    const missing = jobs.flatMap((j) =>
      j.results.flatMap((r, c) => (r ? [] : [`${j.hex.slice(0, 8)}/${c}`]))
    );
    violate(
      `finished: ${missing.length} chunks without a result: ${missing.slice(0, 8).join(" ")}`,
    );
  }
  // Stop everything: the next seed starts from a clean slate (nothing is shared but the code).
  for (const b of balancers) b.crash();
  for (let i = 0; i < nWorkers; i++) crashWorker(i);
  for (const h of [...masterHosts, rogueHost]) h.crash();
  return {
    seed: o.seed,
    violations,
    endMs: clock.monotonic(),
    steps,
    chunks: jobs.reduce((n, j) => n + j.numChunks, 0),
    runs: nRuns,
    takeoverReruns,
    newAttemptOverlaps,
    faults: count,
    epochs: state.maxEpoch,
    forgedRefused,
    trace,
  };
}
