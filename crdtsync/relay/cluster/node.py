"""One node of a relay cluster on PostgreSQL: the relay's shell around the leases.

``crdtsync relay --store postgresql://... --node-url ws://this-node:port`` runs a
:class:`ClusterNode`: an ordinary :class:`~crdtsync.relay.server.Relay` whose rooms
live in a :class:`~crdtsync.store.postgres.PostgresStore` shared by every node,
each room owned by one node at a time through its lease row
(:mod:`~crdtsync.relay.cluster.leases`; ``docs/CLUSTER.md`` has the argument).

* **Owning.** A room is acquired before it is loaded; every write of it (append,
  compaction, create, delete) is fenced by the lease epoch in the write's own
  transaction, so a node that lost a room cannot store anything of it, and
  nothing it could not store is acknowledged or forwarded (the relay's rule).
* **Heartbeat.** A task renews the node's lease on the timer of
  :class:`~crdtsync.relay.cluster.heartbeat.NodeLease` (database calls in a
  worker thread). Rooms the database no longer gives the node are dropped
  (their connections closed, so their clients reconnect to the new owner, the
  copy unloaded without a write). A node that could not renew for a whole TTL
  (paused, partitioned) drops every room and is not ready until it renews.
* **Reaching the owner.** A y-protocols client of a room another node owns is
  proxied to it (:mod:`~crdtsync.relay.cluster.proxy`); a room nobody alive owns
  is taken. A crdtsync session is served for every room this node owns or can
  take; a room another node owns is refused with
  :class:`~crdtsync.errors.RoomMovedError` (``DOC_ERROR`` code 21, the reason
  names the owner's URL).
* **Proxied clients at the owner.** A proxied connection reaches the owner
  from the proxying node's address. Its hop header is signed
  (:mod:`~crdtsync.relay.cluster.hop`, under the token secret or, without one,
  the cluster key kept in the database); a valid one makes the owner take the
  forwarded client address as the connection's own, and the hosts of the
  nodes alive in the node table (refreshed at each heartbeat) skip the
  per-address admission budgets at accept, until their request shows whether
  it was signed (``docs/CLUSTER.md``, "Proxied clients and per-address budgets").
* **Idle rooms** are compacted, unloaded and released; **SIGTERM** drains: the
  sessions close, everything stored, every room released (another node takes
  it at once), the node unregistered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers

from crdtsync.errors import (
    ErrorCode,
    ProtocolError,
    RoomMovedError,
    StoreError,
    StoreLockedError,
)
from crdtsync.model.doc import Doc
from crdtsync.net import Connection
from crdtsync.peer.guests import DocWatcher, Origin
from crdtsync.peer.peer import Grant, HelloInfo, Peer, Status
from crdtsync.protocol import ysession as ys
from crdtsync.protocol.session import WriterRegistry
from crdtsync.relay.admission import address_key
from crdtsync.relay.backend import BackendSettings, RoomGuest
from crdtsync.relay.cluster.heartbeat import LeaseExpired, NodeLease, RenewDue
from crdtsync.relay.cluster.hop import FORWARDED_HEADER, HOP_HEADER, HopSigner, hop_key
from crdtsync.relay.cluster.leases import Lease, Leases, Owner
from crdtsync.relay.cluster.proxy import CLOSE_NOT_OWNER, proxy_y
from crdtsync.relay.config import RelayConfig
from crdtsync.relay.server import Relay
from crdtsync.relay.stored import AfterStored
from crdtsync.store.postgres import PostgresStore

__all__ = ["ClusterBackend", "ClusterNode"]

log = logging.getLogger("crdtsync.relay.cluster")

# Attempts to reach a room's owner before the client is told to try again later.
_ROUTE_ATTEMPTS = 3


def _mono() -> float:
    return time.monotonic()


class ClusterNode:
    """A relay node of a cluster (see the module docs).

    Example::

        node = ClusterNode(RelayConfig(port=8765, store="postgresql://db/app",
                                       node_url="ws://10.0.0.5:8765", secret=key))
        await node.relay.start()

    Args:
        config: the relay's settings; ``store`` is the cluster's database,
            ``node_url`` where other nodes reach this one (default
            ``ws://host:port``), ``lease_ttl`` the lease time.
        schema: the PostgreSQL schema of the cluster's tables.
        timeout: seconds any one database operation may take before it fails.

    Raises:
        StoreError: ``store`` is not a ``postgresql://`` URL, or no node URL can be made.
    """

    def __init__(
        self, config: RelayConfig, *, schema: str = "crdtsync", timeout: float = 5.0
    ) -> None:
        dsn = config.store
        if dsn is None or not dsn.startswith(("postgresql://", "postgres://")):
            raise StoreError(f"--store must be a postgresql:// URL, not {dsn!r}")
        url = config.node_url
        if url is None:
            if config.port == 0:
                raise StoreError("--node-url is needed when the port is chosen at start (0)")
            url = f"ws://{config.host}:{config.port}"
        self.config = config
        self.dsn = dsn
        self.url = url.rstrip("/")
        self.schema = schema
        self._timeout = timeout
        #: The node's leases (its id is ``leases.node_id``).
        self.leases = Leases(dsn, self.url, ttl=config.lease_ttl, schema=schema, timeout=timeout)
        self._lease = NodeLease(config.lease_ttl)
        self._peer: Peer | None = None
        self._store: PostgresStore | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._db_ok = False
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Counters and gauges of /metrics.
        self.proxied = 0
        self.proxied_total = 0
        self.heartbeats = 0
        self.heartbeat_failures = 0
        self.rooms_taken = 0
        self.rooms_lost = 0
        # Signs and checks hop headers (set at start, once the key is known).
        self._signer: HopSigner | None = None
        # Address keys of the hosts of the cluster's live nodes (refreshed at heartbeats).
        self._node_hosts: frozenset[str] = frozenset()
        #: The relay this node runs.
        self.relay = Relay(config, backend=self._backend, cluster=self)

    # -- the backend ---------------------------------------------------------------------

    async def _backend(self, settings: BackendSettings) -> ClusterBackend:
        """Register, renew once, open the fenced store, start the Peer and the heartbeat."""
        await asyncio.to_thread(self.leases.register)
        sent = self._lease.renewal_sent(_mono())
        await asyncio.to_thread(self.leases.heartbeat)
        self._lease.renewed(sent, _mono())
        self._db_ok = True
        try:
            secret = self.config.secret
            if secret is None:
                secret = await asyncio.to_thread(self.leases.cluster_key)
            self._signer = HopSigner(hop_key(secret))
            await self._refresh_node_hosts()
            store = await asyncio.to_thread(
                PostgresStore,
                self.dsn,
                schema=self.schema,
                fence=self.leases.fence,
                timeout=self._timeout,
            )
        except BaseException:
            await asyncio.to_thread(self.leases.unregister)
            self.leases.close()
            raise
        self._store = store
        peer = Peer(
            store=store,
            authorize=partial_authorize(settings.authorize, self._own_for_session),
            options=settings.options,
            compact_every=settings.compact_every,
            max_send_queue=settings.max_send_queue,
            announce=False,
            # Commits on the store's worker thread (group commit), never on the loop.
            async_commits=True,
        )
        await peer.start()
        self._peer = peer
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        self._heartbeat.add_done_callback(self._heartbeat_done)
        log.info(
            "cluster node started",
            extra={"fields": {"node": f"{self.leases.node_id:x}", "url": self.url}},
        )
        return ClusterBackend(peer, self)

    def _heartbeat_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._db_ok = False
            log.error("the heartbeat task failed: the node is not ready", exc_info=exc)

    # -- ownership -----------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the database answered lately and the node's lease is valid."""
        return self._db_ok and self._lease.valid(_mono()) and not self._closing

    def _loaded(self) -> list[str]:
        return self._peer.docs() if self._peer is not None else []

    async def _acquire(self, room: str) -> Lease | Owner:
        """Own ``room`` here, or learn its owner (a fresh lease drops any stale copy first).

        Raises:
            StoreError: the database failed, or this node's lease is not valid.
        """
        if not self._lease.valid(_mono()):
            raise StoreError("this node's lease is not valid (database unreachable?)")
        epoch = self.leases.held().get(room)
        if epoch is not None:
            return Lease(room, epoch, fresh=False)
        result = await asyncio.to_thread(self.leases.acquire, room)
        if isinstance(result, Lease) and result.fresh:
            self.rooms_taken += 1
            if room in self._loaded():
                # A copy of an earlier lease of ours: someone may have written since.
                await self._unload({room}, "room reloaded", forget=False)
        return result

    def _own_for_session(self, room: str) -> None:
        """The check of a crdtsync session's room: own it here or refuse it (synchronous).

        The Peer's grant check is synchronous, so the acquisition runs on the loop
        (one short transaction, only the first time a room is asked for here).
        """
        if self.leases.held().get(room) is not None and self._lease.valid(_mono()):
            return
        if not self._lease.valid(_mono()):
            raise ProtocolError("the relay node is not ready", code=ErrorCode.INTERNAL_ERROR)
        try:
            result = self.leases.acquire(room)
        except StoreError as exc:
            raise ProtocolError(
                f"the relay node cannot reach its database: {exc}", code=ErrorCode.INTERNAL_ERROR
            ) from None
        if isinstance(result, Owner):
            raise RoomMovedError(f"room {room!r} is served by {result.url}")
        if result.fresh:
            self.rooms_taken += 1
            if room in self._loaded():
                # A copy of an earlier lease of ours is still loaded: unload it (and close
                # the sessions: their peers reconnect and get a fresh load).
                self._spawn(self._unload({room}, "room reloaded", forget=False))
                raise ProtocolError(
                    f"room {room!r} is being reloaded", code=ErrorCode.INTERNAL_ERROR
                )

    def node_host(self, key: str) -> bool:
        """See :meth:`crdtsync.relay.backend.ClusterHooks.node_host`."""
        return key in self._node_hosts

    def forwarded_client(self, headers: Headers, room: str) -> str | None:
        """See :meth:`crdtsync.relay.backend.ClusterHooks.forwarded_client`."""
        hops = headers.get_all(HOP_HEADER)
        clients = headers.get_all(FORWARDED_HEADER)
        if self._signer is None or len(hops) != 1 or len(clients) != 1:
            return None
        client = clients[0]
        if self._signer.verify(hops[0], room, client, now=time.time()):
            return client
        return None

    async def _refresh_node_hosts(self) -> None:
        """Learn the addresses of the nodes alive now (their ``--node-url`` hosts, resolved)."""
        urls = await asyncio.to_thread(self.leases.node_urls)
        hosts = await asyncio.to_thread(_resolve_hosts, [*urls, self.url])
        if hosts != self._node_hosts:
            log.info("cluster node hosts", extra={"fields": {"hosts": sorted(hosts)}})
        self._node_hosts = hosts

    async def route_y(self, ws: ServerConnection, room: str, target: str, address: str) -> bool:
        """See :meth:`crdtsync.relay.backend.ClusterHooks.route_y`."""
        signer = self._signer
        assert signer is not None  # set at start, before any connection
        hop = ws.request is not None and bool(ws.request.headers.get_all(HOP_HEADER))
        replay: list[bytes | str] = []
        for _ in range(_ROUTE_ATTEMPTS):
            try:
                result = await self._acquire(room)
            except StoreError as exc:
                log.warning("cannot route", extra={"fields": {"room": room, "error": str(exc)}})
                await ws.close(ys.CLOSE_TRY_AGAIN_LATER, "the cluster's database is unreachable")
                return True
            if isinstance(result, Lease):
                if replay:
                    # Only after a failed proxy attempt: the client's first messages went
                    # to a node that turned it away; it resyncs on its next connection.
                    await ws.close(ys.CLOSE_TRY_AGAIN_LATER, "the room moved: reconnect")
                    return True
                return False
            if hop:
                # A proxied connection reached a node that is not the owner: never chain.
                await ws.close(CLOSE_NOT_OWNER, "not the owner")
                return True
            self.proxied += 1
            self.proxied_total += 1
            try:
                outcome = await proxy_y(
                    ws,
                    result.url + target,
                    address=address,
                    hop=signer.sign(room, address, now=time.time()),
                    max_size=self.config.max_frame,
                    replay=replay,
                )
            finally:
                self.proxied -= 1
            if outcome.reached and not outcome.not_owner:
                return True
            if not outcome.reached:
                # The owner is unreachable: maybe dead, then its lease goes with its
                # database session; ask again (acquire takes it if so).
                await asyncio.to_thread(self.leases.owner, room)
        await ws.close(ys.CLOSE_TRY_AGAIN_LATER, "the room's owner cannot be reached")
        return True

    async def _unload(self, rooms: set[str] | None, reason: str, *, forget: bool = True) -> None:
        """Drop ``rooms`` (None: all): fence them, close their connections, unload them.

        ``forget=False`` keeps the leases (a stale copy of a room held again is unloaded).
        """
        names = set(self._loaded()) if rooms is None else set(rooms)
        if rooms is None:
            names |= set(self.leases.held())
        if forget:
            self.leases.forget(names)
        await self.relay.drop_rooms(None if rooms is None else names, reason)
        peer = self._peer
        if peer is not None:
            for name in names:
                if name in peer.docs():
                    # No compaction: a write would be fenced anyway, and the new owner
                    # loads the room from the log.
                    await peer.close_doc(name, compact=False)
        if names:
            self.rooms_lost += len(names)
            log.warning(
                "rooms dropped",
                extra={
                    "fields": {"count": len(names), "reason": reason, "rooms": sorted(names)[:16]}
                },
            )

    def store_failed(self, failed: dict[str, StoreError]) -> None:
        """Updates of rooms in ``failed`` could not be stored: close those rooms' connections.

        A fenced room (the lease is lost) is dropped for good; after any other
        failure (the database is down) its clients reconnect and resend.
        """
        fenced = {name for name, err in failed.items() if isinstance(err, StoreLockedError)}
        if fenced:
            self._spawn(self._unload(fenced, "writes fenced: the lease is lost"))
        others = set(failed) - fenced
        if others:
            self._spawn(self.relay.drop_rooms(others, "store failure"))

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a cluster task failed", exc_info=exc)

    # -- the heartbeat -------------------------------------------------------------------

    async def _beat(self) -> None:
        """Renew the node's lease forever; drop what it lost."""
        lease = self._lease
        while True:
            due = lease.get_timer()
            if due is not None and due > _mono():
                # A timer, not a poll: it waits until NodeLease has something to do.
                await asyncio.sleep(due - _mono())
            for event in lease.handle_timer(_mono()):
                if isinstance(event, LeaseExpired):
                    self._db_ok = False
                    await self._unload(None, "the node's lease expired")
                elif isinstance(event, RenewDue):
                    await self._renew()

    async def _renew(self) -> None:
        lease = self._lease
        sent = lease.renewal_sent(_mono())
        try:
            await asyncio.to_thread(self.leases.heartbeat)
        except StoreLockedError:
            # The node row is gone: everything it held is someone else's now.
            lease.renewal_failed(_mono())
            self.heartbeat_failures += 1
            await self._unload(None, "the node was forgotten")
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.leases.register)
            return
        except StoreError as exc:
            lease.renewal_failed(_mono())
            self.heartbeat_failures += 1
            self._db_ok = False
            log.warning("heartbeat failed", extra={"fields": {"error": str(exc)[:300]}})
            return
        lease.renewed(sent, _mono())
        self.heartbeats += 1
        self._db_ok = True
        try:
            await self._refresh_node_hosts()
        except (StoreError, OSError) as exc:  # the last list stays in force
            log.warning("node hosts not refreshed", extra={"fields": {"error": str(exc)[:300]}})
        # The heartbeat pruned what the database no longer gives us from the fence.
        lost = set(self._loaded()) - set(self.leases.held())
        if lost:
            await self._unload(lost, "rooms taken by another node")

    # -- /metrics ------------------------------------------------------------------------

    def metrics(self) -> str:
        """The node's metrics in Prometheus text format (appended to the relay's)."""
        node = f'node="{self.leases.node_id:x}"'
        rows: list[tuple[str, str, str, float]] = [
            ("rooms_owned", "gauge", "rooms this node holds the lease of", len(self.leases.held())),
            ("rooms_proxied", "gauge", "y-protocols clients proxied to their owner", self.proxied),
            ("proxied_total", "counter", "y-protocols clients proxied", self.proxied_total),
            ("lease_valid", "gauge", "1 while the lease is valid", self._lease.valid(_mono())),
            ("ready", "gauge", "1 while the node is ready", self.ready()),
            ("heartbeats_total", "counter", "successful heartbeats", self.heartbeats),
            ("heartbeat_failures_total", "counter", "failed heartbeats", self.heartbeat_failures),
            (
                "rooms_taken_total",
                "counter",
                "leases taken from nobody or the dead",
                self.rooms_taken,
            ),
            (
                "rooms_lost_total",
                "counter",
                "rooms dropped (lease lost or expired)",
                self.rooms_lost,
            ),
            (
                "fenced_writes_total",
                "counter",
                "writes refused by the fence",
                self.leases.fence.refused,
            ),
        ]
        out = []
        for short, kind, doc, value in rows:
            name = "crdtsync_cluster_" + short
            out += [
                f"# HELP {name} {doc}",
                f"# TYPE {name} {kind}",
                f"{name}{{{node}}} {int(value)}",
            ]
        return "\n".join(out) + "\n"

    # -- shutdown ------------------------------------------------------------------------

    async def drain(self, peer: Peer) -> None:
        """Drain: the Peer closes its sessions (stored first), then every room is released."""
        self._closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for task in list(self._tasks):
            task.cancel()
        await peer.close()
        try:
            await asyncio.to_thread(self.leases.unregister)
        except StoreError as exc:
            # The leases lapse on their own after the TTL (or at once: our session ends).
            log.warning("unregister failed", extra={"fields": {"error": str(exc)[:300]}})
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
        await asyncio.to_thread(self.leases.close)
        log.info("cluster node stopped", extra={"fields": {"node": f"{self.leases.node_id:x}"}})


def _resolve_hosts(urls: list[str]) -> frozenset[str]:
    """The address keys of the hosts of ``urls`` (names resolved; unresolvable ones left out)."""
    keys: set[str] = set()
    for url in urls:
        try:
            host = urlsplit(url).hostname
        except ValueError:
            continue
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        for info in infos:
            keys.add(address_key(str(info[4][0])))
    return frozenset(keys)


def partial_authorize(
    authorize: Callable[[HelloInfo], bool | Grant], own: Callable[[str], None]
) -> Callable[[HelloInfo], bool | Grant]:
    """The relay's authorize hook, with ``own`` added to the room check of every grant."""

    def wrapped(info: HelloInfo) -> bool | Grant:
        grant = authorize(info)
        if grant is False:
            return False
        if grant is True:
            grant = Grant()
        first = grant.check

        def check(name: str) -> None:
            if first is not None:
                first(name)
            own(name)

        return replace(grant, check=check)

    return wrapped


class ClusterBackend:
    """The relay's :class:`~crdtsync.relay.backend.RoomBackend` on a cluster node.

    A :class:`~crdtsync.peer.peer.Peer` on the fenced store holds the rooms this
    node owns; unloading an idle room releases its lease, closing releases them all.
    """

    def __init__(self, peer: Peer, node: ClusterNode) -> None:
        self._peer = peer
        self._node = node

    @property
    def writers(self) -> WriterRegistry:
        """See :attr:`crdtsync.relay.backend.RoomBackend.writers`."""
        return self._peer.writers

    async def close(self) -> None:
        """See :meth:`crdtsync.relay.backend.RoomBackend.close` (then every lease is released)."""
        await self._node.drain(self._peer)

    async def serve(self, conn: Connection) -> None:
        """See :meth:`crdtsync.relay.backend.RoomBackend.serve`."""
        await self._peer.serve(conn)

    async def join(self, name: str, *, grant: Grant | None = None, address: str = "") -> RoomGuest:
        """See :meth:`crdtsync.relay.backend.RoomBackend.join` (the node owns ``name``)."""
        return await self._peer.join(name, grant=grant, address=address)

    def watch(self, watcher: DocWatcher) -> Callable[[], None]:
        """See :meth:`crdtsync.relay.backend.RoomBackend.watch`.

        The Peer commits on its worker thread, so the relay's ``commit()`` has
        nothing to wait for: instead ``watcher`` hears of each transaction (and,
        to keep their order, each presence update) only once everything imported
        before it is stored. What could not be stored is never passed on, and
        the connections of its room are closed (their clients resend it).
        """
        durable = _DurableWatcher(watcher, self._peer, self._node.store_failed)
        unwatch = self._peer.watch(durable)

        def stop() -> None:
            unwatch()
            durable.close()

        return stop

    def on_status(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """See :meth:`crdtsync.relay.backend.RoomBackend.on_status`."""
        return self._peer.on_status(callback)

    def on_open(self, callback: Callable[[str, Doc], None]) -> Callable[[], None]:
        """See :meth:`crdtsync.relay.backend.RoomBackend.on_open`."""
        return self._peer.on_open(callback)

    def docs(self) -> list[str]:
        """See :meth:`crdtsync.relay.backend.RoomBackend.docs`."""
        return self._peer.docs()

    def users(self, name: str) -> int:
        """See :meth:`crdtsync.relay.backend.RoomBackend.users`."""
        return self._peer.users(name)

    def doc_size(self, name: str) -> int:
        """See :meth:`crdtsync.relay.backend.RoomBackend.doc_size`."""
        return self._peer.doc_size(name)

    async def close_doc(
        self, name: str, *, compact: bool = False, keep: Callable[[], bool] | None = None
    ) -> bool:
        """See :meth:`crdtsync.relay.backend.RoomBackend.close_doc`; unloaded: released."""
        unloaded = await self._peer.close_doc(name, compact=compact, keep=keep)
        if unloaded:
            try:
                await asyncio.to_thread(self._node.leases.release, name)
            except StoreError as exc:
                # It lapses with the node's lease, or goes when the node drains.
                log.warning("release failed", extra={"fields": {"room": name, "error": str(exc)}})
        return unloaded

    def commit(self) -> None:
        """See :meth:`crdtsync.relay.backend.RoomBackend.commit`."""
        self._peer.commit()

    async def durable(self, since: int = 0) -> tuple[int, dict[str, StoreError]]:
        """See :meth:`crdtsync.relay.backend.RoomBackend.durable`."""
        return await self._peer.durable(since)

    def send_queues(self) -> list[int]:
        """See :meth:`crdtsync.relay.backend.RoomBackend.send_queues`."""
        return self._peer.send_queues()


class _DurableWatcher:
    """A :class:`~crdtsync.peer.guests.DocWatcher` that passes events on once stored."""

    def __init__(
        self,
        inner: DocWatcher,
        peer: Peer,
        failed: Callable[[dict[str, StoreError]], None],
    ) -> None:
        self._inner = inner
        self._failed = failed
        self._stored: AfterStored[tuple[bool, str, bytes, Origin]] = AfterStored(
            peer.durable, self._pass_on, what="document events"
        )

    def updated(self, name: str, update: bytes, origin: Origin) -> None:
        self._stored.push((True, name, update, origin))

    def presence(self, name: str, data: bytes, origin: Origin) -> None:
        self._stored.push((False, name, data, origin))

    def _pass_on(
        self, batch: list[tuple[bool, str, bytes, Origin]], failed: Mapping[str, StoreError]
    ) -> None:
        if failed:
            self._failed(dict(failed))
        for is_update, name, data, origin in batch:
            if name in failed or "" in failed:
                continue
            if is_update:
                self._inner.updated(name, data, origin)
            else:
                self._inner.presence(name, data, origin)

    def close(self) -> None:
        self._stored.close()
