/**
 * A 3-member etcd 3.4 cluster on loopback for the consensus benchmark's baseline: real `etcd`
 * processes (Debian package `etcd-server`), distinct client/peer ports, data dirs under one temp
 * dir, default durability (fsync of the WAL before a put is acknowledged). Load goes through the
 * HTTP/JSON gateway (`POST /v3/kv/put`, base64 keys and values).
 *
 * `deno run -A bench/etcd/cluster.ts` starts such a cluster by hand, prints its client URLs and
 * leader, and stops it (removing its data) on Ctrl-C.
 * @module
 */

/** An etcd cluster could not be installed, started, or did not answer; names the member. */
export class EtcdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EtcdError";
  }
}

async function runQuiet(cmd: string, args: string[], env: Record<string, string> = {}) {
  try {
    const r = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" })
      .output();
    const dec = new TextDecoder();
    return { ok: r.success, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  } catch (e) {
    return { ok: false, out: String(e) };
  }
}

/**
 * Returns the `etcd` version, installing `etcd-server` with apt-get when the binary is missing
 * (the benchmark's machine is a Debian box where we are root; CI does not run the benchmark).
 */
export async function ensureEtcd(): Promise<string> {
  const version = async () => {
    const r = await runQuiet("etcd", ["--version"]);
    return r.ok ? (r.out.match(/etcd Version: (\S+)/)?.[1] ?? "unknown") : null;
  };
  let v = await version();
  if (v) return v;
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  let r = await runQuiet("apt-get", ["install", "-y", "-qq", "etcd-server", "etcd-client"], env);
  if (!r.ok) {
    // A fresh machine may have no package lists yet.
    await runQuiet("apt-get", ["update", "-qq"], env);
    r = await runQuiet("apt-get", ["install", "-y", "-qq", "etcd-server", "etcd-client"], env);
  }
  v = await version();
  if (!v) throw new EtcdError(`etcd is missing and apt-get install failed: ${r.out.slice(-500)}`);
  return v;
}

/** Free loopback TCP ports (bound then released: a tiny race the start-up retry covers). */
function freePorts(n: number): number[] {
  const ls = Array.from({ length: n }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = ls.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of ls) l.close();
  return ports;
}

/** One etcd member process. */
export interface EtcdMember {
  name: string;
  /** Client URL, e.g. http://127.0.0.1:23790. */
  clientUrl: string;
  peerUrl: string;
  args: string[];
  child: Deno.ChildProcess | null;
}

const b64 = (s: string | Uint8Array) => btoa(typeof s === "string" ? s : String.fromCharCode(...s));

/** A running etcd cluster. */
export class EtcdCluster {
  readonly dir: string;
  readonly members: EtcdMember[];

  private constructor(dir: string, members: EtcdMember[]) {
    this.dir = dir;
    this.members = members;
  }

  /** Starts `size` members and resolves once every member reports healthy (a leader exists). */
  static async start(opts: { size?: number; dir?: string } = {}): Promise<EtcdCluster> {
    const size = opts.size ?? 3;
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "dsys-bench-etcd-" });
    // etcd opens its log file before it creates its data dir: the parent must exist.
    await Deno.mkdir(dir, { recursive: true });
    const ports = freePorts(2 * size);
    const names = Array.from({ length: size }, (_, i) => `e${i + 1}`);
    const peer = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
    const initial = names.map((n, i) => `${n}=${peer(i)}`).join(",");
    const token = `dsys-bench-${crypto.randomUUID()}`;
    const members = names.map((name, i): EtcdMember => {
      const clientUrl = `http://127.0.0.1:${ports[2 * i]}`;
      return {
        name,
        clientUrl,
        peerUrl: peer(i),
        child: null,
        args: [
          "--name",
          name,
          "--data-dir",
          `${dir}/${name}`,
          "--listen-client-urls",
          clientUrl,
          "--advertise-client-urls",
          clientUrl,
          "--listen-peer-urls",
          peer(i),
          "--initial-advertise-peer-urls",
          peer(i),
          "--initial-cluster",
          initial,
          "--initial-cluster-token",
          token,
          "--initial-cluster-state",
          "new",
          "--logger",
          "zap",
          "--log-outputs",
          `${dir}/${name}.log`,
        ],
      };
    });
    const c = new EtcdCluster(dir, members);
    try {
      for (const m of members) c.#spawn(m);
      await Promise.all(members.map((m) => c.waitHealthy(m.name)));
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  #spawn(m: EtcdMember): void {
    const child = new Deno.Command("etcd", {
      args: m.args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    m.child = child;
    this.#exits.set(m.name, child.status.then((s) => s.code));
  }

  #exits = new Map<string, Promise<number>>();

  /** The last `n` characters of member `name`'s log, for error messages. */
  async logTail(name: string, n = 800): Promise<string> {
    try {
      return (await Deno.readTextFile(`${this.dir}/${name}.log`)).slice(-n);
    } catch (e) {
      return `(no log: ${e})`;
    }
  }

  /** The member named `name` (e1..eN). */
  member(name: string): EtcdMember {
    const m = this.members.find((x) => x.name === name);
    if (!m) throw new EtcdError(`no etcd member ${name}`);
    return m;
  }

  /** Resolves when `GET /health` of member `name` says healthy (it sees a leader). */
  async waitHealthy(name: string, timeoutMs = 30_000): Promise<void> {
    const m = this.member(name);
    const end = Date.now() + timeoutMs;
    let last = "";
    let exited: number | null = null;
    this.#exits.get(name)?.then((code) => exited = code);
    while (Date.now() < end) {
      if (exited !== null) {
        throw new EtcdError(
          `etcd member ${name} exited with code ${exited}: ${await this.logTail(name)}`,
        );
      }
      try {
        const r = await fetch(`${m.clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
        const j = await r.json();
        if (j.health === "true" || j.health === true) return;
        last = JSON.stringify(j);
      } catch (e) {
        last = String(e);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new EtcdError(
      `etcd member ${name} not healthy after ${timeoutMs} ms: ${last}; log: ${await this
        .logTail(name)}`,
    );
  }

  /** The name of the current leader, asked of the live members. */
  async leader(): Promise<string> {
    const ids = new Map<string, string>();
    let leaderId = "";
    for (const m of this.members) {
      if (!m.child) continue;
      try {
        const r = await fetch(`${m.clientUrl}/v3/maintenance/status`, {
          method: "POST",
          body: "{}",
          signal: AbortSignal.timeout(1000),
        });
        const j = await r.json();
        ids.set(String(j.header.member_id), m.name);
        if (j.leader && j.leader !== "0") leaderId = String(j.leader);
      } catch { /* a member that does not answer is not the leader we can use */ }
    }
    const name = ids.get(leaderId);
    if (!name) throw new EtcdError(`no etcd leader known (leader id ${leaderId || "none"})`);
    return name;
  }

  /** SIGKILLs member `name` and waits for it to exit. */
  async kill(name: string): Promise<void> {
    const m = this.member(name);
    const child = m.child;
    if (!child) return;
    m.child = null;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
  }

  /** Restarts a killed member on its data dir and waits until it is healthy. */
  async restart(name: string): Promise<void> {
    const m = this.member(name);
    if (m.child) throw new EtcdError(`etcd member ${name} is still running`);
    this.#spawn(m);
    await this.waitHealthy(name);
  }

  /** Stops every member (SIGTERM) and removes the data dirs. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map(async (m) => {
      const child = m.child;
      m.child = null;
      if (!child) return;
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(t);
    }));
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * One put through member `clientUrl`'s gateway; resolves with the revision once etcd acknowledged
 * it (committed by a quorum and applied). The body is always read so the connection is reused.
 */
export async function etcdPut(
  clientUrl: string,
  key: string,
  value: Uint8Array,
  signal?: AbortSignal,
): Promise<number> {
  const r = await fetch(`${clientUrl}/v3/kv/put`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key: b64(key), value: b64(value) }),
    signal,
  });
  const text = await r.text();
  if (!r.ok) throw new EtcdError(`put ${key} via ${clientUrl}: HTTP ${r.status}: ${text}`);
  const rev = Number(JSON.parse(text)?.header?.revision);
  if (!(rev > 0)) throw new EtcdError(`put ${key} via ${clientUrl}: no revision in ${text}`);
  return rev;
}

if (import.meta.main) {
  await ensureEtcd();
  const c = await EtcdCluster.start();
  console.log(JSON.stringify({
    dir: c.dir,
    clientUrls: c.members.map((m) => m.clientUrl),
    leader: await c.leader(),
  }));
  await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
  await c.stop();
}
