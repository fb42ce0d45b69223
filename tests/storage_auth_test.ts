/**
 * Storage access rules with real keys: a storage node process started with `--key/--keyring`
 * (from `initCluster`), spoken to over CURVE with each identity's own key. Who may read a file
 * (owners, admin, workers and masters with read capabilities), what file_stat shows whom, who
 * becomes an owner by a put, that owners survive kill -9 (and a torn record at the end of the
 * owners log), and that a key off the keyring gets no answer. Then the owners log itself (owners.ts): a torn
 * last record, compaction, and the migration of former per-file `files/<id>.owners` lists.
 */
import assert from "node:assert/strict";
import { canMount, idOf, randomBytes, run } from "./storage_helpers.ts";
import {
  ErrorCode,
  type FilePut,
  FilePutFlags,
  type FileResponse,
  type FileStatResponse,
  type Message,
  MessageType,
  randomUuid,
  type Uuid,
  uuidToHex,
} from "../wire/mod.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { Credentials, Keyring, newKeyFile } from "../lib/security.ts";
import { readCapability } from "../lib/capability.ts";
import { initCluster } from "../client/keys.ts";
import { StorageClient, StorageError } from "../client/storage_client.ts";
import { decodeOwnersRecord, Owners, OWNERS_LOG } from "../roles/storage/owners.ts";
import { FileStore } from "../roles/storage/store.ts";
import { encodeRecord } from "../lib/record_file.ts";
import { createLogger } from "../lib/log.ts";
import { within } from "./wait.ts";

const CLI = new URL("../roles/storage/cli.ts", import.meta.url).pathname;
const DENO = Deno.execPath();
/** Generous: a loaded machine is slow, not wrong. */
const START_DEADLINE_MS = 60_000;

/** A storage node process with keys. */
class StorageProc {
  private constructor(
    readonly child: Deno.ChildProcess,
    readonly endpoint: string,
    readonly drained: Promise<void>,
  ) {}

  static async start(data: string, keys: string): Promise<StorageProc> {
    const verbose = Deno.env.get("DSYS_TEST_VERBOSE") !== undefined;
    const child = new Deno.Command(DENO, {
      args: [
        "run",
        "-A",
        CLI,
        "--listen",
        "tcp://127.0.0.1:0",
        "--data",
        data,
        "--key",
        `${keys}/s1.key`,
        "--keyring",
        `${keys}/keyring`,
      ],
      stdout: "piped",
      stderr: verbose ? "inherit" : "null",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const firstLine = async (): Promise<string> => {
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`storage process exited before listening (data ${data})`);
        buf += value;
        const nl = buf.indexOf("\n");
        if (nl >= 0) return buf.slice(0, nl);
      }
    };
    let line: string;
    try {
      line = await within(START_DEADLINE_MS, "storage node to listen", firstLine());
    } catch (e) {
      child.kill("SIGKILL");
      await child.status;
      throw e;
    }
    const ev = JSON.parse(line);
    assert.equal(ev.event, "listening");
    // Keep draining stdout so the child never blocks on a full pipe.
    const drained = (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })().catch(() => {});
    return new StorageProc(child, ev.endpoint, drained);
  }

  /** `s1@tcp://…`: the endpoint with the node's keyring name. */
  get ref(): string {
    return `s1@${this.endpoint}`;
  }

  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
    await this.child.status;
    await this.drained;
  }
}

/** Expects `p` to fail with error `code`; returns the error's text. */
async function expectCode(p: Promise<unknown>, code: number, what: string): Promise<string> {
  try {
    await p;
  } catch (e) {
    const got = e instanceof RpcError || e instanceof StorageError ? e.code : undefined;
    assert.equal(got, code, `${what}: expected code ${code}, got ${e}`);
    return e instanceof RpcError ? e.text : String(e);
  }
  assert.fail(`${what}: expected error code ${code}, got an answer`);
}

/** The payloads of the whole frames of a RecordFile (read only: the node may be running). */
async function logPayloads(path: string): Promise<Uint8Array[]> {
  const b = await Deno.readFile(path);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: Uint8Array[] = [];
  for (let off = 0; off + 8 <= b.length;) {
    const len = dv.getUint32(off, true);
    if (off + 8 + len > b.length) break;
    out.push(b.subarray(off + 8, off + 8 + len));
    off += 8 + len;
  }
  return out;
}

/** The owners the log at `path` names for file `hex`, in log order. */
async function ownersInLog(path: string, hex: string): Promise<string[]> {
  let names: string[] = [];
  for (const p of await logPayloads(path)) {
    const r = decodeOwnersRecord(p);
    if (r?.hex !== hex) continue;
    names = r.kind === "add" ? [...names, r.name] : [];
  }
  return names;
}

/** A framed `add` record of the owners log (payload laid out here, as owners.ts must read it). */
function addFrame(file: Uuid, name: string): Uint8Array {
  return encodeRecord(new Uint8Array([1, ...file, ...new TextEncoder().encode(name)]));
}

/** A file_put chunk: by default the whole file, one chunk, from a fresh node id. */
function filePut(
  file: Uuid,
  data: Uint8Array,
  o: { owner?: string; offset?: number; total?: number; last?: boolean; node?: Uuid } = {},
): FilePut {
  const m: FilePut = {
    type: MessageType.FilePut,
    node: o.node ?? randomUuid(),
    file,
    totalLength: o.total ?? data.length,
    offset: o.offset ?? 0,
    flags: o.last ?? true ? FilePutFlags.Last : 0,
    data,
  };
  if (o.owner !== undefined) m.owner = o.owner;
  return m;
}

/** Everyone the test talks as, each with its own key; closed at the end. */
class People {
  readonly creds = new Map<string, Credentials>();
  readonly #open: { close(): Promise<void> }[] = [];
  constructor(readonly keys: string) {}

  cred(name: string): Credentials {
    let c = this.creds.get(name);
    if (!c) {
      c = Credentials.loadSync(`${this.keys}/${name}.key`, `${this.keys}/keyring`);
      this.creds.set(name, c);
    }
    return c;
  }

  /** A StorageClient as `name` (small chunks, so a few hundred KiB take the chunked path). */
  storage(node: StorageProc, name: string): StorageClient {
    const c = new StorageClient(node.ref, randomUuid(), {
      auth: this.cred(name),
      chunkBytes: 64 * 1024,
      timeoutMs: 15_000,
      retries: 2,
    });
    this.#open.push(c);
    return c;
  }

  /** A raw RpcClient as `name` (plain endpoint, the server found by its role). */
  rpc(node: StorageProc, name: string, auth?: Credentials, timeoutMs = 15_000): RpcClient {
    const c = new RpcClient(node.endpoint, {
      node: randomUuid(),
      auth: auth ?? this.cred(name),
      serverRole: "storage",
      timeoutMs,
    });
    this.#open.push(c);
    return c;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#open.splice(0).map((c) => c.close()));
    for (const c of this.creds.values()) c.close();
  }
}

async function read(rpc: RpcClient, file: Uuid, cap?: { expiry: number; cap: Uint8Array }) {
  const m: Message = {
    type: MessageType.FileRequest,
    node: rpc.node,
    file,
    offset: 0,
    maxLength: 0,
  };
  if (cap) {
    m.capExpiryMs = cap.expiry;
    m.cap = cap.cap;
  }
  const r = await rpc.request(m);
  assert.equal(r.type, MessageType.FileResponse);
  return (r as FileResponse).data;
}

async function statAs(rpc: RpcClient, file: Uuid, user?: string): Promise<boolean> {
  const m: Message = { type: MessageType.FileStat, node: rpc.node, file };
  if (user !== undefined) m.user = user;
  const r = await rpc.request(m);
  assert.equal(r.type, MessageType.FileStatResponse);
  return (r as FileStatResponse).exists;
}

Deno.test("storage auth: owners, admin, worker capabilities, master stats, restart, unknown keys", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "dsys-storage-auth-" });
  const keys = `${root}/keys`;
  const data = `${root}/data`;
  await initCluster(keys, { users: ["alice", "bob"], masters: 1, balancers: 1, workers: 2 });
  const secret = await Deno.readFile(`${keys}/cluster.secret`);
  const people = new People(keys);
  let node = await StorageProc.start(data, keys);
  try {
    const small = randomBytes(1000); // one chunk: the whole-file fast path
    const big = randomBytes(300 * 1024); // 5 chunks of 64 KiB: the chunked path
    const aliceOnly = randomBytes(2000);
    const smallId = idOf(small);
    const bigId = idOf(big);
    const aliceOnlyId = idOf(aliceOnly);
    const missingId = idOf(randomBytes(10));

    await t.step("alice puts files and reads them back", async () => {
      const alice = people.storage(node, "alice");
      for (const b of [small, big, aliceOnly]) {
        const { id } = await alice.putBytes(b);
        assert.deepEqual(await alice.getBytes(id), b);
        assert.deepEqual(await alice.stat(id), { exists: true, length: b.length });
      }
    });

    await t.step("bob may neither read alice's files nor see them", async () => {
      const bob = people.storage(node, "bob");
      for (const id of [smallId, bigId, missingId]) {
        await expectCode(bob.getBytes(id), ErrorCode.Forbidden, `bob reads ${uuidToHex(id)}`);
        assert.deepEqual(await bob.stat(id), { exists: false, length: 0 });
      }
    });

    await t.step("the tail of a stored file alone does not make bob an owner", async () => {
      const bob = people.rpc(node, "bob");
      const tail = big.subarray(big.length - 10);
      const text = await expectCode(
        bob.request(filePut(bigId, tail, { offset: big.length - 10, total: big.length })),
        ErrorCode.WrongOffset,
        "bob's last chunk of a file he never sent",
      );
      assert.match(text, /expected offset 0/);
      await expectCode(read(bob, bigId), ErrorCode.Forbidden, "bob reads big after the tail");
    });

    await t.step("bob cannot finish alice's upload by sending her node id", async () => {
      const file = randomBytes(2000);
      const id = idOf(file);
      const uploader = randomUuid();
      const alice = people.rpc(node, "alice");
      const bob = people.rpc(node, "bob");
      const head = { node: uploader, total: file.length, last: false };
      const tail = { node: uploader, total: file.length, offset: 1000 };
      const ack = await alice.request(filePut(id, file.subarray(0, 1000), head));
      assert.equal(ack.type, MessageType.FilePutAck);
      const text = await expectCode(
        bob.request(filePut(id, file.subarray(1000), tail)),
        ErrorCode.WrongOffset,
        "bob's tail of alice's upload",
      );
      assert.match(text, /expected offset 0/);
      await expectCode(read(bob, id), ErrorCode.Forbidden, "bob reads the file");
      const done = await alice.request(filePut(id, file.subarray(1000), tail));
      assert.equal(done.type === MessageType.FilePutAck && done.committed, true);
      assert.deepEqual(await read(alice, id), file);
      await expectCode(read(bob, id), ErrorCode.Forbidden, "bob reads the committed file");
    });

    await t.step("bob uploads the same bytes and then reads them", async () => {
      const bob = people.storage(node, "bob");
      for (const b of [small, big]) {
        const { id } = await bob.putBytes(b);
        assert.deepEqual(await bob.getBytes(id), b);
        assert.deepEqual(await bob.stat(id), { exists: true, length: b.length });
      }
      await expectCode(bob.getBytes(aliceOnlyId), ErrorCode.Forbidden, "bob reads aliceOnly");
      // One owners log for the node, no file per list.
      assert.deepEqual(await ownersInLog(`${data}/${OWNERS_LOG}`, uuidToHex(bigId)), [
        "alice",
        "bob",
      ]);
      for await (const e of Deno.readDir(`${data}/files`)) {
        assert.ok(!e.name.includes(".owners"), `${e.name} in files/`);
      }
    });

    await t.step("concurrent first uploads by two users make both owners", async () => {
      const both = randomBytes(200 * 1024);
      const alice = people.storage(node, "alice");
      const bob = people.storage(node, "bob");
      await Promise.all([alice.putBytes(both), bob.putBytes(both)]);
      assert.deepEqual(await alice.getBytes(idOf(both)), both);
      assert.deepEqual(await bob.getBytes(idOf(both)), both);
    });

    await t.step("the admin reads and sees everything; stats need an admin", async () => {
      const admin = people.storage(node, "admin");
      assert.deepEqual(await admin.getBytes(aliceOnlyId), aliceOnly);
      assert.deepEqual(await admin.stat(aliceOnlyId), { exists: true, length: aliceOnly.length });
      await expectCode(admin.getBytes(missingId), ErrorCode.NotFound, "admin reads a missing file");
      const stats = await admin.stats();
      assert.ok((stats.fetchCounts.get(uuidToHex(aliceOnlyId)) ?? 0) >= 2, "fetch counts");
      await expectCode(people.storage(node, "alice").stats(), ErrorCode.Forbidden, "alice stats");
    });

    await t.step(
      "a worker reads only with a valid capability for its key and the file",
      async () => {
        const w1 = people.rpc(node, "w1");
        const w1Key = people.cred("w1").self.publicKey;
        const w2Key = people.cred("w2").self.publicKey;
        const later = Date.now() + 10 * 60_000;
        await expectCode(read(w1, smallId), ErrorCode.Forbidden, "w1 without a capability");
        await expectCode(read(w1, missingId), ErrorCode.Forbidden, "w1 reads a missing file");
        const good = { expiry: later, cap: readCapability(secret, w1Key, smallId, later) };
        assert.deepEqual(await read(w1, smallId, good), small);
        const cases: [string, { expiry: number; cap: Uint8Array }][] = [
          ["expired", {
            expiry: Date.now() - 60_000,
            cap: readCapability(secret, w1Key, smallId, Date.now() - 60_000),
          }],
          ["for w2's key", { expiry: later, cap: readCapability(secret, w2Key, smallId, later) }],
          ["for another file", { expiry: later, cap: readCapability(secret, w1Key, bigId, later) }],
          ["with its expiry moved", { expiry: later + 1, cap: good.cap }],
          ["under another secret", {
            expiry: later,
            cap: readCapability(new Uint8Array(32), w1Key, smallId, later),
          }],
        ];
        for (const [what, cap] of cases) {
          await expectCode(read(w1, smallId, cap), ErrorCode.Forbidden, `w1, capability ${what}`);
        }
        // w2 presenting w1's (valid) capability: it is bound to w1's key.
        await expectCode(
          read(people.rpc(node, "w2"), smallId, good),
          ErrorCode.Forbidden,
          "w2 with w1's capability",
        );
      },
    );

    const output = randomBytes(3000);
    const outputId = idOf(output);
    const orphan = randomBytes(3000);
    const orphanId = idOf(orphan);
    await t.step("a worker's put stores an output for the job's owner", async () => {
      const w1 = people.rpc(node, "w1");
      const ack = await w1.request(filePut(outputId, output, { owner: "alice" }));
      assert.equal(ack.type, MessageType.FilePutAck);
      await w1.request(filePut(orphanId, orphan)); // no owner
      await expectCode(
        w1.request(filePut(idOf(randomBytes(5)), randomBytes(5), { owner: "not a name" })),
        ErrorCode.BadRequest,
        "owner that is not a keyring name",
      );
      const alice = people.storage(node, "alice");
      assert.deepEqual(await alice.getBytes(outputId), output);
      await expectCode(people.storage(node, "bob").getBytes(outputId), ErrorCode.Forbidden, "bob");
      await expectCode(alice.getBytes(orphanId), ErrorCode.Forbidden, "alice reads ownerless");
      assert.deepEqual(await people.storage(node, "admin").getBytes(orphanId), orphan);
    });

    await t.step("a master's file_stat answers for the user it names", async () => {
      const m1 = people.rpc(node, "m1");
      assert.equal(await statAs(m1, aliceOnlyId, "alice"), true);
      assert.equal(await statAs(m1, aliceOnlyId, "bob"), false);
      assert.equal(await statAs(m1, aliceOnlyId, ""), true);
      assert.equal(await statAs(m1, aliceOnlyId), true);
      assert.equal(await statAs(m1, bigId, "bob"), true);
      assert.equal(await statAs(m1, outputId, "alice"), true);
      assert.equal(await statAs(m1, missingId, "alice"), false);
      // Workers and storage nodes see files as they are.
      assert.equal(await statAs(people.rpc(node, "w1"), aliceOnlyId), true);
      // A master reads (its dashboard's output links) only with a capability for its own key.
      await expectCode(read(m1, aliceOnlyId), ErrorCode.Forbidden, "m1 reads");
      const later = Date.now() + 60_000;
      const m1Key = people.cred("m1").self.publicKey;
      const cap = { expiry: later, cap: readCapability(secret, m1Key, aliceOnlyId, later) };
      assert.deepEqual(await read(m1, aliceOnlyId, cap), aliceOnly);
      await expectCode(read(m1, smallId, cap), ErrorCode.Forbidden, "m1, another file's cap");
      const w1Cap = readCapability(secret, people.cred("w1").self.publicKey, aliceOnlyId, later);
      await expectCode(
        read(m1, aliceOnlyId, { expiry: later, cap: w1Cap }),
        ErrorCode.Forbidden,
        "m1 with w1's capability",
      );
    });

    await t.step("a key not on the keyring gets no answer; others keep being served", async () => {
      const ring = Keyring.parse(await Deno.readTextFile(`${keys}/keyring`));
      const mKey = newKeyFile("mallory", "client");
      const mallory = new Credentials(
        mKey,
        ring.with({ role: "client", name: "mallory", publicKey: mKey.publicKey, admin: false }),
      );
      // Bounded by the request's own timeout: no reply ever comes (refused at the handshake).
      await expectCode(
        read(people.rpc(node, "mallory", mallory, 1500), smallId),
        ErrorCode.Unavailable,
        "mallory",
      );
      // A key copied from alice's line but with another secret cannot complete the handshake.
      const alice = people.cred("alice");
      const forged = new Credentials(
        { ...newKeyFile("alice", "client"), publicKey: alice.self.publicKey },
        alice.keyring,
      );
      await expectCode(
        read(people.rpc(node, "alice", forged, 1500), smallId),
        ErrorCode.Unavailable,
        "alice's public key with another secret key",
      );
      mallory.close();
      forged.close();
      assert.deepEqual(await read(people.rpc(node, "alice"), smallId), small);
    });

    await t.step("owners survive kill -9, a torn last log record and a restart", async () => {
      await node.kill("SIGKILL");
      // A crash in the middle of appending "bob owns the output": half of its frame.
      const logPath = `${data}/${OWNERS_LOG}`;
      const whole = (await Deno.stat(logPath)).size;
      const torn = addFrame(outputId, "bob");
      const fh = await Deno.open(logPath, { append: true });
      try {
        await fh.write(torn.subarray(0, torn.length - 3));
      } finally {
        fh.close();
      }
      node = await StorageProc.start(data, keys);
      assert.equal((await Deno.stat(logPath)).size, whole, "torn record truncated");
      await expectCode(
        people.storage(node, "bob").getBytes(outputId),
        ErrorCode.Forbidden,
        "bob reads the output his torn record named",
      );
      const alice = people.storage(node, "alice");
      const bob = people.storage(node, "bob");
      for (const [id, b] of [[smallId, small], [bigId, big], [aliceOnlyId, aliceOnly]] as const) {
        assert.deepEqual(await alice.getBytes(id), b);
      }
      assert.deepEqual(await alice.getBytes(outputId), output);
      assert.deepEqual(await bob.getBytes(smallId), small);
      assert.deepEqual(await bob.getBytes(bigId), big);
      await expectCode(bob.getBytes(aliceOnlyId), ErrorCode.Forbidden, "bob after restart");
      assert.deepEqual(await bob.stat(aliceOnlyId), { exists: false, length: 0 });
      const m1 = people.rpc(node, "m1");
      assert.equal(await statAs(m1, aliceOnlyId, "bob"), false);
      assert.equal(await statAs(m1, outputId, "alice"), true);
    });
  } finally {
    await people.close();
    await node.kill("SIGTERM");
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

const quiet = createLogger("storage", "test", {}, () => {});

/** A file id from a number (owners.ts never looks at what the file holds). */
function hexOf(i: number): string {
  return i.toString(16).padStart(32, "0");
}

Deno.test("owners log: a torn last record is truncated on open, the rest kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-owners-torn-" });
  try {
    const exists = () => true;
    let o = await Owners.open(dir, { filesDir: dir, exists });
    await Promise.all(["alice", "bob", "carol"].map((n) => o.add(hexOf(1), n)));
    await o.add(hexOf(2), "dave");
    await o.close();
    const path = `${dir}/${OWNERS_LOG}`;
    const full = await Deno.readFile(path);
    const last = (await logPayloads(path)).at(-1)!;
    assert.deepEqual(decodeOwnersRecord(last), { kind: "add", hex: hexOf(2), name: "dave" });
    // The crash came in the middle of dave's record (8 header bytes + payload).
    const kept = full.length - 8 - last.length;
    await Deno.writeFile(path, full.subarray(0, full.length - 2));
    o = await Owners.open(dir, { filesDir: dir, exists });
    assert.equal((await Deno.stat(path)).size, kept);
    assert.equal(o.logRecords, 3);
    assert.deepEqual(o.of(hexOf(1)).sort(), ["alice", "bob", "carol"]);
    assert.deepEqual(o.of(hexOf(2)), []);
    assert.equal(o.has(hexOf(2), "dave"), false);
    // Appends go on after the cut, and count after the next open.
    await o.add(hexOf(2), "erin");
    await o.close();
    o = await Owners.open(dir, { filesDir: dir, exists });
    assert.deepEqual(o.of(hexOf(2)), ["erin"]);
    assert.deepEqual(o.of(hexOf(1)).sort(), ["alice", "bob", "carol"]);
    await o.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("owners log: compaction keeps every owner, drops what is gone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-owners-compact-" });
  try {
    const path = `${dir}/${OWNERS_LOG}`;
    const present = new Set(Array.from({ length: 40 }, (_, i) => hexOf(i)));
    const exists = (hex: string) => present.has(hex);
    const opts = { filesDir: dir, exists, compactMinRecords: 8, maxOwners: 3 };
    let o = await Owners.open(dir, opts);
    const want = new Map<string, string[]>();
    for (let i = 0; i < 40; i++) {
      want.set(hexOf(i), ["alice", "bob"]);
      await Promise.all(["alice", "bob"].map((n) => o.add(hexOf(i), n)));
    }
    assert.equal(o.logRecords, 80);
    assert.equal(o.liveEntries, 80);
    // Drops (of files 0..29) and new owners (of files 30..39) at once: the log grows past twice
    // its live entries, and is rewritten while some of these may still be arriving.
    await Promise.all([
      ...Array.from({ length: 30 }, (_, i) => o.drop(hexOf(i))),
      ...Array.from({ length: 10 }, (_, i) => o.add(hexOf(30 + i), "carol")),
    ]);
    for (let i = 0; i < 30; i++) want.delete(hexOf(i));
    for (let i = 30; i < 40; i++) want.get(hexOf(i))!.push("carol");
    await o.close(); // waits for a compaction that is running
    const check = (o: Owners) => {
      for (const [hex, names] of want) assert.deepEqual(o.of(hex).sort(), names, hex);
      for (let i = 0; i < 30; i++) assert.deepEqual(o.of(hexOf(i)), []);
    };
    o = await Owners.open(dir, opts);
    check(o);
    assert.equal(o.liveEntries, 30);
    assert.equal(o.logRecords, 30, "the log was compacted to its live entries");
    assert.equal((await logPayloads(path)).length, 30);
    await o.close();

    // A log of repeated records (as failed writes and their retries leave) is compacted on open,
    // and owners of files no longer on disk are dropped there; the bound per file holds.
    const dup = addFrame(hexToUuid(hexOf(35)), "alice");
    const extra = [
      ...Array.from({ length: 50 }, () => dup),
      addFrame(hexToUuid(hexOf(35)), "dave"), // a fourth owner: over maxOwners, ignored
      addFrame(hexToUuid(hexOf(99)), "zed"), // a file not on disk
    ];
    const fh = await Deno.open(path, { append: true });
    try {
      for (const f of extra) await fh.write(f);
    } finally {
      fh.close();
    }
    o = await Owners.open(dir, opts);
    check(o);
    assert.deepEqual(o.of(hexOf(99)), []);
    assert.equal(o.logRecords, 30);
    await o.close();
    o = await Owners.open(dir, opts);
    check(o);
    assert.equal(o.logRecords, 30);
    await o.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("owners log: former files/<id>.owners lists are imported once and removed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dsys-owners-migrate-" });
  const open = () => FileStore.open({ dir, node: randomUuid(), nodeName: "s-test", log: quiet });
  try {
    const a = randomBytes(100), b = randomBytes(200);
    const [aId, bId] = [idOf(a), idOf(b)];
    let store = await open();
    for (const bytes of [a, b]) {
      const ack = await store.put(filePut(idOf(bytes), bytes));
      assert.equal(ack.type === MessageType.FilePutAck && ack.committed, true);
    }
    await store.close();
    // The former layout, as an older node left it: lists next to the files (one with an
    // unterminated, torn last line), one for a file that is not here, and a crash's temp.
    await Deno.remove(`${dir}/${OWNERS_LOG}`);
    const files = `${dir}/files`;
    await Deno.writeTextFile(`${files}/${uuidToHex(aId)}.owners`, "alice\nbob\n");
    await Deno.writeTextFile(`${files}/${uuidToHex(bId)}.owners`, "carol\nnot a name\ndav");
    await Deno.writeTextFile(`${files}/${hexOf(7)}.owners`, "eve\n");
    await Deno.writeTextFile(`${files}/${uuidToHex(aId)}.owners.tmp-1234`, "mallory\n");
    for (let round = 0; round < 2; round++) {
      store = await open();
      assert.deepEqual((await store.ownersOf(aId)).sort(), ["alice", "bob"], `round ${round}`);
      assert.deepEqual(await store.ownersOf(bId), ["carol"]);
      assert.equal(await store.isOwner(aId, "mallory"), false);
      const left = [];
      for await (const e of Deno.readDir(files)) if (e.name.includes(".owners")) left.push(e.name);
      assert.deepEqual(left, []);
      await store.close();
    }
    assert.deepEqual(await ownersInLog(`${dir}/${OWNERS_LOG}`, uuidToHex(aId)), ["alice", "bob"]);
    assert.deepEqual(await ownersInLog(`${dir}/${OWNERS_LOG}`, hexOf(7)), []);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

function hexToUuid(hex: string): Uuid {
  return Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
}

Deno.test({
  name: "owners log: a full disk fails adds with ENOSPC; once freed the log is repaired",
  ignore: !canMount, // needs root (mount)
  fn: async () => {
    const mnt = await Deno.makeTempDir({ prefix: "dsys-owners-full-" });
    try {
      await run("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mnt);
      try {
        assert.notEqual((await Deno.stat(mnt)).dev, (await Deno.stat(`${mnt}/..`)).dev);
        let o = await Owners.open(mnt, { filesDir: mnt, exists: () => true });
        await Deno.writeFile(`${mnt}/filler`, new Uint8Array(1024 * 1024)).catch(() => {});
        // Appends fill what is left of the log's last page, then one fails (maybe torn).
        const confirmed: number[] = [];
        let err: unknown = null;
        for (let i = 0; i < 10_000 && err === null; i++) {
          await o.add(hexOf(i), "alice").then(() => confirmed.push(i), (e) => err = e);
        }
        assert.equal((err as { code?: string } | null)?.code, "ENOSPC", String(err));
        const failed = confirmed.length;
        assert.equal(o.has(hexOf(failed), "alice"), false);
        // The log must be rewritten before anything more is appended: no room for that yet.
        await o.add(hexOf(failed + 1), "bob").then(
          () => assert.fail("an add succeeded on a full disk"),
          (e) => assert.equal(e.code, "ENOSPC", String(e)),
        );
        await Deno.remove(`${mnt}/filler`);
        await o.add(hexOf(failed + 1), "bob");
        await o.close();
        o = await Owners.open(mnt, { filesDir: mnt, exists: () => true });
        for (const i of confirmed) assert.ok(o.has(hexOf(i), "alice"), `owner ${i} kept`);
        assert.equal(o.has(hexOf(failed), "alice"), false);
        assert.ok(o.has(hexOf(failed + 1), "bob"));
        assert.equal(o.logRecords, confirmed.length + 1);
        await o.close();
      } finally {
        await run("umount", mnt).catch(() => run("umount", "-l", mnt));
      }
    } finally {
      await Deno.remove(mnt, { recursive: true }).catch(() => {});
    }
  },
});
