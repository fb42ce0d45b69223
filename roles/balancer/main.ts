/**
 * Start-up of a balancer: `dsys run --role balancer --listen EP --data DIR
 * --masters NAME@EP,… [--advertise EP] [--dead-after-ms N]`.
 *
 * Every balancer of a cluster is started the same way: which one is primary is decided by the
 * masters' lease (lease.ts), so restarting any of them with its original flags is safe. Without
 * `--masters` a balancer is primary on its own (one balancer, no failover; tests and
 * experiments).
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
import { systemClock } from "../../lib/clock.ts";
import { dialZmq } from "../../lib/transport.ts";
import { createLogger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { joinNamedEndpoint, splitNamedEndpoint } from "../../lib/named_endpoint.ts";
import { uuidToHex } from "../../wire/mod.ts";
import { BalancerService } from "./service.ts";
import { StandbyFollower } from "./standby.ts";
import { LeaseKeeper } from "./lease_keeper.ts";
import type { Registry } from "../../lib/metrics.ts";
import { watchBalancer } from "./metrics.ts";

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
  /**
   * Heartbeats per second asked of all workers together: their interval grows with their
   * number (SchedulerOptions.maxHeartbeatsPerSec; 0 = off). Default 2000.
   */
  maxHeartbeatsPerSec?: number;
  /** How long a worker has to ack a worker_request, ms. Default 5000. */
  pushTimeoutMs?: number;
  /** Master endpoints (`NAME@tcp://HOST:PORT`): place only while holding their lease. */
  masters?: string[];
  /**
   * The endpoint others dial (default: the bound one, named by this node's key). Needed when
   * listening on a wildcard address.
   */
  advertise?: string;
  /** Pause before a standby retries a failed pull, ms (good pulls long-poll back to back). */
  syncMs?: number;
  /** Keys (`--key`, `--keyring`) or `--insecure`. */
  security?: SecurityOptions;
  /** Where this balancer's series are declared (`--metrics-listen`; roles/run.ts serves them). */
  metrics?: Registry;
}

/** A running balancer. */
export interface BalancerNode {
  endpoint: string;
  nodeId: Uint8Array;
  /** The endpoint this balancer advertises (in lease requests). */
  advertised: string;
  service: BalancerService;
  /** Follows the lease holder while this node is not it (null without masters). */
  follower: StandbyFollower | null;
  /** Asks the masters for the lease (null without masters). */
  keeper: LeaseKeeper | null;
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
      "max-heartbeats-per-sec": { type: "string" },
      "push-timeout-ms": { type: "string" },
      masters: { type: "string" },
      advertise: { type: "string" },
      "sync-ms": { type: "string" },
      // Gone: every balancer is started alike; the masters' lease picks the primary.
      "standby-of": { type: "string" },
      ...SECURITY_FLAGS,
    },
    strict: true,
  });
  if (values["standby-of"] !== undefined) {
    throw new Error(
      "--standby-of is gone: start every balancer with --masters; the masters' lease decides " +
        "which one is primary",
    );
  }
  return {
    listen: values.listen!,
    data: values.data!,
    deadAfterMs: num(values["dead-after-ms"], "dead-after-ms"),
    tickMs: num(values["tick-ms"], "tick-ms"),
    maxHeartbeatsPerSec: num(values["max-heartbeats-per-sec"], "max-heartbeats-per-sec"),
    pushTimeoutMs: num(values["push-timeout-ms"], "push-timeout-ms"),
    masters: values.masters?.split(",").map((m) => m.trim()).filter(Boolean),
    advertise: values.advertise,
    syncMs: num(values["sync-ms"], "sync-ms"),
    security: securityOptions(values),
  };
}

/** Starts a balancer: binds its ROUTER, then places chunks (with masters: once it holds the lease). */
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
  const advertised = opts.advertise ?? joinNamedEndpoint(creds?.self.name, endpoint);
  if (creds && splitNamedEndpoint(advertised).name !== creds.self.name) {
    await server.close();
    throw new Error(`--advertise ${advertised} must be named ${creds.self.name}@ (this key)`);
  }
  const leased = (opts.masters?.length ?? 0) > 0;
  const service = new BalancerService({
    node: nodeId,
    endpoint,
    advertised,
    log,
    deadAfterMs: opts.deadAfterMs ?? 5000,
    tickMs: opts.tickMs,
    ...(opts.maxHeartbeatsPerSec !== undefined
      ? { maxHeartbeatsPerSec: opts.maxHeartbeatsPerSec }
      : {}),
    pushTimeoutMs: opts.pushTimeoutMs,
    leased,
    auth: creds,
    clock: systemClock,
  });
  if (opts.metrics) watchBalancer(opts.metrics, service);
  server.setHandler(service.handle);
  service.start(server);
  let follower: StandbyFollower | null = null;
  let keeper: LeaseKeeper | null = null;
  if (leased) {
    follower = new StandbyFollower({
      node: nodeId,
      log,
      service,
      syncMs: opts.syncMs,
      clock: systemClock,
      dial: dialZmq,
    });
    keeper = new LeaseKeeper({
      node: nodeId,
      masters: opts.masters!,
      endpoint: advertised,
      log,
      service,
      follower,
      clock: systemClock,
      dial: dialZmq,
    });
    follower.start();
    keeper.start();
  } else log.warn("no --masters: primary on its own (no lease, no failover)", {});
  log.info("balancer started", { endpoint, advertised, masters: opts.masters ?? [] });
  return {
    endpoint,
    nodeId,
    advertised,
    service,
    follower,
    keeper,
    async close() {
      await keeper?.stop();
      await follower?.stop();
      service.stop();
      await server.close();
    },
  };
}
