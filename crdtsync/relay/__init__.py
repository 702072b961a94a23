"""The relay server: where peers that are not on one LAN meet (``crdtsync relay``).

* :class:`Relay`: the server (crdtsync protocol and y-protocols on one port);
* :class:`RelayConfig`: its settings and limits;
* :func:`mint_token` / :func:`verify_token`: signed access tokens;
* :func:`validate_room`: the room names the relay accepts.
"""

from .config import RelayConfig
from .names import validate_room
from .server import CLOSE_CODES, Relay, serve
from .tokens import TokenClaims, mint_token, verify_token

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
