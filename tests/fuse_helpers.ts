/**
 * Shared helpers of the FUSE tests and benchmark: a fake storage fetcher that copies source files
 * into the cache and counts calls, and child-process readers (the serving process must never read
 * its own mount synchronously).
 * @module
 */

import { createHash } from "node:crypto";

/** First 16 bytes of SHA-256 of `data` (dsys file ids are content addressed). */
export function fileId(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest().subarray(0, 16));
}

/** A fetcher backed by a local "storage" directory of files named by id hex. */
export class FakeStorage {
  /** Fetch calls per id hex (downloads: a cache file already holding the id's bytes is only
   * verified, as the worker's fetch does, and counted in `verified`). */
  calls = new Map<string, number>();
  /** Cache files found already holding their id's bytes, per id hex. */
  verified = new Map<string, number>();
  /** Ids whose next fetch fails (once per listed count). */
  failNext = new Map<string, number>();
  /** Artificial latency of each fetch, to make concurrent first reads overlap. */
  delayMs = 0;

  /** Creates a fake storage rooted at `dir`. */
  constructor(readonly dir: string) {}

  /** Stores `data` and returns its id. */
  async put(data: Uint8Array): Promise<Uint8Array> {
    const id = fileId(data);
    await Deno.writeFile(`${this.dir}/${hex(id)}`, data);
    return id;
  }

  /** Total fetch calls. */
  total(): number {
    let n = 0;
    for (const v of this.calls.values()) n += v;
    return n;
  }

  /** Fetches not finished yet (a test awaits them so no timer outlives it). */
  pending = new Set<Promise<void>>();

  /** The fetch function given to FuseMount: copies to a temp file, then renames (atomic). */
  fetch = (id: Uint8Array, cachePath: string): Promise<void> => {
    const p = this.#fetch(id, cachePath);
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
    return p;
  };

  /** Waits for every fetch started so far (ignoring their failures). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  #fetch = async (id: Uint8Array, cachePath: string): Promise<void> => {
    const h = hex(id);
    // The mount hands over a cache file it has not verified itself (left by an earlier mount):
    // kept when it holds the id's bytes, like the worker's fetch does.
    const there = await Deno.readFile(cachePath).catch(() => null);
    if (there && hex(fileId(there)) === h) {
      this.verified.set(h, (this.verified.get(h) ?? 0) + 1);
      return;
    }
    this.calls.set(h, (this.calls.get(h) ?? 0) + 1);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    const fails = this.failNext.get(h) ?? 0;
    if (fails > 0) {
      this.failNext.set(h, fails - 1);
      throw new Error(`fake storage: injected failure for ${h}`);
    }
    const tmp = `${cachePath}.tmp-${crypto.randomUUID()}`;
    await Deno.copyFile(`${this.dir}/${h}`, tmp);
    await Deno.rename(tmp, cachePath);
  };
}

/** Lowercase hex of bytes. */
export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Result of a child command. */
export interface ChildResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command as a child process (async, so the mount keeps being served). */
export async function sh(cmd: string, ...args: string[]): Promise<ChildResult> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: r.code, stdout: d.decode(r.stdout), stderr: d.decode(r.stderr) };
}

/** Deterministic pseudo-random bytes (xorshift), cheap enough for hundreds of MiB. */
export function randomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  const w = new Uint32Array(out.buffer, 0, Math.floor(n / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    w[i] = x;
  }
  for (let i = w.length * 4; i < n; i++) out[i] = i & 255;
  return out;
}
