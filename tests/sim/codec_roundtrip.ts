/** Sends a message through the binary codec and back (used by the sim's --codec mode). */
import type { Message } from "../../roles/master/raft/types.ts";

/** Identity until the codec exists. */
export function codecRoundTrip(m: Message): Message {
  return m;
}
