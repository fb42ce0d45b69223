/**
 * Storage role: serves the content-addressed file store (store.ts) on one ROUTER.
 * Requests: file_put, file_request, file_stat, storage_stats_request; anything else is
 * answered WRONG_ROLE.
 *
 * With `--masters`, the node is a member of the storage tier: it heartbeats the masters'
 * leader every second (storage_heartbeat, with its capacity and counters) and gets back the
 * membership, on which its repair loop (repair.ts) keeps each of its files at its replica
 * count; the scrub (scrub.ts) re-verifies every replica at `--scrub-rate`. Without masters it
 * serves alone (tests, a one-node setup).
 *
 * Who may read what (docs/architecture.md, "Trust boundaries"), by the sender's key:
 * - a client reads a file only if it is an admin or one of the file's owners (owners.ts): the
 *   users who uploaded it and those whose jobs output it; file_stat shows it only files it may
 *   read (anything else looks absent, so it uploads it in full and thereby becomes an owner);
 * - a worker reads a file only with a read capability (lib/capability.ts) for its own key and
 *   that file, before its expiry: it got one with each chunk that uses the file;
 * - a master's file_stat with a user answers for that user; a master reads a file only with a
 *   read capability for its own key (it holds the cluster secret: the dashboard's output links);
 *   storage nodes read anything;
 * - FORBIDDEN does not say whether the file exists.
 * A file_put, once its bytes are verified, makes an owner of the client that sent it, or of the
 * job owner a worker names (`owner`); storage nodes' puts make none. Without keys (insecure
 * mode) everything is allowed and the `owner` field is still recorded.
 * @module
 */
import { parseArgs } from "node:util";
import {
  SECURITY_FLAGS,
  type SecurityOptions,
  securityOptions,
  setUpNodeSecurity,
} from "../../lib/node_security.ts";
import {
  ErrorCode,
  type FilePut,
  type FileRequest,
  type FileStat,
  type Message,
  MessageType,
  uuidToHex,
  uuidToString,
} from "../../wire/mod.ts";
import { RequestError, RpcServer } from "../../lib/rpc.ts";
import type { Credentials, Identity } from "../../lib/security.ts";
import { checkReadCapability } from "../../lib/capability.ts";
import { createLogger, type Logger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { FileStore, type PutFrom } from "./store.ts";
import { OWNER_NAME } from "./owners.ts";
import type { Registry } from "../../lib/metrics.ts";
import { instrumentStorage, instrumentTier } from "./metrics.ts";
import { StorageTierMember } from "./tier_member.ts";
import { parseDuration } from "../../lib/duration.ts";
import { joinNamedEndpoint, splitNamedEndpoint } from "../../lib/named_endpoint.ts";

/** Options of a storage node. */
export interface StorageOptions {
  /** ZeroMQ endpoint to bind, e.g. `tcp://127.0.0.1:0`. */
  listen: string;
  /** Data directory (node id, files, uploads in progress). */
  data: string;
  /** Largest file_response payload, bytes (default 4 MiB). */
  maxReadBytes?: number;
  /** Upload bytes held in memory before chunks are refused UNAVAILABLE (default 256 MiB). */
  maxQueuedBytes?: number;
  /** Logger; by default JSON lines on stderr. */
  log?: Logger;
  /** Keys (`--key`, `--keyring`) or `--insecure`. */
  security?: SecurityOptions;
  /** Where this node's series are declared (`--metrics-listen`; roles/run.ts serves them). */
  metrics?: Registry;
  /** Masters to register with (`--masters NAME@EP,…`); none: a standalone node. */
  masters?: string[];
  /** Endpoint advertised to the masters (default: the bound one, named for this key). */
  advertise?: string;
  /** How often the repair loop scans, ms (default 10 s). */
  repairEveryMs?: number;
  /** Bytes per second the scrub re-reads (default 16 MiB/s; 0 = no scrub). */
  scrubBytesPerS?: number;
  /** Bytes this node may hold (default: its disk's size). */
  capacityBytes?: number;
  /** Free disk below which the node takes no new files, bytes (default 64 MiB). */
  reserveBytes?: number;
  /** How often the node offers its files for collection, ms (default 30 s). */
  gcEveryMs?: number;
}

/** A running storage node. */
export interface StorageNode {
  /** The bound endpoint (actual port when 0 / `*` was asked for). */
  endpoint: string;
  nodeId: Uint8Array;
  store: FileStore;
  /** Stops serving and closes the store. */
  close(): Promise<void>;
}

/** Raised for bad command-line arguments of the storage role. */
export class StorageArgsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageArgsError";
  }
}

/**
 * Parses `--listen EP --data DIR [--masters NAME@EP,…] [--advertise EP] [--repair-every D]
 * [--scrub-rate BYTES/S] [--capacity BYTES] [--reserve BYTES] [--max-read-bytes N]
 * [--max-queued-bytes N]`.
 */
export function parseStorageArgs(args: string[]): StorageOptions {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "tcp://127.0.0.1:0" },
      data: { type: "string" },
      "max-read-bytes": { type: "string" },
      "max-queued-bytes": { type: "string" },
      masters: { type: "string" },
      advertise: { type: "string" },
      "repair-every": { type: "string" },
      "gc-every": { type: "string" },
      "scrub-rate": { type: "string" },
      capacity: { type: "string" },
      reserve: { type: "string" },
      role: { type: "string" },
      ...SECURITY_FLAGS,
    },
    strict: true,
  });
  if (!values.data) throw new StorageArgsError("storage: --data DIR is required");
  const opts: StorageOptions = {
    listen: values.listen!,
    data: values.data,
    security: securityOptions(values),
  };
  const size = (
    flag: "max-read-bytes" | "max-queued-bytes" | "scrub-rate" | "capacity" | "reserve",
    min = 1,
  ): number | undefined => {
    const v = values[flag];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new StorageArgsError(`storage: bad --${flag} ${v}: want a byte count >= ${min}`);
    }
    return n;
  };
  opts.maxReadBytes = size("max-read-bytes");
  opts.maxQueuedBytes = size("max-queued-bytes");
  opts.scrubBytesPerS = size("scrub-rate", 0);
  opts.capacityBytes = size("capacity");
  opts.reserveBytes = size("reserve", 0);
  if (values.masters !== undefined) {
    opts.masters = values.masters.split(",").map((m) => m.trim()).filter((m) => m);
    if (opts.masters.length === 0) throw new StorageArgsError("storage: --masters is empty");
  }
  if (values.advertise !== undefined) opts.advertise = values.advertise;
  for (const flag of ["repair-every", "gc-every"] as const) {
    const v = values[flag];
    if (v === undefined) continue;
    let ms: number;
    try {
      ms = parseDuration(v);
    } catch (e) {
      throw new StorageArgsError(`storage: bad --${flag}: ${(e as Error).message}`);
    }
    if (ms < 100) throw new StorageArgsError(`storage: --${flag} ${v} is under 100ms`);
    if (flag === "repair-every") opts.repairEveryMs = ms;
    else opts.gcEveryMs = ms;
  }
  return opts;
}

/** Starts a storage node: opens the store in `opts.data`, binds `opts.listen`. */
export async function runStorage(opts: StorageOptions): Promise<StorageNode> {
  await Deno.mkdir(opts.data, { recursive: true });
  const nodeId = await loadOrCreateNodeId(opts.data);
  const nodeName = uuidToString(nodeId);
  const log = opts.log ?? createLogger("storage", nodeName);
  const creds = setUpNodeSecurity("storage", opts.security ?? {}, opts.listen, log);
  const store = await FileStore.open({
    dir: opts.data,
    node: nodeId,
    nodeName,
    log,
    maxReadBytes: opts.maxReadBytes,
    maxQueuedBytes: opts.maxQueuedBytes,
  });
  const access = new Access(store, creds);
  const handler = (
    msg: Message,
    _peer: Uint8Array,
    from: Identity | null,
  ): Promise<Message> | Message => {
    switch (msg.type) {
      case MessageType.FilePut:
        return access.put(msg, from);
      case MessageType.FileRequest:
        return access.get(msg, from);
      case MessageType.FileStat:
        return access.stat(msg, from);
      case MessageType.StorageStatsRequest:
        // Admin clients and masters only (rpc.ts refuses other senders, wire `senders`).
        return store.stats();
      default:
        throw new RequestError(
          ErrorCode.WrongRole,
          `message type ${msg.type} is not served by storage node ${nodeName}`,
        );
    }
  };
  const server = new RpcServer({
    node: nodeId,
    log,
    handler: opts.metrics ? instrumentStorage(opts.metrics, store, handler) : handler,
    auth: creds,
  });
  let endpoint: string;
  try {
    endpoint = server.bind(opts.listen);
  } catch (e) {
    await server.close();
    await store.close();
    throw e;
  }
  log.info("storage listening", { endpoint, data: opts.data });
  let member: StorageTierMember | null = null;
  if (opts.masters?.length) {
    const advertised = opts.advertise ?? joinNamedEndpoint(creds?.self.name, endpoint);
    if (creds && splitNamedEndpoint(advertised).name !== creds.self.name) {
      await server.close();
      await store.close();
      throw new StorageArgsError(
        `storage: --advertise ${advertised} must be named ${creds.self.name}@ (this key)`,
      );
    }
    member = new StorageTierMember({
      store,
      node: nodeId,
      masters: opts.masters,
      advertised,
      log,
      auth: creds,
      repairEveryMs: opts.repairEveryMs,
      scrubBytesPerS: opts.scrubBytesPerS,
      capacityBytes: opts.capacityBytes,
      reserveBytes: opts.reserveBytes,
      gcEveryMs: opts.gcEveryMs,
    });
    if (opts.metrics) instrumentTier(opts.metrics, member);
    member.start();
  }
  let closing: Promise<void> | null = null;
  return {
    endpoint,
    nodeId,
    store,
    close: () =>
      closing ??= (async () => {
        await member?.stop();
        await server.close();
        await store.close();
      })(),
  };
}

/** The storage node's access rules (module doc); `from` null = insecure mode, all allowed. */
class Access {
  readonly #store: FileStore;
  readonly #secret: Uint8Array | null;

  constructor(store: FileStore, creds: Credentials | null) {
    this.#store = store;
    // setUpNodeSecurity refuses a storage key without the cluster secret.
    this.#secret = creds?.clusterSecret ?? null;
  }

  /**
   * file_put: stored, and once committed, the replica count it asks for recorded and (from a
   * storage node copying a replica) the owners it carries added, all before the ack.
   */
  async put(m: FilePut, from: Identity | null): Promise<Message> {
    const hex = uuidToHex(m.file);
    if (this.#store.wasDeleted(hex)) {
      if (from?.role === "storage" || (from === null && m.owner?.includes("\n"))) {
        // A repair copy of a file the cluster deleted: the sender's replica is going too.
        throw new RequestError(
          ErrorCode.Conflict,
          `file ${hex} was deleted by the cluster: no copy is taken from another storage node`,
        );
      }
      this.#store.forgetDeleted(hex); // stored again by a client or a worker: live
    }
    const ack = await this.#store.put(m, this.putFrom(m, from));
    if (!ack.committed) return ack;
    if (m.replicas) await this.#store.setReplicas(hex, m.replicas);
    if (from?.role === "storage" && m.owner) {
      const names = m.owner.split("\n").filter((n) => OWNER_NAME.test(n));
      await this.#store.addOwners(hex, names);
    }
    return ack;
  }

  /** Whom a verified put makes an owner, and who the uploader is. */
  putFrom(m: FilePut, from: Identity | null): PutFrom {
    let owner: string | null;
    if (from === null) {
      // Insecure mode: a storage node's copy carries a list; anyone else names one owner.
      owner = m.owner && !m.owner.includes("\n") ? m.owner : null;
    } else if (from.role === "worker") owner = m.owner ? m.owner : null;
    else if (from.role === "client") owner = from.name;
    else owner = null; // storage nodes copying files: their owners list is added on commit
    if (owner !== null && !OWNER_NAME.test(owner)) {
      // Checked before any byte is taken: a bad name would only fail the put at its end.
      throw new RequestError(
        ErrorCode.BadRequest,
        `file ${uuidToHex(m.file)}: owner "${owner.slice(0, 80)}" is not a keyring name`,
      );
    }
    return { owner, uploader: from?.publicKey };
  }

  /** file_request: served if `from` may read the file, else FORBIDDEN. */
  async get(m: FileRequest, from: Identity | null): Promise<Message> {
    if (!await this.#mayRead(m, from)) {
      throw new RequestError(
        ErrorCode.Forbidden,
        `${from!.role} ${from!.name} may not read file ${uuidToHex(m.file)}` +
          (from!.role === "worker" ? " (no valid read capability)" : ""),
      );
    }
    return await this.#store.get(m);
  }

  async #mayRead(m: FileRequest, from: Identity | null): Promise<boolean> {
    if (from === null) return true;
    switch (from.role) {
      case "client":
        return from.admin || await this.#store.isOwner(m.file, from.name);
      case "worker":
      case "master": // its dashboard's output links, with a capability it minted for itself
        return this.#secret !== null &&
          checkReadCapability(
            this.#secret,
            from.publicKey,
            m.file,
            m.capExpiryMs ?? 0,
            m.cap,
            Date.now(),
          );
      case "storage":
        return true;
      default:
        return false; // balancers do not read files (rpc.ts refuses them anyway)
    }
  }

  /** file_stat: what `from` may know of the file. */
  stat(m: FileStat, from: Identity | null): Promise<Message> | Message {
    if (from === null) return this.#store.stat(m.file);
    switch (from.role) {
      case "client":
        return this.#store.statFor(m.file, from.admin ? null : from.name);
      case "master":
        return this.#store.statFor(m.file, m.user ? m.user : null);
      default:
        return this.#store.stat(m.file);
    }
  }
}
