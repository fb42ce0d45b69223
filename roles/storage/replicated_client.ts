/**
 * Client of the storage tier (many storage nodes): what the CLI, workers and masters use.
 *
 * - put: the file is hashed once (its id), then uploaded to its first R nodes in placement
 *   order (placement.ts) in parallel, fanned out by the client. It resolves only when R nodes
 *   have committed it (each node fsyncs before its committed ack). A node that fails mid-put is
 *   replaced by the next node in the order, which gets the whole file; the other uploads go on
 *   (the client does not start over). Fewer than R nodes able to take it: UNAVAILABLE.
 * - get: reads from the nodes in read order (the file's own order, alive nodes first), one
 *   window of range requests at a time; a node that fails or does not have the file is left
 *   for the next one, which continues at the offset reached (the bytes are the same on every
 *   replica: content addressed). The whole is SHA-256 verified against the id.
 * - stat: asks every node that is not dead at once; the first that has the file answers.
 * @module
 */
import { createHash } from "node:crypto";
import { ErrorCode, MAX_REPLICAS, type Uuid, uuidToHex } from "../../wire/mod.ts";
import { type Credentials, KeyringError } from "../../lib/security.ts";
import { writeFull, writeViaTemp } from "../../lib/fsutil.ts";
import { sha256File, type Sha256Stream, sha256Stream } from "../../lib/hash_worker.ts";
import {
  type PutOptions,
  type ReadCap,
  StorageClient,
  StorageError,
  type StorageStatsView,
} from "./client.ts";
import type { MembershipSource } from "./membership.ts";
import { type Member, putOrder, readOrder } from "./placement.ts";
import { NodeState } from "../../wire/mod.ts";

const MiB = 1024 * 1024;

/** Options of a ReplicatedStorage. */
export interface ReplicatedStorageOptions {
  /** Timeout of one request to one node, ms (default 10 s: then the next replica is tried). */
  timeoutMs?: number;
  /** Bytes per request (default 4 MiB). */
  chunkBytes?: number;
  /** Range requests in flight per download (default 8). */
  window?: number;
  /**
   * How long a put keeps trying to reach R nodes (a node restarting, a partition), ms (default
   * 30 s); then it fails UNAVAILABLE.
   */
  putDeadlineMs?: number;
  auth?: Credentials | null;
}

/** A put's outcome: the id, the size, and the nodes (hex ids) that committed it. */
export interface PutResult {
  id: Uint8Array;
  size: number;
  nodes: string[];
}

/** Uploads to, downloads from and stats against the storage tier. */
export class ReplicatedStorage {
  readonly node: Uint8Array;
  #source: MembershipSource;
  #opts: ReplicatedStorageOptions;
  #clients = new Map<string, StorageClient>();
  /** Downloads this client has running per node: reads prefer the least loaded replica. */
  #reading = new Map<string, number>();
  #closed = false;

  constructor(source: MembershipSource, node: Uint8Array, opts: ReplicatedStorageOptions = {}) {
    this.#source = source;
    this.node = node;
    this.#opts = opts;
  }

  /**
   * The (cached) client of one storage node: for reads and stats without retries (the next
   * replica is the retry), for uploads (`write`) with two (a resumed upload is one).
   */
  client(endpoint: string, write = false): StorageClient {
    const key = `${write ? "w" : "r"} ${endpoint}`;
    let c = this.#clients.get(key);
    if (!c) {
      const make = () =>
        new StorageClient(endpoint, this.node, {
          timeoutMs: this.#opts.timeoutMs ?? 10_000,
          chunkBytes: this.#opts.chunkBytes,
          window: this.#opts.window,
          retries: write ? 2 : 0,
          ...(this.#opts.auth !== undefined ? { auth: this.#opts.auth } : {}),
        });
      try {
        c = make();
      } catch (e) {
        // A storage node that joined after this process read the keyring: read it again now
        // (it is re-read every second anyway) before giving up on the node.
        if (!(e instanceof KeyringError) || !this.#opts.auth?.reload()) throw e;
        c = make();
      }
      this.#clients.set(key, c);
    }
    return c;
  }

  // -------------------------------------------------------------------------------------------
  // Put

  /** Stores bytes held in memory on R nodes. */
  async putBytes(data: Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    const id = new Uint8Array(createHash("sha256").update(data).digest()).slice(0, 16);
    const nodes = await this.#put(id, data.length, () => ({
      read: (off, n) => Promise.resolve(data.subarray(off, off + n)),
      close: () => {},
    }), opts);
    return { id, size: data.length, nodes };
  }

  /**
   * Stores a file on R nodes: one pass to hash it (on a hashing thread: lib/hash_worker.ts),
   * then one streaming read per replica.
   */
  async putFile(path: string, opts: PutOptions = {}): Promise<PutResult> {
    const { digest, size } = await sha256File(path);
    const id = digest.slice(0, 16);
    const nodes = await this.#put(id, size, () => {
      const f = Deno.openSync(path, { read: true });
      return {
        read: async (off, n) => {
          const b = new Uint8Array(n);
          await f.seek(off, Deno.SeekMode.Start);
          let got = 0;
          while (got < n) {
            const k = await f.read(b.subarray(got));
            if (k === null) {
              throw new StorageError(ErrorCode.Conflict, `${path} shrank while uploading`);
            }
            got += k;
          }
          return b;
        },
        close: () => f.close(),
      };
    }, opts);
    return { id, size, nodes };
  }

  async #put(
    id: Uuid,
    size: number,
    open: () => {
      read: (off: number, n: number) => Promise<Uint8Array>;
      close: () => void;
    },
    opts: PutOptions,
  ): Promise<string[]> {
    const hex = uuidToHex(id);
    const view = await this.#source.view();
    const replicas = opts.replicas ?? view.replicas;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
      throw new StorageError(
        ErrorCode.BadRequest,
        `put of file ${hex}: replicas ${replicas} is not 1..${MAX_REPLICAS}`,
      );
    }
    const committed: string[] = [];
    const failures: string[] = [];
    const deadline = performance.now() + (this.#opts.putDeadlineMs ?? 30_000);
    let members = view.members;
    let takers = 0;
    for (let round = 0;; round++) {
      // Nodes that committed it in an earlier round keep their copy; the rest is placed anew.
      const done = new Set(committed);
      const candidates = putOrder(hex, members).filter((m) => !done.has(m.hex));
      takers = candidates.length + done.size;
      let next = 0;
      // One lane per missing replica: it uploads to its node, on failure to the next candidate.
      const lane = async (): Promise<void> => {
        while (next < candidates.length && !this.#closed) {
          const m = candidates[next++];
          const source = open();
          try {
            await this.client(m.endpoint, true).upload(id, size, source.read, {
              ...opts,
              replicas,
            });
            committed.push(m.hex);
            return;
          } catch (e) {
            failures.push(`${m.endpoint}: ${e instanceof Error ? e.message : e}`);
            // A refusal about the file itself fails on every node alike: stop at once.
            if (e instanceof StorageError && isVerdict(e.code)) throw e;
          } finally {
            source.close();
          }
        }
      };
      await Promise.all(Array.from({ length: replicas - committed.length }, lane));
      if (committed.length >= replicas || this.#closed) break;
      // Too few nodes took it (one restarting, a partition): wait for the membership to change,
      // within the put's deadline. Nothing is acknowledged with fewer than R copies.
      if (performance.now() + 1000 > deadline) break;
      failures.length = Math.min(failures.length, 8);
      await new Promise((r) => setTimeout(r, Math.min(1000, 200 * 2 ** round)));
      members = (await this.#source.view(true)).members;
    }
    if (committed.length < replicas) {
      throw new StorageError(
        ErrorCode.Unavailable,
        `put of file ${hex}: stored on ${committed.length} of ${replicas} replicas ` +
          `(${takers} storage nodes take files)` +
          (failures.length ? `; failures: ${failures.slice(-4).join("; ")}` : ""),
      );
    }
    return committed;
  }

  // -------------------------------------------------------------------------------------------
  // Get

  /** Fetches the whole file into memory (verified); longer than `maxBytes`: BAD_REQUEST. */
  async getBytes(
    id: Uuid,
    maxBytes = Number.MAX_SAFE_INTEGER,
    rc: ReadCap = {},
  ): Promise<Uint8Array> {
    const box = { out: new Uint8Array(0) };
    await this.#download(id, maxBytes, (len) => {
      box.out = new Uint8Array(len);
    }, (off, data) => {
      box.out.set(data, off);
      return Promise.resolve();
    }, rc);
    return box.out;
  }

  /**
   * Streams the file to `path` through a temp file (verified, fsync'd unless `fsync` is false,
   * renamed into place). Returns the length.
   */
  async getToFile(
    id: Uuid,
    path: string,
    opts: { fsync?: boolean } & ReadCap = {},
  ): Promise<number> {
    return await writeViaTemp(path, opts.fsync ?? true, (f) => {
      let written = 0;
      return this.#download(id, Number.MAX_SAFE_INTEGER, () => {}, async (off, data) => {
        // The sink gets the bytes in order (a failover continues where the last node stopped).
        if (off !== written) {
          throw new StorageError(
            ErrorCode.Internal,
            `get to ${path}: write at ${off} != ${written}`,
          );
        }
        written += data.length;
        await writeFull(f, data);
      }, opts);
    });
  }

  /**
   * Streams the file to `sink` in order (a failover continues at the offset reached; `data` is
   * valid only until the sink's promise resolves: copy to keep it), `begin` first getting its
   * length. Verified whole at the end: a mismatch rejects after the bytes were handed on, so a
   * caller passing them further must fail its own stream then (the dashboard's output links).
   */
  async getToSink(
    id: Uuid,
    begin: (length: number) => void,
    sink: (offset: number, data: Uint8Array) => Promise<void>,
    rc: ReadCap = {},
  ): Promise<number> {
    return await this.#download(id, Number.MAX_SAFE_INTEGER, begin, sink, rc);
  }

  async #download(
    id: Uuid,
    maxBytes: number,
    begin: (length: number) => void,
    sink: (offset: number, data: Uint8Array) => Promise<void>,
    rc: ReadCap,
  ): Promise<number> {
    // Verified on a hashing thread while this one receives and writes (lib/hash_worker.ts).
    const h = sha256Stream();
    try {
      return await this.#downloadInto(h, id, maxBytes, begin, sink, rc);
    } finally {
      h.abort(); // a no-op once digested
    }
  }

  async #downloadInto(
    h: Sha256Stream,
    id: Uuid,
    maxBytes: number,
    begin: (length: number) => void,
    sink: (offset: number, data: Uint8Array) => Promise<void>,
    rc: ReadCap,
  ): Promise<number> {
    const hex = uuidToHex(id);
    const what = `get of file ${hex}`;
    const chunk = Math.max(1, Math.min(this.#opts.chunkBytes ?? 4 * MiB, 16 * MiB));
    const window = Math.max(1, this.#opts.window ?? 8);
    let len = -1;
    let pos = 0;
    const failures: string[] = [];
    let absentEverywhere = true;
    const view = await this.#source.view();
    let order = this.#leastLoadedFirst(readOrder(hex, view.members), view.replicas);
    let refreshed = false;
    for (let i = 0;; i++) {
      if (i >= order.length) {
        if (refreshed || this.#closed) break;
        // A second round, after a pause, on a fresh membership: a busy node gets another try,
        // and a node that joined (or got the file by repair) since the first view is asked.
        refreshed = true;
        await new Promise((r) => setTimeout(r, 200));
        order = [...order, ...readOrder(hex, (await this.#source.view(true)).members)];
      }
      const m: Member = order[i];
      const inflight: { off: number; n: number; p: ReturnType<StorageClient["readRange"]> }[] = [];
      this.#reading.set(m.endpoint, (this.#reading.get(m.endpoint) ?? 0) + 1);
      try {
        const c = this.client(m.endpoint);
        if (len < 0) {
          const head = await c.readRange(id, 0, chunk, rc);
          len = head.fileLength;
          if (len > maxBytes) {
            throw new StorageError(
              ErrorCode.BadRequest,
              `${what}: file is ${len} bytes, more than the allowed ${maxBytes}`,
            );
          }
          begin(len);
          await h.update(head.data);
          await sink(0, head.data);
          pos = head.data.length;
        }
        let next = pos;
        while (pos < len) {
          while (inflight.length < window && next < len) {
            const n = Math.min(chunk, len - next);
            const p = c.readRange(id, next, n, rc);
            p.catch(() => {});
            inflight.push({ off: next, n, p });
            next += n;
          }
          const r = inflight[0];
          const got = await r.p;
          inflight.shift();
          if (got.fileLength !== len) {
            throw new StorageError(
              ErrorCode.Conflict,
              `${what}: length ${got.fileLength} != ${len}`,
            );
          }
          await h.update(got.data);
          await sink(pos, got.data);
          pos += got.data.length;
          // A node may cap a response below what was asked: fetch the rest of this range.
          while (pos < r.off + r.n) {
            const more = await c.readRange(id, pos, r.off + r.n - pos, rc);
            if (more.data.length === 0) {
              throw new StorageError(ErrorCode.Internal, `${what}: empty response at ${pos}`);
            }
            await h.update(more.data);
            await sink(pos, more.data);
            pos += more.data.length;
          }
        }
        break;
      } catch (e) {
        if (e instanceof StorageError && e.code === ErrorCode.BadRequest && len > maxBytes) throw e;
        failures.push(`${m.endpoint}: ${e instanceof Error ? e.message : e}`);
        absentEverywhere &&= e instanceof StorageError && isAbsent(e.code);
      } finally {
        await Promise.allSettled(inflight.map((x) => x.p));
        const n = (this.#reading.get(m.endpoint) ?? 1) - 1;
        if (n > 0) this.#reading.set(m.endpoint, n);
        else this.#reading.delete(m.endpoint);
      }
    }
    if (len < 0 || pos < len) {
      const code = failures.length > 0 && absentEverywhere
        ? ErrorCode.NotFound
        : ErrorCode.Unavailable;
      throw new StorageError(
        code,
        `${what}: no storage node could serve it` +
          (failures.length ? ` (${failures.join("; ")})` : " (no storage nodes known)"),
      );
    }
    const digest = await h.digest();
    if (uuidToHex(digest.subarray(0, 16)) !== hex) {
      throw new StorageError(
        ErrorCode.Conflict,
        `${what}: received bytes hash to ${uuidToHex(digest.subarray(0, 16))}, not the id`,
      );
    }
    return len;
  }

  /**
   * The read order with its first `likely` alive nodes (where a file of the default replica
   * count most likely is) sorted by the downloads this client has running on them, fewest first
   * (stable: ties keep the file's order). The load a client sees is its own; with many readers
   * per worker, that spreads a hot file's reads over its replicas.
   */
  #leastLoadedFirst(order: Member[], likely: number): Member[] {
    const k = Math.min(
      Math.max(1, likely),
      order.filter((m) => m.state === NodeState.Alive).length,
    );
    if (k <= 1) return order;
    const head = order.slice(0, k).map((m, i) => ({
      m,
      i,
      load: this.#reading.get(m.endpoint) ?? 0,
    }));
    head.sort((a, b) => a.load - b.load || a.i - b.i);
    return [...head.map((x) => x.m), ...order.slice(k)];
  }

  // -------------------------------------------------------------------------------------------
  // Stat

  /**
   * Does the file exist (for `user`: is it theirs; "" = for anyone), and how long is it. Every
   * node that is not dead is asked at once; the first yes wins. No yes, and a node that might
   * hold it did not answer: UNAVAILABLE (absence cannot be concluded).
   */
  async stat(id: Uuid, user = ""): Promise<{ exists: boolean; length: number }> {
    const hex = uuidToHex(id);
    let asked = readOrder(hex, (await this.#source.view()).members)
      .filter((m) => m.state !== NodeState.Dead);
    if (asked.length === 0) {
      asked = readOrder(hex, (await this.#source.view(true)).members)
        .filter((m) => m.state !== NodeState.Dead);
    }
    if (asked.length === 0) {
      throw new StorageError(ErrorCode.Unavailable, `stat of file ${hex}: no storage nodes known`);
    }
    const failures: string[] = [];
    const found = await new Promise<{ exists: boolean; length: number } | null>((resolve) => {
      let left = asked.length;
      for (const m of asked) {
        Promise.resolve().then(() => this.client(m.endpoint).stat(id, user)).then((st) => {
          if (st.exists) resolve(st);
        }, (e) => {
          failures.push(`${m.endpoint}: ${e instanceof Error ? e.message : e}`);
        }).finally(() => {
          if (--left === 0) resolve(null);
        });
      }
    });
    if (found) return found;
    if (failures.length > 0) {
      throw new StorageError(
        ErrorCode.Unavailable,
        `stat of file ${hex}: not found on the nodes that answered; ${failures.join("; ")}`,
      );
    }
    return { exists: false, length: 0 };
  }

  /**
   * Counters of the whole tier (admin clients, masters): the sums over every storage node that
   * answers, fetch counts added up per file; `node` is the first node's id.
   */
  async stats(): Promise<StorageStatsView> {
    const per = await this.nodeStats();
    const ok = per.filter((p) => p.stats !== null).map((p) => p.stats!);
    if (ok.length === 0) {
      throw new StorageError(
        ErrorCode.Unavailable,
        `storage stats: no storage node answered (${per.map((p) => p.error).join("; ")})`,
      );
    }
    const sum: StorageStatsView = {
      node: ok[0].node,
      gets: 0,
      getBytes: 0,
      puts: 0,
      putBytes: 0,
      files: 0,
      storedBytes: 0,
      fetchCounts: new Map(),
    };
    for (const s of ok) {
      sum.gets += s.gets;
      sum.getBytes += s.getBytes;
      sum.puts += s.puts;
      sum.putBytes += s.putBytes;
      sum.files += s.files;
      sum.storedBytes += s.storedBytes;
      for (const [f, n] of s.fetchCounts) sum.fetchCounts.set(f, (sum.fetchCounts.get(f) ?? 0) + n);
    }
    return sum;
  }

  /** Each storage node's counters (or why it did not answer). */
  async nodeStats(): Promise<
    { endpoint: string; stats: StorageStatsView | null; error: string }[]
  > {
    const all = (await this.#source.view(true)).members.filter((m) => m.state !== NodeState.Dead);
    return await Promise.all(all.map(async (m) => {
      try {
        return { endpoint: m.endpoint, stats: await this.client(m.endpoint).stats(), error: "" };
      } catch (e) {
        return {
          endpoint: m.endpoint,
          stats: null,
          error: e instanceof Error ? e.message : `${e}`,
        };
      }
    }));
  }

  /** Closes every connection (and the membership source). */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#clients.values()].map((c) => c.close().catch(() => {})));
    this.#clients.clear();
    await this.#source.close();
  }
}

/** Error codes that say something about the file itself, the same on every node. */
function isVerdict(code: number): boolean {
  return code === ErrorCode.Conflict || code === ErrorCode.BadRequest ||
    code === ErrorCode.TooLarge;
}

/** Error codes of a node that answered but has (or shows) no such file. */
function isAbsent(code: number): boolean {
  return code === ErrorCode.NotFound || code === ErrorCode.Forbidden;
}
