// A plain browser editor on the stock y-websocket provider: a <textarea> bound to
// ydoc.getText('body'), and a list of who else is in the room (awareness).
// tests/interop/test_relay_browser.py bundles it with esbuild and opens it in Debian's
// chromium (Playwright), against the crdtsync relay, beside a Python Peer.
//
// URL parameters: relay (ws://host:port), room, token (optional), name (shown to others).
// For the test, window.editor exposes the state: text(), synced, status, presence(),
// closes (every close event's {code, reason}).
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

const params = new URLSearchParams(location.search);
const relay = params.get('relay');
const room = params.get('room') ?? 'notes';
const token = params.get('token');
const name = params.get('name') ?? 'browser';

const ydoc = new Y.Doc();
const ytext = ydoc.getText('body');
const provider = new WebsocketProvider(relay, room, ydoc, {
  params: token ? { token } : {},
  // Reconnect quickly: the test restarts nothing, but a dropped link should not wait long.
  maxBackoffTime: 500,
});
provider.awareness.setLocalStateField('user', { name });

const area = document.getElementById('body');
const statusEl = document.getElementById('status');
const peopleEl = document.getElementById('people');
const closes = [];

// The textarea holds what ytext held at the last sync of the two; `shown` is that value.
let shown = '';

// Local typing: one transaction with the difference between the old and new value
// (common prefix and suffix kept), so concurrent remote edits elsewhere survive.
area.addEventListener('input', () => {
  const now = area.value;
  let start = 0;
  while (start < shown.length && start < now.length && shown[start] === now[start]) start++;
  let endOld = shown.length;
  let endNew = now.length;
  while (endOld > start && endNew > start && shown[endOld - 1] === now[endNew - 1]) {
    endOld--;
    endNew--;
  }
  ydoc.transact(() => {
    if (endOld > start) ytext.delete(start, endOld - start);
    if (endNew > start) ytext.insert(start, now.slice(start, endNew));
  }, 'textarea');
  shown = now;
});

// Remote edits: rewrite the textarea and move the caret with the delta, so typing
// continues where the user was.
ytext.observe((event) => {
  if (event.transaction.origin === 'textarea') return;
  let caret = area.selectionStart;
  let pos = 0;
  for (const op of event.delta) {
    if (op.retain !== undefined) pos += op.retain;
    else if (op.insert !== undefined) {
      if (pos <= caret) caret += op.insert.length;
      pos += op.insert.length;
    } else if (op.delete !== undefined) {
      if (pos < caret) caret -= Math.min(op.delete, caret - pos);
    }
  }
  shown = ytext.toString();
  area.value = shown;
  area.setSelectionRange(caret, caret);
});

const people = () =>
  Object.fromEntries(
    [...provider.awareness.getStates().entries()].filter(([id]) => id !== ydoc.clientID),
  );
provider.awareness.on('change', () => {
  peopleEl.textContent = Object.values(people())
    .map((s) => s?.user?.name ?? JSON.stringify(s))
    .join(', ');
});
provider.on('status', ({ status }) => {
  statusEl.textContent = status;
});
provider.on('connection-close', (event) => {
  if (event) closes.push({ code: event.code, reason: event.reason });
});

window.editor = {
  text: () => ytext.toString(),
  get synced() {
    return provider.synced;
  },
  get status() {
    return statusEl.textContent;
  },
  clientID: ydoc.clientID,
  presence: people,
  closes,
  setPresence: (field, value) => provider.awareness.setLocalStateField(field, value),
};
