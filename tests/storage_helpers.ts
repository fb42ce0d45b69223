/**
 * Helpers shared by the storage tests: content ids, random file bytes, and running the system
 * commands that make a small real filesystem (mount needs root).
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { randomUuid, type Uuid } from "../wire/mod.ts";
import { RpcClient } from "../lib/rpc.ts";
import { StorageClient, type StorageClientOptions } from "../client/storage_client.ts";
import type { TestKeys } from "./keys_helper.ts";
import { within } from "./wait.ts";

const CLI = new URL("../roles/storage/cli.ts", import.meta.url).pathname;
const DENO = Deno.execPath();

/** The storage node's key name in the storage tests. */
export const NODE = "s1";

/** The content id of `b`: the first 16 bytes of its SHA-256. */
export function idOf(b: Uint8Array): Uuid {
  return new Uint8Array(createHash("sha256").update(b).digest()).slice(0, 16);
}

/** `n` deterministic pseudo-random bytes for `seed` (xorshift), so each file has its own content. */
export function bytesOf(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** `n` random bytes (in 64 KiB pieces: getRandomValues' limit). */
export function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
}

/** True where the tests may mount a filesystem (Linux, as root). */
export const canMount = Deno.build.os === "linux" && Deno.uid() === 0;

/** Runs `cmd args…` within a 30 s deadline; throws with its exit code and stderr on failure. */
export async function run(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000), // killed (and failing) past the deadline
  }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")}: exit ${out.code}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

/** A storage node running as its own OS process. */
export class StorageProc {
  constructor(
    readonly child: Deno.ChildProcess,
    readonly endpoint: string,
    readonly dir: string,
    readonly keys: TestKeys | null,
  ) {}

  /** Starts a node with `keys` (its key: NODE), or insecure when `keys` is null. */
  static async start(
    keys: TestKeys | null,
    dir: string,
    listen = "tcp://127.0.0.1:0",
    extra: string[] = [],
  ): Promise<StorageProc> {
    const verbose = Deno.env.get("DSYS_TEST_VERBOSE") !== undefined;
    const security = keys ? keys.nodeArgs(NODE) : [];
    const child = new Deno.Command(DENO, {
      args: ["run", "-A", CLI, "--listen", listen, "--data", dir, ...security, ...extra],
      stdout: "piped",
      stderr: verbose ? "inherit" : "null",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await within(60_000, "the listening line", reader.read());
      if (done) throw new Error(`storage process exited before listening (data ${dir})`);
      buf += value;
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        const ev = JSON.parse(buf.slice(0, nl));
        assert.equal(ev.event, "listening");
        // Keep draining stdout so the child never blocks on a full pipe.
        (async () => {
          while (!(await reader.read()).done) { /* drain */ }
        })().catch(() => {});
        return new StorageProc(child, ev.endpoint, dir, keys);
      }
    }
  }

  /** How clients name the node: `s1@tcp://…` (the plain endpoint when insecure). */
  get ref(): string {
    return this.keys ? this.keys.ref(NODE, this.endpoint) : this.endpoint;
  }

  /** A StorageClient as `user` (default: the admin client). */
  client(node: Uint8Array = randomUuid(), opts: StorageClientOptions = {}, user = "admin") {
    return new StorageClient(this.ref, node, { ...opts, auth: this.#auth(user) });
  }

  /** A raw RpcClient as `user` (default: the admin client). */
  rpc(node: Uint8Array, timeoutMs: number, user = "admin"): RpcClient {
    return new RpcClient(this.ref, { node, timeoutMs, auth: this.#auth(user) });
  }

  #auth(user: string) {
    return this.keys ? this.keys.creds(user) : null;
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Peak resident set size of the node process (VmHWM), bytes. */
  async peakRss(): Promise<number> {
    const s = await Deno.readTextFile(`/proc/${this.pid}/status`);
    const m = /VmHWM:\s+(\d+) kB/.exec(s);
    assert.ok(m, "VmHWM missing");
    return Number(m[1]) * 1024;
  }

  async kill(signal: Deno.Signal = "SIGKILL"): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
    return await this.child.status;
  }
}
