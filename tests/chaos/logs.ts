/**
 * What the nodes' JSON logs (`<data>/logs/NAME.log`, appended across restarts) say about chunk
 * runs and balancer decisions, for the run-count check.
 * @module
 */

/** One log record with the name of the node whose log it is in. */
export interface LogRecord {
  name: string;
  /** `ts` as ms since the epoch. */
  at: number;
  rec: Record<string, unknown>;
}

/** A worker accepted a chunk attempt and started it (`"chunk accepted"`). */
export interface Run {
  worker: string;
  at: number;
  job: string;
  chunk: number;
  attempt: number;
  epoch: number;
}

/** The balancer events that allow a chunk to run again. */
export interface BalancerEvent {
  balancer: string;
  at: number;
  kind: "unconfirmed" | "dead" | "idle-requeue" | "primary";
  /** unconfirmed: the chunk; unconfirmed, dead, idle-requeue: the worker's node id (hex). */
  job?: string;
  chunk?: number;
  worker?: string;
  /** primary: the epoch it now places under. */
  epoch?: number;
}

/** Everything the checker takes from the logs. */
export interface LogFacts {
  runs: Run[];
  balancer: BalancerEvent[];
  /** Worker node id (hex) to worker name. */
  workerIds: Map<string, string>;
  /** Records of level error, by node. */
  errors: LogRecord[];
  /** Lines that were not JSON (a panic's text, a stack trace), by node. */
  garbage: { name: string; line: string }[];
}

/** Reads and parses every node's log under `dir`, oldest record first. */
export async function readAll(
  dir: string,
): Promise<{ records: LogRecord[]; garbage: { name: string; line: string }[] }> {
  const records: LogRecord[] = [];
  const garbage: { name: string; line: string }[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile || !e.name.endsWith(".log")) continue;
    const name = e.name.slice(0, -4);
    const text = await Deno.readTextFile(`${dir}/${e.name}`);
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line);
      } catch {
        // A record cut short by kill -9 is expected; anything else is worth showing.
        if (!line.startsWith("{")) garbage.push({ name, line });
        continue;
      }
      records.push({ name, at: Date.parse(String(rec.ts)), rec });
    }
  }
  records.sort((a, b) => a.at - b.at);
  return { records, garbage };
}

/** The facts of the logs under `dir`. */
export async function logFacts(dir: string): Promise<LogFacts> {
  const { records, garbage } = await readAll(dir);
  const facts: LogFacts = { runs: [], balancer: [], workerIds: new Map(), errors: [], garbage };
  for (const r of records) {
    const m = r.rec.msg;
    if (r.rec.level === "error") facts.errors.push(r);
    if (r.rec.role === "worker" && typeof r.rec.node === "string") {
      facts.workerIds.set(r.rec.node, r.name);
    }
    if (m === "chunk accepted") {
      facts.runs.push({
        worker: r.name,
        at: r.at,
        job: String(r.rec.job),
        chunk: Number(r.rec.chunk),
        attempt: Number(r.rec.attempt),
        epoch: Number(r.rec.epoch),
      });
    } else if (m === "worker_request unconfirmed: new attempt elsewhere") {
      facts.balancer.push({
        balancer: r.name,
        at: r.at,
        kind: "unconfirmed",
        job: String(r.rec.job),
        chunk: Number(r.rec.chunk),
        worker: String(r.rec.worker),
      });
    } else if (m === "worker dead: requeued its chunks") {
      facts.balancer.push({
        balancer: r.name,
        at: r.at,
        kind: "dead",
        worker: String(r.rec.worker),
      });
    } else if (m === "idle worker had chunks placed long ago: requeued them") {
      facts.balancer.push({
        balancer: r.name,
        at: r.at,
        kind: "idle-requeue",
        worker: String(r.rec.worker),
      });
    } else if (m === "primary balancer lease held: placing chunks") {
      facts.balancer.push({
        balancer: r.name,
        at: r.at,
        kind: "primary",
        epoch: Number(r.rec.epoch),
      });
    }
  }
  return facts;
}
