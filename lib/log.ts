/**
 * Structured logging: one JSON object per line on stderr, with the node id and role of the
 * process, so logs of a whole cluster can be merged and filtered with ordinary tools.
 */

/** Severity of a log record. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger bound to one node (id + role) and optional fixed fields. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger with extra fixed fields (e.g. a job id). */
  child(fields: Record<string, unknown>): Logger;
}

function minLevel(): number {
  let env: string | undefined;
  try {
    env = Deno.env.get("DSYS_LOG");
  } catch {
    env = undefined; // no --allow-env: keep the default
  }
  return LEVELS[(env as LogLevel) ?? "info"] ?? LEVELS.info;
}

const encoder = new TextEncoder();

function serialize(value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (value instanceof Uint8Array) {
    return Array.from(value, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** Creates a logger for a node; `role` and `node` appear in every record. */
export function createLogger(
  role: string,
  node: string,
  fields: Record<string, unknown> = {},
  sink: (line: string) => void = (line) => Deno.stderr.writeSync(encoder.encode(line + "\n")),
): Logger {
  const threshold = minLevel();
  const emit = (level: LogLevel, msg: string, extra?: Record<string, unknown>) => {
    if (LEVELS[level] < threshold) return;
    const rec: Record<string, unknown> = {
      ts: new Date().toISOString(),
      level,
      role,
      node,
      msg,
      ...fields,
    };
    if (extra) { for (const [k, v] of Object.entries(extra)) rec[k] = serialize(v); }
    sink(JSON.stringify(rec));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => createLogger(role, node, { ...fields, ...f }, sink),
  };
}
