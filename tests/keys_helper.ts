/**
 * Keys for tests that start nodes by hand or play nodes in-process, so they run secure (CURVE
 * and the keyring) like every real cluster: one cluster's keys made by `initCluster` in a temp
 * dir, with exactly the names the test needs, and per name its key file, its node flags, its
 * `NAME@tcp://…` reference and its loaded Credentials.
 *
 * One keyring per test: the process-wide ZAP handler answers from the first RpcServer's
 * keyring (lib/security.ts `startZap`), so `close()` also resets the process's security state
 * for the next test.
 * @module
 */
import { join } from "node:path";
import { initCluster } from "../client/keys.ts";
import { joinNamedEndpoint } from "../lib/named_endpoint.ts";
import { Credentials, type Identity, resetSecurity, type Role } from "../lib/security.ts";
import type { SocketOptions } from "../wire/zmq/mod.ts";

/** What keys to make. */
export interface TestKeysOptions {
  /** Node names per role; a role not listed gets no key (unlike `initCluster`'s defaults). */
  names?: Partial<Record<Exclude<Role, "client">, string[]>>;
  /** The admin client's name (default "admin"; always made). */
  admin?: string;
  /** Ordinary (non-admin) client names. */
  users?: string[];
}

/** A test cluster's keys; see module doc. */
export class TestKeys {
  /** The directory holding the keyring, the key files and cluster.secret. */
  readonly dir: string;
  /** The keyring file. */
  readonly keyring: string;
  /** The cluster secret (mints placement tickets and read capabilities). */
  readonly secret: Uint8Array;
  readonly #ids: Map<string, Identity>;
  readonly #creds = new Map<string, Credentials>();

  private constructor(dir: string, secret: Uint8Array, ids: Identity[]) {
    this.dir = dir;
    this.keyring = join(dir, "keyring");
    this.secret = secret;
    this.#ids = new Map(ids.map((id) => [id.name, id]));
  }

  /** Makes the keys in a new temp dir. */
  static async make(o: TestKeysOptions = {}): Promise<TestKeys> {
    const dir = await Deno.makeTempDir({ prefix: "dsys-test-keys-" });
    const ids = await initCluster(join(dir, "keys"), {
      names: {
        master: o.names?.master ?? [],
        balancer: o.names?.balancer ?? [],
        storage: o.names?.storage ?? [],
        worker: o.names?.worker ?? [],
      },
      admin: o.admin,
      users: o.users,
    });
    const secret = await Deno.readFile(join(dir, "keys", "cluster.secret"));
    return new TestKeys(join(dir, "keys"), secret, ids);
  }

  /** The keyring identity of `name` (throws for a name the test did not ask for). */
  identity(name: string): Identity {
    const id = this.#ids.get(name);
    if (!id) throw new Error(`no test key named "${name}"`);
    return id;
  }

  /** `name`'s Z85 public key. */
  publicKey(name: string): string {
    return this.identity(name).publicKey;
  }

  /** `name`'s key file. */
  keyPath(name: string): string {
    this.identity(name);
    return join(this.dir, `${name}.key`);
  }

  /** The flags a node started as `name` needs: `--key FILE --keyring FILE`. */
  nodeArgs(name: string): string[] {
    return ["--key", this.keyPath(name), "--keyring", this.keyring];
  }

  /** `name@endpoint`: how clients and nodes refer to the server with key `name`. */
  ref(name: string, endpoint: string): string {
    this.identity(name);
    return joinNamedEndpoint(name, endpoint);
  }

  /** `name`'s loaded credentials (once per name; closed by `close()`). */
  creds(name: string): Credentials {
    let c = this.#creds.get(name);
    if (!c) {
      c = Credentials.loadSync(this.keyPath(name), this.keyring);
      this.#creds.set(name, c);
    }
    return c;
  }

  /** CURVE options for a raw DEALER speaking as `client` to the server with key `server`. */
  rawCurve(client: string, server: string): SocketOptions {
    const c = this.creds(client);
    return {
      curveServerKey: this.publicKey(server),
      curvePublicKey: c.self.publicKey,
      curveSecretKey: c.self.secretKey,
    };
  }

  /** Closes every loaded credential, resets the process's security state, removes the keys. */
  async close(): Promise<void> {
    for (const c of this.#creds.values()) c.close();
    this.#creds.clear();
    await resetSecurity();
    await Deno.remove(join(this.dir, ".."), { recursive: true }).catch(() => {});
  }
}
