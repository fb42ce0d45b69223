/**
 * Storage role: serves the content-addressed file store (store.ts) on one ROUTER.
 * Requests: file_put, file_request, file_stat, storage_stats_request; anything else is
 * answered WRONG_ROLE.
 * @module
 */
import { parseArgs } from "node:util";
import {
  SECURITY_FLAGS,
  type SecurityOptions,
  securityOptions,
  setUpNodeSecurity,
} from "../../lib/node_security.ts";
import { ErrorCode, type Message, MessageType, uuidToString } from "../../wire/mod.ts";
import { RequestError, RpcServer } from "../../lib/rpc.ts";
import { createLogger, type Logger } from "../../lib/log.ts";
import { loadOrCreateNodeId } from "../../lib/node_id.ts";
import { FileStore } from "./store.ts";

/** Options of a storage node. */
export interface StorageOptions {
  /** ZeroMQ endpoint to bind, e.g. `tcp://127.0.0.1:0`. */
  listen: string;
  /** Data directory (node id, files, uploads in progress). */
  data: string;
  /** Largest file_response payload, bytes (default 4 MiB). */
  maxReadBytes?: number;
  /** Upload bytes held in memory before chunks are refused UNAVAILABLE (default 256 MiB). */
  maxQueuedBytes?: number;
  /** Logger; by default JSON lines on stderr. */
  log?: Logger;
  /** Keys (`--key`, `--keyring`) or `--insecure`. */
  security?: SecurityOptions;
}

/** A running storage node. */
export interface StorageNode {
  /** The bound endpoint (actual port when 0 / `*` was asked for). */
  endpoint: string;
  nodeId: Uint8Array;
  store: FileStore;
  /** Stops serving and closes the store. */
  close(): Promise<void>;
}

/** Raised for bad command-line arguments of the storage role. */
export class StorageArgsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageArgsError";
  }
}

/** Parses `--listen EP --data DIR [--max-read-bytes N] [--max-queued-bytes N]`. */
export function parseStorageArgs(args: string[]): StorageOptions {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "tcp://127.0.0.1:0" },
      data: { type: "string" },
      "max-read-bytes": { type: "string" },
      "max-queued-bytes": { type: "string" },
      role: { type: "string" },
      ...SECURITY_FLAGS,
    },
    strict: true,
  });
  if (!values.data) throw new StorageArgsError("storage: --data DIR is required");
  const opts: StorageOptions = {
    listen: values.listen!,
    data: values.data,
    security: securityOptions(values),
  };
  const size = (flag: "max-read-bytes" | "max-queued-bytes"): number | undefined => {
    const v = values[flag];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new StorageArgsError(`storage: bad --${flag} ${v}: want a positive byte count`);
    }
    return n;
  };
  opts.maxReadBytes = size("max-read-bytes");
  opts.maxQueuedBytes = size("max-queued-bytes");
  return opts;
}

/** Starts a storage node: opens the store in `opts.data`, binds `opts.listen`. */
export async function runStorage(opts: StorageOptions): Promise<StorageNode> {
  await Deno.mkdir(opts.data, { recursive: true });
  const nodeId = await loadOrCreateNodeId(opts.data);
  const nodeName = uuidToString(nodeId);
  const log = opts.log ?? createLogger("storage", nodeName);
  await setUpNodeSecurity("storage", opts.security ?? {}, opts.listen, log);
  const store = await FileStore.open({
    dir: opts.data,
    node: nodeId,
    nodeName,
    log,
    maxReadBytes: opts.maxReadBytes,
    maxQueuedBytes: opts.maxQueuedBytes,
  });
  const handler = (msg: Message): Promise<Message> | Message => {
    switch (msg.type) {
      case MessageType.FilePut:
        return store.put(msg);
      case MessageType.FileRequest:
        return store.get(msg);
      case MessageType.FileStat:
        return store.stat(msg.file);
      case MessageType.StorageStatsRequest:
        return store.stats();
      default:
        throw new RequestError(
          ErrorCode.WrongRole,
          `message type ${msg.type} is not served by storage node ${nodeName}`,
        );
    }
  };
  const server = new RpcServer({ node: nodeId, log, handler });
  let endpoint: string;
  try {
    endpoint = server.bind(opts.listen);
  } catch (e) {
    await server.close();
    await store.close();
    throw e;
  }
  log.info("storage listening", { endpoint, data: opts.data });
  let closing: Promise<void> | null = null;
  return {
    endpoint,
    nodeId,
    store,
    close: () =>
      closing ??= (async () => {
        await server.close();
        await store.close();
      })(),
  };
}
