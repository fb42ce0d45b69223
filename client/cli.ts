/** `dsys put|submit|status|get|rm|nodes`: argument parsing and output of the client commands. */
import { parseArgs } from "node:util";
import {
  ChunkState,
  ClusterOp,
  ErrorCode,
  type JobStatusResponse,
  MAX_REPLICAS,
  MessageType,
  uuidFromHex,
  uuidToHex,
} from "../wire/mod.ts";
import { codeName, RpcError } from "../lib/rpc.ts";
import { ClientError, DsysClient, failureName, progressLine, stateName } from "./commands.ts";
import { limitFlagsOf, SUBMIT_LIMIT_FLAGS } from "./limit_flags.ts";
import { chunkLogs } from "./logs.ts";
import { resolveCluster } from "./cluster.ts";

/** Exit codes of the client commands. */
export const EXIT = { ok: 0, usage: 1, unavailable: 2, jobFailed: 3 } as const;

const common = {
  master: { type: "string" as const },
  storage: { type: "string" as const },
  /** This client's key file and the cluster's keyring (else $DSYS_KEY/$DSYS_KEYRING, cluster file). */
  key: { type: "string" as const },
  keyring: { type: "string" as const },
  json: { type: "boolean" as const, default: false },
  /** How long to keep trying to reach the masters (seconds). */
  timeout: { type: "string" as const, default: "10" },
  help: { type: "boolean" as const, short: "h", default: false },
};

function parseId(s: string, what: string): Uint8Array {
  const hex = s.replaceAll("-", "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) {
    throw new ClientError(`${what} ${JSON.stringify(s)} is not a 32-digit hex id`, EXIT.usage);
  }
  return uuidFromHex(hex.toLowerCase());
}

/** Writes a line to stdout. */
function out(line: string): void {
  console.log(line);
}

/** Runs one client command; returns the process exit code. */
export async function runClient(command: string, args: string[]): Promise<number> {
  try {
    return await dispatch(command, args);
  } catch (e) {
    if (e instanceof ClientError) {
      console.error(`dsys ${command}: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof RpcError) {
      console.error(`dsys ${command}: ${codeName(e.code)}: ${e.text} (from ${e.peer})`);
      if (e.code === ErrorCode.Unavailable || e.code === ErrorCode.NotLeader) {
        console.error("is the cluster running? (`dsys dev --keep`, or --master tcp://HOST:PORT)");
        return EXIT.unavailable;
      }
      return EXIT.usage;
    }
    if (e instanceof TypeError && String(e.message).includes("Unknown option")) {
      console.error(`dsys ${command}: ${e.message}`);
      return EXIT.usage;
    }
    console.error(`dsys ${command}: ${e instanceof Error ? e.message : e}`);
    return EXIT.usage;
  }
}

async function dispatch(command: string, args: string[]): Promise<number> {
  switch (command) {
    case "put":
      return await cmdPut(args);
    case "submit":
      return await cmdSubmit(args);
    case "status":
      return await cmdStatus(args);
    case "get":
      return await cmdGet(args);
    case "rm":
      return await cmdRm(args);
    case "ls":
      return await cmdLs(args);
    case "cancel":
      return await cmdCancel(args);
    case "logs":
      return await cmdLogs(args);
    case "nodes":
      return await cmdNodes(args);
    case "cluster":
      return await cmdCluster(args);
    default:
      throw new ClientError(`unknown command ${command}`, EXIT.usage);
  }
}

async function withClient<T>(
  flags: { master?: string; storage?: string; key?: string; keyring?: string; timeout?: string },
  f: (c: DsysClient) => Promise<T>,
): Promise<T> {
  const secs = Number(flags.timeout ?? "10");
  if (!(secs > 0)) throw new ClientError(`--timeout ${flags.timeout} is not a positive number`);
  const c = new DsysClient(resolveCluster(flags), { deadlineMs: secs * 1000 });
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

async function cmdPut(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...common, replicas: { type: "string" } },
    allowPositionals: true,
  });
  if (values.help || positionals.length === 0) {
    out(
      "usage: dsys put FILE... [--replicas N] [--json]   prints: ID SIZE FILE\n" +
        "  --replicas N  storage nodes that hold each file (default: the cluster's, 2 when it " +
        "has 2 or more)",
    );
    return values.help ? EXIT.ok : EXIT.usage;
  }
  let replicas: number | undefined;
  if (values.replicas !== undefined) {
    replicas = Number(values.replicas);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
      throw new ClientError(`--replicas ${values.replicas} is not 1..${MAX_REPLICAS}`);
    }
  }
  const res = await withClient(values, (c) => c.put(positionals, { replicas }));
  for (const r of res) {
    out(
      values.json
        ? JSON.stringify({ id: uuidToHex(r.id), size: r.size, path: r.path, nodes: r.nodes })
        : `${uuidToHex(r.id)}  ${r.size}  ${r.path}`,
    );
  }
  return EXIT.ok;
}

async function cmdSubmit(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...common,
      program: { type: "string" },
      arg: { type: "string", default: "" },
      chunks: { type: "string", default: "1" },
      input: { type: "string", multiple: true, default: [] },
      "time-limit": { type: "string", default: "600" },
      wait: { type: "boolean", default: false },
      retries: { type: "string", default: "0" },
      "max-failed-chunks": { type: "string", default: "0" },
      ...SUBMIT_LIMIT_FLAGS,
    },
  });
  if (values.help || !values.program) {
    out(
      "usage: dsys submit --program FILE [--arg A] [--chunks N] [--input [NAME=]ID]...\n" +
        "                   [--time-limit SECONDS] [--wait] [--json]\n" +
        "                   [--retries N] [--max-failed-chunks M]   a failed chunk runs again up\n" +
        "                   to N times (backoff 1 s, doubling); M failed chunks stop the job\n" +
        "                   [--memory SIZE] [--procs N] [--cpu-time DURATION] [--disk SIZE]\n" +
        "                   [--network none|host]   per-chunk limits (default: the workers')",
    );
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const chunks = Number(values.chunks);
  if (!Number.isInteger(chunks)) throw new ClientError(`--chunks ${values.chunks} is not a number`);
  const limit = Number(values["time-limit"]);
  if (!(limit > 0)) throw new ClientError(`--time-limit must be a positive number of seconds`);
  const limits = limitFlagsOf(values);
  const count = (flag: "retries" | "max-failed-chunks") => {
    const n = Number(values[flag]);
    if (!Number.isInteger(n) || n < 0) {
      throw new ClientError(`--${flag} ${values[flag]} is not a non-negative integer`);
    }
    return n;
  };
  const retries = count("retries");
  const maxFailedChunks = count("max-failed-chunks");
  let program: Uint8Array;
  try {
    program = await Deno.readFile(values.program);
  } catch (e) {
    throw new ClientError(`cannot read program ${values.program}: ${(e as Error).message}`);
  }
  const inputs = values.input!.map((spec) => {
    const eq = spec.indexOf("=");
    const id = parseId(eq < 0 ? spec : spec.slice(eq + 1), "input");
    return { id, name: eq < 0 ? uuidToHex(id) : spec.slice(0, eq) };
  });
  return await withClient(values, async (c) => {
    const job = await c.submit({
      program,
      programName: values.program!.split("/").pop()!,
      argument: values.arg!,
      chunks,
      inputs,
      timeLimitMs: Math.round(limit * 1000),
      limits,
      retries,
      maxFailedChunks,
    });
    if (!values.wait) {
      out(values.json ? JSON.stringify({ job: uuidToHex(job) }) : uuidToHex(job));
      return EXIT.ok;
    }
    if (!values.json) out(`job ${uuidToHex(job)} submitted`);
    const s = await waitWithProgress(c, job, !values.json);
    if (values.json) out(JSON.stringify(statusJson(s)));
    else printSummary(s);
    return s.state === ChunkState.Succeeded ? EXIT.ok : EXIT.jobFailed;
  });
}

/** Waits for a job, drawing a progress bar on a TTY and plain lines otherwise. */
export async function waitWithProgress(
  c: DsysClient,
  job: Uint8Array,
  show: boolean,
): Promise<JobStatusResponse> {
  const started = Date.now();
  const tty = Deno.stdout.isTerminal();
  const enc = new TextEncoder();
  const s = await c.waitForJob(job, (s) => {
    if (!show) return;
    const line = progressLine(s, started);
    if (tty) Deno.stdout.writeSync(enc.encode(`\r${line}\x1b[K`));
    else out(line);
  });
  if (show && tty) Deno.stdout.writeSync(enc.encode("\n"));
  return s;
}

function statusJson(s: JobStatusResponse) {
  const dec = new TextDecoder();
  return {
    job: uuidToHex(s.job),
    state: stateName(s.state),
    chunks: s.numChunks,
    done: s.done,
    failed: s.failed,
    running: s.running,
    queued: s.queued,
    chunkResults: s.chunks.map((c) => ({
      index: c.chunkIndex,
      state: stateName(c.state),
      attempt: c.attempt,
      exitCode: c.exitCode,
      signal: c.signal,
      failure: failureName(c.failure),
      durationMs: c.durationMs,
      reason: c.reason,
      outputs: c.outputs.map((o) => ({ id: uuidToHex(o.id), name: o.name, size: o.size })),
      stderrTail: dec.decode(c.stderrTail),
      ...(c.retryAtMs > 0 && c.state === ChunkState.Queued
        ? { retryAt: new Date(c.retryAtMs).toISOString() }
        : {}),
      // Every earlier attempt that failed and was retried, oldest first.
      attempts: c.history.map((a) => ({
        attempt: a.attempt,
        state: stateName(a.state),
        exitCode: a.exitCode,
        signal: a.signal,
        failure: failureName(a.failure),
        durationMs: a.durationMs,
        at: new Date(a.atMs).toISOString(),
        reason: a.reason,
      })),
    })),
  };
}

function printSummary(s: JobStatusResponse): void {
  const cancelled = s.chunks.filter((c) => c.state === ChunkState.Cancelled);
  out(
    `job ${uuidToHex(s.job)}: ${stateName(s.state)} — ${s.done} succeeded, ${s.failed} failed, ` +
      (cancelled.length > 0 ? `${cancelled.length} cancelled, ` : "") +
      `${s.running} running, ${s.queued} queued of ${s.numChunks}`,
  );
  if (cancelled.length > 0) out(`  ${cancelled.length} chunks: ${cancelled[0].reason}`);
  const dec = new TextDecoder();
  for (const c of s.chunks) {
    for (const a of c.history) {
      out(
        `  chunk ${c.chunkIndex} attempt ${a.attempt} failed ${failureName(a.failure)}: ` +
          `${a.reason || `exit ${a.exitCode}`} (retried)`,
      );
    }
    if (c.state !== ChunkState.Failed) continue;
    out(
      `  chunk ${c.chunkIndex} failed (attempt ${c.attempt}) ${failureName(c.failure)}: ` +
        (c.reason || `exit ${c.exitCode}`),
    );
    const tail = dec.decode(c.stderrTail).trimEnd().split("\n").slice(-3);
    for (const l of tail) if (l) out(`    stderr: ${l}`);
  }
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: common, allowPositionals: true });
  if (values.help || positionals.length !== 1) {
    out("usage: dsys status JOB [--json]");
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const job = parseId(positionals[0], "job");
  const s = await withClient(values, (c) => c.status(job));
  if (values.json) out(JSON.stringify(statusJson(s)));
  else printSummary(s);
  return EXIT.ok;
}

async function cmdGet(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...common, out: { type: "string" } },
    allowPositionals: true,
  });
  if (values.help || positionals.length !== 1 || !values.out) {
    out("usage: dsys get JOB --out DIR   (writes DIR/chunk-NNNNN/<output name>)");
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const job = parseId(positionals[0], "job");
  const r = await withClient(values, (c) => c.get(job, values.out!));
  out(`${r.files} files, ${r.bytes} bytes written to ${values.out}`);
  return EXIT.ok;
}

async function cmdLogs(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...common,
      chunk: { type: "string", default: "0" },
      follow: { type: "boolean", short: "f", default: false },
      stderr: { type: "boolean", default: false },
    },
    allowPositionals: true,
  });
  if (values.help || positionals.length !== 1) {
    out(
      "usage: dsys logs JOB [--chunk N] [-f] [--stderr]   a chunk's stdout (or stderr) as it is\n" +
        "       written, from the worker running it; -f follows it (across retries) until it ends",
    );
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const job = parseId(positionals[0], "job");
  const chunk = Number(values.chunk);
  if (!Number.isInteger(chunk) || chunk < 0) {
    throw new ClientError(`--chunk ${values.chunk} is not a chunk index`);
  }
  return await withClient(values, async (c) => {
    for await (
      const p of chunkLogs(c, job, chunk, { follow: values.follow!, stream: values.stderr ? 2 : 1 })
    ) {
      if (p.kind === "data") await Deno.stdout.write(p.data);
      else if (p.kind === "attempt") console.error(`--- chunk ${chunk}, attempt ${p.attempt} ---`);
      else console.error(`--- chunk ${chunk} ${stateName(p.chunk.state)} ---`);
    }
    return EXIT.ok;
  });
}

async function cmdCancel(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...common, chunk: { type: "string", multiple: true, default: [] } },
    allowPositionals: true,
  });
  if (values.help || positionals.length !== 1) {
    out(
      "usage: dsys cancel JOB [--chunk N]...   stop a job (or some of its chunks): every process\n" +
        "                                     of them is killed, and they are never run again",
    );
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const job = parseId(positionals[0], "job");
  const chunks = values.chunk!.map((c) => {
    const n = Number(c);
    if (!Number.isInteger(n) || n < 0) throw new ClientError(`--chunk ${c} is not a chunk index`);
    return n;
  });
  const n = await withClient(values, (c) => c.cancel(job, chunks));
  out(
    values.json
      ? JSON.stringify({ job: uuidToHex(job), cancelled: n })
      : `cancelled ${n} chunk${n === 1 ? "" : "s"} of ${uuidToHex(job)}`,
  );
  return EXIT.ok;
}

async function cmdRm(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: common, allowPositionals: true });
  if (values.help || positionals.length === 0) {
    out(
      "usage: dsys rm ID...   remove finished jobs now (else the masters keep a finished job\n" +
        "                       for their --job-retention; a running job is refused), or stop\n" +
        "                       keeping files you put (deleted once no job uses them, after the\n" +
        "                       masters' --delete-grace)",
    );
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const ids = positionals.map((p) => parseId(p, "job or file"));
  let failed = 0;
  await withClient(values, async (c) => {
    for (const idBytes of ids) {
      const id = uuidToHex(idBytes);
      try {
        try {
          await c.remove(idBytes);
          out(values.json ? JSON.stringify({ job: id, removed: true }) : `removed ${id}`);
          continue;
        } catch (e) {
          // Not a job: perhaps a file this user keeps (job and file ids never collide).
          if (!(e instanceof RpcError && e.code === ErrorCode.NotFound && e.kind === "remote")) {
            throw e;
          }
          if ((await c.unkeep([idBytes])) === 0) throw e;
        }
        out(values.json ? JSON.stringify({ file: id, removed: true }) : `removed ${id}`);
      } catch (e) {
        // One id that cannot be removed does not stop the others; the cluster being away does.
        if (
          !(e instanceof RpcError) || e.code === ErrorCode.Unavailable ||
          e.code === ErrorCode.NotLeader || e.kind !== "remote"
        ) throw e;
        failed++;
        console.error(`dsys rm: ${codeName(e.code)}: ${e.text}`); // (the text names the id)
      }
    }
  });
  return failed ? EXIT.usage : EXIT.ok;
}

async function cmdLs(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: common });
  if (values.help) {
    out("usage: dsys ls [--json]   the files you keep: ID SIZE REPLICAS REFS NAME");
    return EXIT.ok;
  }
  const files = await withClient(values, (c) => c.files());
  for (const f of files) {
    out(
      values.json
        ? JSON.stringify({
          id: uuidToHex(f.id),
          size: f.size,
          replicas: f.replicas,
          refs: f.refs,
          keptAtMs: f.keptAtMs,
          name: f.name,
        })
        : `${uuidToHex(f.id)}  ${f.size}  ${f.replicas}  ${f.refs}  ${f.name}`,
    );
  }
  return EXIT.ok;
}

async function cmdNodes(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: common });
  const nodes = await withClient(values, (c) => c.nodes());
  const roles = ["?", "master", "balancer", "storage", "worker", "client"];
  const states = ["alive", "suspect", "dead"];
  for (const n of nodes) {
    const row = {
      id: uuidToHex(n.id),
      role: roles[n.role] ?? String(n.role),
      state: states[n.state] ?? String(n.state),
      leader: (n.flags & 1) === 1,
      slots: n.slots,
      freeSlots: n.freeSlots,
      endpoint: n.endpoint,
      name: n.name,
      detail: n.detail,
    };
    const where = row.endpoint && row.name
      ? `${row.name}@${row.endpoint}`
      : row.endpoint || row.name;
    out(
      values.json
        ? JSON.stringify(row)
        : `${row.role.padEnd(9)} ${row.state.padEnd(6)} ${row.id}  ` +
          `${where}${row.leader ? " (leader)" : ""}` +
          (row.role === "worker" ? `  slots ${row.freeSlots}/${row.slots} free` : "") +
          (row.detail ? `  (${row.detail})` : ""),
    );
  }
  return EXIT.ok;
}

async function cmdCluster(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: common, allowPositionals: true });
  const ops: Record<string, number> = {
    "add-master": ClusterOp.AddMaster,
    "remove-master": ClusterOp.RemoveMaster,
    "transfer-leader": ClusterOp.TransferLeader,
  };
  const op = ops[positionals[0] ?? ""];
  if (values.help || !op || positionals.length !== 2) {
    out(
      "usage: dsys cluster add-master|remove-master|transfer-leader NAME@tcp://HOST:PORT\n" +
        "  add-master: then start the new master with --id NAME --join --listen tcp://HOST:PORT",
    );
    return values.help ? EXIT.ok : EXIT.usage;
  }
  await withClient(values, async (c) => {
    const r = await c.masters.request({
      type: MessageType.ClusterChange,
      node: c.node,
      op,
      member: positionals[1],
    });
    if (r.type !== MessageType.Ok) throw new ClientError(`unexpected reply type ${r.type}`);
  });
  out(`${positionals[0]} ${positionals[1]}: committed`);
  return EXIT.ok;
}
