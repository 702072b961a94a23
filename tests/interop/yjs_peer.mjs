// A real Yjs replica for tests/interop/test_yjs_interop.py.
// stdin: JSON {"updates": [base64 Yjs v1 updates], "edit": bool}
// stdout: JSON {"body": text, "todos": array JSON, "settings": map JSON, "update": base64 of
//               the replica's full state after its own edit, "events": n}
import * as Y from 'yjs';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const doc = new Y.Doc();
for (const u of input.updates) Y.applyUpdate(doc, Buffer.from(u, 'base64'));
const body = doc.getText('body');
if (input.edit) {
  doc.transact(() => {
    body.insert(0, 'from yjs ✓ ');
    body.insert(body.length, ' 🎉');
    doc.getArray('todos').push(['added in js']);
    doc.getMap('settings').set('js', 42);
    doc.getMap('settings').set('ratio', 0.25);
  });
}
process.stdout.write(JSON.stringify({
  body: body.toString(),
  todos: doc.getArray('todos').toJSON(),
  settings: doc.getMap('settings').toJSON(),
  update: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64'),
}));
