// The pure parts of the chunk sandbox, argument by argument: the bwrap plan, the program's
// environment, the cgroup layouts of v1, v2 and hybrid hosts, limit resolution and the failure a
// chunk's counters mean, the flags, dsys-exec's status line, and the limits on the wire. Plus the
// host-wide uid claims, with real locks in a temp directory.
import assert from "node:assert/strict";
import {
  accountFiles,
  buildEtc,
  ChunkFs,
  HostClaims,
  INSIDE,
  parseUidRange,
  sandboxArgv,
  sandboxEnv,
  SandboxError,
  type SandboxPlan,
} from "../roles/worker/sandbox.ts";
import {
  cgroupLayout,
  cgroupMounts,
  keyedValue,
  parseCounters,
  selfPaths,
} from "../roles/worker/cgroup.ts";
import {
  checkPolicy,
  DEFAULT_POLICY,
  type LimitPolicy,
  NetworkMode,
  resolveLimits,
  SANDBOX,
} from "../roles/worker/limits.ts";
import { limitFailure } from "../roles/worker/chunk_sandbox.ts";
import { parseSlotReply, slotArgv, slotRequest, VIEW } from "../roles/worker/warm_slot.ts";
import { sandboxOptions } from "../roles/worker/sandbox_flags.ts";
import { parseStatusLine } from "../roles/worker/runner.ts";
import { ByteSizeError, formatBytes, parseBytes } from "../lib/bytes.ts";
import { limitFlagsOf } from "../client/limit_flags.ts";
import { ClientError, failureName } from "../client/commands.ts";
import { decodeCommand, encodeCommand } from "../roles/master/commands.ts";
import {
  decode,
  encode,
  FailureCode,
  limitFieldsOf,
  MessageType,
  randomUuid,
  type WorkerRequest,
} from "../wire/mod.ts";

const MiB = 2 ** 20, GiB = 2 ** 30;

const plan = (o: Partial<SandboxPlan> = {}): SandboxPlan => ({
  exec: "/repo/build/dsys-exec",
  bwrap: "/usr/bin/bwrap",
  cgroupProcs: ["/cg/memory/w/slot-0/cgroup.procs", "/cg/pids/w/slot-0/cgroup.procs"],
  host: { system: [{ path: "/usr", symlink: null }, { path: "/bin", symlink: "usr/bin" }] },
  hide: [],
  uid: 2_000_000_003,
  program: "/data/chunks/.programs/abc.0",
  args: ["the arg"],
  inputDir: "/data/mnt/job-1",
  outDir: "/data/chunks/slot-0/fs/out",
  tmpDir: "/data/chunks/slot-0/fs/tmp",
  etcDir: "/data/chunks/.etc",
  network: NetworkMode.Loopback,
  cpuTimeMs: 0,
  ...o,
});

/** The (SRC, DEST) pairs of every `flag SRC DEST` in argv. */
function pairs(argv: string[], flag: string): [string, string][] {
  const out: [string, string][] = [];
  argv.forEach((a, i) => {
    if (a === flag) out.push([argv[i + 1], argv[i + 2]]);
  });
  return out;
}

Deno.test("sandbox argv: cgroups first, then bwrap with every namespace, then dsys-exec", () => {
  const a = sandboxArgv(plan());
  assert.deepEqual(a.slice(0, 5), [
    "/repo/build/dsys-exec",
    "enter",
    "/cg/memory/w/slot-0/cgroup.procs",
    "/cg/pids/w/slot-0/cgroup.procs",
    "--",
  ]);
  assert.equal(a[5], "/usr/bin/bwrap");
  for (const f of ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"]) {
    assert.ok(a.includes(f), f);
  }
  for (const f of ["--die-with-parent", "--new-session", "--unshare-cgroup-try"]) {
    assert.ok(a.includes(f), f);
  }
  // The command: dsys-exec drops to the slot's uid and gid, then the program at /dsys/program.
  const cmd = a.slice(a.indexOf(INSIDE.exec, a.indexOf("--cap-add")));
  assert.deepEqual(cmd, [
    INSIDE.exec,
    "run",
    "--uid",
    "2000000003",
    "--gid",
    "2000000003",
    "--status-fd",
    "3",
    "--",
    INSIDE.program,
    "the arg",
  ]);
  // Only the two capabilities dsys-exec needs to drop privileges.
  assert.deepEqual(a.filter((_, i) => a[i - 1] === "--cap-add"), ["CAP_SETUID", "CAP_SETGID"]);
});

Deno.test("sandbox argv: exactly these host paths, read-only except out and tmp", () => {
  const a = sandboxArgv(plan({ hide: [{ path: "/usr/local/etc/w1.key", dir: false }] }));
  assert.deepEqual(pairs(a, "--ro-bind"), [
    ["/usr", "/usr"],
    ["/data/chunks/.etc", "/etc"],
    ["/dev/null", "/usr/local/etc/w1.key"],
    ["/data/mnt/job-1", INSIDE.input],
    ["/data/chunks/.programs/abc.0", INSIDE.program],
    ["/repo/build/dsys-exec", INSIDE.exec],
  ]);
  assert.deepEqual(pairs(a, "--bind"), [
    ["/data/chunks/slot-0/fs/tmp", INSIDE.tmp],
    ["/data/chunks/slot-0/fs/out", INSIDE.output],
  ]);
  assert.deepEqual(pairs(a, "--symlink"), [["usr/bin", "/bin"]]);
  assert.ok(a.includes("--proc") && a.includes("--dev"));
  assert.ok(!a.some((x) => x.includes("/cache")), "the cache is never shown");
  assert.equal(a[a.indexOf("--chdir") + 1], INSIDE.tmp);
});

Deno.test("sandbox argv: no inputs, host network, a CPU limit", () => {
  const a = sandboxArgv(plan({ inputDir: null, network: NetworkMode.Host, cpuTimeMs: 1500 }));
  assert.ok(!a.includes("--unshare-net"), "host network keeps the worker's namespace");
  assert.ok(!pairs(a, "--ro-bind").some(([, d]) => d === INSIDE.input));
  const i = a.indexOf(INSIDE.input);
  assert.deepEqual(a.slice(i - 3, i + 1), ["--perms", "0555", "--dir", INSIDE.input]);
  assert.equal(a[a.indexOf("--cpu-secs") + 1], "2", "RLIMIT_CPU rounds up to whole seconds");
});

Deno.test("sandbox env: the program interface, nothing of the worker's", () => {
  const env = sandboxEnv({ jobId: "j", chunkIndex: 3, chunkCount: 8, attempt: 2, argument: "x" });
  assert.deepEqual(env, {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    HOME: "/tmp",
    TMPDIR: "/tmp",
    DSYS_JOB_ID: "j",
    DSYS_CHUNK_INDEX: "3",
    DSYS_CHUNK_COUNT: "8",
    DSYS_ATTEMPT: "2",
    DSYS_ARG: "x",
    DSYS_INPUT_DIR: "/dsys/in",
    DSYS_OUTPUT_DIR: "/dsys/out",
  });
  const f = accountFiles([2_000_000_001, 2_000_000_007]);
  assert.match(f.passwd, /^dsys-0:x:2000000001:2000000001:dsys chunk:\/tmp:\/bin\/sh$/m);
  assert.match(f.passwd, /^dsys-1:x:2000000007:/m);
  assert.match(f.group, /^dsys-1:x:2000000007:$/m);
  assert.doesNotMatch(f.passwd + f.group, /\$|shadow/);
});

const V1_MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;
const V1_SELF = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/7bb\n2:cpuacct:/\n0::/\n";

Deno.test("cgroup layout: v1 (this project's CI machine), a controller per hierarchy", () => {
  const l = cgroupLayout(V1_MOUNTINFO, V1_SELF, () => "hugetlb");
  assert.ok(l.ok);
  assert.deepEqual(l.hierarchies, {
    memory: { version: 1, self: "/sys/fs/cgroup/memory/process_api/7bb" },
    pids: { version: 1, self: "/sys/fs/cgroup/pids" },
    cpu: { version: 1, self: "/sys/fs/cgroup/cpuacct" },
  });
  assert.equal(cgroupMounts(V1_MOUNTINFO).length, 6);
  assert.equal(selfPaths(V1_SELF).get("memory"), "/process_api/7bb");
});

Deno.test("cgroup layout: v2 only; hybrid without cpuacct; what is missing is said", () => {
  const v2 = "30 20 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
  const l2 = cgroupLayout(v2, "0::/system.slice/dsys.service\n", (dir) => {
    assert.equal(dir, "/sys/fs/cgroup/system.slice/dsys.service");
    return "cpu memory pids io";
  });
  assert.ok(l2.ok);
  for (const r of ["memory", "pids", "cpu"] as const) {
    assert.deepEqual(l2.hierarchies[r], {
      version: 2,
      self: "/sys/fs/cgroup/system.slice/dsys.service",
    });
  }
  // Hybrid with memory and pids on v1 but no cpuacct: CPU time from v2's cpu.stat.
  const hybrid = V1_MOUNTINFO.split("\n").filter((l) => !l.includes("cpuacct")).join("\n");
  const lh = cgroupLayout(hybrid, "8:pids:/\n4:memory:/\n0::/w\n", () => "");
  assert.ok(lh.ok);
  assert.deepEqual(lh.hierarchies.cpu, { version: 2, self: "/sys/fs/cgroup/unified/w" });
  assert.equal(lh.hierarchies.memory.version, 1);
  // v2 without the memory controller delegated: an error naming it.
  const none = cgroupLayout(v2, "0::/x\n", () => "cpu pids");
  assert.ok(!none.ok);
  assert.match(none.error, /memory/);
  assert.match(none.error, /--no-sandbox/);
  // A mount of a sub-tree (containers): paths are relative to its root.
  const sub = "50 40 0:40 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
    "51 40 0:41 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n" +
    "52 40 0:42 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct";
  const ls = cgroupLayout(sub, "4:memory:/docker/abc/w\n8:pids:/\n2:cpuacct:/\n", () => null);
  assert.ok(ls.ok);
  assert.equal(ls.hierarchies.memory.self, "/sys/fs/cgroup/memory/w");
});

Deno.test("cgroup counters: v1 and v2 files to OOM kills, refused forks and CPU ms", () => {
  assert.equal(keyedValue("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), 2);
  assert.deepEqual(
    parseCounters({
      memory: { version: 1, text: "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n" },
      pids: "max 7\n",
      cpu: { version: 1, text: "2500000000\n" },
    }),
    { oomKills: 1, forksRefused: 7, cpuMs: 2500 },
  );
  assert.deepEqual(
    parseCounters({
      memory: { version: 2, text: "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n" },
      pids: "max 0\n",
      cpu: { version: 2, text: "usage_usec 1234567\nuser_usec 1\nsystem_usec 2\n" },
    }),
    { oomKills: 1, forksRefused: 0, cpuMs: 1234.567 },
  );
});

Deno.test("limits: defaults fill in, maxima refuse, the network needs the worker's leave", () => {
  const p: LimitPolicy = {
    defaults: { memoryBytes: GiB, maxProcs: 100, cpuTimeMs: 0, diskBytes: 64 * MiB },
    maxima: { memoryBytes: 4 * GiB, maxProcs: 1000, cpuTimeMs: 60_000, diskBytes: GiB },
    allowHostNetwork: false,
  };
  const ok = resolveLimits({}, p);
  assert.ok(ok.ok);
  assert.deepEqual(ok.limits, {
    memoryBytes: GiB,
    maxProcs: 100,
    cpuTimeMs: 0,
    diskBytes: 64 * MiB,
    network: NetworkMode.Loopback,
  });
  const asked = resolveLimits({ memoryBytes: 2 * GiB, maxProcs: 8, cpuTimeMs: 500 }, p);
  assert.ok(asked.ok);
  assert.deepEqual([asked.limits.memoryBytes, asked.limits.maxProcs], [2 * GiB, 8]);
  const big = resolveLimits({ memoryBytes: 8 * GiB }, p);
  assert.ok(!big.ok);
  assert.deepEqual([big.refusal.limit, big.refusal.allowed], ["memoryBytes", 4 * GiB]);
  assert.ok(!resolveLimits({ cpuTimeMs: 120_000 }, p).ok);
  assert.ok(!resolveLimits({ memoryBytes: MiB }, p).ok, "below what a sandbox needs");
  const net = resolveLimits({ network: NetworkMode.Host }, p);
  assert.ok(!net.ok);
  assert.match(net.refusal.reason, /--allow-host-network/);
  const allowed = resolveLimits({ network: 1 }, { ...p, allowHostNetwork: true });
  assert.ok(allowed.ok && allowed.limits.network === NetworkMode.Host);
  assert.ok(!resolveLimits({ network: 7 }, { ...p, allowHostNetwork: true }).ok);
});

Deno.test("limits: the policy's relations hold and are checked", () => {
  assert.equal(checkPolicy(DEFAULT_POLICY), "");
  const d = DEFAULT_POLICY.defaults, m = DEFAULT_POLICY.maxima;
  assert.ok(d.diskBytes <= d.memoryBytes, "tmpfs pages count as memory");
  assert.match(checkPolicy({ ...DEFAULT_POLICY, maxima: { ...m, maxProcs: 1 } }), /max maxProcs/);
  assert.match(
    checkPolicy({ ...DEFAULT_POLICY, defaults: { ...d, diskBytes: 2 * d.memoryBytes } }),
    /diskBytes must be <= default memoryBytes/,
  );
  assert.match(
    checkPolicy({ ...DEFAULT_POLICY, maxima: { ...m, cpuTimeMs: 1000 } }),
    /default must be > 0/,
  );
  assert.ok(SANDBOX.uidFirst + SANDBOX.uidCount < 2 ** 31);
  assert.ok(SANDBOX.overheadProcs >= 4, "a warm slot's bwrap and dsys-exec, a chunk's C and init");
});

Deno.test("limit failures: the kernel's records first, then CPU, then disk", () => {
  const l = {
    memoryBytes: 64 * MiB,
    maxProcs: 32,
    cpuTimeMs: 1000,
    diskBytes: 8 * MiB,
    network: NetworkMode.Loopback,
  };
  const e = { oomKills: 0, forksRefused: 0, cpuMs: 10, diskFull: false, signal: 0 };
  assert.equal(limitFailure(e, l), null);
  assert.equal(limitFailure({ ...e, oomKills: 1, forksRefused: 5 }, l)?.failure, FailureCode.Oom);
  const pids = limitFailure({ ...e, forksRefused: 1, diskFull: true }, l)!;
  assert.equal(pids.failure, FailureCode.Pids);
  assert.match(pids.reason, /limit of 32 processes \(the kernel refused 1 fork\)/);
  assert.equal(limitFailure({ ...e, cpuMs: 1000 }, l)?.failure, FailureCode.CpuTime);
  assert.equal(limitFailure({ ...e, signal: 24 }, l)?.failure, FailureCode.CpuTime, "SIGXCPU");
  assert.equal(limitFailure({ ...e, cpuMs: 5000 }, { ...l, cpuTimeMs: 0 }), null, "no limit");
  const disk = limitFailure({ ...e, diskFull: true }, l)!;
  assert.equal(disk.failure, FailureCode.OutputQuota);
  assert.match(disk.reason, /8MiB/);
});

Deno.test("flags: worker limit flags, uid ranges; submit limit flags", () => {
  const o = sandboxOptions({
    "default-memory": "512MiB",
    "max-memory": "2G",
    "default-procs": "64",
    "max-cpu-time": "10m",
    "default-cpu-time": "1m",
    "default-disk": "100M",
    "allow-host-network": true,
    "sandbox-uids": "3000000-3000009",
  });
  assert.equal(o.sandbox, true);
  assert.deepEqual(o.sandboxUids, { first: 3_000_000, count: 10 });
  assert.deepEqual(o.limits.defaults, {
    memoryBytes: 512 * MiB,
    maxProcs: 64,
    cpuTimeMs: 60_000,
    diskBytes: 100 * MiB,
  });
  assert.equal(o.limits.maxima.memoryBytes, 2 * GiB);
  assert.equal(o.limits.allowHostNetwork, true);
  assert.equal(sandboxOptions({ "no-sandbox": true }).sandbox, false);
  assert.throws(() => sandboxOptions({ "default-memory": "lots" }), SandboxError);
  assert.throws(() => sandboxOptions({ "max-memory": "1M" }), /chunk limits/);
  assert.throws(() => parseUidRange("0-10"), SandboxError);
  assert.throws(() => parseUidRange("5000-4000"), SandboxError);
  assert.deepEqual(
    limitFlagsOf({ memory: "1GiB", procs: "16", "cpu-time": "30s", disk: "64M", network: "host" }),
    { memoryBytes: GiB, maxProcs: 16, cpuTimeMs: 30_000, diskBytes: 64 * MiB, network: 1 },
  );
  assert.deepEqual(limitFlagsOf({}), {});
  assert.throws(() => limitFlagsOf({ network: "lan" }), ClientError);
  assert.throws(() => limitFlagsOf({ procs: "0" }), ClientError);
});

Deno.test("byte sizes: parse and format", () => {
  assert.equal(parseBytes("4096"), 4096);
  assert.equal(parseBytes("64K"), 65536);
  assert.equal(parseBytes("1.5GiB"), 1.5 * GiB);
  assert.equal(parseBytes("512mb"), 512 * MiB);
  assert.throws(() => parseBytes("12 parsecs"), ByteSizeError);
  assert.throws(() => parseBytes("-1"), ByteSizeError);
  assert.equal(formatBytes(8 * MiB), "8MiB");
  assert.equal(formatBytes(1536), "1536");
  assert.equal(formatBytes(2048), "2KiB");
});

Deno.test("dsys-exec status lines", () => {
  assert.deepEqual(parseStatusLine("exit 3\n"), { kind: "exit", code: 3 });
  assert.deepEqual(parseStatusLine("signal 11\n"), { kind: "signal", signal: 11 });
  assert.deepEqual(parseStatusLine("exec-error 8\n"), { kind: "exec-error", errno: 8 });
  assert.equal(parseStatusLine(""), null);
  assert.equal(parseStatusLine("exit 3\nexit 4\n"), null);
});

Deno.test("limits on the wire: job_submit → log → worker_request keep them; names of codes", () => {
  const limits = { memoryBytes: 3 * GiB, maxProcs: 9, cpuTimeMs: 1234, diskBytes: MiB, network: 1 };
  const req: WorkerRequest = {
    type: MessageType.WorkerRequest,
    node: randomUuid(),
    job: randomUuid(),
    programId: randomUuid(),
    programSize: 10,
    inputFiles: [],
    chunkIndex: 0,
    numChunks: 1,
    argument: new Uint8Array(0),
    timeLimitMs: 0,
    attempt: 1,
    ...limits,
  };
  const back = decode(encode(req)) as WorkerRequest;
  assert.deepEqual(limitFieldsOf(back), limits);
  assert.equal(
    limitFieldsOf({ ...req, memoryBytes: 0, maxProcs: 0, cpuTimeMs: 0, diskBytes: 0, network: 0 }),
    null,
  );
  const spec = {
    jobId: randomUuid(),
    clientId: randomUuid(),
    seq: 1,
    programName: "p",
    programId: randomUuid(),
    programSize: 10,
    argument: new Uint8Array(0),
    numChunks: 1,
    timeLimitMs: 1000,
    inputs: [],
    submittedAtMs: 1,
    owner: "alice",
    limits,
  };
  const cmd = decodeCommand(encodeCommand({ kind: "submit", spec }));
  assert.ok(cmd.kind === "submit");
  assert.deepEqual(cmd.spec, spec);
  const { limits: _, ...bare } = spec;
  const cmd0 = decodeCommand(encodeCommand({ kind: "submit", spec: bare }));
  assert.ok(cmd0.kind === "submit" && !("limits" in cmd0.spec), "no limits: none kept");
  for (const [name, code] of Object.entries(FailureCode)) {
    assert.equal(
      failureName(code).replaceAll("_", "").toLowerCase(),
      name.toLowerCase(),
      `failureName(${code})`,
    );
  }
});

Deno.test("host claims: per-slot uids are never shared on a host; a node runs once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-claims-" });
  try {
    const range = { first: 3_100_000, count: 4 };
    const a = HostClaims.claim(dir, "dsys-aaaa", 2, range);
    const b = HostClaims.claim(dir, "dsys-bbbb", 2, range);
    assert.deepEqual([...a.uids, ...b.uids].sort(), [3_100_000, 3_100_001, 3_100_002, 3_100_003]);
    assert.throws(() => HostClaims.claim(dir, "dsys-cccc", 1, range), /--sandbox-uids/);
    assert.throws(() => HostClaims.claim(dir, "dsys-aaaa", 1, { first: 3_200_000, count: 4 }));
    assert.equal(a.isStale("dsys-bbbb"), false, "b is alive");
    b.release();
    assert.equal(a.isStale("dsys-bbbb"), true, "b is gone");
    const c = HostClaims.claim(dir, "dsys-cccc", 2, range);
    assert.deepEqual(c.uids.sort(), [...b.uids].sort(), "b's uids are free again");
    a.release();
    c.release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sandbox /etc: the allow-list copied, world-readable files only, our passwd", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-etc-" });
  try {
    await Deno.mkdir(`${dir}/src/ssl/certs`, { recursive: true });
    await Deno.mkdir(`${dir}/src/ssl/private`, { recursive: true });
    await Deno.writeTextFile(`${dir}/src/hosts`, "127.0.0.1 localhost\n", { mode: 0o644 });
    await Deno.writeTextFile(`${dir}/src/shadow`, "root:$6$secret:::\n", { mode: 0o640 });
    await Deno.writeTextFile(`${dir}/src/resolv.conf`, "secret-ish\n", { mode: 0o600 });
    await Deno.writeTextFile(`${dir}/src/ssl/certs/ca.pem`, "CERT\n", { mode: 0o644 });
    await Deno.writeTextFile(`${dir}/src/ssl/private/key.pem`, "KEY\n", { mode: 0o644 });
    await Deno.symlink("/usr/share/zoneinfo/UTC", `${dir}/src/localtime`);
    await Deno.writeTextFile(
      `${dir}/src/passwd`,
      "root:x:0:0::/root:/bin/bash\nalice:x:1000:1000\n",
    );
    const n = buildEtc(`${dir}/etc`, [2_000_000_001], `${dir}/src`);
    assert.equal(n, 3, "hosts, ssl/certs/ca.pem, localtime");
    const names = [...Deno.readDirSync(`${dir}/etc`)].map((e) => e.name).sort();
    assert.deepEqual(names, ["group", "hosts", "localtime", "passwd", "ssl"]);
    assert.equal(Deno.readLinkSync(`${dir}/etc/localtime`), "/usr/share/zoneinfo/UTC");
    assert.deepEqual([...Deno.readDirSync(`${dir}/etc/ssl`)].map((e) => e.name), ["certs"]);
    assert.equal((Deno.statSync(`${dir}/etc/hosts`).mode ?? 0) & 0o777, 0o644);
    assert.doesNotMatch(await Deno.readTextFile(`${dir}/etc/passwd`), /alice/);
    // Rebuilt from scratch at every start: what left the host's /etc leaves the sandbox's.
    await Deno.remove(`${dir}/src/hosts`);
    assert.equal(buildEtc(`${dir}/etc`, [2_000_000_001], `${dir}/src`), 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("warm slot: its sandbox argv, requests and replies", () => {
  const a = slotArgv({
    exec: "/repo/build/dsys-exec",
    bwrap: "/usr/bin/bwrap",
    cgroupProcs: ["/cg/pids/w/slot-1/cgroup.procs"],
    system: [{ path: "/usr", symlink: null }],
    hide: [],
    etcDir: "/data/chunks/.etc",
    viewDir: "/data/chunks/slot-1/view",
    uid: 2_000_000_001,
  });
  assert.deepEqual(a.slice(0, 5), [
    "/repo/build/dsys-exec",
    "enter",
    "/cg/pids/w/slot-1/cgroup.procs",
    "--",
    "/usr/bin/bwrap",
  ]);
  // Network, IPC, UTS of the slot's own; PID, mount and IPC namespaces come per chunk.
  assert.ok(a.includes("--unshare-net") && a.includes("--unshare-ipc"));
  assert.ok(!a.includes("--unshare-pid"));
  const v = "/data/chunks/slot-1/view";
  assert.deepEqual(pairs(a, "--bind"), [
    [v, VIEW],
    [`${v}/in`, INSIDE.input],
    [`${v}/out`, INSIDE.output],
    [`${v}/tmp`, INSIDE.tmp],
    [`${v}/program`, INSIDE.program],
  ]);
  assert.deepEqual(
    a.slice(a.indexOf(INSIDE.exec, a.indexOf("--cap-add"))),
    [INSIDE.exec, "slot", "--uid", "2000000001", "--req-fd", "3", "--rep-fd", "4"],
  );
  const req = new TextDecoder().decode(slotRequest(7, 2, ["/dsys/program", "a b"], ["X=1"]));
  assert.equal(req, "30\n7\u00002\u00002\u0000/dsys/program\u0000a b\u00001\u0000X=1\u0000");
  assert.deepEqual(parseSlotReply("ready 4242"), { kind: "ready", pid: 4242 });
  assert.deepEqual(parseSlotReply("7 started 99"), { kind: "started", seq: 7, pid: 99 });
  assert.deepEqual(parseSlotReply("7 signal 9"), {
    kind: "status",
    seq: 7,
    end: { kind: "signal", signal: 9 },
  });
  assert.deepEqual(parseSlotReply("7 end"), { kind: "end", seq: 7 });
  assert.equal(parseSlotReply("7 exit"), null);
  assert.equal(parseSlotReply("hello"), null);
});

Deno.test("chunk tmpfs: its size is the disk limit; sealed, nobody writes it, root included", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-chunkfs-" });
  await Deno.mkdir(`${dir}/fs`);
  const fs = new ChunkFs(`${dir}/fs`, `${dir}/status`);
  try {
    fs.mount(256 * 1024, 2_000_000_001);
    assert.equal(Deno.statSync(fs.out).uid, 2_000_000_001);
    assert.equal((Deno.statSync(fs.tmp).mode ?? 0) & 0o7777, 0o1777);
    await Deno.writeFile(`${fs.out}/a`, new Uint8Array(100 * 1024));
    assert.equal(fs.full(), false);
    await assert.rejects(Deno.writeFile(`${fs.out}/b`, new Uint8Array(512 * 1024)));
    assert.equal(fs.full(), true, "ENOSPC at the limit, and it says so");
    await Deno.remove(`${fs.out}/b`);
    fs.seal();
    await assert.rejects(Deno.writeFile(`${fs.out}/a`, new Uint8Array(1)), /Read-only/);
    await assert.rejects(Deno.writeFile(`${fs.root}/new`, new Uint8Array(1)), /Read-only/);
    assert.equal((await Deno.readFile(`${fs.out}/a`)).length, 100 * 1024, "still readable");
  } finally {
    fs.unmount();
    await Deno.remove(dir, { recursive: true });
  }
});
