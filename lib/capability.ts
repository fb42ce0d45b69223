/**
 * Capabilities: short HMAC-SHA256 tokens under the cluster secret that masters, balancers and
 * storage nodes share (workers and clients never hold it), so a storage node or a master can
 * check what a worker presents without asking anyone (docs/architecture.md, "Security model").
 *
 * - A **placement ticket** binds (job, chunk, attempt) to the public key of the worker the
 *   balancer placed it on; masters accept a chunk's result only from that key with that ticket.
 * - A **read capability** binds (file id, expiry) to a reader's public key; storage serves a
 *   worker a file only with one, so a worker reads only the inputs of chunks it was given, and
 *   only until the chunk's time limit has passed.
 *
 * Each kind hashes a distinct label first, so one can never be passed off as the other.
 * @module
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** Bytes of every ticket and capability. */
export const CAP_BYTES = 32;

const enc = new TextEncoder();
const TICKET = enc.encode("dsys placement ticket v1\0");
const READ = enc.encode("dsys read capability v1\0");

function u64le(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(Math.max(0, Math.floor(n))), true);
  return b;
}

function mac(secret: Uint8Array, parts: Uint8Array[]): Uint8Array {
  if (secret.length < 32) throw new RangeError("cluster secret must be 32 bytes");
  const h = createHmac("sha256", secret);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

function same(a: Uint8Array, b: Uint8Array | undefined): boolean {
  return b !== undefined && b.length === a.length && timingSafeEqual(a, b);
}

/** The ticket for running `attempt` of `chunk` of `job` on the worker with `workerKey` (Z85). */
export function placementTicket(
  secret: Uint8Array,
  workerKey: string,
  job: Uint8Array,
  chunk: number,
  attempt: number,
): Uint8Array {
  const n = new Uint8Array(8);
  const v = new DataView(n.buffer);
  v.setUint32(0, chunk, true);
  v.setUint32(4, attempt, true);
  return mac(secret, [TICKET, enc.encode(workerKey), job, n]);
}

/** True when `ticket` is the one the balancer gave `workerKey` for this chunk attempt. */
export function checkPlacementTicket(
  secret: Uint8Array,
  workerKey: string,
  job: Uint8Array,
  chunk: number,
  attempt: number,
  ticket: Uint8Array | undefined,
): boolean {
  return same(placementTicket(secret, workerKey, job, chunk, attempt), ticket);
}

/** The capability letting the key `readerKey` (Z85) read `file` until `expiryMs` (Unix ms). */
export function readCapability(
  secret: Uint8Array,
  readerKey: string,
  file: Uint8Array,
  expiryMs: number,
): Uint8Array {
  return mac(secret, [READ, enc.encode(readerKey), file, u64le(expiryMs)]);
}

/** True when `cap` lets `readerKey` read `file` at `nowMs`. */
export function checkReadCapability(
  secret: Uint8Array,
  readerKey: string,
  file: Uint8Array,
  expiryMs: number,
  cap: Uint8Array | undefined,
  nowMs: number,
): boolean {
  return nowMs <= expiryMs && same(readCapability(secret, readerKey, file, expiryMs), cap);
}
