/**
 * Test helpers for the balancer: spawn a real balancer process, and fake workers (DEALERs in
 * the test process that ack worker_requests, heartbeat, and report chunk_finished). Secure
 * like a real cluster when given keys (tests/keys_helper.ts): the balancer runs with its key,
 * each fake worker speaks CURVE with its own worker key.
 * @module
 */
import { RpcError } from "../lib/rpc.ts";
import type { Credentials } from "../lib/security.ts";
import { BalancerClient } from "../roles/balancer/client.ts";
import type { TestKeys } from "./keys_helper.ts";
import { waitFor } from "./wait.ts";
import {
  ChunkState,
  ErrorCode,
  type Message,
  MessageType,
  randomUuid,
  type Uuid,
  uuidToHex,
  type WorkerRequest,
} from "../wire/mod.ts";

/** A balancer child process. */
export interface BalancerProc {
  endpoint: string;
  /** How clients name it: `NAME@endpoint` when it runs with a key, else the endpoint. */
  ref: string;
  child: Deno.ChildProcess;
  /** Collected stderr (JSON log lines). */
  logs: string[];
  stop(): Promise<Deno.CommandStatus>;
}

/**
 * Spawns `roles/balancer/cli.ts` with `args` and waits for its `listening` line; with `key`, the
 * balancer runs with the key `key.name` of `key.keys` (`--key/--keyring`), else insecure.
 */
export async function spawnBalancer(
  args: string[],
  key?: { keys: TestKeys; name: string },
): Promise<BalancerProc> {
  const cli = new URL("../roles/balancer/cli.ts", import.meta.url).pathname;
  const security = key ? key.keys.nodeArgs(key.name) : [];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args, ...security],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DSYS_LOG: "info" },
  }).spawn();
  const logs: string[] = [];
  const pumpErr = (async () => {
    let buf = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        logs.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    }
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let endpoint = "";
  const deadline = Date.now() + 30_000;
  while (!endpoint) {
    if (Date.now() > deadline) throw new Error("balancer did not print its listening line");
    const { value, done } = await reader.read();
    if (done) throw new Error(`balancer exited before listening; logs:\n${logs.join("\n")}`);
    out += value;
    for (const line of out.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const j = JSON.parse(line);
        if (j.event === "listening") endpoint = j.endpoint;
      } catch { /* a partial line: read more */ }
    }
  }
  // Keep draining stdout so the child never blocks on a full pipe.
  const pumpOut = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  if (key) {
    // Logged before `listening`: a balancer given a key must say it runs secure.
    await waitFor(
      `balancer ${key.name} to log "security on"`,
      () => logs.some((l) => l.includes("security on")),
      { timeoutMs: 10_000, detail: () => logs.join("\n") },
    );
  }
  return {
    endpoint,
    ref: key ? key.keys.ref(key.name, endpoint) : endpoint,
    child,
    logs,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const st = await child.status;
      await Promise.all([pumpErr, pumpOut]);
      return st;
    },
  };
}

/** One chunk run a fake worker accepted. */
export interface Run {
  worker: string;
  job: string;
  chunk: number;
  attempt: number;
}

/** Options of a fake worker. */
export interface FakeWorkerOptions {
  /** Balancer endpoint, or primary and standby endpoints (`NAME@tcp://…` when secure). */
  endpoint: string | string[];
  /** The worker's own key (a worker key; the balancer binds the node id to it). */
  auth: Credentials | null;
  slots: number;
  files?: Uuid[];
  label: string;
  /** Shared log of accepted runs, in acceptance order. */
  runs: Run[];
  /** How long a chunk "runs", ms. */
  runMs?: number;
  heartbeatMs?: number;
}

/** A fake worker: a DEALER that registers, heartbeats, acks and finishes chunks. */
export class FakeWorker {
  readonly id: Uuid = randomUuid();
  readonly key: string = uuidToHex(this.id);
  readonly client: BalancerClient;
  /** When set, the worker is hung: no heartbeats, chunks never finish (but acks still go). */
  hung = false;
  /** When set, every worker_request is refused. */
  refuseAll = false;
  /** Attempts of chunks it holds and has not finished: key job/chunk -> attempt. */
  readonly holding = new Map<string, { job: Uuid; chunk: number; attempt: number }>();
  #o: FakeWorkerOptions;
  #timer: ReturnType<typeof setInterval> | undefined;
  #running = 0;
  #finishing = new Set<Promise<unknown>>();

  constructor(o: FakeWorkerOptions) {
    this.#o = o;
    const eps = typeof o.endpoint === "string" ? [o.endpoint] : o.endpoint;
    this.client = new BalancerClient(eps, {
      node: this.id,
      // Short, so a dead primary is noticed quickly (standby tests).
      timeoutMs: eps.length > 1 ? 500 : 10_000,
      routingId: this.id,
      onRequest: (m) => this.#onRequest(m),
      auth: o.auth,
    });
  }

  /** Registers, then heartbeats every heartbeatMs while not hung. */
  async start(): Promise<void> {
    // Like a real worker, keep trying until a balancer takes the registration: with the short
    // timeout of a primary/standby pair, a loaded machine can make the first round trip (and
    // its CURVE handshake) miss it, and the standby then refuses (it only follows).
    let last: unknown;
    await waitFor(`${this.#o.label} to register`, () =>
      this.register().then(() => true, (e) => {
        if (!(e instanceof RpcError) || e.code !== ErrorCode.Unavailable) throw e;
        last = e;
        return false;
      }), { timeoutMs: 60_000, intervalMs: 50, detail: () => `last: ${last}` });
    this.#timer = setInterval(() => {
      if (this.hung) return;
      this.client.request({
        type: MessageType.WorkerHeartbeat,
        node: this.id,
        slots: this.#o.slots,
        freeSlots: this.#o.slots - this.#running,
        added: [],
        evicted: [],
      }).catch((e) => {
        // Like a real worker: an unknown worker registers again.
        if (e instanceof RpcError && e.code === ErrorCode.NotFound) this.register().catch(() => {});
      });
    }, this.#o.heartbeatMs ?? 100);
  }

  /** Sends worker_register with the current cache. */
  async register(): Promise<void> {
    await this.client.request({
      type: MessageType.WorkerRegister,
      node: this.id,
      slots: this.#o.slots,
      freeSlots: this.#o.slots - this.#running,
      files: this.#o.files ?? [],
      label: this.#o.label,
    });
  }

  /** Sends a heartbeat announcing `added` files now. */
  async addFiles(added: Uuid[]): Promise<Message> {
    return await this.client.request({
      type: MessageType.WorkerHeartbeat,
      node: this.id,
      slots: this.#o.slots,
      freeSlots: this.#o.slots - this.#running,
      added,
      evicted: [],
    });
  }

  #onRequest(m: Message): Message {
    if (m.type !== MessageType.WorkerRequest) throw new Error(`unexpected ${m.type}`);
    const ack = (accepted: boolean, reason = ""): Message => ({
      type: MessageType.WorkerRequestAck,
      node: this.id,
      job: m.job,
      chunkIndex: m.chunkIndex,
      attempt: m.attempt,
      accepted,
      reason,
    });
    if (this.refuseAll) return ack(false, "refusing everything (test)");
    if (this.#running >= this.#o.slots) return ack(false, "no free slot");
    this.#running++;
    this.#o.runs.push({
      worker: this.key,
      job: uuidToHex(m.job),
      chunk: m.chunkIndex,
      attempt: m.attempt,
    });
    this.holding.set(`${uuidToHex(m.job)}/${m.chunkIndex}`, {
      job: m.job,
      chunk: m.chunkIndex,
      attempt: m.attempt,
    });
    const p = this.#finishLater(m);
    this.#finishing.add(p);
    p.finally(() => this.#finishing.delete(p));
    return ack(true);
  }

  async #finishLater(m: WorkerRequest): Promise<void> {
    await new Promise((r) => setTimeout(r, this.#o.runMs ?? 10));
    if (this.hung) return; // a hung worker never finishes
    this.holding.delete(`${uuidToHex(m.job)}/${m.chunkIndex}`);
    this.#running--;
    // Like a real worker: retry until a balancer (primary or, after failover, standby) has it.
    for (let i = 0; i < 50; i++) {
      try {
        await this.sendFinished(m.job, m.chunkIndex, m.attempt);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Sends chunk_finished(Succeeded); resolves with the balancer's ok value (1 = fresh). */
  async sendFinished(job: Uuid, chunk: number, attempt: number): Promise<number> {
    const r = await this.client.request({
      type: MessageType.ChunkFinished,
      node: this.id,
      job,
      chunkIndex: chunk,
      attempt,
      state: ChunkState.Succeeded,
    });
    return r.type === MessageType.Ok ? r.value : -1;
  }

  /** Stops heartbeating and closes the DEALER. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.allSettled([...this.#finishing]);
    await this.client.close();
  }
}

/**
 * Resolves once every worker_request the balancer pushed before this call has been handled by
 * its (fake) worker, without waiting for a time: per peer, the balancer's pushes and replies
 * leave its ROUTER in order and the worker's DEALER hands them over in order, so the reply to a
 * worker's heartbeat comes after every push sent to that worker before the heartbeat was
 * handled. Two rounds over all workers: the second also covers placements made while handling
 * the first (or a chunk_finished still on its way when this was called). A worker the balancer
 * declared dead answers NOT_FOUND, which is a reply all the same.
 */
export async function pushesDelivered(workers: FakeWorker[]): Promise<void> {
  for (let round = 0; round < 2; round++) {
    await Promise.all(workers.map((w) =>
      w.addFiles([]).catch((e) => {
        if (!(e instanceof RpcError) || e.code !== ErrorCode.NotFound) throw e;
      })
    ));
  }
}
