// A CodeMirror 6 editor bound to a session's Y.Text by y-codemirror.next, with Yjs undo
// (your own edits only), remote carets and heading styles.
import * as Y from 'yjs';
import { EditorState } from '@codemirror/state';
import {
  EditorView,
  drawSelection,
  highlightActiveLine,
  highlightSpecialChars,
  keymap,
  placeholder,
} from '@codemirror/view';
import { defaultKeymap, indentWithTab } from '@codemirror/commands';
import { yCollab, ySyncAnnotation, ySyncFacet, yUndoManagerKeymap } from 'y-codemirror.next';
import { remoteCarets } from './carets.js';
import { headings } from './headings.js';

/** Origin of "restore this version" transactions (undoable like typing). */
export const RESTORE = Symbol('restore');

/**
 * An editor in `host`, inside a shadow root: there CodeMirror's styles go into an adopted
 * style sheet, which the page's Content-Security-Policy allows (in the document they
 * would be an inline <style> element, which it refuses).
 */
export function createEditor(session, host) {
  const shadow = host.attachShadow({ mode: 'open' });
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = 'editor.css';
  const parent = document.createElement('div');
  parent.className = 'wrap';
  shadow.append(link, parent);
  const undoManager = new Y.UndoManager(session.text, { trackedOrigins: new Set([RESTORE]) });
  const collab = yCollab(session.text, null, { undoManager });
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: session.text.toString(),
      extensions: [
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        highlightSpecialChars(),
        drawSelection(),
        highlightActiveLine(),
        EditorView.lineWrapping,
        placeholder('Type here: everyone in the room sees it as you type.'),
        collab,
        remoteCarets(session),
        headings,
      ],
    }),
    // A change typed here and its edit count go to the relay as one Yjs transaction,
    // under y-codemirror.next's own origin (so its undo manager records it).
    dispatchTransactions(trs, view) {
      const typed = trs.some((tr) => tr.docChanged && tr.annotation(ySyncAnnotation) === undefined);
      if (!typed) {
        view.update(trs);
        return;
      }
      const origin = view.state.facet(ySyncFacet);
      session.doc.transact(() => {
        view.update(trs);
        session.countEdit();
      }, origin);
    },
  });
  return { view, undoManager, root: shadow };
}
