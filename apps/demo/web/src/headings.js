// Markdown-style headings ("# Title", "## Section") shown larger, by line classes only
// (no language package: the page stays small, and classes keep within the CSP).
import { RangeSetBuilder } from '@codemirror/state';
import { Decoration, ViewPlugin } from '@codemirror/view';

const HEADING = /^(#{1,3})\s/;
const levels = [1, 2, 3].map((n) => Decoration.line({ class: `cm-heading cm-h${n}` }));

function build(view) {
  const builder = new RangeSetBuilder();
  for (const { from, to } of view.visibleRanges) {
    for (let pos = from; pos <= to; ) {
      const line = view.state.doc.lineAt(pos);
      const m = HEADING.exec(line.text);
      if (m) builder.add(line.from, line.from, levels[m[1].length - 1]);
      pos = line.to + 1;
    }
  }
  return builder.finish();
}

export const headings = ViewPlugin.fromClass(
  class {
    constructor(view) {
      this.decorations = build(view);
    }

    update(update) {
      if (update.docChanged || update.viewportChanged) this.decorations = build(update.view);
    }
  },
  { decorations: (v) => v.decorations },
);
