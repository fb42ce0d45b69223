// Tests of what the worker's cheap per-chunk path must still guarantee: programs start with
// default signal dispositions in their own session, whatever a chunk leaves running in its
// process group dies with it, reused stdout/stderr files are truncated, a reused slot directory
// shows a chunk nothing of the previous chunk, and a program that swaps parts of its slot for
// symlinks cannot make the worker empty or truncate anything outside it (real processes, a real
// local cluster).
import assert from "node:assert/strict";
import { startProgram } from "../roles/worker/runner.ts";
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ChunkState } from "../wire/mod.ts";
import { waitFor, waitForJob } from "./wait.ts";

const env = { PATH: "/usr/local/bin:/usr/bin:/bin" };
const dec = new TextDecoder();

async function withDir(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-reuse-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** True once /proc shows `pid` gone or a zombie (it can no longer do anything). */
async function gone(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat === "" || /^\d+ \(.*\) Z/.test(stat);
}

Deno.test("runner: new session, default SIGPIPE, background jobs killed at exit", async () => {
  await withDir(async (dir) => {
    const prog = `${dir}/program`;
    // Prints: its pid, its session id, the ignored-signals mask; leaves a sleep behind.
    await Deno.writeTextFile(
      prog,
      "#!/bin/sh\nsleep 60 &\necho $! > bgpid\n" +
        "echo $$ $(cut -d' ' -f6 /proc/$$/stat)\ngrep SigIgn /proc/$$/status\n",
      { mode: 0o755 },
    );
    const run = await startProgram({
      programPath: prog,
      args: [],
      env,
      cwd: dir,
      timeLimitMs: 10_000,
      stdoutPath: `${dir}/stdout`,
      stderrPath: `${dir}/stderr`,
    });
    const r = await run.result;
    assert.equal(r.exitCode, 0, dec.decode(r.stderrTail));
    const [ids, sigIgn] = (await Deno.readTextFile(`${dir}/stdout`)).trim().split("\n");
    const [pid, sid] = ids.split(" ").map(Number);
    assert.equal(pid, run.pid);
    assert.equal(sid, pid, "the program leads its own session");
    // The Deno runtime ignores SIGPIPE (13, bit 12): the program must not inherit that.
    const mask = BigInt("0x" + sigIgn.split(/\s+/)[1]);
    assert.equal(mask & (1n << 12n), 0n, `SIGPIPE ignored in the program: ${sigIgn}`);
    const bg = Number((await Deno.readTextFile(`${dir}/bgpid`)).trim());
    // Left alone it would live for 60 s: dying well before proves it was killed with the chunk.
    await waitFor(`background job ${bg} to die with its chunk`, () => gone(bg), {
      timeoutMs: 20_000,
    });
  });
});

Deno.test("runner: reused stdout/stderr files are truncated; stderr goes to its file", async () => {
  await withDir(async (dir) => {
    const prog = `${dir}/program`;
    await Deno.writeTextFile(prog, '#!/bin/sh\necho "$1"\necho "e$1" >&2\n', { mode: 0o755 });
    for (const arg of ["a long first line", "short"]) {
      const r = await (await startProgram({
        programPath: prog,
        args: [arg],
        env,
        cwd: dir,
        timeLimitMs: 0,
        stdoutPath: `${dir}/stdout`,
        stderrPath: `${dir}/stderr`,
      })).result;
      assert.equal(await Deno.readTextFile(`${dir}/stdout`), `${arg}\n`);
      assert.equal(r.stdoutBytes, arg.length + 1);
      assert.equal(await Deno.readTextFile(`${dir}/stderr`), `e${arg}\n`);
      assert.equal(dec.decode(r.stderrTail), `e${arg}\n`);
    }
  });
});

Deno.test("worker: a reused slot directory shows a chunk nothing of the previous one", async () => {
  // One worker with one slot: every chunk runs in the same slot directory, one after another.
  // Each chunk lists what it finds, then leaves an output file, a scratch file and a
  // background job that would write into the (reused) output directory later.
  const program = new TextEncoder().encode(
    "#!/bin/sh\n" +
      'echo "out:$(ls -A "$DSYS_OUTPUT_DIR" | tr "\\n" " ") scratch:$(ls -A | tr "\\n" " ")"\n' +
      'echo "$DSYS_CHUNK_INDEX" > "$DSYS_OUTPUT_DIR/mine-$DSYS_CHUNK_INDEX"\n' +
      "echo left > leftover\n" +
      '(sleep 0.5; echo late > "$DSYS_OUTPUT_DIR/late") &\n' +
      'echo $! > "$1/bg-$DSYS_CHUNK_INDEX"\n',
  );
  // Unsandboxed (--no-sandbox): these are the slot directory's own defences, which are all a
  // trusted cluster without the sandbox has; the program writes host paths the sandbox would not
  // show it. Sandboxed, every chunk gets a tmpfs of its own: tests/sandbox_attack_test.ts.
  const cluster = await LocalCluster.start({
    workers: 1,
    slotsPerWorker: 1,
    extraArgs: { worker: ["--no-sandbox"] },
  });
  const client = new DsysClient(cluster.info);
  const sentinel = await Deno.makeTempDir({ prefix: "dsys-sentinel-" });
  const bgPids = await Deno.makeTempDir({ prefix: "dsys-bgpids-" });
  try {
    // First a job whose chunks replace their output dir and stdout file by symlinks to a
    // directory outside the slot: they fail, and nothing there is emptied or truncated.
    await Deno.writeTextFile(`${sentinel}/keep`, "precious\n");
    const tamper = await client.submit({
      program: new TextEncoder().encode(
        '#!/bin/sh\nrm -rf "$DSYS_OUTPUT_DIR" && ln -s "$1" "$DSYS_OUTPUT_DIR"\n' +
          'rm -f ../stdout && ln -s "$1/keep" ../stdout\n',
      ),
      programName: "tamper.sh",
      argument: sentinel,
      chunks: 2,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const ts = await waitForJob(client, tamper, { intervalMs: 50 });
    assert.equal(ts.state, ChunkState.Failed);
    for (const c of ts.chunks) assert.match(c.reason, /no longer a directory/, c.reason);
    assert.equal(await Deno.readTextFile(`${sentinel}/keep`), "precious\n");

    // A program that rewrites its own file: later chunks of the job still run the original.
    const selfish = await client.submit({
      program: new TextEncoder().encode(
        '#!/bin/sh\necho "run $DSYS_CHUNK_INDEX"\nprintf \'#!/bin/sh\\necho tampered\\n\' > "$0"\n',
      ),
      programName: "selfish.sh",
      argument: "",
      chunks: 3,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const ss = await waitForJob(client, selfish, { intervalMs: 50 });
    assert.equal(ss.state, ChunkState.Succeeded);
    for (const c of ss.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await client.storage.getBytes(out.id)), `run ${c.chunkIndex}\n`);
    }

    const job = await client.submit({
      program,
      programName: "leaky.sh",
      argument: bgPids,
      chunks: 4,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const s = await waitForJob(client, job, { intervalMs: 50 });
    assert.equal(s.state, ChunkState.Succeeded);
    for (const c of s.chunks) {
      const names = c.outputs.map((o) => o.name).sort();
      assert.deepEqual(names, [`mine-${c.chunkIndex}`, "stdout"], `chunk ${c.chunkIndex}`);
      const stdout = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(
        dec.decode(await client.storage.getBytes(stdout.id)),
        "out: scratch:\n",
        `chunk ${c.chunkIndex} saw leftovers`,
      );
    }
    // The last chunk's background job was killed too: nothing is written after the job ends.
    // Each one is gone (killed, or it wrote `late` and exited after 0.5 s)...
    for (let i = 0; i < 4; i++) {
      const pid = Number((await Deno.readTextFile(`${bgPids}/bg-${i}`)).trim());
      await waitFor(`background job ${pid} of chunk ${i} to be gone`, () => gone(pid), {
        timeoutMs: 20_000,
      });
    }
    // ...and one more chunk, in the same (only) slot directory once the last one has been
    // emptied and handed back, finds nothing there.
    const check = await client.submit({
      program: new TextEncoder().encode(
        '#!/bin/sh\necho "out:$(ls -A "$DSYS_OUTPUT_DIR" | tr "\\n" " ")"\n',
      ),
      programName: "check.sh",
      argument: "",
      chunks: 1,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const cs = await waitForJob(client, check, { intervalMs: 50 });
    assert.equal(cs.state, ChunkState.Succeeded);
    assert.deepEqual(cs.chunks[0].outputs.map((o) => o.name), ["stdout"]);
    const listed = cs.chunks[0].outputs[0];
    assert.equal(dec.decode(await client.storage.getBytes(listed.id)), "out:\n", "leftovers");
    const slots = [...Deno.readDirSync(`${cluster.dataDir}/worker1/chunks`)]
      .filter((e) => e.name.startsWith("slot-"));
    assert.equal(slots.length, 1, "one slot, one reused directory");
    const out = [...Deno.readDirSync(`${cluster.dataDir}/worker1/chunks/${slots[0].name}/out`)];
    assert.deepEqual(out.map((e) => e.name), []);
  } catch (e) {
    await cluster.printLogs(15);
    throw e;
  } finally {
    await Deno.remove(sentinel, { recursive: true });
    await Deno.remove(bgPids, { recursive: true });
    await client.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
  }
});
