/**
 * The storage node's repair loop: every scan, for each file it holds, it finds which other
 * nodes hold the file (file_stat to every node that is not dead) and acts on placement.ts's
 * `planReplicas`: the first holder in the file's order copies it to the targets that lack it
 * (with its owners and replica count); a surplus copy (this node is no target and every target
 * holds the file) is deleted. A node that dies is thus replaced by the next one in each of its
 * files' orders once the masters declare it dead (`--repair-after`); a wiped or corrupt replica
 * reads as absent and is refilled the same way.
 *
 * Safe by construction: a copy is only ever added; a replica is only deleted once R other
 * targets were seen holding the file in this very scan (their answers are of verified,
 * committed files). A file whose holders could not all be asked (a suspect node did not
 * answer) is left alone until a later scan.
 *
 * Bounded: one scan at a time, at most `concurrency` files in flight, copies streamed from disk.
 * @module
 */
import { NodeState, uuidFromHex } from "../../wire/mod.ts";
import type { Logger } from "../../lib/log.ts";
import type { FileStore } from "./store.ts";
import type { StorageClient } from "./client.ts";
import { type Member, planReplicas } from "./placement.ts";
import type { StorageView } from "./membership.ts";
import { OWNER_NAME } from "./owners.ts";

/** Longest owners list carried with a copy, bytes (the wire's text limit, with room). */
const MAX_OWNERS_TEXT = 60 * 1024;

/** What the last scan found. */
export interface RepairStats {
  /** Files held here with fewer healthy replicas than they should have. */
  underReplicatedFiles: number;
  underReplicatedBytes: number;
  /** Copies made and surplus replicas deleted, since start. */
  copies: number;
  copiedBytes: number;
  dropped: number;
  scans: number;
}

/** Options of a ReplicaKeeper. */
export interface ReplicaKeeperOptions {
  store: FileStore;
  /** This node's id, hex. */
  self: string;
  /** The membership last received from the masters (null: none yet, nothing is done). */
  view: () => StorageView | null;
  /** Client of another storage node for copies (long timeouts: a copy waits for fsyncs). */
  client: (endpoint: string) => StorageClient;
  /** Client of another storage node for file_stat probes (short timeout, no retries). */
  probe: (endpoint: string) => StorageClient;
  log: Logger;
  /** Files handled at once (default 4). */
  concurrency?: number;
}

/** Keeps this node's files at their replica count. */
export class ReplicaKeeper {
  readonly stats: RepairStats = {
    underReplicatedFiles: 0,
    underReplicatedBytes: 0,
    copies: 0,
    copiedBytes: 0,
    dropped: 0,
    scans: 0,
  };
  #o: ReplicaKeeperOptions;
  #running: Promise<void> | null = null;
  #stopped = false;

  constructor(opts: ReplicaKeeperOptions) {
    this.#o = opts;
  }

  /** Runs one scan (or joins the one running). */
  scan(): Promise<void> {
    this.#running ??= this.#scan().finally(() => (this.#running = null));
    return this.#running;
  }

  async #scan(): Promise<void> {
    const view = this.#o.view();
    if (!view || this.#stopped) return;
    const peers = view.members.filter((m) => m.hex !== this.#o.self && m.state !== NodeState.Dead);
    const files = this.#o.store.list();
    // Peers that did not answer a probe in this scan: not asked again until the next scan (the
    // files they might hold are left alone meanwhile), so one silent node costs one timeout.
    const silent = new Set<string>();
    let short = 0, shortBytes = 0, next = 0;
    const worker = async () => {
      while (next < files.length && !this.#stopped) {
        const f = files[next++];
        try {
          const healthy = await this.#one(f.hex, f.size, view, peers, silent);
          if (healthy) continue;
        } catch (e) {
          this.#o.log.warn("repair of a file failed", { file: f.hex, error: e });
        }
        short++;
        shortBytes += f.size;
      }
    };
    await Promise.all(Array.from({ length: this.#o.concurrency ?? 4 }, worker));
    this.stats.underReplicatedFiles = short;
    this.stats.underReplicatedBytes = shortBytes;
    this.stats.scans++;
  }

  /** Handles one file; true when it is at its replica count (after any copy made now). */
  async #one(
    hex: string,
    size: number,
    view: StorageView,
    peers: Member[],
    silent: Set<string>,
  ): Promise<boolean> {
    const store = this.#o.store;
    if (!store.has(hex)) return true; // removed meanwhile
    // A holder may be among the nodes not answering: nothing is decided without them.
    if (peers.some((p) => silent.has(p.hex))) return false;
    const replicas = store.replicasOf(hex) || view.replicas;
    const id = uuidFromHex(hex);
    const answers = await Promise.allSettled(
      peers.map((p) => this.#o.probe(p.endpoint).stat(id)),
    );
    const holds = new Set<string>();
    let answered = true;
    for (let i = 0; i < peers.length; i++) {
      const a = answers[i];
      if (a.status === "rejected") {
        silent.add(peers[i].hex);
        answered = false;
      } else if (a.value.exists && a.value.length === size) holds.add(peers[i].hex);
    }
    if (!answered) return false;
    const plan = planReplicas(hex, this.#o.self, peers, holds, replicas);
    let healthy = plan.healthy;
    for (const target of plan.copyTo) {
      const m = peers.find((p) => p.hex === target)!;
      await this.#copy(hex, size, replicas, m);
      healthy++;
    }
    if (plan.dropLocal) {
      if (await store.remove(hex, "surplus replica")) this.stats.dropped++;
    }
    return healthy >= Math.min(replicas, plan.targets.length) &&
      plan.targets.length >= replicas;
  }

  /** Streams the local copy of `hex` to `to`, with its owners and replica count. */
  async #copy(hex: string, size: number, replicas: number, to: Member): Promise<void> {
    const store = this.#o.store;
    let owners = "";
    for (const name of store.ownersOfHex(hex)) {
      if (!OWNER_NAME.test(name)) continue;
      if (owners.length + name.length + 1 > MAX_OWNERS_TEXT) break;
      owners += owners ? `\n${name}` : name;
    }
    const f = await Deno.open(store.pathOf(hex), { read: true });
    try {
      await this.#o.client(to.endpoint).upload(uuidFromHex(hex), size, async (off, n) => {
        const b = new Uint8Array(n);
        await f.seek(off, Deno.SeekMode.Start);
        let got = 0;
        while (got < n) {
          const k = await f.read(b.subarray(got));
          if (k === null) throw new Error(`file ${hex} shrank while being copied`);
          got += k;
        }
        return b;
      }, { ...(owners ? { owner: owners } : {}), replicas });
    } finally {
      f.close();
    }
    this.stats.copies++;
    this.stats.copiedBytes += size;
    this.#o.log.info("replica copied", { file: hex, size, to: to.endpoint });
  }

  /** Stops after the file in hand; resolves when the running scan is over. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running?.catch(() => {});
  }
}
