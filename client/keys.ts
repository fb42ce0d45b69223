/**
 * `dsys init DIR` and `dsys keys add|revoke|list`: a cluster's credentials as files.
 *
 * `init` writes, into a new directory readable by its owner only:
 * - `keyring`: every public key with its role and name (copy it to every node);
 * - `NAME.key`: one key file per node and for the admin client (copy each to its node only);
 * - `cluster.secret`: the 32 bytes masters, balancers and storage nodes share to mint and check
 *   placement tickets and file capabilities (also inside their key files).
 *
 * `keys add` and `keys revoke` change the keyring file only (atomically: write, fsync, rename);
 * nodes notice within a second (lib/security.ts), so no other node's files change.
 * @module
 */
import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import {
  type Identity,
  Keyring,
  KeyringError,
  newKeyFile,
  type Role,
  ROLES,
  SECRET_ROLES,
  writeKeyFile,
} from "../lib/security.ts";
import { writeFileDurable } from "../lib/fsutil.ts";

/** How many keys of each kind `init` makes. */
export interface InitOptions {
  masters?: number;
  balancers?: number;
  storage?: number;
  workers?: number;
  /** Name of the admin client key (default "admin"). */
  admin?: string;
  /** Names of ordinary (non-admin) client keys. */
  users?: string[];
  /** Names to use instead of m1…, b1…, s1…, w1… (by role). */
  names?: Partial<Record<Role, string[]>>;
}

/** Names `init` gives by default: m1…, b1…, s1…, w1…. */
function defaultNames(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);
}

/** Writes the keyring atomically (temp file, fsync, rename, fsync of the directory). */
export async function writeKeyring(path: string, keyring: Keyring): Promise<void> {
  await writeFileDurable(path, new TextEncoder().encode(keyring.toText()));
}

/** Creates a cluster's credentials in `dir` (which must not hold a keyring yet). */
export async function initCluster(dir: string, o: InitOptions = {}): Promise<Identity[]> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(dir, 0o700);
  const ringPath = join(dir, "keyring");
  try {
    await Deno.lstat(ringPath);
    throw new KeyringError(0, `${ringPath} exists: init makes a new cluster`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const secret = crypto.getRandomValues(new Uint8Array(32));
  await Deno.writeFile(join(dir, "cluster.secret"), secret, { mode: 0o600 });
  const wanted: [Role, string[]][] = [
    ["master", o.names?.master ?? defaultNames("m", o.masters ?? 3)],
    ["balancer", o.names?.balancer ?? defaultNames("b", o.balancers ?? 2)],
    ["storage", o.names?.storage ?? defaultNames("s", o.storage ?? 1)],
    ["worker", o.names?.worker ?? defaultNames("w", o.workers ?? 4)],
    ["client", [o.admin ?? "admin", ...(o.users ?? [])]],
  ];
  const ids: Identity[] = [];
  for (const [role, names] of wanted) {
    for (const name of names) {
      const key = newKeyFile(name, role, secret);
      await writeKeyFile(join(dir, `${name}.key`), key);
      ids.push({
        role,
        name,
        publicKey: key.publicKey,
        admin: role === "client" && name === (o.admin ?? "admin"),
      });
    }
  }
  const ring = new Keyring(ids);
  await writeKeyring(ringPath, ring);
  return ring.all();
}

/** Adds a new key to the keyring at `ringPath`; writes its key file; returns its path. */
export async function addKey(
  ringPath: string,
  role: Role,
  name: string,
  opts: { admin?: boolean; out?: string; secretPath?: string } = {},
): Promise<string> {
  const ring = Keyring.parse(await Deno.readTextFile(ringPath));
  let secret: Uint8Array | undefined;
  if (SECRET_ROLES.includes(role)) {
    const p = opts.secretPath ?? join(dirname(ringPath), "cluster.secret");
    secret = await Deno.readFile(p).catch(() => {
      throw new KeyringError(0, `a ${role} key needs the cluster secret: ${p} not readable`);
    });
    if (secret.length !== 32) throw new KeyringError(0, `${p} is not a 32-byte secret`);
  }
  const key = newKeyFile(name, role, secret);
  const next = ring.with({ role, name, publicKey: key.publicKey, admin: opts.admin ?? false });
  const out = opts.out ?? join(dirname(ringPath), `${name}.key`);
  await writeKeyFile(out, key);
  await writeKeyring(ringPath, next);
  return out;
}

/** Removes the key named `name` from the keyring at `ringPath`. */
export async function revokeKey(ringPath: string, name: string): Promise<Identity> {
  const ring = Keyring.parse(await Deno.readTextFile(ringPath));
  const id = ring.byName(name);
  if (!id) throw new KeyringError(0, `no key named "${name}"`);
  await writeKeyring(ringPath, ring.without(name));
  return id;
}

const INIT_USAGE = `usage: dsys init DIR [--masters 3] [--balancers 2] [--storage 1] [--workers 4]
                 [--admin NAME] [--user NAME]...`;
const KEYS_USAGE =
  `usage: dsys keys add --keyring FILE --role ROLE --name NAME [--admin] [--out FILE]
       dsys keys revoke --keyring FILE NAME
       dsys keys list --keyring FILE`;

function count(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 10_000) {
    throw new KeyringError(0, `--${flag} ${v} is not a count from 0 to 10000`);
  }
  return n;
}

/** `dsys init …`; returns the exit code. */
export async function runInit(args: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        masters: { type: "string" },
        balancers: { type: "string" },
        storage: { type: "string" },
        workers: { type: "string" },
        admin: { type: "string" },
        user: { type: "string", multiple: true },
      },
    });
    if (positionals.length !== 1) {
      console.error(INIT_USAGE);
      return 1;
    }
    const ids = await initCluster(positionals[0], {
      masters: count(values.masters, "masters", 3),
      balancers: count(values.balancers, "balancers", 2),
      storage: count(values.storage, "storage", 1),
      workers: count(values.workers, "workers", 4),
      admin: values.admin,
      users: values.user,
    });
    for (const id of ids) console.log(`${id.role} ${id.name} ${positionals[0]}/${id.name}.key`);
    console.log(`keyring: ${positionals[0]}/keyring (copy it to every node)`);
    return 0;
  } catch (e) {
    console.error(`dsys init: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

/** `dsys keys add|revoke|list …`; returns the exit code. */
export async function runKeys(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        keyring: { type: "string" },
        role: { type: "string" },
        name: { type: "string" },
        admin: { type: "boolean", default: false },
        out: { type: "string" },
        secret: { type: "string" },
      },
    });
    const ring = values.keyring ?? Deno.env.get("DSYS_KEYRING");
    if (!ring) throw new KeyringError(0, "--keyring FILE is required");
    if (sub === "add") {
      if (!values.role || !ROLES.includes(values.role as Role) || !values.name) {
        throw new KeyringError(0, `--role (${ROLES.join("|")}) and --name are required`);
      }
      const out = await addKey(ring, values.role as Role, values.name, {
        admin: values.admin,
        out: values.out,
        secretPath: values.secret,
      });
      console.log(`${values.role} ${values.name} ${out}`);
      return 0;
    }
    if (sub === "revoke" && positionals.length === 1) {
      const id = await revokeKey(ring, positionals[0]);
      console.log(`revoked ${id.role} ${id.name}`);
      return 0;
    }
    if (sub === "list") {
      const k = Keyring.parse(await Deno.readTextFile(ring));
      for (const id of k.all()) {
        console.log(`${id.role}\t${id.name}\t${id.publicKey}${id.admin ? "\tadmin" : ""}`);
      }
      return 0;
    }
    console.error(KEYS_USAGE);
    return 1;
  } catch (e) {
    console.error(`dsys keys: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}
