import assert from "node:assert/strict";
import { RecordFile } from "../lib/record_file.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("record file: records survive reopen; torn and corrupt tails are truncated", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/log`;
  const { file } = await RecordFile.open(path);
  await Promise.all(Array.from({ length: 100 }, (_, i) => file.append(enc.encode(`rec-${i}`))));
  await file.close();

  let { file: f2, records } = await RecordFile.open(path);
  assert.equal(records.length, 100);
  assert.deepEqual(records.map((r) => dec.decode(r)).slice(0, 3), ["rec-0", "rec-1", "rec-2"]);
  assert.equal(dec.decode(records[99]), "rec-99");
  await f2.close();

  // A torn write: half a record at the end.
  const good = (await Deno.stat(path)).size;
  const fh = await Deno.open(path, { append: true });
  await fh.write(new Uint8Array([20, 0, 0, 0, 1, 2, 3, 4, 5, 6]));
  fh.close();
  ({ file: f2, records } = await RecordFile.open(path));
  assert.equal(records.length, 100);
  assert.equal(f2.truncatedBytes, 10);
  assert.equal((await Deno.stat(path)).size, good);
  await f2.append(enc.encode("after-torn"));
  await f2.close();

  // A corrupt byte inside the last record: CRC mismatch drops it (and only it).
  const bytes = await Deno.readFile(path);
  bytes[bytes.length - 1] ^= 0xff;
  await Deno.writeFile(path, bytes);
  ({ file: f2, records } = await RecordFile.open(path));
  assert.equal(records.length, 100);
  assert.equal(dec.decode(records[99]), "rec-99");
  await f2.close();
  await Deno.remove(dir, { recursive: true });
});
