/**
 * Linearizability checker for key-value histories (Wing & Gong search with Lowe's
 * memoization, as in Porcupine). The history is partitioned per key (P-compositionality: a
 * history of independent registers is linearizable iff each key's sub-history is), and each
 * register history is searched depth-first over a doubly linked list of call/return events.
 */

/** One client operation on a register key. `ret` is Infinity when no response was seen. */
export interface Operation {
  client: string;
  key: string;
  kind: "put" | "get";
  /** Value written (put) or value read (get; null = absent). */
  value: string | null;
  call: number;
  ret: number;
}

/** Result of a check; `key` names the first non-linearizable key. */
export interface CheckResult {
  ok: boolean;
  key?: string;
  /** True when the search gave up (too many states): treat as inconclusive, not failure. */
  timedOut?: boolean;
}

interface Node {
  op: Operation | null; // null: list head sentinel
  id: number;
  call: boolean;
  match: Node | null; // call → its return node
  prev: Node | null;
  next: Node | null;
}

/** Checks that a register history is linearizable (initial value null). */
export function checkRegister(ops: Operation[], maxSteps = 2_000_000): CheckResult {
  const n = ops.length;
  if (n === 0) return { ok: true };
  // Build time-ordered events; unanswered ops return "at infinity" (may take effect any time
  // after their call or never — a put that never returned may or may not have happened).
  type Ev = { t: number; call: boolean; id: number };
  const evs: Ev[] = [];
  ops.forEach((o, id) => {
    evs.push({ t: o.call, call: true, id });
    evs.push({ t: o.ret, call: false, id });
  });
  evs.sort((a, b) => a.t - b.t || (a.call === b.call ? a.id - b.id : a.call ? 1 : -1));
  const head: Node = { op: null, id: -1, call: false, match: null, prev: null, next: null };
  const calls: Node[] = new Array(n);
  const rets: Node[] = new Array(n);
  let tail = head;
  for (const e of evs) {
    const nd: Node = { op: ops[e.id], id: e.id, call: e.call, match: null, prev: tail, next: null };
    tail.next = nd;
    tail = nd;
    if (e.call) calls[e.id] = nd;
    else rets[e.id] = nd;
  }
  for (let i = 0; i < n; i++) calls[i].match = rets[i];

  const words = Math.ceil(n / 32);
  const bits = new Uint32Array(words);
  const cache = new Set<string>();
  const stack: { nd: Node; state: string | null }[] = [];
  let state: string | null = null;
  let entry = head.next;
  let steps = 0;

  const lift = (c: Node) => {
    c.prev!.next = c.next;
    c.next!.prev = c.prev;
    const r = c.match!;
    r.prev!.next = r.next;
    if (r.next) r.next.prev = r.prev;
  };
  const unlift = (c: Node) => {
    const r = c.match!;
    r.prev!.next = r;
    if (r.next) r.next.prev = r;
    c.prev!.next = c;
    c.next!.prev = c;
  };

  while (head.next !== null) {
    if (++steps > maxSteps) return { ok: true, timedOut: true };
    if (entry === null) return { ok: false }; // cannot happen: a return always precedes null
    if (entry.call) {
      const op = entry.op!;
      let ok: boolean;
      let next: string | null = state;
      if (op.kind === "put") {
        ok = true;
        next = op.value;
      } else {
        ok = op.value === state;
      }
      if (ok) {
        bits[entry.id >> 5] |= 1 << (entry.id & 31);
        const key = bits.join(",") + "|" + (next === null ? "\u0000" : next);
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ nd: entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        bits[entry.id >> 5] &= ~(1 << (entry.id & 31));
      }
      entry = entry.next;
    } else {
      // Reached a return whose call is not yet linearized: backtrack.
      const top = stack.pop();
      if (!top) return { ok: false };
      state = top.state;
      bits[top.nd.id >> 5] &= ~(1 << (top.nd.id & 31));
      unlift(top.nd);
      entry = top.nd.next;
    }
  }
  return { ok: true };
}

/** Checks a multi-key history by checking each key's sub-history independently. */
export function checkHistory(ops: Operation[], maxSteps?: number): CheckResult {
  const byKey = new Map<string, Operation[]>();
  for (const o of ops) {
    let l = byKey.get(o.key);
    if (!l) byKey.set(o.key, l = []);
    l.push(o);
  }
  let timedOut = false;
  for (const [key, l] of [...byKey].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const r = checkRegister(l, maxSteps);
    if (!r.ok) return { ok: false, key };
    if (r.timedOut) timedOut = true;
  }
  return { ok: true, timedOut };
}
