/**
 * Keeps docs/wire.md honest: every hex example in it must equal the encoder's output for the
 * corresponding example message, and the generated reference must be up to date.
 */
import assert from "node:assert/strict";
import { encode, MESSAGE_SPECS, SPEC_BY_TYPE } from "../wire/mod.ts";
import { EXAMPLES } from "../wire/examples.ts";
import { formatMarkdown, spliceReference } from "../wire/docgen.ts";

const docPath = new URL("../docs/wire.md", import.meta.url);

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Parses ```hex <name> blocks: each line "offset bytes... # comment"; returns name -> hex. */
function hexBlocks(doc: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of doc.matchAll(/```hex (\w+)\n([\s\S]*?)```/g)) {
    let bytes = "";
    let expectOffset = 0;
    for (const line of m[2].split("\n")) {
      const code = line.replace(/#.*$/, "").trim();
      if (!code) continue;
      const [offset, ...rest] = code.split(/\s+/);
      assert.equal(Number(offset), expectOffset, `${m[1]}: offset column at "${line}"`);
      expectOffset += rest.length;
      bytes += rest.join("");
    }
    assert.ok(!out.has(m[1]), `duplicate example ${m[1]}`);
    out.set(m[1], bytes);
  }
  return out;
}

Deno.test("every hex example in docs/wire.md equals the encoder output", () => {
  const blocks = hexBlocks(Deno.readTextFileSync(docPath));
  assert.equal(blocks.size, MESSAGE_SPECS.length, "one example per message type");
  for (const m of EXAMPLES) {
    const name = SPEC_BY_TYPE[m.type]!.wire;
    assert.equal(blocks.get(name), hex(encode(m)), `hex example of ${name}`);
  }
});

Deno.test("docs/wire.md generated reference is up to date", async () => {
  const doc = Deno.readTextFileSync(docPath);
  const fresh = await formatMarkdown(spliceReference(doc));
  assert.ok(fresh === doc, "docs/wire.md is stale: run deno run -A wire/docgen.ts --write");
});
