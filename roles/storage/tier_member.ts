/**
 * A storage node's membership of the storage tier: the heartbeat to the masters' leader (every
 * second, with capacity and counters; the reply is the membership), the repair loop run on
 * that membership, and the scrub. The node's disk space is read with `df` every 10 s: below
 * the reserve the node is `full` and takes no new files (placement skips it); it keeps serving
 * and keeps the replicas it holds.
 * @module
 */
import { MessageType, StorageFlags, type StorageNodes } from "../../wire/mod.ts";
import type { Credentials } from "../../lib/security.ts";
import type { Logger } from "../../lib/log.ts";
import { LeaderClient } from "../master/client.ts";
import { RpcClient } from "../../lib/rpc.ts";
import { StorageClient } from "./client.ts";
import type { FileStore } from "./store.ts";
import { ReplicaKeeper } from "./repair.ts";
import { DEFAULT_SCRUB_BYTES_PER_S, Scrubber } from "./scrub.ts";
import { members } from "./placement.ts";
import type { StorageView } from "./membership.ts";
import { uuidFromHex, uuidToHex } from "../../wire/mod.ts";

/** Interval of storage_heartbeat, ms. */
export const STORAGE_HEARTBEAT_MS = 1000;
/** Default interval of repair scans, ms. */
export const DEFAULT_REPAIR_EVERY_MS = 10_000;
/** Default free-space reserve, bytes: below it the node takes no new files. */
export const DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024;
const DISK_EVERY_MS = 10_000;
/** Default interval of collection rounds (file_gc), ms. */
export const DEFAULT_GC_EVERY_MS = 30_000;
/** Files offered per file_gc request. */
const GC_BATCH = 4096;
/** How long a failed write (full disk, I/O error) keeps the node from taking new files, ms. */
const DISK_ERROR_MEMORY_MS = 60_000;
/** Timeout of a repair probe (file_stat) to another storage node, ms. */
const PROBE_TIMEOUT_MS = 3000;

/** Options of a StorageTierMember. */
export interface StorageTierMemberOptions {
  store: FileStore;
  node: Uint8Array;
  masters: string[];
  /** `[NAME@]tcp://HOST:PORT` others reach this node at. */
  advertised: string;
  log: Logger;
  auth: Credentials | null;
  repairEveryMs?: number;
  scrubBytesPerS?: number;
  capacityBytes?: number;
  reserveBytes?: number;
  /** How often files are offered for collection, ms (default DEFAULT_GC_EVERY_MS). */
  gcEveryMs?: number;
}

/** Heartbeats, repair and scrub of one storage node. */
export class StorageTierMember {
  readonly repair: ReplicaKeeper;
  readonly scrub: Scrubber | null;
  #o: StorageTierMemberOptions;
  #leader: LeaderClient;
  #peers = new Map<string, StorageClient>();
  #masterClients = new Map<string, RpcClient>();
  #view: StorageView | null = null;
  #disk: { size: number; avail: number } | null = null;
  #timers: ReturnType<typeof setInterval>[] = [];
  #beating = false;
  #collecting: Promise<void> | null = null;
  /** Replicas deleted because the cluster deleted their file, since start. */
  collected = 0;
  #stopped = false;

  constructor(opts: StorageTierMemberOptions) {
    this.#o = opts;
    this.#leader = new LeaderClient(opts.masters, {
      node: opts.node,
      attemptTimeoutMs: 2000,
      deadlineMs: 3000,
      auth: opts.auth,
    });
    this.repair = new ReplicaKeeper({
      store: opts.store,
      self: uuidToHex(opts.node),
      view: () => this.#view,
      client: (ep) => this.#peer(ep, "copy"),
      probe: (ep) => this.#peer(ep, "probe"),
      log: opts.log,
    });
    const rate = opts.scrubBytesPerS ?? DEFAULT_SCRUB_BYTES_PER_S;
    this.scrub = rate > 0 ? new Scrubber(opts.store, rate, opts.log) : null;
  }

  /** Clients of every master this node was started with except the current leader. */
  #followers(): RpcClient[] {
    const leader = this.#leader.leader;
    return this.#o.masters.filter((m) => m !== leader).map((m) => {
      let c = this.#masterClients.get(m);
      if (!c) {
        c = new RpcClient(m, {
          node: this.#o.node,
          timeoutMs: 1000,
          serverRole: "master",
          auth: this.#o.auth,
        });
        this.#masterClients.set(m, c);
      }
      return c;
    });
  }

  #peer(endpoint: string, kind: "copy" | "probe"): StorageClient {
    const key = `${kind} ${endpoint}`;
    let c = this.#peers.get(key);
    if (!c) {
      c = new StorageClient(endpoint, this.#o.node, {
        timeoutMs: kind === "probe" ? PROBE_TIMEOUT_MS : 30_000,
        retries: kind === "probe" ? 0 : 2,
        auth: this.#o.auth,
      });
      this.#peers.set(key, c);
    }
    return c;
  }

  /** Starts the loops. */
  start(): void {
    const every = (ms: number, f: () => void) => {
      const t = setInterval(f, ms);
      this.#timers.push(t);
    };
    // The first heartbeat carries the disk's size.
    this.#readDisk().finally(() => this.#beat());
    every(STORAGE_HEARTBEAT_MS, () => this.#beat());
    every(DISK_EVERY_MS, () => this.#readDisk());
    every(this.#o.repairEveryMs ?? DEFAULT_REPAIR_EVERY_MS, () => {
      this.repair.scan().catch((e) => this.#o.log.warn("repair scan failed", { error: e }));
    });
    every(this.#o.gcEveryMs ?? DEFAULT_GC_EVERY_MS, () => {
      this.#collecting ??= this.#collect()
        .catch((e) => this.#o.log.debug("collection round failed", { error: e }))
        .finally(() => (this.#collecting = null));
    });
    this.scrub?.start();
  }

  /**
   * The node's flags: full when its free space is below the reserve, its capacity is used, or a
   * write failed for a full disk in the last minute; failing when a write failed with another
   * I/O error in the last minute. Either way placement sends it no new files.
   */
  #flags(): { flags: number; detail: string } {
    const reserve = this.#o.reserveBytes ?? DEFAULT_RESERVE_BYTES;
    const used = this.#o.store.storedBytes;
    const now = Date.now();
    const errors = this.#o.store.diskErrors;
    if (now - errors.ioErrorAtMs < DISK_ERROR_MEMORY_MS) {
      return { flags: StorageFlags.Failing, detail: `disk failing: ${errors.ioError}` };
    }
    if (this.#o.capacityBytes !== undefined && used >= this.#o.capacityBytes) {
      return { flags: StorageFlags.Full, detail: `capacity ${this.#o.capacityBytes} B used` };
    }
    if (now - errors.noSpaceAtMs < DISK_ERROR_MEMORY_MS) {
      return { flags: StorageFlags.Full, detail: "disk full: a write failed with no space left" };
    }
    if (this.#disk && this.#disk.avail < reserve) {
      return {
        flags: StorageFlags.Full,
        detail: `disk full: ${this.#disk.avail} B free, reserve ${reserve} B`,
      };
    }
    return { flags: 0, detail: "" };
  }

  async #beat(): Promise<void> {
    if (this.#beating || this.#stopped) return;
    this.#beating = true;
    try {
      const { flags, detail } = this.#flags();
      const beat = {
        type: MessageType.StorageHeartbeat,
        node: this.#o.node,
        flags,
        capacityBytes: this.#o.capacityBytes ?? this.#disk?.size ?? 0,
        usedBytes: this.#o.store.storedBytes,
        files: this.#o.store.files,
        underReplicatedFiles: this.repair.stats.underReplicatedFiles,
        underReplicatedBytes: this.repair.stats.underReplicatedBytes,
        endpoint: this.#o.advertised,
        detail,
      } as const;
      // The other masters hear it too (they answer NOT_LEADER): whichever is elected next knows
      // every storage node at once instead of after a heartbeat (a leader failover does not
      // leave submissions waiting for storage nodes to find it).
      for (const c of this.#followers()) c.request(beat, 1000).catch(() => {});
      const r = await this.#leader.request(beat);
      if (r.type === MessageType.StorageNodes) this.#apply(r);
    } catch (e) {
      if (!this.#stopped) this.#o.log.debug("storage heartbeat failed", { error: e });
    } finally {
      this.#beating = false;
    }
  }

  #apply(r: StorageNodes): void {
    this.#view = { replicas: r.replicas, members: members(r.nodes) };
    // Peers that left the membership: their sockets go (bounded by the membership).
    const live = new Set(r.nodes.map((n) => n.endpoint));
    for (const [key, c] of this.#peers) {
      if (!live.has(key.slice(key.indexOf(" ") + 1))) {
        this.#peers.delete(key);
        c.close().catch(() => {});
      }
    }
  }

  async #readDisk(): Promise<void> {
    try {
      const out = await new Deno.Command("df", {
        args: ["-B1", "--output=size,avail", this.#o.store.dir],
        stdout: "piped",
        stderr: "null",
      }).output();
      const line = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
      const [size, avail] = line.trim().split(/\s+/).map(Number);
      if (Number.isSafeInteger(size) && Number.isSafeInteger(avail)) this.#disk = { size, avail };
    } catch (e) {
      this.#o.log.debug("df failed", { error: e });
    }
  }

  /**
   * One collection round: offers every file held (in batches, with its age) to the leader and
   * deletes those it answers the cluster deleted, unless put again within the grace.
   */
  async #collect(): Promise<void> {
    const files = this.#o.store.list();
    for (let i = 0; i < files.length && !this.#stopped; i += GC_BATCH) {
      const batch = files.slice(i, i + GC_BATCH).map((f) => ({
        id: uuidFromHex(f.hex),
        ageMs: Math.max(0, this.#o.store.ageMs(f.hex)),
      }));
      const r = await this.#leader.request({
        type: MessageType.FileGc,
        node: this.#o.node,
        files: batch,
      });
      if (r.type !== MessageType.FileGcReply) continue;
      for (const id of r.ids) {
        if (this.#o.store.removeIfIdle(uuidToHex(id), r.graceMs)) this.collected++;
      }
    }
  }

  /** Stops the loops and closes the sockets. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    await this.#collecting;
    await Promise.all([this.repair.stop(), this.scrub?.stop()]);
    await this.#leader.close();
    await Promise.all([...this.#masterClients.values()].map((c) => c.close().catch(() => {})));
    await Promise.all([...this.#peers.values()].map((c) => c.close().catch(() => {})));
  }
}
