/**
 * Raft member ids of masters are `NAME@ENDPOINT` (e.g. `m1@tcp://127.0.0.1:7101`): the id says
 * where the member listens, so a membership-change entry is all a member needs to reach a peer.
 */

/** Shape of a member id. */
export const MEMBER_ID_RE = /^[A-Za-z0-9_.-]+@tcp:\/\/.+:\d+$/;

/** The endpoint part of a member id. */
export function memberEndpoint(id: string): string {
  const at = id.indexOf("@");
  return at < 0 ? id : id.slice(at + 1);
}

/** The name part of a member id. */
export function memberName(id: string): string {
  const at = id.indexOf("@");
  return at < 0 ? id : id.slice(0, at);
}
