/**
 * A real master in the simulation: the production `RaftGroup` on the production `FileStorage`
 * (over tests/sim/world/sim_fs.ts, a simulated disk that loses, tears or garbles what was not
 * synced when the node crashes, and fails syncs when told to), the production
 * `JobTable` and `MasterService` joined by roles/master/wiring.ts as roles/master/main.ts joins
 * them, serving on the SimNet with the host's virtual clock. Only the storage tier is a stand-in
 * ({@link SimStorageTier}: which program and input files exist).
 * @module
 */
import { RaftGroup } from "../../../roles/master/raft_group.ts";
import { FileStorage } from "../../../roles/master/raft/storage.ts";
import { JobTable } from "../../../roles/master/job_table.ts";
import {
  MasterService,
  type MasterStorage,
  type PlantedBug,
} from "../../../roles/master/service.ts";
import { StorageDirectory } from "../../../roles/master/storage_directory.ts";
import {
  masterHandler,
  type TableHolder,
  tableStateMachine,
} from "../../../roles/master/wiring.ts";
import { sleep } from "../../../lib/clock.ts";
import type { Credentials } from "../../../lib/security.ts";
import { uuidToHex } from "../../../wire/mod.ts";
import type { SimHost } from "../world/net.ts";
import { SimFs } from "../world/sim_fs.ts";
import { identity, nameId, randomId, type SimNode, type World } from "./world.ts";

/** Raft timing of the simulated masters: coarser than production's, same ratios. */
export const SIM_RAFT = { tickMs: 50, electionTicks: 10, heartbeatTicks: 2 };

/** The storage tier as the masters see it: which files exist (stat only). */
export class SimStorageTier {
  #files = new Map<string, number>();
  /** Probability that a stat fails (the tier unreachable). */
  failRate = 0;
  #world: World;
  constructor(world: World) {
    this.#world = world;
  }
  /** A file the tier holds. */
  add(id: Uint8Array, length: number): void {
    this.#files.set(uuidToHex(id), length);
  }
  /** The tier as one master uses it (its stats take a little of that master's time). */
  forMaster(host: SimHost): MasterStorage {
    return {
      stat: async (id) => {
        await sleep(host.clock, 1 + Math.floor(this.#world.rand() * 3));
        if (this.failRate > 0 && this.#world.rand() < this.failRate) {
          throw new Error("sim storage tier unreachable");
        }
        const n = this.#files.get(uuidToHex(id));
        return n === undefined ? { exists: false, length: 0 } : { exists: true, length: n };
      },
      client: (endpoint) => ({
        endpoint,
        stats: () => Promise.reject(new Error("the simulated tier has no seed nodes")),
      }),
    };
  }
}

/** Options of a {@link SimMaster}. */
export interface SimMasterOptions {
  /** Every member id of the group (bootstrap voters). */
  peers: string[];
  tier: SimStorageTier;
  /** Test-only bugs planted in the master shell (MasterServiceDeps.plantedBugs). */
  bugs?: ReadonlySet<PlantedBug>;
  snapshotEvery?: number;
  /** Keys and cluster secret of the masters (null: insecure). */
  auth: Credentials | null;
  /** Called when the member stops itself (RaftGroup onFatal). */
  onFatal: (name: string, e: unknown, kind: string) => void;
}

/** One master: see module doc. */
export class SimMaster implements SimNode {
  readonly name: string;
  readonly id: string;
  readonly endpoint: string;
  readonly host: SimHost;
  /** The disk (survives crashes, minus what was not synced). */
  readonly disk: SimFs;
  /** Why the last start failed (its storage refused to open), if it did. */
  startError: unknown = null;
  #world: World;
  #o: SimMasterOptions;
  #holder: TableHolder | null = null;
  raft: RaftGroup | undefined;
  service: MasterService | undefined;
  /** Starts so far (restarts + 1). */
  starts = 0;

  constructor(world: World, name: string, o: SimMasterOptions) {
    this.#world = world;
    this.name = name;
    this.endpoint = `tcp://${name}:7100`;
    this.id = `${name}@${this.endpoint}`;
    this.host = world.net.host(name, identity("master", name));
    this.disk = new SimFs(Math.floor(world.rand() * 2 ** 32));
    this.#o = o;
  }

  /** Where its Raft storage lives on its disk. */
  get dir(): string {
    return `/${this.name}/raft`;
  }

  get up(): boolean {
    return this.host.alive && this.raft !== undefined;
  }

  /** The table this master serves from (null while down). */
  get table(): JobTable | null {
    return this.up ? this.#holder!.table : null;
  }

  async start(): Promise<void> {
    this.host.restart();
    const host = this.host;
    const inc = host.incarnation;
    const world = this.#world;
    const rand = world.fork();
    const log = world.logger(this.name);
    const node = nameId(this.name);
    this.starts++;
    // Listening before the state exists, as main.ts does ("master is starting").
    const server = host.listen(
      this.endpoint,
      masterHandler(() => this.raft, () => this.service),
      node,
    );
    let storage: FileStorage;
    try {
      storage = await FileStorage.open(this.dir, {
        fs: this.disk.mount(),
        // Small segments: rotation, and sealed segments for bit flips, within a short run.
        segmentBytes: 1024,
      });
    } catch (e) {
      // A corrupt disk: the process would exit; it stays down (the harness decides if allowed).
      this.startError = e;
      host.crash();
      return;
    }
    if (host.incarnation !== inc) return; // crashed while opening
    this.startError = null;
    const holder: TableHolder = { table: new JobTable() };
    this.#holder = holder;
    const raft = RaftGroup.start({
      id: this.id,
      peers: this.#o.peers,
      join: false,
      storage,
      sm: tableStateMachine(holder),
      node,
      log,
      ...SIM_RAFT,
      snapshotEvery: this.#o.snapshotEvery,
      clock: host.clock,
      dial: host.dial,
      seed: Math.floor(rand() * 2 ** 32),
      onFatal: (e, kind) => {
        if (host.incarnation === inc) this.#o.onFatal(this.name, e, kind);
      },
    });
    const service = new MasterService({
      node,
      endpoint: this.endpoint,
      log,
      table: holder.table,
      consensus: raft,
      storage: this.#o.tier.forMaster(host),
      storageDirectory: new StorageDirectory(),
      raft,
      auth: this.#o.auth,
      clock: host.clock,
      dial: host.dial,
      newJobId: () => randomId(rand),
      plantedBugs: this.#o.bugs,
      redispatchMs: 500,
    });
    holder.onRestore = (t) => service.setTable(t);
    this.raft = raft;
    this.service = service;
    service.start();
    void server;
  }

  crash(): void {
    this.host.crash();
    this.disk.crash();
    this.raft = undefined;
    this.service = undefined;
    this.#holder = null;
  }
}
