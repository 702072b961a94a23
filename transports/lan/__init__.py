"""LAN peer-to-peer: device keys, a group key, and mutually authenticated links.

Installs as ``crdtsync.transports.lan`` and needs the ``lan`` extra
(``pip install 'crdtsync[lan]'``: cryptography, zeroconf, spake2); the rest of
crdtsync never imports it. The pieces, each its own module:

* :mod:`.identity`: :class:`DeviceIdentity` (a device's X25519 key pair, kept
  beside its store), :class:`GroupKey` (the secret a group shares), fingerprints
  and the rotating group tag;
* :mod:`.noise`: the Noise ``XXpsk3_25519_ChaChaPoly_BLAKE2s`` handshake, without I/O;
* :mod:`.channel`: the link protocol (handshake framing, encrypted frames),
  without I/O;
* :mod:`.link`: :class:`LanTransport`, the asyncio TCP shell (``lan://`` addresses);
* :mod:`.discovery`: zeroconf announce and browse (imported on its own);
* :mod:`.pairing`: invites and short pairing codes (imported on its own).

``docs/LAN.md`` has the threat model and the wire format.
"""

from .identity import DeviceIdentity, GroupKey, RemoteIdentity, fingerprint, identity_path
from .link import LanAddress, LanConnection, LanListener, LanTransport, parse_address

__all__ = [
    "DeviceIdentity",
    "GroupKey",
    "LanAddress",
    "LanConnection",
    "LanListener",
    "LanTransport",
    "RemoteIdentity",
    "fingerprint",
    "identity_path",
    "parse_address",
]
