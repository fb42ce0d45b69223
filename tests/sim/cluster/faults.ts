/**
 * The fault schedule of one seed: a pure function of the seed's PRNG, the node names and the
 * workload's length, planned before the run starts (so a failure can print it whole), applied
 * on the SimClock as the run goes. Every fault is undone by its own end or, at the latest, when
 * the workload ends and the cluster is left to settle.
 * @module
 */
import { mulberry32 } from "../world/clock.ts";
import type { NetFaults } from "../world/net.ts";

/** What a fault does. */
export type FaultKind =
  /** kill -9 of a master (its unsynced writes lost), restarted after `durationMs`. */
  | "crash"
  /** the same, of whichever master leads when the fault fires. */
  | "crash-leader"
  /** a master cut from the other masters both ways (clients and balancer still reach it). */
  | "isolate"
  /** the leader cut from the other masters both ways (the stale-leader case). */
  | "isolate-leader"
  /** a master's messages to the other masters lost (it still hears them). */
  | "one-way"
  /** a master cut from everyone. */
  | "isolate-all"
  /** a random half of the hosts against the other half. */
  | "split"
  /** the whole network lossy: drops, duplicates, slow messages (reordering). */
  | "lossy"
  /** the balancer/worker stand-in killed and restarted (lease and running chunks lost). */
  | "crash-balancer"
  /** the storage tier failing half of the masters' stat calls. */
  | "storage-flaky"
  /** a master's next fsync fails with EIO: it must stop (onFatal) and is restarted. */
  | "fsync-eio"
  /**
   * one bit flipped in a master's stored snapshot or sealed log segment, then it restarts: it
   * must refuse to start (or start with nothing wrong). At most one per seed.
   */
  | "bit-flip";

/** One planned fault. */
export interface Fault {
  /** Virtual ms it starts at, and how long it lasts. */
  at: number;
  durationMs: number;
  kind: FaultKind;
  /** A master's name (or "" when resolved when it fires, or not about one node). */
  target: string;
  /** For "split": one side. For "lossy": the rates. */
  side?: string[];
  net?: Partial<NetFaults>;
}

const KINDS: FaultKind[] = [
  "crash",
  "crash-leader",
  "crash-leader",
  "isolate",
  "isolate-leader",
  "isolate-leader",
  "one-way",
  "isolate-all",
  "split",
  "lossy",
  "lossy",
  "crash-balancer",
  "storage-flaky",
  "fsync-eio",
  "bit-flip",
];

/** Plans `count` faults over [0, workloadMs) for the given masters and other hosts. */
export function planFaults(
  seed: number,
  masters: string[],
  others: string[],
  workloadMs: number,
  count: number,
): Fault[] {
  const r = mulberry32(seed ^ 0x5eed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)];
  const out: Fault[] = [];
  for (let i = 0; i < count; i++) {
    const kind = pick(KINDS);
    const at = int(200, Math.max(300, workloadMs - 300));
    const durationMs = int(100, 2500);
    const f: Fault = { at, durationMs, kind, target: "" };
    if (
      kind === "crash" || kind === "isolate" || kind === "one-way" || kind === "isolate-all" ||
      kind === "fsync-eio" || kind === "bit-flip"
    ) {
      f.target = pick(masters);
    } else if (kind === "split") {
      const all = [...masters, ...others];
      f.side = all.filter(() => r() < 0.5);
    } else if (kind === "lossy") {
      f.net = {
        drop: r() * 0.3,
        duplicate: r() * 0.2,
        slow: r() * 0.2,
        slowDelayMs: int(10, 400),
        maxDelayMs: int(3, 30),
      };
    }
    out.push(f);
  }
  return out.sort((a, b) => a.at - b.at);
}

/** A fault as one line of the printed schedule. */
export function describeFault(f: Fault): string {
  const what = f.kind === "split"
    ? `split [${f.side!.join(",")}] | rest`
    : f.kind === "lossy"
    ? `lossy ${JSON.stringify(f.net)}`
    : f.target
    ? `${f.kind} ${f.target}`
    : f.kind;
  return `+${f.at}ms for ${f.durationMs}ms: ${what}`;
}
