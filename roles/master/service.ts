/**
 * The master's I/O shell: serves clients, workers and the balancer on one ROUTER; turns accepted
 * requests into log commands; hands agreed work to the balancer.
 *
 * The decisions live elsewhere: what is agreed in `ReplicatedLog`, what it means in `JobTable`.
 * This file validates requests, proposes, answers, and keeps the balancer fed: every job with
 * unfinished chunks is (re-)dispatched after it commits and then periodically, so a balancer that
 * restarted or lost a message catches up (the balancer ignores chunks it already has). The
 * leader also collects history: a job finished for longer than the retention is removed by a
 * `remove` command it proposes (`dsys rm` proposes one at once).
 *
 * Dispatches go to the holder of the primary balancer lease only (JobTable.lease, granted by
 * the leader through `balancer_lease`; timing in lease.ts). Balancers find the masters, not the
 * other way round: a master learns their endpoints from their lease requests.
 */
import {
  type BalancerLease,
  type BalancerLeaseReply,
  type ChunkRecord,
  ChunkState,
  type ClusterChange,
  ClusterOp,
  ErrorCode,
  type FileGc,
  type FileGcReply,
  type FileKeep,
  FileKeepOp,
  type JobCancel,
  type JobStatusResponse,
  type JobSubmit,
  type Message,
  MessageType,
  type NodeEntry,
  NodeFlags,
  NodeRole,
  NodeState,
  randomUuid,
  type StorageHeartbeat,
  type StorageNodes,
  uuidFromHex,
  uuidToHex,
  type WorkerStatus,
} from "../../wire/mod.ts";
import { RequestError, RpcError } from "../../lib/rpc.ts";
import { type Clock, systemClock, type TimerId } from "../../lib/clock.ts";
import type { Dial } from "../../lib/transport.ts";
import type { Logger } from "../../lib/log.ts";
import { type JobRecord, JobTable } from "./job_table.ts";
import { encodeCommand, MAX_DELETE, MAX_REMOVE, specFromSubmit } from "./commands.ts";
import { MAX_KEEPS, MAX_KEEPS_PER_USER } from "./file_refs.ts";
import type { ReplicatedLog } from "./replicated_log.ts";
import type { RaftGroup } from "./raft_group.ts";
import { BalancerDirectory } from "./balancers.ts";
import { defaultReplicas, StorageDirectory } from "./storage_directory.ts";
import { LeaseTimer } from "./lease.ts";
import { splitNamedEndpoint } from "../../lib/named_endpoint.ts";
import { MEMBER_ID_RE, memberEndpoint, memberName } from "./member_id.ts";
import { type Credentials, type Identity, processCredentials } from "../../lib/security.ts";
import { checkPlacementTicket } from "../../lib/capability.ts";
import { StatCache, statKey } from "./stat_cache.ts";
import { dashboardDetail } from "./dashboard_leader.ts";

/** Limits a submission is validated against. */
export interface SubmitLimits {
  maxChunks: number;
  maxProgramBytes: number;
  maxArgumentBytes: number;
  maxInputs: number;
  maxTimeLimitMs: number;
  defaultTimeLimitMs: number;
}

/** Defaults of SubmitLimits. */
export const DEFAULT_SUBMIT_LIMITS: SubmitLimits = {
  maxChunks: 100_000,
  maxProgramBytes: 16 * 1024 * 1024,
  maxArgumentBytes: 64 * 1024,
  maxInputs: 4096,
  maxTimeLimitMs: 24 * 3600_000,
  defaultTimeLimitMs: 600_000,
};

/**
 * What the service asks of the storage tier (roles/storage/replicated_client.ts
 * `ReplicatedStorage` in production; the simulator's stand-in in tests/sim/).
 */
export interface MasterStorage {
  /** Whether the file exists on the tier for `user` ("" = any owner), and its length. */
  stat(id: Uint8Array, user?: string): Promise<{ exists: boolean; length: number }>;
  /** A client of one storage node (for `dsys nodes` of unregistered seeds). */
  client(endpoint: string): { readonly endpoint: string; stats(): Promise<{ node: Uint8Array }> };
}

/**
 * Bugs the cluster simulation plants to show that its checks catch them (docs/testing.md,
 * "Planted bugs"). Test-only: main.ts never sets {@link MasterServiceDeps.plantedBugs}.
 * - `ack-before-commit`: a submission is acknowledged as soon as it is proposed, not once it
 *   is committed and applied;
 * - `status-without-barrier`: a status read is served from this member's table without the
 *   ReadIndex barrier (a deposed leader that has not heard it serves a stale answer);
 * - `status-from-follower`: any member answers a status read from its own table (no leader
 *   check, no barrier: a follower that lags serves a stale answer).
 */
export type PlantedBug = "ack-before-commit" | "status-without-barrier" | "status-from-follower";

/** What the service needs from its surroundings. */
export interface MasterServiceDeps {
  node: Uint8Array;
  endpoint: string;
  log: Logger;
  table: JobTable;
  consensus: ReplicatedLog;
  /** The storage tier (its membership: `storageNodes()` of this service, or the seeds). */
  storage: MasterStorage;
  /** The leader's storage membership (fed by storage_heartbeat). */
  storageDirectory: StorageDirectory;
  /** `--replicas`: replicas a put gets when it names none; 0 = 2 with >= 2 nodes, else 1. */
  replicas?: number;
  /**
   * `--delete-grace`: a file nothing references is deleted once it has been unreferenced this
   * long (and not put for as long), ms (default DEFAULT_DELETE_GRACE_MS).
   */
  deleteGraceMs?: number;
  /** `--storage` endpoints: storage nodes that do not register (used while none has). */
  storageSeeds?: string[];
  /** Length of the primary balancer lease, ms (default DEFAULT_BALANCER_LEASE_MS). */
  balancerLeaseMs?: number;
  limits?: Partial<SubmitLimits>;
  /** How often unfinished jobs are re-dispatched, ms. */
  redispatchMs?: number;
  /** The Raft member, when the masters are a group. */
  raft?: RaftGroup;
  /** Keys and cluster secret (default: the process's; null: insecure, every peer trusted). */
  auth?: Credentials | null;
  /** How long a finished job is kept before the leader removes it, ms (default 24 h). */
  retentionMs?: number;
  /** Time and timers (default: the process's; the simulator passes virtual time). */
  clock?: Clock;
  /** How balancer clients are made (default: ZeroMQ). */
  dial?: Dial;
  /** Makes the id of a new job (default: a random uuid; the simulator's are seeded). */
  newJobId?: () => Uint8Array;
  /**
   * Where this master's dashboard is reached (`http://HOST:PORT`), shown in its own node list
   * entry: how followers find the leader's (roles/master/dashboard_leader.ts).
   */
  dashboardUrl?: () => string | undefined;
  /** Test-only: bugs to plant (see {@link PlantedBug}); never set in production. */
  plantedBugs?: ReadonlySet<PlantedBug>;
}

/** How long after a cancel the leader keeps re-sending it to the balancer, ms. */
const CANCEL_RESEND_MS = 60_000;
/** Most retries a submission may ask for per chunk. */
export const MAX_RETRIES = 100;
/** Job and chunk state names for logs. */
const STATE_NAMES: Record<number, string> = {
  [ChunkState.Running]: "running",
  [ChunkState.Succeeded]: "succeeded",
  [ChunkState.Failed]: "failed",
  [ChunkState.Cancelled]: "cancelled",
};

/** Default of `--delete-grace`: 10 minutes. */
export const DEFAULT_DELETE_GRACE_MS = 600_000;
/** Most files the leader remembers seeing unreferenced (soft state, the oldest forgotten). */
const MAX_ORPHANS = 1_000_000;

/** Default of `--job-retention`: finished jobs are kept for a day. */
export const DEFAULT_JOB_RETENTION_MS = 24 * 3600_000;

/** A `NAME@tcp://…` reference as node_entry's separate endpoint and name. */
function named(ref: string): { endpoint: string; name: string } {
  const n = splitNamedEndpoint(ref);
  return { endpoint: n.endpoint, name: n.name ?? "" };
}

/** May `from` see and act on a job of `owner`? (null = insecure mode: everyone may.) */
function mayActOn(from: Identity | null, owner: string): boolean {
  return from === null || from.admin || from.name === owner;
}

/** Serves the master's requests. */
export class MasterService {
  #d: MasterServiceDeps;
  #limits: SubmitLimits;
  #timer: TimerId | undefined;
  #gcTimer: TimerId | undefined;
  #clock: Clock;
  /** A retention `remove` proposal is in flight (one at a time). */
  #collecting = false;
  #lastDispatch = new Map<string, number>();
  /** Soft state: chunks reported running (not logged: a running report is not a result). */
  #running = new Map<string, Map<number, Uint8Array>>();
  /** Recent storage stats of programs and inputs (one round trip per file and owner per TTL). */
  #stats = new StatCache();

  #secret: Uint8Array | null;
  /** Balancers seen, and clients to them. */
  #balancers: BalancerDirectory;
  #leaseTimer: LeaseTimer;
  /** This master's keyring name ("" insecure), for node lists. */
  #selfName: string;
  /**
   * Soft state of the leader: when it first saw each file that storage offered for collection
   * unreferenced (monotonic ms). A file is deleted only once it has stayed unreferenced for the
   * grace by this clock; a new leader starts over (deletes later, never earlier).
   */
  #orphans = new Map<string, number>();
  #orphansTerm = -1;

  constructor(deps: MasterServiceDeps) {
    this.#d = deps;
    this.#clock = deps.clock ?? systemClock;
    this.#balancers = new BalancerDirectory({ node: deps.node, log: deps.log, dial: deps.dial });
    this.#leaseTimer = new LeaseTimer(deps.balancerLeaseMs);
    this.#limits = { ...DEFAULT_SUBMIT_LIMITS, ...deps.limits };
    const auth = deps.auth === undefined ? processCredentials() : deps.auth;
    this.#secret = auth?.clusterSecret ?? null;
    this.#selfName = auth?.self.name ?? "";
    if (auth && !this.#secret) throw new Error("a secure master needs the cluster secret");
  }

  /** Starts the periodic re-dispatch of unfinished jobs. */
  start(): void {
    const every = this.#d.redispatchMs ?? 3000;
    this.#timer = this.#clock.setInterval(() => this.#redispatchAll(every), Math.min(every, 1000));
    // Expired jobs are looked for a few times per retention (at most every second): a job
    // leaves at most that much after its retention ends.
    const retention = this.#d.retentionMs ?? DEFAULT_JOB_RETENTION_MS;
    this.#gcTimer = this.#clock.setInterval(
      () => void this.#collect(),
      Math.max(20, Math.min(1000, retention / 4)),
    );
    // Jobs recovered from the log are handed out again right away.
    this.#redispatchAll(0);
  }

  /** Swaps in a table restored from a snapshot. */
  setTable(table: JobTable): void {
    this.#d.table = table;
  }

  /** Stops timers and closes the balancer clients. */
  async stop(): Promise<void> {
    this.#clock.clearInterval(this.#timer);
    this.#clock.clearInterval(this.#gcTimer);
    await this.#balancers.close();
  }

  /** The RpcServer handler. */
  handle = async (msg: Message, from: Identity | null = null): Promise<Message | null> => {
    switch (msg.type) {
      case MessageType.JobSubmit:
        return await this.#submit(msg, from);
      case MessageType.WorkerStatus:
        return await this.#workerStatus(msg, from);
      case MessageType.JobStatusRequest:
        return await this.#status(msg.job, from);
      case MessageType.JobListRequest:
        return await this.#list(from);
      case MessageType.JobRemove:
        return await this.#remove(msg.job, from);
      case MessageType.JobCancel:
        return await this.#cancel(msg, from);
      case MessageType.NodeListRequest:
        return await this.#nodes();
      case MessageType.ClusterChange:
        return await this.#clusterChange(msg);
      case MessageType.BalancerLease:
        return await this.#lease(msg, from);
      case MessageType.StorageHeartbeat:
        return this.#storageHeartbeat(msg, from);
      case MessageType.StorageNodesRequest:
        this.#requireLeader();
        return this.storageNodes();
      case MessageType.FileKeep:
        return await this.#keep(msg, from);
      case MessageType.FileListRequest:
        return await this.#fileList(from);
      case MessageType.FileGc:
        return await this.#gc(msg);
      default:
        throw new RequestError(
          ErrorCode.WrongRole,
          `master does not serve message type ${msg.type}`,
        );
    }
  };

  #requireLeader(): void {
    const leading = this.#d.consensus.isLeader();
    this.#d.storageDirectory.setLeader(
      leading,
      this.#d.raft?.node.status().term ?? 0,
      this.#clock.monotonic(),
    );
    if (!leading) {
      throw new RequestError(ErrorCode.NotLeader, this.#d.consensus.leaderEndpoint());
    }
  }

  /**
   * storage_heartbeat: records the node (storage_directory.ts) and answers with the membership.
   * In a secure cluster the endpoint must carry the sender's own key name, so a storage node
   * cannot advertise another's.
   */
  #storageHeartbeat(m: StorageHeartbeat, from: Identity | null): StorageNodes {
    const named = splitNamedEndpoint(m.endpoint);
    if (!named.endpoint.startsWith("tcp://") || new TextEncoder().encode(m.endpoint).length > 255) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `storage_heartbeat: endpoint ${JSON.stringify(m.endpoint)} is not [NAME@]tcp://HOST:PORT`,
      );
    }
    if (from && named.name !== from.name) {
      throw new RequestError(
        ErrorCode.Forbidden,
        `storage_heartbeat: endpoint ${m.endpoint} is not named for the sender's key ${from.name}`,
      );
    }
    // Recorded by every master (a follower then answers NOT_LEADER): a new leader knows them.
    this.#d.storageDirectory.heartbeat(m, this.#clock.monotonic(), this.#clock.now());
    this.#requireLeader();
    return this.storageNodes();
  }

  /**
   * file_keep: the sender's user keeps the files (only files it may read on storage: an owner),
   * or stops keeping them. Committed before the reply.
   */
  async #keep(m: FileKeep, from: Identity | null): Promise<Message> {
    this.#requireLeader();
    const user = from?.name ?? "";
    const l = this.#limits;
    if (m.files.length === 0 || m.files.length > l.maxInputs) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `file_keep: ${m.files.length} files (want 1..${l.maxInputs})`,
      );
    }
    for (const f of m.files) {
      if (new TextEncoder().encode(f.name).length > 1024) {
        throw new RequestError(ErrorCode.BadRequest, `file_keep: name of ${f.name.length} chars`);
      }
    }
    const unkeep = m.op === FileKeepOp.Unkeep;
    let files = m.files;
    if (!unkeep) {
      if (m.replicas < 1) throw new RequestError(ErrorCode.BadRequest, "file_keep: replicas 0");
      // Only what the user stored (or may read): nobody keeps another's bytes alive.
      files = await Promise.all(m.files.map(async (f) => {
        const st = await this.#d.storage.stat(f.id, from === null || from.admin ? "" : user)
          .catch((e) => {
            throw new RequestError(ErrorCode.Unavailable, `storage unavailable: ${e.message}`);
          });
        if (!st.exists) {
          throw new RequestError(
            ErrorCode.NotFound,
            `file ${uuidToHex(f.id)} not found on storage${user ? ` for ${user}` : ""}`,
          );
        }
        return { ...f, size: st.length };
      }));
    }
    const res = await this.#d.consensus.propose(encodeCommand({
      kind: "keep",
      user,
      unkeep,
      replicas: unkeep ? 0 : m.replicas,
      files,
      atMs: this.#clock.now(),
    }));
    if (res.kind !== "kept") throw new RequestError(ErrorCode.Internal, "unexpected apply result");
    if (res.changed === null) {
      throw new RequestError(
        ErrorCode.TooLarge,
        `file_keep: ${user || "you"} would keep more than ${MAX_KEEPS_PER_USER} files ` +
          `(or the cluster more than ${MAX_KEEPS})`,
      );
    }
    return { type: MessageType.Ok, node: this.#d.node, value: res.changed };
  }

  /** file_list_request: the files the sender's user keeps. */
  async #fileList(from: Identity | null): Promise<Message> {
    await this.#readBarrier();
    const user = from?.name ?? "";
    const files = this.#d.table.files.kept(user).slice(0, 100_000);
    return {
      type: MessageType.FileList,
      node: this.#d.node,
      files: files.map((f) => ({
        id: uuidFromHex(f.id),
        size: f.size,
        replicas: f.replicas,
        refs: f.refs,
        keptAtMs: f.atMs,
        name: f.name,
      })),
    };
  }

  /**
   * file_gc: which of the storage node's files to delete. A file is deleted once nothing refers
   * to it (no live job, no keep), it has not been put for the grace (its age on the node), and
   * this leader has seen it unreferenced for the grace; the delete is committed first, so a
   * submission naming the file is either applied before it (and holds a reference: the file is
   * not deleted) or after it (and is refused). Files the cluster deleted already are answered
   * as such, so every replica goes.
   */
  async #gc(m: FileGc): Promise<FileGcReply> {
    this.#requireLeader();
    const grace = this.#d.deleteGraceMs ?? DEFAULT_DELETE_GRACE_MS;
    const term = this.#d.raft?.node.status().term ?? 0;
    if (term !== this.#orphansTerm) {
      this.#orphans.clear(); // a leader in a new term starts over
      this.#orphansTerm = term;
    }
    if (m.files.length > MAX_DELETE) {
      throw new RequestError(
        ErrorCode.TooLarge,
        `file_gc: ${m.files.length} > ${MAX_DELETE} files`,
      );
    }
    const now = this.#clock.monotonic();
    const refs = this.#d.table.files;
    const deleted: Uint8Array[] = [];
    const due: Uint8Array[] = [];
    for (const f of m.files) {
      const key = uuidToHex(f.id);
      if (refs.referenced(key)) {
        this.#orphans.delete(key);
        continue;
      }
      if (refs.isDeleted(key)) {
        deleted.push(f.id);
        continue;
      }
      if (f.ageMs < grace) continue;
      let since = this.#orphans.get(key);
      if (since === undefined) {
        if (this.#orphans.size >= MAX_ORPHANS) {
          this.#orphans.delete(this.#orphans.keys().next().value!);
        }
        this.#orphans.set(key, since = now);
      }
      if (now - since >= grace) due.push(f.id);
    }
    if (due.length > 0) {
      const res = await this.#d.consensus.propose(
        encodeCommand({ kind: "delete", files: due, atMs: this.#clock.now() }),
      );
      if (res.kind !== "deleted") {
        throw new RequestError(ErrorCode.Internal, "unexpected apply result");
      }
      const applied = new Set(res.files);
      for (const id of due) {
        const key = uuidToHex(id);
        this.#orphans.delete(key);
        if (applied.has(key)) deleted.push(id);
      }
      if (res.files.length > 0) this.#d.log.info("files deleted", { files: res.files.length });
    }
    return { type: MessageType.FileGcReply, node: this.#d.node, graceMs: grace, ids: deleted };
  }

  /** The storage membership as storage_nodes (the leader's view). */
  storageNodes(): StorageNodes {
    const dir = this.#d.storageDirectory;
    const nodes = dir.list(this.#clock.monotonic());
    return {
      type: MessageType.StorageNodes,
      node: this.#d.node,
      replicas: defaultReplicas(this.#d.replicas ?? 0, nodes),
      repairAfterMs: dir.repairAfterMs,
      nodes,
    };
  }

  /**
   * `balancer_lease`: grants, renews or refuses the primary balancer lease (lease.ts says why
   * this is safe). In a secure cluster the endpoint must carry the asker's own key name, so a
   * balancer can neither advertise another's name nor pass for another holder.
   */
  async #lease(m: BalancerLease, from: Identity | null): Promise<BalancerLeaseReply> {
    this.#requireLeader();
    const receivedAt = this.#clock.monotonic();
    const named = splitNamedEndpoint(m.endpoint);
    if (!named.endpoint.startsWith("tcp://") || new TextEncoder().encode(m.endpoint).length > 255) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `balancer_lease: endpoint ${JSON.stringify(m.endpoint)} is not [NAME@]tcp://HOST:PORT`,
      );
    }
    if (from && named.name !== from.name) {
      throw new RequestError(
        ErrorCode.Forbidden,
        `balancer_lease: endpoint ${m.endpoint} is not named for the sender's key ${from.name}`,
      );
    }
    this.#balancers.seen(m.node, m.endpoint, this.#clock.now());
    const term = this.#d.raft?.node.status().term ?? 0;
    const ask = { node: m.node, epoch: m.epoch, endpoint: m.endpoint };
    const timer = this.#leaseTimer;
    const me = uuidToHex(m.node);
    const rivalAsked = this.#balancers.recent(this.#clock.now(), timer.durationMs)
      .some((b) => uuidToHex(b.node) !== me);
    const d = timer.decide(this.#d.table.lease, ask, receivedAt, term, rivalAsked);
    let granted = false;
    if (d.kind === "renew") {
      await this.#d.consensus.readBarrier();
      granted = timer.renewed(this.#d.table.lease, m.node, d.epoch, receivedAt, term);
    } else if (d.kind === "grant") {
      let res;
      try {
        res = await this.#d.consensus.propose(encodeCommand({ kind: "lease", lease: d.lease }));
      } catch (e) {
        timer.grantDone(false, this.#clock.monotonic());
        throw e;
      }
      granted = res.kind === "leased" && res.granted;
      timer.grantDone(granted, this.#clock.monotonic());
      if (granted) {
        this.#d.log.warn("balancer lease granted", {
          epoch: d.lease.epoch,
          holder: uuidToHex(m.node),
          endpoint: m.endpoint,
          durationMs: d.lease.durationMs,
        });
        // The new primary gets every unfinished job now, not at the next period.
        this.#redispatchAll(0);
      }
    }
    const l = this.#d.table.lease;
    return {
      type: MessageType.BalancerLeaseReply,
      node: this.#d.node,
      epoch: l?.epoch ?? 0,
      holder: l?.holder ?? new Uint8Array(16),
      durationMs: l?.durationMs ?? timer.durationMs,
      granted,
      endpoint: l?.endpoint ?? "",
    };
  }

  async #submit(m: JobSubmit, from: Identity | null): Promise<Message> {
    this.#requireLeader();
    const l = this.#limits;
    const bad = (text: string) => new RequestError(ErrorCode.BadRequest, text);
    if (m.numChunks < 1) throw bad("a job needs at least 1 chunk");
    if ((m.retries ?? 0) > MAX_RETRIES) throw bad(`retries ${m.retries} exceeds ${MAX_RETRIES}`);
    if ((m.maxFailedChunks ?? 0) > m.numChunks) {
      throw bad(`max failed chunks ${m.maxFailedChunks} exceeds the job's ${m.numChunks} chunks`);
    }
    if (m.numChunks > l.maxChunks) {
      throw bad(`${m.numChunks} chunks exceeds the limit ${l.maxChunks}`);
    }
    if (m.argument.length > l.maxArgumentBytes) {
      throw new RequestError(ErrorCode.TooLarge, `argument exceeds ${l.maxArgumentBytes} bytes`);
    }
    if (m.inputFiles.length > l.maxInputs) throw bad(`more than ${l.maxInputs} input files`);
    if (m.timeLimitMs > l.maxTimeLimitMs) {
      throw bad(`time limit ${m.timeLimitMs} ms exceeds ${l.maxTimeLimitMs} ms`);
    }
    const names = new Set<string>();
    for (const f of m.inputFiles) {
      if (!/^[^/\0]+$/.test(f.name) || f.name === "." || f.name === "..") {
        throw bad(`input name ${JSON.stringify(f.name)} is not a plain file name`);
      }
      if (names.has(f.name)) throw bad(`input name ${f.name} appears twice`);
      names.add(f.name);
    }
    // The program and the input files must exist on storage and be the submitter's own (an
    // admin may use any); their sizes come from storage, not from the client.
    const owner = from?.name ?? "";
    const statOwner = from === null || from.admin ? "" : owner;
    const stat = async (id: Uint8Array, what: string): Promise<number> => {
      const key = statKey(uuidToHex(id), statOwner);
      const known = this.#stats.get(key, this.#clock.now());
      if (known !== undefined) return known;
      const st = await this.#d.storage.stat(id, statOwner)
        .catch((e) => {
          throw new RequestError(ErrorCode.Unavailable, `storage unavailable: ${e.message}`);
        });
      if (!st.exists) {
        throw new RequestError(
          ErrorCode.NotFound,
          `${what} file ${uuidToHex(id)} not found on storage${owner ? ` for ${owner}` : ""}`,
        );
      }
      this.#stats.put(key, st.length, this.#clock.now());
      return st.length;
    };
    const [programSize, inputs] = await Promise.all([
      stat(m.programId, "program"),
      Promise.all(m.inputFiles.map(async (f) => ({
        id: f.id,
        name: f.name,
        size: await stat(f.id, "input"),
      }))),
    ]);
    if (programSize === 0) throw bad("the program is empty");
    if (programSize > l.maxProgramBytes) {
      throw new RequestError(
        ErrorCode.TooLarge,
        `program of ${programSize} bytes exceeds the limit ${l.maxProgramBytes}`,
      );
    }
    const spec = specFromSubmit(
      {
        ...m,
        programSize,
        inputFiles: inputs,
        timeLimitMs: m.timeLimitMs || l.defaultTimeLimitMs,
      },
      this.#d.newJobId?.() ?? randomUuid(),
      this.#clock.now(),
      owner,
    );
    const proposal = this.#d.consensus.propose(encodeCommand({ kind: "submit", spec }));
    if (this.#d.plantedBugs?.has("ack-before-commit")) {
      proposal.catch(() => {});
      return {
        type: MessageType.JobSubmitAck,
        node: this.#d.node,
        job: spec.jobId,
        sequence: m.sequence,
        duplicate: false,
      };
    }
    const res = await proposal;
    if (res.kind !== "submitted") {
      throw new RequestError(ErrorCode.Internal, "unexpected apply result");
    }
    if (res.refused) throw new RequestError(ErrorCode.NotFound, res.refused);
    this.#d.log.info("job accepted", {
      job: uuidToHex(res.jobId),
      chunks: spec.numChunks,
      duplicate: res.duplicate,
    });
    if (!res.duplicate) this.#dispatch(res.jobId);
    return {
      type: MessageType.JobSubmitAck,
      node: this.#d.node,
      job: res.jobId,
      sequence: m.sequence,
      duplicate: res.duplicate,
    };
  }

  async #workerStatus(m: WorkerStatus, from: Identity | null): Promise<Message> {
    this.#requireLeader();
    const job = await this.#findJob(m.job);
    if (m.chunkIndex >= job.chunks.length) {
      throw new RequestError(ErrorCode.BadRequest, `chunk ${m.chunkIndex} out of range`);
    }
    // Only the worker the balancer placed this attempt on holds its ticket: another worker's
    // key (or a replayed ticket from another attempt) cannot report for it.
    if (
      from && this.#secret &&
      !checkPlacementTicket(this.#secret, from.publicKey, m.job, m.chunkIndex, m.attempt, m.ticket)
    ) {
      this.#d.log.warn("worker_status without a valid ticket", {
        worker: from.name,
        job: uuidToHex(m.job),
        chunk: m.chunkIndex,
        attempt: m.attempt,
      });
      throw new RequestError(
        ErrorCode.Forbidden,
        `chunk ${m.chunkIndex} attempt ${m.attempt} was not placed on ${from.name}`,
      );
    }
    const key = uuidToHex(m.job);
    if (m.state === ChunkState.Running) {
      let chunks = this.#running.get(key);
      if (!chunks) this.#running.set(key, chunks = new Map());
      // The worker running it (its ticket was checked above): `dsys logs` asks that worker.
      chunks.set(m.chunkIndex, m.node.slice());
      return { type: MessageType.Ok, node: this.#d.node, value: 0 };
    }
    if (m.state !== ChunkState.Succeeded && m.state !== ChunkState.Failed) {
      return { type: MessageType.Ok, node: this.#d.node, value: 0 };
    }
    const res = await this.#d.consensus.propose(
      encodeCommand({ kind: "report", status: m, atMs: this.#clock.now() }),
    );
    this.#running.get(key)?.delete(m.chunkIndex);
    if (res.kind === "reported" && res.jobDone) {
      const state = STATE_NAMES[JobTable.jobState(job)] ?? "?";
      this.#d.log.info("job finished", {
        job: key,
        state,
        failed: job.failed,
        cancelled: job.cancelled,
      });
      this.#running.delete(key);
      this.#lastDispatch.delete(key);
      // Stopped by its --max-failed-chunks: the chunks still running must go.
      if (job.cancelled > 0) this.#sendCancel(job);
    } else if (res.kind === "reported" && res.accepted) {
      // A failed attempt with retries left: dispatch it again once its backoff has passed.
      const retryAt = job.chunks[m.chunkIndex]?.retryAtMs ?? 0;
      if (retryAt > 0) {
        const wait = Math.max(0, retryAt - this.#clock.now()) + 5;
        const t = this.#clock.setTimeout(() => this.#dispatch(m.job), wait);
        // A real timer must not keep a stopping process alive (the re-dispatch covers it).
        if (this.#clock === systemClock) Deno.unrefTimer(t as number);
      }
    }
    return {
      type: MessageType.Ok,
      node: this.#d.node,
      value: res.kind === "reported" && res.accepted ? 1 : 0,
    };
  }

  /**
   * The job, or NOT_FOUND only once a read barrier confirmed it: a member that still thinks it
   * leads may have been deposed (a newer leader committed the job), or a new leader may not have
   * applied it yet, and a worker drops a result refused NOT_FOUND for good (the chunk then runs
   * again). Found by the cluster simulation: an old leader cut off from the other masters
   * answered a worker's result for a job submitted through the new leader with NOT_FOUND.
   */
  async #findJob(jobId: Uint8Array): Promise<JobRecord> {
    const job = this.#d.table.get(jobId);
    if (job) return job;
    await this.#d.consensus.readBarrier();
    const again = this.#d.table.get(jobId);
    if (!again) throw new RequestError(ErrorCode.NotFound, `job ${uuidToHex(jobId)} not found`);
    return again;
  }

  async #status(jobId: Uint8Array, from: Identity | null): Promise<JobStatusResponse> {
    const bugs = this.#d.plantedBugs;
    if (bugs?.has("status-without-barrier")) this.#requireLeader();
    else if (!bugs?.has("status-from-follower")) await this.#readBarrier();
    const job = this.#d.table.get(jobId);
    if (!job) throw new RequestError(ErrorCode.NotFound, `job ${uuidToHex(jobId)} not found`);
    if (!mayActOn(from, job.spec.owner)) {
      throw new RequestError(ErrorCode.Forbidden, `job ${uuidToHex(jobId)} is not yours`);
    }
    const running = this.#running.get(uuidToHex(jobId));
    const chunks: ChunkRecord[] = job.chunks.map((c) => {
      const worker = c.state === ChunkState.Queued ? running?.get(c.chunkIndex) : undefined;
      return worker ? { ...c, state: ChunkState.Running, worker } : c;
    });
    const nRunning = chunks.filter((c) => c.state === ChunkState.Running).length;
    return {
      type: MessageType.JobStatusResponse,
      node: this.#d.node,
      job: jobId,
      state: JobTable.jobState(job) as JobStatusResponse["state"],
      numChunks: job.chunks.length,
      done: job.done,
      failed: job.failed,
      running: nRunning,
      queued: job.chunks.length - job.done - job.failed - job.cancelled - nRunning,
      chunks,
    };
  }

  /** `dsys rm`: removes a finished job now, as the retention would later. */
  async #remove(jobId: Uint8Array, from: Identity | null): Promise<Message> {
    await this.#readBarrier();
    const key = uuidToHex(jobId);
    const job = this.#d.table.get(jobId);
    if (!job) throw new RequestError(ErrorCode.NotFound, `job ${key} not found`);
    if (!mayActOn(from, job.spec.owner)) {
      throw new RequestError(ErrorCode.Forbidden, `job ${key} is not yours`);
    }
    if (!JobTable.isFinished(job)) {
      // Removing it now would leave its chunks running for a job nobody can see.
      const finished = job.done + job.failed + job.cancelled;
      throw new RequestError(
        ErrorCode.BadRequest,
        `job ${key} is still running (${finished} of ${job.chunks.length} chunks finished); ` +
          "cancel it first (dsys cancel), or remove it once it has finished",
      );
    }
    const res = await this.#d.consensus.propose(
      encodeCommand({ kind: "remove", jobIds: [jobId] }),
    );
    // 0: the retention removed it between the check and this command: gone either way.
    const removed = res.kind === "removed" ? res.removed : 0;
    this.#d.log.info("job removed", { job: key, by: from?.name ?? "", removed });
    this.#running.delete(key);
    this.#lastDispatch.delete(key);
    return { type: MessageType.Ok, node: this.#d.node, value: removed };
  }

  /**
   * The leader removes the jobs finished more than the retention ago, in batches of at most
   * MAX_REMOVE per command, one command at a time. The leader's clock decides, against the
   * finish time the leader that committed the last result stamped into it (so a new leader
   * whose clock is behind keeps jobs a little longer, one ahead removes them a little sooner).
   */
  async #collect(): Promise<void> {
    if (this.#collecting || !this.#d.consensus.isLeader()) return;
    this.#collecting = true;
    try {
      this.#pruneSoftState();
      const retention = this.#d.retentionMs ?? DEFAULT_JOB_RETENTION_MS;
      for (;;) {
        const cutoff = this.#clock.now() - retention;
        const expired: Uint8Array[] = [];
        for (const job of this.#d.table.jobs.values()) {
          if (!JobTable.isFinished(job) || job.finishedAtMs > cutoff) continue;
          expired.push(job.spec.jobId);
          if (expired.length === MAX_REMOVE) break;
        }
        if (expired.length === 0 || !this.#d.consensus.isLeader()) return;
        const res = await this.#d.consensus.propose(
          encodeCommand({ kind: "remove", jobIds: expired }),
        );
        this.#d.log.info("finished jobs removed after the retention", {
          removed: res.kind === "removed" ? res.removed : 0,
          retentionMs: retention,
        });
        if (expired.length < MAX_REMOVE) return;
      }
    } catch (e) {
      // Lost leadership or quorum: the next leader's collector takes over.
      if (!(e instanceof RequestError && e.code === ErrorCode.NotLeader)) {
        this.#d.log.warn("removing expired jobs failed; will retry", { error: e });
      }
    } finally {
      this.#collecting = false;
    }
  }

  /** Forgets dispatch times and running marks of jobs that finished or left the table. */
  #pruneSoftState(): void {
    for (const m of [this.#lastDispatch, this.#running] as Map<string, unknown>[]) {
      for (const key of m.keys()) {
        const job = this.#d.table.jobs.get(key);
        if (!job || JobTable.isFinished(job)) m.delete(key);
      }
    }
  }

  async #readBarrier(): Promise<void> {
    this.#requireLeader();
    await this.#d.consensus.readBarrier();
  }

  async #list(from: Identity | null): Promise<Message> {
    await this.#readBarrier();
    return {
      type: MessageType.JobListResponse,
      node: this.#d.node,
      jobs: [...this.#d.table.jobs.values()].filter((j) => mayActOn(from, j.spec.owner)).map((
        j,
      ) => ({
        job: j.spec.jobId,
        state: JobTable.jobState(j) as JobStatusResponse["state"],
        numChunks: j.chunks.length,
      })),
    };
  }

  async #clusterChange(m: ClusterChange): Promise<Message> {
    const raft = this.#d.raft;
    if (!raft) {
      throw new RequestError(
        ErrorCode.BadRequest,
        "this master runs alone (no --peers): no group to change",
      );
    }
    this.#requireLeader();
    if (!MEMBER_ID_RE.test(m.member)) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `member ${m.member} is not NAME@tcp://HOST:PORT`,
      );
    }
    const voters = raft.voters();
    if (m.op === ClusterOp.AddMaster) {
      if (voters.includes(m.member)) {
        throw new RequestError(ErrorCode.Conflict, `${m.member} is already a member`);
      }
      await raft.changeMembership({ type: "add", node: m.member });
    } else if (m.op === ClusterOp.RemoveMaster) {
      if (!voters.includes(m.member)) {
        throw new RequestError(ErrorCode.NotFound, `${m.member} is not a member`);
      }
      await raft.changeMembership({ type: "remove", node: m.member });
    } else {
      if (!voters.includes(m.member)) {
        throw new RequestError(ErrorCode.NotFound, `${m.member} is not a member`);
      }
      raft.transferLeadership(m.member);
    }
    this.#d.log.info("cluster change", { op: m.op, member: m.member });
    return { type: MessageType.Ok, node: this.#d.node, value: 0 };
  }

  async #nodes(): Promise<Message> {
    const now = this.#clock.now();
    const raft = this.#d.raft;
    const masters = raft ? raft.voters() : [this.#d.endpoint];
    // The leader knows how each follower keeps up: one in "replicate" state acknowledges appends.
    const progress = raft?.isLeader() ? raft.node.status().progress : undefined;
    const nodes: NodeEntry[] = masters.map((id) => {
      const self = raft ? id === raft.id : true;
      const leader = raft ? id === raft.leaderId : this.#d.consensus.isLeader();
      const replicating = progress?.get(id)?.state === "replicate";
      return {
        id: self ? this.#d.node : new Uint8Array(16),
        role: NodeRole.Master,
        state: self || leader || replicating ? NodeState.Alive : NodeState.Suspect,
        flags: leader ? NodeFlags.Leader : 0,
        slots: 0,
        freeSlots: 0,
        lastSeenMs: self ? now : 0,
        ...(raft
          ? { endpoint: memberEndpoint(id), name: memberName(id) }
          : { endpoint: this.#d.endpoint, name: this.#selfName }),
        detail: self
          ? dashboardDetail(this.#d.dashboardUrl?.())
          : leader || replicating
          ? ""
          : "not replicating from the leader",
      };
    });
    await Promise.all([this.#balancerNodes(nodes), this.#storageNode(nodes)]);
    return { type: MessageType.NodeListResponse, node: this.#d.node, nodes };
  }

  /**
   * Every balancer (the lease holder, and those that asked this master for the lease in the last
   * 10 s) with the workers they know, each node listed once.
   */
  async #balancerNodes(nodes: NodeEntry[]): Promise<void> {
    const endpoints = this.#balancers.recent(this.#clock.now(), 10_000).map((b) => b.endpoint);
    const holder = this.#d.table.lease?.endpoint;
    if (holder && !endpoints.includes(holder)) endpoints.unshift(holder);
    const replies = await Promise.allSettled(
      endpoints.map((ep) =>
        this.#balancers.client(ep).request(
          { type: MessageType.NodeListRequest, node: this.#d.node },
          2000,
        )
      ),
    );
    const seen = new Set<string>();
    replies.forEach((r, i) => {
      if (r.status === "fulfilled" && r.value.type === MessageType.NodeListResponse) {
        for (const n of r.value.nodes) {
          const key = uuidToHex(n.id);
          if (!seen.has(key)) nodes.push(n);
          seen.add(key);
        }
        return;
      }
      const why = r.status === "rejected"
        ? (r.reason instanceof RpcError ? r.reason.text : String(r.reason))
        : `unexpected reply type ${r.value.type}`;
      nodes.push({
        id: new Uint8Array(16),
        role: NodeRole.Balancer,
        state: NodeState.Dead,
        flags: 0,
        slots: 0,
        freeSlots: 0,
        lastSeenMs: 0,
        ...named(endpoints[i]),
        detail: why,
      });
    });
  }

  /** The storage nodes: those registered with this leader, else the configured seeds. */
  async #storageNode(nodes: NodeEntry[]): Promise<void> {
    const registered = this.#d.storageDirectory.list(this.#clock.monotonic());
    if (registered.length > 0) {
      for (const e of registered) {
        const gib = (b: number) => (b / 2 ** 30).toFixed(2);
        const usage = `${gib(e.usedBytes)}/${gib(e.capacityBytes)} GiB used, ${e.files} files` +
          (e.underReplicatedFiles > 0
            ? `, ${e.underReplicatedFiles} under-replicated (${e.underReplicatedBytes} B)`
            : "");
        nodes.push({
          id: e.id,
          role: NodeRole.Storage,
          state: e.state,
          flags: 0,
          slots: 0,
          freeSlots: 0,
          lastSeenMs: e.lastSeenMs,
          ...named(e.endpoint),
          detail: e.detail ? `${e.detail}; ${usage}` : usage,
        });
      }
      return;
    }
    for (const ep of this.#storageSeeds) await this.#seedNode(ep, nodes);
  }

  /** Storage endpoints given with `--storage` (used while none has registered). */
  get #storageSeeds(): string[] {
    return this.#d.storageSeeds ?? [];
  }

  async #seedNode(endpoint: string, nodes: NodeEntry[]): Promise<void> {
    const c = this.#d.storage.client(endpoint);
    let entry: NodeEntry;
    try {
      const r = await c.stats();
      entry = {
        id: r.node,
        role: NodeRole.Storage,
        state: NodeState.Alive,
        flags: 0,
        slots: 0,
        freeSlots: 0,
        lastSeenMs: this.#clock.now(),
        ...named(c.endpoint),
        detail: "",
      };
    } catch (e) {
      entry = {
        id: new Uint8Array(16),
        role: NodeRole.Storage,
        state: NodeState.Dead,
        flags: 0,
        slots: 0,
        freeSlots: 0,
        lastSeenMs: 0,
        ...named(c.endpoint),
        detail: e instanceof Error ? e.message : String(e),
      };
    }
    nodes.push(entry);
  }

  #redispatchAll(minAgeMs: number): void {
    if (!this.#d.consensus.isLeader()) return;
    const now = this.#clock.now();
    // The table's keys are the hex job ids already: no conversion per job per pass (the table
    // holds every unfinished job, tens of thousands under load, and this runs every second).
    for (const [key, job] of this.#d.table.jobs) {
      const due = now - (this.#lastDispatch.get(key) ?? 0) >= minAgeMs;
      // Cancels are re-sent for a while too: a balancer that failed over, or a new leader's
      // dispatch of a cancel it had not applied yet, must not leave a cancelled chunk running.
      if (job.cancelledAtMs > 0 && now - job.cancelledAtMs < CANCEL_RESEND_MS && due) {
        this.#sendCancel(job);
      }
      if (JobTable.isFinished(job)) continue;
      if (due) this.#dispatchJob(job);
    }
  }

  /** Tells the primary balancer (best effort; re-sent) which chunks of `job` are cancelled. */
  #sendCancel(job: JobRecord): void {
    const lease = this.#d.table.lease;
    if (!lease) return;
    const chunks = job.chunks.filter((c) => c.state === ChunkState.Cancelled)
      .map((c) => ({ chunkIndex: c.chunkIndex }));
    if (chunks.length === 0) return;
    const key = uuidToHex(job.spec.jobId);
    this.#lastDispatch.set(key, this.#clock.now());
    this.#balancers.client(lease.endpoint).request({
      type: MessageType.JobCancel,
      node: this.#d.node,
      job: job.spec.jobId,
      // All of them: an empty list (every chunk) is shorter when the whole job was cancelled.
      chunks: chunks.length === job.chunks.length ? [] : chunks,
    }).catch((e) => this.#d.log.warn("cancel not delivered; will retry", { job: key, error: e }));
  }

  /** `job_cancel` from a client: commits the cancel, then has the chunks stopped. */
  async #cancel(m: JobCancel, from: Identity | null): Promise<Message> {
    this.#requireLeader();
    const key = uuidToHex(m.job);
    const job = await this.#findJob(m.job);
    if (!mayActOn(from, job.spec.owner)) {
      throw new RequestError(ErrorCode.Forbidden, `job ${key} is not yours`);
    }
    const bad = m.chunks.find((c) => c.chunkIndex >= job.chunks.length);
    if (bad) {
      throw new RequestError(
        ErrorCode.BadRequest,
        `chunk ${bad.chunkIndex} out of range (job ${key} has ${job.chunks.length})`,
      );
    }
    const res = await this.#d.consensus.propose(encodeCommand({
      kind: "cancel",
      jobId: m.job,
      chunks: m.chunks.map((c) => c.chunkIndex),
      reason: `cancelled by ${from?.name || "a client"}`,
      atMs: this.#clock.now(),
    }));
    const n = res.kind === "cancelled" ? res.cancelled : 0;
    this.#d.log.info("job cancelled", { job: key, by: from?.name ?? "", chunks: n });
    const now = this.#d.table.get(m.job);
    if (now) this.#sendCancel(now);
    if (res.kind === "cancelled" && res.jobDone) this.#running.delete(key);
    return { type: MessageType.Ok, node: this.#d.node, value: n };
  }

  #dispatch(jobId: Uint8Array): void {
    const job = this.#d.table.get(jobId);
    if (job) this.#dispatchJob(job);
  }

  #dispatchJob(job: JobRecord): void {
    const chunks = JobTable.dispatchable(job, this.#clock.now());
    // No lease yet: no primary to hand it to; the grant re-dispatches everything.
    const lease = this.#d.table.lease;
    if (chunks.length === 0 || !lease) return;
    const key = uuidToHex(job.spec.jobId);
    this.#lastDispatch.set(key, this.#clock.now());
    const s = job.spec;
    this.#balancers.client(lease.endpoint).request({
      type: MessageType.JobDispatch,
      node: this.#d.node,
      job: s.jobId,
      numChunks: s.numChunks,
      timeLimitMs: s.timeLimitMs,
      programId: s.programId,
      programSize: s.programSize,
      argument: s.argument,
      inputFiles: s.inputs,
      chunks,
      owner: s.owner,
      ...s.limits,
    }).catch((e) => {
      // The periodic re-dispatch retries; the balancer ignores chunks it already has.
      this.#d.log.warn("dispatch failed", { job: key, error: e });
      this.#lastDispatch.set(key, 0);
    });
  }
}
