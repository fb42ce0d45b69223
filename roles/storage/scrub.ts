/**
 * The background scrub: re-reads every committed file of this node and checks every block
 * against its recorded SHA-256 (store.verify), at most `bytesPerSecond` (each file counted
 * SCRUB_FILE_CHARGE_BYTES more than its size), forever, one file at a time. A corrupt replica is deleted (store.remove), so it reads as absent everywhere and the
 * repair loop of another holder copies a good one back (repair.ts). Reads find corruption too
 * (every read is verified), and the node then stops serving that copy at once.
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import type { FileStore } from "./store.ts";

/** Default of `--scrub-rate`: bytes per second re-read by the scrub (16 MiB/s). */
export const DEFAULT_SCRUB_BYTES_PER_S = 16 * 1024 * 1024;
/**
 * What each file checked costs the scrub's budget on top of its bytes: opening, reading and
 * hashing a file costs far more than its few bytes say. Paced by bytes alone, a store of many
 * small files (a chunk's stdout is tens of bytes) was scrubbed in a hot loop, over and over,
 * while a job wrote them (docs/benchmarks.md, "End to end"). 256 KiB: at the default rate at
 * most 64 files a second.
 */
export const SCRUB_FILE_CHARGE_BYTES = 256 * 1024;

/** Counters of the scrub since start. */
export interface ScrubStats {
  /** Complete passes over every file. */
  passes: number;
  filesChecked: number;
  bytesChecked: number;
  corruptFound: number;
}

/** Re-reads and verifies the store's files at a bounded rate. */
export class Scrubber {
  readonly stats: ScrubStats = { passes: 0, filesChecked: 0, bytesChecked: 0, corruptFound: 0 };
  #store: FileStore;
  #rate: number;
  #log: Logger;
  #stopped = false;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  /** Budget: the time (performance.now) until which the bytes read so far are paid for. */
  #paidUntil = 0;

  constructor(store: FileStore, bytesPerSecond: number, log: Logger) {
    if (!(bytesPerSecond > 0)) throw new Error(`scrub rate ${bytesPerSecond} must be positive`);
    this.#store = store;
    this.#rate = bytesPerSecond;
    this.#log = log;
  }

  /** Starts the endless scrub loop. */
  start(): void {
    this.#loop ??= this.#run();
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const files = this.#store.list();
      for (const f of files) {
        if (this.#stopped) return;
        await this.#check(f.hex);
      }
      this.stats.passes++;
      // An empty store (or a fast pass) waits a little before it starts over.
      await this.#sleep(files.length === 0 ? 1000 : 100);
    }
  }

  async #check(hex: string): Promise<void> {
    try {
      const n = await this.#store.verify(hex, (bytes) => this.#pace(bytes));
      await this.#pace(SCRUB_FILE_CHARGE_BYTES);
      this.stats.filesChecked++;
      this.stats.bytesChecked += n;
    } catch (e) {
      if (this.#stopped) return;
      if (!this.#store.isCorrupt(hex)) {
        // Not a verdict on the bytes (e.g. out of file descriptors): try again next pass.
        this.#log.warn("scrub: cannot check file", { file: hex, error: e });
        return;
      }
      this.stats.corruptFound++;
      this.#log.error("scrub: corrupt replica deleted", { file: hex, error: e });
      await this.#store.remove(hex, "corrupt (scrub)").catch((err) =>
        this.#log.warn("scrub: cannot delete corrupt replica", { file: hex, error: err })
      );
    }
  }

  /** Waits so that reading stays at or below the rate. */
  async #pace(bytes: number): Promise<void> {
    const now = performance.now();
    this.#paidUntil = Math.max(this.#paidUntil, now) + (bytes / this.#rate) * 1000;
    const wait = this.#paidUntil - now;
    if (wait > 1) await this.#sleep(wait);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#wake = null;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** Stops the loop (at the next block). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop?.catch(() => {});
  }
}
