/**
 * dsys across hosts: every node in its own network namespace with its own address on a bridge
 * (veth pairs, `ip netns`), each started from the single file build/dsys alone (copied to a
 * clean directory, bare environment, its own cache), with keys from `dsys init`. A job runs
 * across them; then the leader master is cut off from every other node (nftables drops in each
 * namespace, both ways) but one client host, c1, itself cut from all but that master and
 * storage: the cut-off master cannot commit the job c1 keeps submitting to it, while the other
 * two masters elect a leader and keep accepting and finishing jobs; after the cut heals, c1's
 * job is acknowledged too, and the masters hold exactly the acknowledged jobs, each succeeded
 * once with the outputs of its chunks.
 *
 * The test machine (its own namespace) is on the bridge as the other clients' host; it is never
 * cut.
 * Only addresses on this test's own bridge are used: a 10.x.y.0/24 no route of the host covers.
 */
import assert from "node:assert/strict";
import { bareEnv, copyAlone, type Ran, runBare } from "./package_helpers.ts";
import { waitFor, within } from "./wait.ts";
import { DsysClient } from "../client/commands.ts";
import { type JobListResponse, MessageType, uuidToHex } from "../wire/mod.ts";

const dec = new TextDecoder();

/** Runs a command in the host's namespace; throws with its stderr when it fails. */
async function sh(cmd: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const r = await child.output();
  if (!r.success) throw new Error(`${cmd.join(" ")} failed (${r.code}): ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout);
}

/** Namespaces and links of this test start with `dmh<pid>_` (pid in base 36). */
const PREFIX = "dmh";

/** Removes what an earlier run that was killed (its pid is gone) left behind. */
async function removeStale(): Promise<void> {
  const stale = (name: string) => {
    const m = name.match(/^dmh([0-9a-z]+)_/);
    if (!m) return false;
    try {
      Deno.statSync(`/proc/${parseInt(m[1], 36)}`);
      return false;
    } catch {
      return true;
    }
  };
  for (const line of (await sh(["ip", "netns", "list"])).split("\n")) {
    const ns = line.split(" ")[0];
    if (ns && stale(ns)) await sh(["ip", "netns", "del", ns]).catch(() => {});
  }
  for (const line of (await sh(["ip", "-o", "link", "show"])).split("\n")) {
    const link = line.split(": ")[1]?.split("@")[0];
    if (link && stale(link)) await sh(["ip", "link", "del", link]).catch(() => {});
  }
}

/** A bridge, a namespace per node on it, and cuts between them. */
class Lab {
  readonly id = `${PREFIX}${Deno.pid.toString(36)}_${Math.random().toString(36).slice(2, 4)}`;
  readonly bridge = `${this.id}br`;
  readonly nodes = new Map<string, { ns: string; ip: string }>();
  readonly subnet: string;
  readonly hostIp: string;
  /** The addresses each node is cut from. */
  #cut = new Map<string, Set<string>>();

  private constructor(subnet: string) {
    this.subnet = subnet;
    this.hostIp = `${subnet}.1`;
  }

  /** Makes the bridge (host address .1) and one namespace per name (.10, .11, …). */
  static async create(names: string[]): Promise<Lab> {
    await removeStale();
    const routes = await sh(["ip", "-4", "route", "show"]) + await sh(["ip", "-4", "-o", "addr"]);
    let subnet = "";
    for (let i = 0; i < 200 && !subnet; i++) {
      const s = `10.${150 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 256)}`;
      if (!routes.includes(`${s}.`)) subnet = s;
    }
    if (!subnet) throw new Error("no free 10.150-199.x.0/24 for the lab");
    const lab = new Lab(subnet);
    try {
      await sh(["ip", "link", "add", lab.bridge, "type", "bridge"]);
      await sh(["ip", "addr", "add", `${lab.hostIp}/24`, "dev", lab.bridge]);
      await sh(["ip", "link", "set", lab.bridge, "up"]);
      for (const [i, name] of names.entries()) {
        const ns = `${lab.id}-${name}`;
        const ip = `${subnet}.${10 + i}`;
        const veth = `${lab.id}v${i}`;
        lab.nodes.set(name, { ns, ip });
        await sh(["ip", "netns", "add", ns]);
        await sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        await sh(["ip", "link", "set", veth, "master", lab.bridge, "up"]);
        await sh(["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
        await sh(["ip", "-n", ns, "link", "set", "eth0", "up"]);
        await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      }
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  ip(name: string): string {
    return this.nodes.get(name)!.ip;
  }

  /** The command prefix that runs a program in `name`'s network namespace (and only that:
   * FUSE mounts stay in the host's mount namespace, where cleanup can see them). */
  prefix(name: string): string[] {
    return ["nsenter", `--net=/run/netns/${this.nodes.get(name)!.ns}`];
  }

  /**
   * Cuts every node of `a` from every node of `b`, both ways (on top of cuts already made): in
   * each namespace, one nftables table drops the packets from and to the addresses it is cut
   * from, replaced as a whole in one transaction.
   */
  async cut(a: string[], b: string[]): Promise<void> {
    for (const [side, other] of [[a, b], [b, a]]) {
      for (const n of side) {
        const ips = this.#cut.get(n) ?? new Set<string>();
        for (const o of other) ips.add(this.ip(o));
        this.#cut.set(n, ips);
        const set = [...ips].join(", ");
        await sh(
          [...this.prefix(n), "nft", "-f", "-"],
          `table inet dsys_cut
delete table inet dsys_cut
table inet dsys_cut {
  chain in { type filter hook input priority 0; policy accept; ip saddr { ${set} } drop; }
  chain out { type filter hook output priority 0; policy accept; ip daddr { ${set} } drop; }
}
`,
        );
      }
    }
  }

  /** Removes every cut. */
  async heal(): Promise<void> {
    const errors = [];
    for (const n of [...this.#cut.keys()]) {
      try {
        await sh([...this.prefix(n), "nft", "delete", "table", "inet", "dsys_cut"]);
        this.#cut.delete(n);
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length) throw new AggregateError(errors, "heal failed");
  }

  /**
   * Removes the cuts, the veth pairs, the namespaces and the bridge. The veths go explicitly: a
   * namespace outlives its name while the kernel still holds sockets of it (closed connections
   * whose last packets a cut dropped), and its veth pair with it.
   */
  async destroy(): Promise<void> {
    await this.heal().catch(() => {});
    for (let i = 0; i < this.nodes.size; i++) {
      await sh(["ip", "link", "del", `${this.id}v${i}`]).catch(() => {});
    }
    for (const { ns } of this.nodes.values()) await sh(["ip", "netns", "del", ns]).catch(() => {});
    await sh(["ip", "link", "del", this.bridge]).catch(() => {});
  }
}

/** One node: build/dsys run --role … in its namespace. */
interface Node {
  name: string;
  child: Deno.ChildProcess;
  exited: Promise<Deno.CommandStatus>;
  log: string;
}

/** Reads a node's stdout until its `listening` line, then keeps draining it. */
async function listening(node: Node): Promise<void> {
  const reader = node.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      const tail = (await Deno.readTextFile(node.log).catch(() => "")).split("\n").slice(-10);
      throw new Error(`${node.name} exited before listening:\n${tail.join("\n")}`);
    }
    buf += value;
    if (buf.includes('"event":"listening"')) break;
  }
  (async () => {
    while (!(await reader.read().catch(() => ({ done: true }))).done) { /* drain */ }
  })();
}

const PROGRAM = `#!/bin/sh
# One chunk: which job (its argument) and chunk, and the input's line count, read through the
# worker's FUSE mount.
set -eu
printf '%s chunk %s of %s: %s lines\\n' "$DSYS_ARG" "$DSYS_CHUNK_INDEX" "$DSYS_CHUNK_COUNT" \\
  "$(wc -l <"$DSYS_INPUT_DIR/in.txt")"
`;
const LINES = 1000;
const CHUNKS = 3;

Deno.test("multihost: nodes in their own network namespaces, from build/dsys alone; a partitioned leader cannot commit, the majority goes on, every acknowledged job completes once", async () => {
  const dsys = await copyAlone("dsys-multihost-");
  const top = dsys.replace(/\/dsys$/, "");
  const env = bareEnv(`${top}/home`);
  await Deno.mkdir(`${top}/home`);
  await Deno.mkdir(`${top}/logs`);
  const names = ["m1", "m2", "m3", "b1", "b2", "s1", "w1", "w2"];
  // c1: a client's host that the cut will leave on the cut-off master's side.
  const lab = await Lab.create([...names, "c1"]);
  const nodes = new Map<string, Node>();
  let client: DsysClient | null = null;
  const stopClients = new AbortController();
  let minority: Promise<Ran> | undefined;
  try {
    // Extract once before eight nodes start at the same time (they would wait on the lock).
    const v = await runBare([dsys, "--version"], env, top);
    assert.equal(v.code, 0, v.stderr);
    const init = await runBare(
      [
        dsys,
        "init",
        `${top}/keys`,
        "--masters",
        "3",
        "--balancers",
        "2",
        "--storage",
        "1",
        "--workers",
        "2",
      ],
      env,
      top,
    );
    assert.equal(init.code, 0, init.stderr);

    const ref = (name: string, port: number) => `${name}@tcp://${lab.ip(name)}:${port}`;
    const masters = ["m1", "m2", "m3"].map((m) => ref(m, 7100));
    const storage = ref("s1", 7300);
    const balancers = ["b1", "b2"].map((b) => ref(b, 7200)).join(",");
    const start = async (name: string, role: string, args: string[]) => {
      const log = `${top}/logs/${name}.log`;
      const file = await Deno.open(log, { create: true, write: true });
      const child = new Deno.Command("nsenter", {
        args: [
          ...lab.prefix(name).slice(1),
          dsys,
          "run",
          "--role",
          role,
          "--data",
          `${top}/${name}`,
          "--key",
          `${top}/keys/${name}.key`,
          "--keyring",
          `${top}/keys/keyring`,
          ...args,
        ],
        env,
        clearEnv: true,
        cwd: top,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      child.stderr.pipeTo(file.writable).catch(() => {});
      const node: Node = { name, child, exited: child.status, log };
      nodes.set(name, node);
      await within(60_000, `${name} to listen`, listening(node));
    };
    await start("s1", "storage", ["--listen", `tcp://${lab.ip("s1")}:7300`]);
    await Promise.all(["m1", "m2", "m3"].map((m) =>
      start(m, "master", [
        "--listen",
        `tcp://${lab.ip(m)}:7100`,
        "--id",
        m,
        "--peers",
        masters.join(","),
        "--storage",
        storage,
      ])
    ));
    await Promise.all(["b1", "b2"].map((b) =>
      start(b, "balancer", [
        "--listen",
        `tcp://${lab.ip(b)}:7200`,
        "--advertise",
        ref(b, 7200),
        "--masters",
        masters.join(","),
      ])
    ));
    await Promise.all(["w1", "w2"].map((w) =>
      start(w, "worker", [
        "--mount",
        `${top}/${w}/mnt`,
        "--balancer",
        balancers,
        "--storage",
        storage,
        "--masters",
        masters.join(","),
        "--slots",
        "2",
      ])
    ));

    // Clients run build/dsys too: on the test machine's address on the bridge, or in c1.
    const auth = ["--key", `${top}/keys/admin.key`, "--keyring", `${top}/keys/keyring`];
    const cli = (args: string[], master = masters, timeoutS = 60, from?: string): Promise<Ran> => {
      const flags = ["--master", master.join(","), "--storage", storage];
      flags.push("--timeout", String(timeoutS), ...auth);
      return runBare(
        [...(from ? lab.prefix(from) : []), dsys, ...args, ...flags],
        env,
        top,
        (timeoutS + 60) * 1000,
        stopClients.signal,
      );
    };
    await Deno.writeTextFile(
      `${top}/in.txt`,
      Array.from({ length: LINES }, (_, i) => `line ${i}`).join("\n") + "\n",
    );
    await Deno.writeTextFile(`${top}/count.sh`, PROGRAM);
    const put = await cli(["put", `${top}/in.txt`]);
    assert.equal(put.code, 0, put.stderr);
    const input = put.stdout.split(/\s+/)[0];
    const submit = (arg: string, master = masters, timeoutS = 60, from?: string) =>
      cli(
        [
          "submit",
          "--program",
          `${top}/count.sh`,
          "--chunks",
          String(CHUNKS),
          "--input",
          `in.txt=${input}`,
          "--arg",
          arg,
          "--wait",
          "--json",
        ],
        master,
        timeoutS,
        from,
      );
    /** The job id of a finished `submit --wait --json`, checked succeeded. */
    const succeeded = (r: Ran, what: string): string => {
      assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
      const s = JSON.parse(r.stdout.trim().split("\n").pop()!);
      assert.equal(s.state, "succeeded", `${what}: ${r.stdout}`);
      return s.job;
    };
    const acked = new Map<string, string>(); // job id -> its argument

    // 1. A job across the hosts.
    acked.set(succeeded(await submit("A"), "job A"), "A");

    // 2. Cut the leader master off from every other node but c1, and c1 from every node but it
    // and storage (c1's client stores the program before it submits).
    const leaderRow = await waitFor("a master leader in `dsys nodes`", async () => {
      const r = await cli(["nodes", "--json"]);
      if (r.code !== 0) return null;
      return r.stdout.trim().split("\n").map((l) => JSON.parse(l))
        .find((n) => n.role === "master" && n.leader);
    }, { timeoutMs: 60_000, intervalMs: 200 });
    const leader = ["m1", "m2", "m3"].find((m) => leaderRow.endpoint.includes(`//${lab.ip(m)}:`))!;
    assert.ok(leader, `leader endpoint ${leaderRow.endpoint} is none of the masters`);
    const others = names.filter((n) => n !== leader);
    await lab.cut([leader], others);
    await lab.cut(["c1"], others.filter((n) => n !== "s1"));

    // The cut holds: from c1, the other masters do not answer (exit 2: unavailable).
    const majority = masters.filter((m) => !m.startsWith(`${leader}@`));
    const probe = await cli(["nodes"], majority, 2, "c1");
    assert.equal(probe.code, 2, `c1 reached the majority: ${probe.stdout}${probe.stderr}`);

    // c1's client, which reaches no master but the cut-off one (whatever leader that one names),
    // keeps submitting to it (one job, retried with the same client id and sequence) for up to
    // 10 minutes.
    let minorityDone = false;
    minority = submit("M", [ref(leader, 7100)], 600, "c1").finally(() => minorityDone = true);

    // 3. The majority elects a leader and keeps accepting and finishing jobs.
    for (const arg of ["B1", "B2", "B3"]) {
      acked.set(succeeded(await submit(arg, majority, 120), `job ${arg} (majority side)`), arg);
    }
    // Raft: a master without a majority cannot commit, so however long the majority took
    // (on a loaded machine: longer), the cut-off master has not acknowledged its job.
    if (minorityDone) assert.fail(`the cut-off side finished: ${JSON.stringify(await minority)}`);

    // 4. Heal: c1's client is redirected to the leader and its one job completes.
    await lab.heal();
    acked.set(succeeded(await minority, "job M (submitted to the cut-off master)"), "M");

    // Exactly the acknowledged jobs exist (no duplicate of the retried submission), each
    // succeeded with one output per chunk, computed from the input it read through FUSE.
    client = new DsysClient({
      masters,
      storage,
      balancer: balancers,
      key: `${top}/keys/admin.key`,
      keyring: `${top}/keys/keyring`,
    }, { deadlineMs: 60_000 });
    const list = await client.masters.request({
      type: MessageType.JobListRequest,
      node: client.node,
    }) as JobListResponse;
    assert.deepEqual(list.jobs.map((j) => uuidToHex(j.job)).sort(), [...acked.keys()].sort());
    for (const [job, arg] of acked) {
      const got = await cli(["get", job, "--out", `${top}/out/${job}`]);
      assert.equal(got.code, 0, got.stderr);
      for (let i = 0; i < CHUNKS; i++) {
        const dir = `${top}/out/${job}/chunk-${String(i).padStart(5, "0")}`;
        assert.equal(
          await Deno.readTextFile(`${dir}/stdout`),
          `${arg} chunk ${i} of ${CHUNKS}: ${LINES} lines\n`,
        );
      }
    }
  } catch (e) {
    for (const n of nodes.values()) {
      const tail = (await Deno.readTextFile(n.log).catch(() => "")).split("\n").slice(-8);
      console.error(`--- ${n.name}\n${tail.join("\n")}`);
    }
    throw e;
  } finally {
    stopClients.abort();
    await minority?.catch(() => {});
    await client?.close();
    // Heal first, so that connections closed below end cleanly instead of lingering in the kernel.
    await lab.heal().catch(() => {});
    // Workers first (they unmount their FUSE mounts), then the rest; SIGKILL after 10 s.
    for (const group of [["w1", "w2"], names.filter((n) => !n.startsWith("w"))]) {
      await Promise.all(group.map(async (name) => {
        const n = nodes.get(name);
        if (!n) return;
        try {
          n.child.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            n.child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 10_000);
        await n.exited;
        clearTimeout(t);
      }));
    }
    // A worker that was killed leaves its mount behind: lazily unmount whatever is under top.
    const mounts = (await Deno.readTextFile("/proc/self/mounts")).split("\n")
      .map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(top));
    for (const m of mounts) await sh(["umount", "-l", m]).catch(() => {});
    await lab.destroy();
    await Deno.remove(top, { recursive: true }).catch(() => {});
  }
});
