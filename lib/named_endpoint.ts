/**
 * Named endpoints: `NAME@tcp://HOST:PORT`, how dsys refers to a server whose key is on the
 * keyring under NAME (Raft member ids have the same form).
 * @module
 */

/** A reference split into the keyring name (if any) and the ZeroMQ endpoint. */
export interface NamedEndpoint {
  /** The keyring name before `@`, undefined for a plain endpoint. */
  name?: string;
  /** The ZeroMQ endpoint after it. */
  endpoint: string;
}

const NAMED_RE = /^([A-Za-z0-9_.-]{1,64})@(tcp:\/\/.+)$/;

/** Splits `NAME@tcp://HOST:PORT`; a plain endpoint comes back without a name. */
export function splitNamedEndpoint(ref: string): NamedEndpoint {
  const m = NAMED_RE.exec(ref);
  return m ? { name: m[1], endpoint: m[2] } : { endpoint: ref };
}

/** `NAME@ENDPOINT`, or the endpoint alone without a name. */
export function joinNamedEndpoint(name: string | undefined, endpoint: string): string {
  return name ? `${name}@${endpoint}` : endpoint;
}
