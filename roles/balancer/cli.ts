/**
 * Stand-alone balancer process (tests spawn it without the other roles):
 * `deno run -A roles/balancer/cli.ts --listen EP --data DIR …`. Prints one `listening` JSON
 * line on stdout when ready; exits 0 after SIGTERM/SIGINT and a clean close.
 * @module
 */
import { parseBalancerArgs, runBalancer } from "./main.ts";

if (import.meta.main) {
  const node = await runBalancer(parseBalancerArgs(Deno.args));
  console.log(JSON.stringify({ event: "listening", role: "balancer", endpoint: node.endpoint }));
  const { promise, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGTERM", resolve);
  Deno.addSignalListener("SIGINT", resolve);
  await promise;
  await node.close();
  Deno.exit(0);
}
