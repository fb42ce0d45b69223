/**
 * A storage node on a full disk: a real `roles/storage/cli.ts` process whose data directory is
 * on a small tmpfs the test mounts (and always unmounts). Every file_put is answered (NO_SPACE,
 * never a timeout), no temp file is left behind, earlier files still read back, other requests
 * are still served, and once space is freed the same upload succeeds. Covers the chunked path
 * (several file_put chunks of a file > 1 MiB) and the one-chunk fast path.
 *
 * Needs root (mount); skipped otherwise.
 */
import assert from "node:assert/strict";
import { canMount, idOf, randomBytes, run } from "./storage_helpers.ts";
import {
  ErrorCode,
  type FilePut,
  FilePutFlags,
  type Message,
  MessageType,
  randomUuid,
  type Uuid,
} from "../wire/mod.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { StorageClient, StorageError } from "../client/storage_client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CLI = new URL("../roles/storage/cli.ts", import.meta.url).pathname;
const DENO = Deno.execPath();
/** Request timeout of every client here: an unanswered put fails as UNAVAILABLE after it. */
const TIMEOUT_MS = 20_000;
/** Upload memory of the node: a leaked budget would soon refuse every chunk as busy. */
const MAX_QUEUED = 2 * MiB;
const CHUNK = 512 * KiB;

/** A fresh tmpfs of `bytes` mounted on a new directory for `fn`; unmounted and removed after. */
async function withTmpfs(bytes: number, fn: (mnt: string) => Promise<void>): Promise<void> {
  const mnt = await Deno.makeTempDir({ prefix: "dsys-nospace-test-" });
  try {
    await run("mount", "-t", "tmpfs", "-o", `size=${bytes},mode=0700`, "tmpfs", mnt);
    try {
      // Never fill the real disk by mistake: the directory must be a different filesystem now.
      const parent = await Deno.stat(`${mnt}/..`);
      assert.notEqual((await Deno.stat(mnt)).dev, parent.dev, `${mnt} is not a mount point`);
      await fn(mnt);
    } finally {
      await run("umount", mnt).catch(async (e) => {
        await run("umount", "-l", mnt); // busy (a process still holds a file): detach it anyway
        throw e;
      });
    }
  } finally {
    await Deno.remove(mnt, { recursive: true }).catch(() => {});
  }
}

/** A storage node process; `start` fails loudly when it does not listen within the deadline. */
class StorageProc {
  private constructor(readonly child: Deno.ChildProcess, readonly endpoint: string) {}

  static async start(dir: string, extra: string[] = []): Promise<StorageProc> {
    const verbose = Deno.env.get("DSYS_TEST_VERBOSE") !== undefined;
    const child = new Deno.Command(DENO, {
      args: ["run", "-A", CLI, "--listen", "tcp://127.0.0.1:0", "--data", dir, ...extra],
      stdout: "piped",
      stderr: verbose ? "inherit" : "null",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`storage node (data ${dir}) not listening after 30 s`)),
        30_000,
      );
    });
    try {
      let buf = "";
      for (;;) {
        const { value, done } = await Promise.race([reader.read(), deadline]);
        if (done) throw new Error(`storage process exited before listening (data ${dir})`);
        buf += value;
        const nl = buf.indexOf("\n");
        if (nl < 0) continue;
        const ev = JSON.parse(buf.slice(0, nl));
        assert.equal(ev.event, "listening");
        // Keep draining stdout so the child never blocks on a full pipe.
        (async () => {
          while (!(await reader.read()).done) { /* drain */ }
        })().catch(() => {});
        return new StorageProc(child, ev.endpoint);
      }
    } catch (e) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* already gone */ }
    const killer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await this.child.status;
    clearTimeout(killer);
  }
}

function chunkMsg(node: Uuid, data: Uint8Array, offset: number, n: number): FilePut {
  return {
    type: MessageType.FilePut,
    node,
    file: idOf(data),
    totalLength: data.length,
    offset,
    flags: offset + n === data.length ? FilePutFlags.Last : 0,
    data: data.subarray(offset, offset + n),
  };
}

/**
 * Writes `path` (on the test's tmpfs) until the filesystem is full, then gives back `leave`
 * bytes; returns the file's final size.
 */
async function fill(path: string, leave: number): Promise<number> {
  const buf = new Uint8Array(256 * KiB).fill(0x5a);
  let n = 0;
  const f = await Deno.open(path, { write: true, create: true, append: true });
  try {
    for (;;) {
      assert.ok(n < 256 * MiB, "filler passed 256 MiB: the filesystem does not fill up");
      n += await f.write(buf);
    }
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOSPC") throw e;
  } finally {
    f.close();
  }
  n = (await Deno.stat(path)).size;
  const size = Math.max(0, n - leave);
  await Deno.truncate(path, size);
  return size;
}

/** Names under `dir`, recursively, relative to it. */
async function listTree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const rel = `${prefix}${e.name}`;
    if (e.isDirectory) out.push(...await listTree(`${dir}/${e.name}`, `${rel}/`));
    else out.push(rel);
  }
  return out.sort();
}

/** Temp files of the store: anything in tmp/, and anything in files/ but data and sidecars. */
async function leftovers(data: string): Promise<string[]> {
  const names = await listTree(data);
  return names.filter((n) =>
    n.startsWith("tmp/") || (n.startsWith("files/") && !/^files\/[0-9a-f]{32}(\.blocks)?$/.test(n))
  );
}

/** Expects a StorageError of `code` from `p`. */
async function expectStorageError(p: Promise<unknown>, code: number): Promise<StorageError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StorageError, `expected StorageError, got ${e}`);
    assert.equal(e.code, code, `code of ${e.message}`);
    return e;
  }
  throw new Error(`expected error code ${code}, the put succeeded`);
}

/** The node with its data dir on a fresh `bytes` tmpfs (filler files go next to `data`). */
async function withFullableNode(
  bytes: number,
  fn: (p: StorageProc, mnt: string, data: string) => Promise<void>,
): Promise<void> {
  await withTmpfs(bytes, async (mnt) => {
    const data = `${mnt}/data`;
    const p = await StorageProc.start(data, ["--max-queued-bytes", String(MAX_QUEUED)]);
    try {
      await fn(p, mnt, data);
    } finally {
      await p.stop();
    }
  });
}

Deno.test({
  name: "storage nospace: chunked uploads on a full disk get NO_SPACE, leave nothing, retry works",
  ignore: !canMount,
  fn: async () => {
    await withFullableNode(8 * MiB, async (p, mnt, data) => {
      const client = new StorageClient(p.endpoint, randomUuid(), {
        chunkBytes: CHUNK,
        window: 4,
        timeoutMs: TIMEOUT_MS,
      });
      const rpc = new RpcClient(p.endpoint, { node: randomUuid(), timeoutMs: TIMEOUT_MS });
      try {
        // Committed before the disk fills: one fast-path file, one chunked file (with sidecar).
        const small = randomBytes(100 * KiB);
        const medium = randomBytes(1536 * KiB);
        await client.putBytes(small);
        await client.putBytes(medium);

        // About 1 MiB left: a 3 MiB upload gets a few chunks in, then the disk is full.
        const filler = `${mnt}/filler`;
        await fill(filler, 1 * MiB);
        const big = randomBytes(3 * MiB);

        // Raw pipelined chunks, as many in flight at once as the node's upload memory takes
        // (2 MiB of the 3): every one is answered (an unanswered one would fail UNAVAILABLE at
        // the timeout), with acks up to the full disk, then NO_SPACE (or the "expected offset
        // 0" a chunk after the failure gets from a fresh upload).
        const sent: Promise<Message>[] = [];
        for (let off = 0; off < MAX_QUEUED; off += CHUNK) {
          sent.push(rpc.request(chunkMsg(rpc.node, big, off, CHUNK)));
        }
        const results = await Promise.allSettled(sent);
        let noSpace = 0;
        for (const [i, r] of results.entries()) {
          if (r.status === "fulfilled") {
            assert.equal(r.value.type, MessageType.FilePutAck, `chunk ${i}`);
            continue;
          }
          const e = r.reason;
          assert.ok(e instanceof RpcError, `chunk ${i}: ${e}`);
          if (e.code === ErrorCode.NoSpace) noSpace++;
          else {
            assert.equal(e.code, ErrorCode.WrongOffset, `chunk ${i}: ${e.message}`);
            assert.equal(e.value, 0);
          }
        }
        assert.ok(noSpace > 0, "no chunk was refused NO_SPACE");
        assert.deepEqual(await leftovers(data), []);

        // The client's own put of the same bytes: NO_SPACE, not a timeout, not a hang.
        await expectStorageError(client.putBytes(big), ErrorCode.NoSpace);
        // A second file of the chunked path too (a different upload state).
        await expectStorageError(client.putBytes(randomBytes(2 * MiB)), ErrorCode.NoSpace);
        assert.deepEqual(await leftovers(data), []);

        // Still serving: reads byte for byte, stat, stats.
        assert.deepEqual(await client.getBytes(idOf(small)), small);
        assert.deepEqual(await client.getBytes(idOf(medium)), medium);
        assert.deepEqual(await client.stat(idOf(big)), { exists: false, length: 0 });
        const st = await client.stats();
        assert.equal(st.files, 2);
        assert.equal(st.storedBytes, small.length + medium.length);

        // A resume attempt after the failure finds no half upload (nothing was kept): it is
        // told to start over, and creates no temp file.
        await Deno.remove(filler);
        const resume = rpc.request(chunkMsg(rpc.node, big, 2 * CHUNK, CHUNK));
        await assert.rejects(resume, (e) => {
          assert.ok(e instanceof RpcError, String(e));
          assert.equal(e.code, ErrorCode.WrongOffset);
          assert.equal(e.value, 0);
          return true;
        });
        assert.deepEqual(await leftovers(data), []);

        // Space freed: the same upload now succeeds (the budget of the failed ones is back:
        // with a leak the node would refuse these chunks as busy).
        await client.putBytes(big);
        assert.deepEqual(await client.getBytes(idOf(big)), big);
        assert.deepEqual(await client.getBytes(idOf(medium)), medium);
        assert.deepEqual(await leftovers(data), []);
        assert.equal((await client.stats()).files, 3);
      } finally {
        await rpc.close();
        await client.close();
      }
    });
  },
});

Deno.test({
  name: "storage nospace: one-chunk puts on a full disk get NO_SPACE, leave nothing, retry works",
  ignore: !canMount,
  fn: async () => {
    await withFullableNode(8 * MiB, async (p, mnt, data) => {
      const client = new StorageClient(p.endpoint, randomUuid(), { timeoutMs: TIMEOUT_MS });
      try {
        const early = randomBytes(300 * KiB);
        const earlyId = (await client.putBytes(early)).id;
        const filler = `${mnt}/filler`;
        await fill(filler, 64 * KiB);

        // Several one-block files at once, each larger than the space left.
        const files = [1, 2, 3, 4].map(() => randomBytes(512 * KiB));
        const results = await Promise.allSettled(files.map((f) => client.putBytes(f)));
        for (const [i, r] of results.entries()) {
          assert.equal(r.status, "rejected", `put ${i} succeeded on a full disk`);
          const e = (r as PromiseRejectedResult).reason;
          assert.ok(e instanceof StorageError, `put ${i}: ${e}`);
          assert.equal(e.code, ErrorCode.NoSpace, `put ${i}: ${e.message}`);
        }
        // Over and over: the memory budget of failed puts is given back each time.
        for (let i = 0; i < 8; i++) {
          await expectStorageError(client.putBytes(files[0]), ErrorCode.NoSpace);
        }
        assert.deepEqual(await leftovers(data), []);

        assert.deepEqual(await client.getBytes(earlyId), early);
        for (const f of files) assert.equal((await client.stat(idOf(f))).exists, false);
        const st = await client.stats();
        assert.equal(st.files, 1);
        assert.equal(st.storedBytes, early.length);

        await Deno.remove(filler);
        for (const f of files) await client.putBytes(f);
        for (const f of files) assert.deepEqual(await client.getBytes(idOf(f)), f);
        assert.deepEqual(await client.getBytes(earlyId), early);
        assert.deepEqual(await leftovers(data), []);
      } finally {
        await client.close();
      }
    });
  },
});
