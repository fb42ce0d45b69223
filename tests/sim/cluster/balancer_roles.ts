/**
 * The real balancers and simulated workers as the cluster simulation's other roles (a
 * {@link RolesFactory} for tests/sim/cluster/run.ts, instead of the stand-in): two production
 * balancers (tests/sim/world/balancer_node.ts) and three workers speaking the real protocol
 * (tests/sim/world/sim_worker.ts) with the real masters of the cluster simulation, so the lease,
 * job dispatch, placement, fencing and worker_status with placement tickets run end to end.
 * The masters then need keys (a cluster secret to check tickets): {@link balancerCluster} gives
 * both the roles and the masters' credentials.
 *
 * Besides the cluster simulation's own checks (every acknowledged job completes, the history is
 * linearizable, …), these roles check, as it happens (World.violate):
 * - `epoch-owner`: every worker_request of an epoch is pushed by one balancer process;
 * - `placed-twice`: under one epoch an attempt of a chunk starts at most once (on any worker);
 * - `one-primary`: when a balancer pushes, no other balancer may place at that instant;
 * - `wrong-worker`: a hostile worker key ("rogue") reports attempts running on other workers, as
 *   theirs (their node id) and with a made-up ticket, to every master (worker_status) and both
 *   balancers (chunk_finished): none may be taken (`ok` with value 1).
 * (tests/sim/balancer_sim.ts argues each.)
 * @module
 */
import { SimBalancerNode } from "../world/balancer_node.ts";
import { SimWorker } from "../world/sim_worker.ts";
import type { BalancerPlantedBug } from "../../../roles/balancer/service.ts";
import { mulberry32 } from "../world/clock.ts";
import type { RolesFactory } from "./run.ts";
import { identity, nameId, type SimNode, type World } from "./world.ts";
import { Credentials, type Identity, type KeyFile, Keyring } from "../../../lib/security.ts";
import { z85Encode } from "../../../wire/zmq/mod.ts";
import {
  ChunkState,
  FailureCode,
  type Message,
  MessageType,
  uuidToHex,
  type WorkerRequest,
} from "../../../wire/mod.ts";

const BALANCERS = ["b1", "b2"];
const WORKERS = ["w1", "w2", "w3"];

/** What the balancer roles counted in one run (for the test's totals). */
export interface BalancerRoleStats {
  pushes: number;
  runs: number;
  /** Highest lease epoch any push carried. */
  maxEpoch: number;
  takeoverReruns: number;
  /** Forged reports of the hostile worker refused. */
  forgedRefused: number;
}

/** Every this many ms the hostile worker forges reports. */
const ROGUE_EVERY_MS = 200;

/** A live chunk attempt on a worker (what the hostile worker forges reports about). */
interface LiveRun {
  worker: SimWorker;
  req: WorkerRequest;
}

/** The hostile worker key: forges reports for attempts running elsewhere; see module doc. */
class RogueNode implements SimNode {
  readonly name = "rogue";
  #world: World;
  #masters: string[];
  #balancers: string[];
  #live: () => LiveRun[];
  #refused: () => void;
  #running = false;
  constructor(
    world: World,
    masters: string[],
    balancers: string[],
    live: () => LiveRun[],
    refused: () => void,
  ) {
    this.#world = world;
    this.#masters = masters;
    this.#balancers = balancers;
    this.#live = live;
    this.#refused = refused;
  }
  get up(): boolean {
    return this.#running;
  }
  start(): void {
    const host = this.#world.net.host(this.name, identity("worker", this.name));
    host.restart();
    this.#running = true;
    const node = nameId(this.name);
    const rand = this.#world.fork();
    const masters = this.#masters.map((ep) => host.dial(ep, { node, timeoutMs: 1000 }));
    const bals = this.#balancers.map((ep) => host.dial(ep, { node, timeoutMs: 1000 }));
    host.clock.setInterval(() => {
      const live = this.#live();
      if (live.length === 0) return;
      const r = live[Math.floor(rand() * live.length)];
      const base = { job: r.req.job, chunkIndex: r.req.chunkIndex, attempt: r.req.attempt };
      const key = `${uuidToHex(base.job)}/${base.chunkIndex}/${base.attempt}`;
      const taken = (what: string, to: string) => (reply: Message) => {
        if (reply.type === MessageType.Ok && reply.value === 1) {
          this.#world.violate(
            `wrong-worker: a forged ${what} of ${key} (placed on ${r.worker.name}) taken by ${to}`,
          );
        }
      };
      const refused = () => this.#refused();
      for (const ch of bals) {
        ch.request({
          type: MessageType.ChunkFinished,
          node: r.worker.node,
          ...base,
          state: ChunkState.Succeeded,
        }).then(taken("chunk_finished", ch.endpoint), refused);
      }
      for (const ch of masters) {
        ch.request({
          type: MessageType.WorkerStatus,
          node: r.worker.node,
          ...base,
          state: ChunkState.Succeeded,
          exitCode: 0,
          signal: 0,
          failure: FailureCode.None,
          durationMs: 1,
          outputs: [],
          stderrTail: new Uint8Array(0),
          reason: "",
          ticket: Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256)),
        }).then(taken("worker_status", ch.endpoint), refused);
      }
    }, ROGUE_EVERY_MS);
  }
  crash(): void {
    this.#running = false;
    this.#world.net.host(this.name).crash();
  }
}

/** A simulated worker as a node of the cluster simulation (a restart is a new process). */
class WorkerNode implements SimNode {
  readonly name: string;
  #world: World;
  #make: () => SimWorker;
  #w: SimWorker | null = null;
  constructor(world: World, name: string, make: () => SimWorker) {
    this.#world = world;
    this.name = name;
    this.#make = make;
  }
  get up(): boolean {
    return this.#w !== null;
  }
  start(): void {
    if (this.#w) return;
    this.#world.net.host(this.name).restart();
    this.#w = this.#make();
    this.#w.start();
  }
  crash(): void {
    if (!this.#w) return;
    this.#w.crash();
    this.#world.net.host(this.name).crash();
    this.#w = null;
  }
}

/**
 * The roles (2 real balancers, 3 simulated workers) and the masters' credentials (the cluster
 * secret the balancers mint tickets with). Keys are made up (Z85 of seeded bytes) and the same
 * every run; `stats` fills in as runs go.
 */
export function balancerCluster(o: { plantedBug?: BalancerPlantedBug } = {}): {
  roles: RolesFactory;
  masterAuth: Credentials;
  stats: BalancerRoleStats;
} {
  const keyRand = mulberry32(20261201);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(keyRand() * 256));
  const secret = Array.from(bytes(32), (b) => b.toString(16).padStart(2, "0")).join("");
  const files = new Map<string, KeyFile>();
  const ids: Identity[] = [];
  for (const [name, role] of [["m1", "master"], ...BALANCERS.map((b) => [b, "balancer"])]) {
    const f: KeyFile = {
      name,
      role: role as Identity["role"],
      publicKey: z85Encode(bytes(32)),
      secretKey: z85Encode(bytes(32)),
      clusterSecret: secret,
    };
    files.set(name, f);
    ids.push({ name, role: f.role, publicKey: f.publicKey, admin: false });
  }
  const ring = new Keyring(ids);
  const creds = (name: string) => new Credentials(files.get(name)!, ring);
  const stats: BalancerRoleStats = {
    pushes: 0,
    runs: 0,
    maxEpoch: 0,
    takeoverReruns: 0,
    forgedRefused: 0,
  };

  const roles: RolesFactory = (world, masterEndpoints) => {
    const epochOwner = new Map<number, string>();
    /** Attempts started, per job/chunk/attempt: the epochs they were pushed under. */
    const started = new Map<string, Set<number>>();
    const balancers = BALANCERS.map((name) =>
      new SimBalancerNode({
        host: world.net.host(name, identity("balancer", name)),
        name,
        node: nameId(name),
        endpoint: `${name}@tcp://${name}:7200`,
        masters: masterEndpoints,
        auth: creds(name),
        rand: world.fork(),
        deadAfterMs: 2000,
        pushTimeoutMs: 1000,
        ...(o.plantedBug ? { plantedBug: o.plantedBug } : {}),
        log: (r) => {
          if (r.level === "error") world.errors.push({ node: r.node, at: r.t, msg: r.msg });
        },
        onPush: (b, incarnation, m) => {
          if (m.type !== MessageType.WorkerRequest) return;
          stats.pushes++;
          const who = `${b.name}#${incarnation}`;
          const e = m.epoch ?? 0;
          stats.maxEpoch = Math.max(stats.maxEpoch, e);
          const owner = epochOwner.get(e);
          if (owner === undefined) epochOwner.set(e, who);
          else if (owner !== who) {
            world.violate(`epoch-owner: epoch ${e} pushed by ${owner} and by ${who}`);
          }
          for (const o of balancers) {
            const s = o.service;
            if (o === b || !s || s.isStandby || !s.lease?.isPrimary(o.clock.monotonic())) continue;
            world.violate(`one-primary: ${who} pushes while ${o.name} may place too`);
          }
        },
      })
    );
    const endpoints = balancers.map((b) => b.endpoint);
    const live = new Map<string, LiveRun>();
    const observer = {
      program(w: SimWorker, req: WorkerRequest, what: "start" | "end") {
        const lk = `${w.name} ${uuidToHex(req.job)}/${req.chunkIndex}/${req.attempt}`;
        if (what !== "start") {
          live.delete(lk);
          return;
        }
        live.set(lk, { worker: w, req });
        stats.runs++;
        const key = `${uuidToHex(req.job)}/${req.chunkIndex}/${req.attempt}`;
        let epochs = started.get(key);
        if (!epochs) started.set(key, epochs = new Set());
        const e = req.epoch ?? 0;
        if (epochs.has(e)) {
          world.violate(`placed-twice: ${key} started again (on ${w.name}) under epoch ${e}`);
        } else if (epochs.size > 0) stats.takeoverReruns++;
        epochs.add(e);
      },
    };
    const workers = WORKERS.map((name, i) => {
      const host = world.net.host(name, identity("worker", name));
      const rand = world.fork();
      return new WorkerNode(world, name, () =>
        new SimWorker({
          host,
          node: nameId(name),
          balancers: i % 2 === 0 ? endpoints : [...endpoints].reverse(),
          masters: masterEndpoints,
          slots: 2,
          rand,
          runMs: (_req, r) => (r() < 0.3 ? 0 : Math.floor(r() * 300)),
          heartbeatMs: 500,
          name,
          observer,
        }));
    });
    const rogue = new RogueNode(
      world,
      masterEndpoints,
      endpoints,
      () => [...live.values()].filter((r) => !r.worker.dead),
      () => void stats.forgedRefused++,
    );
    return {
      nodes: [...balancers, ...workers, rogue],
      hosts: [...BALANCERS, ...WORKERS, rogue.name],
      balancers,
      expectedOutputs: null,
    };
  };
  return { roles, masterAuth: creds("m1"), stats };
}
