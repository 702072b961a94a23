// Remote carets and selections, drawn from the presence (awareness) states of the others,
// and this editor's own selection published as Yjs relative positions (so it stays on
// the same characters while others type).
//
// y-codemirror.next has a plugin for this, but it writes each person's colour into
// inline style attributes, which the page's Content-Security-Policy refuses (and which
// would put another client's text into CSS). Here a selection is tinted by a class
// (.c0 ... .c7 in app.css) and the caret's colour is set through the CSSOM, after the
// colour was checked to be '#rrggbb'.
import * as Y from 'yjs';
import { Annotation, RangeSet } from '@codemirror/state';
import { Decoration, ViewPlugin, WidgetType } from '@codemirror/view';
import { safeColor, safeName, slotFor } from './colors.js';

const refresh = Annotation.define();

class Caret extends WidgetType {
  constructor(color, slot, name) {
    super();
    this.color = color;
    this.slot = slot;
    this.name = name;
  }

  eq(other) {
    return other.color === this.color && other.name === this.name && other.slot === this.slot;
  }

  toDOM() {
    const caret = document.createElement('span');
    caret.className = `rc-caret c${this.slot}`;
    caret.setAttribute('aria-hidden', 'true');
    caret.dataset.name = this.name;
    const label = document.createElement('span');
    label.className = 'rc-label';
    label.textContent = this.name;
    if (this.color) {
      caret.style.borderColor = this.color;
      label.style.backgroundColor = this.color;
    }
    caret.append('\u2060', label, '\u2060');
    return caret;
  }

  ignoreEvent() {
    return true;
  }
}

function absolute(json, doc, text) {
  // Another client's relative position: any shape may arrive, so failures mean "no caret".
  try {
    if (json == null || typeof json !== 'object') return null;
    const pos = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc);
    return pos && pos.type === text ? pos.index : null;
  } catch {
    return null;
  }
}

/** The remote carets extension for one session (see session.js). */
export function remoteCarets(session) {
  const { doc, text, awareness } = session;
  return ViewPlugin.fromClass(
    class {
      constructor(view) {
        this.view = view;
        this.decorations = RangeSet.empty;
        this.onAwareness = ({ added, updated, removed }) => {
          if ([...added, ...updated, ...removed].some((id) => id !== doc.clientID)) {
            // Redraw outside the awareness callback.
            queueMicrotask(() => this.view.dispatch({ annotations: refresh.of(true) }));
          }
        };
        awareness.on('change', this.onAwareness);
        this.publish(view.state);
        this.decorations = this.build(view.state);
      }

      destroy() {
        awareness.off('change', this.onAwareness);
      }

      update(update) {
        if (update.selectionSet || update.docChanged || update.focusChanged) this.publish(update.state);
        this.decorations = this.build(update.state);
      }

      publish(state) {
        const local = awareness.getLocalState();
        if (local == null) return;
        const sel = state.selection.main;
        const anchor = Y.createRelativePositionFromTypeIndex(text, sel.anchor);
        const head = Y.createRelativePositionFromTypeIndex(text, sel.head);
        const old = local.cursor;
        if (
          old &&
          Y.compareRelativePositions(Y.createRelativePositionFromJSON(old.anchor), anchor) &&
          Y.compareRelativePositions(Y.createRelativePositionFromJSON(old.head), head)
        ) {
          return;
        }
        awareness.setLocalStateField('cursor', {
          anchor: Y.relativePositionToJSON(anchor),
          head: Y.relativePositionToJSON(head),
        });
      }

      build(state) {
        const ranges = [];
        const length = state.doc.length;
        for (const [client, st] of awareness.getStates()) {
          if (client === doc.clientID || !st || !st.cursor) continue;
          let anchor = absolute(st.cursor.anchor, doc, text);
          let head = absolute(st.cursor.head, doc, text);
          if (head == null) continue;
          if (anchor == null) anchor = head;
          // The Y.Text and the editor agree after every sync; clamp in case they do not yet.
          anchor = Math.min(anchor, length);
          head = Math.min(head, length);
          const name = safeName(st.user);
          const color = safeColor(st.user && st.user.color);
          const slot = slotFor(color, name);
          const from = Math.min(anchor, head);
          const to = Math.max(anchor, head);
          if (from < to) {
            ranges.push(Decoration.mark({ class: `rc-selection c${slot}` }).range(from, to));
          }
          ranges.push(
            Decoration.widget({ widget: new Caret(color, slot, name), side: head > anchor ? -1 : 1 }).range(head),
          );
        }
        return Decoration.set(ranges, true);
      }
    },
    { decorations: (v) => v.decorations },
  );
}
