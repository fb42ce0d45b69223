/**
 * Cross-checks wire/dsys_wire.h against the TypeScript encoder: struct sizes, type codes, and
 * the fixed header bytes of every example message plus random ones, encoded independently by
 * the C program build/wire_test_vectors (built by scripts/build-native.sh).
 */
import assert from "node:assert/strict";
import {
  encode,
  fixedFieldValues,
  headerSize,
  type Message,
  MESSAGE_SPECS,
  recordFixedSize,
  SPEC_BY_TYPE,
  uuidToHex,
} from "../wire/mod.ts";
import { FILE_ENTRY } from "../wire/messages.ts";
import { EXAMPLES } from "../wire/examples.ts";
import { randomMessage, Rng } from "./wire_gen.ts";

const root = new URL("..", import.meta.url).pathname;
const bin = `${root}build/wire_test_vectors`;

async function run(args: string[], stdin?: string): Promise<string> {
  const cmd = new Deno.Command(bin, { args, stdin: "piped", stdout: "piped", stderr: "piped" });
  const p = cmd.spawn();
  const w = p.stdin.getWriter();
  if (stdin !== undefined) await w.write(new TextEncoder().encode(stdin));
  await w.close();
  const out = await p.output();
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `wire_test_vectors ${args.join(" ")} failed: ${err}`);
  return new TextDecoder().decode(out.stdout);
}

async function build(): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: [`${root}scripts/build-native.sh`, "wire_test_vectors"],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function vectorLine(m: Message): string {
  const spec = SPEC_BY_TYPE[m.type]!;
  return [spec.wire, uuidToHex(m.node), ...fixedFieldValues(m).map((v) => v.value)].join(" ");
}

Deno.test("C struct sizes and type codes match the TS schema", async () => {
  await build();
  const rows = new Map<string, string[]>();
  for (const line of (await run(["sizes"])).trim().split("\n")) {
    const [name, ...rest] = line.split(" ");
    // Base structs are printed first; message rows (with a type code) override by name,
    // so keep both under distinct keys.
    rows.set(rest.length === 2 ? `msg:${name}` : `struct:${name}`, rest);
  }
  assert.equal(rows.get("struct:generic_message")?.[0], "25");
  const bases: Record<string, number> = {
    worker_request: 73,
    worker_status: 42,
    file_request: 41,
    file_response: 49,
  };
  for (const [name, size] of Object.entries(bases)) {
    assert.equal(Number(rows.get(`struct:${name}`)?.[0]), size, name);
    assert.equal(MESSAGE_SPECS.find((s) => s.wire === name)!.base, size, name);
  }
  for (const spec of MESSAGE_SPECS) {
    const row = rows.get(`msg:${spec.wire}`);
    assert.ok(row, `C has no struct for ${spec.wire}`);
    assert.equal(Number(row[0]), headerSize(spec), `sizeof ${spec.wire}`);
    assert.equal(Number(row[1]), spec.type, `type code of ${spec.wire}`);
  }
  const messageRows = [...rows.keys()].filter((k) => k.startsWith("msg:")).length;
  assert.equal(messageRows, MESSAGE_SPECS.length, "C and TS list the same messages");
  assert.equal(Number(rows.get("struct:file_entry")?.[0]), recordFixedSize(FILE_ENTRY));
  // Every record, nested ones too (a chunk record's attempt history).
  const records = MESSAGE_SPECS.flatMap((m) => m.sections).map((s) => s.record).filter((r) => r);
  for (let i = 0; i < records.length; i++) {
    for (const s of records[i]!.sections) if (s.record) records.push(s.record);
  }
  for (const r of records) {
    assert.equal(Number(rows.get(`struct:${r!.wire}`)?.[0]), recordFixedSize(r!), r!.wire);
  }
});

Deno.test("C encoder and TS encoder produce identical fixed headers", async () => {
  await build();
  const seed = Date.now() >>> 0;
  const r = new Rng(seed);
  const msgs: Message[] = [...EXAMPLES];
  for (let i = 0; i < 20; i++) for (const s of MESSAGE_SPECS) msgs.push(randomMessage(r, s.type));
  const lines = (await run([], msgs.map(vectorLine).join("\n") + "\n")).trim().split("\n");
  assert.equal(lines.length, msgs.length);
  msgs.forEach((m, i) => {
    const frame = encode(m);
    const hl = headerSize(SPEC_BY_TYPE[m.type]!);
    assert.equal(
      lines[i],
      hex(frame.subarray(0, hl)),
      `seed ${seed}, message #${i} type ${m.type}`,
    );
  });
});
