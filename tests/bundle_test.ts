/**
 * The bundle (scripts/bundle.sh → build/dsys.js) is a working dsys: it runs the README's main
 * job, `dsys dev`, end to end (its own local cluster, FUSE mounts, the word-count result).
 */
import assert from "node:assert/strict";

const root = new URL("..", import.meta.url).pathname;

Deno.test("bundle: build/dsys.js runs `dsys dev` to a correct word count", async () => {
  const built = await new Deno.Command("bash", { args: [`${root}scripts/bundle.sh`] }).output();
  assert.ok(built.success, new TextDecoder().decode(built.stderr));
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${root}build/dsys.js`, "dev", "--workers", "2", "--chunks", "4"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(run.stdout);
  assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
  assert.match(out, /4\/4 chunks \(4 ok, 0 failed/);
  // The corpus is fixed, so the merged counts are too: `the` is the most frequent word.
  assert.match(out, /21739 words, 1849 distinct; most frequent:\n\s+1488\s+the\n/);
});
