/** A node's 128-bit identity, created once and kept in its data directory. */
import { writeFileDurable } from "./fsutil.ts";
import { randomUuid } from "../wire/uuid.ts";

/** Loads `<dataDir>/node-id` (16 raw bytes), creating it with a random uuid on first start. */
export async function loadOrCreateNodeId(dataDir: string): Promise<Uint8Array> {
  const path = `${dataDir}/node-id`;
  try {
    const b = await Deno.readFile(path);
    if (b.length === 16) return b;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.mkdir(dataDir, { recursive: true });
  const id = randomUuid();
  await writeFileDurable(path, id);
  return id;
}
