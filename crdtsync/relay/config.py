"""The relay's settings, with their documented defaults.

Every field is also a command-line option of ``crdtsync relay`` (``--max-frame``)
and an environment variable (``CRDTSYNC_MAX_FRAME``); the command line wins.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RelayConfig"]


@dataclass
class RelayConfig:
    """Settings of a :class:`~crdtsync.relay.server.Relay`.

    Attributes:
        host: interface to listen on.
        port: TCP port (0: any free port, shown in the listening line).
        data: SQLite file of the rooms (unset: rooms are kept in memory and lost at exit).
        secret: HMAC key of access tokens (unset: no authentication, every room is open
            to anyone who can connect).
        tls_cert: PEM certificate chain; with ``tls_key``, the relay serves ``wss://``.
        tls_key: PEM private key.
        max_frame: largest WebSocket message accepted (bytes); a larger one closes
            the connection with 1009.
        max_update: largest single update (bytes), after reassembly and
            decompression.
        max_docs_per_conn: documents one crdtsync connection may open.
        max_msgs_per_sec: sustained messages per second per connection (token
            bucket of ``max_msgs_burst``); above it the connection is closed.
        max_msgs_burst: the bucket size.
        max_bytes_per_sec: bytes per second one connection may send, sustained,
            after a burst of twice ``max_update``, counted on the wire and again
            after decompression (a small compressed frame may carry a whole
            update); a faster sender is read more slowly (it waits on TCP), not
            closed.
        max_unauth_bytes: bytes a connection may send before it is authenticated.
        max_answer_bytes_per_sec: bytes of whole answers (catch-ups, everyone's
            presence) one client address (an IPv6 /64) is sent per second, after a
            burst of four seconds' worth. An answer is always sent whole; while
            the address owes bytes, its next questions wait.
        max_send_queue: bytes queued towards one connection; above it the
            connection is a slow consumer and is closed (it resyncs on reconnect).
        max_connections: authenticated connections in all; more are refused with
            1013. Connections still authenticating are budgeted apart
            (``max_unauth_connections``).
        max_unauth_connections: connections accepted and not yet authenticated
            (a crdtsync handshake, a y-protocols token, an HTTP request), in all;
            a newcomer beyond closes the oldest of them.
        max_unauth_per_address: connections not yet authenticated from one
            client address (an IPv6 /64); a newcomer beyond is closed at once.
        max_new_conns_per_sec: connections one client address may open per
            second, after a burst of ten seconds' worth; a newcomer beyond is
            closed at once (clients retry with backoff).
        handshake_timeout: seconds a connection has to authenticate (and, before
            that, to send its HTTP request).
        idle_unload: seconds a room stays in memory after its last client left.
        compact_every: fold a room's update log into its snapshot after this many updates.
        max_room_bytes: size a room may reach (its Yjs state plus what was stored
            since it was last measured: memory and disk); a room at the limit
            refuses updates that add to it (crdtsync: DOC_ERROR LIMIT_EXCEEDED;
            y-protocols: permission denied), and stays readable.
        max_loaded_bytes: bytes the rooms loaded in memory may cost in all (each
            room's size as ``max_room_bytes`` counts it, plus its cached catch-up
            answer). Loading a room over it first unloads idle rooms, least
            recently used first; when the loaded rooms are all in use the new
            one is refused (crdtsync: DOC_ERROR LIMIT_EXCEEDED, ``RelayFullError``;
            y-protocols: close 1013), and clients retry later.
        max_rooms: rooms the store may hold; creating more is refused (crdtsync:
            DOC_ERROR LIMIT_EXCEEDED; y-protocols: close 4413).
        max_new_rooms_per_min: rooms one client address may create per minute,
            all its connections together (crdtsync: DOC_ERROR LIMIT_EXCEEDED;
            y-protocols: close 4529). A read-only client creates none: opening a
            room that does not exist is refused (DOC_REFUSED; close 4404).
        max_refused_updates: updates one connection may have refused (read-only,
            a full room, too many waiting for missing changes), and read-only
            updates that needed checking against the room after the catch-up,
            before the connection is closed (crdtsync: LIMIT_EXCEEDED; y-protocols:
            1008).
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        store: a ``postgresql://`` URL: run as a node of a relay cluster whose rooms
            live in that database (unset: a single relay on ``data``), see docs/CLUSTER.md.
        node_url: with ``store``, the URL the other nodes reach this node at
            (``ws://10.0.0.5:8765``; default: the address it listens on).
        lease_ttl: with ``store``, seconds a node's heartbeat keeps its rooms
            (failover time after a pause or a partition; a killed node is
            replaced without waiting for it).
        demo: also serve the collaborative-editing demo page over plain HTTP under
            ``/demo/`` (``crdtsync demo`` turns it on; a production relay leaves it off).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    data: str | None = "relay.db"
    secret: bytes | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_frame: int = 1 << 20
    max_update: int = 8 << 20
    max_docs_per_conn: int = 64
    max_msgs_per_sec: float = 200.0
    max_msgs_burst: int = 2000
    max_bytes_per_sec: int = 1 << 20
    max_unauth_bytes: int = 64 << 10
    max_answer_bytes_per_sec: int = 2 << 20
    max_send_queue: int = 8 << 20
    max_connections: int = 20_000
    max_unauth_connections: int = 1024
    max_unauth_per_address: int = 64
    max_new_conns_per_sec: float = 20.0
    handshake_timeout: float = 10.0
    idle_unload: float = 30.0
    compact_every: int = 1000
    max_room_bytes: int = 64 << 20
    max_loaded_bytes: int = 2 << 30
    max_rooms: int = 100_000
    max_new_rooms_per_min: int = 60
    max_refused_updates: int = 32
    log_level: str = "info"
    store: str | None = None
    node_url: str | None = None
    lease_ttl: float = 10.0
    demo: bool = False
