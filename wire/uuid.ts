/**
 * 128-bit identifiers as 16-byte `Uint8Array`s. Node and job ids are random (v4) UUIDs shown
 * in canonical 8-4-4-4-12 form; file ids are the first 16 bytes of SHA-256 of the content,
 * shown as 32 lowercase hex characters.
 * @module
 */

import { WireError } from "./errors.ts";

/** A 128-bit id: always exactly 16 bytes. */
export type Uuid = Uint8Array;

/** The all-zero id (used e.g. as node id by anonymous clients). */
export const NIL_UUID: Uuid = new Uint8Array(16);

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Returns the 32 lowercase hex characters of `id` (file-id form). */
export function uuidToHex(id: Uuid): string {
  checkLength(id);
  let s = "";
  for (let i = 0; i < 16; i++) s += HEX[id[i]];
  return s;
}

/** Parses 32 hex characters (any case) into a 16-byte id; throws WireError otherwise. */
export function uuidFromHex(hex: string): Uuid {
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) {
    throw new WireError("bad_value", `not a 32-hex-digit id: ${JSON.stringify(hex)}`);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Formats `id` as a canonical 8-4-4-4-12 lowercase UUID string. */
export function uuidToString(id: Uuid): string {
  const h = uuidToHex(id);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Parses a canonical 8-4-4-4-12 UUID string (any case). As a convenience it also accepts the
 * 32-hex form, so CLI arguments can take either kind of id.
 */
export function uuidFromString(s: string): Uuid {
  if (/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(s)) {
    return uuidFromHex(s.replaceAll("-", ""));
  }
  if (/^[0-9a-fA-F]{32}$/.test(s)) return uuidFromHex(s);
  throw new WireError("bad_value", `not a UUID: ${JSON.stringify(s)}`);
}

/** Returns a fresh random (version 4) UUID. */
export function randomUuid(): Uuid {
  return uuidFromString(crypto.randomUUID());
}

/** True when both ids hold the same 16 bytes. */
export function uuidEquals(a: Uuid, b: Uuid): boolean {
  if (a.length !== 16 || b.length !== 16) return false;
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Content-addressed file id: the first 16 bytes of SHA-256 of `data`. */
export async function fileIdOf(data: Uint8Array): Promise<Uuid> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return new Uint8Array(digest, 0, 16).slice();
}

function checkLength(id: Uuid): void {
  if (!(id instanceof Uint8Array) || id.length !== 16) {
    throw new WireError("bad_field", `id must be a 16-byte Uint8Array, got ${describe(id)}`);
  }
}

function describe(v: unknown): string {
  return v instanceof Uint8Array ? `${v.length} bytes` : typeof v;
}
