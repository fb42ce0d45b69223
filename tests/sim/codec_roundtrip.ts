/** Sends a message through the binary codec and back (used by the sim's codec mode). */
import { decodeMessage, encodeMessage } from "../../roles/master/raft/codec.ts";
import type { Message } from "../../roles/master/raft/types.ts";

/** Encodes then decodes `m`, so the receiver sees exactly what the wire would carry. */
export function codecRoundTrip(m: Message): Message {
  return decodeMessage(encodeMessage(m));
}
