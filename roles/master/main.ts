/** Start-up of a master: `dsys run --role master --listen EP --data DIR --balancer EP --storage EP`. */
import { parseArgs } from "node:util";
import { RequestError, RpcClient, RpcServer } from "../../lib/rpc.ts";
import { createLogger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { ErrorCode, uuidToHex } from "../../wire/mod.ts";
import { JobTable } from "./job_table.ts";
import { decodeCommand } from "./commands.ts";
import { SingleNodeLog } from "./replicated_log.ts";
import { MasterService } from "./service.ts";

/** Options of a master node. */
export interface MasterOptions {
  listen: string;
  data: string;
  balancer: string;
  storage: string;
  /** How often unfinished jobs are re-sent to the balancer, ms. */
  redispatchMs?: number;
}

/** A running master. */
export interface MasterNode {
  endpoint: string;
  nodeId: Uint8Array;
  table: JobTable;
  close(): Promise<void>;
}

/** Parses `dsys run --role master` flags. */
export function parseMasterArgs(args: string[]): MasterOptions {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "tcp://127.0.0.1:7100" },
      data: { type: "string", default: "./dsys-data/master" },
      balancer: { type: "string", default: "tcp://127.0.0.1:7200" },
      storage: { type: "string", default: "tcp://127.0.0.1:7300" },
      "redispatch-ms": { type: "string" },
    },
    strict: true,
  });
  return {
    listen: values.listen!,
    data: values.data!,
    balancer: values.balancer!,
    storage: values.storage!,
    redispatchMs: values["redispatch-ms"] ? Number(values["redispatch-ms"]) : undefined,
  };
}

/** Starts a master: replays its log, binds, and starts handing work to the balancer. */
export async function runMaster(opts: MasterOptions): Promise<MasterNode> {
  const nodeId = await loadOrCreateNodeId(opts.data);
  const log = createLogger("master", uuidToHex(nodeId));
  const table = new JobTable();
  // Requests that arrive while the log replays are refused with a retryable error.
  const server = new RpcServer({
    node: nodeId,
    log,
    handler: () => {
      throw new RequestError(ErrorCode.Unavailable, "master is starting");
    },
  });
  const endpoint = server.bind(opts.listen);
  const consensus = await SingleNodeLog.open(
    `${opts.data}/log`,
    (data) => table.apply(decodeCommand(data)),
    endpoint,
  );
  const balancer = new RpcClient(opts.balancer, { node: nodeId, timeoutMs: 5000, log });
  const storage = new RpcClient(opts.storage, { node: nodeId, timeoutMs: 5000, log });
  const service = new MasterService({
    node: nodeId,
    endpoint,
    log,
    table,
    consensus,
    balancer,
    storage,
    redispatchMs: opts.redispatchMs,
  });
  server.setHandler(service.handle);
  service.start();
  log.info("master started", { endpoint, jobs: table.jobs.size });
  return {
    endpoint,
    nodeId,
    table,
    async close() {
      service.stop();
      await server.close();
      await balancer.close();
      await storage.close();
      await consensus.close();
    },
  };
}
