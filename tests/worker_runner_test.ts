// Tests of the worker's program runner with real /bin/sh child processes.
import assert from "node:assert/strict";
import { startProgram, TailBuffer } from "../roles/worker/runner.ts";
import { waitFor, within } from "./wait.ts";

async function setup(script: string): Promise<{ dir: string; prog: string }> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-runner-" });
  const prog = `${dir}/program`;
  await Deno.writeTextFile(prog, script, { mode: 0o755 });
  return { dir, prog };
}

const env = { PATH: "/usr/local/bin:/usr/bin:/bin" };

Deno.test("runner: stdout goes to the file, argv and env are passed, exit 0", async () => {
  const { dir, prog } = await setup('#!/bin/sh\necho "arg=$1 x=$X"\necho err >&2\npwd\n');
  try {
    const run = await startProgram({
      programPath: prog,
      args: ["hello world"],
      env: { ...env, X: "42" },
      cwd: dir,
      timeLimitMs: 10_000,
      stdoutPath: `${dir}/stdout`,
    });
    const r = await run.result;
    assert.equal(r.exitCode, 0);
    assert.equal(r.signal, 0);
    assert.equal(r.timedOut, false);
    const out = await Deno.readTextFile(`${dir}/stdout`);
    assert.equal(out, `arg=hello world x=42\n${await Deno.realPath(dir)}\n`);
    assert.equal(r.stdoutBytes, new TextEncoder().encode(out).length);
    assert.equal(new TextDecoder().decode(r.stderrTail), "err\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runner: non-zero exit code and only the last 4 KiB of stderr", async () => {
  // 3000 lines of "line NNNN" on stderr: far more than 4 KiB; the tail must end with the last.
  const { dir, prog } = await setup(
    '#!/bin/sh\ni=0\nwhile [ $i -lt 3000 ]; do echo "line $i" >&2; i=$((i+1)); done\nexit 3\n',
  );
  try {
    const r = await (await startProgram({
      programPath: prog,
      args: [],
      env,
      cwd: dir,
      timeLimitMs: 0,
      stdoutPath: `${dir}/stdout`,
    })).result;
    assert.equal(r.exitCode, 3);
    assert.equal(r.signal, 0);
    assert.equal(r.stderrTail.length, 4096);
    const text = new TextDecoder().decode(r.stderrTail);
    assert.ok(text.endsWith("line 2998\nline 2999\n"), text.slice(-40));
    assert.equal(r.stdoutBytes, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runner: time limit kills the whole process group", async () => {
  // The background sleep would keep stdout open (and live on) if only the shell were killed.
  const { dir, prog } = await setup("#!/bin/sh\nsleep 60 &\necho $! > bgpid\nsleep 60\n");
  try {
    const run = await startProgram({
      programPath: prog,
      args: [],
      env,
      cwd: dir,
      timeLimitMs: 500,
      stdoutPath: `${dir}/stdout`,
    });
    // Well before the sleeps would end by themselves: the result does not wait for them.
    const r = await within(30_000, "the result of the timed-out run", run.result);
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 9);
    assert.equal(r.exitCode, 0);
    assert.ok(r.durationMs >= 500);
    const bg = Number((await Deno.readTextFile(`${dir}/bgpid`)).trim());
    // A zombie is reaped by init soon after the group kill: poll until gone (or a zombie).
    await waitFor(`background process ${bg} to die with its group`, async () => {
      const stat = await Deno.readTextFile(`/proc/${bg}/stat`).catch(() => "");
      return stat === "" || /^\d+ \(.*\) Z/.test(stat);
    }, { timeoutMs: 20_000, intervalMs: 100 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runner: kill() aborts; a missing program is a spawn error", async () => {
  const { dir, prog } = await setup("#!/bin/sh\nsleep 60\n");
  try {
    const run = await startProgram({
      programPath: prog,
      args: [],
      env,
      cwd: dir,
      timeLimitMs: 0,
      stdoutPath: `${dir}/stdout`,
    });
    setTimeout(() => run.kill(), 200);
    const r = await within(30_000, "the result of the killed run", run.result);
    assert.equal(r.aborted, true);
    assert.equal(r.timedOut, false);
    assert.equal(r.signal, 9);

    const bad = await startProgram({
      programPath: `${dir}/does-not-exist`,
      args: [],
      env,
      cwd: dir,
      timeLimitMs: 0,
      stdoutPath: `${dir}/stdout2`,
    });
    const rb = await bad.result;
    assert.ok(rb.spawnError, "expected a spawn error");
    assert.equal(bad.pid, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TailBuffer keeps the last bytes across small and large pushes", () => {
  const t = new TailBuffer(5);
  t.push(new Uint8Array([1, 2, 3]));
  assert.deepEqual([...t.bytes()], [1, 2, 3]);
  t.push(new Uint8Array([4, 5, 6, 7]));
  assert.deepEqual([...t.bytes()], [3, 4, 5, 6, 7]);
  t.push(new Uint8Array([8, 9, 10, 11, 12, 13]));
  assert.deepEqual([...t.bytes()], [9, 10, 11, 12, 13]);
  t.push(new Uint8Array([14]));
  assert.deepEqual([...t.bytes()], [10, 11, 12, 13, 14]);
});
