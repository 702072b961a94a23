// One participant: a Y.Doc synced with the relay through the stock y-websocket provider,
// its presence (awareness), and the per-person edit counter.
//
// Document layout, shared with Python (crdtsync.Doc) and the terminal editor:
//   body               Y.Text   the text (doc.text("body"))
//   edits              Y.Map    a crdtsync Counter (doc.counter("edits")): "<client id>" ->
//                               that client's running total of edits; the value is the sum
//   names              Y.Map    "<client id>" -> the name of the person behind it
//   __crdtsync_roots   Y.Map    crdtsync's root registry: root name -> container kind
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { colorFor } from './colors.js';

export class Session {
  constructor({ url, room, name, token }) {
    this.name = name;
    this.color = colorFor(name);
    this.doc = new Y.Doc();
    this.text = this.doc.getText('body');
    this.edits = this.doc.getMap('edits');
    this.names = this.doc.getMap('names');
    this.roots = this.doc.getMap('__crdtsync_roots');
    this.status = 'connecting';
    this.online = true;
    this.closes = [];
    this.refused = null;
    this.listeners = new Set();
    this.provider = new WebsocketProvider(url, room, this.doc, {
      params: token ? { token } : {},
      // Two editors in one page (or two tabs) must sync through the relay, not directly.
      disableBc: true,
      // Reconnect within a few seconds when the relay comes back.
      maxBackoffTime: 2500,
    });
    this.awareness = this.provider.awareness;
    this.awareness.setLocalStateField('user', {
      name,
      color: this.color,
      colorLight: this.color + '33',
    });
    this.provider.on('status', ({ status }) => {
      this.status = status;
      this.changed();
    });
    this.provider.on('sync', () => this.changed());
    this.provider.on('connection-close', (event) => {
      if (event) this.closes.push({ code: event.code, reason: event.reason });
    });
    this.provider.on('closed', ({ code, reason }) => {
      this.refused = `${code}${reason ? ': ' + reason : ''}`;
      this.changed();
    });
  }

  /**
   * Count one edit of this client's. Called inside the transaction of the edit itself
   * (editor.js wraps the editor's changes in one), so the edit and its count travel in
   * one update.
   */
  countEdit() {
    const key = String(this.doc.clientID);
    this.doc.transact(() => {
      // Register the roots the way crdtsync does, so Python sees their kinds.
      for (const [root, kind] of [['body', 'text'], ['edits', 'counter'], ['names', 'map']]) {
        if (this.roots.get(root) === undefined) this.roots.set(root, kind);
      }
      const mine = this.edits.get(key);
      this.edits.set(key, (Number.isSafeInteger(mine) ? mine : 0) + 1);
      if (this.names.get(key) !== this.name) this.names.set(key, this.name);
    });
  }

  /** "offline" (switched off), "refused", "connecting", "syncing" or "synced". */
  get state() {
    if (this.refused) return 'refused';
    if (!this.online) return 'offline';
    if (this.status !== 'connected') return 'connecting';
    return this.provider.synced ? 'synced' : 'syncing';
  }

  setOnline(online) {
    this.online = online;
    if (online) this.provider.connect();
    else this.provider.disconnect();
    this.changed();
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    for (const fn of this.listeners) fn(this);
  }

  /** Edits per person: [{name, count}], most first. */
  editCounts() {
    const byName = new Map();
    for (const [key, value] of this.edits.entries()) {
      if (key.startsWith('\u0000') || !/^[0-9]+$/.test(key) || !Number.isSafeInteger(value)) continue;
      const who = this.names.get(key);
      const name = typeof who === 'string' && who ? who : `client ${key}`;
      byName.set(name, (byName.get(name) ?? 0) + value);
    }
    return [...byName].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count || (a.name < b.name ? -1 : 1));
  }
}
