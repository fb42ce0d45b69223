/**
 * Tiny replicated key-value state machine used by the simulation. It shows how an application
 * gets exactly-once semantics on top of Raft: every command carries (client id, seq); the state
 * machine remembers the last seq applied per client and its result, so a retried command that
 * was already applied (e.g. proposed twice through two leaders) is not applied again.
 */

/** A write command as stored in the entry data. */
export interface PutCommand {
  client: string;
  seq: number;
  key: string;
  value: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Encodes a command as entry data. */
export function encodeCommand(c: PutCommand): Uint8Array {
  return enc.encode(JSON.stringify([c.client, c.seq, c.key, c.value]));
}

/** Decodes entry data (throws on garbage: entries are produced only by encodeCommand). */
export function decodeCommand(data: Uint8Array): PutCommand {
  const [client, seq, key, value] = JSON.parse(dec.decode(data));
  return { client, seq, key, value };
}

/** The key-value state machine with per-client dedup sessions. */
export class KvStateMachine {
  data = new Map<string, string>();
  /** client → last applied seq (results of puts are always "ok", so only seq is kept). */
  sessions = new Map<string, number>();
  /** Number of commands skipped as duplicates (for stats). */
  duplicates = 0;

  /** Applies a command; returns false if it was a duplicate (already applied). */
  apply(c: PutCommand): boolean {
    const last = this.sessions.get(c.client) ?? 0;
    if (c.seq <= last) {
      this.duplicates++;
      return false;
    }
    this.sessions.set(c.client, c.seq);
    this.data.set(c.key, c.value);
    return true;
  }

  /** Reads a key (null when absent). */
  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  /** Serializes the whole state (including sessions, which are part of the replicated state). */
  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify({ d: [...this.data], s: [...this.sessions] }));
  }

  /** Rebuilds a state machine from snapshot bytes (empty bytes = initial state). */
  static restore(bytes: Uint8Array): KvStateMachine {
    const sm = new KvStateMachine();
    if (bytes.length === 0) return sm;
    const o = JSON.parse(dec.decode(bytes));
    sm.data = new Map(o.d);
    sm.sessions = new Map(o.s);
    return sm;
  }
}
