/**
 * Stand-alone worker process: `deno run -A roles/worker/cli.ts --data … --balancer … …`.
 * Prints `{"event":"listening",…}` on stdout once it is up (mounted, balancer loop started), and shuts down
 * cleanly (programs killed, mount unmounted) on SIGTERM/SIGINT.
 * @module
 */
import { parseWorkerArgs, runWorker } from "./main.ts";

if (import.meta.main) {
  const node = await runWorker(parseWorkerArgs(Deno.args));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await node.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  console.log(JSON.stringify({ event: "listening", endpoint: node.endpoint }));
}
