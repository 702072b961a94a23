// A stock y-websocket client (WebsocketProvider + yjs) driven by tests/peer/test_yprovider.py.
// stdin: one JSON command per line; stdout: one JSON answer per command, in order.
//   {"op": "insert", "index": i, "text": s}       edit ydoc.getText("body") (works offline too)
//   {"op": "type", "text": s}                      append s one character per transaction
//   {"op": "presence", "state": {...}}             set the local awareness state
//   {"op": "connect", "url": u, "room": r, "params": {...}}   start the WebsocketProvider
//   {"op": "wait", "contains": [s...], "presence": [json...], "synced": bool, "timeout": ms}
//                                                  wait until the text contains every s, every
//                                                  presence state is present (JSON-equal), synced
//                                                  ("alone": true: nobody else's presence is left)
//   {"op": "state"}                                answer only
//   {"op": "quit"}                                 destroy the provider and exit
// Every answer: {"ok": bool, "text": body, "presence": {client id: state} of the others,
//                "synced": bool, "clientID": n}.
import readline from 'node:readline';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { Awareness } from 'y-protocols/awareness';
import WebSocket from 'ws';

const doc = new Y.Doc();
const body = doc.getText('body');
const awareness = new Awareness(doc);
awareness.setLocalState(null);
let provider = null;

// Presence of everyone else, by client id.
const others = () =>
  Object.fromEntries([...awareness.getStates().entries()].filter(([id]) => id !== doc.clientID));

const state = (ok) => ({
  ok,
  text: body.toString(),
  presence: others(),
  synced: provider !== null && provider.synced,
  clientID: doc.clientID,
});

const satisfied = (cmd) => {
  const text = body.toString();
  if (!(cmd.contains ?? []).every((s) => text.includes(s))) return false;
  const seen = Object.values(others()).map((s) => JSON.stringify(s));
  if (!(cmd.presence ?? []).every((p) => seen.includes(JSON.stringify(p)))) return false;
  if (cmd.synced && !(provider !== null && provider.synced)) return false;
  if (cmd.alone && Object.keys(others()).length > 0) return false;
  return true;
};

const wait = (cmd) =>
  new Promise((resolve) => {
    const deadline = Date.now() + (cmd.timeout ?? 10000);
    const check = () => {
      if (satisfied(cmd)) resolve(true);
      else if (Date.now() > deadline) resolve(false);
      else setTimeout(check, 10);
    };
    check();
  });

const handle = async (cmd) => {
  switch (cmd.op) {
    case 'insert':
      body.insert(cmd.index, cmd.text);
      return state(true);
    case 'type':
      for (const ch of cmd.text) {
        body.insert(body.length, ch);
        await new Promise((r) => setTimeout(r, 1));
      }
      return state(true);
    case 'presence':
      awareness.setLocalState(cmd.state);
      return state(true);
    case 'connect':
      provider = new WebsocketProvider(cmd.url, cmd.room, doc, {
        WebSocketPolyfill: WebSocket,
        params: cmd.params ?? {},
        awareness,
        disableBc: true,
        maxBackoffTime: 500,
      });
      return state(true);
    case 'wait':
      return state(await wait(cmd));
    case 'state':
      return state(true);
    case 'quit':
      if (provider !== null) provider.destroy();
      process.stdout.write(JSON.stringify(state(true)) + '\n', () => process.exit(0));
      return null;
    default:
      return { ok: false, error: `unknown op ${cmd.op}` };
  }
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const answer = await handle(JSON.parse(line));
  if (answer !== null) process.stdout.write(JSON.stringify(answer) + '\n');
}
if (provider !== null) provider.destroy();
process.exit(0);
