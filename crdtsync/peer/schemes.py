"""Which transport an address needs when none was given, as httpx picks one by URL.

=========== ===================================================================
scheme      transport
=========== ===================================================================
``ws``      ``crdtsync.transports.websocket.WebSocketTransport()`` (the
``wss``     ``crdtsync[websocket]`` extra; ``wss://`` checks certificates
            against the system's trusted CAs)
``mem``     none by default: in-memory addresses live on one ``MemoryNetwork``,
            so pass ``transport=network.transport(host)``
``lan``     the ``LanTransport`` that ``Peer.start_lan`` registers (with
            ``Peer.set_transport``): it holds the device key and the group
            key, so there is no default
other       none: :class:`~crdtsync.errors.UnsupportedAddressError` at once
=========== ===================================================================

A transport registered for the scheme (``Peer.set_transport``) wins over the
Peer's own ``transport=``, which wins over this table.
"""

from __future__ import annotations

from crdtsync.errors import MissingDependencyError, UnsupportedAddressError
from crdtsync.net import Connection, MessageConnection, Transport

__all__ = ["transport_for_scheme", "websocket_transport"]


def websocket_transport(*, max_message: int | None = None) -> Transport[MessageConnection]:
    """A new ``WebSocketTransport`` (``ws://``, ``wss://``).

    Args:
        max_message: largest message received (default: the transport's).

    Raises:
        MissingDependencyError: the ``websockets`` package is not installed.
    """
    try:
        from crdtsync.transports.websocket import WebSocketTransport
    except ImportError as exc:
        raise MissingDependencyError(
            "ws:// and wss:// need the websockets package: pip install 'crdtsync[websocket]'",
            extra="websocket",
        ) from exc
    if max_message is None:
        return WebSocketTransport()
    return WebSocketTransport(max_message=max_message)


def transport_for_scheme(scheme: str, address: str) -> Transport[Connection]:
    """The default transport for addresses of ``scheme`` (see the module docs).

    Raises:
        UnsupportedAddressError: no transport handles ``scheme`` by default.
        MissingDependencyError: its transport needs an extra that is not installed.
    """
    if scheme in ("ws", "wss"):
        return websocket_transport()
    if scheme == "lan":
        raise UnsupportedAddressError(
            f"{address!r}: lan:// addresses need the LAN started first: "
            "await peer.start_lan(group_key)"
        )
    if scheme == "mem":
        raise UnsupportedAddressError(
            f"{address!r}: mem:// addresses live on a MemoryNetwork; give the Peer "
            "transport=network.transport(host)"
        )
    shown = f"scheme {scheme + '://'!r}" if scheme else "no scheme"
    raise UnsupportedAddressError(
        f"{address!r} has {shown}: no transport handles it (ws:// and wss:// do by "
        "default; pass transport= for others)"
    )
