// The demo page: one or two editors on one room of the relay that serves this page, who is
// here, connection state, an offline switch, edit counters and a version history.
// See apps/demo/README.md for the layout of the code and docs/DEMO.md for the whole demo.
import { safeColor, safeName, slotFor } from './colors.js';
import { createEditor } from './editor.js';
import { History } from './history.js';
import { readParams, relayUrl, writeParams } from './params.js';
import { Session } from './session.js';

const $ = (id) => document.getElementById(id);
const STATES = {
  synced: 'synced',
  syncing: 'syncing…',
  connecting: 'connecting…',
  offline: 'offline',
  refused: 'refused',
};

const params = readParams(location.hash);
const url = relayUrl(location);
const panes = [];

// -- one editor: a session, its CodeMirror view and its controls ---------------------------

function openPane(name) {
  const session = new Session({ url, room: params.room, name, token: params.token });
  const node = $('pane').content.firstElementChild.cloneNode(true);
  node.dataset.name = name;
  $('panes').append(node);
  const { view, undoManager, root } = createEditor(session, node.querySelector('.editor'));
  const head = node.querySelector('.pane-head');
  head.querySelector('.who').textContent = name;
  head.querySelector('.me').classList.add(`c${slotFor(session.color, name)}`);
  const state = head.querySelector('.state');
  const online = head.querySelector('.online');
  online.addEventListener('click', () => session.setOnline(!session.online));
  head.querySelector('.undo').addEventListener('click', () => {
    undoManager.undo();
    view.focus();
  });
  head.querySelector('.redo').addEventListener('click', () => {
    undoManager.redo();
    view.focus();
  });

  const showState = () => {
    const s = session.state;
    state.textContent = s === 'refused' ? `refused (${session.refused})` : STATES[s];
    head.dataset.state = s;
    online.textContent = session.online ? 'Go offline' : 'Go online';
    online.setAttribute('aria-pressed', String(session.online));
  };
  const people = node.querySelector('.people');
  const showPeople = () => {
    const chips = [];
    for (const [client, st] of session.awareness.getStates()) {
      if (!st || !st.user) continue;
      const who = safeName(st.user);
      const chip = document.createElement('span');
      chip.className = `chip c${slotFor(safeColor(st.user.color), who)}`;
      chip.dataset.client = String(client);
      chip.textContent = client === session.doc.clientID ? `${who} (you)` : who;
      chips.push([client === session.doc.clientID ? '' : who, chip]);
    }
    chips.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    people.replaceChildren(...chips.map(([, chip]) => chip));
  };
  session.onChange(showState);
  session.awareness.on('change', showPeople);
  showState();
  showPeople();

  const pane = {
    session,
    undoManager,
    view,
    node,
    close() {
      session.provider.destroy();
      view.destroy();
      node.remove();
    },
    // For the tests (tests/apps/test_demo_browser.py) and the curious, in the console.
    api: {
      name,
      clientID: session.doc.clientID,
      text: () => session.text.toString(),
      editorText: () => view.state.doc.toString(),
      get state() {
        return session.state;
      },
      get closes() {
        return session.closes.slice();
      },
      people: () => [...people.children].map((c) => c.textContent),
      carets: () => [...root.querySelectorAll('.rc-caret')].map((c) => c.dataset.name),
      caretPositions: () =>
        [...root.querySelectorAll('.rc-caret')].map((c) => ({ name: c.dataset.name, pos: view.posAtDOM(c) })),
      cursor: () => view.state.selection.main.head,
      setOnline: (on) => session.setOnline(on),
      undo: () => undoManager.undo() !== null,
    },
  };
  panes.push(pane);
  return pane;
}

// -- the side panel: edit counters and history of the first editor -------------------------

function showCounters(session) {
  const list = $('counter-list');
  const render = () => {
    const counts = session.editCounts();
    const most = Math.max(1, ...counts.map((c) => c.count));
    list.replaceChildren(
      ...counts.map(({ name, count }) => {
        const item = document.createElement('li');
        item.className = `c${slotFor(null, name)}`;
        item.dataset.name = name;
        const label = document.createElement('span');
        label.className = 'label';
        label.textContent = name;
        const bar = document.createElement('span');
        bar.className = 'bar';
        bar.style.width = `${Math.max(2, (100 * count) / most)}%`;
        const value = document.createElement('span');
        value.className = 'count';
        value.textContent = String(count);
        item.append(label, bar, value);
        return item;
      }),
    );
  };
  session.edits.observe(render);
  session.names.observe(render);
  render();
}

function showHistory(session, undoManager) {
  const versions = new History(session);
  const slider = $('history-slider');
  const label = $('history-label');
  const preview = $('history-preview');
  const restore = $('history-restore');
  let following = true;
  const render = () => {
    const n = versions.length;
    slider.max = String(Math.max(0, n - 1));
    if (following) slider.value = slider.max;
    const i = Number(slider.value);
    const live = following || i >= n - 1;
    preview.hidden = live;
    restore.hidden = live;
    if (n === 0) {
      label.textContent = 'No versions yet';
      return;
    }
    const v = versions.info(i);
    const when = new Date(v.time).toLocaleTimeString();
    label.textContent = `${live ? 'Live · ' : ''}version ${i + 1} of ${n} · ${when} · ${v.authors.join(', ') || '—'}`;
    if (!live) preview.textContent = versions.text(i);
  };
  slider.addEventListener('input', () => {
    following = Number(slider.value) >= versions.length - 1;
    render();
  });
  restore.addEventListener('click', () => {
    // A restore is one undo step of its own: without the two stops, typing less than
    // the undo manager's capture timeout (500 ms) before or after it would merge with
    // it, and one undo would take back the typing too.
    undoManager.stopCapturing();
    versions.restore(Number(slider.value));
    undoManager.stopCapturing();
    following = true;
    render();
  });
  versions.onChange(render);
  render();
  return versions;
}

// -- the page -------------------------------------------------------------------------------

function start() {
  if (!params.room) {
    $('panes').textContent = 'This room name is not valid: use letters, digits and . _ ~ : @ + - /';
    return;
  }
  $('room').textContent = params.room;
  document.title = `${params.room} · crdtsync demo`;
  const first = openPane(params.name);
  showCounters(first.session);
  const versions = showHistory(first.session, first.undoManager);

  const split = $('split');
  const setSplit = (on) => {
    split.checked = on;
    document.body.classList.toggle('split', on);
    if (on && panes.length === 1) openPane(`${params.name}·2`);
    if (!on && panes.length === 2) panes.pop().close();
    window.history.replaceState(null, '', writeParams({ ...params, split: on }));
  };
  split.addEventListener('change', () => setSplit(split.checked));
  setSplit(params.split);

  $('copy-link').addEventListener('click', async () => {
    const link = `${location.origin}${location.pathname}${writeParams({ room: params.room, token: params.token })}`;
    const button = $('copy-link');
    try {
      await navigator.clipboard.writeText(link);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Copy failed: the link is in the address bar';
    }
    setTimeout(() => (button.textContent = 'Copy invite link'), 2000);
  });
  // Another room or name in the address bar: start again with it.
  window.addEventListener('hashchange', () => location.reload());

  window.demo = {
    panes: () => panes.map((p) => p.api),
    counts: () => first.session.editCounts(),
    history: {
      get length() {
        return versions.length;
      },
      info: (i) => versions.info(i),
      text: (i) => versions.text(i),
    },
  };
}

start();
