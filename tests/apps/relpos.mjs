// Yjs' own view of relative positions, for tests/apps/test_positions.py.
// argv[2]: file URL of yjs.mjs. stdin: JSON {"update": base64 full state, "root": "body",
// "positions": [relative positions from Python]}.
// stdout: JSON {"text": ..., "relative": [Yjs' relative position JSON of each UTF-16 index],
//               "absolute": [Yjs' absolute index of each given position, or null]}
const Y = await import(process.argv[2]);
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const doc = new Y.Doc();
Y.applyUpdate(doc, Buffer.from(input.update, 'base64'));
const text = doc.getText(input.root);
const relative = [];
for (let i = 0; i <= text.length; i++) {
  relative.push(Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(text, i)));
}
const absolute = input.positions.map((p) => {
  const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(p), doc);
  return abs && abs.type === text ? abs.index : null;
});
process.stdout.write(JSON.stringify({ text: text.toString(), relative, absolute }));
