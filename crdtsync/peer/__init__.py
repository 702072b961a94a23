"""asyncio shells around the protocol cores.

* :mod:`~crdtsync.peer.peer`: :class:`~crdtsync.peer.peer.Peer`, which owns
  documents, a durable store and connections over any transport;
* :mod:`~crdtsync.peer.yprovider`: :class:`~crdtsync.peer.yprovider.YProvider`,
  a document kept in sync with a room of any y-websocket server (the shell of a
  client-side :class:`~crdtsync.protocol.ysession.YSession`);
* :mod:`~crdtsync.peer.guests`: :class:`~crdtsync.peer.guests.Guest`, how
  connections of another protocol (the relay's y-protocols clients) take part
  in a Peer's documents, and the :class:`~crdtsync.peer.guests.DocWatcher` that
  hears every change;
* :mod:`~crdtsync.peer.policy`: the one write policy (read-only grants, writer
  ids) of sessions and guests;
* :mod:`~crdtsync.peer.schemes`: which transport an address's scheme picks
  when a Peer has none.
"""
