// Colours of people, the same in the page and in the terminal editor
// (crdtsync/apps/editor.py computes them the same way): a palette of eight, picked by a
// hash of the name, so "ana" has one colour wherever she edits.

export const PALETTE = [
  '#e8590c', // orange
  '#1c7ed6', // blue
  '#2b8a3e', // green
  '#ae3ec9', // violet
  '#e03131', // red
  '#0c8599', // teal
  '#f08c00', // amber
  '#5f3dc4', // indigo
];

const HEX = /^#[0-9a-fA-F]{6}$/;

/** Index into PALETTE for a name: h = h * 31 + code point, modulo 2**32. */
export function paletteIndex(name) {
  let h = 0;
  for (const ch of String(name)) h = (Math.imul(h, 31) + ch.codePointAt(0)) >>> 0;
  return h % PALETTE.length;
}

export const colorFor = (name) => PALETTE[paletteIndex(name)];

/**
 * A colour from someone else's presence state, checked: '#rrggbb' or nothing.
 * (Presence comes from other clients: it is never put in markup or a style attribute.)
 */
export const safeColor = (value) => (typeof value === 'string' && HEX.test(value) ? value : null);

/** The palette slot whose class (.c0 ... .c7 in app.css) tints a selection of this colour. */
export function slotFor(color, name) {
  const i = PALETTE.indexOf(String(color).toLowerCase());
  return i >= 0 ? i : paletteIndex(name);
}

/** A name from a presence state, as plain text of at most 40 characters. */
export function safeName(user) {
  const name = user && typeof user.name === 'string' ? user.name.trim() : '';
  if (!name) return 'anonymous';
  const chars = [...name];
  return chars.length > 40 ? chars.slice(0, 39).join('') + '…' : name;
}
