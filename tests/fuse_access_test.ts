// The FUSE mount's own defences (fuse/dsys_fuse.c), with a real mount and real processes of
// other uids: a job's directory is served only to root and the uids allowed into it, and a cache
// file changed on disk since it was verified is handed to the fetch callback again, never served.
// Every read happens in a child process (the test serves the mount).
import assert from "node:assert/strict";
import { FuseError, FuseMount } from "../fuse/mod.ts";
import { FakeStorage, hex, randomBytes } from "./fuse_helpers.ts";

const dec = new TextDecoder();
const UID_A = 1_999_999_101, UID_B = 1_999_999_102;

/** Runs `cmd` as `uid` (no groups) with the mount as its working directory, so that relative
 * paths reach the mount without walking the test's 0700 temp directories. */
async function as(uid: number, cwd: string, ...cmd: string[]) {
  const r = await new Deno.Command("setpriv", {
    args: [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", ...cmd],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { ok: r.success, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

async function withMount(body: (m: FuseMount, store: FakeStorage, base: string) => Promise<void>) {
  const base = await Deno.makeTempDir({ prefix: "dsys-fuse-access-" });
  await Deno.mkdir(`${base}/store`);
  const store = new FakeStorage(`${base}/store`);
  const m = await FuseMount.mount({
    mountpoint: `${base}/mnt`,
    cacheDir: `${base}/cache`,
    fetch: store.fetch,
  });
  try {
    await body(m, store, base);
  } finally {
    await m.unmount();
    await store.settle();
    await Deno.remove(base, { recursive: true });
  }
}

Deno.test("fuse: a job's directory is served to root and its allowed uids only", async () => {
  await withMount(async (m, store) => {
    const data = randomBytes(5000, 3);
    const id = await store.put(data);
    m.addFile({ path: "job-a/in.bin", id, size: data.length });
    m.addFile({ path: "job-b/in.bin", id, size: data.length });
    const mnt = m.mountpoint;
    // Nobody but root yet: not the file, not the directory, not its name in the listing.
    assert.equal((await as(UID_A, mnt, "cat", "job-a/in.bin")).ok, false);
    assert.equal((await as(UID_A, mnt, "ls", "job-a")).ok, false);
    assert.equal((await as(UID_A, mnt, "ls", "-A", ".")).out, "");
    m.allowUid("job-a", UID_A);
    const a = await as(UID_A, mnt, "sha256sum", "job-a/in.bin");
    assert.ok(a.ok, a.err);
    assert.equal((await as(UID_A, mnt, "ls", "-A", ".")).out, "job-a\n");
    // Another uid, and the same uid in another job's directory: refused.
    assert.equal((await as(UID_B, mnt, "cat", "job-a/in.bin")).ok, false);
    assert.equal((await as(UID_A, mnt, "cat", "job-b/in.bin")).ok, false);
    // Two holders of one uid (two chunks of the job in one slot's lifetime): in until both go.
    m.allowUid("job-a", UID_A);
    assert.equal(m.disallowUid("job-a", UID_A), 1);
    assert.equal((await as(UID_A, mnt, "cat", "job-a/in.bin")).ok, true);
    assert.equal(m.disallowUid("job-a", UID_A), 0);
    assert.equal((await as(UID_A, mnt, "cat", "job-a/in.bin")).ok, false);
    assert.throws(() => m.allowUid("no-such-job", UID_A), FuseError);
    assert.throws(() => m.allowUid("job-a", 0), FuseError);
  });
});

Deno.test("fuse: a cache file changed on disk is verified again before it is served", async () => {
  await withMount(async (m, store, base) => {
    const data = randomBytes(64 * 1024, 9);
    const id = await store.put(data);
    m.addFile({ path: "job/in.bin", id, size: data.length });
    const read = async (dir = "job") => {
      const r = await new Deno.Command("cat", {
        args: [`${m.mountpoint}/${dir}/in.bin`],
        stdout: "piped",
      }).output();
      return r.stdout;
    };
    assert.deepEqual(await read(), data);
    assert.equal(store.calls.get(hex(id)), 1);
    // Served from the verified cache file: no callback.
    assert.deepEqual(await read(), data);
    assert.equal(store.calls.get(hex(id)), 1);
    assert.equal(store.verified.get(hex(id)) ?? 0, 0);
    // One byte flipped in place: same size, same inode; a new mtime/ctime.
    const path = `${base}/cache/${hex(id)}`;
    const f = await Deno.open(path, { read: true, write: true });
    await f.seek(1000, Deno.SeekMode.Start);
    await f.write(new Uint8Array([data[1000] ^ 0xff]));
    f.close();
    // The next job's directory, as the worker makes one per job: a new inode, so nothing the
    // kernel cached of the first one's pages can answer for the file.
    m.removePath("job");
    m.addFile({ path: "job-2/in.bin", id, size: data.length });
    assert.deepEqual(await read("job-2"), data, "the flipped byte must never be served");
    assert.equal(store.calls.get(hex(id)), 2, "the callback found it wrong and fetched again");
    assert.deepEqual(await Deno.readFile(path), data);
  });
});
