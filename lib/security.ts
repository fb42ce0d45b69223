/**
 * Cluster identity: CURVE keypairs, the keyring that maps public keys to roles, and the
 * credentials a process runs with (docs/architecture.md, "Security model").
 *
 * Every node and every client has its own CURVE keypair. The keyring is one text file, the
 * same on every node, one key per line:
 *
 * ```text
 * # role     name   public key (Z85, 40 chars)                  flags
 * master     m1     rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
 * client     alice  Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID    admin
 * ```
 *
 * A connection is let in by the ZAP handler only when its key is on the keyring; the key's line
 * then decides what the peer may send (wire/messages.ts `senders`) and which jobs and files are
 * its own. Nodes re-read the keyring when the file changes, so adding or revoking a key is an
 * edit of that one file (`dsys keys add|revoke`), and a revoked key is refused on its next
 * message, not only on its next handshake.
 *
 * @module
 */
import { curveKeypair, z85Decode, z85Encode, ZapHandler } from "../wire/zmq/mod.ts";
import type { SenderRole } from "../wire/mod.ts";
import { Buffer } from "node:buffer";
import { splitNamedEndpoint } from "./named_endpoint.ts";
import type { Logger } from "./log.ts";

/** Roles a key can have. */
export type Role = "master" | "balancer" | "storage" | "worker" | "client";
/** Every role, in keyring order. */
export const ROLES: readonly Role[] = ["master", "balancer", "storage", "worker", "client"];
/** Roles that hold the cluster secret (they mint and check tickets and file capabilities). */
export const SECRET_ROLES: readonly Role[] = ["master", "balancer", "storage"];

/** The ZAP domain every dsys server socket authenticates in. */
export const ZAP_DOMAIN = "dsys";

/** One line of the keyring: who a public key is. */
export interface Identity {
  /** The key's role. */
  readonly role: Role;
  /** Node name (`m1`, `w3`) or, for clients, the user name. Unique in the keyring. */
  readonly name: string;
  /** Z85 text of the 32-byte CURVE public key. */
  readonly publicKey: string;
  /** Clients only: may act on every user's jobs and files and change the cluster. */
  readonly admin: boolean;
}

/** A keyring problem: the file's line and what is wrong with it. */
export class KeyringError extends Error {
  /** 1-based line number (0 when not about one line). */
  readonly line: number;
  constructor(line: number, message: string) {
    super(line ? `keyring line ${line}: ${message}` : `keyring: ${message}`);
    this.name = "KeyringError";
    this.line = line;
  }
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** The keyring: public key -> identity; immutable, replaced as a whole on reload. */
export class Keyring {
  readonly #byKey = new Map<string, Identity>();
  readonly #byName = new Map<string, Identity>();

  /** Builds a keyring from identities; names and keys must be unique. */
  constructor(ids: Iterable<Identity> = []) {
    let n = 0;
    for (const id of ids) this.#add(id, ++n);
  }

  /** Checks and adds one identity; `line` is where it came from, for the error. */
  #add(id: Identity, line: number): void {
    if (!ROLES.includes(id.role)) throw new KeyringError(line, `unknown role "${id.role}"`);
    if (!NAME_RE.test(id.name)) throw new KeyringError(line, `bad name "${id.name}"`);
    const raw = z85Decode(id.publicKey);
    if (!raw || raw.length !== 32) {
      throw new KeyringError(line, `"${id.publicKey}" is not a Z85 CURVE public key`);
    }
    if (this.#byKey.has(id.publicKey)) throw new KeyringError(line, "key listed twice");
    if (this.#byName.has(id.name)) throw new KeyringError(line, `name "${id.name}" taken`);
    if (id.admin && id.role !== "client") {
      throw new KeyringError(line, "only client keys can be admin");
    }
    const frozen = Object.freeze({ ...id });
    this.#byKey.set(id.publicKey, frozen);
    this.#byName.set(id.name, frozen);
  }

  /** Parses keyring text (see the module doc); throws KeyringError with the file's line. */
  static parse(text: string): Keyring {
    const ring = new Keyring();
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      // Comments are whole lines: Z85 keys may contain '#'.
      const t = lines[i].trim();
      if (!t || t.startsWith("#")) continue;
      const [role, name, publicKey, ...flags] = t.split(/\s+/);
      if (!publicKey) throw new KeyringError(i + 1, "expected: ROLE NAME PUBLIC_KEY [admin]");
      for (const f of flags) {
        if (f !== "admin") throw new KeyringError(i + 1, `unknown flag "${f}"`);
      }
      ring.#add({ role: role as Role, name, publicKey, admin: flags.includes("admin") }, i + 1);
    }
    return ring;
  }

  /** The keyring as text, one key per line (parse(toText()) is the same keyring). */
  toText(): string {
    const rows = [...this.#byKey.values()].map((id) =>
      `${id.role.padEnd(9)} ${id.name.padEnd(12)} ${id.publicKey}${id.admin ? " admin" : ""}`
    );
    return `# dsys keyring: ROLE NAME PUBLIC_KEY [admin]\n${rows.join("\n")}\n`;
  }

  /** The identity of a Z85 public key. */
  byKey(publicKey: string): Identity | undefined {
    return this.#byKey.get(publicKey);
  }

  /** The identity with this name. */
  byName(name: string): Identity | undefined {
    return this.#byName.get(name);
  }

  /** Every identity of a role. */
  ofRole(role: Role): Identity[] {
    return [...this.#byKey.values()].filter((id) => id.role === role);
  }

  /** Every identity. */
  all(): Identity[] {
    return [...this.#byKey.values()];
  }

  /** A keyring with `id` added (name and key must be new). */
  with(id: Identity): Keyring {
    return new Keyring([...this.all(), id]);
  }

  /** A keyring without the key named `name`; unknown names throw. */
  without(name: string): Keyring {
    if (!this.#byName.has(name)) throw new KeyringError(0, `no key named "${name}"`);
    return new Keyring(this.all().filter((id) => id.name !== name));
  }
}

/** A key file: one identity with its secret key (and, for server roles, the cluster secret). */
export interface KeyFile {
  /** Identity name. */
  name: string;
  /** Identity role. */
  role: Role;
  /** Z85 public key. */
  publicKey: string;
  /** Z85 secret key. */
  secretKey: string;
  /** Hex of the 32-byte cluster secret (masters, balancers, storage only). */
  clusterSecret?: string;
}

/** A fresh CURVE keypair for `name` with `role`. */
export function newKeyFile(name: string, role: Role, clusterSecret?: Uint8Array): KeyFile {
  const kp = curveKeypair();
  const f: KeyFile = { name, role, publicKey: kp.publicKey, secretKey: kp.secretKey };
  if (clusterSecret && SECRET_ROLES.includes(role)) f.clusterSecret = toHex(clusterSecret);
  return f;
}

/** Parses and checks a key file's JSON. */
export function parseKeyFile(text: string, path = "key file"): KeyFile {
  let v: Partial<KeyFile>;
  try {
    v = JSON.parse(text);
  } catch {
    throw new KeyringError(0, `${path} is not JSON`);
  }
  if (typeof v.name !== "string" || !ROLES.includes(v.role as Role)) {
    throw new KeyringError(0, `${path}: needs "name" and a "role" of ${ROLES.join(", ")}`);
  }
  for (const k of ["publicKey", "secretKey"] as const) {
    const raw = typeof v[k] === "string" ? z85Decode(v[k]!) : null;
    if (!raw || raw.length !== 32) throw new KeyringError(0, `${path}: bad ${k}`);
  }
  if (v.clusterSecret !== undefined && !/^[0-9a-f]{64}$/.test(v.clusterSecret)) {
    throw new KeyringError(0, `${path}: clusterSecret must be 64 hex digits`);
  }
  return v as KeyFile;
}

/** Writes a key file readable by its owner only. */
export async function writeKeyFile(path: string, key: KeyFile): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(key, null, 2) + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600);
}

/** Where a server socket's peer connects: endpoint plus the server's public key. */
export interface ServerAddress {
  /** ZeroMQ endpoint without the name (`tcp://HOST:PORT`). */
  endpoint: string;
  /** The server's Z85 public key. */
  serverKey: string;
}

/**
 * What a process runs with: its own key, the keyring (re-read when its file changes) and,
 * for masters, balancers and storage nodes, the cluster secret.
 */
export class Credentials {
  /** This process's key. */
  readonly self: KeyFile;
  /** The cluster secret's bytes, when this role holds it. */
  readonly clusterSecret: Uint8Array | undefined;
  #keyring: Keyring;
  #path: string | undefined;
  #mtime = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Credentials from a key and a keyring; `keyringPath` enables reloading. */
  constructor(self: KeyFile, keyring: Keyring, keyringPath?: string) {
    this.self = self;
    this.#keyring = keyring;
    this.#path = keyringPath;
    this.clusterSecret = self.clusterSecret ? fromHex(self.clusterSecret) : undefined;
    const me = keyring.byKey(self.publicKey);
    if (!me || me.role !== self.role || me.name !== self.name) {
      throw new KeyringError(0, `this key (${self.role} ${self.name}) is not on the keyring`);
    }
  }

  /**
   * Loads a key file and a keyring file and watches the keyring for changes. Synchronous: two
   * small files read once at start-up, and clients construct sessions synchronously.
   */
  static loadSync(keyPath: string, keyringPath: string): Credentials {
    const self = parseKeyFile(Deno.readTextFileSync(keyPath), keyPath);
    const info = Deno.statSync(keyPath);
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      throw new KeyringError(0, `${keyPath} is readable by others (chmod 600 it)`);
    }
    const ring = Keyring.parse(Deno.readTextFileSync(keyringPath));
    const c = new Credentials(self, ring, keyringPath);
    c.#mtime = Deno.statSync(keyringPath).mtime?.getTime() ?? 0;
    c.#watch();
    return c;
  }

  /** The keyring in force now. */
  get keyring(): Keyring {
    return this.#keyring;
  }

  /** The identity a ZAP User-Id (a Z85 public key) stands for now; undefined if revoked. */
  identify(userId: string | undefined): Identity | undefined {
    return userId === undefined ? undefined : this.#keyring.byKey(userId);
  }

  /**
   * Resolves a server reference to its endpoint and key: `NAME@tcp://HOST:PORT` names the key
   * on the keyring; a plain endpoint is allowed when the keyring has exactly one key of `role`.
   */
  resolve(ref: string, role?: Role): ServerAddress {
    const { name, endpoint } = splitNamedEndpoint(ref);
    if (name !== undefined) {
      const id = this.#keyring.byName(name);
      if (!id) throw new KeyringError(0, `no key named "${name}" for ${ref}`);
      if (role && id.role !== role) {
        throw new KeyringError(0, `${ref}: "${name}" is a ${id.role}, expected a ${role}`);
      }
      return { endpoint, serverKey: id.publicKey };
    }
    const candidates = role ? this.#keyring.ofRole(role) : [];
    if (candidates.length !== 1) {
      throw new KeyringError(
        0,
        `${ref}: name the server as NAME@${ref} (the keyring has ${candidates.length} ${
          role ?? "server"
        } keys)`,
      );
    }
    return { endpoint, serverKey: candidates[0].publicKey };
  }

  /** Re-reads the keyring now if its file changed; a bad file keeps the old keyring. */
  reload(): boolean {
    if (!this.#path) return false;
    try {
      const m = Deno.statSync(this.#path).mtime?.getTime() ?? 0;
      if (m === this.#mtime) return false;
      this.#keyring = Keyring.parse(Deno.readTextFileSync(this.#path));
      this.#mtime = m;
      return true;
    } catch {
      return false; // half-written or unreadable: keep what we had, try again next tick
    }
  }

  #watch(): void {
    // Polling a stat once a second is cheaper and more portable than inotify through Deno.
    const t = setInterval(() => this.reload(), KEYRING_RELOAD_MS);
    Deno.unrefTimer(t);
    this.#timer = t;
  }

  /** Stops watching the keyring file. */
  close(): void {
    clearInterval(this.#timer);
  }
}

/** How often nodes look at the keyring file for changes, ms. */
export const KEYRING_RELOAD_MS = 1000;

// ---- process-wide state -------------------------------------------------------------------

let processCreds: Credentials | null = null;
let zap: ZapHandler | null = null;
let zapCreds: Credentials | null = null;

/**
 * Sets the credentials every RpcClient and RpcServer of this process uses unless given its
 * own. The first RpcServer starts the process's ZAP handler (deny by default).
 */
export function useCredentials(c: Credentials): void {
  processCreds = c;
}

/** The process's credentials, or null when it runs without security (`--insecure`). */
export function processCredentials(): Credentials | null {
  return processCreds;
}

/** Refused handshakes logged per second at most (a scan must not flood the log). */
const REFUSALS_LOGGED_PER_S = 10;
let refusalWindow = { second: 0, logged: 0 };

/**
 * Starts the ZAP handler once per process; it asks the process's credentials' keyring and
 * logs refused handshakes (rate-limited) to `log`.
 */
export function startZap(log?: Logger, creds?: Credentials): ZapHandler {
  // A process serves one cluster: the first server's credentials answer for all of them.
  zapCreds ??= creds ?? null;
  zap ??= new ZapHandler((req) => {
    const verdict = decideHandshake(req.domain, req.mechanism, req.publicKey);
    if (!verdict.ok && log) {
      const second = Math.floor(Date.now() / 1000);
      if (second !== refusalWindow.second) refusalWindow = { second, logged: 0 };
      if (refusalWindow.logged++ < REFUSALS_LOGGED_PER_S) {
        log.warn("handshake refused", {
          address: req.address,
          peerKey: req.publicKey && z85Encode(req.publicKey),
          reason: verdict.reason,
        });
      }
    }
    return verdict;
  });
  return zap;
}

function decideHandshake(
  domain: string,
  mechanism: string,
  publicKey: Uint8Array | undefined,
): { ok: true; userId: string } | { ok: false; reason: string } {
  if (domain !== ZAP_DOMAIN) return { ok: false, reason: "unknown ZAP domain" };
  if (mechanism !== "CURVE" || !publicKey) return { ok: false, reason: "CURVE required" };
  const key = z85Encode(publicKey);
  // An unknown key is refused at the handshake; what a known key may send is decided per
  // message (the keyring may change while the connection lives).
  return (processCreds ?? zapCreds)?.keyring.byKey(key)
    ? { ok: true, userId: key }
    : { ok: false, reason: "key not on the keyring" };
}

/** Stops the process's ZAP handler and forgets the credentials (tests). */
export async function resetSecurity(): Promise<void> {
  processCreds?.close();
  processCreds = null;
  zapCreds = null;
  const z = zap;
  zap = null;
  await z?.close();
}

/** True when `id` may send a message whose schema lists `senders` (null id = insecure mode). */
export function maySend(id: Identity | null, senders: readonly SenderRole[]): boolean {
  if (id === null) return true;
  if (id.role === "client") {
    return senders.includes("client") || (id.admin && senders.includes("admin"));
  }
  return senders.includes(id.role);
}

// ---- helpers -------------------------------------------------------------------------------

function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

function fromHex(h: string): Uint8Array {
  return new Uint8Array(Buffer.from(h, "hex"));
}
