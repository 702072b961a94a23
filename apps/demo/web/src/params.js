// The page's settings live in the URL's fragment, which never reaches a server (so a token
// in it stays out of logs): /demo/#room=notes&name=ana&token=...&split=1

const ROOM = /^[A-Za-z0-9._~:@+\-]+(\/[A-Za-z0-9._~:@+\-]+)*$/;

export function readParams(hash) {
  const q = new URLSearchParams(hash.replace(/^#/, ''));
  let room = q.get('room') || 'notes';
  // The relay's rule for room names (crdtsync/relay/names.py): refuse rather than repair.
  const roomOk = room.length <= 128 && ROOM.test(room) && !room.split('/').some((s) => s === '.' || s === '..');
  if (!roomOk) room = null;
  const name = (q.get('name') || '').trim().slice(0, 40) || `guest-${Math.floor(Math.random() * 900 + 100)}`;
  return {
    room,
    name,
    token: q.get('token') || null,
    split: q.get('split') === '1',
  };
}

export function writeParams({ room, name, token, split }) {
  const q = new URLSearchParams();
  if (room) q.set('room', room);
  if (name) q.set('name', name);
  if (token) q.set('token', token);
  if (split) q.set('split', '1');
  return '#' + q.toString();
}

/** The relay's WebSocket address: the page is served by the relay itself. */
export function relayUrl(loc) {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}`;
}
