// Full-history encodings of one editing trace by the JavaScript peers.
//
// Usage: node sizes.mjs TRACE.json.gz
// Prints one JSON object on stdout: byte sizes of Yjs v1 and v2 updates, Yjs v2
// gzipped, and Automerge.save(), plus the final text's UTF-8 length and whether
// every replay reproduced the trace's endContent.
//
// The trace is replayed the way benchmarks/traces.py replays it: one
// transaction (Yjs) or change (Automerge) per trace transaction, patches applied
// in order. Trace positions count code points; both libraries index JavaScript
// strings by UTF-16 code unit, so positions are converted when the trace has
// characters outside the Basic Multilingual Plane (none of the shipped ones do).
//
// Writer ids are fixed so that sizes are the same on every run: Yjs writes the
// client id in every item of a v1 update, so its magnitude matters. The value is
// traces.YJS_CLIENT_ID, a typical id of Yjs's own default kind (a random uint32).

const YJS_CLIENT_ID = 2 ** 31 + 12345;
const AUTOMERGE_ACTOR = "c0ffee00c0ffee00c0ffee00c0ffee00";

import { readFileSync } from "node:fs";
import { gunzipSync, gzipSync } from "node:zlib";

import * as Automerge from "@automerge/automerge";
import * as Y from "yjs";

const path = process.argv[2];
if (!path) {
  console.error("usage: node sizes.mjs TRACE.json.gz");
  process.exit(2);
}
const trace = JSON.parse(gunzipSync(readFileSync(path)).toString("utf8"));
if (trace.startContent === undefined) {
  console.error(`${path}: not a sequential trace (no startContent)`);
  process.exit(2);
}

const astral = /[\u{10000}-\u{10FFFF}]/u;
const needsConversion =
  astral.test(trace.startContent) ||
  trace.txns.some((t) => t.patches.some(([, , ins]) => astral.test(ins)));

// Code point -> UTF-16 conversion over a mirror of the text. Only used when the
// trace needs it; O(n) per patch, which is fine for a size measurement.
let mirror = [...trace.startContent];
function utf16Patch(pos, del, ins) {
  if (!needsConversion) return [pos, del];
  const start = mirror.slice(0, pos).join("").length;
  const len = mirror.slice(pos, pos + del).join("").length;
  mirror.splice(pos, del, ...ins);
  return [start, len];
}

// Yjs: v1 and v2 updates of the whole history.
const ydoc = new Y.Doc();
ydoc.clientID = YJS_CLIENT_ID;
const ytext = ydoc.getText("text");
if (trace.startContent) ytext.insert(0, trace.startContent);
for (const txn of trace.txns) {
  ydoc.transact(() => {
    for (const [pos, del, ins] of txn.patches) {
      const [p, d] = utf16Patch(pos, del, ins);
      if (d) ytext.delete(p, d);
      if (ins) ytext.insert(p, ins);
    }
  });
}
const v1 = Y.encodeStateAsUpdate(ydoc);
const v2 = Y.encodeStateAsUpdateV2(ydoc);
const yjsOk = ytext.toString() === trace.endContent;

// Automerge: one change per transaction, then save() (its compressed format).
mirror = [...trace.startContent];
let am = Automerge.from({ text: trace.startContent }, { actor: AUTOMERGE_ACTOR });
for (const txn of trace.txns) {
  am = Automerge.change(am, (d) => {
    for (const [pos, del, ins] of txn.patches) {
      const [p, n] = utf16Patch(pos, del, ins);
      Automerge.splice(d, ["text"], p, n, ins);
    }
  });
}
const saved = Automerge.save(am);
const amOk = am.text === trace.endContent;

console.log(
  JSON.stringify({
    final_utf8: Buffer.byteLength(trace.endContent, "utf8"),
    yjs_v1: v1.length,
    yjs_v2: v2.length,
    yjs_v2_gzip: gzipSync(v2, { level: 9 }).length,
    automerge: saved.length,
    yjs_ok: yjsOk,
    automerge_ok: amOk,
    versions: {
      node: process.versions.node,
      yjs: JSON.parse(readFileSync(new URL("./node_modules/yjs/package.json", import.meta.url))).version,
      automerge: JSON.parse(
        readFileSync(new URL("./node_modules/@automerge/automerge/package.json", import.meta.url)),
      ).version,
    },
  }),
);
