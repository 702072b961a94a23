"""The relay server: where peers that are not on one LAN meet (``crdtsync relay``).

* :mod:`~crdtsync.relay.server`: :class:`~crdtsync.relay.server.Relay` (crdtsync
  protocol and y-protocols on one port: lifecycle, HTTP, routing) and
  :func:`~crdtsync.relay.server.serve`;
* :mod:`~crdtsync.relay.backend`: the seam to where rooms live
  (:class:`~crdtsync.relay.backend.RoomBackend`; a Peer by default);
* :mod:`~crdtsync.relay.rooms`, :mod:`~crdtsync.relay.yconn`,
  :mod:`~crdtsync.relay.limits`, :mod:`~crdtsync.relay.metrics`,
  :mod:`~crdtsync.relay.logs`: the rooms' y-protocols clients and fan-out, one
  y-protocols connection, connection limits, ``/metrics``, JSON logs;
* :mod:`~crdtsync.relay.config`: :class:`~crdtsync.relay.config.RelayConfig`,
  its settings and limits;
* :mod:`~crdtsync.relay.tokens`: signed access tokens;
* :mod:`~crdtsync.relay.names`: the room names the relay accepts.

The names below are re-exported lazily, so ``import crdtsync.relay.tokens``
(used by ``crdtsync token``) does not load the server and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CLOSE_CODES": "crdtsync.relay.server",
    "Relay": "crdtsync.relay.server",
    "serve": "crdtsync.relay.server",
    "RelayConfig": "crdtsync.relay.config",
    "TokenClaims": "crdtsync.relay.tokens",
    "mint_token": "crdtsync.relay.tokens",
    "verify_token": "crdtsync.relay.tokens",
    "validate_room": "crdtsync.relay.names",
}

__all__ = [
    "CLOSE_CODES",
    "Relay",
    "RelayConfig",
    "TokenClaims",
    "mint_token",
    "serve",
    "validate_room",
    "verify_token",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crdtsync.relay' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from crdtsync.relay.config import RelayConfig
    from crdtsync.relay.names import validate_room
    from crdtsync.relay.server import CLOSE_CODES, Relay, serve
    from crdtsync.relay.tokens import TokenClaims, mint_token, verify_token
