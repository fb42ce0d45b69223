/**
 * The ZAP handler at the socket level: it decides every CURVE handshake of the process, the
 * User-Id it gives comes with every message, and a server socket without a ZAP domain is still
 * asked (so a socket someone forgets to give a domain is not an open door). Refusals are proven
 * by the handler's own count and by a later message that gets through, never by waiting.
 */
import assert from "node:assert/strict";
import {
  curveKeypair,
  type Received,
  Socket,
  terminate,
  z85Decode,
  z85Encode,
  ZapHandler,
} from "../wire/zmq/mod.ts";
import { waitFor, within } from "./wait.ts";

const enc = new TextEncoder();

function dealer(server: string, kp: { publicKey: string; secretKey: string }, ep: string) {
  const d = new Socket("DEALER", {
    linger: 0,
    curveServerKey: server,
    curvePublicKey: kp.publicKey,
    curveSecretKey: kp.secretKey,
  });
  d.connect(ep);
  return d;
}

Deno.test("zap: only keys the handler accepts get in; User-Id rides every message", async () => {
  const srv = curveKeypair(), good = curveKeypair(), bad = curveKeypair();
  const zap = new ZapHandler((r) =>
    r.publicKey && z85Encode(r.publicKey) === good.publicKey
      ? { ok: true, userId: `user:${r.domain}` }
      : { ok: false, reason: "unknown key" }
  );
  const common = { curveServer: true, curveSecretKey: srv.secretKey, peerUserId: true };
  // With a domain and the domain enforced (dsys's servers), and without any domain at all.
  const withDomain = new Socket("ROUTER", { ...common, zapDomain: "dsys", zapEnforceDomain: true });
  const noDomain = new Socket("ROUTER", common);
  assert.equal(withDomain.zapEnforced, true, "this libzmq has ZMQ_ZAP_ENFORCE_DOMAIN");
  try {
    for (const [router, domain] of [[withDomain, "dsys"], [noDomain, ""]] as const) {
      const ep = router.bind("tcp://127.0.0.1:*");
      const refusedBefore = zap.refused;
      const b = dealer(srv.publicKey, bad, ep);
      await b.send([enc.encode("from bad")]);
      await waitFor("the bad key's handshake to be refused", () => zap.refused > refusedBefore);
      const g = dealer(srv.publicKey, good, ep);
      await g.send([enc.encode("from good")]);
      const m: Received = await within(10_000, "the good key's message", router.receive());
      // The only message that arrived is the good one: the refused peer's was never delivered.
      assert.equal(new TextDecoder().decode(m[1]), "from good");
      assert.equal(m.userId, `user:${domain}`);
      b.close();
      g.close();
    }
  } finally {
    withDomain.close();
    noDomain.close();
    await zap.close();
    await terminate();
  }
});

Deno.test("z85: keys round-trip; bad text is refused", () => {
  const kp = curveKeypair();
  const raw = z85Decode(kp.publicKey)!;
  assert.equal(raw.length, 32);
  assert.equal(z85Encode(raw), kp.publicKey);
  assert.equal(z85Decode("abc"), null);
  assert.equal(z85Decode("abcd\u00e9"), null);
});
