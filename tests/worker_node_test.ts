// Integration test of the worker role: a real storage process, a real worker process (with its
// FUSE mount), and this test acting as balancer and master through RpcServers, so it sees exactly
// what the worker sends. Secure like every real cluster (tests/keys_helper.ts): storage and the
// worker run with their keys, the fake balancer and masters serve with balancer and master keys
// over CURVE, and the fake balancer mints what the real one puts in a worker_request (the
// placement ticket, one read capability per input, the job owner) under the cluster secret.
import assert from "node:assert/strict";
import {
  ChunkState,
  ErrorCode,
  FailureCode,
  type FileEntry,
  type Message,
  MessageType,
  randomUuid,
  uuidToHex,
  type WorkerHeartbeat,
  type WorkerRegister,
  type WorkerRequest,
  type WorkerRequestAck,
  type WorkerStatus,
} from "../wire/mod.ts";
import { RequestError, RpcServer } from "../lib/rpc.ts";
import { createLogger } from "../lib/log.ts";
import {
  CAP_BYTES,
  checkPlacementTicket,
  placementTicket,
  readCapability,
} from "../lib/capability.ts";
import type { Identity } from "../lib/security.ts";
import { StorageClient } from "../client/storage_client.ts";
import { mountsAt } from "../fuse/mod.ts";
import { waitFor, within } from "./wait.ts";
import { TestKeys } from "./keys_helper.ts";

const root = new URL("..", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();
const log = createLogger("test", "worker-test", {}, () => {});

interface Proc {
  child: Deno.ChildProcess;
  endpoint: string;
  stderr: () => string;
}

/** Spawns `deno run -A <script> …args` and waits for its `listening` line. */
async function spawn(script: string, args: string[]): Promise<Proc> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${root}${script}`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DSYS_LOG: "info" },
  }).spawn();
  let errText = "";
  (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) errText += c;
  })().catch(() => {});
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await within(60_000, `${script} listening`, reader.read());
    if (done) throw new Error(`${script} exited before listening:\n${errText}`);
    buf += value;
    const m = buf.match(/^(\{.*"event":"listening".*\})$/m);
    if (m) {
      (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })().catch(() => {});
      return { child, endpoint: JSON.parse(m[1]).endpoint, stderr: () => errText };
    }
  }
}

/** Collects every message a fake node receives; lets the test wait for one. */
class Inbox {
  msgs: { msg: Message; peer: Uint8Array }[] = [];
  /** Keyring names of the keys the messages came from. */
  senders = new Set<string>();
  #waiters: (() => void)[] = [];
  add(msg: Message, peer: Uint8Array, from: Identity | null) {
    this.senders.add(from?.name ?? "(no key)");
    this.msgs.push({ msg, peer });
    for (const w of this.#waiters.splice(0)) w();
  }
  async waitFor<T extends Message>(
    pred: (m: Message) => m is T,
    what: string,
    timeoutMs = 20_000,
  ): Promise<{ msg: T; peer: Uint8Array }> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.msgs.find((x) => pred(x.msg));
      if (hit) return hit as { msg: T; peer: Uint8Array };
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

/** Pids of the host's processes whose argv is exactly `argv`. */
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

const isStatus = (job: Uint8Array, chunk: number) => (m: Message): m is WorkerStatus =>
  m.type === MessageType.WorkerStatus && uuidToHex(m.job) === uuidToHex(job) &&
  m.chunkIndex === chunk && m.state !== ChunkState.Running;
const isRegister = (m: Message): m is WorkerRegister => m.type === MessageType.WorkerRegister;

Deno.test("worker: runs chunks through FUSE, caches inputs, reports, times out, refuses", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "dsys-worker-" });
  // m1 plays a follower that redirects, m2 the leader; w1 is the worker's key.
  const keys = await TestKeys.make({
    names: { balancer: ["b1"], master: ["m1", "m2"], storage: ["s1"], worker: ["w1"] },
  });
  const workerKey = keys.publicKey("w1");
  const node = randomUuid();
  const balancerInbox = new Inbox();
  const masterInbox = new Inbox();
  let failNextHeartbeat = false;
  const ok = (): Message => ({ type: MessageType.Ok, node, value: 0 });
  const balancer = new RpcServer({
    node,
    log,
    auth: keys.creds("b1"),
    handler: (msg, peer, from) => {
      balancerInbox.add(msg, peer, from);
      if (msg.type === MessageType.WorkerHeartbeat && failNextHeartbeat) {
        failNextHeartbeat = false;
        // What a restarted balancer says: it does not know this worker.
        throw new RequestError(ErrorCode.NotFound, "unknown worker");
      }
      return ok();
    },
  });
  // What a secure master checks of every worker_status: the ticket minted for the sender's key.
  const badTickets: string[] = [];
  const master = new RpcServer({
    node,
    log,
    auth: keys.creds("m2"),
    handler: (msg, peer, from) => {
      masterInbox.add(msg, peer, from);
      if (
        msg.type === MessageType.WorkerStatus &&
        !checkPlacementTicket(
          keys.secret,
          from?.publicKey ?? "",
          msg.job,
          msg.chunkIndex,
          msg.attempt,
          msg.ticket,
        )
      ) badTickets.push(`chunk ${msg.chunkIndex} state ${msg.state}`);
      return ok();
    },
  });
  const balancerEp = keys.ref("b1", balancer.bind("tcp://127.0.0.1:0"));
  const masterEp = keys.ref("m2", master.bind("tcp://127.0.0.1:0"));
  // A follower that redirects: the worker must follow NOT_LEADER to the real master.
  let redirects = 0;
  const follower = new RpcServer({
    node,
    log,
    auth: keys.creds("m1"),
    handler: () => {
      redirects++;
      // The hint is the leader's member id, NAME@ENDPOINT.
      throw new RequestError(ErrorCode.NotLeader, masterEp);
    },
  });
  const followerEp = keys.ref("m1", follower.bind("tcp://127.0.0.1:0"));

  const storage = await spawn("roles/storage/cli.ts", [
    "--listen",
    "tcp://127.0.0.1:0",
    "--data",
    `${tmp}/storage`,
    ...keys.nodeArgs("s1"),
  ]);
  const storageRef = keys.ref("s1", storage.endpoint);
  // The admin client: it may read every file (the outputs are the job owner's) and get stats.
  const sc = new StorageClient(storageRef, randomUuid(), { auth: keys.creds("admin") });
  let worker: Proc | null = null;
  try {
    const data = enc.encode("hello dsys worker\n".repeat(1000)); // 18000 bytes
    const dataFile = await sc.putBytes(data);
    const unused = await sc.putBytes(enc.encode("nobody reads me"));
    const mount = `${tmp}/mnt`;
    const workerArgs = [
      "--listen",
      "tcp://127.0.0.1:0",
      "--data",
      `${tmp}/worker`,
      "--mount",
      mount,
      "--balancer",
      balancerEp,
      "--storage",
      storageRef,
      "--masters",
      `${followerEp},${masterEp}`,
      "--slots",
      "2",
      "--cache-bytes",
      String(1 << 20),
      "--heartbeat-ms",
      "200",
      ...keys.nodeArgs("w1"),
    ];
    worker = await spawn("roles/worker/cli.ts", workerArgs);
    const reg = await balancerInbox.waitFor(isRegister, "worker_register");
    assert.equal(reg.msg.slots, 2);
    assert.equal(reg.msg.freeSlots, 2);
    assert.deepEqual(reg.msg.files, []);
    const peer = reg.peer;
    // The routing id is the node id, so the balancer can address the worker by it.
    assert.equal(uuidToHex(peer), uuidToHex(reg.msg.node));

    const job = randomUuid();
    const inputs = [
      { id: dataFile.id, size: dataFile.size, name: "data.txt" },
      { id: unused.id, size: unused.size, name: "sub/unused.txt" },
    ];
    // What the balancer mints for the worker's key: good past the time limit (or a day).
    const capExpiry = (timeLimitMs: number) =>
      Date.now() + (timeLimitMs || 24 * 3600_000) + 10 * 60_000;
    // Programs are stored files: each request names one stored here (ids of all of them kept).
    const programIds = new Set<string>();
    const request = async (
      chunkIndex: number,
      program: string,
      timeLimitMs = 20_000,
      inputFiles: FileEntry[] = inputs,
      argument = "the arg",
    ): Promise<WorkerRequest> => {
      const prog = await sc.putBytes(enc.encode(program));
      programIds.add(uuidToHex(prog.id));
      const capExpiryMs = capExpiry(timeLimitMs);
      const caps = new Uint8Array(CAP_BYTES * inputFiles.length);
      inputFiles.forEach((f, i) =>
        caps.set(readCapability(keys.secret, workerKey, f.id, capExpiryMs), CAP_BYTES * i)
      );
      return {
        type: MessageType.WorkerRequest,
        node,
        job,
        programId: prog.id,
        programSize: prog.size,
        inputFiles,
        chunkIndex,
        numChunks: 20,
        argument: enc.encode(argument),
        timeLimitMs,
        attempt: 1,
        capExpiryMs,
        caps,
        ticket: placementTicket(keys.secret, workerKey, job, chunkIndex, 1),
        owner: "admin",
        programCap: readCapability(keys.secret, workerKey, prog.id, capExpiryMs),
      };
    };
    const push = async (req: WorkerRequest | Promise<WorkerRequest>) =>
      (await balancer.push(peer, await req, 10_000)) as WorkerRequestAck;

    // 1. A chunk reads its input through the mount; its output file and stdout get stored.
    // cat, not `wc -c < file`: wc would take the size from stat without reading any byte.
    const readProg =
      '#!/bin/sh\ncat "$DSYS_INPUT_DIR/data.txt" | wc -c > "$DSYS_OUTPUT_DIR/out"\n' +
      'echo "chunk $DSYS_CHUNK_INDEX/$DSYS_CHUNK_COUNT attempt $DSYS_ATTEMPT arg=$1 env=$DSYS_ARG"\n';
    const ack0 = await push(request(0, readProg));
    assert.equal(ack0.type, MessageType.WorkerRequestAck);
    assert.equal(ack0.accepted, true);
    const st0 = (await masterInbox.waitFor(isStatus(job, 0), "status of chunk 0")).msg;
    assert.equal(st0.state, ChunkState.Succeeded, `reason: ${st0.reason}`);
    assert.equal(st0.exitCode, 0);
    assert.equal(st0.failure, FailureCode.None);
    assert.ok(redirects >= 1, "the follower should have redirected the first status");
    // No Running status is required of this short chunk: it is sent only for a chunk that still
    // runs RUNNING_REPORT_DELAY_MS after its start (chunk 11 below, a long one, must send it).
    const names = st0.outputs.map((o) => o.name).sort();
    assert.deepEqual(names, ["out", "stdout"]);
    const out = st0.outputs.find((o) => o.name === "out")!;
    assert.equal(dec.decode(await sc.getBytes(out.id)).trim(), String(data.length));
    const so = st0.outputs.find((o) => o.name === "stdout")!;
    assert.equal(
      dec.decode(await sc.getBytes(so.id)),
      "chunk 0/20 attempt 1 arg=the arg env=the arg\n",
    );
    assert.equal(so.size, enc.encode("chunk 0/20 attempt 1 arg=the arg env=the arg\n").length);
    // chunk_finished reaches the balancer after the master acknowledged the status.
    await balancerInbox.waitFor(
      (m): m is Message => m.type === MessageType.ChunkFinished && m.chunkIndex === 0,
      "chunk_finished 0",
    );

    // 2. A second chunk on the same worker reads the cached copy: storage fetched it once.
    const ack1 = await push(request(1, readProg));
    assert.equal(ack1.accepted, true);
    const st1 = (await masterInbox.waitFor(isStatus(job, 1), "status of chunk 1")).msg;
    assert.equal(st1.state, ChunkState.Succeeded, `reason: ${st1.reason}`);
    const stats = await sc.stats();
    assert.equal(stats.fetchCounts.get(uuidToHex(dataFile.id)), 1);
    // A program is a cached file by id: fetched from storage once for both chunks.
    const readProgId = (await request(1, readProg)).programId;
    assert.equal(stats.fetchCounts.get(uuidToHex(readProgId)), 1);
    // 3. The input no chunk reads was never fetched.
    assert.equal(stats.fetchCounts.get(uuidToHex(unused.id)) ?? 0, 0);
    // The heartbeats announce the newly cached file.
    await balancerInbox.waitFor(
      (m): m is WorkerHeartbeat =>
        m.type === MessageType.WorkerHeartbeat &&
        m.added.some((id) => uuidToHex(id) === uuidToHex(dataFile.id)),
      "heartbeat announcing the cached input",
    );

    // 4. A non-zero exit: Failed with the exit code and the stderr tail.
    await push(request(2, "#!/bin/sh\necho 'something broke' >&2\nexit 7\n"));
    const st2 = (await masterInbox.waitFor(isStatus(job, 2), "status of chunk 2")).msg;
    assert.equal(st2.state, ChunkState.Failed);
    assert.equal(st2.failure, FailureCode.ExitCode);
    assert.equal(st2.exitCode, 7);
    assert.equal(dec.decode(st2.stderrTail), "something broke\n");
    assert.deepEqual(st2.outputs, []);
    // The worker frees the slot before it sends chunk_finished, so after it both slots are free.
    await balancerInbox.waitFor(
      (m): m is Message => m.type === MessageType.ChunkFinished && m.chunkIndex === 2,
      "chunk_finished 2",
    );

    // 5+6. Two hanging chunks fill both slots: a third request is refused; both get killed at
    // their time limit.
    const hang = "#!/bin/sh\nsleep 60\n";
    assert.equal((await push(request(3, hang, 1500))).accepted, true);
    assert.equal((await push(request(4, hang, 1500))).accepted, true);
    const refused = await push(request(5, readProg));
    assert.equal(refused.accepted, false);
    assert.match(refused.reason, /no free slot/);
    // A repeated push of a running chunk is acknowledged without starting it twice.
    assert.equal((await push(request(3, hang, 1500))).accepted, true);
    for (const i of [3, 4]) {
      const st = (await masterInbox.waitFor(isStatus(job, i), `status of chunk ${i}`)).msg;
      assert.equal(st.state, ChunkState.Failed);
      assert.equal(st.failure, FailureCode.Timeout);
      assert.equal(st.signal, 9);
      assert.equal(st.reason, "killed after 1500 ms time limit");
      assert.ok(st.durationMs >= 1500);
    }
    assert.equal(
      masterInbox.msgs.filter((x) => isStatus(job, 3)(x.msg)).length,
      1,
      "chunk 3 ran once",
    );
    // Slots are free again.
    for (const i of [3, 4]) {
      await balancerInbox.waitFor(
        (m): m is Message => m.type === MessageType.ChunkFinished && m.chunkIndex === i,
        `chunk_finished ${i}`,
      );
    }
    assert.equal((await push(request(6, readProg))).accepted, true);
    const st6 = (await masterInbox.waitFor(isStatus(job, 6), "status of chunk 6")).msg;
    assert.equal(st6.state, ChunkState.Succeeded, st6.reason);

    // 7. A balancer that forgot the worker (NOT_FOUND to a heartbeat) gets a new registration,
    // with the cached file listed.
    const before = balancerInbox.msgs.filter((x) => isRegister(x.msg)).length;
    failNextHeartbeat = true;
    await waitFor(
      "a re-registration after NOT_FOUND",
      () => balancerInbox.msgs.filter((x) => isRegister(x.msg)).length > before,
      { intervalMs: 50 },
    );
    const rereg = balancerInbox.msgs.filter((x) => isRegister(x.msg)).at(-1)!.msg as WorkerRegister;
    // The input, and the programs run so far (fetched into the same cache).
    const reregFiles = rereg.files.map(uuidToHex);
    assert.ok(reregFiles.includes(uuidToHex(dataFile.id)), `${reregFiles}`);
    assert.deepEqual(
      reregFiles.filter((f) => f !== uuidToHex(dataFile.id)).sort(),
      [...programIds].sort(),
    );

    // 8. The cache is bounded by --cache-bytes (1 MiB): of two 600 KB inputs read one after the
    // other, the least recently used is evicted (and announced), and a later read fetches again.
    const random = (n: number) => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, i + 65536));
      return b;
    };
    const big1 = await sc.putBytes(random(600_000));
    const big2 = await sc.putBytes(random(600_000));
    const bigInputs = [
      { id: big1.id, size: big1.size, name: "a.bin" },
      { id: big2.id, size: big2.size, name: "b.bin" },
    ];
    const catProg = '#!/bin/sh\ncat "$DSYS_INPUT_DIR/$1" | wc -c\n';
    const runCat = async (i: number, name: string) => {
      assert.equal((await push(request(i, catProg, 20_000, bigInputs, name))).accepted, true);
      const st = (await masterInbox.waitFor(isStatus(job, i), `status of chunk ${i}`)).msg;
      assert.equal(st.state, ChunkState.Succeeded, st.reason);
      const so = st.outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await sc.getBytes(so.id)).trim(), "600000");
    };
    await runCat(7, "a.bin");
    await runCat(8, "b.bin");
    const cached = (id: Uint8Array) =>
      Deno.stat(`${tmp}/worker/cache/${uuidToHex(id)}`).then(() => true, () => false);
    await balancerInbox.waitFor(
      (m): m is WorkerHeartbeat =>
        m.type === MessageType.WorkerHeartbeat &&
        m.evicted.some((id) => uuidToHex(id) === uuidToHex(big1.id)),
      "heartbeat announcing the eviction of a.bin",
    );
    assert.equal(await cached(big1.id), false);
    assert.equal(await cached(big2.id), true);
    await runCat(9, "a.bin");
    const stats2 = await sc.stats();
    assert.equal(stats2.fetchCounts.get(uuidToHex(big1.id)), 2);
    assert.equal(stats2.fetchCounts.get(uuidToHex(big2.id)), 1);

    // 9. An input storage does not have: the read fails (EIO) and the chunk fails with
    // InputUnavailable naming the file.
    const missing = randomUuid();
    const missingInputs = [{ id: missing, size: 10, name: "gone.txt" }];
    const strictCat = '#!/bin/sh\ncat "$DSYS_INPUT_DIR/$1" > /dev/null\n';
    await push(request(10, strictCat, 20_000, missingInputs, "gone.txt"));
    const st10 = (await masterInbox.waitFor(isStatus(job, 10), "status of chunk 10")).msg;
    assert.equal(st10.state, ChunkState.Failed);
    assert.equal(st10.failure, FailureCode.InputUnavailable, st10.reason);
    assert.match(st10.reason, new RegExp(uuidToHex(missing)));
    // A program storage does not have fails the same way, naming the program file.
    const noProgram = { ...(await request(12, "#!/bin/sh\n", 20_000, [])), programId: missing };
    noProgram.programCap = readCapability(keys.secret, workerKey, missing, noProgram.capExpiryMs!);
    assert.equal((await push(noProgram)).accepted, true);
    const st12 = (await masterInbox.waitFor(isStatus(job, 12), "status of chunk 12")).msg;
    assert.equal(st12.state, ChunkState.Failed);
    assert.equal(st12.failure, FailureCode.InputUnavailable, st12.reason);
    assert.match(st12.reason, new RegExp(`program file ${uuidToHex(missing)}`));

    // 10. SIGTERM while a chunk runs: the program is killed, the chunk reported Lost (so the
    // master can re-dispatch at once), clean exit, mount gone. The program sees nothing of the
    // host to write its pid to (sandbox): it is found by its unique argument instead.
    const token = `60.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
    await push(request(11, '#!/bin/sh\nexec sleep "$1"\n', 0, [], token));
    await masterInbox.waitFor(
      (m): m is WorkerStatus =>
        m.type === MessageType.WorkerStatus && m.chunkIndex === 11 &&
        m.state === ChunkState.Running,
      "Running status of chunk 11 (it runs longer than RUNNING_REPORT_DELAY_MS)",
    );
    const pid = await waitFor(
      "the program's process",
      () => processesWithArgv(["sleep", token])[0] ?? 0,
      { intervalMs: 50 },
    );
    assert.ok((await mountsAt(mount)).length > 0, "mount should be up while running");
    worker.child.kill("SIGTERM");
    const status = await worker.child.status;
    assert.equal(status.code, 0, worker.stderr());
    assert.deepEqual(await mountsAt(mount), []);
    worker = null;
    const lost = masterInbox.msgs.find((x) =>
      x.msg.type === MessageType.WorkerStatus && x.msg.chunkIndex === 11 &&
      x.msg.state === ChunkState.Lost
    );
    assert.ok(lost, "a Lost status for the killed chunk");
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    assert.ok(stat === "" || /^\d+ \(.*\) Z/.test(stat), `program ${pid} survived shutdown`);

    // 11. A restarted worker keeps its node id and cache: it registers with the cached files.
    const cachedNow = [];
    for await (const e of Deno.readDir(`${tmp}/worker/cache`)) cachedNow.push(e.name);
    assert.ok(cachedNow.length > 0);
    const regsBefore = balancerInbox.msgs.filter((x) => isRegister(x.msg)).length;
    worker = await spawn("roles/worker/cli.ts", workerArgs);
    await waitFor(
      "the restarted worker to register",
      () => balancerInbox.msgs.filter((x) => isRegister(x.msg)).length > regsBefore,
      { intervalMs: 50 },
    );
    const reg2 = balancerInbox.msgs.filter((x) => isRegister(x.msg)).at(-1)!.msg as WorkerRegister;
    assert.equal(uuidToHex(reg2.node), uuidToHex(reg.msg.node));
    assert.deepEqual(reg2.files.map(uuidToHex).sort(), cachedNow.sort());
    worker.child.kill("SIGTERM");
    assert.equal((await worker.child.status).code, 0, worker.stderr());
    worker = null;

    // Everything the fakes got came over CURVE from the worker's key, and every status carried
    // the ticket minted for that key.
    assert.deepEqual([...balancerInbox.senders], ["w1"]);
    assert.deepEqual([...masterInbox.senders], ["w1"]);
    assert.deepEqual(badTickets, []);
  } finally {
    if (worker) {
      worker.child.kill("SIGKILL");
      await worker.child.status;
      await new Deno.Command("umount", { args: ["-l", `${tmp}/mnt`], stderr: "null" }).output();
    }
    await sc.close();
    storage.child.kill("SIGTERM");
    await storage.child.status;
    await Promise.all([balancer.close(), master.close(), follower.close()]);
    await keys.close();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
