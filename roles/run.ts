/** `dsys run --role R …`: starts one node, prints where it listens, runs until SIGTERM/SIGINT. */
import { parseMasterArgs, runMaster } from "./master/main.ts";
import { parseBalancerArgs, runBalancer } from "./balancer/main.ts";
import { parseStorageArgs, runStorage } from "./storage/main.ts";
import { parseWorkerArgs, runWorker } from "./worker/main.ts";
import { WorkerMetrics } from "./worker/metrics.ts";
import { largestFramesReceived, registerRpcMetrics } from "../lib/rpc.ts";
import { createLogger } from "../lib/log.ts";
import { Registry } from "../lib/metrics.ts";
import {
  type MetricsServer,
  parseMetricsListen,
  registerProcessMetrics,
  startMetricsServer,
} from "../lib/metrics_server.ts";

interface RunningNode {
  endpoint: string;
  /** A master's dashboard address (`--dashboard-listen`). */
  dashboard?: string;
  close(): Promise<void>;
}

/** Each role's start: parses its flags; `metrics` is where it declares its series, if served. */
const ROLES: Record<string, (args: string[], metrics?: Registry) => Promise<RunningNode>> = {
  master: (a, metrics) => runMaster({ ...parseMasterArgs(a), metrics }),
  balancer: (a, metrics) => runBalancer({ ...parseBalancerArgs(a), metrics }),
  storage: (a, metrics) => runStorage({ ...parseStorageArgs(a), metrics }),
  worker: async (a, registry) => {
    const metrics = registry && new WorkerMetrics(registry);
    const node = await runWorker({ ...parseWorkerArgs(a), metrics });
    metrics?.watch(node);
    return node;
  },
};

/** Takes `--NAME V` / `--NAME=V` out of `args` (the last one wins); undefined when absent. */
function takeFlag(args: string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < args.length;) {
    if (args[i] === `--${name}`) {
      value = args[i + 1] ?? "";
      args.splice(i, 2);
    } else if (args[i].startsWith(`--${name}=`)) {
      value = args[i].slice(name.length + 3);
      args.splice(i, 1);
    } else i++;
  }
  return value;
}

/**
 * Starts the node of `--role`; resolves with the exit code after a clean shutdown. With
 * `--metrics-listen HOST:PORT` (any role) it also serves Prometheus metrics there, and the
 * `listening` line says where (`metrics`: the bound `HOST:PORT`).
 */
export async function runRole(args: string[]): Promise<number> {
  const rest = [...args];
  const role = takeFlag(rest, "role");
  const start = role ? ROLES[role] : undefined;
  if (!start) {
    console.error(`dsys run: --role must be one of ${Object.keys(ROLES).join(", ")}`);
    return 1;
  }
  const metricsListen = takeFlag(rest, "metrics-listen");
  let registry: Registry | undefined;
  if (metricsListen !== undefined) {
    try {
      parseMetricsListen(metricsListen); // a bad address fails before the node starts
    } catch (e) {
      console.error(`dsys run --role ${role}: ${e instanceof Error ? e.message : e}`);
      return 1;
    }
    registry = new Registry();
    registerProcessMetrics(registry, role!);
    registerRpcMetrics(registry);
  }
  let node: RunningNode;
  try {
    node = await start(rest, registry);
  } catch (e) {
    console.error(`dsys run --role ${role}: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
  let metrics: MetricsServer | undefined;
  if (registry) {
    try {
      metrics = await startMetricsServer(registry, metricsListen!, createLogger(role!, "-"));
    } catch (e) {
      console.error(
        `dsys run --role ${role}: --metrics-listen: ${e instanceof Error ? e.message : e}`,
      );
      await node.close();
      return 1;
    }
  }
  console.log(JSON.stringify({
    event: "listening",
    role,
    endpoint: node.endpoint,
    ...(metrics ? { metrics: metrics.address } : {}),
    ...(node.dashboard ? { dashboard: node.dashboard } : {}),
  }));
  const { promise, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGTERM", resolve);
  Deno.addSignalListener("SIGINT", resolve);
  await promise;
  await metrics?.close();
  await node.close();
  // What passed through this node, for diagnostics (and tests/program_bytes_test.ts).
  createLogger(role!, "-").info("largest frames received", { frames: largestFramesReceived() });
  return 0;
}
