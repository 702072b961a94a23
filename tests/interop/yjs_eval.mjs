// Runs a few lines of Yjs code against a real Yjs document, for the tests of
// how crdtsync reads data that plain Yjs clients wrote (tests/interop/test_yjs_data.py).
// stdin: JSON {"updates": [base64 Yjs v1 updates], "code": "JS statements using Y and doc"}
// stdout: JSON {"update": base64 of the document's full state, "json": the code's result}
import * as Y from 'yjs';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const doc = new Y.Doc();
for (const u of input.updates) Y.applyUpdate(doc, Buffer.from(u, 'base64'));
const result = new Function('Y', 'doc', input.code)(Y, doc);
process.stdout.write(JSON.stringify({
  update: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64'),
  json: result === undefined ? null : result,
}));
