/**
 * One reactor per process. It waits on the ZMQ_FD of every socket that has a pending
 * operation, plus an eventfd used as a wake-up, with libc epoll_wait(2) called through a
 * `nonblocking` FFI symbol, i.e. on Deno's blocking thread pool. That thread only waits on
 * file descriptors; every zmq_* call stays on the JS thread (libzmq sockets are not
 * thread-safe).
 *
 * epoll rather than poll(2): the JS thread can add a socket's fd with epoll_ctl while the
 * wait is in flight, so a new waiter costs one syscall instead of waking the poll thread and
 * rebuilding an fd array; and a socket's fd can be removed before zmq_close without racing
 * the waiting thread.
 *
 * The wait is in flight only while some socket has a pending receive/send, so idle or closed
 * sockets never keep the process alive.
 *
 * Brief wait: handing a wait to the pool costs two thread hops more than Node's zeromq.js, which
 * waits in libuv's own epoll on the main thread (docs/benchmarks.md, "ZeroMQ": ~6 context
 * switches per round trip instead of ~4). So when an answer is likely to come soon, the JS thread
 * first waits itself, in the kernel (epoll_pwait2, at most {@linkcode BRIEF_WAIT_US}), after
 * letting the continuations of what it just completed run. libzmq's I/O thread then wakes it
 * directly. While it waits nothing else on the event loop runs (timers, file I/O completions), so
 * the wait is adaptive: one that times out means the process is waiting for something else, and
 * the next 1, 2, 4, ... 64 waits go straight to the pool; one that is answered resets that.
 * Spinning instead (polling without sleeping) was measured and is worse on shared cores.
 *
 * @module
 */

import { epollPwait2, libc, libcErrno } from "./ffi.ts";

/** What a pollable needs next, as returned by {@linkcode Pollable.service}. */
export const Need = {
  /** Nothing pending: stop watching. */
  Idle: 0,
  /** Pending work: wait until the fd signals. */
  Wait: 1,
  /**
   * Pending work the fd may not signal (a ROUTER reports POLLOUT while the pipe of the wanted
   * peer is full): wait for the fd but also retry after a short timeout.
   */
  Retry: 2,
} as const;
/** One of the {@linkcode Need} values. */
export type Need = typeof Need[keyof typeof Need];

/** Something the reactor can wait for: a socket with an edge-triggered notification fd. */
export interface Pollable {
  /** Process-unique positive number (epoll user data). */
  readonly id: number;
  /** The fd whose readability means "state may have changed" (ZMQ_FD). */
  readonly fd: number;
  /**
   * Does all the work that can be done now without blocking and tells what is left.
   * Must not throw (errors go to the pending operations).
   */
  service(): Need;
  /** Called when the fd fired while nothing was pending: re-arm it (ZMQ_EVENTS). */
  reset(): void;
}

const EPOLLIN = 1;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EINTR = 4;
const ENOSYS = 38;
/** epoll user data of the wake-up eventfd (sockets use their id >= 1). */
const WAKE_ID = 0;
/** struct epoll_event is packed on x86-64: u32 events, u64 data. */
const EVENT_SIZE = 12;
const MAX_EVENTS = 256;
/** ms between retries in the {@linkcode Need.Retry} case: rare (one slow ROUTER peer). */
const RETRY_MS = 2;
/**
 * Longest brief wait on the JS thread, µs: a loopback request/response between two processes
 * on a loaded machine takes ~100-250 µs, so most answers arrive within it.
 */
export const BRIEF_WAIT_US = 300;
/** Most waits that go straight to the pool after brief waits kept timing out. */
export const BRIEF_WAIT_MAX_SKIP = 64;
/** Microtask turns granted to continuations before a brief wait (rpc chains are a few deep). */
const BRIEF_WAIT_TURNS = 4;

class Reactor {
  /** Completed epoll_wait calls (a cheap counter for benchmarks and tests). */
  waits = 0;
  /** Brief waits on the JS thread that an event ended (the rest timed out, see the module doc). */
  briefHits = 0;
  /** Brief waits that timed out. */
  briefMisses = 0;
  /** Waits to hand straight to the pool, and the next such run's length (adaptive back-off). */
  #briefSkip = 0;
  #briefBackoff = 1;
  /** False where libc has no epoll_pwait2. */
  #briefOk = true;
  /** struct timespec {tv_sec, tv_nsec} of the brief wait. */
  #ts = new BigInt64Array([0n, BigInt(BRIEF_WAIT_US * 1000)]);
  #tsBytes = new Uint8Array(this.#ts.buffer);
  /** Pollables with pending work: the wait is in flight while this is non-empty. */
  #watched = new Map<number, Pollable>();
  /**
   * Pollables whose fd is in the epoll set. A socket stays registered while idle (until
   * closed) so that the next wait costs no epoll_ctl; if its fd fires meanwhile, reset().
   */
  #registered = new Map<number, Pollable>();
  #retry = new Set<Pollable>();
  #running = false;
  #waiting = false;
  #waitTimeout = -1;
  #epfd = -1;
  #wakeFd = -1;
  #wakePending = false;
  #idleWaiters: (() => void)[] = [];
  #events = new Uint8Array(MAX_EVENTS * EVENT_SIZE);
  #eventsView = new DataView(this.#events.buffer);
  #ctl = new Uint8Array(EVENT_SIZE);
  #ctlView = new DataView(this.#ctl.buffer);
  #one = new Uint8Array(new BigUint64Array([1n]).buffer);
  #scratch = new Uint8Array(8);
  #ready: Pollable[] = [];

  /** Records what `p` needs after its latest service() and (un)watches it accordingly. */
  update(p: Pollable, need: Need): void {
    if (need === Need.Idle) {
      this.#unwatch(p);
      return;
    }
    if (need === Need.Retry) {
      this.#retry.add(p);
      // A wait without timeout is in flight: wake it so the next one uses RETRY_MS.
      if (this.#waiting && this.#waitTimeout < 0) this.#wake();
    } else {
      this.#retry.delete(p);
    }
    if (!this.#registered.has(p.id)) {
      this.#setup();
      this.#ctlOp(EPOLL_CTL_ADD, p.fd, p.id);
      this.#registered.set(p.id, p);
    }
    this.#watched.set(p.id, p);
    if (!this.#running) this.#run();
  }

  /** Drops `p` for good (before its fd is closed): out of the epoll set, no more callbacks. */
  forget(p: Pollable): void {
    this.#unwatch(p);
    if (this.#registered.delete(p.id)) this.#ctlOp(EPOLL_CTL_DEL, p.fd, p.id);
  }

  /** Resolves when no wait is in flight and nothing is watched (for tests and shutdown). */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Closes the epoll and wake-up fds (only when idle; they are re-created on demand). */
  closeFds(): void {
    if (this.#running || this.#registered.size > 0) return;
    if (this.#epfd >= 0) libc().close(this.#epfd);
    if (this.#wakeFd >= 0) libc().close(this.#wakeFd);
    this.#epfd = this.#wakeFd = -1;
  }

  #unwatch(p: Pollable): void {
    this.#retry.delete(p);
    if (!this.#watched.delete(p.id)) return;
    // Nothing left to wait for: let the in-flight wait return so the process may exit.
    if (this.#watched.size === 0 && this.#waiting) this.#wake();
  }

  #wake(): void {
    if (this.#wakePending) return;
    this.#wakePending = true;
    libc().write(this.#wakeFd, this.#one, 8n);
  }

  async #run(): Promise<void> {
    this.#running = true;
    const lc = libc();
    const ready = this.#ready;
    try {
      while (this.#watched.size > 0) {
        let n = this.#retry.size === 0 ? await this.#briefWait() : 0;
        // The continuations that ran meanwhile may have finished everything.
        if (this.#watched.size === 0) break;
        if (n <= 0) {
          this.#waitTimeout = this.#retry.size > 0 ? RETRY_MS : -1;
          this.#waiting = true;
          n = await lc.epoll_wait(this.#epfd, this.#events, MAX_EVENTS, this.#waitTimeout);
          this.#waiting = false;
        }
        this.waits++;
        if (n < 0 && libcErrno() !== EINTR) {
          // Not expected (the fds stay valid): back off instead of spinning.
          await new Promise((r) => setTimeout(r, 10));
        }
        ready.length = 0;
        for (let i = 0; i < n; i++) {
          const id = this.#eventsView.getUint32(i * EVENT_SIZE + 4, true);
          if (id === WAKE_ID) continue;
          const p = this.#watched.get(id);
          if (p) ready.push(p);
          else this.#registered.get(id)?.reset();
        }
        for (const p of this.#retry) if (!ready.includes(p)) ready.push(p);
        if (this.#wakePending) {
          lc.read(this.#wakeFd, this.#scratch, 8n);
          this.#wakePending = false;
        }
        for (const p of ready) {
          // Skip sockets closed since epoll_wait collected their event.
          if (this.#watched.get(p.id) === p) this.update(p, p.service());
        }
        ready.length = 0;
      }
    } finally {
      this.#running = false;
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** The brief wait of the module doc; returns its event count, or 0 to wait on the pool. */
  async #briefWait(): Promise<number> {
    if (!this.#briefOk) return 0;
    if (this.#briefSkip > 0) {
      this.#briefSkip--;
      return 0;
    }
    for (let i = 0; i < BRIEF_WAIT_TURNS; i++) await null;
    if (this.#watched.size === 0 || this.#retry.size > 0) return 0;
    const pw = epollPwait2();
    if (!pw) {
      this.#briefOk = false;
      return 0;
    }
    const n = pw.epoll_pwait2(this.#epfd, this.#events, MAX_EVENTS, this.#tsBytes, null);
    if (n > 0) {
      this.briefHits++;
      this.#briefBackoff = 1;
      return n;
    }
    if (n < 0 && libcErrno() === ENOSYS) {
      this.#briefOk = false; // an old kernel
      return 0;
    }
    this.briefMisses++;
    this.#briefSkip = this.#briefBackoff;
    this.#briefBackoff = Math.min(this.#briefBackoff * 2, BRIEF_WAIT_MAX_SKIP);
    return 0;
  }

  #setup(): void {
    if (this.#epfd >= 0) return;
    const lc = libc();
    const ep = lc.epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) throw new Error(`epoll_create1 failed for the zmq reactor: errno ${libcErrno()}`);
    const wfd = lc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wfd < 0) {
      lc.close(ep);
      throw new Error(`eventfd failed for the zmq reactor: errno ${libcErrno()}`);
    }
    this.#epfd = ep;
    this.#wakeFd = wfd;
    this.#ctlOp(EPOLL_CTL_ADD, wfd, WAKE_ID);
  }

  #ctlOp(op: number, fd: number, id: number): void {
    const v = this.#ctlView;
    v.setUint32(0, EPOLLIN, true);
    v.setUint32(4, id, true);
    v.setUint32(8, 0, true);
    if (libc().epoll_ctl(this.#epfd, op, fd, this.#ctl) !== 0) {
      throw new Error(`epoll_ctl(${op}) of fd ${fd} (socket #${id}) failed: errno ${libcErrno()}`);
    }
  }
}

/** The process-wide reactor shared by all sockets. */
export const reactor: Reactor = new Reactor();
