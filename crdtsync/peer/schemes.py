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
``http``    none: the relay's HTTP endpoints are probes and metrics; it syncs
``https``   over ``ws://`` / ``wss://`` on the same port
other       none: :class:`~crdtsync.errors.UnsupportedAddressError` at once
=========== ===================================================================

A transport registered for the scheme (``Peer.set_transport``) wins over the
Peer's own ``transport=``, which wins over this table.

:func:`check_sync_address` refuses what a ``Peer`` can never sync with whatever
the transport: a ``ws://host:port/<room>`` URL is the relay's y-protocols
endpoint (for y-websocket clients and ``YProvider``), not its sync endpoint.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from crdtsync.errors import MissingDependencyError, UnsupportedAddressError
from crdtsync.net import Connection, MessageConnection, Transport

__all__ = ["check_sync_address", "shown_address", "transport_for_scheme", "websocket_transport"]


def shown_address(address: str) -> str:
    """``address`` without its query and fragment (which may hold a token), for messages."""
    try:
        return urlsplit(address)._replace(query="", fragment="").geturl()
    except ValueError:
        return "(an address that does not parse)"


def check_sync_address(address: str) -> None:
    """Refuse at once an address the crdtsync sync protocol can never use.

    Raises:
        UnsupportedAddressError: a ``ws://`` or ``wss://`` URL with a path (a
            y-protocols room URL, for y-websocket clients and ``YProvider``; a
            ``Peer`` connects to the relay's root and opens rooms by name).
            Also a ValueError.
    """
    try:
        parts = urlsplit(address)
    except ValueError as exc:
        raise UnsupportedAddressError(f"not a valid address: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("ws", "wss") and parts.path not in ("", "/"):
        root = f"{scheme}://{parts.netloc}"
        raise UnsupportedAddressError(
            f"{shown_address(address)!r} is a room URL: the path form ({parts.path!r}) is the "
            "relay's y-protocols endpoint, for y-websocket clients and "
            f"crdtsync.peer.yprovider.YProvider. A Peer connects to {root!r} and syncs "
            "rooms it opens by name (await peer.open(room))"
        )


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
    if scheme in ("http", "https"):
        ws = "wss" if scheme == "https" else "ws"
        raise UnsupportedAddressError(
            f"{shown_address(address)!r} is an HTTP URL: peers sync over WebSocket, "
            f"{ws}:// (the relay serves both on one port)"
        )
    if scheme == "lan":
        raise UnsupportedAddressError(
            f"{shown_address(address)!r}: lan:// addresses need the LAN started first: "
            "await peer.start_lan(group_key)"
        )
    if scheme == "mem":
        raise UnsupportedAddressError(
            f"{shown_address(address)!r}: mem:// addresses live on a MemoryNetwork; give the Peer "
            "transport=network.transport(host)"
        )
    shown = f"scheme {scheme + '://'!r}" if scheme else "no scheme"
    raise UnsupportedAddressError(
        f"{shown_address(address)!r} has {shown}: no transport handles it (ws:// and wss:// do by "
        "default; pass transport= for others)"
    )
