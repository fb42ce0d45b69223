/**
 * The chunk sandbox under attack (issue 10): a hostile program, run beside a victim job on one
 * worker, with real processes, real bubblewrap, real cgroups and the real FUSE mount. Each attack
 * is a step; each checks what the kernel let through, not what the worker says. The last test
 * runs the same hostile program on a --no-sandbox worker and shows every probe succeeding there,
 * so a probe that reports DENIED in the sandbox is known to be able to see a leak.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { clientAs, jobIds, withCluster } from "./cluster_helpers.ts";
import type { LocalCluster } from "../client/local_cluster.ts";
import type { DsysClient } from "../client/commands.ts";
import {
  ChunkState,
  FailureCode,
  type JobStatusResponse,
  type LimitFields,
  type Uuid,
  uuidToHex,
  uuidToString,
} from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const MiB = 1 << 20;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest();
const idHex = (b: Uint8Array) => sha256(b).subarray(0, 16).toString("hex");
const nonce = () => crypto.getRandomValues(new Uint32Array(1))[0].toString(16);

/** The victim: reads its input (so it is in the worker's cache), writes its output, leaves a
 * marker where the test finds it, and keeps its files in place until the test writes `release`
 * next to the marker; then reads its input again. */
const victimProgram = (tag: string) =>
  enc.encode(`#!/bin/sh
sha256sum < "$DSYS_INPUT_DIR/secret.txt" | cut -d' ' -f1
echo "victim result ${tag}" > "$DSYS_OUTPUT_DIR/result.txt"
echo ready > "$TMPDIR/victim-ready-${tag}"
while [ ! -e "$TMPDIR/release" ]; do sleep 0.05; done
sha256sum < "$DSYS_INPUT_DIR/secret.txt" | cut -d' ' -f1
`);

/** What the hostile program knows of the host: everything a worker's layout gives away. */
interface Target {
  victimJob: string;
  secretIdHex: string;
  mount: string;
  data: string;
  keys: string;
  ports: number[];
  hosts: string[];
  /** Skip writes into the host's /usr and /etc (the unsandboxed control would make them). */
  control: boolean;
}

/** The hostile program: every probe prints one line, DENIED or what it got (LEAK, WROTE,
 * CONNECTED). */
function hostileProgram(t: Target): Uint8Array {
  const systemWrites = t.control ? "" : `wprobe usr /usr/pwned
wprobe etc /etc/pwned
`;
  return enc.encode(`#!/bin/bash
MNT='${t.mount}'; DATA='${t.data}'; KEYS='${t.keys}'; VICTIM='${t.victimJob}'
probe() {
  local name=$1; shift
  local out
  if out=$("$@" 2>/dev/null) && [ -n "$out" ]; then
    echo "LEAK $name: $(printf %s "$out" | head -c 300 | tr '\\n' ' ')"
  else
    echo "DENIED $name"
  fi
}
wprobe() {
  if (echo "pwned by mallory" > "$2") 2>/dev/null; then echo "WROTE $1"; else echo "DENIED $1"; fi
}
probe shadow cat /etc/shadow
probe worker-key cat "$KEYS/worker1.key"
probe admin-key cat "$KEYS/admin.key"
probe victim-input-mount cat "$MNT/$VICTIM/secret.txt"
probe victim-input-relative cat "$DSYS_INPUT_DIR/../$VICTIM/secret.txt"
probe mount-listing ls "$MNT"
probe cache-file cat "$DATA/cache/${t.secretIdHex}"
probe cache-listing ls "$DATA/cache"
for f in "$DATA"/chunks/slot-*/fs/out/result.txt "$DATA"/chunks/slot-*/out/result.txt; do
  probe victim-output cat "$f"
  wprobe victim-output-write "$f"
done
wprobe cache-poison "$DATA/cache/${t.secretIdHex}"
wprobe data-dir "$DATA/pwned"
wprobe input-dir "$DSYS_INPUT_DIR/pwned"
${systemWrites}for p in ${t.ports.join(" ")}; do
  for h in 127.0.0.1 ${t.hosts.join(" ")}; do
    if timeout 5 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null; then
      echo "CONNECTED $h:$p"
    else
      echo "DENIED connect $h:$p"
    fi
  done
done
# What it may do: read its own input, write its own output.
if cat "$DSYS_INPUT_DIR/own.txt" > "$DSYS_OUTPUT_DIR/own-copy"; then echo "OWN ok"; fi
`);
}

/** A file named `name` at most `depth` directories below `dir` (its directory), or null. */
function findFile(dir: string, name: string, depth = 5): string | null {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return null;
  }
  for (const e of entries) if (e.isFile && e.name === name) return dir;
  if (depth === 0) return null;
  for (const e of entries) {
    if (!e.isDirectory || e.isSymlink) continue;
    const hit = findFile(`${dir}/${e.name}`, name, depth - 1);
    if (hit) return hit;
  }
  return null;
}

/** Pids of host processes whose argv is exactly `argv`. */
function processesWithArgv(argv: string[]): number[] {
  const want = argv.join("\0") + "\0";
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`) === want) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** Pids of host processes whose command line contains `token`. */
function processesWith(token: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(token)) {
        out.push(Number(e.name));
      }
    } catch { /* gone */ }
  }
  return out;
}

/** Output `name` of the (single) chunk of a finished job, as text. */
async function output(c: DsysClient, s: JobStatusResponse, name: string): Promise<string> {
  const o = s.chunks[0].outputs.find((x) => x.name === name);
  assert.ok(
    o,
    `no output ${name}: ${s.chunks[0].outputs.map((x) => x.name)} ${s.chunks[0].reason}`,
  );
  return dec.decode(await c.storage.getBytes(o.id));
}

/** Submits a one-chunk job. */
async function submit(
  c: DsysClient,
  program: Uint8Array,
  o: {
    inputs?: { id: Uuid; name: string }[];
    limits?: LimitFields;
    timeLimitMs?: number;
    argument?: string;
  } = {},
): Promise<Uuid> {
  return await c.submit({
    program,
    programName: "prog",
    argument: o.argument ?? "",
    chunks: 1,
    inputs: o.inputs ?? [],
    timeLimitMs: o.timeLimitMs ?? 120_000,
    limits: o.limits,
  });
}

/** Runs the victim and, while it holds its files, the hostile program; returns both results. */
async function victimAndHostile(cluster: LocalCluster, control: boolean) {
  const alice = clientAs(cluster, "alice");
  const mallory = clientAs(cluster, "mallory");
  try {
    const tag = nonce();
    const secret = enc.encode(`TOP-SECRET-${tag}\n`);
    const dir = await Deno.makeTempDir();
    await Deno.writeFile(`${dir}/secret.txt`, secret);
    await Deno.writeFile(`${dir}/own.txt`, enc.encode("mallory's own input\n"));
    const [sec] = await alice.put([`${dir}/secret.txt`]);
    const [own] = await mallory.put([`${dir}/own.txt`]);
    await Deno.remove(dir, { recursive: true });
    const victim = await submit(alice, victimProgram(tag), {
      inputs: [{ id: sec.id, name: "secret.txt" }],
    });
    const data = `${cluster.dataDir}/worker1`;
    // The victim is running, its output written, its input cached once it read it: wait for
    // its marker (found on the host, wherever the worker keeps the chunk's tmp).
    const markerDir = await waitFor(
      "the victim's ready marker",
      () => findFile(`${data}/chunks`, `victim-ready-${tag}`),
      { timeoutMs: 60_000, intervalMs: 50 },
    );
    // A listener on every address of the host: the sandbox must not reach it either.
    const listener = Deno.listen({ hostname: "0.0.0.0", port: 0 });
    const ports = [
      ...[...cluster.info.masters, cluster.info.storage, ...cluster.info.balancer.split(",")]
        .map((ep) => Number(/:(\d+)$/.exec(ep)![1])),
      (listener.addr as Deno.NetAddr).port,
    ];
    const hosts = Deno.networkInterfaces()
      .filter((i) => i.family === "IPv4" && !i.address.startsWith("127."))
      .map((i) => i.address);
    const target: Target = {
      victimJob: uuidToString(victim),
      secretIdHex: idHex(secret),
      mount: `${data}/mnt`,
      data,
      keys: cluster.keysDir!,
      ports,
      hosts,
      control,
    };
    const accepting = (async () => {
      for await (const conn of listener) conn.close();
    })().catch(() => {});
    let hostileStatus: JobStatusResponse;
    let fuseProbe: { other: boolean; victimUid: boolean; rootListing: string } | null = null;
    try {
      const hostile = await submit(mallory, hostileProgram(target), {
        inputs: [{ id: own.id, name: "own.txt" }],
      });
      hostileStatus = await waitForJob(mallory, hostile);
      if (!control) fuseProbe = await probeMountFromHost(`${data}/mnt`, target.victimJob, tag);
    } finally {
      listener.close();
      await accepting;
    }
    await Deno.writeTextFile(`${markerDir}/release`, "go\n");
    const victimStatus = await waitForJob(alice, victim);
    const hostileOut = await output(mallory, hostileStatus, "stdout");
    return {
      alice,
      mallory,
      secret,
      secretId: sec.id,
      tag,
      hostileStatus,
      hostileOut,
      victimStatus,
      fuseProbe,
      data,
    };
  } catch (e) {
    await alice.close();
    await mallory.close();
    throw e;
  }
}

/**
 * The mount itself, from the host, while the victim runs: a process of another uid cannot
 * open the victim's input or list the job; the victim chunk's own uid (taken from its running
 * process) can, which shows the first result is the mount's refusal, not a wrong path.
 */
async function probeMountFromHost(mount: string, job: string, tag: string) {
  // The victim's shell: a program with its job id in its environment (other workers on the host
  // may run programs of the same name).
  const victimPid = await waitFor(
    "the victim's waiting process",
    () =>
      processesWithArgv(["/bin/sh", "/dsys/program"]).find((pid) => {
        try {
          return Deno.readTextFileSync(`/proc/${pid}/environ`).includes(`DSYS_JOB_ID=${job}\0`);
        } catch {
          return false;
        }
      }) ?? 0,
    { timeoutMs: 30_000, intervalMs: 50 },
  );
  const victimUid = Deno.statSync(`/proc/${victimPid}`).uid!;
  assert.ok(victimUid >= 1000, `the victim runs as uid ${victimUid}`);
  // Started in the mount (cwd set while still root), then dropped to `uid`: relative paths
  // reach the mount without walking the host's 0700 parent directories.
  const as = async (uid: number, cmd: string[]) => {
    const r = await new Deno.Command("setpriv", {
      args: [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", ...cmd],
      cwd: mount,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { ok: r.success, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
  };
  const other = await as(1_999_999_000, ["cat", `${job}/secret.txt`]);
  const own = await as(victimUid, ["cat", `${job}/secret.txt`]);
  const listing = await as(1_999_999_000, ["ls", "-A", "."]);
  return {
    other: other.ok,
    victimUid: own.ok && own.out.includes(`TOP-SECRET-${tag}`),
    rootListing: listing.out,
  };
}

const users = ["alice", "mallory"];

/** Bytes `dir` takes on its own filesystem (du -x: not the chunks' tmpfs or the FUSE mount). */
async function duBytes(dir: string): Promise<number> {
  const r = await new Deno.Command("du", { args: ["-sbx", dir], stdout: "piped" }).output();
  return Number(dec.decode(r.stdout).split(/\s/)[0]);
}

/** Both ways a worker runs a chunk: in its slot's warm sandbox (the default) and in a sandbox
 * of its own (`--cold-sandbox`, and every chunk with the host network). */
const MODES = [
  { name: "warm slot", args: [] },
  { name: "cold", args: ["--cold-sandbox"] },
];

for (const mode of MODES) {
  Deno.test(`sandbox (${mode.name}): a hostile chunk beside a victim on one worker gets nothing of it`, async (t) => {
    await withCluster(
      { workers: 1, slotsPerWorker: 3, users, extraArgs: { worker: mode.args } },
      async (cluster, admin) => {
        const before = (await jobIds(admin)).length;
        const r = await victimAndHostile(cluster, false);
        try {
          const lines = r.hostileOut.trim().split("\n");
          const denied = (name: string) =>
            assert.ok(
              lines.some((l) => l === `DENIED ${name}`) &&
                !lines.some((l) => l.startsWith(`LEAK ${name}`) || l.startsWith(`WROTE ${name}`)),
              `${name}:\n${r.hostileOut}`,
            );
          assert.equal(
            r.hostileStatus.state,
            ChunkState.Succeeded,
            r.hostileStatus.chunks[0].reason,
          );
          await t.step("/etc/shadow and the node's keys are unreadable", () => {
            denied("shadow");
            denied("worker-key");
            denied("admin-key");
          });
          await t.step(
            "the other job's inputs: not through the mount, not through the cache",
            () => {
              denied("victim-input-mount");
              denied("victim-input-relative");
              denied("mount-listing");
              denied("cache-file");
              denied("cache-listing");
              assert.ok(!r.hostileOut.includes(`TOP-SECRET-${r.tag}`), r.hostileOut);
            },
          );
          await t.step("the mount refuses other uids, and serves the victim's own", () => {
            assert.equal(r.fuseProbe!.other, false, "another uid read the victim's input");
            assert.equal(r.fuseProbe!.victimUid, true, "the victim's uid could not read its input");
            assert.equal(r.fuseProbe!.rootListing.trim(), "", "another uid listed job directories");
          });
          await t.step(
            "the other job's outputs: unreadable, unwritable; stored as it wrote them",
            async () => {
              denied("victim-output");
              denied("victim-output-write");
              assert.equal(
                r.victimStatus.state,
                ChunkState.Succeeded,
                r.victimStatus.chunks[0].reason,
              );
              assert.equal(
                await output(r.alice, r.victimStatus, "result.txt"),
                `victim result ${r.tag}\n`,
              );
            },
          );
          await t.step("nothing outside its own output dir and tmp is writable", () => {
            for (const n of ["usr", "etc", "data-dir", "input-dir", "cache-poison"]) denied(n);
            assert.ok(lines.includes("OWN ok"), r.hostileOut);
          });
          await t.step("the cache is unpoisoned: the victim read the stored bytes", async () => {
            const digest = sha256(r.secret).toString("hex");
            assert.equal(
              (await output(r.alice, r.victimStatus, "stdout")).trim(),
              `${digest}\n${digest}`,
            );
            const cached = await Deno.readFile(`${r.data}/cache/${uuidToHex(r.secretId)}`);
            assert.equal(sha256(cached).toString("hex"), digest);
          });
          await t.step(
            "no connection to any port of the cluster or the host; no submission",
            async () => {
              const connects = lines.filter((l) =>
                l.includes("connect") || l.startsWith("CONNECTED")
              );
              assert.ok(connects.length >= 4, r.hostileOut);
              assert.deepEqual(connects.filter((l) => !l.startsWith("DENIED")), []);
              assert.equal((await jobIds(admin)).length, before + 2);
            },
          );
        } finally {
          await r.alice.close();
          await r.mallory.close();
        }
      },
    );
  });

  Deno.test(`sandbox (${mode.name}): limits and clean-up are the kernel's, with their failure codes`, async (t) => {
    await withCluster(
      { workers: 1, slotsPerWorker: 2, users, extraArgs: { worker: mode.args } },
      async (cluster, admin) => {
        const c = clientAs(cluster, "mallory");
        const data = `${cluster.dataDir}/worker1`;
        try {
          await t.step("no process survives its chunk: setsid, double fork, nohup", async () => {
            const tok = String(crypto.getRandomValues(new Uint32Array(1))[0]); // sleep 1001.<tok> is a number
            // The program waits (bounded) until it sees all three in its own /proc, so they were
            // running when it ended.
            const job = await submit(
              c,
              enc.encode(`#!/bin/bash
setsid sleep 1001.${tok} < /dev/null > /dev/null 2>&1 &
( (sleep 1002.${tok} < /dev/null > /dev/null 2>&1 &) & )
nohup sleep 1003.${tok} < /dev/null > /dev/null 2>&1 &
for i in $(seq 600); do
  n=0
  for p in /proc/[0-9]*; do grep -qa "${tok}" "$p/cmdline" 2>/dev/null && n=$((n+1)); done
  [ $n -ge 3 ] && break
  sleep 0.05
done
echo "alive $n"
`),
            );
            const s = await waitForJob(c, job);
            assert.equal(s.state, ChunkState.Succeeded, s.chunks[0].reason);
            // All three were running when the program ended (counted in its own /proc)…
            assert.equal((await output(c, s, "stdout")).trim(), "alive 3");
            // …and none is, anywhere on the host, once the chunk is reported.
            assert.deepEqual(processesWith(tok), []);
          });
          await t.step("no process survives a time limit either", async () => {
            const tok = String(crypto.getRandomValues(new Uint32Array(1))[0]); // sleep 1001.<tok> is a number
            const job = await submit(
              c,
              enc.encode(`#!/bin/bash
setsid sleep 1004.${tok} < /dev/null > /dev/null 2>&1 &
( (sleep 1005.${tok} < /dev/null > /dev/null 2>&1 &) & )
exec sleep 1006.${tok}
`),
              { timeLimitMs: 1500 },
            );
            const s = await waitForJob(c, job);
            assert.equal(s.chunks[0].failure, FailureCode.Timeout, s.chunks[0].reason);
            assert.deepEqual(processesWith(tok), []);
          });
          await t.step("a fork bomb is held at its pids limit and stopped with PIDS", async () => {
            // Forks for as long as it lives, each child living on: the classic bomb (`:(){ :|:& };:`)
            // may end on its own before its processes reach the limit, this one cannot.
            const job = await submit(
              c,
              enc.encode("#!/bin/bash\nwhile :; do sleep 1000 & done\n"),
              {
                limits: { maxProcs: 32 },
                timeLimitMs: 60_000,
              },
            );
            const s = await waitForJob(c, job);
            assert.equal(s.state, ChunkState.Failed);
            assert.equal(s.chunks[0].failure, FailureCode.Pids, s.chunks[0].reason);
            assert.match(s.chunks[0].reason, /limit of 32 processes/);
          });
          await t.step("a memory hog is stopped with OOM", async () => {
            const job = await submit(
              c,
              enc.encode(
                "#!/bin/sh\nhead -c 1G /dev/zero | tail -c 1G > /dev/null\necho survived\n",
              ),
              { limits: { memoryBytes: 64 * MiB }, timeLimitMs: 60_000 },
            );
            const s = await waitForJob(c, job);
            assert.equal(s.state, ChunkState.Failed);
            assert.equal(s.chunks[0].failure, FailureCode.Oom, s.chunks[0].reason);
            assert.match(s.chunks[0].reason, /memory limit of 64MiB/);
          });
          await t.step(
            "a disk filler stops at its quota; the worker's disk is untouched",
            async () => {
              const before = await duBytes(data);
              const job = await submit(
                c,
                enc.encode(
                  '#!/bin/sh\nstat -f -c %T "$DSYS_OUTPUT_DIR"\n' +
                    'head -c 512M /dev/zero > "$DSYS_OUTPUT_DIR/fill"\nexit 0\n',
                ),
                { limits: { diskBytes: 8 * MiB }, timeLimitMs: 60_000 },
              );
              const s = await waitForJob(c, job);
              assert.equal(s.chunks[0].failure, FailureCode.OutputQuota, s.chunks[0].reason);
              assert.equal((await output(c, s, "stdout")).trim(), "tmpfs");
              const fill = s.chunks[0].outputs.find((o) => o.name === "fill")!;
              assert.ok(fill.size > 0 && fill.size <= 8 * MiB, `fill of ${fill.size} bytes`);
              // The data dir (its own filesystem only: -x) grew by the program's copy and cache file,
              // not by anything the chunk wrote.
              const grown = (await duBytes(data)) - before;
              assert.ok(grown < 256 * 1024, `worker data dir grew by ${grown} bytes`);
            },
          );
          await t.step("a CPU burner is stopped at its CPU time with CPU_TIME", async () => {
            const job = await submit(c, enc.encode("#!/bin/sh\nwhile :; do :; done\n"), {
              limits: { cpuTimeMs: 1000 },
              timeLimitMs: 120_000,
            });
            const s = await waitForJob(c, job);
            assert.equal(s.chunks[0].failure, FailureCode.CpuTime, s.chunks[0].reason);
          });
          await t.step("more than the worker allows is refused with POLICY", async () => {
            for (const limits of [{ memoryBytes: 64 * 2 ** 30 }, { network: 1 }]) {
              const job = await submit(c, enc.encode("#!/bin/sh\necho ran\n"), { limits });
              const s = await waitForJob(c, job);
              assert.equal(s.chunks[0].failure, FailureCode.Policy, s.chunks[0].reason);
              assert.deepEqual(s.chunks[0].outputs, [], "the program must not have run");
            }
          });
          await t.step("a cache file changed on disk is fetched again, never served", async () => {
            const bytes = enc.encode(`cached bytes ${nonce()}\n`.repeat(1000));
            const dir = await Deno.makeTempDir();
            await Deno.writeFile(`${dir}/in.txt`, bytes);
            const [f] = await c.put([`${dir}/in.txt`]);
            await Deno.remove(dir, { recursive: true });
            const reader = enc.encode(
              '#!/bin/sh\nsha256sum < "$DSYS_INPUT_DIR/in.txt" | cut -c1-64\n',
            );
            const run = async () => {
              const job = await submit(c, reader, { inputs: [{ id: f.id, name: "in.txt" }] });
              const s = await waitForJob(c, job);
              assert.equal(s.state, ChunkState.Succeeded, s.chunks[0].reason);
              return (await output(c, s, "stdout")).trim();
            };
            const digest = sha256(bytes).toString("hex");
            assert.equal(await run(), digest);
            const path = `${data}/cache/${uuidToHex(f.id)}`;
            const fetches = async () =>
              (await admin.storage.stats()).fetchCounts.get(uuidToHex(f.id)) ?? 0;
            const fetched = await fetches();
            // Flip one byte in place (same size, same inode): what a bad disk or a stray write does.
            const file = await Deno.open(path, { read: true, write: true });
            const b = new Uint8Array(1);
            await file.seek(100, Deno.SeekMode.Start);
            await file.read(b);
            b[0] ^= 0xff;
            await file.seek(100, Deno.SeekMode.Start);
            await file.write(b);
            file.close();
            assert.notEqual(sha256(await Deno.readFile(path)).toString("hex"), digest);
            assert.equal(await run(), digest);
            assert.equal(await fetches(), fetched + 1, "the corrupt file was fetched again");
            assert.equal(sha256(await Deno.readFile(path)).toString("hex"), digest);
          });
        } finally {
          await c.close();
        }
      },
    );
  });
}

Deno.test("sandbox: --network host only where the worker allows it; loopback otherwise", async () => {
  await withCluster(
    { workers: 1, slotsPerWorker: 1, extraArgs: { worker: ["--allow-host-network"] } },
    async (cluster, admin) => {
      const port = Number(/:(\d+)$/.exec(cluster.info.masters[0])![1]);
      const probe = enc.encode(`#!/bin/bash
if timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/${port}" 2>/dev/null; then echo CONNECTED
else echo DENIED; fi
`);
      const run = async (limits: LimitFields) => {
        const s = await waitForJob(admin, await submit(admin, probe, { limits }));
        assert.equal(s.state, ChunkState.Succeeded, s.chunks[0].reason);
        return (await output(admin, s, "stdout")).trim();
      };
      assert.equal(await run({}), "DENIED");
      assert.equal(await run({ network: 1 }), "CONNECTED");
    },
  );
});

Deno.test("sandbox: the same hostile chunk on a --no-sandbox worker gets everything", async () => {
  // The control of the first test: each probe that said DENIED there finds its leak here.
  await withCluster(
    { workers: 1, slotsPerWorker: 3, users, extraArgs: { worker: ["--no-sandbox"] } },
    async (cluster) => {
      const r = await victimAndHostile(cluster, true);
      try {
        const lines = r.hostileOut.trim().split("\n");
        for (const p of ["shadow", "worker-key", "victim-input-mount", "cache-file"]) {
          assert.ok(lines.some((l) => l.startsWith(`LEAK ${p}`)), `${p}:\n${r.hostileOut}`);
        }
        assert.ok(r.hostileOut.includes(`TOP-SECRET-${r.tag}`));
        assert.ok(lines.includes("WROTE victim-output-write"), r.hostileOut);
        assert.ok(lines.includes("WROTE cache-poison"), r.hostileOut);
        assert.ok(lines.some((l) => l.startsWith("CONNECTED 127.0.0.1:")), r.hostileOut);
        // The victim's stored output is the attacker's text.
        assert.equal(await output(r.alice, r.victimStatus, "result.txt"), "pwned by mallory\n");
      } finally {
        await r.alice.close();
        await r.mallory.close();
      }
    },
  );
});

Deno.test("sandbox: a dead warm slot starts again; a worker's shutdown or death leaves no process of its chunks", async () => {
  // 3 slots: each restarted worker also gets the killed chunks' next attempts (running again,
  // under their old tokens); the last check needs a slot of its own.
  await withCluster({ workers: 1, slotsPerWorker: 3 }, async (cluster, admin) => {
    // A chunk whose program left a setsid'd and a double-forked child, all three running.
    const start = async () => {
      const tok = String(crypto.getRandomValues(new Uint32Array(1))[0]);
      await submit(
        admin,
        enc.encode(`#!/bin/bash
setsid sleep 1001.${tok} < /dev/null > /dev/null 2>&1 &
( (sleep 1002.${tok} < /dev/null > /dev/null 2>&1 &) & )
exec sleep 1003.${tok}
`),
      );
      await waitFor("the chunk's three processes", () => processesWith(tok).length === 3, {
        timeoutMs: 60_000,
        intervalMs: 50,
      });
      return tok;
    };
    const worker = cluster.procs.get("worker1")!;
    // A slot's warm sandbox that died (its dsys-exec killed here) is started again for the
    // slot's next chunk: every slot still runs chunks.
    const node = Array.from(
      await Deno.readFile(`${cluster.dataDir}/worker1/node-id`),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("").slice(0, 12);
    // dsys-exec `slot` processes (not their bwrap, whose argv holds the same words) of this
    // worker's cgroups.
    const slotHelpers = () =>
      processesWith("/dsys/.exec\0slot\0").filter((pid) => {
        try {
          return Deno.readTextFileSync(`/proc/${pid}/cmdline`).startsWith("/dsys/.exec\0") &&
            Deno.readTextFileSync(`/proc/${pid}/cgroup`).includes(`/dsys-${node}/`);
        } catch {
          return false;
        }
      });
    const helpers = await waitFor("the slots' warm sandboxes", () => {
      const h = slotHelpers();
      return h.length === 3 ? h : null;
    }, { timeoutMs: 60_000, intervalMs: 50 });
    for (const pid of helpers!) Deno.kill(pid, "SIGKILL");
    await waitFor("the killed warm sandboxes gone", () => slotHelpers().length === 0, {
      timeoutMs: 30_000,
      intervalMs: 50,
    });
    const job = await admin.submit({
      program: enc.encode("#!/bin/sh\necho $DSYS_CHUNK_INDEX\n"),
      programName: "again",
      argument: "",
      chunks: 6,
      inputs: [],
      timeLimitMs: 60_000,
    });
    const again = await waitForJob(admin, job);
    assert.equal(again.state, ChunkState.Succeeded, again.chunks.map((c) => c.reason).join("; "));
    assert.equal(slotHelpers().length, 3, "each slot has a warm sandbox again");
    // SIGTERM: the worker kills its chunks and exits only once their cgroups are empty.
    const t1 = await start();
    await cluster.kill("worker1", "SIGTERM");
    assert.deepEqual(processesWith(t1), []);
    // SIGKILL: nothing of the worker runs to clean up; the kernel does (bwrap dies with its
    // parent, and the namespace with bwrap's init).
    await cluster.restart("worker1", worker);
    const t2 = await start();
    await cluster.kill("worker1", "SIGKILL");
    await waitFor("no process of the killed worker's chunk", () => processesWith(t2).length === 0, {
      timeoutMs: 30_000,
      intervalMs: 50,
    });
    // A worker started on the same data cleans up after the dead one and runs chunks again.
    await cluster.restart("worker1", worker);
    const s = await waitForJob(admin, await submit(admin, enc.encode("#!/bin/sh\necho back\n")));
    assert.equal(s.state, ChunkState.Succeeded, s.chunks[0].reason);
  });
});
