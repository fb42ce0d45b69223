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

/** True while /proc shows `pid` as a live (non-zombie) process. */
async function aliveAfterPolling(pid: number): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    if (stat === "" || /^\d+ \(.*\) Z/.test(stat)) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
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
    assert.equal(await aliveAfterPolling(bg), false, `background job ${bg} outlived its chunk`);
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
      '(sleep 0.5; echo late > "$DSYS_OUTPUT_DIR/late") &\n',
  );
  const cluster = await LocalCluster.start({ workers: 1, slotsPerWorker: 1 });
  const client = new DsysClient(cluster.info);
  const sentinel = await Deno.makeTempDir({ prefix: "dsys-sentinel-" });
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
    const ts = await client.waitForJob(tamper, () => {}, 50);
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
    const ss = await client.waitForJob(selfish, () => {}, 50);
    assert.equal(ss.state, ChunkState.Succeeded);
    for (const c of ss.chunks) {
      const out = c.outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await client.storage.getBytes(out.id)), `run ${c.chunkIndex}\n`);
    }

    const job = await client.submit({
      program,
      programName: "leaky.sh",
      argument: "",
      chunks: 4,
      inputs: [],
      timeLimitMs: 30_000,
    });
    const s = await client.waitForJob(job, () => {}, 50);
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
    await new Promise((r) => setTimeout(r, 800));
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
    await client.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
  }
});
