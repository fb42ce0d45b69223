/**
 * What every simulated node of the cluster simulation shares: the clock, the network, the
 * seeded randomness, the log of what happened (a trace, compared between two runs of one seed
 * to prove exact replay) and the list of violations found.
 * @module
 */
import { mulberry32, SimClock } from "../world/clock.ts";
import { SimNet } from "../world/net.ts";
import type { Logger } from "../../../lib/log.ts";
import type { Identity } from "../../../lib/security.ts";

/** A node of the simulated cluster: started once, then crashed and restarted by faults. */
export interface SimNode {
  readonly name: string;
  /** Whether it runs now. */
  readonly up: boolean;
  /** Starts it (first time, or after a crash). */
  start(): void | Promise<void>;
  /** Kills it (kill -9: nothing of the process survives but its durable disk). */
  crash(): void;
}

/** Most trace lines and violations kept (a run is short; this bounds a runaway one). */
export const MAX_TRACE = 200_000;

/** The shared world of one seed's run. */
export class World {
  readonly seed: number;
  readonly clock = new SimClock();
  readonly net: SimNet;
  /** Seeded draws for everything but the network (which has its own stream). */
  readonly rand: () => number;
  readonly trace: string[] = [];
  readonly violations: string[] = [];
  /** Error-level log records by node, to be explained by an injected fault or reported. */
  readonly errors: { node: string; at: number; msg: string }[] = [];
  /** Per chunk, the attempt any client first saw final: every later read must show the same. */
  readonly chunkAttempts = new Map<string, number>();

  constructor(seed: number) {
    this.seed = seed;
    const root = mulberry32(seed);
    const sub = () => mulberry32(Math.floor(root() * 2 ** 32));
    this.net = new SimNet(this.clock, sub());
    this.rand = sub();
  }

  /** A fresh PRNG seeded from this world's stream (one per node start, in a fixed order). */
  fork(): () => number {
    return mulberry32(Math.floor(this.rand() * 2 ** 32));
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }

  /** Notes an event in the trace (virtual time first). */
  note(line: string): void {
    if (this.trace.length < MAX_TRACE) this.trace.push(`${this.clock.monotonic()} ${line}`);
  }

  /** Records a violated invariant (the run fails). */
  violate(what: string): void {
    if (this.violations.length < 100) {
      this.violations.push(`@${this.clock.monotonic()}ms ${what}`);
    }
  }

  /** A logger for node `name`: silent, but error-level records are kept for the checks. */
  logger(name: string): Logger {
    const errors = this.errors;
    const clock = this.clock;
    const make = (): Logger => ({
      debug() {},
      info() {},
      warn() {},
      error(msg: string) {
        errors.push({ node: name, at: clock.monotonic(), msg });
      },
      child: () => make(),
    });
    return make();
  }
}

/** The keyring identity a simulated node's key would have. */
export function identity(role: Identity["role"], name: string, admin = false): Identity {
  return { role, name, publicKey: `sim-${name}`, admin };
}

/** A deterministic 16-byte id drawn from `rand`. */
export function randomId(rand: () => number): Uint8Array {
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

/** A 16-byte id derived from a name (stable across runs and restarts). */
export function nameId(name: string): Uint8Array {
  const b = new Uint8Array(16);
  const t = new TextEncoder().encode(name);
  for (let i = 0; i < t.length; i++) b[i % 16] = (b[i % 16] * 31 + t[i]) & 0xff;
  b[15] = t.length;
  return b;
}
