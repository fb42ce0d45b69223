/**
 * The security flags every role shares (`--key`, `--keyring`, `--insecure`) and what a node does
 * with them at start-up: load its key and the keyring and turn CURVE on for every socket, or
 * run without, which it refuses on a non-loopback address unless told `--insecure`.
 * @module
 */
import type { Logger } from "./log.ts";
import { Credentials, type Role, useCredentials } from "./security.ts";

/** `node:util` parseArgs options for the security flags. */
export const SECURITY_FLAGS = {
  key: { type: "string" },
  keyring: { type: "string" },
  insecure: { type: "boolean", default: false },
} as const;

/** What the security flags say (environment: DSYS_KEY, DSYS_KEYRING). */
export interface SecurityOptions {
  /** This node's key file (`dsys init` / `dsys keys add`). */
  key?: string;
  /** The cluster's keyring file. */
  keyring?: string;
  /** Run without CURVE, trusting the network. */
  insecure?: boolean;
}

/** A node cannot start as configured (bad or missing credentials). */
export class SecurityConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SecurityConfigError";
  }
}

/** The security options from parsed flag values, falling back to the environment. */
export function securityOptions(values: {
  key?: string;
  keyring?: string;
  insecure?: boolean;
}): SecurityOptions {
  return {
    key: values.key ?? Deno.env.get("DSYS_KEY"),
    keyring: values.keyring ?? Deno.env.get("DSYS_KEYRING"),
    insecure: values.insecure ?? false,
  };
}

/** True for endpoints only this machine can reach (127.0.0.0/8, ::1, localhost, ipc, inproc). */
export function isLoopbackEndpoint(ep: string): boolean {
  const m = /^tcp:\/\/(\[[^\]]*\]|[^:]*):/.exec(ep);
  if (!m) return /^(ipc|inproc):\/\//.test(ep);
  const host = m[1];
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Loads the node's credentials and makes them the process's (CURVE on every socket, ZAP
 * handler up), or returns null for an insecure node, which is only allowed on loopback or
 * with `--insecure` (logged loudly either way).
 */
export function setUpNodeSecurity(
  role: Role,
  o: SecurityOptions,
  listen: string | undefined,
  log: Logger,
): Credentials | null {
  if (o.key || o.keyring) {
    if (!o.key || !o.keyring) throw new SecurityConfigError("--key and --keyring go together");
    if (o.insecure) throw new SecurityConfigError("--insecure contradicts --key/--keyring");
    const creds = Credentials.loadSync(o.key, o.keyring);
    if (creds.self.role !== role) {
      throw new SecurityConfigError(
        `${o.key} is a ${creds.self.role} key, this node runs as ${role}`,
      );
    }
    if (
      (role === "master" || role === "balancer" || role === "storage") && !creds.clusterSecret
    ) {
      throw new SecurityConfigError(`${o.key}: a ${role} key needs the cluster secret`);
    }
    useCredentials(creds);
    log.info("security on: CURVE + keyring", { key: creds.self.name, keyring: o.keyring });
    return creds;
  }
  if (!o.insecure && listen !== undefined && !isLoopbackEndpoint(listen)) {
    throw new SecurityConfigError(
      `refusing to listen on ${listen} without credentials: give --key and --keyring ` +
        `(see dsys init), or --insecure to trust the network`,
    );
  }
  log.warn(
    "INSECURE: no credentials; any process that reaches this node's ports can use it",
    { listen, insecureFlag: o.insecure ?? false },
  );
  return null;
}
