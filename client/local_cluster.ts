/**
 * An embedded local cluster: every node a separate OS process of the same entry point, on
 * loopback, under one data directory. Used by `dsys dev` and by the end-to-end tests.
 */
import type { ClusterInfo } from "./cluster.ts";
import { addKey, initCluster } from "./keys.ts";
import { Credentials, Keyring, type Role } from "../lib/security.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { ErrorCode, MessageType, NodeState, randomUuid } from "../wire/mod.ts";
import { LeaderClient } from "../roles/master/client.ts";
import { joinNamedEndpoint } from "../lib/named_endpoint.ts";

/** Options of a local cluster. */
export interface LocalClusterOptions {
  /** Root of all nodes' data; a temp dir when omitted. */
  dataDir?: string;
  workers?: number;
  /** Number of masters: 1 runs a lone master; 3 or 5 a Raft group. */
  masters?: number;
  slotsPerWorker?: number;
  /**
   * Also start a second balancer (`balancer2`), started like the first: the masters' lease
   * makes one of them primary, the other a hot standby that takes over when it dies.
   */
  standbyBalancer?: boolean;
  /** Worker cache size, bytes. */
  cacheBytes?: number;
  /**
   * Storage nodes (default 1): `storage`, `storage2`, `storage3`, … each registering with the
   * masters; files get 2 replicas once there are two or more (masters' `--replicas` default).
   */
  storageNodes?: number;
  /** Extra flags per role, e.g. { master: ["--redispatch-ms", "500"] }. */
  extraArgs?: Partial<Record<"master" | "balancer" | "storage" | "worker", string[]>>;
  /** Called with each child's stderr line (logs); default: appended to <data>/logs/<name>.log. */
  onLog?: (node: string, line: string) => void;
  /**
   * Run without keys (every node `--insecure`), for benchmarks that compare. Default: every
   * node and the client get keys made by `dsys init` in `<data>/keys`.
   */
  insecure?: boolean;
  /** Ordinary (non-admin) client keys to make beside `admin` (`<data>/keys/NAME.key`). */
  users?: string[];
  /**
   * Where each node runs: the host it listens on (default 127.0.0.1) and a command prefix it is
   * started under (default none). tests/chaos gives every node its own network namespace this
   * way (`nsenter --net=/run/netns/NS`), so that the links between nodes can be cut.
   */
  placement?: (name: string) => { host: string; prefix: string[] };
  /**
   * Serve every node's Prometheus metrics (`--metrics-listen`): `HOST:0` gives each node a free
   * port of its own (its `ClusterProcess.metrics` says which); `HOST:PORT` gives the nodes
   * PORT, PORT+1, … in the order they start. Off when omitted.
   */
  metricsListen?: string;
}

/** One child process of the cluster. */
export interface ClusterProcess {
  name: string;
  role: string;
  args: string[];
  endpoint: string;
  child: Deno.ChildProcess;
  exited: Promise<Deno.CommandStatus>;
  /** Where it serves its metrics (`HOST:PORT`), when started with `--metrics-listen`. */
  metrics?: string;
  /** Where a master serves its dashboard (`HOST:PORT`), when started with `--dashboard-listen`. */
  dashboard?: string;
}

/** The `dsys` entry point to spawn children with: this program's own main module. */
function entryArgs(): string[] {
  const main = Deno.mainModule;
  // Under `deno test`, mainModule is the test file: spawn mod.ts next to this file instead.
  if (main.endsWith("mod.ts") || main.endsWith(".js")) return ["run", "-A", main];
  return ["run", "-A", new URL("../mod.ts", import.meta.url).href];
}

/** A running local cluster. */
export class LocalCluster {
  readonly dataDir: string;
  readonly procs = new Map<string, ClusterProcess>();
  #opts: LocalClusterOptions;
  info!: ClusterInfo;
  /** Where the keys are (`<data>/keys`), null for an insecure cluster. */
  readonly keysDir: string | null;
  /** Metrics ports handed out so far (`metricsListen` with a fixed first port). */
  #metricsPorts = 0;

  private constructor(dataDir: string, opts: LocalClusterOptions) {
    this.dataDir = dataDir;
    this.#opts = opts;
    this.keysDir = opts.insecure ? null : `${dataDir}/keys`;
  }

  /** The keyring file (null when insecure). */
  get keyringPath(): string | null {
    return this.keysDir && `${this.keysDir}/keyring`;
  }

  /** A node's key file, made (and put on the keyring) if the node has none yet. */
  async keyFor(name: string, role: string): Promise<string> {
    const path = `${this.keysDir}/${name}.key`;
    const ring = Keyring.parse(await Deno.readTextFile(this.keyringPath!));
    if (!ring.byName(name)) await addKey(this.keyringPath!, role as "worker", name);
    return path;
  }

  /**
   * Puts a new key on the keyring and waits until every running master, balancer and storage
   * node lets it in (they re-read the keyring about once a second). Returns its key file.
   * Needed before a node with that key starts: libzmq does not retry a refused handshake.
   */
  async admitKey(name: string, role: Role, timeoutMs = 20_000): Promise<string> {
    const path = await this.keyFor(name, role);
    const creds = Credentials.loadSync(path, this.keyringPath!);
    const end = Date.now() + timeoutMs;
    try {
      for (const p of this.procs.values()) {
        if (p.role !== "master" && p.role !== "balancer" && p.role !== "storage") continue;
        for (;;) {
          // A fresh socket per try: one that saw its handshake refused stays refused.
          const c = new RpcClient(`${p.name}@${p.endpoint}`, { node: randomUuid(), auth: creds });
          const answered = await c.request({ type: MessageType.NodeListRequest, node: c.node }, 500)
            .then(() => true, (e) => e instanceof RpcError && e.code !== ErrorCode.Unavailable);
          await c.close();
          if (answered) break;
          if (Date.now() > end) throw new Error(`${p.name} did not admit key ${name} in time`);
        }
      }
    } finally {
      creds.close();
    }
    return path;
  }

  /** The host node `name` listens on. */
  #host(name: string): string {
    return this.#opts.placement?.(name).host ?? "127.0.0.1";
  }

  /** `name@endpoint` when keys are in use (clients find the server's key by name). */
  #ref(p: ClusterProcess): string {
    return this.keysDir ? joinNamedEndpoint(p.name, p.endpoint) : p.endpoint;
  }

  /** The names of the storage nodes (`storage`, `storage2`, …). */
  static storageNames(n: number): string[] {
    return Array.from({ length: n }, (_, i) => i === 0 ? "storage" : `storage${i + 1}`);
  }

  /** Starts (or restarts, same data directory) storage node `name`, registering with the masters. */
  startStorage(name: string): Promise<ClusterProcess> {
    return this.spawn(name, "storage", [
      "--listen",
      `tcp://${this.#host(name)}:0`,
      "--data",
      `${this.dataDir}/${name}`,
      "--masters",
      this.info.masters.join(","),
    ]);
  }

  /** Starts masters, storage nodes, balancers and the workers; resolves when all listen. */
  static async start(opts: LocalClusterOptions = {}): Promise<LocalCluster> {
    const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: "dsys-dev-" });
    await Deno.mkdir(`${dataDir}/logs`, { recursive: true });
    const c = new LocalCluster(dataDir, opts);
    const n = opts.masters ?? 1;
    const workers = opts.workers ?? 2;
    if (c.keysDir) {
      await initCluster(c.keysDir, {
        names: {
          master: n === 1 ? ["master"] : Array.from({ length: n }, (_, i) => `m${i + 1}`),
          balancer: opts.standbyBalancer ? ["balancer", "balancer2"] : ["balancer"],
          storage: LocalCluster.storageNames(opts.storageNodes ?? 1),
          worker: Array.from({ length: workers }, (_, i) => `worker${i + 1}`),
        },
        users: opts.users,
      });
    }
    try {
      // Masters first: storage nodes register with them (and are found through them).
      let masters: ClusterProcess[];
      if (n === 1) {
        masters = [
          await c.spawn("master", "master", [
            "--listen",
            `tcp://${c.#host("master")}:0`,
            "--data",
            `${dataDir}/master`,
          ]),
        ];
      } else {
        // Raft members are named by their endpoints, so the ports are fixed up front (free on
        // loopback here; a master placed in its own network namespace has all ports free).
        const eps = freePorts(n).map((p, i) => `tcp://${c.#host(`m${i + 1}`)}:${p}`);
        const peers = eps.map((ep, i) => `m${i + 1}@${ep}`).join(",");
        masters = await Promise.all(eps.map((ep, i) =>
          c.spawn(`m${i + 1}`, "master", [
            "--listen",
            ep,
            "--data",
            `${dataDir}/m${i + 1}`,
            "--id",
            `m${i + 1}`,
            "--peers",
            peers,
          ])
        ));
      }
      // Every balancer alike: the masters' lease makes one of them primary.
      const masterRefs = masters.map((m) => c.#ref(m)).join(",");
      c.info = { masters: masters.map((m) => c.#ref(m)), balancer: "", storage: "" };
      const storage = await Promise.all(
        LocalCluster.storageNames(opts.storageNodes ?? 1).map((name) => c.startStorage(name)),
      );
      // Up means registered: a put placed before every storage node is known would go to the
      // first R of fewer nodes (and be moved by repair), a submission would find no storage.
      await c.#waitStorageRegistered(storage.length);
      const names = opts.standbyBalancer ? ["balancer", "balancer2"] : ["balancer"];
      const balancerProcs: ClusterProcess[] = [];
      for (const name of names) {
        balancerProcs.push(
          await c.spawn(name, "balancer", [
            "--listen",
            `tcp://${c.#host(name)}:0`,
            "--data",
            `${dataDir}/${name}`,
            "--masters",
            masterRefs,
          ]),
        );
      }
      const balancers = balancerProcs.map((b) => c.#ref(b)).join(",");
      c.info = {
        masters: masters.map((m) => c.#ref(m)),
        balancer: balancers,
        // Seeds only (clients and workers find registered storage nodes through the masters).
        storage: storage.map((p) => c.#ref(p)).join(","),
        ...(c.keysDir ? { key: `${c.keysDir}/admin.key`, keyring: c.keyringPath! } : {}),
      };
      await Promise.all(
        Array.from({ length: workers }, (_, i) => c.startWorker(`worker${i + 1}`)),
      );
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  /** Waits (30 s at most) until the masters' leader lists `n` storage nodes alive. */
  async #waitStorageRegistered(n: number): Promise<void> {
    const node = randomUuid();
    const creds = this.keysDir
      ? Credentials.loadSync(`${this.keysDir}/admin.key`, this.keyringPath!)
      : null;
    const leader = new LeaderClient(this.info.masters, { node, auth: creds, deadlineMs: 5000 });
    const end = Date.now() + 30_000;
    let seen = 0;
    try {
      for (;;) {
        const r = await leader.request({ type: MessageType.StorageNodesRequest, node })
          .catch(() => null);
        if (r?.type === MessageType.StorageNodes) {
          seen = r.nodes.filter((e) => e.state === NodeState.Alive).length;
          if (seen >= n) return;
        }
        if (Date.now() > end) {
          throw new Error(`only ${seen} of ${n} storage nodes registered with the masters in 30 s`);
        }
        await new Promise((res) => setTimeout(res, 50));
      }
    } finally {
      await leader.close();
      creds?.close();
    }
  }

  /** Starts (or restarts) a worker named `name`. */
  startWorker(name: string): Promise<ClusterProcess> {
    return this.spawn(name, "worker", [
      "--listen",
      `tcp://${this.#host(name)}:0`,
      "--data",
      `${this.dataDir}/${name}`,
      "--mount",
      `${this.dataDir}/${name}/mnt`,
      "--balancer",
      this.info.balancer,
      "--storage",
      this.info.storage,
      "--masters",
      this.info.masters.join(","),
      "--slots",
      String(this.#opts.slotsPerWorker ?? 2),
      "--cache-bytes",
      String(this.#opts.cacheBytes ?? 1024 * 1024 * 1024),
    ]);
  }

  /** Spawns one node and waits for its `listening` line. */
  async spawn(name: string, role: string, args: string[]): Promise<ClusterProcess> {
    const extra = this.#opts.extraArgs?.[role as "master"] ?? [];
    // Each node runs with its own key, whatever key flags `args` (copied from another) had.
    const own = [...args];
    for (const flag of ["--key", "--keyring", "--insecure"]) {
      const i = own.indexOf(flag);
      if (i >= 0) own.splice(i, flag === "--insecure" ? 1 : 2);
    }
    if (this.#opts.metricsListen && !own.includes("--metrics-listen")) {
      const m = /^(.*):(\d+)$/.exec(this.#opts.metricsListen);
      if (!m) throw new Error(`metricsListen ${this.#opts.metricsListen} is not HOST:PORT`);
      const port = Number(m[2]) === 0 ? 0 : Number(m[2]) + this.#metricsPorts++;
      own.push("--metrics-listen", `${m[1]}:${port}`);
    }
    const keyArgs = this.keysDir
      ? ["--key", await this.keyFor(name, role), "--keyring", this.keyringPath!]
      : ["--insecure"];
    const fullArgs = [...entryArgs(), "run", "--role", role, ...own, ...keyArgs, ...extra];
    const prefix = this.#opts.placement?.(name).prefix ?? [];
    const command = [...prefix, Deno.execPath(), ...fullArgs];
    const child = new Deno.Command(command[0], {
      args: command.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const logFile = await Deno.open(`${this.dataDir}/logs/${name}.log`, {
      append: true,
      create: true,
    });
    const onLog = this.#opts.onLog;
    const pumpLogs = (async () => {
      const dec = new TextDecoderStream();
      let buf = "";
      for await (const chunk of child.stderr.pipeThrough(dec)) {
        if (!onLog) await logFile.write(new TextEncoder().encode(chunk));
        else {
          buf += chunk;
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            onLog(name, buf.slice(0, i));
            buf = buf.slice(i + 1);
          }
        }
      }
      logFile.close();
    })();
    let listening: { endpoint: string; metrics?: string; dashboard?: string };
    try {
      listening = await readListening(child.stdout, name);
    } catch (e) {
      await child.status;
      await pumpLogs.catch(() => {});
      const logs = await this.logTail(name, 10);
      throw new Error(
        `${(e as Error).message}; last log lines:\n${logs}`,
      );
    }
    const exited = child.status.then(async (s) => {
      await pumpLogs.catch(() => {});
      return s;
    });
    const p: ClusterProcess = {
      name,
      role,
      args: own,
      endpoint: listening.endpoint,
      child,
      exited,
      ...(listening.metrics ? { metrics: listening.metrics } : {}),
      ...(listening.dashboard ? { dashboard: listening.dashboard } : {}),
    };
    this.procs.set(name, p);
    return p;
  }

  /** The last `lines` lines of a node's log ("" when it has none). */
  async logTail(name: string, lines = 15): Promise<string> {
    const logs = await Deno.readTextFile(`${this.dataDir}/logs/${name}.log`).catch(() => "");
    return logs.split("\n").slice(-lines).join("\n");
  }

  /** Prints the tail of every running node's log to stderr (for a failing test). */
  async printLogs(lines = 15): Promise<void> {
    for (const name of this.procs.keys()) {
      console.error(`--- ${name} (last lines)\n${await this.logTail(name, lines)}`);
    }
  }

  /** Kills one node (SIGKILL by default) and waits for it to exit. */
  async kill(name: string, signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const p = this.procs.get(name);
    if (!p) throw new Error(`no node ${name}`);
    try {
      p.child.kill(signal);
    } catch { /* already gone */ }
    await p.exited;
    this.procs.delete(name);
  }

  /** Restarts a node with its original arguments (same data dir; a new port unless fixed). */
  async restart(name: string, p: ClusterProcess, listen = p.endpoint): Promise<ClusterProcess> {
    const args = [...p.args];
    const i = args.indexOf("--listen");
    if (i >= 0) args[i + 1] = listen;
    return await this.spawn(name, p.role, args);
  }

  /** Stops every node: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    const procs = [...this.procs.values()];
    // Workers first (they unmount), then the rest.
    const order = [
      procs.filter((p) => p.role === "worker"),
      procs.filter((p) => p.role !== "worker"),
    ];
    for (const group of order) {
      await Promise.all(group.map(async (p) => {
        try {
          p.child.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            p.child.kill("SIGKILL");
          } catch { /* gone */ }
        }, graceMs);
        await p.exited;
        clearTimeout(t);
        this.procs.delete(p.name);
      }));
    }
  }
}

/**
 * Reads a child's stdout until its `{"event":"listening",…}` line (its endpoint, and where it
 * serves metrics); then drains the rest.
 */
async function readListening(
  stdout: ReadableStream<Uint8Array>,
  name: string,
): Promise<{ endpoint: string; metrics?: string; dashboard?: string }> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const timeout = setTimeout(() => reader.cancel().catch(() => {}), 60_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${name} exited before it was listening`);
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const ev = JSON.parse(line);
          if (ev.event === "listening") {
            // Keep draining stdout so the child never blocks on a full pipe.
            (async () => {
              try {
                while (!(await reader.read()).done) { /* discard */ }
              } catch { /* closed */ }
            })();
            return {
              endpoint: ev.endpoint as string,
              metrics: typeof ev.metrics === "string" ? ev.metrics : undefined,
              dashboard: typeof ev.dashboard === "string" ? ev.dashboard : undefined,
            };
          }
        } catch { /* not JSON: ignore */ }
      }
    }
  } finally {
    clearTimeout(timeout);
  }
}

/** Ports free on loopback right now (bound to port 0, then released). */
export function freePorts(n: number): number[] {
  const ls = Array.from({ length: n }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = ls.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of ls) l.close();
  return ports;
}
