/**
 * Generates the message reference part of docs/wire.md (layout tables and annotated hex
 * examples) from the schema in messages.ts and the examples in examples.ts, so the doc cannot
 * drift from the code. `deno run -A wire/docgen.ts --write` rewrites the generated region;
 * tests/wire_doc_test.ts fails when it is stale.
 * @module
 */

import { encode } from "./codec.ts";
import { EXAMPLES } from "./examples.ts";
import {
  DEFAULT_LIMITS,
  FIELD_SIZE,
  type FieldSpec,
  GENERIC_HEADER_SIZE,
  headerSize,
  type Message,
  MESSAGE_SPECS,
  type MessageSpec,
  recordFixedSize,
  type RecordSpec,
  type SectionSpec,
} from "./messages.ts";

/** Marker lines delimiting the generated region of docs/wire.md. */
export const BEGIN_MARK = "<!-- BEGIN GENERATED: deno run -A wire/docgen.ts --write -->";
/** End marker of the generated region. */
export const END_MARK = "<!-- END GENERATED -->";

const TYPE_NAME: Record<string, string> = {
  u8: "u8",
  bool: "u8 (0/1)",
  u32: "u32",
  i32: "i32",
  u64: "u64",
  uuid: "uuid",
};

function fieldRows(fields: readonly FieldSpec[], start: number): string[] {
  const rows: string[] = [];
  let pos = start;
  for (const f of fields) {
    const ext = f.ext ? " _(extension: absent → 0)_" : "";
    if (f.kind === "uuid") {
      rows.push(
        `| ${pos} | 8 | \`${f.wire}_upper\` | u64 | ${f.doc}: bytes 0–7 (big-endian)${ext} |`,
      );
      rows.push(`| ${pos + 8} | 8 | \`${f.wire}_lower\` | u64 | ${f.doc}: bytes 8–15${ext} |`);
    } else {
      const len = f.lengthOf ? " (derived)" : "";
      rows.push(
        `| ${pos} | ${FIELD_SIZE[f.kind]} | \`${f.wire}\` | ${
          TYPE_NAME[f.kind]
        } | ${f.doc}${len}${ext} |`,
      );
    }
    pos += FIELD_SIZE[f.kind];
  }
  return rows;
}

function sectionLines(secs: readonly SectionSpec[], fields: readonly FieldSpec[]): string[] {
  if (secs.length === 0) return ["Payload: none (the frame is exactly `header_length` bytes)."];
  const lines = ["Payload, in this order, starting at offset `header_length`:", ""];
  secs.forEach((s, i) => {
    const lf = fields.find((f) => f.lengthOf === s.key);
    const lim = `max \`${s.limit}\` = ${DEFAULT_LIMITS[s.limit]}`;
    let what: string;
    switch (s.kind) {
      case "bytes":
        what = `\`${lf!.wire}\` raw bytes (${lim})`;
        break;
      case "text":
        what = `\`${lf!.wire}\` bytes of UTF-8 text (${lim})`;
        break;
      case "ids":
        what = `\`${lf!.wire}\` × 16-byte ids, raw byte order (${lim} entries)`;
        break;
      case "list":
        what = `\`${lf!.wire}\` × \`${s.record!.wire}\` records (${lim} entries)`;
        break;
      case "rest":
        what = `all remaining bytes of the frame (${lim})`;
        break;
    }
    lines.push(`${i + 1}. \`${s.wire}\`: ${what}: ${s.doc}.`);
  });
  return lines;
}

/** Annotated hex dump: `offset  hex-bytes  # field`, one line per field / payload piece. */
export function annotatedHex(msg: Message): string {
  const spec = MESSAGE_SPECS.find((s) => s.type === msg.type)!;
  const frame = encode(msg);
  const lines: string[] = [];
  let pos = 0;
  const emit = (n: number, name: string) => {
    const bytes = Array.from(frame.subarray(pos, pos + n), (b) => b.toString(16).padStart(2, "0"));
    const chunks: string[] = [];
    for (let i = 0; i < bytes.length; i += 16) chunks.push(bytes.slice(i, i + 16).join(" "));
    if (chunks.length === 0) chunks.push("");
    chunks.forEach((c, i) => {
      const label = i === 0 ? `# ${name}` : "#   (cont.)";
      lines.push(`${String(pos + i * 16).padStart(4)}  ${c.padEnd(48)} ${label}`.trimEnd());
    });
    pos += n;
  };
  emit(1, "message_type");
  emit(8, "node_uuid_upper");
  emit(8, "node_uuid_lower");
  emit(8, "header_length");
  const walk = (
    o: Record<string, unknown>,
    fields: readonly FieldSpec[],
    secs: readonly SectionSpec[],
    pre: string,
  ) => {
    for (const f of fields) {
      if (f.kind === "uuid") {
        emit(8, `${pre}${f.wire}_upper`);
        emit(8, `${pre}${f.wire}_lower`);
      } else emit(FIELD_SIZE[f.kind], `${pre}${f.wire}`);
    }
    for (const s of secs) {
      const v = o[s.key];
      if (s.kind === "bytes" || s.kind === "rest") {
        if ((v as Uint8Array).length) emit((v as Uint8Array).length, `${pre}${s.wire}`);
      } else if (s.kind === "text") {
        const n = new TextEncoder().encode(v as string).length;
        if (n) emit(n, `${pre}${s.wire} ${JSON.stringify(v)}`);
      } else if (s.kind === "ids") {
        (v as unknown[]).forEach((_, i) => emit(16, `${pre}${s.wire}[${i}]`));
      } else {
        (v as Record<string, unknown>[]).forEach((e, i) =>
          walk(e, s.record!.fields, s.record!.sections, `${pre}${s.wire}[${i}].`)
        );
      }
    }
  };
  walk(msg as unknown as Record<string, unknown>, spec.fields, spec.sections, "");
  if (pos !== frame.length) throw new Error(`docgen: dumped ${pos} of ${frame.length} bytes`);
  return lines.join("\n");
}

function recordDoc(r: RecordSpec): string[] {
  return [
    `#### Record \`${r.wire}\` (${recordFixedSize(r)} bytes${
      r.sections.length ? " + variable part" : ""
    })`,
    "",
    "| offset | size | field | type | meaning |",
    "|---:|---:|---|---|---|",
    ...fieldRows(r.fields, 0),
    "",
    ...(r.sections.length
      ? sectionLines(r.sections, r.fields).map((l) =>
        l.replace("starting at offset `header_length`", "right after the record's fixed part")
      )
      : ["No variable part."]),
    "",
  ];
}

function messageDoc(spec: MessageSpec, example: Message): string[] {
  const full = headerSize(spec);
  const baseNote = spec.base === full
    ? `Fixed header: ${full} bytes.`
    : `Fixed header: ${full} bytes; base size ${spec.base} (fields marked *extension* may be absent).`;
  return [
    `### ${spec.type} \`${spec.wire}\``,
    "",
    `${spec.doc} Flow: ${spec.flow}. Sent by: ${
      spec.senders.join(", ")
    } keys. Reply: ${spec.reply}. ${baseNote}`,
    "",
    "| offset | size | field | type | meaning |",
    "|---:|---:|---|---|---|",
    `| 0 | 25 | generic header | | \`message_type\` = ${spec.type}, \`header_length\` = ${full} |`,
    ...fieldRows(spec.fields, GENERIC_HEADER_SIZE),
    "",
    ...sectionLines(spec.sections, spec.fields),
    "",
    `Example (${encode(example).length} bytes):`,
    "",
    `\`\`\`hex ${spec.wire}`,
    annotatedHex(example),
    "```",
    "",
  ];
}

/** The generated region's content (without markers). */
export function generateReference(): string {
  const out: string[] = ["## Message reference", ""];
  for (const spec of MESSAGE_SPECS) {
    out.push(...messageDoc(spec, EXAMPLES.find((e) => e.type === spec.type)!));
  }
  out.push("## Payload records", "");
  const seen = new Set<string>();
  for (const s of MESSAGE_SPECS.flatMap((m) => m.sections)) {
    if (s.record && !seen.has(s.record.wire)) {
      seen.add(s.record.wire);
      out.push(...recordDoc(s.record));
    }
  }
  return out.join("\n").trimEnd() + "\n";
}

/** Replaces the generated region of `doc` with fresh content. */
export function spliceReference(doc: string): string {
  const a = doc.indexOf(BEGIN_MARK), b = doc.indexOf(END_MARK);
  if (a < 0 || b < a) throw new Error("docs/wire.md: generated-region markers not found");
  return doc.slice(0, a + BEGIN_MARK.length) + "\n\n" + generateReference() + "\n" + doc.slice(b);
}

/** Formats markdown with `deno fmt` (the repo's formatter), so generated text is fmt-stable. */
export async function formatMarkdown(text: string): Promise<string> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext", "md", "-"],
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const out = await p.output();
  if (out.code !== 0) throw new Error(`deno fmt failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

if (import.meta.main) {
  const path = new URL("../docs/wire.md", import.meta.url);
  const doc = Deno.readTextFileSync(path);
  const next = await formatMarkdown(spliceReference(doc));
  if (Deno.args.includes("--write")) Deno.writeTextFileSync(path, next);
  else if (next !== doc) {
    console.error("docs/wire.md is stale: run deno run -A wire/docgen.ts --write");
    Deno.exit(1);
  }
}
