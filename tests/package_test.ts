/**
 * The single file, build/dsys (scripts/package.sh), copied alone to a clean directory: it runs
 * the README's main job with no checkout, no Deno and no system libzmq or libfuse3 (hidden in a
 * mount namespace), extracts itself once under concurrent first runs, and refuses a damaged
 * file, a cache others can write, and (with DSYS_VERIFY=1) a cached file that was changed.
 */
import assert from "node:assert/strict";
import { bareEnv, copyAlone, root, runBare, runHidden } from "./package_helpers.ts";
import { VERSION } from "../lib/version.ts";

/** Whether `commit` (package.sh's stamp, maybe with "+dirty") names a commit of this repo. */
async function isCommit(commit: string): Promise<boolean> {
  const r = await new Deno.Command("git", {
    args: ["-C", root, "cat-file", "-e", `${commit.replace(/\+dirty$/, "")}^{commit}`],
    stderr: "null",
  }).output();
  return r.success;
}

/** The version directories (and leftovers) in a cache. */
async function cacheEntries(cache: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${cache}/dsys`)) names.push(e.name);
  return names.sort();
}

Deno.test("package: build/dsys alone runs `dsys dev` with no repository, Deno or system libzmq", async () => {
  const dsys = await copyAlone();
  const home = dsys.replace(/\/dsys$/, "");
  const env = bareEnv(home);
  // Nothing of the repository is reachable in there, so the first run also extracts.
  const version = await runHidden([dsys, "--version"], env, home);
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stderr, /first run of dsys .*: extracting to /);
  // The commit it was built from (HEAD then; others may have committed since).
  const stamp = version.stdout.match(/^dsys (\S+) \(commit ([0-9a-f]{12}(\+dirty)?)\)\n$/);
  assert.ok(stamp, `--version said ${JSON.stringify(version.stdout)}`);
  assert.equal(stamp[1], VERSION);
  assert.ok(await isCommit(stamp[2]), `${stamp[2]} is no commit of this repository`);
  const entries = await cacheEntries(`${home}/cache`);
  const dirs = entries.filter((n) => n.startsWith(`${VERSION}-`));
  assert.equal(dirs.length, 1, `cache holds ${entries}`);
  assert.deepEqual(entries.filter((n) => n.startsWith(".tmp.")), []);
  const dir = `${home}/cache/dsys/${dirs[0]}`;
  for (const f of ["bin/deno", "build/dsys.js", "build/dsys-exec", "lib/libzmq.so.5", "MANIFEST"]) {
    await Deno.stat(`${dir}/${f}`);
  }

  // The README's main job, from the cache (no second extraction), all in the hidden namespace.
  const dev = await runHidden([dsys, "dev", "--workers", "2", "--chunks", "4"], env, home);
  assert.equal(dev.code, 0, dev.stdout + dev.stderr);
  assert.doesNotMatch(dev.stderr, /extracting/);
  assert.match(dev.stdout, /4\/4 chunks \(4 ok, 0 failed/);
  assert.match(dev.stdout, /21739 words, 1849 distinct; most frequent:\n\s+1488\s+the\n/);
  await Deno.remove(home, { recursive: true });
});

Deno.test("package: concurrent first runs extract once, under the lock", async () => {
  const dsys = await copyAlone();
  const home = dsys.replace(/\/dsys$/, "");
  const runs = await Promise.all(
    [1, 2, 3].map(() => runBare([dsys, "--version"], bareEnv(home), "/")),
  );
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  assert.equal(runs.filter((r) => r.stderr.includes("extracting")).length, 1);
  const entries = await cacheEntries(`${home}/cache`);
  assert.deepEqual(entries.filter((n) => n !== ".lock").length, 1, `cache holds ${entries}`);
  await Deno.remove(home, { recursive: true });
});

Deno.test("package: a damaged or truncated file is refused before anything is extracted", async () => {
  const dsys = await copyAlone();
  const home = dsys.replace(/\/dsys$/, "");
  const bytes = await Deno.readFile(dsys);
  const damaged = bytes.slice();
  damaged[bytes.length - 1000] ^= 0x40;
  await Deno.writeFile(`${home}/damaged`, damaged, { mode: 0o755 });
  await Deno.writeFile(`${home}/truncated`, bytes.subarray(0, bytes.length - 4096), {
    mode: 0o755,
  });
  for (const name of ["damaged", "truncated"]) {
    const r = await runBare([`${home}/${name}`, "--version"], bareEnv(home), "/");
    assert.equal(r.code, 70, `${name}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /is damaged or truncated: payload SHA-256/);
    assert.equal(r.stdout, "");
    const left = (await cacheEntries(`${home}/cache`)).filter((n) => n !== ".lock");
    assert.deepEqual(left, [], `${name} left ${left} in the cache`);
  }
  await Deno.remove(home, { recursive: true });
});

Deno.test("package: refuses a cache others can write; DSYS_VERIFY=1 finds a changed file", async () => {
  const dsys = await copyAlone();
  const home = dsys.replace(/\/dsys$/, "");
  const first = await runBare([dsys, "--version"], bareEnv(home), "/");
  assert.equal(first.code, 0, first.stderr);

  await Deno.chmod(`${home}/cache/dsys`, 0o777);
  const open = await runBare([dsys, "--version"], bareEnv(home), "/");
  assert.equal(open.code, 70, open.stderr);
  assert.match(open.stderr, /refusing cache directory .*group\/world-writable/);
  await Deno.chmod(`${home}/cache/dsys`, 0o755);

  const [dir] = (await cacheEntries(`${home}/cache`)).filter((n) => n.startsWith(VERSION));
  const bundle = `${home}/cache/dsys/${dir}/build/dsys.js`;
  await Deno.chmod(bundle, 0o644);
  await Deno.writeTextFile(bundle, "\n// changed\n", { append: true });
  const verified = await runBare([dsys, "--version"], bareEnv(home, { DSYS_VERIFY: "1" }), "/");
  assert.equal(verified.code, 70, verified.stderr);
  assert.match(verified.stderr, /does not match its MANIFEST/);
  await Deno.remove(home, { recursive: true });
});
