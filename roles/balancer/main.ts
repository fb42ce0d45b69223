/**
 * Start-up of a balancer: `dsys run --role balancer --listen EP --data DIR
 * [--dead-after-ms N] [--standby-of EP [--takeover-after-ms N] [--sync-ms N]]`.
 * @module
 */
import { parseArgs } from "node:util";
import {
  SECURITY_FLAGS,
  type SecurityOptions,
  securityOptions,
  setUpNodeSecurity,
} from "../../lib/node_security.ts";
import { RpcServer } from "../../lib/rpc.ts";
import { createLogger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { uuidToHex } from "../../wire/mod.ts";
import { BalancerService } from "./service.ts";
import { StandbyFollower } from "./standby.ts";

/** Options of a balancer node. */
export interface BalancerOptions {
  /** ROUTER endpoint to bind, e.g. tcp://127.0.0.1:7200 (port 0 = any). */
  listen: string;
  /** Data directory (holds the node id). */
  data: string;
  /** A worker silent for this long is dead; its chunks run elsewhere. Default 5000. */
  deadAfterMs?: number;
  /** Assignment / dead-worker check period, ms. Default 100. */
  tickMs?: number;
  /** How long a worker has to ack a worker_request, ms. Default 5000. */
  pushTimeoutMs?: number;
  /** Run as a hot standby of the primary at this endpoint. */
  standbyOf?: string;
  /** A standby takes over after the primary has not answered for this long, ms. Default 3000. */
  takeoverAfterMs?: number;
  /** Pause before a standby retries a failed pull, ms (good pulls long-poll back to back). */
  syncMs?: number;
  /** Keys (`--key`, `--keyring`) or `--insecure`. */
  security?: SecurityOptions;
}

/** A running balancer. */
export interface BalancerNode {
  endpoint: string;
  nodeId: Uint8Array;
  service: BalancerService;
  /** The follower while this node is a standby (null for a primary). */
  follower: StandbyFollower | null;
  /** Resolves when a standby has taken over (never for a node started as primary). */
  tookOver: Promise<void>;
  close(): Promise<void>;
}

function num(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${flag}: not a non-negative number: ${v}`);
  return n;
}

/** Parses `dsys run --role balancer` flags. */
export function parseBalancerArgs(args: string[]): BalancerOptions {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "tcp://127.0.0.1:7200" },
      data: { type: "string", default: "./dsys-data/balancer" },
      "dead-after-ms": { type: "string" },
      "tick-ms": { type: "string" },
      "push-timeout-ms": { type: "string" },
      "standby-of": { type: "string" },
      "takeover-after-ms": { type: "string" },
      "sync-ms": { type: "string" },
      ...SECURITY_FLAGS,
    },
    strict: true,
  });
  return {
    listen: values.listen!,
    data: values.data!,
    deadAfterMs: num(values["dead-after-ms"], "dead-after-ms"),
    tickMs: num(values["tick-ms"], "tick-ms"),
    pushTimeoutMs: num(values["push-timeout-ms"], "push-timeout-ms"),
    standbyOf: values["standby-of"],
    takeoverAfterMs: num(values["takeover-after-ms"], "takeover-after-ms"),
    syncMs: num(values["sync-ms"], "sync-ms"),
    security: securityOptions(values),
  };
}

/** Starts a balancer: binds its ROUTER and starts placing chunks. */
export async function runBalancer(opts: BalancerOptions): Promise<BalancerNode> {
  const nodeId = await loadOrCreateNodeId(opts.data);
  const log = createLogger("balancer", uuidToHex(nodeId));
  const creds = setUpNodeSecurity("balancer", opts.security ?? {}, opts.listen, log);
  const server = new RpcServer({
    node: nodeId,
    log,
    handler: () => null, // replaced below, before the first message can be served
  });
  const endpoint = server.bind(opts.listen);
  const service = new BalancerService({
    node: nodeId,
    endpoint,
    log,
    deadAfterMs: opts.deadAfterMs ?? 5000,
    tickMs: opts.tickMs,
    pushTimeoutMs: opts.pushTimeoutMs,
    standbyOf: opts.standbyOf,
    auth: creds,
  });
  server.setHandler(service.handle);
  const tookOver = Promise.withResolvers<void>();
  let follower: StandbyFollower | null = null;
  if (opts.standbyOf) {
    follower = new StandbyFollower({
      primary: opts.standbyOf,
      node: nodeId,
      log,
      service,
      takeoverAfterMs: opts.takeoverAfterMs ?? 3000,
      syncMs: opts.syncMs,
      onTakeover: () => {
        service.promote(server);
        tookOver.resolve();
      },
    });
    follower.start();
  } else service.start(server);
  log.info("balancer started", { endpoint, standbyOf: opts.standbyOf ?? null });
  return {
    endpoint,
    nodeId,
    service,
    follower,
    tookOver: tookOver.promise,
    async close() {
      await follower?.stop();
      service.stop();
      await server.close();
    },
  };
}
