// Random honest Yjs sessions for tests/test_byzantine.py: several clients edit
// a text (with formatting), an array of nested types and a map, undo and redo
// (Y.UndoManager: redone items take copies of their neighbours as origins,
// the least obvious honest shape), and sync now and then.
// stdin: JSON {"seed": n, "clients": n, "steps": n}
// stdout: JSON {"updates": [base64 v1 update of each client's own transactions, in order],
//               "state": base64 v1 state of a replica holding everything}
import * as Y from 'yjs';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));

// mulberry32: a small seeded PRNG, so that a seed names one session.
let s = input.seed >>> 0;
const rand = () => {
  s = (s + 0x6D2B79F5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];
const word = () => Array.from({ length: 1 + int(3) }, () => pick('abcdéfgh'.split(''))).join('');

const updates = [];
const clients = [];
for (let i = 0; i < input.clients; i++) {
  const doc = new Y.Doc();
  doc.clientID = 100 + i;
  const t = doc.getText('t');
  const a = doc.getArray('a');
  const m = doc.getMap('m');
  const um = new Y.UndoManager([t, a, m], { captureTimeout: 0 });
  doc.on('update', (u, origin) => {
    if (origin !== 'sync') updates.push(Buffer.from(u).toString('base64'));
  });
  clients.push({ doc, t, a, m, um });
}

// Every Y.Text and Y.Array reachable from the roots (to edit nested types too).
const texts = (c) => {
  const out = [c.t];
  const walk = (v) => {
    if (v instanceof Y.Text) out.push(v);
    else if (v instanceof Y.Array) v.toArray().forEach(walk);
    else if (v instanceof Y.Map) [...v.values()].forEach(walk);
  };
  c.a.toArray().forEach(walk);
  [...c.m.values()].forEach(walk);
  return out;
};

const nested = () => {
  const r = rand();
  if (r < 0.4) {
    const y = new Y.Map();
    y.set('txt', new Y.Text(word()));
    y.set('n', int(10));
    return y;
  }
  if (r < 0.6) return new Y.Text(word());
  if (r < 0.8) {
    const y = new Y.Array();
    y.insert(0, [int(10), word()]);
    return y;
  }
  return int(100);
};

for (let step = 0; step < input.steps; step++) {
  const c = pick(clients);
  const r = rand();
  if (r < 0.12) c.um.undo();
  else if (r < 0.22) c.um.redo();
  else if (r < 0.55) {
    const t = pick(texts(c));
    const n = t.length;
    const q = rand();
    if (n && q < 0.3) {
      const i = int(n);
      t.delete(i, 1 + int(Math.min(3, n - i)));
    } else if (n && q < 0.45) {
      const i = int(n);
      t.format(i, 1 + int(Math.min(3, n - i)), { bold: rand() < 0.5 ? true : null });
    } else {
      t.insert(int(n + 1), word(), rand() < 0.2 ? { italic: true } : undefined);
    }
  } else if (r < 0.8) {
    const n = c.a.length;
    if (n && rand() < 0.35) c.a.delete(int(n), 1);
    else c.a.insert(int(n + 1), [nested()]);
  } else if (r < 0.9) {
    const k = pick(['x', 'y', 'z']);
    if (rand() < 0.25) c.m.delete(k);
    else c.m.set(k, nested());
  } else {
    const [p, q] = [pick(clients), pick(clients)];
    if (p !== q) {
      Y.applyUpdate(q.doc, Y.encodeStateAsUpdate(p.doc, Y.encodeStateVector(q.doc)), 'sync');
    }
  }
}
const all = new Y.Doc();
for (const c of clients) Y.applyUpdate(all, Y.encodeStateAsUpdate(c.doc), 'sync');
process.stdout.write(JSON.stringify({
  updates,
  state: Buffer.from(Y.encodeStateAsUpdate(all)).toString('base64'),
}));
