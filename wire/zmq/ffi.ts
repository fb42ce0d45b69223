/**
 * Raw FFI bindings: libzmq.so.5 and the few libc calls the reactor needs (epoll, eventfd).
 *
 * Everything here is loaded lazily on first use so that importing `wire/zmq` costs nothing
 * (and needs no `--allow-ffi`) until a socket is actually created.
 *
 * @module
 */

/** Socket types as libzmq numbers them (zmq.h). */
export const SOCKET_TYPES = {
  PUB: 1,
  SUB: 2,
  DEALER: 5,
  ROUTER: 6,
  PULL: 7,
  PUSH: 8,
} as const;

/** Socket option numbers from zmq.h (only the ones dsys uses). */
export const OPT = {
  ROUTING_ID: 5,
  SUBSCRIBE: 6,
  UNSUBSCRIBE: 7,
  SNDBUF: 11,
  RCVBUF: 12,
  FD: 14,
  EVENTS: 15,
  LINGER: 17,
  RECONNECT_IVL: 18,
  BACKLOG: 19,
  RECONNECT_IVL_MAX: 21,
  MAXMSGSIZE: 22,
  SNDHWM: 23,
  RCVHWM: 24,
  LAST_ENDPOINT: 32,
  ROUTER_MANDATORY: 33,
  TCP_KEEPALIVE: 34,
  IMMEDIATE: 39,
  CURVE_SERVER: 47,
  CURVE_PUBLICKEY: 48,
  CURVE_SECRETKEY: 49,
  CURVE_SERVERKEY: 50,
  ZAP_DOMAIN: 55,
  ROUTER_HANDOVER: 56,
  HANDSHAKE_IVL: 66,
  HEARTBEAT_IVL: 75,
  HEARTBEAT_TTL: 76,
  HEARTBEAT_TIMEOUT: 77,
  CONNECT_TIMEOUT: 79,
  /** Draft API (libzmq >= 4.3): refuse CURVE peers when no ZAP handler answers. */
  ZAP_ENFORCE_DOMAIN: 93,
} as const;

/** Context option numbers (zmq_ctx_set). */
export const CTX_OPT = { IO_THREADS: 1, MAX_SOCKETS: 2, BLOCKY: 70 } as const;

/** Send/receive flags. */
export const ZMQ_DONTWAIT = 1;
/** More frames follow this one. */
export const ZMQ_SNDMORE = 2;
/** ZMQ_EVENTS bit: a message can be received without blocking. */
export const ZMQ_POLLIN = 1;
/** ZMQ_EVENTS bit: a message can be sent without blocking. */
export const ZMQ_POLLOUT = 2;

const HAUSNUMERO = 156384712;
/** errno values dsys reacts to (Linux numbering; libzmq's own ones are above HAUSNUMERO). */
export const ERRNO = {
  ENOENT: 2,
  EINTR: 4,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  ENOTSUP: 95,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  EFSM: HAUSNUMERO + 51,
  ENOCOMPATPROTO: HAUSNUMERO + 52,
  ETERM: HAUSNUMERO + 53,
  EMTHREAD: HAUSNUMERO + 54,
} as const;

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(ERRNO).map(([name, n]) => [n, name]),
);

/** Symbolic name of an errno value ("EAGAIN"), or "E<number>" when unknown. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

const zmqSymbols = {
  zmq_ctx_new: { parameters: [], result: "pointer" },
  zmq_ctx_term: { parameters: ["pointer"], result: "i32" },
  zmq_ctx_set: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  zmq_socket: { parameters: ["pointer", "i32"], result: "pointer" },
  zmq_close: { parameters: ["pointer"], result: "i32" },
  zmq_bind: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_unbind: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_connect: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_disconnect: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_setsockopt: { parameters: ["pointer", "i32", "buffer", "usize"], result: "i32" },
  zmq_getsockopt: { parameters: ["pointer", "i32", "buffer", "buffer"], result: "i32" },
  zmq_send: { parameters: ["pointer", "buffer", "usize", "i32"], result: "i32" },
  zmq_msg_init_data: {
    parameters: ["buffer", "pointer", "usize", "pointer", "pointer"],
    result: "i32",
  },
  zmq_msg_send: { parameters: ["buffer", "pointer", "i32"], result: "i32" },
  zmq_msg_init: { parameters: ["buffer"], result: "i32" },
  zmq_msg_close: { parameters: ["buffer"], result: "i32" },
  zmq_msg_move: { parameters: ["buffer", "buffer"], result: "i32" },
  zmq_msg_recv: { parameters: ["buffer", "pointer", "i32"], result: "i32" },
  zmq_msg_data: { parameters: ["buffer"], result: "pointer" },
  zmq_msg_size: { parameters: ["buffer"], result: "usize" },
  zmq_msg_more: { parameters: ["buffer"], result: "i32" },
  zmq_msg_gets: { parameters: ["buffer", "buffer"], result: "pointer" },
  zmq_errno: { parameters: [], result: "i32" },
  zmq_strerror: { parameters: ["i32"], result: "pointer" },
  zmq_version: { parameters: ["buffer", "buffer", "buffer"], result: "void" },
  zmq_curve_keypair: { parameters: ["buffer", "buffer"], result: "i32" },
  zmq_has: { parameters: ["buffer"], result: "i32" },
  zmq_z85_encode: { parameters: ["buffer", "buffer", "usize"], result: "pointer" },
  zmq_z85_decode: { parameters: ["buffer", "buffer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

const libcSymbols = {
  // The only call that may block for long: it runs on Deno's blocking thread pool and touches fds
  // only, never a zmq socket (libzmq sockets are not thread-safe). (epoll_pwait2 below blocks the
  // JS thread for at most the reactor's BRIEF_WAIT_US.)
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
  // epoll_ctl is safe to call while another thread sits in epoll_wait on the same set: that is
  // what lets the JS thread add a socket without waking the poll thread.
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  // Pins libzmq in memory (RTLD_NODELETE): Deno unloads FFI libraries at exit while libzmq's
  // I/O and reaper threads may still run, which crashed the process in our tests.
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  // errno of the JS thread for the libc calls above (glibc: thread-local int).
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

// Optional (glibc >= 2.35, Linux >= 5.11), loaded on its own so that its absence only turns the
// reactor's brief wait off: epoll_wait with a nanosecond timeout, called on the JS thread.
const pwait2Symbols = {
  epoll_pwait2: { parameters: ["i32", "buffer", "i32", "buffer", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libzmq symbol table. */
export type Zmq = Deno.DynamicLibrary<typeof zmqSymbols>["symbols"];
/** The libc symbol table. */
export type Libc = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

let zmqLib: Deno.DynamicLibrary<typeof zmqSymbols> | undefined;
let libcLib: Deno.DynamicLibrary<typeof libcSymbols> | undefined;

/**
 * Library names tried in order; the first is the Debian runtime package's soname. The single-file
 * package (scripts/package.sh) sets `$DSYS_ZMQ_LIB` to the copy it carries, which is then the
 * only one tried: falling back to a system copy would hide a broken package.
 */
function zmqNames(): string[] {
  const packaged = Deno.env.get("DSYS_ZMQ_LIB");
  return packaged ? [packaged] : ["libzmq.so.5", "libzmq.so"];
}

const RTLD_LAZY = 0x1;
const RTLD_NODELETE = 0x1000;

/** libzmq symbols, loading the library on first use. */
export function zmq(): Zmq {
  if (zmqLib) return zmqLib.symbols;
  let lastError: unknown;
  const names = zmqNames();
  for (const name of names) {
    try {
      if (!libc().dlopen(cstr(name), RTLD_LAZY | RTLD_NODELETE)) continue;
      zmqLib = Deno.dlopen(name, zmqSymbols);
      return zmqLib.symbols;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(
    `cannot load libzmq (${names.join(", ")}): install libzmq5 (scripts/bootstrap.sh): ` +
      String(lastError),
  );
}

/** libc symbols, loading the library on first use. */
export function libc(): Libc {
  if (!libcLib) libcLib = Deno.dlopen("libc.so.6", libcSymbols);
  return libcLib.symbols;
}

let pwait2Lib: Deno.DynamicLibrary<typeof pwait2Symbols> | null | undefined;

/** libc's epoll_pwait2, or null where this libc lacks it. */
export function epollPwait2(): Deno.DynamicLibrary<typeof pwait2Symbols>["symbols"] | null {
  if (pwait2Lib === undefined) {
    try {
      pwait2Lib = Deno.dlopen("libc.so.6", pwait2Symbols);
    } catch {
      pwait2Lib = null;
    }
  }
  return pwait2Lib?.symbols ?? null;
}

/** errno of the calling (JS) thread after a failed libc call. */
export function libcErrno(): number {
  const p = libc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** NUL-terminated C string for FFI "buffer" parameters. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** libzmq's message for an errno (zmq_strerror). */
export function strerror(errno: number): string {
  const p = zmq().zmq_strerror(errno);
  return p ? Deno.UnsafePointerView.getCString(p) : `errno ${errno}`;
}
