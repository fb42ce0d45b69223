/**
 * Standalone launcher of a storage node (tests and `dsys dev` spawn it as a process):
 * `deno run -A roles/storage/cli.ts --listen tcp://127.0.0.1:0 --data DIR`.
 * Prints `{"event":"listening","endpoint":…}` on stdout once ready; SIGTERM/SIGINT close it.
 * @module
 */
import { parseStorageArgs, runStorage } from "./main.ts";

if (import.meta.main) {
  const node = await runStorage(parseStorageArgs(Deno.args));
  const stop = async () => {
    await node.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  console.log(JSON.stringify({ event: "listening", endpoint: node.endpoint }));
}
