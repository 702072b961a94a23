"""Transports: what moves a sync session's bytes between peers.

This directory installs as ``crdtsync.transports`` (see ``pyproject.toml``; a
symlink ``crdtsync/transports`` lets mypy and the editable install see the same
path). Each module implements the seam of :mod:`crdtsync.net` and passes
``crdtsync.testing.check_transport``:

* :mod:`crdtsync.transports.memory`: an in-memory network with seeded fault
  injection, for tests;
* :mod:`crdtsync.transports.websocket`: WebSocket, ``ws://`` and ``wss://``
  (needs the ``websockets`` extra).

Import the module you need; this package imports nothing by itself, so that
choosing one transport never loads another's dependencies.
"""
