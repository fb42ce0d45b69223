/**
 * `dsys logs -f` with real processes: a running chunk's lines arrive from its worker while it
 * runs, the log follows a retry (a new attempt starts again from its first line), it ends when
 * the chunk ends, and afterwards the stored output is what is shown. Only the job's owner may
 * read a chunk's log from the worker.
 */
import assert from "node:assert/strict";
import { clientAs, withCluster } from "./cluster_helpers.ts";
import { chunkLogs, type LogPiece } from "../client/logs.ts";
import { RpcClient, RpcError } from "../lib/rpc.ts";
import { ChunkState, ErrorCode, MessageType, NodeRole, uuidToHex } from "../wire/mod.ts";
import { waitForJob } from "./wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("logs: -f streams a running chunk's lines from its worker, follows a retry, ends with the chunk", async () => {
  await withCluster({ workers: 1, slotsPerWorker: 1, users: ["alice", "bob"] }, async (cluster) => {
    const alice = clientAs(cluster, "alice");
    const bob = clientAs(cluster, "bob");
    try {
      // Attempt 1 prints three lines and fails; attempt 2 prints four and succeeds. A line a
      // second: each attempt runs for seconds, while the follower reads five times a second.
      const program = enc.encode(
        "#!/bin/sh\n" +
          'if [ "$DSYS_ATTEMPT" = 1 ]; then n=3; else n=4; fi\n' +
          'i=1; while [ $i -le $n ]; do echo "attempt $DSYS_ATTEMPT line $i"; sleep 1; ' +
          "i=$((i+1)); done\n" +
          '[ "$DSYS_ATTEMPT" = 1 ] && exit 3\nexit 0\n',
      );
      const job = await alice.submit({
        program,
        programName: "lines.sh",
        argument: "",
        chunks: 1,
        inputs: [],
        timeLimitMs: 60_000,
        retries: 1,
      });
      const pieces: LogPiece[] = [];
      let liveLines = 0;
      for await (const p of chunkLogs(alice, job, 0, { follow: true })) {
        pieces.push(p);
        if (p.kind === "data") {
          // While this runs, the chunk is still running: its lines come from the worker.
          const s = await alice.status(job);
          if (s.chunks[0].state === ChunkState.Running) liveLines++;
        }
      }
      const s = await waitForJob(alice, job);
      assert.equal(s.state, ChunkState.Succeeded);
      assert.ok(liveLines >= 1, "some lines arrived while the chunk ran");
      const byAttempt = new Map<number, string>();
      for (const p of pieces) {
        if (p.kind === "data") {
          byAttempt.set(p.attempt, (byAttempt.get(p.attempt) ?? "") + dec.decode(p.data));
        }
      }
      const markers = pieces.filter((p) => p.kind === "attempt").map((p) =>
        p.kind === "attempt" && p.attempt
      );
      assert.deepEqual(markers, [1, 2], JSON.stringify(pieces.map((p) => p.kind)));
      const lines = (a: number, n: number) =>
        Array.from({ length: n }, (_, i) => `attempt ${a} line ${i + 1}\n`).join("");
      assert.equal(byAttempt.get(1), lines(1, 3));
      assert.equal(byAttempt.get(2), lines(2, 4));
      const end = pieces.at(-1)!;
      assert.equal(end.kind, "end");
      // What followed live is what was stored.
      const out = s.chunks[0].outputs.find((o) => o.name === "stdout")!;
      assert.equal(dec.decode(await alice.storage.getBytes(out.id)), byAttempt.get(2));
      // After the job: the stored output, without -f.
      const after: string[] = [];
      for await (const p of chunkLogs(alice, job, 0, { follow: false })) {
        if (p.kind === "data") after.push(dec.decode(p.data));
      }
      assert.equal(after.join(""), byAttempt.get(2));

      // The worker serves a running chunk's log to its owner only.
      const held = await alice.submit({
        program: enc.encode("#!/bin/sh\necho started\nexec sleep 3600\n"),
        programName: "held.sh",
        argument: "",
        chunks: 1,
        inputs: [],
        timeLimitMs: 3_600_000,
      });
      for await (const p of chunkLogs(alice, held, 0, { follow: true })) {
        if (p.kind === "data") break; // "started": it runs
      }
      const w = (await alice.nodes()).find((n) => n.role === NodeRole.Worker)!;
      const asBob = new RpcClient(`${w.name}@${w.endpoint}`, {
        node: bob.node,
        auth: bob.credentials,
        serverRole: "worker",
      });
      try {
        await assert.rejects(
          asBob.request({
            type: MessageType.ChunkLogRequest,
            node: bob.node,
            job: held,
            chunkIndex: 0,
            stream: 1,
            offset: 0,
            maxLength: 0,
          }),
          (e) => e instanceof RpcError && e.code === ErrorCode.Forbidden,
          `bob read alice's job ${uuidToHex(held)}`,
        );
      } finally {
        await asBob.close();
      }
      assert.equal(await alice.cancel(held), 1);
    } finally {
      await Promise.all([alice.close(), bob.close()]);
    }
  }, { logLines: 25 });
});
