/**
 * A storage node's metrics (`--metrics-listen`): what it holds and what passes through it, read
 * from the store at scrape time, and each request's latency, timed around the node's handler.
 * The names are listed in docs/operations.md, "What to watch".
 */
import { LATENCY_BUCKETS_SECONDS, type Registry } from "../../lib/metrics.ts";
import type { Handler } from "../../lib/rpc.ts";
import { MessageType } from "../../wire/mod.ts";
import type { FileStore } from "./store.ts";
import type { StorageTierMember } from "./tier_member.ts";

const OPS: Record<number, "put" | "get" | "stat"> = {
  [MessageType.FilePut]: "put",
  [MessageType.FileRequest]: "get",
  [MessageType.FileStat]: "stat",
};

/** Declares the storage series on `registry`; returns `handler` with each request timed. */
export function instrumentStorage(registry: Registry, store: FileStore, handler: Handler): Handler {
  const stored = registry.gauge("dsys_storage_stored_bytes", "Bytes of the files stored here.");
  const files = registry.gauge("dsys_storage_files", "Files stored here.");
  const putBytes = registry.counter(
    "dsys_storage_put_bytes_total",
    "File bytes received in file_put chunks.",
  );
  const getBytes = registry.counter(
    "dsys_storage_get_bytes_total",
    "File bytes sent in file_response chunks.",
  );
  const spec = { op: ["put", "get", "stat"], result: ["ok", "error"] };
  const requests = registry.counter(
    "dsys_storage_requests_total",
    "Requests served (one per chunk of a put or get), by operation and result.",
    spec,
  );
  const seconds = registry.histogram(
    "dsys_storage_request_seconds",
    "Time to serve one request (a put chunk: until durable; a get chunk: read and verified).",
    LATENCY_BUCKETS_SECONDS,
    { op: spec.op },
  );
  registry.onCollect(() => {
    stored.set(store.storedBytes);
    files.set(store.files);
    putBytes.setTotal(store.counters.putBytes);
    getBytes.setTotal(store.counters.getBytes);
  });
  return async (msg, peer, from) => {
    const op = OPS[msg.type];
    if (!op) return await handler(msg, peer, from);
    const t0 = performance.now();
    let result: "ok" | "error" = "error";
    try {
      const reply = await handler(msg, peer, from);
      result = "ok";
      return reply;
    } finally {
      requests.inc({ op, result });
      seconds.observe((performance.now() - t0) / 1000, { op });
    }
  };
}

/** Declares the storage tier's series of a node started with `--masters` (repair, scrub, deletion). */
export function instrumentTier(registry: Registry, member: StorageTierMember): void {
  const shortFiles = registry.gauge(
    "dsys_storage_under_replicated_files",
    "Files held here with fewer healthy replicas than they should have, as of the last repair scan.",
  );
  const shortBytes = registry.gauge(
    "dsys_storage_under_replicated_bytes",
    "Bytes of those files.",
  );
  const copies = registry.counter(
    "dsys_storage_repair_copies_total",
    "Replicas this node copied to other nodes (repair).",
  );
  const copied = registry.counter(
    "dsys_storage_repair_copied_bytes_total",
    "Bytes of the replicas this node copied to other nodes.",
  );
  const surplus = registry.counter(
    "dsys_storage_surplus_replicas_deleted_total",
    "Replicas deleted here because every node the file belongs on holds it.",
  );
  const scrubbed = registry.counter(
    "dsys_storage_scrub_bytes_total",
    "Bytes re-read and verified by the scrub.",
  );
  const corrupt = registry.counter(
    "dsys_storage_scrub_corrupt_total",
    "Corrupt replicas the scrub found (and deleted, for repair to replace).",
  );
  const collected = registry.counter(
    "dsys_storage_deleted_files_total",
    "Replicas deleted here because the cluster deleted their file.",
  );
  registry.onCollect(() => {
    const r = member.repair.stats;
    shortFiles.set(r.underReplicatedFiles);
    shortBytes.set(r.underReplicatedBytes);
    copies.setTotal(r.copies);
    copied.setTotal(r.copiedBytes);
    surplus.setTotal(r.dropped);
    scrubbed.setTotal(member.scrub?.stats.bytesChecked ?? 0);
    corrupt.setTotal(member.scrub?.stats.corruptFound ?? 0);
    collected.setTotal(member.collected);
  });
}
