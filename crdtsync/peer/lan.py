"""The LAN manager: a Peer's links to the other devices of a LAN group.

:meth:`Peer.start_lan <crdtsync.peer.peer.Peer.start_lan>` makes one. It uses
only the Peer's public methods (``set_transport``, ``bind_identities``,
``serve``, ``attach``, ``report``, ``writers``), and the LAN transport
(:mod:`crdtsync.transports.lan`, the ``lan`` extra)::

    async with Peer(store="notes.db") as peer:
        doc = await peer.open("notes")
        lan = await peer.start_lan(group_key=GroupKey.load("team.key"))
        ...   # linked with every member it hears of, as they come and go

What it does, each part a rule of its own (``docs/LAN.md`` has the reasons):

* **Who we are.** The device identity kept beside the store
  (``DeviceIdentity.for_store``), and an *incarnation*: 16 random bytes per
  ``start_lan``. Every link carries our :class:`LanHello` (incarnation and the
  client id our documents are written under) in the Noise handshake, so the
  declaration is authenticated by the device key.
* **Finding members.** zeroconf bound to the given interfaces, and addresses
  given by hand (``static=``, :meth:`LanManager.add`). Announcements are hints
  only: the link's handshake proves the device and the group key.
* **Identity binding.** A client id belongs to the first device that declared
  it to us, for the manager's lifetime (a :class:`~crdtsync.protocol.session.WriterRegistry`
  of devices): another device declaring it is refused as a forged writer
  before one session byte moves. A session whose peer id or declared writers
  differ from what its device declared is refused at its handshake (identity
  mismatch), before any document is opened on it. The id is also declared,
  for the link's life, in the Peer's own writer registry, so no other live
  connection (a relay client, a y-protocols guest) can own it meanwhile.
* **One link per pair.** When two links to one device exist, the one whose
  initiator has the larger public key is kept (both ends compute the same).
  A link from a new incarnation of the device replaces the old one at once
  (the old incarnation is retired: its links are refused from then on), so a
  restarted peer never waits for the old link's idle timeout. To make double
  dialing rare, the device with the larger fingerprint dials at once and the
  other waits ``dial_grace`` seconds first.
* **Liveness.** From the sync session's own pings and idle timers: a link is
  up until its session ends. A member whose link ended is dialed again with
  capped, jittered backoff; a new hint (a new address) resets the backoff. An
  address that fails ``max_failures`` times in a row is dropped (a
  ``dropped`` status); a member left without addresses leaves the mesh and is
  probed every ``probe_interval`` seconds at its last addresses (a partition
  heals), until ``probe_for`` seconds have passed.
* **Mesh.** Up to ``full_mesh`` members (this device included) every pair is
  linked. Beyond, each device dials the neighbours :func:`neighbours` names:
  its successors and predecessors on the ring of fingerprints at distances
  :func:`mesh_distances` (1 and two chords: at most 6 neighbours, connected
  because the ring is). Inbound links are always accepted (up to
  ``max_links``); a device closes the links it dialed that are no longer
  neighbours. Edits reach non-neighbours through forwarding (``docs/PROTOCOL.md``).

Every event is a status (:class:`~crdtsync.peer.peer.Status`: ``discovered``,
``linked``, ``replaced``, ``refused``, ``dropped``) and a log line under
``crdtsync.lan``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from crdtsync.errors import (
    AuthError,
    CrdtSyncError,
    ForbiddenWriterError,
    HandshakeError,
    LimitExceededError,
    LinkFrameError,
    LocalProtocolError,
    PeerIdentityError,
    TransportError,
)
from crdtsync.net import Connection, Discovery, Hint, IdentityConnection
from crdtsync.peer.peer import Backoff, Grant, IdentityCheck, Peer, Status
from crdtsync.protocol.session import WriterRegistry
from crdtsync.transports.lan import (
    DeviceIdentity,
    GroupKey,
    LanConnection,
    LanListener,
    LanTransport,
    parse_address,
)
from crdtsync.transports.lan.discovery import StaticDiscovery, ZeroconfDiscovery

if TYPE_CHECKING:
    from crdtsync.transports.lan import LanAddress

__all__ = [
    "GroupKeyLike",
    "LanHello",
    "LanLink",
    "LanManager",
    "LanOptions",
    "load_group",
    "mesh_distances",
    "neighbours",
]

log = logging.getLogger("crdtsync.lan")

#: A group key, or the path of its file (``crdtsync lan-key --out team.key``).
GroupKeyLike: TypeAlias = GroupKey | str | os.PathLike[str]

_HELLO_MAGIC = b"CL"
_HELLO_VERSION = 1
_INCARNATION_BYTES = 16
_HELLO_LEN = len(_HELLO_MAGIC) + 1 + _INCARNATION_BYTES + 8
# Incarnations of one device remembered as retired (a bound: one per restart).
_RETIRED = 16
# Devices in the client-id binding table (beyond: the oldest absent one is forgotten).
_MAX_DEVICES = 4096


# -- the hello ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanHello:
    """What a LAN peer declares in its link's handshake, under its device key.

    27 bytes: ``b"CL"``, version ``1``, the incarnation (16 bytes), the peer id
    (u64, big-endian; 1 to 2**53 - 1, a Yjs client id).

    Attributes:
        incarnation: random per ``start_lan``: a restarted peer has a new one.
        peer_id: the client id its documents are written under (``Peer.peer_id``).
    """

    incarnation: bytes
    peer_id: int

    def encode(self) -> bytes:
        """The hello's bytes."""
        return (
            _HELLO_MAGIC
            + bytes([_HELLO_VERSION])
            + self.incarnation
            + self.peer_id.to_bytes(8, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> LanHello:
        """Parse a peer's hello.

        Raises:
            HandshakeError: not a version 1 LAN hello, or a peer id out of range.
        """
        if len(data) != _HELLO_LEN or not data.startswith(_HELLO_MAGIC):
            raise HandshakeError(f"not a crdtsync LAN hello ({len(data)} bytes)")
        if data[2] != _HELLO_VERSION:
            raise HandshakeError(f"LAN hello version {data[2]}, this release speaks 1")
        peer_id = int.from_bytes(data[3 + _INCARNATION_BYTES :], "big")
        if not 0 < peer_id < 2**53:
            raise HandshakeError(f"LAN hello declares peer id {peer_id}, not in [1, 2**53)")
        return cls(bytes(data[3 : 3 + _INCARNATION_BYTES]), peer_id)


# -- the mesh -------------------------------------------------------------------------------


def mesh_distances(n: int) -> tuple[int, ...]:
    """Ring distances at which a device of an ``n``-member group (``n > full_mesh``) links.

    1 (the ring: connected), and chords near ``n**(1/3)`` and ``n**(2/3)``
    (so a message crosses the group in about ``3 * n**(1/3)`` hops), each at
    most ``n // 2``: at most 6 neighbours, whatever ``n``.
    """
    wanted = {1, max(2, round(n ** (1 / 3))), max(3, round(n ** (2 / 3)))}
    return tuple(sorted(d for d in wanted if d <= n // 2))


def neighbours(me: str, members: Iterable[str], *, full_mesh: int = 6) -> frozenset[str]:
    """The devices ``me`` links with, among ``members`` (fingerprints).

    Deterministic and symmetric for one view of the group: ``b`` is in
    ``neighbours(a, m)`` exactly when ``a`` is in ``neighbours(b, m)``. Up to
    ``full_mesh`` devices (``me`` included) every pair is linked; beyond, the
    ring of sorted fingerprints with the chords of :func:`mesh_distances`.
    """
    ring = sorted(set(members) | {me})
    n = len(ring)
    if n <= full_mesh:
        return frozenset(ring) - {me}
    i = ring.index(me)
    out = set()
    for d in mesh_distances(n):
        out.add(ring[(i + d) % n])
        out.add(ring[(i - d) % n])
    return frozenset(out - {me})


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanOptions:
    """How the LAN manager links (see the module docs for each rule).

    Attributes:
        full_mesh: up to this many members (this device included), all linked.
        max_links: links at once; inbound links beyond are closed.
        max_members: devices remembered; hints about more are ignored.
        dial_grace: seconds the device with the smaller fingerprint waits
            before dialing a member that has not dialed it.
        backoff: delays between dial attempts to one member.
        max_failures: failures in a row after which an address is dropped.
        probe_interval: seconds between probes of a member whose addresses
            were all dropped.
        probe_for: seconds such a member is probed before it is forgotten
            (members given by hand are probed for as long as the manager runs).
        handshake_timeout: seconds a link's handshake may take.
        connect_timeout: seconds to open a link's TCP connection.
    """

    full_mesh: int = 6
    max_links: int = 64
    max_members: int = 256
    dial_grace: float = 0.75
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.2, factor=2.0, cap=5.0))
    max_failures: int = 5
    probe_interval: float = 15.0
    probe_for: float = 1125.0
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0


# -- links and members ----------------------------------------------------------------------


@dataclass(eq=False)
class LanLink:
    """One link the manager keeps (what :meth:`LanManager.links` lists).

    Attributes:
        conn: the authenticated connection.
        device: the fingerprint of the device at the other end.
        hello: what that device declared in the handshake.
        outbound: whether we dialed it.
        address: the address we dialed, or where the inbound link came from.
    """

    conn: LanConnection
    device: str
    hello: LanHello
    outbound: bool
    address: str
    # The public key of the side that dialed (the one-link-per-pair rule).
    initiator: bytes = b""
    # The check of its session's handshake (what the Peer's binder returns).
    check: IdentityCheck | None = None
    # Whether its session's handshake arrived and passed the check.
    opened: bool = False

    @property
    def closed(self) -> bool:
        """Whether the link has ended (a WriterOwner: its client id is free then)."""
        return self.conn.closed


class _Device:
    """A device as an owner in the device registry: it never closes (its ids stay its own)."""

    closed = False

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint


@dataclass(eq=False)
class _Member:
    """A device of the group we know of, and what we do about it."""

    fingerprint: str
    # Addresses to dial, best first -> failures in a row.
    addresses: dict[str, int] = field(default_factory=dict)
    # Addresses dropped after failing, probed while the member is lost.
    stale: dict[str, None] = field(default_factory=dict)
    links: list[LanLink] = field(default_factory=list)
    # The incarnation of its latest link, and the older ones it replaced.
    incarnation: bytes | None = None
    retired: list[bytes] = field(default_factory=list)
    # When the next dial may start (None: not yet decided), and the backoff step.
    next_at: float | None = None
    attempt: int = 0
    # Since when every address was dropped (None: not lost).
    lost_since: float | None = None
    # Given by hand: never forgotten; these addresses were.
    static: bool = False
    manual: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    driver: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Manual:
    """An address given by hand without a fingerprint: dialed until someone answers."""

    address: str
    failures: int = 0
    attempt: int = 0
    dropped: bool = False
    driver: asyncio.Task[None] | None = None


_Kind = Literal["discovered", "linked", "replaced", "refused", "dropped"]


class LanManager:
    """A Peer's LAN links: discovery, one link per device pair, the mesh, identity binding.

    Made by :meth:`Peer.start_lan <crdtsync.peer.peer.Peer.start_lan>` (see
    the module docs for the rules); stopped by ``Peer.stop_lan`` or when the
    Peer closes.

    Args:
        peer: the Peer whose documents the links carry.
        group: the group key.
        identity: this device's key pair.
        interfaces: IPv4 addresses to listen, announce and browse on (None:
            every interface).
        port: the TCP port to listen on (0: any free one).
        allowed: fingerprints allowed to link (None: any member of the group).
        static: ``lan://`` addresses to link with, given by hand.
        zeroconf: announce and browse with mDNS (False: static addresses only).
        options: the manager's settings.
    """

    def __init__(
        self,
        peer: Peer,
        group: GroupKey,
        identity: DeviceIdentity,
        *,
        interfaces: Sequence[str] | None = None,
        port: int = 0,
        allowed: Iterable[str] | None = None,
        static: Iterable[str] = (),
        zeroconf: bool = True,
        options: LanOptions | None = None,
    ) -> None:
        self.peer = peer
        self.group = group
        self.identity = identity
        self.options = options or LanOptions()
        self.interfaces = None if interfaces is None else list(interfaces)
        self._port = port
        self._zeroconf = zeroconf
        self._static = [str(parse_address(a)) for a in static]
        self.hello = LanHello(secrets.token_bytes(_INCARNATION_BYTES), peer.peer_id)
        self.transport = LanTransport(
            identity,
            group,
            allowed=allowed,
            handshake_timeout=self.options.handshake_timeout,
            connect_timeout=self.options.connect_timeout,
            hello=self.hello.encode(),
            on_refused=self._on_refused,
        )
        self._listeners: list[LanListener] = []
        self._sources: list[Discovery] = []
        self._manual_source = StaticDiscovery()
        self._members: dict[str, _Member] = {}
        self._manual: dict[str, _Manual] = {}
        self._neighbours: frozenset[str] = frozenset()
        # Client id -> the device that declared it (never released: see the module docs).
        self._devices = WriterRegistry()
        self._device_owners: dict[str, _Device] = {}
        # Links by connection (the Peer's binder looks them up).
        self._by_conn: dict[LanConnection, LanLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._stopping = False
        self._started = False

    @classmethod
    def for_peer(
        cls,
        peer: Peer,
        group_key: GroupKeyLike,
        *,
        store: str | os.PathLike[str] | None,
        identity: DeviceIdentity | None = None,
        **kwargs: Any,
    ) -> LanManager:
        """The manager ``Peer.start_lan`` makes (not started).

        Args:
            peer: the Peer.
            group_key: the group key, or its file's path.
            store: the Peer's store file: the device identity is kept beside
                it (None: a new identity, for this run only).
            identity: this device's key pair, instead of the store's.
            kwargs: the other arguments of :class:`LanManager`.

        Raises:
            KeyFileError: a key or identity file is missing, malformed or not private.
        """
        group = load_group(group_key)
        if identity is None and store is not None:
            identity = DeviceIdentity.for_store(store)
        elif identity is None:
            identity = DeviceIdentity.generate()
            log.warning(
                "LAN: no store file to keep a device identity beside: this run is "
                "device %s, a new one each run",
                identity.fingerprint,
            )
        return cls(peer, group, identity, **kwargs)

    # -- public ---------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """This device's fingerprint."""
        return self.identity.fingerprint

    @property
    def port(self) -> int:
        """The TCP port links are accepted on."""
        return self._listeners[0].port if self._listeners else self._port

    @property
    def addresses(self) -> list[str]:
        """Where this device accepts links (``lan://host:port``, one per listener)."""
        return [listener.address for listener in self._listeners]

    @property
    def incarnation(self) -> bytes:
        """This run's incarnation id."""
        return self.hello.incarnation

    def links(self) -> list[LanLink]:
        """The links up now, one per device (two only while a duplicate is being closed)."""
        return [lk for m in self._members.values() for lk in m.links if not lk.closed]

    def linked(self) -> set[str]:
        """Fingerprints of the devices we have a link with."""
        return {lk.device for lk in self.links()}

    def members(self) -> set[str]:
        """Fingerprints of the devices we know an address of (lost ones excluded)."""
        return {fp for fp, m in self._members.items() if self._active(m)}

    def known(self) -> set[str]:
        """Fingerprints of every device remembered.

        Members, lost ones still probed, and devices known only by a link they
        made (forgotten ``probe_for`` seconds after they were last seen).
        """
        return set(self._members)

    def neighbours(self) -> frozenset[str]:
        """The devices this one dials under the mesh rule, in its current view."""
        return self._neighbours

    def device_of(self, client_id: int) -> str | None:
        """The fingerprint of the device that declared ``client_id`` to us (ours included)."""
        owner = self._devices.owner(client_id)
        return owner.fingerprint if isinstance(owner, _Device) else None

    def add(self, address: str) -> None:
        """Link with the device at a ``lan://[FINGERPRINT@]host:port`` address (by hand).

        Raises:
            TransportError: the address does not parse.
        """
        self._manual_source.add(address)

    async def set_allowed(self, fingerprints: Iterable[str] | None) -> None:
        """Replace the allow-list (None: any member); links of devices off it are closed."""
        allowed = None if fingerprints is None else frozenset(fingerprints)
        for link in self.links():
            if allowed is not None and link.device not in allowed:
                self._report(
                    "refused",
                    link.device,
                    link.address,
                    "no longer on the allow-list: link closed",
                    PeerIdentityError(f"device {link.device} is not on the allow-list"),
                )
        await self.transport.set_allowed(allowed)
        for member in self._members.values():
            member.wake.set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, register with the Peer, and start discovery.

        Raises:
            TransportError: the port cannot be bound, or zeroconf cannot start.
        """
        if self._started:
            raise LocalProtocolError("a LanManager starts once")
        self._started = True
        hosts = ["0.0.0.0"] if self.interfaces is None else self.interfaces
        if not hosts:
            raise LocalProtocolError("interfaces=[] leaves nowhere to listen")
        port = self._port
        try:
            for host in hosts:
                listener = await self.transport.listen(f"lan://{host}:{port}", self._accepted)
                self._listeners.append(listener)
                port = listener.port  # every interface on the same port: one is announced
            self._devices.declare(self._device(self.fingerprint), [self.peer.peer_id])
            self.peer.set_transport("lan", self.transport)
            self.peer.bind_identities(self._bind)
            for address in self._static:
                self._manual_source.add(address)
            self._sources.append(self._manual_source)
            if self._zeroconf:
                self._sources.append(
                    ZeroconfDiscovery(
                        self.identity,
                        self.group,
                        port,
                        interfaces=self.interfaces,
                        request_timeout=2.0,
                    )
                )
            for source in self._sources:
                await source.start()
                self._spawn(self._follow(source), "LAN discovery")
        except BaseException:
            await self.close()
            raise
        log.info(
            "LAN: device %s listening on %s (incarnation %s)",
            self.fingerprint,
            ", ".join(self.addresses),
            self.incarnation.hex()[:8],
        )

    async def stop_linking(self) -> None:
        """Make no new link: stop dialing, discovery (zeroconf says goodbye) and listening.

        The links up stay up (the Peer closes their sessions next, when it closes).
        """
        if self._stopping:
            return
        self._stopping = True
        for member in self._members.values():
            if member.driver is not None:
                member.driver.cancel()
        for manual in self._manual.values():
            if manual.driver is not None:
                manual.driver.cancel()
        for source in self._sources:
            await source.close()
        for listener in self._listeners:
            await listener.close()

    async def close(self) -> None:
        """Stop linking (see :meth:`stop_linking`) and close every link."""
        await self.stop_linking()
        for link in self.links():
            await link.conn.close("leaving the group")
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.peer.set_transport("lan", None)
        self.peer.bind_identities(None)

    # -- reporting ------------------------------------------------------------------------

    def _report(
        self,
        kind: _Kind,
        device: str | None,
        address: str | None,
        reason: str,
        error: CrdtSyncError | None = None,
        *,
        peer_id: int | None = None,
    ) -> None:
        level = logging.WARNING if kind == "refused" else logging.INFO
        who = device or "an unknown device"
        where = f" at {address}" if address else ""
        log.log(level, "LAN %s: %s%s: %s", kind, who, where, reason)
        self.peer.report(Status(kind, address, peer_id, None, reason, error, device))

    def _on_refused(self, remote: str, error: TransportError) -> None:
        if self._stopping:
            return
        if _is_refusal(error):
            self._report("refused", None, remote, f"inbound link refused: {error}", error)
        else:  # a port scan, a peer that died mid-handshake: logged by the link already
            log.debug("LAN: inbound link from %s failed: %s", remote, error)

    # -- identity binding -----------------------------------------------------------------

    def _device(self, fingerprint: str) -> _Device:
        """The device's entry in the binding table (the most recently used last)."""
        device = self._device_owners.pop(fingerprint, None)
        if device is None:
            device = _Device(fingerprint)
            if len(self._device_owners) >= _MAX_DEVICES:
                self._evict_device()
        self._device_owners[fingerprint] = device
        return device

    def _evict_device(self) -> None:
        """Forget the bindings of the device least recently seen that has no link now.

        A member can make as many device keys as it likes, each a handshake: the
        table is bounded, and what is forgotten is the oldest absent device's ids
        (they could be claimed again by another device from then on).
        """
        linked = self.linked() | {self.fingerprint}
        for fp, device in self._device_owners.items():
            if fp not in linked:
                del self._device_owners[fp]
                self._devices.release(device)
                log.info("LAN: forgetting the client ids of device %s (table full)", fp)
                return

    def _claim(self, fingerprint: str, peer_id: int) -> ForbiddenWriterError | None:
        """Bind ``peer_id`` to the device (first come); the error when another device has it."""
        try:
            taken = self._devices.declare(self._device(fingerprint), [peer_id])
        except LimitExceededError as exc:
            return ForbiddenWriterError(
                f"forged writer: device {fingerprint} declared too many client ids: {exc}"
            )
        if taken is None:
            return None
        other = self.device_of(taken)
        return ForbiddenWriterError(
            f"forged writer: device {fingerprint} declares client id {taken}, "
            f"which belongs to device {other}"
        )

    def _checker(
        self, device: str, address: str, hello: LanHello, link: LanLink | None = None
    ) -> IdentityCheck:
        """The check of a session on a link of ``device``: it must claim what the hello declared."""

        def check(peer_id: int, writers: tuple[int, ...]) -> Grant:
            if peer_id != hello.peer_id:
                mismatch = AuthError(
                    f"identity mismatch: device {device} declared peer id {hello.peer_id} "
                    f"under its key, its session says {peer_id}"
                )
                self._report("refused", device, address, str(mismatch), mismatch, peer_id=peer_id)
                raise mismatch
            forged = sorted(set(writers) - {hello.peer_id})
            if forged:
                error = ForbiddenWriterError(
                    f"forged writer: device {device} declares client ids {forged}, "
                    f"not the one its key declared ({hello.peer_id})"
                )
                self._report("refused", device, address, str(error), error, peer_id=peer_id)
                raise error
            if link is not None:
                link.opened = True
                member = self._members.get(device)
                if member is not None:
                    member.attempt = 0  # a working link: the backoff starts over
            # A member of the group: it forwards the others' edits (a mesh).
            return Grant(relay=True)

        return check

    def _bind(self, conn: IdentityConnection) -> IdentityCheck:
        """The Peer's identity binder: the check of a LAN connection's session."""
        if isinstance(conn, LanConnection):
            link = self._by_conn.get(conn)
            if link is not None and link.check is not None:
                return link.check
        # A connection the manager did not make (Peer.connect or listen on lan://).
        device = conn.remote_identity.fingerprint
        address = str(conn.remote_address)
        try:
            hello = LanHello.decode(conn.remote_hello)
        except HandshakeError as exc:
            self._report("refused", device, address, str(exc), exc)
            raise
        forged = self._claim(device, hello.peer_id)
        if forged is not None:
            self._report("refused", device, address, str(forged), forged)
            raise forged
        return self._checker(device, address, hello)

    # -- links ------------------------------------------------------------------------------

    def _adopt(self, conn: LanConnection, *, outbound: bool, address: str) -> LanLink | str:
        """Decide about a new authenticated link: the link kept, or why it is refused.

        A refused link is the caller's to close, with the reason (the peer reads it).
        """
        device = conn.remote_identity.fingerprint
        if self._stopping:
            return "leaving the group"
        try:
            hello = LanHello.decode(conn.remote_hello)
        except HandshakeError as exc:
            self._report("refused", device, address, str(exc), exc)
            return "malformed hello"
        forged = self._claim(device, hello.peer_id)
        if forged is not None:
            self._report("refused", device, address, str(forged), forged, peer_id=hello.peer_id)
            return "forged writer: that client id belongs to another device"
        member = self._members.get(device)
        if member is None:
            if len(self._members) >= self.options.max_members:
                self._report("refused", device, address, "too many devices known")
                return "too many devices"
            member = self._member(device)
        if hello.incarnation in member.retired:
            self._report(
                "refused",
                device,
                address,
                "a link from an incarnation its newer one replaced (two processes share "
                "one device identity?)",
            )
            return "this incarnation was replaced"
        initiator = self.identity.public_key if outbound else conn.remote_identity.public_key
        link = LanLink(conn, device, hello, outbound, address, initiator)
        # Decide first, act after: a link refused below must not have cost the old one.
        replaced: list[tuple[LanLink, str]] = []
        for old in member.links:
            if old.closed:
                replaced.append((old, ""))  # ending already: nothing to report
            elif old.hello.incarnation != hello.incarnation:
                # The device restarted: its new link replaces the old one now,
                # however long the old one would take to time out.
                replaced.append(
                    (
                        old,
                        f"new incarnation {hello.incarnation.hex()[:8]} replaces "
                        f"{old.hello.incarnation.hex()[:8]} (link {old.address} closed)",
                    )
                )
            elif old.initiator == initiator:
                # The same side dialed again: it gave the old link up.
                replaced.append((old, f"a newer link replaces {old.address}"))
            elif initiator > old.initiator:
                log.debug("LAN: %s linked twice; keeping the link %s", device, address)
                replaced.append((old, ""))
            else:
                log.debug("LAN: %s linked twice; keeping the link %s", device, old.address)
                return "duplicate link (the other one is kept)"
        others = sum(1 for lk in self.links() if lk.device != device)
        if others >= self.options.max_links:
            self._report("refused", device, address, "too many links")
            return "too many links"
        owner = self.peer.writers.owner(hello.peer_id)
        if owner is not None and all(owner is not old for old, _ in replaced):
            error = ForbiddenWriterError(
                f"forged writer: device {device} declares client id {hello.peer_id}, "
                "owned by another live connection"
            )
            self._report("refused", device, address, str(error), error, peer_id=hello.peer_id)
            return "forged writer: that client id is in use"
        for old, why in replaced:
            self._unlink(old)
            if why:
                self._report("replaced", device, address, why, peer_id=hello.peer_id)
        if self.peer.writers.declare(link, [hello.peer_id]) is not None:
            # Unreachable: its only other owner was closed just above.
            return "forged writer: that client id is in use"
        if member.incarnation is not None and member.incarnation != hello.incarnation:
            member.retired = [*member.retired, member.incarnation][-_RETIRED:]
        member.incarnation = hello.incarnation
        link.check = self._checker(device, address, hello, link)
        was_active = self._active(member)
        member.links.append(link)
        self._by_conn[conn] = link
        if outbound:
            member.addresses.pop(address, None)
            member.addresses = {address: 0, **member.addresses}
            member.stale.pop(address, None)
        member.lost_since = None
        if not was_active:
            self._remesh()
        member.next_at = None
        self._report(
            "linked",
            device,
            address,
            "outbound link" if outbound else "inbound link",
            peer_id=hello.peer_id,
        )
        return link

    def _unlink(self, link: LanLink) -> None:
        """Drop a link now (its session ends; nothing waits for a timeout)."""
        member = self._members.get(link.device)
        if member is not None and link in member.links:
            member.links.remove(link)
        link.conn.abort()

    def _ended(self, link: LanLink) -> None:
        """A link's session is over."""
        error = link.conn.error
        if isinstance(error, LinkFrameError):
            # A tampered, replayed, reordered or cut frame: the link refused it.
            self._report(
                "refused",
                link.device,
                link.address,
                f"frame refused ({error.kind}): {error}",
                error,
            )
        self._by_conn.pop(link.conn, None)
        self.peer.writers.release(link)
        member = self._members.get(link.device)
        if member is None:
            return
        if link in member.links:
            member.links.remove(link)
            member.next_at = None  # dial again under the grace rule
        if not member.links and not member.addresses and member.lost_since is None:
            # Known only by the link it made to us: nothing to dial, forgotten in time.
            member.lost_since = asyncio.get_running_loop().time()
        member.wake.set()

    async def _accepted(self, conn: Connection) -> None:
        """An inbound link whose handshake succeeded: adopt it and run its session."""
        assert isinstance(conn, LanConnection)  # our own transport accepted it
        link = self._adopt(conn, outbound=False, address=conn.remote_address)
        if isinstance(link, str):
            await conn.close(link)
            return
        try:
            await self.peer.serve(conn)
        finally:
            self._ended(link)

    async def _outbound(self, link: LanLink) -> None:
        try:
            await self.peer.attach(link.conn)
        except LocalProtocolError:
            pass  # the Peer is closing
        finally:
            self._ended(link)
        member = self._members.get(link.device)
        if not link.opened and member is not None and not self._stopping:
            # It closed the link before its session opened (it refused us): a failure
            # of that address like any other, so that it is dropped if it goes on.
            error = link.conn.error or TransportError(
                f"{link.device} closed the link before its session opened"
            )
            self._failed(member, link.address, error)
            delay = self.options.backoff.delay(member.attempt, self._rng)
            member.next_at = asyncio.get_running_loop().time() + delay
            member.attempt += 1

    # -- members and the mesh -------------------------------------------------------------

    def _member(self, fingerprint: str) -> _Member:
        member = self._members.get(fingerprint)
        if member is None:
            member = self._members[fingerprint] = _Member(fingerprint)
            member.driver = self._spawn(self._drive(member), f"LAN member {fingerprint}")
        return member

    def _active(self, member: _Member) -> bool:
        return bool(member.addresses or any(not lk.closed for lk in member.links))

    def _remesh(self) -> None:
        """Recompute our neighbours; close links we dialed that are not neighbours any more."""
        active = [fp for fp, m in self._members.items() if self._active(m)]
        self._neighbours = neighbours(self.fingerprint, active, full_mesh=self.options.full_mesh)
        for member in self._members.values():
            if member.fingerprint not in self._neighbours:
                for link in list(member.links):
                    if link.outbound and not member.static:
                        log.info(
                            "LAN: %s is not a neighbour any more: closing our link", link.device
                        )
                        self._unlink(link)
            member.wake.set()

    def _allowed(self, fingerprint: str) -> bool:
        allowed = self.transport.allowed
        return allowed is None or fingerprint in allowed

    def _wants(self, member: _Member) -> bool:
        if not self._allowed(member.fingerprint):
            return False
        if member.lost_since is not None:
            return bool(member.stale)
        return bool(member.addresses) and (member.static or member.fingerprint in self._neighbours)

    async def _follow(self, source: Discovery) -> None:
        manual = source is self._manual_source
        async for hint in source.hints():
            if self._stopping:
                return
            self._take(hint, manual=manual)

    def _take(self, hint: Hint, *, manual: bool) -> None:
        if hint.gone:
            # It said goodbye: stop dialing what it announced (a link that is up
            # stays up until its session ends; a new announcement brings it back).
            gone = self._members.get(hint.fingerprint or "")
            log.info("LAN: %s withdrew its announcement", hint.fingerprint)
            if gone is not None:
                gone.addresses = {a: n for a, n in gone.addresses.items() if a in gone.manual}
                self._remesh()
            return
        if hint.fingerprint is None:
            for address in hint.addresses:
                if address not in self._manual:
                    entry = self._manual[address] = _Manual(address)
                    entry.driver = self._spawn(self._drive_manual(entry), f"LAN {address}")
            return
        fp = hint.fingerprint
        if fp == self.fingerprint:
            return
        if fp not in self._members and len(self._members) >= self.options.max_members:
            log.warning("LAN: ignoring %s: %d devices known already", fp, len(self._members))
            return
        member = self._member(fp)
        new = [a for a in hint.addresses if a not in member.addresses]
        # The hint's addresses first (the newest news), each with a clean record.
        older = {a: n for a, n in member.addresses.items() if a not in hint.addresses}
        member.addresses = {**dict.fromkeys(hint.addresses, 0), **older}
        for address in hint.addresses:
            member.stale.pop(address, None)
        member.static = member.static or manual
        if manual:
            member.manual.update(hint.addresses)
        was_lost = member.lost_since is not None
        member.lost_since = None
        if new or was_lost:
            member.attempt = 0
            member.next_at = None
            self._report("discovered", fp, hint.addresses[0], f"at {', '.join(hint.addresses)}")
            self._remesh()
        member.wake.set()

    def _dials_first(self, fingerprint: str) -> bool:
        """Whether we dial at once (the larger fingerprint) or after ``dial_grace``."""
        return self.fingerprint > fingerprint

    async def _wait(self, event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    async def _drive(self, member: _Member) -> None:
        """Keep a link with ``member`` while it is wanted: dial, back off, probe, forget."""
        loop = asyncio.get_running_loop()
        o = self.options
        while not self._stopping:
            member.wake.clear()
            if any(not lk.closed for lk in member.links) or not self._wants(member):
                if self._forgettable(member, loop.time()):
                    self._forget(member)
                    return
                await self._wait(member.wake, o.probe_interval)
                continue
            now = loop.time()
            if member.next_at is None:
                grace = 0.0 if self._dials_first(member.fingerprint) else o.dial_grace
                member.next_at = now + grace
            if member.next_at > now:
                await self._wait(member.wake, member.next_at - now)
                continue
            await self._dial(member)

    def _forgettable(self, member: _Member, now: float) -> bool:
        return (
            not member.static
            and not member.links
            and member.lost_since is not None
            and now - member.lost_since > self.options.probe_for
        )

    def _forget(self, member: _Member) -> None:
        log.info(
            "LAN: forgetting %s (unreachable for %.0f s)",
            member.fingerprint,
            self.options.probe_for,
        )
        self._members.pop(member.fingerprint, None)
        self._remesh()

    async def _dial(self, member: _Member) -> None:
        """One round of dial attempts, best address first; schedules the next on failure."""
        loop = asyncio.get_running_loop()
        o = self.options
        lost = member.lost_since is not None
        for address in list(member.stale if lost else member.addresses):
            if self._stopping or any(not lk.closed for lk in member.links):
                return
            try:
                conn = await self.transport.connect(address)
            except TransportError as exc:
                self._failed(member, address, exc)
                continue
            link = self._adopt(conn, outbound=True, address=address)
            if not isinstance(link, str):
                self._spawn(self._outbound(link), f"LAN link to {address}")
                return
            await conn.close(link)
            if any(not lk.closed for lk in member.links):
                return  # a duplicate of the link kept
            break  # refused by our own rules: not the address's fault, but wait all the same
        if member.lost_since is not None:
            member.next_at = loop.time() + o.probe_interval
        else:
            member.next_at = loop.time() + o.backoff.delay(member.attempt, self._rng)
            member.attempt += 1

    def _failed(self, member: _Member, address: str, exc: TransportError) -> None:
        if _is_refusal(exc):
            # Another group key, the wrong device at an announced address, off the allow-list.
            self._report("refused", member.fingerprint, address, str(exc), exc)
        else:
            log.debug("LAN: dialing %s at %s failed: %s", member.fingerprint, address, exc)
        if member.lost_since is not None or address not in member.addresses:
            return
        member.addresses[address] += 1
        if member.addresses[address] >= self.options.max_failures:
            del member.addresses[address]
            member.stale[address] = None
            self._report(
                "dropped",
                member.fingerprint,
                address,
                f"{self.options.max_failures} failures in a row (last: {exc})",
                exc,
            )
            if not member.addresses:
                member.lost_since = asyncio.get_running_loop().time()
                member.next_at = member.lost_since + self.options.probe_interval
                self._remesh()

    async def _drive_manual(self, manual: _Manual) -> None:
        """Dial an address given without a fingerprint until a device answers there."""
        o = self.options
        while not self._stopping:
            try:
                conn = await self.transport.connect(manual.address)
            except TransportError as exc:
                if _is_refusal(exc):
                    self._report("refused", None, manual.address, str(exc), exc)
                manual.failures += 1
                if manual.failures == o.max_failures:
                    self._report(
                        "dropped",
                        None,
                        manual.address,
                        f"{o.max_failures} failures in a row (last: {exc}); "
                        f"probing it every {o.probe_interval:g} s",
                        exc,
                    )
                delay = (
                    o.probe_interval
                    if manual.failures >= o.max_failures
                    else o.backoff.delay(manual.attempt, self._rng)
                )
                manual.attempt += 1
                await asyncio.sleep(delay)
                continue
            device = conn.remote_identity.fingerprint
            where = parse_address(manual.address)
            named = f"lan://{device}@{_host(where)}:{where.port}"
            member = self._member(device) if device != self.fingerprint else None
            if member is not None:
                member.static = True
                member.manual.add(named)
                member.addresses = {named: 0, **member.addresses}
                member.stale.pop(named, None)
                self._static.append(named)
                self._remesh()
            link = self._adopt(conn, outbound=True, address=named)
            if isinstance(link, str):
                await conn.close(link)
            else:
                self._spawn(self._outbound(link), f"LAN link to {named}")
            # From now on the member (known by its fingerprint) is dialed at `named`.
            self._manual.pop(manual.address, None)
            return

    def _spawn(self, coro: Coroutine[object, object, None], what: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(what, t))
        return task

    def _done(self, what: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, TransportError):
            log.error("%s failed: %r", what, exc, exc_info=exc)
            error = exc if isinstance(exc, CrdtSyncError) else None
            self.peer.report(Status("error", reason=f"{what} failed: {exc}", error=error))


def _is_refusal(error: TransportError) -> bool:
    """Whether a failed handshake was a refusal (a status), not a dead or foreign peer.

    Refusals: the key proven is not the one expected or allowed
    (``PeerIdentityError``), the other side holds another group key, or it
    refused us in a CLOSE frame. Not: a timeout, a connection cut before the
    keys were exchanged, something that is not a crdtsync peer.
    """
    if isinstance(error, PeerIdentityError):
        return True
    text = str(error)
    return isinstance(error, HandshakeError) and ("group key" in text or "refused" in text)


def _host(address: LanAddress) -> str:
    return f"[{address.host}]" if ":" in address.host else address.host


def load_group(group_key: GroupKeyLike) -> GroupKey:
    """A :class:`GroupKey`, read from its file when a path is given.

    Raises:
        KeyFileError: the file is missing, malformed or readable by others.
    """
    if isinstance(group_key, GroupKey):
        return group_key
    return GroupKey.load(group_key)
