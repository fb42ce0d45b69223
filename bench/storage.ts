/**
 * Storage benchmark: put and get of a 1 GiB file through a real storage node process, compared
 * with raw loopback TCP throughput measured in the same run (iperf3; installed with apt-get
 * when missing, else a Deno TCP socket pair as the fallback baseline).
 *
 * `deno run -A bench/storage.ts` prints the rows and rewrites the "## Storage" section of
 * docs/benchmarks.md. `DSYS_BENCH_STORAGE_MIB` overrides the file size (default 1024),
 * `DSYS_BENCH_STORAGE_RUNS` the runs per transfer (default 2, the fastest is reported).
 * @module
 */
import { createHash } from "node:crypto";
import { StorageClient } from "../client/storage_client.ts";
import { randomUuid } from "../wire/mod.ts";
import { Socket } from "../wire/zmq/mod.ts";
import type { BenchRow } from "./types.ts";

/** Re-exported so callers of runStorageBench get the row type from here too. */
export type { BenchRow };

const MiB = 1024 * 1024;
const ROOT = new URL("..", import.meta.url).pathname;

async function sh(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return { ok: r.success, out: new TextDecoder().decode(r.stdout) };
  } catch {
    return { ok: false, out: "" };
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Raw loopback TCP, MB/s, moving `bytes` with iperf3 (one stream). */
async function iperf3(bytes: number): Promise<number | null> {
  if (!(await sh("iperf3", ["--version"])).ok) {
    // The bench may install its own tool; tests never need it.
    await sh("apt-get", ["install", "-y", "-qq", "iperf3"]);
    if (!(await sh("iperf3", ["--version"])).ok) return null;
  }
  const port = freePort();
  const server = new Deno.Command("iperf3", {
    args: ["-s", "-1", "-p", String(port), "-B", "127.0.0.1"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 50; i++) {
      const r = await sh("iperf3", [
        "-c",
        "127.0.0.1",
        "-p",
        String(port),
        "-n",
        String(bytes),
        "-J",
      ]);
      let bps: number | undefined;
      try {
        bps = JSON.parse(r.out)?.end?.sum_received?.bits_per_second;
      } catch { /* not JSON: the client failed to start */ }
      if (r.ok && typeof bps === "number") return bps / 8 / 1e6;
      await new Promise((res) => setTimeout(res, 100)); // server not listening yet
    }
    return null;
  } finally {
    try {
      server.kill("SIGTERM");
    } catch { /* exited after its one test */ }
    await server.status;
  }
}

/** Fallback baseline: a Deno TCP socket pair in this process, MB/s. */
async function denoTcp(bytes: number): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const sink = (async () => {
    const c = await l.accept();
    const b = new Uint8Array(MiB);
    while ((await c.read(b)) !== null) { /* discard */ }
    c.close();
  })();
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunk = new Uint8Array(4 * MiB);
  const t0 = performance.now();
  for (let sent = 0; sent < bytes;) {
    const n = await c.write(chunk.subarray(0, Math.min(chunk.length, bytes - sent)));
    sent += n;
  }
  c.close();
  await sink;
  l.close();
  return bytes / 1e6 / ((performance.now() - t0) / 1000);
}

/**
 * The transport alone: 4 MiB frames DEALER -> ROUTER through the ZeroMQ FFI binding, in this
 * process, no hashing or disk, MB/s. The ceiling any storage transfer can reach.
 */
async function zmqRaw(bytes: number): Promise<number> {
  const router = new Socket("ROUTER", { linger: 0 });
  const dealer = new Socket("DEALER", { linger: 0 });
  try {
    const ep = router.bind("tcp://127.0.0.1:*");
    dealer.connect(ep);
    const frame = new Uint8Array(4 * MiB).fill(1);
    const n = Math.max(1, Math.round(bytes / frame.length));
    const t0 = performance.now();
    const recv = (async () => {
      for (let i = 0; i < n; i++) await router.receive();
    })();
    for (let i = 0; i < n; i++) await dealer.send([new Uint8Array(8), frame]);
    await recv;
    return (n * frame.length) / 1e6 / ((performance.now() - t0) / 1000);
  } finally {
    dealer.close();
    router.close();
  }
}

/** Local disk: sequential 4 MiB writes of `bytes` then one fdatasync, MB/s (the put ceiling). */
async function diskWrite(path: string, bytes: number): Promise<number> {
  const chunk = new Uint8Array(4 * MiB).fill(0x5a);
  const t0 = performance.now();
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    for (let off = 0; off < bytes; off += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, bytes - off));
      let w = 0;
      while (w < part.length) w += await f.write(part.subarray(w));
    }
    await f.syncData();
  } finally {
    f.close();
  }
  const mbs = bytes / 1e6 / ((performance.now() - t0) / 1000);
  await Deno.remove(path);
  return mbs;
}

async function writeRandomFile(path: string, n: number): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const piece = new Uint8Array(4 * MiB);
  for (let i = 0; i < piece.length; i += 65536) {
    crypto.getRandomValues(piece.subarray(i, i + 65536));
  }
  try {
    for (let off = 0; off < n; off += piece.length) {
      // A different first word per piece keeps the content from being periodic.
      new DataView(piece.buffer).setFloat64(0, off + Math.random(), true);
      const part = piece.subarray(0, Math.min(piece.length, n - off));
      let w = 0;
      while (w < part.length) w += await f.write(part.subarray(w));
    }
  } finally {
    f.close();
  }
}

async function startStorage(dir: string): Promise<{ endpoint: string; child: Deno.ChildProcess }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}roles/storage/cli.ts`,
      "--listen",
      "tcp://127.0.0.1:0",
      "--data",
      dir,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("storage node exited before listening");
    buf += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return { endpoint: JSON.parse(buf.slice(0, buf.indexOf("\n"))).endpoint, child };
}

async function fileSha(path: string): Promise<string> {
  const h = createHash("sha256");
  const f = await Deno.open(path);
  const b = new Uint8Array(4 * MiB);
  try {
    for (;;) {
      const k = await f.read(b);
      if (k === null) break;
      h.update(b.subarray(0, k));
    }
  } finally {
    f.close();
  }
  return h.digest("hex");
}

/** CPU time (user + system) of a process so far, ms; Linux /proc. */
async function cpuMs(pid: number | "self"): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10; // utime, stime in 100 Hz ticks
}

/**
 * Runs the storage benchmark: put and get of a 1 GiB file vs raw loopback TCP. Lines about
 * CPU use and machine load are appended to `notes` when given (the ratios alone depend on
 * what else the shared machine runs).
 */
export async function runStorageBench(notes: string[] = []): Promise<BenchRow[]> {
  const mib = Number(Deno.env.get("DSYS_BENCH_STORAGE_MIB") ?? "1024");
  const size = mib * MiB;
  const dir = await Deno.makeTempDir({ prefix: "dsys-bench-storage-" });
  const node = await startStorage(`${dir}/node`);
  const client = new StorageClient(node.endpoint, randomUuid());
  const label = mib === 1024 ? "1 GiB" : `${mib} MiB`;
  const runs = Math.max(1, Number(Deno.env.get("DSYS_BENCH_STORAGE_RUNS") ?? "2"));
  /** Runs `op` `runs` times; keeps the fastest (load spikes from other users only slow). */
  const timed = async (what: string, op: (run: number) => Promise<unknown>): Promise<number> => {
    let best = Infinity;
    let note = "";
    for (let run = 0; run < runs; run++) {
      const [s0, c0, t0] = [await cpuMs(node.child.pid), await cpuMs("self"), performance.now()];
      await op(run);
      const wall = performance.now() - t0;
      const [s1, c1] = [await cpuMs(node.child.pid), await cpuMs("self")];
      const perGiB = (ms: number) => ((ms / 1000) * 1024 / mib).toFixed(2);
      if (wall < best) {
        best = wall;
        note = `- ${what}: ${(wall / 1000).toFixed(2)} s wall (best of ${runs}); CPU per GiB: ` +
          `storage node ${perGiB(s1 - s0)} s, client ${perGiB(c1 - c0)} s.`;
      }
    }
    notes.push(note);
    return size / 1e6 / (best / 1000);
  };
  try {
    const src = `${dir}/src.bin`;
    await writeRandomFile(src, size);
    // The loopback baseline is measured before and after the transfers and the higher figure
    // kept: on a shared machine it swings with the load, and the higher one is the stricter.
    const ipBefore = await iperf3(size);
    let id: Uint8Array = new Uint8Array(16);
    const putMBs = await timed(`put ${label}`, async (run) => {
      // A new first byte per run: new content, new id, so every run really uploads.
      const f = await Deno.open(src, { write: true });
      await f.write(new Uint8Array([run]));
      f.close();
      id = (await client.putFile(src)).id;
    });
    const getMBs = await timed(
      `get ${label} to file, fsync`,
      () => client.getToFile(id, `${dir}/dst.bin`),
    );
    if ((await fileSha(src)) !== (await fileSha(`${dir}/dst.bin`))) {
      throw new Error("storage bench: downloaded file differs from the uploaded one");
    }
    await Deno.remove(`${dir}/dst.bin`);
    const cacheMBs = await timed(
      `get ${label} to file, no fsync`,
      () => client.getToFile(id, `${dir}/dst2.bin`, { fsync: false }),
    );
    const ipAfter = await iperf3(size);
    const ip = ipBefore === null && ipAfter === null ? null : Math.max(ipBefore ?? 0, ipAfter ?? 0);
    const baseline = ip ?? await denoTcp(size);
    if (ip !== null) {
      notes.push(
        `- iperf3 loopback before / after the transfers: ${round(ipBefore ?? 0)} / ` +
          `${round(ipAfter ?? 0)} MB/s (the higher is the baseline).`,
      );
    }
    const base = ip !== null ? "iperf3 loopback" : "Deno TCP loopback";
    const disk = await diskWrite(`${dir}/disk.bin`, size);
    const zmq = await zmqRaw(size);
    notes.push(
      `- get without fsync reaches ${(cacheMBs / zmq).toFixed(2)}x of the ZeroMQ binding's own ` +
        `throughput (4 MiB frames, one process, no hashing).`,
    );
    const status = await Deno.readTextFile(`/proc/${node.child.pid}/status`);
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
    notes.push(`- Storage node peak RSS (VmHWM) after all transfers: ${hwm.toFixed(0)} MiB.`);
    const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
    notes.push(
      `- Load average during the run: ${load} (${navigator.hardwareConcurrency} cores). ` +
        `Local disk write + fdatasync: ${round(disk)} MB/s.`,
    );
    const row = (name: string, v: number, goal = `>= 0.5x ${base}`): BenchRow => ({
      name,
      dsys: round(v),
      baseline: round(baseline),
      unit: "MB/s",
      ratio: Math.round((v / baseline) * 1000) / 1000,
      goal,
    });
    return [
      row(`storage put ${label} (client hash pass + fsync'd upload)`, putMBs),
      row(`storage get ${label} to file (verified, fsync)`, getMBs),
      row(`storage get ${label} to file (verified, no fsync)`, cacheMBs),
      {
        name: `storage put ${label} vs local disk write + fdatasync (durability ceiling)`,
        dsys: round(putMBs),
        baseline: round(disk),
        unit: "MB/s",
        ratio: Math.round((putMBs / disk) * 1000) / 1000,
        goal: "info",
      },
      row(`ZeroMQ binding alone, ${label} in 4 MiB frames (transport ceiling)`, zmq, "info"),
    ];
  } finally {
    await client.close();
    try {
      node.child.kill("SIGTERM");
    } catch { /* gone */ }
    await node.child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}

/** Why the numbers are what they are; kept next to the table the bench rewrites. */
const ANALYSIS = [
  "Reading the numbers:",
  "- put is durable: a chunk is acked only after fdatasync (group-committed per batch of chunks",
  "  in flight), and the commit renames + fsyncs the directory. The local disk sustains the",
  '  "write + fdatasync" figure above, far below loopback TCP, so put cannot reach 0.5x of',
  '  iperf3 on this machine; the "vs local disk" row is the meaningful one for put. The store',
  "  alone (in process, no network) writes at ~0.9x of that disk figure; end to end, the client's",
  "  hash pass before the upload and the CPU both processes need take the rest.",
  "- Every byte is SHA-256'd (~1.3 GB/s per core here) twice on each path: put = client id pass +",
  "  node whole-file check (+ per-1 MiB-block sidecar hashes); get = node per-block verify on",
  "  every read (a flipped byte is never served) + client whole-file verify before rename.",
  "- get is CPU-bound: per GiB the node spends ~2 s (read, block verify, codec and ZeroMQ copies)",
  "  and the client ~2 s (copies, whole-file hash, write); two processes on 2 shared cores cap it",
  "  around 450 MB/s. The ZeroMQ binding alone (last row) is faster than that on a quiet machine.",
  "- The machine is shared with other engineers' test runs (see the load average): wall-clock",
  "  ratios vary 2-3x between runs; the CPU-per-GiB figures are the stable measure.",
  "- Next steps if the goal matters: fewer copies (zero-copy frames in wire/zmq, encode straight",
  "  from the read buffer), hashing on worker threads so it overlaps I/O, skipping the sidecar",
  "  hash on put (derive it lazily), and a faster disk for durable puts.",
];

/** Replaces (or appends) the "## Storage" section of docs/benchmarks.md. */
export async function writeStorageSection(rows: BenchRow[], notes: string[] = []): Promise<void> {
  const path = `${ROOT}docs/benchmarks.md`;
  let doc = "";
  try {
    doc = await Deno.readTextFile(path);
  } catch {
    doc = "# dsys benchmarks\n";
  }
  const lines = [
    "## Storage",
    "",
    `Measured ${new Date().toISOString().slice(0, 16)}Z by \`deno run -A bench/storage.ts\` ` +
    `(${Deno.build.os}, ${navigator.hardwareConcurrency} cores, shared machine).`,
    "",
    "| benchmark | dsys | baseline | unit | ratio | goal |",
    "|---|---:|---:|---|---:|---|",
    ...rows.map((r) =>
      `| ${r.name} | ${r.dsys} | ${r.baseline} | ${r.unit} | ${r.ratio} | ${r.goal} |`
    ),
    ...(notes.length ? ["", ...notes] : []),
    "",
    ...ANALYSIS,
    "",
  ].join("\n");
  const start = doc.indexOf("\n## Storage\n");
  if (start < 0) {
    doc = doc.replace(/\n*$/, "\n\n") + lines;
  } else {
    const rest = doc.indexOf("\n## ", start + 1);
    doc = doc.slice(0, start + 1) + lines + (rest < 0 ? "" : doc.slice(rest));
  }
  await Deno.writeTextFile(path, doc);
}

if (import.meta.main) {
  const notes: string[] = [];
  const rows = await runStorageBench(notes);
  console.table(rows);
  console.log(notes.join("\n"));
  await writeStorageSection(rows, notes);
}
