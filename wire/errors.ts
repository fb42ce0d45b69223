/**
 * Errors raised by the wire codecs. Decoders turn every kind of malformed input into a
 * `WireError` (never a RangeError or TypeError) so a server can answer a bad frame with an
 * `error` message instead of crashing.
 * @module
 */

/** Machine-readable reason a frame could not be encoded or decoded. */
export type WireErrorCode =
  | "short_frame" // frame shorter than the generic header or than its header_length
  | "short_header" // header_length below the base size of the message type
  | "bad_header_length" // header_length cuts a field in two, exceeds frame or maxHeader
  | "unknown_type" // message_type not in MessageType
  | "too_large" // a length/count exceeds a configured WireLimits bound
  | "truncated" // payload shorter than the lengths/counts in the header announce
  | "trailing_bytes" // bytes left after the last payload section
  | "bad_utf8" // a text field is not valid UTF-8
  | "bad_value" // a field holds a value outside its domain (enum, bool, unsafe integer)
  | "bad_field"; // encoder: a message object field has the wrong type or range

/** A frame that violates docs/wire.md; `code` says how, `message` names the message and field. */
export class WireError extends Error {
  /** Machine-readable reason, e.g. `"short_header"`. */
  readonly code: WireErrorCode;
  /** Message type code of the offending frame, when known. */
  readonly messageType?: number;

  /** Creates a wire error; `detail` should name the message type and field involved. */
  constructor(code: WireErrorCode, detail: string, messageType?: number) {
    super(`wire ${code}: ${detail}`);
    this.name = "WireError";
    this.code = code;
    this.messageType = messageType;
  }
}
