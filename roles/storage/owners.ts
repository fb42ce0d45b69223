/**
 * Who owns each committed file of a storage node: the keyring user names a file may be served
 * to (roles/storage/main.ts decides; docs/architecture.md, "Trust boundaries").
 *
 * On disk, next to the file: `files/<hex id>.owners`, one name per line (`\n`-terminated),
 * at most {@linkcode MAX_OWNERS} names, each a keyring name ({@linkcode OWNER_NAME}). The list
 * only grows, one name per first upload by that user. It is rewritten whole on every change:
 * a temp file (`<hex id>.owners.tmp-<uuid>`) is written and fdatasync'd, renamed over the
 * list, and the directory is fsync'd before the name counts, so the list on disk is always one
 * complete version. A crash leaves at most a temp file, removed when the store opens. Lines
 * that are not names are skipped when read (a list is never trusted to be well-formed).
 *
 * In memory, lists are loaded on first use and kept; changes of one file's list are serialized
 * (a read of the list, then the write of list + name), so two concurrent first uploads by
 * different users both stay recorded.
 * @module
 */
import { ErrorCode } from "../../wire/mod.ts";
import { RequestError } from "../../lib/rpc.ts";
import { syncDir, writeFull } from "../../lib/fsutil.ts";

/** Most owners a file can have; a further user's upload is refused TOO_LARGE. */
export const MAX_OWNERS = 1024;
/** An owner name: the grammar of keyring names (lib/security.ts), so at most 64 bytes. */
export const OWNER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Suffix of an owners list in the files directory. */
export const OWNERS_SUFFIX = ".owners";

/** The owner lists of one store's files directory. */
export class Owners {
  readonly #dir: string;
  readonly #max: number;
  readonly #lists = new Map<string, Promise<Set<string>>>();
  /** Per file, the last change queued (changes of one list run one after the other). */
  readonly #changes = new Map<string, Promise<void>>();

  /** Owner lists kept in `dir` (the store's `files/`). */
  constructor(dir: string, maxOwners = MAX_OWNERS) {
    this.#dir = dir;
    this.#max = maxOwners;
  }

  #path(hex: string): string {
    return `${this.#dir}/${hex}${OWNERS_SUFFIX}`;
  }

  #load(hex: string): Promise<Set<string>> {
    let p = this.#lists.get(hex);
    if (!p) {
      p = readList(this.#path(hex), this.#max);
      // A failed read (not a missing list: that is an empty one) is retried next time.
      p.catch(() => this.#lists.delete(hex));
      this.#lists.set(hex, p);
    }
    return p;
  }

  /** The owners of file `hex` (a copy). */
  async of(hex: string): Promise<string[]> {
    return [...await this.#load(hex)];
  }

  /** True when `name` owns file `hex`. */
  async has(hex: string, name: string): Promise<boolean> {
    return (await this.#load(hex)).has(name);
  }

  /**
   * Makes `name` an owner of file `hex`, durably, before resolving. Already an owner: nothing
   * is written. A full list: TOO_LARGE. I/O errors are thrown as they are (the caller maps
   * them, e.g. a full disk to NO_SPACE).
   */
  add(hex: string, name: string): Promise<void> {
    if (!OWNER_NAME.test(name)) {
      return Promise.reject(
        new RequestError(ErrorCode.BadRequest, `owner "${name}" is not a keyring name`),
      );
    }
    const prev = this.#changes.get(hex) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(async () => {
      const set = await this.#load(hex);
      if (set.has(name)) return;
      if (set.size >= this.#max) {
        throw new RequestError(
          ErrorCode.TooLarge,
          `file ${hex} has the most owners a file may have (${this.#max}); ${name} is not one`,
        );
      }
      await writeList(this.#dir, hex, [...set, name]);
      set.add(name);
    });
    this.#changes.set(hex, next);
    const forget = () => {
      if (this.#changes.get(hex) === next) this.#changes.delete(hex);
    };
    next.then(forget, forget);
    return next;
  }

  /** Forgets the cached list of `hex` (its file is gone). */
  drop(hex: string): void {
    this.#lists.delete(hex);
  }
}

/** What a name in the files directory is: an owners list, the temp of one, or neither. */
export function isOwnersName(name: string): "list" | "temp" | null {
  if (name.endsWith(OWNERS_SUFFIX)) return "list";
  if (name.includes(`${OWNERS_SUFFIX}.tmp-`)) return "temp";
  return null;
}

async function readList(path: string, max: number): Promise<Set<string>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new Set();
    throw e;
  }
  const set = new Set<string>();
  // Only `\n`-terminated lines: the last one, unterminated, cannot be a complete name.
  const lines = text.split("\n");
  lines.pop();
  for (const l of lines) {
    if (set.size >= max) break;
    if (OWNER_NAME.test(l)) set.add(l);
  }
  return set;
}

async function writeList(dir: string, hex: string, names: string[]): Promise<void> {
  const tmp = `${dir}/${hex}${OWNERS_SUFFIX}.tmp-${crypto.randomUUID()}`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      await writeFull(f, new TextEncoder().encode(names.map((n) => `${n}\n`).join("")));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, `${dir}/${hex}${OWNERS_SUFFIX}`);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {}); // never a leftover (e.g. a full disk)
    throw e;
  }
  await syncDir(dir);
}
