"""Sans-I/O protocol cores: bytes in, bytes and events out, time passed in.

* :mod:`~crdtsync.protocol.messages`: crdtsync frames and messages (``docs/PROTOCOL.md``);
* :mod:`~crdtsync.protocol.session`: :class:`~crdtsync.protocol.session.Session`,
  the per-connection state machine;
* :mod:`~crdtsync.protocol.awareness`: presence states, y-protocols compatible;
* :mod:`~crdtsync.protocol.yprotocol`: the y-protocols messages y-websocket speaks;
* :mod:`~crdtsync.protocol.ysession`: :class:`~crdtsync.protocol.ysession.YSession`,
  one y-protocols connection's state machine, client or server side;
* :mod:`~crdtsync.protocol.limits`: a token bucket and a frame counter (rate limits).

Nothing here imports asyncio, a socket library or pycrdt (enforced by the
layer contracts in ``pyproject.toml``).
"""
