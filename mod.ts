/**
 * `dsys`: one executable for every node and the client. Dispatch only.
 *
 *   dsys run --role master|balancer|storage|worker [flags]
 *   dsys put|submit|status|get|rm|ls|nodes [flags]
 *   dsys dev [--keep]
 */
import { runClient } from "./client/cli.ts";
import { runDev } from "./client/dev.ts";
import { runDashboard } from "./client/dashboard.ts";
import { runRole } from "./roles/run.ts";
import { runInit, runKeys } from "./client/keys.ts";
import { versionLine } from "./lib/version.ts";

const USAGE = `usage: dsys <command> [flags]
  run --role master|balancer|storage|worker   start a node (see --help of each role)
  put FILE... [--replicas N]                  store (and keep) files, print their ids
  submit --program P --chunks N --input [NAME=]ID... [--arg A] [--wait]
  status JOB [--json]                         a job's state and chunk results
  get JOB --out DIR                           download a job's outputs
  rm JOB|FILE...                              remove finished jobs now (else: after --job-retention),
                                              or stop keeping files (deleted once no job uses them)
  ls [--json]                                 the files you keep: size, replicas, references
  cancel JOB [--chunk N]...                   stop a job or some of its chunks (killed, not rerun)
  logs JOB [--chunk N] [-f] [--stderr]        a chunk's output as it is written, then as stored
  nodes                                       list the cluster's nodes
  cluster add-master|remove-master|transfer-leader NAME@tcp://HOST:PORT
  dev [--keep] [--dashboard] [--metrics-listen HOST:PORT]   run the sample job on a local cluster
  dashboard [--url http://HOST:PORT --token-file F]  the URL that logs in to a master's dashboard
  init DIR [--masters N …]                    create a cluster's keys and keyring
  keys add|revoke|list --keyring FILE …       add or revoke a node's or a user's key
  --version                                   the version and the commit of this build`;

/** Runs the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "run":
      return await runRole(rest);
    case "dev":
      return await runDev(rest);
    case "dashboard":
      return await runDashboard(rest);
    case "init":
      return await runInit(rest);
    case "keys":
      return await runKeys(rest);
    case "put":
    case "submit":
    case "status":
    case "get":
    case "rm":
    case "ls":
    case "cancel":
    case "logs":
    case "nodes":
    case "cluster":
      return await runClient(command, rest);
    case "--version":
    case "version":
      console.log(versionLine());
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return command === undefined ? 1 : 0;
    default:
      console.error(`dsys: unknown command ${command}\n${USAGE}`);
      return 1;
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  // run keeps its node alive until a signal; every other command ends here.
  if (code >= 0) Deno.exit(code);
}
