"""asyncio shells around the protocol cores.

* :mod:`~crdtsync.peer.peer`: :class:`~crdtsync.peer.peer.Peer`, which owns
  documents, a durable store and connections over any transport;
* :mod:`~crdtsync.peer.yprovider`: :class:`~crdtsync.peer.yprovider.YProvider`,
  a document kept in sync with a room of any y-websocket server.
"""
