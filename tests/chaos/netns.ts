/**
 * A network lab for chaos runs: every node in its own network namespace (`ip netns`), all on
 * one bridge in the host's namespace, so that the harness (and its clients) reach every node
 * while links between nodes can be cut. Only iproute2 is needed, no iptables or tc: a cut from
 * A to B is a permanent neighbour entry in A's namespace that maps B's address to a MAC nobody
 * has, so A's packets to B leave and are lost without an error, as on a real broken link, while
 * B's packets still reach A. Both directions cut is a symmetric partition.
 *
 * Nodes are started under `nsenter --net=/run/netns/NS` (see `prefix`): it enters the network
 * namespace only, so FUSE mounts stay in the host's mount namespace, where a mount left behind
 * is visible (`ip netns exec` would give each node a private mount namespace that hides it).
 * @module
 */

/** A command of the lab that failed. */
export interface NetLabFailure {
  kind: "netlab";
  command: string[];
  code: number;
  stderr: string;
}

/** Runs a command; null when it succeeded. */
async function run(command: string[]): Promise<NetLabFailure | null> {
  const out = await new Deno.Command(command[0], {
    args: command.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output().catch((e) => ({ code: 127, stderr: new TextEncoder().encode(String(e)) }));
  if (out.code === 0) return null;
  return { kind: "netlab", command, code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** Runs a command and returns its stdout ("" when it failed). */
async function output(command: string[]): Promise<string> {
  const out = await new Deno.Command(command[0], {
    args: command.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => null);
  return out && out.code === 0 ? new TextDecoder().decode(out.stdout) : "";
}

/** A MAC address no interface has (locally administered): frames to it are lost. */
const NOWHERE_MAC = "02:00:00:00:d5:c5";
let labs = 0;

interface LabNode {
  ns: string;
  ip: string;
}

/** A running lab; see module doc. */
export class NetLab {
  /** Names of this lab's namespaces and links start with this (`dsc<pid>x<n>`). */
  readonly id: string;
  readonly bridge: string;
  /** The host side's address on the bridge (where clients connect from). */
  readonly hostIp: string;
  readonly #nodes = new Map<string, LabNode>();
  /** Cuts in force, `from>to`. */
  readonly #cuts = new Set<string>();

  private constructor(id: string, subnet: string) {
    this.id = id;
    this.bridge = `${id}b`;
    this.hostIp = `${subnet}.1`;
  }

  /**
   * Makes a namespace per node name, with an address on a fresh /24 of 10.200-249.x and a link
   * to a new bridge. On failure it removes what it made and returns the failing command (not
   * root, no iproute2, no netns support).
   */
  static async create(names: string[]): Promise<NetLab | NetLabFailure> {
    const used = await output(["ip", "-4", "-o", "addr"]);
    let subnet = "";
    for (let i = 0; i < 100 && !subnet; i++) {
      const s = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 256)}`;
      if (!used.includes(` ${s}.`)) subnet = s;
    }
    // Short names: a link name has at most 15 bytes.
    const lab = new NetLab(`dsc${Deno.pid.toString(36)}x${labs++}`, subnet);
    const steps: string[][] = [
      ["ip", "link", "add", lab.bridge, "type", "bridge"],
      ["ip", "link", "set", lab.bridge, "up"],
      ["ip", "addr", "add", `${lab.hostIp}/24`, "dev", lab.bridge],
    ];
    names.forEach((name, i) => {
      const ns = `${lab.id}-${name}`;
      const ip = `${subnet}.${10 + i}`;
      const veth = `${lab.id}v${i}`;
      lab.#nodes.set(name, { ns, ip });
      steps.push(
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "link", "set", veth, "master", lab.bridge, "up"],
        ["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
      );
    });
    for (const step of steps) {
      const f = await run(step);
      if (f) {
        await lab.destroy();
        return f;
      }
    }
    return lab;
  }

  /** The address node `name` listens on. */
  ip(name: string): string {
    return this.#node(name).ip;
  }

  /** The command prefix that starts a process in node `name`'s network namespace. */
  prefix(name: string): string[] {
    return ["nsenter", `--net=/run/netns/${this.#node(name).ns}`, "--"];
  }

  #node(name: string): LabNode {
    const n = this.#nodes.get(name);
    if (!n) throw new Error(`netlab: no node ${name}`);
    return n;
  }

  /** Drops every packet `from` sends to `to` (a no-op if already cut). */
  async cut(from: string, to: string): Promise<NetLabFailure | null> {
    const key = `${from}>${to}`;
    if (this.#cuts.has(key)) return null;
    const f = await run([
      "ip",
      "-n",
      this.#node(from).ns,
      "neigh",
      "replace",
      this.#node(to).ip,
      "lladdr",
      NOWHERE_MAC,
      "dev",
      "eth0",
      "nud",
      "permanent",
    ]);
    if (!f) this.#cuts.add(key);
    return f;
  }

  /** Undoes `cut(from, to)`: the address is looked up again (ARP) on the next packet. */
  async uncut(from: string, to: string): Promise<NetLabFailure | null> {
    const key = `${from}>${to}`;
    if (!this.#cuts.has(key)) return null;
    const f = await run([
      "ip",
      "-n",
      this.#node(from).ns,
      "neigh",
      "del",
      this.#node(to).ip,
      "dev",
      "eth0",
    ]);
    if (!f) this.#cuts.delete(key);
    return f;
  }

  /** Every cut in force, as [from, to]. */
  get cuts(): [string, string][] {
    return [...this.#cuts].map((k) => k.split(">") as [string, string]);
  }

  /** Removes every cut; returns the commands that failed. */
  async healAll(): Promise<NetLabFailure[]> {
    const fails: NetLabFailure[] = [];
    for (const [from, to] of this.cuts) {
      const f = await this.uncut(from, to);
      if (f) fails.push(f);
    }
    return fails;
  }

  /** Pids of the processes still in node `name`'s namespace (none once the cluster stopped). */
  async pids(name: string): Promise<number[]> {
    const text = await output(["ip", "netns", "pids", this.#node(name).ns]);
    return text.split("\n").filter((l) => l.trim()).map(Number);
  }

  /** Removes the namespaces and the bridge; returns the commands that failed. */
  async destroy(): Promise<NetLabFailure[]> {
    const fails: NetLabFailure[] = [];
    const existing = await output(["ip", "netns", "list"]);
    for (const { ns } of this.#nodes.values()) {
      if (!existing.split("\n").some((l) => l.split(" ")[0] === ns)) continue;
      const f = await run(["ip", "netns", "del", ns]);
      if (f) fails.push(f);
    }
    // Deleting a namespace deletes its end of each veth pair, and with it the bridge's end.
    const links = await output(["ip", "-o", "link", "show", "dev", this.bridge]);
    if (links) {
      const f = await run(["ip", "link", "del", this.bridge]);
      if (f) fails.push(f);
    }
    return fails;
  }

  /**
   * Removes what labs of processes that no longer run left behind (a run killed before its
   * clean-up): namespaces with no process left in them, and their bridges. Returns their names.
   */
  static async removeStale(): Promise<string[]> {
    const removed: string[] = [];
    const list = await output(["ip", "netns", "list"]);
    const ids = new Set<string>();
    for (const line of list.split("\n")) {
      const ns = line.split(" ")[0];
      const m = /^(dsc([0-9a-z]+)x\d+)-/.exec(ns);
      if (!m || m[2] === Deno.pid.toString(36)) continue;
      const pid = parseInt(m[2], 36);
      if (await Deno.stat(`/proc/${pid}`).then(() => true, () => false)) continue;
      if ((await output(["ip", "netns", "pids", ns])).trim() !== "") continue;
      if (!(await run(["ip", "netns", "del", ns]))) removed.push(ns);
      ids.add(m[1]);
    }
    for (const id of ids) {
      if (await output(["ip", "-o", "link", "show", "dev", `${id}b`])) {
        if (!(await run(["ip", "link", "del", `${id}b`]))) removed.push(`${id}b`);
      }
    }
    return removed;
  }
}
