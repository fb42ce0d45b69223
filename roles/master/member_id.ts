/**
 * Raft member ids of masters are `NAME@ENDPOINT` (e.g. `m1@tcp://127.0.0.1:7101`): the id says
 * where the member listens, so a membership-change entry is all a member needs to reach a peer.
 *
 * Member ids also arrive from the network (inside Raft messages), so the grammar is strict and
 * a master never hands libzmq an endpoint that did not pass {@link parseMemberId}: NAME is 1–64
 * of `[A-Za-z0-9_.-]`; ENDPOINT is `tcp://HOST:PORT` with HOST a DNS name / IPv4 address (RFC
 * 1123 labels) or a bracketed IPv6 address, PORT 1–65535.
 */

import { splitNamedEndpoint } from "../../lib/named_endpoint.ts";

const NAME = "[A-Za-z0-9_.-]{1,64}";
const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const HOST = `(?:${LABEL}(?:\\.${LABEL})*|\\[[0-9A-Fa-f:.]{2,45}\\])`;
const PORT =
  "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/** Longest member id accepted (bytes of UTF-8; the grammar is ASCII-only). */
export const MAX_MEMBER_ID_LENGTH = 64 + 1 + 6 + 253 + 1 + 5;

/** Shape of a member id (the whole grammar, port range included). */
export const MEMBER_ID_RE = new RegExp(`^${NAME}@tcp://${HOST}:${PORT}$`);

const ENDPOINT_RE = new RegExp(`^tcp://${HOST}:${PORT}$`);

/** A member id split into its parts. */
export interface MemberId {
  id: string;
  name: string;
  endpoint: string;
}

/** Parses a member id; null unless it matches the strict grammar above. */
export function parseMemberId(id: string): MemberId | null {
  if (typeof id !== "string" || id.length > MAX_MEMBER_ID_LENGTH || !MEMBER_ID_RE.test(id)) {
    return null;
  }
  const at = id.indexOf("@");
  return { id, name: id.slice(0, at), endpoint: id.slice(at + 1) };
}

/** Whether `ep` is an endpoint of the member-id grammar (`tcp://HOST:PORT`). */
export function isMemberEndpoint(ep: string): boolean {
  return ep.length <= MAX_MEMBER_ID_LENGTH && ENDPOINT_RE.test(ep);
}

/** The endpoint part of a member id (lib/named_endpoint.ts splits every `NAME@ENDPOINT`). */
export function memberEndpoint(id: string): string {
  return splitNamedEndpoint(id).endpoint;
}

/** The name part of a member id. */
export function memberName(id: string): string {
  return splitNamedEndpoint(id).name ?? id;
}
