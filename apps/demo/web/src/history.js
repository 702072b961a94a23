// Versions of the text as this tab saw them: every update the document received (typed
// here or arriving from the relay) is kept in arrival order, which is always a causal
// order, so replaying a prefix of them into a fresh Y.Doc gives the document exactly as it
// was at that moment. Bursts of updates by the same people (less than GAP_MS apart) make
// one version.
// Restoring a version writes the difference as one new edit, which syncs and can be
// undone like typing.
import * as Y from 'yjs';
import { RESTORE } from './editor.js';

const GAP_MS = 1500;
// Updates kept before the oldest ones are folded into the base (bounded memory).
const MAX_UPDATES = 4000;

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;

export class History {
  constructor(session, now = () => Date.now()) {
    this.session = session;
    this.now = now;
    this.base = Y.encodeStateAsUpdate(new Y.Doc());
    // {update, time, clients}: clients that wrote something in the update.
    this.entries = [];
    // Index into entries of the last update of each version.
    this.ends = [];
    this.cache = new Map();
    this.listeners = new Set();
    // Who wrote the latest update that wrote something (client ids, sorted).
    this.writers = '';
    session.doc.on('update', (update) => this.record(update));
  }

  record(update) {
    const time = this.now();
    const meta = Y.parseUpdateMeta(update);
    const clients = new Set([...meta.to].filter(([c, clock]) => clock > (meta.from.get(c) ?? 0)).map(([c]) => c));
    const last = this.entries[this.entries.length - 1];
    this.entries.push({ update, time, clients });
    // A new version after a pause, or when someone else starts writing.
    const writers = [...clients].sort().join(' ');
    const otherWriters = writers !== '' && this.writers !== '' && writers !== this.writers;
    if (writers !== '') this.writers = writers;
    if (last && time - last.time < GAP_MS && !otherWriters && this.ends.length) {
      this.ends[this.ends.length - 1] = this.entries.length - 1;
    } else {
      this.ends.push(this.entries.length - 1);
    }
    if (this.entries.length > MAX_UPDATES) this.fold();
    this.cache.delete(this.ends.length - 1);
    for (const fn of this.listeners) fn(this);
  }

  fold() {
    // Fold the oldest half of the versions into the base.
    const drop = this.ends[Math.floor(this.ends.length / 2)] + 1;
    this.base = Y.mergeUpdates([this.base, ...this.entries.slice(0, drop).map((e) => e.update)]);
    this.entries = this.entries.slice(drop);
    this.ends = this.ends.filter((end) => end >= drop).map((end) => end - drop);
    this.cache.clear();
  }

  get length() {
    return this.ends.length;
  }

  /** {time, authors} of version i (0 is the oldest kept): who wrote in it, and when it ended. */
  info(i) {
    const end = this.ends[i];
    const clients = new Set();
    for (let k = i > 0 ? this.ends[i - 1] + 1 : 0; k <= end; k++) {
      for (const c of this.entries[k].clients) clients.add(c);
    }
    const names = [...clients].map((c) => {
      const n = this.session.names.get(String(c));
      return typeof n === 'string' && n ? n : c === this.session.doc.clientID ? this.session.name : `client ${c}`;
    });
    return { time: this.entries[end].time, authors: [...new Set(names)].sort() };
  }

  /** The text at the end of version i: the base and every update up to it, replayed. */
  text(i) {
    let text = this.cache.get(i);
    if (text !== undefined) return text;
    const doc = new Y.Doc();
    Y.applyUpdate(doc, this.base);
    for (let k = 0; k <= this.ends[i]; k++) Y.applyUpdate(doc, this.entries[k].update);
    text = doc.getText('body').toString();
    doc.destroy();
    this.cache.set(i, text);
    return text;
  }

  /** Make the text what it was at version i: one edit, from here, that everyone gets. */
  restore(i) {
    const target = this.text(i);
    const { doc, text } = this.session;
    const now = text.toString();
    let start = 0;
    while (start < now.length && start < target.length && now[start] === target[start]) start++;
    let endNow = now.length;
    let endTarget = target.length;
    while (endNow > start && endTarget > start && now[endNow - 1] === target[endTarget - 1]) {
      endNow--;
      endTarget--;
    }
    // Never cut a surrogate pair in two (the relay refuses text with half a character).
    if (start > 0 && isHigh(now.charCodeAt(start - 1))) start--;
    if (endNow < now.length && isLow(now.charCodeAt(endNow))) {
      endNow++;
      endTarget++;
    }
    if (start === endNow && start === endTarget) return false;
    doc.transact(() => {
      if (endNow > start) text.delete(start, endNow - start);
      if (endTarget > start) text.insert(start, target.slice(start, endTarget));
      this.session.countEdit();
    }, RESTORE);
    return true;
  }

  onChange(fn) {
    this.listeners.add(fn);
  }
}
