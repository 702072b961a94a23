"""The LAN transport: TCP links, mutually authenticated and encrypted (``lan://``).

A thin asyncio shell around :class:`~.channel.LinkCore`: it opens and accepts
TCP connections, feeds the core what it reads, writes what the core queues,
and bounds the handshake in time. Every link proves both devices' keys and the
group key before one session byte moves (see :mod:`.channel` for the wire
format and ``docs/LAN.md`` for the threat model)::

    me = DeviceIdentity.for_store("notes.db")
    group = GroupKey.load("team.key")
    transport = LanTransport(me, group)
    async with Peer(store="notes.db", transport=transport) as peer:
        await peer.listen("lan://0.0.0.0:0")
        await peer.connect("lan://192.168.1.20:40123")

Addresses are ``lan://host:port``, or ``lan://FINGERPRINT@host:port`` to insist
on one device (what discovery hands out): a peer there that proves another key
is refused with :class:`~crdtsync.errors.PeerIdentityError` before we send
anything of ours beyond the handshake.

Connections are :class:`~crdtsync.net.Connection` objects that declare
:attr:`~crdtsync.net.Ability.FLOW` and :attr:`~crdtsync.net.Ability.IDENTITY`:
:attr:`LanConnection.remote_identity` is the key the peer proved, and
:attr:`LanConnection.remote_hello` what it declared under that key.
Failures are :class:`~crdtsync.errors.TransportError` subclasses
(:class:`~crdtsync.errors.HandshakeError`, :class:`~crdtsync.errors.LinkFrameError`)
with a log line under ``crdtsync.lan``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
from collections.abc import Callable, Iterable
from typing import TypeAlias
from urllib.parse import urlsplit

from crdtsync.errors import (
    ConnectionClosedError,
    HandshakeError,
    LocalProtocolError,
    PeerIdentityError,
    TransportError,
)
from crdtsync.net import Ability, Handler

from .channel import MAX_HELLO, Closed, Data, LinkCore, Opened
from .identity import DeviceIdentity, GroupKey, RemoteIdentity

__all__ = ["LanAddress", "LanConnection", "LanListener", "LanTransport", "parse_address"]

logger = logging.getLogger("crdtsync.lan")

_READ_SIZE = 256 << 10
_FINGERPRINT = re.compile(r"[a-z2-7]{32}")
_ABILITIES = Ability.FLOW | Ability.IDENTITY

#: Told of every accepted connection whose handshake failed: ``(remote address, error)``.
RefusalHook: TypeAlias = Callable[[str, TransportError], None]


class LanAddress:
    """A parsed ``lan://[FINGERPRINT@]host:port`` address.

    Attributes:
        host: an IP address or host name.
        port: the TCP port (0 only for ``listen``).
        fingerprint: the device expected there, or None for any group member.
    """

    def __init__(self, host: str, port: int, fingerprint: str | None = None) -> None:
        self.host = host
        self.port = port
        self.fingerprint = fingerprint

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        who = f"{self.fingerprint}@" if self.fingerprint else ""
        return f"lan://{who}{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``lan://host:port`` without the fingerprint (what logs and status events show)."""
        return str(LanAddress(self.host, self.port))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LanAddress) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"LanAddress({str(self)!r})"


def parse_address(address: str, *, listening: bool = False) -> LanAddress:
    """Parse a ``lan://`` address.

    Raises:
        TransportError: not a ``lan://host:port`` address (port 1-65535; 0 too
            when ``listening``), or a fingerprint that is not 32 base32 characters.
    """
    parts = urlsplit(address)
    if parts.scheme != "lan" or not parts.hostname:
        raise TransportError(f"not a lan://host:port address: {address!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise TransportError(f"a lan:// address is lan://[fingerprint@]host:port: {address!r}")
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"bad port in {address!r}") from None
    if port is None or (port == 0 and not listening):
        raise TransportError(f"{address!r} needs a port")
    fp = parts.username
    if fp is not None and not _FINGERPRINT.fullmatch(fp):
        raise TransportError(f"{fp!r} is not a device fingerprint (32 base32 characters)")
    return LanAddress(parts.hostname, port, fp)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(LanAddress(str(peer[0]), int(peer[1])))
    return "lan://?"


class LanConnection:
    """One authenticated, encrypted LAN link (a crdtsync ``Connection``).

    Made by :meth:`LanTransport.connect` and :meth:`LanTransport.listen`, only
    once the handshake finished: :attr:`remote_identity` is always known.
    """

    def __init__(
        self,
        core: LinkCore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: str,
        *,
        write_limit: int,
        on_close: Callable[[LanConnection], None] | None = None,
    ) -> None:
        # The protocol; this class only moves its bytes.
        self._core = core
        self._reader = reader
        self._writer = writer
        # lan://host:port of the other side.
        self._remote = remote
        # send() waits while more than this many bytes are buffered.
        self._write_limit = write_limit
        # Data received and not yet returned by recv().
        self._pending: collections.deque[bytes] = collections.deque()
        # Set once the core said Opened / Closed (with the peer's hello).
        self._opened = False
        self._remote_hello = b""
        self._closed: Closed | None = None
        # Called once when the link ends (the transport forgets it).
        self._on_close = on_close

    @classmethod
    async def establish(
        cls,
        core: LinkCore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: str,
        *,
        timeout: float,
        write_limit: int,
        on_close: Callable[[LanConnection], None] | None = None,
    ) -> LanConnection:
        """Run ``core``'s handshake over a TCP stream; the connection once it is open.

        Raises:
            HandshakeError: the handshake failed or took more than ``timeout``
                seconds (the TCP connection is then dropped).
            PeerIdentityError: the peer's key was refused.
        """
        conn = cls(core, reader, writer, remote, write_limit=write_limit, on_close=on_close)
        await conn._handshake(timeout)
        return conn

    # -- Connection ----------------------------------------------------------------------

    @property
    def abilities(self) -> Ability:
        """``FLOW`` (a server can see a slow reader's buffer and drop it) and ``IDENTITY``."""
        return _ABILITIES

    @property
    def remote_address(self) -> str:
        """``lan://host:port`` of the other side."""
        return self._remote

    @property
    def remote_identity(self) -> RemoteIdentity:
        """The device key the peer proved in the handshake."""
        assert self._core.remote is not None  # only handed out once open
        return self._core.remote

    @property
    def remote_hello(self) -> bytes:
        """The hello bytes the peer's transport sent (``LanTransport(hello=...)``)."""
        return self._remote_hello

    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash: the same on both ends, unique to this link."""
        assert self._core.handshake_hash is not None
        return self._core.handshake_hash

    async def send(self, data: bytes) -> None:
        """Send ``data`` (in frames of at most 65519 bytes); waits while the buffer is full.

        Raises:
            ConnectionClosedError: the link is closed.
            TransportError: the connection broke.
        """
        self._core.send(bytes(data))
        self._pump()
        if self.buffered_amount > self._write_limit:
            try:
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:
                raise ConnectionClosedError(f"send failed: {exc}") from None

    async def recv(self) -> bytes:
        """The next bytes the peer sent (never empty).

        Raises:
            ConnectionClosedError: the link closed (by either side), after every
                byte sent before the close was returned.
            LinkFrameError: a frame was refused (tampered, replayed, reordered,
                truncated or too large); the link is closed.
        """
        while not self._pending:
            if self._closed is not None:
                raise self._end_error()
            await self._read_some()
        return self._pending.popleft()

    async def close(self, reason: str = "") -> None:
        """Close the link (an authenticated CLOSE frame, then TCP); idempotent."""
        self._core.close(reason)
        self._pump()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 5.0)
        except (OSError, TimeoutError, RuntimeError):
            self._writer.transport.abort()

    # -- extras ---------------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the TCP connection now, without a CLOSE frame (slow consumers)."""
        self._core.close("aborted")
        self._pump(write=False)
        self._writer.transport.abort()

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by ``send`` and not yet written to the socket."""
        transport = self._writer.transport
        if transport.is_closing():
            return 0
        return int(transport.get_write_buffer_size()) + self._core.buffered

    @property
    def closed(self) -> bool:
        """Whether the link has ended."""
        return self._closed is not None

    @property
    def error(self) -> TransportError | None:
        """Why the link ended, when it was not a normal close."""
        return self._core.error

    def __repr__(self) -> str:
        who = self._core.remote.fingerprint if self._core.remote is not None else "?"
        return f"<LanConnection {self._remote} device={who} state={self._core.state.value}>"

    # -- internals -----------------------------------------------------------------------

    def _end_error(self) -> TransportError:
        error = self._core.error
        if error is not None and not isinstance(error, ConnectionClosedError):
            return error
        assert self._closed is not None
        return ConnectionClosedError(f"the link to {self._remote} is closed: {self._closed.reason}")

    async def _read_some(self) -> None:
        try:
            data = await self._reader.read(_READ_SIZE)
        except (OSError, RuntimeError):
            data = b""
        if data:
            self._core.receive_data(data)
        else:
            self._core.receive_eof()
        self._pump()

    def _pump(self, *, write: bool = True) -> None:
        for event in self._core.events_received():
            if isinstance(event, Opened):
                self._opened = True
                self._remote_hello = event.hello
            elif isinstance(event, Data):
                self._pending.append(event.data)
            else:
                self._closed = event
        out = self._core.data_to_send()
        if out and write and not self._writer.is_closing():
            self._writer.write(out)
        if self._closed is not None:
            if not self._writer.is_closing():
                self._writer.close()  # after what is buffered (a CLOSE frame) is written
            callback, self._on_close = self._on_close, None
            if callback is not None:
                callback(self)

    async def _handshake(self, timeout: float) -> None:
        """Run the handshake to OPEN, or raise (and close) on failure."""
        self._pump()
        try:
            async with asyncio.timeout(timeout):
                while not self._opened:
                    if self._closed is not None:
                        error = self._core.error
                        raise error if error is not None else HandshakeError("closed")
                    await self._read_some()
        except TimeoutError:
            failure = HandshakeError(f"no LAN handshake with {self._remote} within {timeout} s")
            logger.warning("LAN link %s: %s", self._remote, failure)
            self._writer.transport.abort()
            raise failure from None
        except BaseException:
            self._writer.transport.abort()
            raise


class LanListener:
    """A listening LAN endpoint (returned by :meth:`LanTransport.listen`)."""

    def __init__(self, server: asyncio.Server, address: LanAddress) -> None:
        self._server = server
        self._address = address

    @property
    def address(self) -> str:
        """``lan://host:port`` with the port actually bound."""
        return str(self._address)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return self._address.port

    async def close(self) -> None:
        """Stop accepting connections (open links stay open). Idempotent."""
        self._server.close()
        await asyncio.sleep(0)


class LanTransport:
    """Makes and accepts LAN links for one device in one group.

    Args:
        identity: this device's key pair (:meth:`DeviceIdentity.for_store`).
        group: the group key every member holds.
        allowed: fingerprints of the devices allowed to link (None: every
            device that proves the group key). See :meth:`set_allowed`.
        handshake_timeout: seconds a handshake may take, per link.
        connect_timeout: seconds to open the TCP connection.
        write_limit: bytes buffered for writing before ``send`` waits.
        max_handshakes: handshakes a listener runs at once; connections beyond
            are closed at once (a flood of TCP connections costs little).
        hello: up to 256 bytes every link hands the peer in the handshake
            (:attr:`LanConnection.remote_hello`), for the layer above: e.g. an
            incarnation id, so that a restarted peer's link replaces its old one.
        on_refused: called with ``(remote address, error)`` for each accepted
            connection whose handshake failed (another group key, a device not
            on the allow-list...), after the failure was logged: the layer
            above reports it (a Peer's status events).
    """

    def __init__(
        self,
        identity: DeviceIdentity,
        group: GroupKey,
        *,
        allowed: Iterable[str] | None = None,
        handshake_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        write_limit: int = 256 << 10,
        max_handshakes: int = 64,
        hello: bytes = b"",
        on_refused: RefusalHook | None = None,
    ) -> None:
        if len(hello) > MAX_HELLO:
            raise LocalProtocolError(f"a hello is at most {MAX_HELLO} bytes")
        self.identity = identity
        self.hello = bytes(hello)
        self.group = group
        self._allowed: frozenset[str] | None = None if allowed is None else frozenset(allowed)
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.write_limit = write_limit
        self.max_handshakes = max_handshakes
        # Open links, so that set_allowed can close those of removed devices.
        self._links: set[LanConnection] = set()
        # Handshakes running on accepted connections.
        self._handshaking = 0
        self.on_refused = on_refused

    @property
    def abilities(self) -> Ability:
        """``FLOW`` and ``IDENTITY``, like each of its connections."""
        return _ABILITIES

    # -- the allow-list ----------------------------------------------------------------

    @property
    def allowed(self) -> frozenset[str] | None:
        """Fingerprints allowed to link, or None for any group member."""
        return self._allowed

    async def set_allowed(self, fingerprints: Iterable[str] | None) -> None:
        """Replace the allow-list; open links to devices no longer on it are closed.

        Args:
            fingerprints: the devices allowed, or None to allow any group member.
        """
        self._allowed = None if fingerprints is None else frozenset(fingerprints)
        removed = [c for c in self._links if not self._is_allowed(c.remote_identity)]
        for conn in removed:
            logger.info(
                "LAN link %s: closing, device %s is no longer allowed",
                conn.remote_address,
                conn.remote_identity.fingerprint,
            )
            await conn.close("this device is no longer allowed")

    def links(self) -> list[LanConnection]:
        """The open links."""
        return list(self._links)

    def _is_allowed(self, remote: RemoteIdentity) -> bool:
        return self._allowed is None or remote.fingerprint in self._allowed

    def _verifier(self, expected: str | None, where: str) -> Callable[[RemoteIdentity], None]:
        def verify(remote: RemoteIdentity) -> None:
            if expected is not None and remote.fingerprint != expected:
                raise PeerIdentityError(
                    f"the peer at {where} proved device {remote.fingerprint}, "
                    f"not {expected} as announced"
                )
            if not self._is_allowed(remote):
                raise PeerIdentityError(f"device {remote.fingerprint} is not on the allow-list")

        return verify

    # -- Transport -----------------------------------------------------------------------

    async def connect(self, address: str) -> LanConnection:
        """Open a link to ``lan://[FINGERPRINT@]host:port``; returns once both sides proved.

        Raises:
            TransportError: a bad address, nobody listening, or no TCP connection
                within ``connect_timeout``.
            HandshakeError: the handshake failed (another group key, not a crdtsync
                peer, no answer within ``handshake_timeout``).
            PeerIdentityError: the peer proved another device's key than the
                address names, or a device not on the allow-list.
        """
        where = parse_address(address)
        shown = where.endpoint
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    where.host, where.port, limit=_READ_SIZE
                )
        except TimeoutError:
            raise TransportError(
                f"no TCP connection to {shown} within {self.connect_timeout} s"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {shown}: {exc.strerror or exc}") from None
        _nodelay(writer)
        core = LinkCore(
            initiator=True,
            identity=self.identity,
            group=self.group,
            verify=self._verifier(where.fingerprint, shown),
            hello=self.hello,
        )
        conn = await LanConnection.establish(
            core,
            reader,
            writer,
            shown,
            timeout=self.handshake_timeout,
            write_limit=self.write_limit,
            on_close=self._links.discard,
        )
        if not conn.closed:
            self._links.add(conn)
        logger.debug("LAN link to %s: device %s", shown, conn.remote_identity.fingerprint)
        return conn

    async def listen(self, address: str, handler: Handler) -> LanListener:
        """Accept links at ``lan://host:port`` (port 0: any free port).

        ``handler`` runs for each link once its handshake succeeded; the link
        is closed when it returns. Failed handshakes are logged and dropped.

        Raises:
            TransportError: a bad address, or the port cannot be bound.
        """
        where = parse_address(address, listening=True)
        if where.fingerprint is not None:
            raise TransportError("a listening address names no fingerprint")

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            remote = _peer_address(writer)
            if self._handshaking >= self.max_handshakes:
                logger.warning(
                    "LAN link %s: dropped, %d handshakes already running", remote, self._handshaking
                )
                writer.transport.abort()
                return
            _nodelay(writer)
            core = LinkCore(
                initiator=False,
                identity=self.identity,
                group=self.group,
                verify=self._verifier(None, remote),
                hello=self.hello,
            )
            self._handshaking += 1
            try:
                conn = await LanConnection.establish(
                    core,
                    reader,
                    writer,
                    remote,
                    timeout=self.handshake_timeout,
                    write_limit=self.write_limit,
                    on_close=self._links.discard,
                )
            except TransportError as exc:
                # The core (or the timeout) logged why; the layer above may report it.
                if self.on_refused is not None:
                    self.on_refused(remote, exc)
                return
            finally:
                self._handshaking -= 1
            if not conn.closed:
                self._links.add(conn)
            try:
                await handler(conn)
            finally:
                await conn.close()

        try:
            server = await asyncio.start_server(accept, where.host, where.port, limit=_READ_SIZE)
        except OSError as exc:
            raise TransportError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        sockname = server.sockets[0].getsockname()
        return LanListener(server, LanAddress(str(sockname[0]), int(sockname[1])))


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
