/**
 * Cold input read: the first read of an input through a worker's FUSE mount (which fetches it
 * from storage into the worker's cache) vs a plain storage get of the same file to a local file,
 * both in the same run on the same local cluster (real processes, loopback).
 */
import { LocalCluster } from "../client/local_cluster.ts";
import { DsysClient } from "../client/commands.ts";
import { ChunkState } from "../wire/mod.ts";
import { type BenchRow, markdownTable } from "./types.ts";

/** Runs the cold-read benchmark with a file of `sizeMiB`, `runs` times each side (median). */
export async function runFuseColdBench(sizeMiB = 512, runs = 3): Promise<BenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-bench-cold-" });
  const cluster = await LocalCluster.start({ workers: 1, slotsPerWorker: 1, dataDir: `${dir}/c` });
  const client = new DsysClient(cluster.info);
  try {
    const getRates: number[] = [], mountRates: number[] = [];
    for (let run = 0; run < runs; run++) {
      // A new file per run (content differs), so the worker's cache never has it yet.
      const path = `${dir}/input-${run}.bin`;
      const f = await Deno.open(path, { write: true, create: true, truncate: true });
      const block = new Uint8Array(1 << 20);
      for (let i = 0; i < sizeMiB; i++) {
        block.fill((i + run * 7) & 0xff);
        new DataView(block.buffer).setUint32(0, run, true);
        await f.write(block);
      }
      f.close();
      const [put] = await client.put([path]);
      const bytes = sizeMiB * 1024 * 1024;

      const t0 = performance.now();
      await client.storage.getToFile(put.id, `${dir}/got-${run}.bin`);
      getRates.push(bytes / 1e6 / ((performance.now() - t0) / 1000));
      await Deno.remove(`${dir}/got-${run}.bin`);

      // The program's own run time covers the lazy fetch (first read) and the read itself.
      const job = await client.submit({
        program: new TextEncoder().encode('#!/bin/sh\ncat "$DSYS_INPUT_DIR/in.bin" > /dev/null\n'),
        programName: "read.sh",
        argument: "",
        chunks: 1,
        inputs: [{ id: put.id, name: "in.bin" }],
        timeLimitMs: 600_000,
      });
      const s = await client.waitForJob(job, () => {}, 50);
      if (s.state !== ChunkState.Succeeded) {
        throw new Error(`read job failed: ${s.chunks[0].reason}`);
      }
      mountRates.push(bytes / 1e6 / (s.chunks[0].durationMs / 1000));
      await Deno.remove(path);
    }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
    const d = med(mountRates), b = med(getRates);
    return [{
      name: `cold read of a ${sizeMiB} MiB input through the mount (fetch on first read)`,
      dsys: d,
      baseline: b,
      unit: "MB/s",
      ratio: d / b,
      goal: ">= 0.8x storage get",
    }];
  } finally {
    await client.close();
    await cluster.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  console.log(markdownTable(await runFuseColdBench(), "storage get"));
}
