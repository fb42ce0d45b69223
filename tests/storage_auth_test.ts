/**
 * Storage access rules with real keys: a storage node process started with `--key/--keyring`
 * (from `initCluster`), spoken to over CURVE with each identity's own key. Who may read a file
 * (owners, admin, workers with read capabilities), what file_stat shows whom, who becomes an
 * owner by a put, that owners survive kill -9, and that a key off the keyring gets no answer.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
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

function idOf(b: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(b).digest()).slice(0, 16);
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
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
        ErrorCode.BadRequest,
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
        ErrorCode.BadRequest,
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
      const owners = await Deno.readTextFile(`${data}/files/${uuidToHex(bigId)}.owners`);
      assert.deepEqual(owners.split("\n"), ["alice", "bob", ""]);
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
      // A master may not read files at all (refused by the rpc layer).
      await expectCode(read(m1, aliceOnlyId), ErrorCode.Forbidden, "m1 reads");
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

    await t.step("owners survive kill -9 and a restart", async () => {
      await node.kill("SIGKILL");
      node = await StorageProc.start(data, keys);
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
