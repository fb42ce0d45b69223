/**
 * Start-up of a master:
 *
 *   dsys run --role master --listen EP --data DIR [--replicas N] [--repair-after D]
 *     [--delete-grace D]
 *     [--storage EP,…]   (storage nodes that do not register; registered ones need no flag)
 *            [--id NAME --peers NAME@EP,NAME@EP,… | --join] [--job-retention 24h]
 *            [--balancer-lease-ms 3000] [--dashboard-listen HOST:PORT]
 *            [--dashboard-advertise HOST:PORT]
 *
 * Masters are not told where the balancers are: balancers ask them for the primary lease
 * (`--masters` on the balancer), and dispatches go to the holder's advertised endpoint.
 *
 * Without `--peers`/`--join` the master runs alone with a local fsync'd log (development phase 1).
 * With them it is a member of a Raft group; its member id is `NAME@<listen endpoint>`.
 */
import { parseArgs } from "node:util";
import {
  SECURITY_FLAGS,
  type SecurityOptions,
  securityOptions,
  setUpNodeSecurity,
} from "../../lib/node_security.ts";
import { RequestError, RpcServer } from "../../lib/rpc.ts";
import { createLogger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { ChunkState, ErrorCode, MessageType, uuidToHex } from "../../wire/mod.ts";
import { JobTable } from "./job_table.ts";
import { decodeCommand } from "./commands.ts";
import { type ReplicatedLog, SingleNodeLog } from "./replicated_log.ts";
import { DEFAULT_DELETE_GRACE_MS, DEFAULT_JOB_RETENTION_MS, MasterService } from "./service.ts";
import { DurationError, formatDuration, parseDuration } from "../../lib/duration.ts";
import { RaftGroup } from "./raft_group.ts";
import { FileStorage } from "./raft/storage.ts";
import { ReplicatedStorage } from "../storage/replicated_client.ts";
import { LocalMembership, StaticMembership } from "../storage/membership.ts";
import { DEFAULT_REPAIR_AFTER_MS, StorageDirectory } from "./storage_directory.ts";
import { MAX_REPLICAS } from "../../wire/mod.ts";
import { MEMBER_ID_RE } from "./member_id.ts";
import { decodeSnapshot, encodeSnapshot } from "./snapshot.ts";
import { masterHandler, tableStateMachine } from "./wiring.ts";
import type { Registry } from "../../lib/metrics.ts";
import { MasterMetrics } from "./metrics.ts";
import { type Dashboard, dashboardToken, startDashboard } from "./dashboard.ts";
import { LeaderDashboard } from "./dashboard_leader.ts";
import { ChunkFiles } from "./dashboard_files.ts";
import { dialZmq } from "../../lib/transport.ts";
import { systemClock } from "../../lib/clock.ts";

/** How long a master's request waits for the first storage node to register, ms. */
const STORAGE_WAIT_MS = 5000;

/** Options of a master node. */
export interface MasterOptions {
  listen: string;
  data: string;
  /** Storage nodes that do not register (seeds), possibly none. */
  storage: string[];
  /** Replicas a put gets when it names none (0 = 2 with >= 2 storage nodes, else 1). */
  replicas: number;
  /** A storage node silent this long is dead and its files re-replicated, ms. */
  repairAfterMs: number;
  /** A file unreferenced (and not put) this long is deleted, ms. */
  deleteGraceMs: number;
  /** Length of the primary balancer lease, ms (`--balancer-lease-ms`). */
  balancerLeaseMs?: number;
  /** Raft member name (default: "m"). */
  id?: string;
  /** Initial Raft members `NAME@ENDPOINT` (this master included) to bootstrap a group. */
  peers?: string[];
  /** Join an existing group (after `dsys cluster add-master`). */
  join?: boolean;
  /** How often unfinished jobs are re-sent to the balancer, ms. */
  redispatchMs?: number;
  /** Snapshot (and compact the Raft log) every this many entries. */
  snapshotEvery?: number;
  /** Raft tick, ms. */
  tickMs?: number;
  /** How long a finished job is kept before it is removed, ms (`--job-retention`, default 24 h). */
  retentionMs?: number;
  /** Keys (`--key`, `--keyring`) or `--insecure`. */
  security?: SecurityOptions;
  /** Where this master's series are declared (`--metrics-listen`; roles/run.ts serves them). */
  metrics?: Registry;
  /** Serve the web dashboard here (`--dashboard-listen HOST:PORT`; roles/master/dashboard.ts). */
  dashboardListen?: string;
  /** Where other masters reach this one's dashboard (`--dashboard-advertise HOST:PORT`). */
  dashboardAdvertise?: string;
}

/** A running master. */
export interface MasterNode {
  endpoint: string;
  nodeId: Uint8Array;
  table: JobTable;
  /** The Raft member (undefined for a lone master). */
  raft?: RaftGroup;
  /** Where the dashboard listens (`HOST:PORT`), when started with `--dashboard-listen`. */
  dashboard?: string;
  close(): Promise<void>;
}

/** Raised for bad master flags. */
export class MasterArgsError extends Error {
  constructor(message: string) {
    super(`MasterArgsError: ${message}`);
    this.name = "MasterArgsError";
  }
}

/** Parses `dsys run --role master` flags. */
export function parseMasterArgs(args: string[]): MasterOptions {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "tcp://127.0.0.1:7100" },
      data: { type: "string", default: "./dsys-data/master" },
      // Gone: balancers find the masters. Kept as a flag only to say so clearly.
      balancer: { type: "string" },
      "balancer-lease-ms": { type: "string" },
      storage: { type: "string" },
      replicas: { type: "string" },
      "repair-after": { type: "string" },
      "delete-grace": { type: "string" },
      id: { type: "string" },
      peers: { type: "string" },
      join: { type: "boolean", default: false },
      "redispatch-ms": { type: "string" },
      "snapshot-every": { type: "string" },
      "tick-ms": { type: "string" },
      "job-retention": { type: "string" },
      "dashboard-listen": { type: "string" },
      "dashboard-advertise": { type: "string" },
      ...SECURITY_FLAGS,
    },
    strict: true,
  });
  const num = (name: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) {
      throw new MasterArgsError(`--${name} ${v} is not a positive integer`);
    }
    return n;
  };
  const peers = values.peers?.split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of peers ?? []) {
    if (!MEMBER_ID_RE.test(p)) {
      throw new MasterArgsError(`peer ${p} is not NAME@tcp://HOST:PORT`);
    }
  }
  let retentionMs: number | undefined;
  if (values["job-retention"] !== undefined) {
    try {
      retentionMs = parseDuration(values["job-retention"]);
    } catch (e) {
      if (!(e instanceof DurationError)) throw e;
      throw new MasterArgsError(`--job-retention: ${e.message}`);
    }
    if (retentionMs <= 0) {
      throw new MasterArgsError("--job-retention must be positive (results would vanish unseen)");
    }
  }
  let repairAfterMs = DEFAULT_REPAIR_AFTER_MS;
  if (values["repair-after"] !== undefined) {
    try {
      repairAfterMs = parseDuration(values["repair-after"]);
    } catch (e) {
      if (!(e instanceof DurationError)) throw e;
      throw new MasterArgsError(`--repair-after: ${e.message}`);
    }
    if (repairAfterMs < 1000) throw new MasterArgsError("--repair-after must be at least 1s");
  }
  let deleteGraceMs = DEFAULT_DELETE_GRACE_MS;
  if (values["delete-grace"] !== undefined) {
    try {
      deleteGraceMs = parseDuration(values["delete-grace"]);
    } catch (e) {
      if (!(e instanceof DurationError)) throw e;
      throw new MasterArgsError(`--delete-grace: ${e.message}`);
    }
    if (deleteGraceMs < 1000) throw new MasterArgsError("--delete-grace must be at least 1s");
  }
  const replicas = values.replicas === undefined ? 0 : Number(values.replicas);
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > MAX_REPLICAS) {
    throw new MasterArgsError(`--replicas ${values.replicas} is not 0..${MAX_REPLICAS}`);
  }
  if (values.balancer !== undefined) {
    throw new MasterArgsError(
      "--balancer is no longer a master flag: start each balancer with --masters instead " +
        "(the masters grant one of them the primary lease)",
    );
  }
  if (peers && !values.id) {
    throw new MasterArgsError("--peers needs --id NAME (this master's name)");
  }
  return {
    listen: values.listen!,
    data: values.data!,
    storage: (values.storage ?? "").split(",").map((e) => e.trim()).filter(Boolean),
    replicas,
    repairAfterMs,
    deleteGraceMs,
    balancerLeaseMs: num("balancer-lease-ms", values["balancer-lease-ms"]),
    id: values.id,
    peers,
    join: values.join,
    redispatchMs: num("redispatch-ms", values["redispatch-ms"]),
    snapshotEvery: num("snapshot-every", values["snapshot-every"]),
    tickMs: num("tick-ms", values["tick-ms"]),
    retentionMs,
    dashboardListen: values["dashboard-listen"],
    dashboardAdvertise: values["dashboard-advertise"],
    security: securityOptions(values),
  };
}

/** Starts a master: recovers its state, binds, and starts handing work to the balancer. */
export async function runMaster(opts: MasterOptions): Promise<MasterNode> {
  const nodeId = await loadOrCreateNodeId(opts.data);
  const log = createLogger("master", uuidToHex(nodeId));
  const creds = setUpNodeSecurity("master", opts.security ?? {}, opts.listen, log);
  if (creds && opts.id !== undefined && opts.id !== creds.self.name) {
    throw new MasterArgsError(`--id ${opts.id} must be this master's key name ${creds.self.name}`);
  }
  let table = new JobTable();
  // Requests that arrive while the state is recovered are refused with a retryable error.
  const server = new RpcServer({
    node: nodeId,
    log,
    handler: () => {
      throw new RequestError(ErrorCode.Unavailable, "master is starting");
    },
  });
  const endpoint = server.bind(opts.listen);
  let raft: RaftGroup | undefined;
  let consensus: ReplicatedLog;
  // Declared before the Raft member starts: its snapshot-restore callback swaps the service's table.
  // deno-lint-ignore prefer-const
  let service: MasterService | undefined;
  const metrics = opts.metrics ? new MasterMetrics(opts.metrics) : undefined;
  if (opts.peers || opts.join) {
    const id = `${opts.id ?? "m"}@${endpoint}`;
    if (opts.peers && !opts.peers.includes(id)) {
      await server.close();
      throw new MasterArgsError(`--peers must include this master as ${id}`);
    }
    raft = RaftGroup.start({
      id,
      peers: opts.peers ?? [],
      join: opts.join ?? false,
      storage: await FileStorage.open(`${opts.data}/raft`),
      // A snapshot from a peer is decoded before it is stored: one that cannot be is dropped.
      sm: tableStateMachine({
        get table() {
          return table;
        },
        set table(t) {
          table = t;
        },
        onRestore: (t) => service?.setTable(t),
      }),
      node: nodeId,
      log,
      tickMs: opts.tickMs,
      snapshotEvery: opts.snapshotEvery,
      // Nothing a master acknowledges may rest on a write that failed: exit, be restarted.
      onFatal: () => Deno.exit(70),
      metrics: metrics?.raft,
    });
    consensus = raft;
  } else {
    consensus = await SingleNodeLog.open(
      `${opts.data}/log`,
      (data) => table.apply(decodeCommand(data)),
      endpoint,
      {
        snapshot: () => encodeSnapshot(table),
        restore: (data) => {
          table = decodeSnapshot(data);
          service?.setTable(table);
        },
        snapshotEvery: opts.snapshotEvery,
        log,
        onFatal: (e) => {
          log.error("lone master log compaction failed after its snapshot was written", {
            error: e,
          });
          Deno.exit(70);
        },
      },
    );
  }
  if (metrics) {
    metrics.watch(opts.metrics!, () => table, consensus, raft);
    consensus = metrics.timed(consensus);
  }
  const storageDirectory = new StorageDirectory({ repairAfterMs: opts.repairAfterMs });
  const seeds = new StaticMembership(opts.storage);
  // The leader's own membership; while no storage node has registered, the --storage seeds.
  const membership = new LocalMembership(() => {
    const r = service!.storageNodes();
    return r.nodes.length > 0 ? r : { replicas: r.replicas, nodes: [] };
  });
  const storage = new ReplicatedStorage(
    {
      view: async () => {
        // A master that just started (or restarted) has heard from no storage node yet; they
        // heartbeat every second, so a request waits for them a few seconds before failing.
        const end = performance.now() + STORAGE_WAIT_MS;
        for (;;) {
          const v = await membership.view();
          if (v.members.length > 0) return v;
          const s = await seeds.view();
          if (s.members.length > 0 || performance.now() >= end) return s;
          await new Promise((r) => setTimeout(r, 100));
        }
      },
      close: () => Promise.resolve(),
    },
    nodeId,
    { timeoutMs: 5000 },
  );
  // The dashboard's file links stream in small pieces (at most 2 x 1 MiB in flight each); the
  // files they name were stored, so the nodes have registered (no wait for them).
  const dashboardStorage = opts.dashboardListen === undefined ? undefined : new ReplicatedStorage(
    {
      view: async () => {
        const v = await membership.view();
        return v.members.length > 0 ? v : await seeds.view();
      },
      close: () => Promise.resolve(),
    },
    nodeId,
    { timeoutMs: 5000, chunkBytes: 1 << 20, window: 2 },
  );
  let dashboard: Dashboard | undefined;
  service = new MasterService({
    node: nodeId,
    endpoint,
    log,
    table,
    consensus,
    storage,
    storageDirectory,
    replicas: opts.replicas,
    deleteGraceMs: opts.deleteGraceMs,
    storageSeeds: opts.storage,
    balancerLeaseMs: opts.balancerLeaseMs,
    redispatchMs: opts.redispatchMs,
    raft,
    retentionMs: opts.retentionMs,
    dashboardUrl: () => dashboard?.url,
  });
  server.setHandler(masterHandler(() => raft, () => service));
  service.start();
  if (opts.dashboardListen !== undefined) {
    const self = raft?.id ?? endpoint;
    const nodes = async () => {
      const r = await service!.handle({ type: MessageType.NodeListRequest, node: nodeId });
      return r?.type === MessageType.NodeListResponse ? r.nodes : [];
    };
    try {
      dashboard = await startDashboard({
        listen: opts.dashboardListen,
        advertise: opts.dashboardAdvertise,
        endpoint,
        token: await dashboardToken(opts.data, creds?.clusterSecret),
        log,
        self,
        table: () => table,
        isLeader: () => consensus.isLeader(),
        term: raft && (() => raft!.term),
        nodes,
        running: async (job) => {
          // As `dsys status` shows them (from null: an admin's view).
          const r = await service!.handle({
            type: MessageType.JobStatusRequest,
            node: nodeId,
            job,
          });
          const running = new Map<number, Uint8Array>();
          if (r?.type !== MessageType.JobStatusResponse) return running;
          for (const c of r.chunks) {
            if (c.state === ChunkState.Running && c.worker.some((b) => b !== 0)) {
              running.set(c.chunkIndex, c.worker);
            }
          }
          return running;
        },
        leader: raft && new LeaderDashboard({
          node: nodeId,
          isLeader: () => raft!.isLeader(),
          leaderId: () => raft!.leaderId,
          dial: dialZmq,
          clock: systemClock,
        }),
        files: new ChunkFiles({
          node: nodeId,
          storage: dashboardStorage!,
          secret: creds?.clusterSecret &&
            { clusterSecret: creds.clusterSecret, publicKey: creds.self.publicKey },
          nodes,
          dial: dialZmq,
          clock: systemClock,
        }),
      });
    } catch (e) {
      await service.stop();
      await server.close();
      await storage.close();
      await dashboardStorage?.close();
      await consensus.close();
      throw e;
    }
  }
  log.info("master started", {
    endpoint,
    jobs: table.jobs.size,
    raft: raft?.id ?? null,
    jobRetention: formatDuration(opts.retentionMs ?? DEFAULT_JOB_RETENTION_MS),
  });
  return {
    endpoint,
    nodeId,
    get table() {
      return table;
    },
    raft,
    ...(dashboard ? { dashboard: dashboard.address } : {}),
    async close() {
      await dashboard?.close();
      await service!.stop();
      await server.close();
      await storage.close();
      await dashboardStorage?.close();
      await consensus.close();
    },
  };
}
