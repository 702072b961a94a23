"""Finding LAN peers: zeroconf announcements, or addresses given by hand.

A discovery source yields :class:`Hint` objects: "a device with this
fingerprint was seen at these ``lan://`` addresses" (or that its announcement
went away). Hints are only hints. Anyone on the network can announce anything,
so a hint never grants access: the link's handshake proves the device key and
the group key, and a ``lan://FINGERPRINT@host:port`` address from a hint makes
the link refuse any other device at that address. Nor does a missing
announcement mean a peer is gone: zeroconf keeps a vanished peer's PTR record
for at least 1125 s whatever TTL it advertised, and a killed peer sends no
goodbye, so liveness comes from the sync session's own pings and idle timers.

The seam is :class:`crdtsync.net.Discovery` (start, iterate hints, close; with
:class:`crdtsync.net.Hint`, both re-exported here); it has two implementations
here, checked by :func:`crdtsync.testing.check_discovery`:

* :class:`ZeroconfDiscovery`: announces this device and browses for others with
  zeroconf's async API (``AsyncZeroconf``, ``AsyncServiceBrowser``,
  ``AsyncServiceInfo.async_request``), awaiting the tasks that registering and
  unregistering return (or no announcement / goodbye is actually sent);
* :class:`StaticDiscovery`: a fixed (or growing) list of ``lan://`` addresses,
  for peers on another subnet that multicast does not reach.

What is announced (service ``_crdtsync._tcp.local.``), and nothing else:

=============  ==========================================  ===================================
record         value                                       why
=============  ==========================================  ===================================
instance name  ``<fingerprint>._crdtsync._tcp.local.``     a name that is not the host's
SRV            port; target ``<fingerprint>.local.``       where to connect (not the hostname)
A              the given interfaces' IPv4 addresses        where to connect
TXT ``v``      ``1``                                       the link protocol version
TXT ``fp``     the device fingerprint                      checked against the instance name
TXT ``g``      today's group tag (:meth:`GroupKey.tag`)    members recognise each other
=============  ==========================================  ===================================

The TXT record is 56 bytes (under 200, so one packet). No document name, user
name or group name is announced; the group tag changes every UTC day, so it
links a device's announcements within one day only, and the fingerprint
(stable) links a device across days: see ``docs/LAN.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from crdtsync.errors import LocalProtocolError, TransportError
from crdtsync.net import Discovery, Hint

from .identity import DeviceIdentity, GroupKey
from .link import LanAddress, parse_address

__all__ = [
    "MAX_TXT",
    "SERVICE_TYPE",
    "Discovery",
    "Hint",
    "StaticDiscovery",
    "ZeroconfDiscovery",
]

logger = logging.getLogger("crdtsync.lan")

#: The DNS-SD service type.
SERVICE_TYPE = "_crdtsync._tcp.local."
#: The TXT record's size limit (ours is 56 bytes).
MAX_TXT = 200
_TXT_VERSION = "1"
_FINGERPRINT = re.compile(r"[a-z2-7]{32}")
# Hints not yet taken, at most (one per device: newer ones replace older).
_MAX_PENDING = 256


class _HintQueue:
    """Hints waiting to be taken, one per key (newest wins), bounded."""

    def __init__(self) -> None:
        self._pending: dict[str, Hint] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self._dropped = 0

    def put(self, key: str, hint: Hint) -> None:
        if self._closed:
            return
        if key not in self._pending and len(self._pending) >= _MAX_PENDING:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                logger.warning("discovery: %d hints dropped (too many devices)", self._dropped)
            return
        self._pending.pop(key, None)  # re-queue at the end
        self._pending[key] = hint
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[Hint]:
        while True:
            while not self._pending:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
            if self._closed:
                return
            key = next(iter(self._pending))
            yield self._pending.pop(key)


class StaticDiscovery:
    """Hints for ``lan://`` addresses given by hand (another subnet, no multicast).

    Args:
        addresses: ``lan://[FINGERPRINT@]host:port`` addresses.

    Raises:
        TransportError: an address that does not parse.
    """

    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self._queue = _HintQueue()
        self._initial = [parse_address(a) for a in addresses]

    async def start(self) -> None:
        """Yield a hint for each address given."""
        for address in self._initial:
            self.add(str(address))

    def add(self, address: str) -> None:
        """Add an address (e.g. typed in by a user); a hint for it follows.

        Raises:
            TransportError: the address does not parse.
        """
        parsed = parse_address(address)
        self._queue.put(str(parsed), Hint(parsed.fingerprint, (str(parsed),)))

    def hints(self) -> AsyncIterator[Hint]:
        """The hints: one per address, then more as :meth:`add` is called."""
        return self._queue.__aiter__()

    async def close(self) -> None:
        """End the iteration; idempotent."""
        self._queue.close()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class ZeroconfDiscovery:
    """Announce this device and browse for group members over mDNS / DNS-SD.

    Example::

        disc = ZeroconfDiscovery(me, group, port=listener.port, interfaces=["192.168.1.10"])
        await disc.start()
        async for hint in disc.hints():
            ...  # connect to hint.addresses[0] unless linked already

    Args:
        identity: this device (its fingerprint names the announcement).
        group: the group key (for the rotating tag announced and recognised).
        port: the TCP port this device's ``LanTransport`` listens on.
        interfaces: IPv4 addresses of the interfaces to announce and browse on;
            None for all of the machine's (what an application wants; tests pass
            a namespace's own address, or ``["127.0.0.1"]``).
        addresses: the IPv4 addresses to announce (default: ``interfaces``, or
            every address of the machine when those are None).
        request_timeout: seconds to wait for a peer's records once its name is seen.
        clock: the current time (UTC, aware); for the day's tag.
    """

    def __init__(
        self,
        identity: DeviceIdentity,
        group: GroupKey,
        port: int,
        *,
        interfaces: Sequence[str] | None = None,
        addresses: Sequence[str] | None = None,
        request_timeout: float = 3.0,
        clock: Callable[[], _dt.datetime] = _now,
    ) -> None:
        if not 0 < port < 65536:
            raise LocalProtocolError(f"announce a real TCP port, not {port}")
        self.identity = identity
        self.group = group
        self.port = port
        self.interfaces = list(interfaces) if interfaces is not None else None
        if addresses is None and interfaces is not None:
            addresses = [a for a in interfaces if a != "0.0.0.0"]
        self.addresses = list(addresses) if addresses is not None else None
        self.request_timeout = request_timeout
        self._clock = clock
        self._queue = _HintQueue()
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        # The day the announced tag belongs to.
        self._tag_day: _dt.date | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Resolutions running, by service name (one at a time per name).
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def name(self) -> str:
        """This device's service instance name."""
        return f"{self.identity.fingerprint}.{SERVICE_TYPE}"

    def service_info(self) -> AsyncServiceInfo:
        """The records this device announces now (today's tag).

        Raises:
            LocalProtocolError: the TXT record would exceed :data:`MAX_TXT` bytes.
        """
        fp = self.identity.fingerprint
        now = self._clock()
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.name,
            port=self.port,
            properties={"v": _TXT_VERSION, "fp": fp, "g": self.group.current_tag(now)},
            server=f"{fp}.local.",
            parsed_addresses=self.addresses if self.addresses is not None else _all_ipv4(),
        )
        if len(info.text) >= MAX_TXT:
            raise LocalProtocolError(f"the TXT record is {len(info.text)} bytes")
        return info

    async def start(self) -> None:
        """Browse, and announce this device; returns once the announcement went out.

        Browsing starts first, so that a restarted peer hears the others at
        once. The name is not probed for (zeroconf's uniqueness check waits
        about a second, and would let anyone who announces our fingerprint
        first keep us from announcing): it is our fingerprint, and another
        device announcing it is an impostor whose hint the handshake refutes.

        Raises:
            TransportError: zeroconf could not start (no such interface, socket error).
        """
        if self._azc is not None:
            raise LocalProtocolError("start() once")
        try:
            self._azc = AsyncZeroconf(
                interfaces=self.interfaces if self.interfaces is not None else InterfaceChoice.All,
                ip_version=IPVersion.V4Only,
            )
            self._info = self.service_info()
            self._tag_day = self._clock().astimezone(_dt.UTC).date()
            self._browser = AsyncServiceBrowser(
                self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
            )
            # The register call returns a task: only awaiting it sends the announcement.
            await (await self._azc.async_register_service(self._info, cooperating_responders=True))
        except OSError as exc:
            await self.close()
            raise TransportError(f"zeroconf could not start: {exc}") from None
        self._spawn(self._rotate_tag())
        logger.info(
            "discovery: announcing %s on %s port %d",
            self.identity.fingerprint,
            ", ".join(self.interfaces or ["all interfaces"]),
            self.port,
        )

    def hints(self) -> AsyncIterator[Hint]:
        """Hints about group members, as they are seen; ends after :meth:`close`."""
        return self._queue.__aiter__()

    async def close(self) -> None:
        """Send the goodbye, stop browsing, and end the hints. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        for task in [*self._tasks, *self._resolving.values()]:
            task.cancel()
        for task in [*self._tasks, *self._resolving.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._azc is not None:
            if self._info is not None:
                # As with register: the goodbye goes out only when this task is awaited.
                with contextlib.suppress(OSError):
                    await (await self._azc.async_unregister_service(self._info))
            await self._azc.async_close()

    # -- internals ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("discovery task failed", exc_info=task.exception())

    async def _rotate_tag(self) -> None:
        """Re-announce with the new day's tag after each UTC midnight."""
        while True:
            now = self._clock().astimezone(_dt.UTC)
            midnight = _dt.datetime.combine(
                now.date() + _dt.timedelta(days=1), _dt.time(), tzinfo=_dt.UTC
            )
            # A few seconds late, so that the clock has surely turned.
            await asyncio.sleep((midnight - now).total_seconds() + 2)
            day = self._clock().astimezone(_dt.UTC).date()
            if day != self._tag_day and self._azc is not None:
                self._info = self.service_info()
                self._tag_day = day
                await (await self._azc.async_update_service(self._info))
                logger.info("discovery: group tag rotated for %s", day.isoformat())

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called on the event loop by zeroconf: only schedule work here.
        if self._closed or service_type != SERVICE_TYPE or not name.endswith("." + SERVICE_TYPE):
            return
        label = name[: -len(SERVICE_TYPE) - 1]
        if label == self.identity.fingerprint or not _FINGERPRINT.fullmatch(label):
            return
        if state_change is ServiceStateChange.Removed:
            self._queue.put(label, Hint(label, (), gone=True))
            return
        if name in self._resolving:
            return
        task = asyncio.ensure_future(self._resolve(name, label))
        self._resolving[name] = task
        task.add_done_callback(lambda _t: self._resolving.pop(name, None))

    async def _resolve(self, name: str, label: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._azc.zeroconf, self.request_timeout * 1000):
            logger.debug("discovery: no records for %s in time", label)
            return
        props = info.properties
        if props.get(b"v") != _TXT_VERSION.encode() or props.get(b"fp") != label.encode():
            logger.debug(
                "discovery: %s announces another version or a mismatched fingerprint", label
            )
            return
        tag = props.get(b"g")
        if tag is None or tag.decode("ascii", "replace") not in self.group.accepted_tags(
            self._clock()
        ):
            return  # another group (or a stale tag): not ours to link with
        if info.port is None or not 0 < info.port < 65536:
            return
        ips = info.parsed_addresses(IPVersion.V4Only)
        addresses = tuple(str(LanAddress(ip, info.port, label)) for ip in ips)
        if addresses:
            self._queue.put(label, Hint(label, addresses))


def _all_ipv4() -> list[str]:
    """The machine's IPv4 addresses but loopback's (what to announce on every interface)."""
    import ifaddr  # zeroconf's own dependency

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                with contextlib.suppress(OSError):
                    socket.inet_aton(ip.ip)
                    found.append(ip.ip)
    return found
