/**
 * The primary balancer lease without processes: the masters' LeaseTimer, the balancers'
 * BalancerLeaseView, the replicated `lease` command and its place in snapshots, and a seeded
 * simulation of both sides under message delay, loss and reordering, leader changes and
 * balancer restarts that checks the safety property: at no instant do two balancers believe
 * they may place chunks.
 */
import assert from "node:assert/strict";
import { LeaseTimer } from "../roles/master/lease.ts";
import { BalancerLeaseView, LEASE_MARGIN } from "../roles/balancer/lease.ts";
import { type BalancerLeaseRecord, JobTable } from "../roles/master/job_table.ts";
import { decodeCommand, encodeCommand } from "../roles/master/commands.ts";
import { decodeSnapshot, encodeSnapshot } from "../roles/master/snapshot.ts";
import { randomUuid, uuidToHex } from "../wire/mod.ts";
import { Rng } from "./wire_gen.ts";

const A = randomUuid(), B = randomUuid();
/** The simulation's current time, read by message handlers when they run. */
const nowRef = { t: 0 };
const EP_A = "a@tcp://127.0.0.1:1", EP_B = "b@tcp://127.0.0.1:2";

Deno.test("lease timer: first ask is granted, others wait a full lease, the holder renews", () => {
  const t = new LeaseTimer(1000);
  const table = new JobTable();
  const d1 = t.decide(table.lease, { node: A, epoch: 0, endpoint: EP_A }, 0, 1);
  assert.equal(d1.kind, "grant");
  if (d1.kind !== "grant") return;
  assert.equal(d1.lease.epoch, 1);
  // While the grant commits, nobody else gets one, nor a renewal.
  assert.equal(t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 1, 1).kind, "answer");
  assert.deepEqual(table.apply({ kind: "lease", lease: d1.lease }), {
    kind: "leased",
    granted: true,
  });
  t.grantDone(true, 5);
  // B waits until A's lease ran out by the leader's clock.
  assert.equal(t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 900, 1).kind, "answer");
  // A renews (read barrier passed), at 800: the lease now runs to 1800.
  const r = t.decide(table.lease, { node: A, epoch: 1, endpoint: EP_A }, 800, 1);
  assert.deepEqual(r, { kind: "renew", epoch: 1 });
  assert.ok(t.renewed(table.lease, A, 1, 800, 1));
  assert.equal(t.expiresAt, 1800);
  assert.equal(
    t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 1800, 1).kind,
    "answer",
  );
  const d2 = t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 1801, 1);
  assert.equal(d2.kind, "grant");
  // A renewal confirmed while B's grant commits is refused.
  assert.equal(t.renewed(table.lease, A, 1, 1801, 1), false);
});

Deno.test("lease timer: a new leader waits a full lease before granting anew", () => {
  const table = new JobTable();
  table.apply({
    kind: "lease",
    lease: { epoch: 1, holder: A, endpoint: EP_A, durationMs: 1000 },
  });
  const t = new LeaseTimer(1000);
  // Term 7 starts at 5000: A may have renewed with the old leader an instant ago.
  assert.equal(
    t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 5000, 7).kind,
    "answer",
  );
  assert.equal(
    t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 6000, 7).kind,
    "answer",
  );
  assert.equal(t.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 6001, 7).kind, "grant");
  // A renewal decided in term 7 and confirmed in term 8 does not count.
  const t2 = new LeaseTimer(1000);
  t2.decide(table.lease, { node: A, epoch: 1, endpoint: EP_A }, 0, 7);
  assert.equal(t2.renewed(table.lease, A, 1, 0, 8), false);
  // The holder restarted (it asks without its epoch, or from another endpoint): its scheduler is
  // empty, so it is not renewed; it waits for the lease to run out like anyone else, and then a
  // rival that asked meanwhile (a standby that followed it) goes first.
  const t4 = new LeaseTimer(1000);
  const ep9 = "a@tcp://127.0.0.1:9";
  assert.equal(t4.decide(table.lease, { node: A, epoch: 0, endpoint: EP_A }, 0, 9).kind, "answer");
  assert.equal(t4.decide(table.lease, { node: A, epoch: 0, endpoint: ep9 }, 1, 9).kind, "answer");
  assert.equal(
    t4.decide(table.lease, { node: A, epoch: 0, endpoint: EP_A }, 1001, 9, true).kind,
    "answer",
  );
  assert.equal(
    t4.decide(table.lease, { node: B, epoch: 0, endpoint: EP_B }, 1002, 9, true).kind,
    "grant",
  );
  // With nobody else asking, the restarted holder gets the next epoch once it ran out.
  const t5 = new LeaseTimer(1000);
  t5.decide(table.lease, { node: A, epoch: 0, endpoint: EP_A }, 0, 9);
  const again = t5.decide(table.lease, { node: A, epoch: 0, endpoint: EP_A }, 1001, 9, false);
  assert.equal(again.kind === "grant" && again.lease.epoch, 2);
  // Another key using A's node id is not A.
  const t3 = new LeaseTimer(1000);
  assert.equal(t3.decide(table.lease, { node: A, epoch: 1, endpoint: EP_B }, 0, 1).kind, "answer");
});

Deno.test("lease command: encodes, applies only as the next epoch, survives snapshots", () => {
  const lease: BalancerLeaseRecord = { epoch: 1, holder: A, endpoint: EP_A, durationMs: 3000 };
  const back = decodeCommand(encodeCommand({ kind: "lease", lease }));
  assert.deepEqual(back, { kind: "lease", lease });
  const table = new JobTable();
  assert.deepEqual(table.apply({ kind: "lease", lease: { ...lease, epoch: 2 } }), {
    kind: "leased",
    granted: false,
  });
  table.apply({ kind: "lease", lease });
  table.apply({ kind: "lease", lease: { ...lease, epoch: 2, holder: B, endpoint: EP_B } });
  assert.deepEqual(
    table.apply({ kind: "lease", lease: { ...lease, epoch: 2 } }),
    { kind: "leased", granted: false },
    "a second grant of the same epoch loses",
  );
  const restored = decodeSnapshot(encodeSnapshot(table));
  assert.deepEqual(restored.lease, table.lease);
  assert.equal(uuidToHex(restored.lease!.holder), uuidToHex(B));
  assert.equal(decodeSnapshot(encodeSnapshot(new JobTable())).lease, null);
});

Deno.test("lease view: placing stops at sentAt + duration minus the margin; taken leases lapse", () => {
  const v = new BalancerLeaseView(A);
  const reply = (epoch: number, holder: Uint8Array, granted: boolean, endpoint = EP_A) => ({
    epoch,
    holder,
    durationMs: 1000,
    granted,
    endpoint,
  });
  assert.deepEqual(v.onReply(reply(1, A, true), 100, 150), [{ kind: "primary", epoch: 1 }]);
  const until = 100 + 1000 * (1 - LEASE_MARGIN);
  assert.ok(v.isPrimary(until - 1) && !v.isPrimary(until));
  // A late reply to an older request does not shorten it; a renewal extends it.
  assert.deepEqual(v.onReply(reply(1, A, true), 50, 200), []);
  assert.equal(v.until, until);
  v.onReply(reply(1, A, true), 500, 510);
  assert.equal(v.until, 500 + 900);
  assert.deepEqual(v.onTick(1399), []);
  assert.deepEqual(v.onTick(1400), [{ kind: "lapsed", epoch: 1, why: "expired" }]);
  assert.equal(v.epoch, 0);
  // Renewed after the lapse (nobody else took it): primary again.
  assert.deepEqual(v.onReply(reply(1, A, true), 1500, 1510), [{ kind: "primary", epoch: 1 }]);
  // B holds epoch 2 now: lapse at once, follow B; an old reply of epoch 1 changes nothing.
  assert.deepEqual(v.onReply(reply(2, B, false, EP_B), 1600, 1610), [
    { kind: "lapsed", epoch: 1, why: "taken" },
    { kind: "follow", endpoint: EP_B, epoch: 2 },
  ]);
  assert.deepEqual(v.onReply(reply(1, A, true), 1605, 1620), []);
  assert.equal(v.isPrimary(1620), false);
  assert.equal(v.following, EP_B);
});

/**
 * Both state machines under a seeded adversary. Time advances in 1 ms steps; each balancer asks
 * every `every` ms; messages are delayed 0–400 ms, lost with probability 0.1 and so reordered;
 * the "leader" changes now and then (a new LeaseTimer in a new term, as on another master, with
 * the same replicated table), and balancers restart (a fresh view). Checked at every step: at
 * most one balancer may place, and epochs held never go backwards.
 */
Deno.test("lease simulation: never two primaries, over 200 seeds", () => {
  const D = 1000;
  for (let seed = 1; seed <= 200; seed++) {
    const r = new Rng(seed);
    const table = new JobTable();
    let term = 1;
    let timer = new LeaseTimer(D);
    const nodes = [A, B, randomUuid()].map((id, i) => ({
      id,
      ep: `n${i}@tcp://127.0.0.1:${i}`,
      view: new BalancerLeaseView(id),
      nextAsk: r.int(300),
    }));
    type Flight = { at: number; run: () => void };
    let flights: Flight[] = [];
    const send = (now: number, run: () => void) => {
      if (r.chance(0.1)) return; // lost
      flights.push({ at: now + r.int(400), run });
    };
    let maxEpochHeld = 0;
    for (let now = 0; now < 20_000; now++) {
      if (r.chance(0.0005)) {
        term++;
        timer = new LeaseTimer(D); // another master leads, with the same table
      }
      for (const n of nodes) {
        if (r.chance(0.0002)) n.view = new BalancerLeaseView(n.id); // restart
        if (now < n.nextAsk) continue;
        n.nextAsk = now + D / 4;
        const sentAt = now, view = n.view, askTerm = term;
        const ask = { node: n.id, epoch: view.heldEpoch, endpoint: n.ep };
        send(now, () => {
          const at = nowRef.t;
          if (askTerm !== term && r.chance(0.5)) return; // went to a deposed leader: NOT_LEADER
          const d = timer.decide(table.lease, ask, at, term);
          const t0 = timer;
          const reply = (granted: boolean) => {
            const l = table.lease;
            const msg = {
              epoch: l?.epoch ?? 0,
              holder: l?.holder ?? new Uint8Array(16),
              durationMs: l?.durationMs ?? D,
              granted,
              endpoint: l?.endpoint ?? "",
            };
            send(nowRef.t, () => view.onReply(msg, sentAt, nowRef.t));
          };
          if (d.kind === "answer") reply(false);
          else if (d.kind === "renew") {
            // The read barrier takes a while, and fails if leadership moved meanwhile.
            const started = term;
            flights.push({
              at: nowRef.t + r.int(50),
              run: () => {
                if (term !== started || timer !== t0) return;
                reply(timer.renewed(table.lease, n.id, d.epoch, at, term));
              },
            });
          } else {
            const started = term;
            flights.push({
              at: nowRef.t + r.int(50),
              run: () => {
                // The grant commits even if leadership moved (an entry of the old term), and
                // the old leader may then still answer that it was granted.
                const res = table.apply({ kind: "lease", lease: d.lease });
                const ok = res.kind === "leased" && res.granted;
                if (timer === t0) timer.grantDone(ok, nowRef.t);
                if (timer === t0 || r.chance(0.5)) reply(ok && (term === started || r.chance(0.5)));
              },
            });
          }
        });
      }
      nowRef.t = now;
      const due = flights.filter((f) => f.at <= now);
      flights = flights.filter((f) => f.at > now);
      for (const f of due) f.run();
      for (const n of nodes) n.view.onTick(now);
      const primaries = nodes.filter((n) => n.view.isPrimary(now));
      assert.ok(primaries.length <= 1, `seed ${seed} at ${now}: ${primaries.length} primaries`);
      for (const p of primaries) {
        assert.ok(p.view.epoch >= maxEpochHeld, `seed ${seed}: epoch went back`);
        maxEpochHeld = p.view.epoch;
      }
    }
    assert.ok((table.lease?.epoch ?? 0) >= 1, `seed ${seed}: a lease was granted`);
  }
});
