/**
 * How a node's I/O shell talks to other nodes, behind interfaces small enough for the
 * deterministic simulator (tests/sim/) to implement: a {@link RequestChannel} to one endpoint
 * (a ZeroMQ DEALER in production: {@link RpcClient}), made by a {@link Dial} function, and the
 * {@link PushServer} side of a ROUTER that sends requests back to connected clients (the
 * balancer's pushes to workers). Production code takes a `dial` (default {@link dialZmq}) instead
 * of constructing RpcClient itself.
 * @module
 */
import type { Message } from "../wire/mod.ts";
import { RpcClient, type RpcClientOptions } from "./rpc.ts";

/** Requests to one endpoint; many in flight, each answered or failed (RpcError) once. */
export interface RequestChannel {
  /** The endpoint dialled (`[NAME@]tcp://HOST:PORT`). */
  readonly endpoint: string;
  /** Sends a request and resolves with the reply; an `error` reply rejects with RpcError. */
  request(msg: Message, timeoutMs?: number): Promise<Message>;
  /** Sends a one-way message (no reply expected). */
  send(msg: Message): Promise<void>;
  /** Fails what is in flight and releases the channel. */
  close(): Promise<void>;
}

/** Makes a channel to `endpoint` (throws if the endpoint or its key is unusable). */
export type Dial = (endpoint: string, opts: RpcClientOptions) => RequestChannel;

/** Dials over ZeroMQ (CURVE unless `opts.auth` is null). */
export const dialZmq: Dial = (endpoint, opts) => new RpcClient(endpoint, opts);

/** The pushing side of a server: a request sent to a connected client by its routing id. */
export interface PushServer {
  /** Sends `msg` to the client `peer` and resolves with its reply. */
  push(peer: Uint8Array, msg: Message, timeoutMs?: number): Promise<Message>;
}
