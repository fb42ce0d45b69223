/**
 * Zero-copy frames: on receive by default from {@linkcode LARGE_FRAME} bytes on
 * (SocketOptions.zeroCopyRecvMin changes it), on send opt-in per socket
 * (SocketOptions.zeroCopySendMin; lib/rpc.ts's sockets opt in, see RPC_SOCKET_OPTIONS).
 *
 * Receive: a large frame is returned as a view of libzmq's own buffer; the zmq_msg_t is moved
 * into a holder that a FinalizationRegistry closes once the frame's ArrayBuffer is collected.
 * Deno cannot attach a deleter to such a buffer, so the memory follows the *original*
 * ArrayBuffer object: transferring/detaching it (structuredClone transfer, postMessage,
 * ArrayBuffer.prototype.transfer, BYOB reads) would leave the new owner dangling. No dsys code
 * does that; a receiver that must, copies the frame first or sets zeroCopyRecvMin to Infinity.
 * Below LARGE_FRAME, libzmq's decoder may place several messages in one shared buffer that a
 * view would pin, and a copy is cheap anyway.
 *
 * Send: zmq_msg_init_data points libzmq at the caller's bytes. libzmq releases them on its
 * I/O thread through a free function `ffn(data, hint)`; a JS callback there would block that
 * thread on the JS event loop, so the free function is glibc's
 * `pthread_attr_getdetachstate(attr, int*)`: it reads one int inside `data` and stores 0 or 1
 * at `hint`, nothing else. `hint` points into {@linkcode flags}; JS sees the store and drops its
 * reference to the frame. Callers that opt in must not modify a frame after sending it (not a
 * default: a caller reusing a buffer would put corrupted frames on the wire without an error).
 *
 * @module
 */

import { cstr, libc, zmq } from "./ffi.ts";

/** Smallest frame eligible for zero-copy (the release function reads bytes 8..11 of it). */
export const ZERO_COPY_FLOOR = 64;
/**
 * Frames from this size on skip copies where that is safe: received ones by default, sent ones
 * on sockets that opt in. Below it the copy costs less than the bookkeeping.
 */
export const LARGE_FRAME = 65536;

const registry = new FinalizationRegistry<Uint8Array<ArrayBuffer>>((holder) => {
  zmq().zmq_msg_close(holder);
});

/**
 * Moves the received message in `msg` (n bytes) into its own holder and returns a view of its
 * data that keeps it alive; `msg` is left empty.
 */
export function adoptReceived(msg: Uint8Array<ArrayBuffer>, n: number): Uint8Array {
  const z = zmq();
  const holder = new Uint8Array(new BigUint64Array(8).buffer);
  z.zmq_msg_init(holder);
  z.zmq_msg_move(holder, msg);
  const ab = Deno.UnsafePointerView.getArrayBuffer(z.zmq_msg_data(holder)!, n);
  registry.register(ab, holder);
  return new Uint8Array(ab);
}

const SLOTS = 1 << 16;
/** Written before a send; the release function overwrites it with 0 or 1. */
const PENDING = 0x5a5a5a5a;
const SWEEP_MS = 50;

class SendReleases {
  readonly flags = new Int32Array(SLOTS);
  #base = Deno.UnsafePointer.of(this.flags)!;
  #held: (Uint8Array | undefined)[] = new Array(SLOTS);
  #free: number[] = [];
  /** Slots in use, oldest first (libzmq mostly releases in send order). */
  #order: number[] = [];
  #orderHead = 0;
  #ffn: Deno.PointerValue = null;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor() {
    for (let i = SLOTS - 1; i >= 0; i--) this.#free.push(i);
  }

  /** The release function's address (glibc pthread_attr_getdetachstate). */
  ffn(): Deno.PointerValue {
    if (!this.#ffn) {
      this.#ffn = libc().dlsym(null, cstr("pthread_attr_getdetachstate"));
      if (!this.#ffn) throw new Error("dlsym(pthread_attr_getdetachstate) failed");
    }
    return this.#ffn;
  }

  /** Reserves a slot for one frame and returns it, or -1 if all are in flight. */
  acquire(): number {
    this.sweep();
    const slot = this.#free.pop();
    if (slot === undefined) return -1;
    this.flags[slot] = PENDING;
    return slot;
  }

  /** Address libzmq writes to when it releases the frame of `slot`. */
  hint(slot: number): Deno.PointerValue {
    return Deno.UnsafePointer.offset(this.#base, slot * 4);
  }

  /** libzmq owns the frame now: keep it alive until released. */
  hold(slot: number, frame: Uint8Array): void {
    this.#held[slot] = frame;
    this.#order.push(slot);
    if (this.#timer === undefined) {
      const timer = setInterval(() => this.sweep(), SWEEP_MS);
      // Bookkeeping only: must not keep the process alive.
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** The send failed and the message was closed: the slot is free again. */
  cancel(slot: number): void {
    this.#free.push(slot);
  }

  /** Drops references to frames libzmq has released (oldest first). */
  sweep(): void {
    const order = this.#order;
    while (this.#orderHead < order.length) {
      const slot = order[this.#orderHead];
      if (Atomics.load(this.flags, slot) === PENDING) break;
      this.#held[slot] = undefined;
      this.#free.push(slot);
      this.#orderHead++;
    }
    if (this.#orderHead === order.length) {
      order.length = 0;
      this.#orderHead = 0;
      if (this.#timer !== undefined) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    } else if (this.#orderHead > 4096) {
      order.splice(0, this.#orderHead);
      this.#orderHead = 0;
    }
  }

  /** Frames still referenced because libzmq has not released them. */
  get inFlight(): number {
    return this.#order.length - this.#orderHead;
  }
}

/** Process-wide bookkeeping of zero-copy sends. */
export const sendReleases: SendReleases = new SendReleases();
