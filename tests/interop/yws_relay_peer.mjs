// A stock y-websocket client (WebsocketProvider 3.1.0 + yjs) driven by tests/interop/test_relay_interop.py
// against the crdtsync relay.
//
// stdin: one JSON command per line, each with an "id"; stdout: JSON lines, one answer per
// command ({"id": ..., "ok": bool, ...state}) plus events as they happen ({"event": ...}).
// Commands:
//   {"op": "connect", "url": u, "room": r, "params": {...}}  start the WebsocketProvider
//   {"op": "insert", "index": i, "text": s}                  one transaction on getText("body")
//   {"op": "delete", "index": i, "length": n}                one transaction
//   {"op": "storm", "n": n, "seed": k, "tag": s}             n transactions, each inserting
//                                                            `${tag}${j};` at a seeded random
//                                                            index, yielding to the event loop
//                                                            between them (so remote updates
//                                                            interleave); answers when done
//   {"op": "presence", "field": f, "value": v}               awareness.setLocalStateField(f, v)
//   {"op": "wait", ...conditions, "timeout": ms}             answers when every condition holds
//                                                            (ok: true) or at the timeout (ok: false):
//        "synced": true          provider.synced
//        "text": s               the text equals s
//        "length": n             the text has n characters
//        "contains": [s...]      the text contains every s
//        "presence": [state...]  every state is some other client's awareness state (JSON-equal)
//        "closed": code          a connection was closed with this code
//        "terminal": code        the provider gave up with this code (its 'closed' event:
//                                y-websocket does not reconnect after 4400-4499)
//   {"op": "state"}                                          answers the state only
//   {"op": "quit"}                                           destroy the provider and exit
// Every answer carries the state: {"text", "synced", "clientID", "presence": {id: state} of
// the others, "closes": [{code, reason}...] of every closed connection, "terminal": the
// 'closed' event's {code, reason} or null, "status": last provider status, "warnings": what
// y-websocket passed to console.warn (its permission-denied report)}.
// Events: {"event": "status", "status": s}, {"event": "synced", "synced": b},
//         {"event": "close", "code": c, "reason": r}, {"event": "closed", "code": c, "reason": r}.
// Waiting is event-driven: conditions are re-checked on document updates, awareness changes
// and provider events, never by polling.
import readline from 'node:readline';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';

const doc = new Y.Doc();
const body = doc.getText('body');
let provider = null;
let status = 'disconnected';
const closes = [];
let terminal = null;
// y-websocket reports a y-protocols "permission denied" message with console.warn:
// kept, so answers can show it (stdout stays JSON lines only).
const warnings = [];
console.warn = (...args) => warnings.push(args.map(String).join(' '));
const waiters = new Set();

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const others = () => {
  if (provider === null) return {};
  return Object.fromEntries(
    [...provider.awareness.getStates().entries()].filter(([id]) => id !== doc.clientID),
  );
};

const state = () => ({
  text: body.toString(),
  synced: provider !== null && provider.synced,
  clientID: doc.clientID,
  presence: others(),
  closes,
  terminal,
  status,
  warnings,
});

const satisfied = (cmd) => {
  const text = body.toString();
  if (cmd.synced && !(provider !== null && provider.synced)) return false;
  if (cmd.text !== undefined && text !== cmd.text) return false;
  if (cmd.length !== undefined && text.length !== cmd.length) return false;
  if (!(cmd.contains ?? []).every((s) => text.includes(s))) return false;
  const seen = Object.values(others()).map((s) => JSON.stringify(s));
  if (!(cmd.presence ?? []).every((p) => seen.includes(JSON.stringify(p)))) return false;
  if (cmd.closed !== undefined && !closes.some((c) => c.code === cmd.closed)) return false;
  if (cmd.terminal !== undefined && terminal?.code !== cmd.terminal) return false;
  return true;
};

// Something changed: settle the waits whose conditions now hold.
const recheck = () => {
  for (const w of [...waiters]) {
    if (satisfied(w.cmd)) w.done(true);
  }
};

const wait = (cmd) =>
  new Promise((resolve) => {
    const w = { cmd };
    const timer = setTimeout(() => w.done(false), cmd.timeout ?? 10000);
    w.done = (ok) => {
      clearTimeout(timer);
      waiters.delete(w);
      resolve(ok);
    };
    waiters.add(w);
    if (satisfied(cmd)) w.done(true);
  });

doc.on('update', () => recheck());

// A small seeded generator (mulberry32): the storms' positions are reproducible.
const rng = (seed) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));

const handle = async (cmd) => {
  switch (cmd.op) {
    case 'connect':
      provider = new WebsocketProvider(cmd.url, cmd.room, doc, {
        WebSocketPolyfill: WebSocket,
        params: cmd.params ?? {},
        disableBc: true,
        maxBackoffTime: 500,
      });
      provider.on('status', (ev) => {
        status = ev.status;
        emit({ event: 'status', status });
        recheck();
      });
      provider.on('sync', (synced) => {
        emit({ event: 'synced', synced });
        recheck();
      });
      provider.on('connection-close', (ev) => {
        const close = { code: ev?.code ?? null, reason: ev?.reason?.toString() ?? '' };
        closes.push(close);
        emit({ event: 'close', ...close });
        recheck();
      });
      provider.on('closed', (ev) => {
        terminal = { code: ev.code, reason: String(ev.reason ?? '') };
        emit({ event: 'closed', ...terminal });
        recheck();
      });
      provider.awareness.on('change', () => recheck());
      return true;
    case 'insert':
      body.insert(cmd.index, cmd.text);
      return true;
    case 'delete':
      body.delete(cmd.index, cmd.length);
      return true;
    case 'storm': {
      const random = rng(cmd.seed ?? 1);
      for (let j = 0; j < cmd.n; j++) {
        body.insert(Math.floor(random() * (body.length + 1)), `${cmd.tag}${j};`);
        await yieldToLoop();
      }
      return true;
    }
    case 'presence':
      provider.awareness.setLocalStateField(cmd.field, cmd.value);
      return true;
    case 'wait':
      return await wait(cmd);
    case 'state':
      return true;
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  if (cmd.op === 'quit') break;
  // Commands run concurrently (a wait must not block a storm), answered when each ends.
  handle(cmd).then(
    (ok) => emit({ id: cmd.id, ok, ...state() }),
    (err) => emit({ id: cmd.id, ok: false, error: String(err), ...state() }),
  );
}
if (provider !== null) provider.destroy();
process.stdout.write(JSON.stringify({ event: 'bye' }) + '\n', () => process.exit(0));
