/** `dsys run --role R …`: starts one node, prints where it listens, runs until SIGTERM/SIGINT. */
import { parseMasterArgs, runMaster } from "./master/main.ts";
import { parseBalancerArgs, runBalancer } from "./balancer/main.ts";
import { parseStorageArgs, runStorage } from "./storage/main.ts";
import { parseWorkerArgs, runWorker } from "./worker/main.ts";
import { largestFramesReceived } from "../lib/rpc.ts";
import { createLogger } from "../lib/log.ts";

interface RunningNode {
  endpoint: string;
  close(): Promise<void>;
}

const ROLES: Record<string, (args: string[]) => Promise<RunningNode>> = {
  master: (a) => runMaster(parseMasterArgs(a)),
  balancer: (a) => runBalancer(parseBalancerArgs(a)),
  storage: (a) => runStorage(parseStorageArgs(a)),
  worker: (a) => runWorker(parseWorkerArgs(a)),
};

/** Starts the node of `--role`; resolves with the exit code after a clean shutdown. */
export async function runRole(args: string[]): Promise<number> {
  const i = args.findIndex((a) => a === "--role" || a.startsWith("--role="));
  let role: string | undefined;
  const rest = [...args];
  if (i >= 0) {
    if (args[i].includes("=")) {
      role = args[i].split("=")[1];
      rest.splice(i, 1);
    } else {
      role = args[i + 1];
      rest.splice(i, 2);
    }
  }
  const start = role ? ROLES[role] : undefined;
  if (!start) {
    console.error(`dsys run: --role must be one of ${Object.keys(ROLES).join(", ")}`);
    return 1;
  }
  let node: RunningNode;
  try {
    node = await start(rest);
  } catch (e) {
    console.error(`dsys run --role ${role}: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
  console.log(JSON.stringify({ event: "listening", role, endpoint: node.endpoint }));
  const { promise, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGTERM", resolve);
  Deno.addSignalListener("SIGINT", resolve);
  await promise;
  await node.close();
  // What passed through this node, for diagnostics (and tests/program_bytes_test.ts).
  createLogger(role!, "-").info("largest frames received", { frames: largestFramesReceived() });
  return 0;
}
