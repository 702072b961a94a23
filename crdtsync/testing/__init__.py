"""Acceptance suites for stores, transports, discovery and room backends; a virtual-time loop.

Every :class:`~crdtsync.store.base.Store`, every transport, every discovery
source (:func:`check_discovery`) and every relay room backend
(:mod:`crdtsync.relay.backend`: ``check_room_backend``, loaded on first use)
runs the same suite, like automerge-repo's adapter tests and
``trio.testing.check_two_way_stream``::

    import asyncio
    from crdtsync.testing import check_store, check_transport

    asyncio.run(check_store(MyStore.temporary, reopen=MyStore.reopen))
    asyncio.run(check_transport(lambda: (server_transport, client_transport, "ws://127.0.0.1:0")))

All are coroutines, so they run inside whatever loop the caller's tests use,
and each step is bounded by a timeout: a broken adapter fails, it never hangs.

:class:`VirtualTimeLoop` is an asyncio loop whose clock jumps to the next timer
whenever nothing is ready, so code full of timeouts, backoffs and keepalives
runs deterministically in milliseconds (used by the sync fault-injection tests).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from crdtsync.errors import ConnectionClosedError, StoreError, TransportError
from crdtsync.net import (
    Ability,
    Connection,
    Discovery,
    Hint,
    Transport,
    has_close_codes,
    has_flow_control,
    has_identity,
    keeps_messages,
)
from crdtsync.store.base import Store

__all__ = [
    "VirtualTimeLoop",
    "advance",
    "check_discovery",
    "check_room_backend",
    "check_store",
    "check_transport",
    "run_virtual",
]


def __getattr__(name: str) -> Any:
    # The room-backend suite needs the model, the peer and the relay: loaded on use,
    # so that checking a store or a transport does not import them.
    if name == "check_room_backend":
        from crdtsync.testing.rooms import check_room_backend

        return check_room_backend
    raise AttributeError(f"module 'crdtsync.testing' has no attribute {name!r}")


if TYPE_CHECKING:
    from crdtsync.testing.rooms import check_room_backend

_T = TypeVar("_T")
_STEP = 10.0  # seconds allowed for any single step of a suite


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real file descriptors; sleeps by moving the loop's clock instead."""

    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            # Nothing scheduled: only another thread can wake us; wait for real.
            return super().select(None)
        ready = super().select(0)
        if not ready and timeout > 0:
            self.loop.virtual_now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: ``sleep(60)`` returns at once, 60 s later.

    Timers fire in order and at their exact virtual times, so runs are
    reproducible. Threads still run in real time (the loop waits for them only
    when no timer is pending), so keep executors out of virtual-time tests.
    """

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        # Seconds since the loop was made.
        self.virtual_now = 0.0

    def time(self) -> float:
        """The virtual clock."""
        return self.virtual_now


async def advance(seconds: float) -> None:
    """Let ``seconds`` of virtual time pass (timers due meanwhile fire in order).

    Raises:
        RuntimeError: when not running on a :class:`VirtualTimeLoop` (a test must
            wait for events, never sleep in real time).
    """
    if not isinstance(asyncio.get_running_loop(), VirtualTimeLoop):
        raise RuntimeError("advance() needs a VirtualTimeLoop (see run_virtual)")
    await asyncio.sleep(seconds)


def run_virtual(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


async def _step(aw: Awaitable[_T], what: str) -> _T:
    try:
        return await asyncio.wait_for(aw, _STEP)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


# -- stores -----------------------------------------------------------------------------


async def check_store(
    factory: Callable[[], Store], *, reopen: Callable[[Store], Store] | None = None
) -> None:
    """Check that a :class:`~crdtsync.store.base.Store` keeps the contract.

    Args:
        factory: returns a new, empty store.
        reopen: closes a store and opens it again from where it keeps its data
            (omit for stores that keep nothing across instances).

    Raises:
        AssertionError: with what went wrong.
    """
    store = factory()
    try:
        assert store.load("d") is None, "load of a missing document must be None"
        assert store.names() == [], "a new store must be empty"
        store.create("d", b"")
        doc = store.load("d")
        assert doc is not None
        assert doc.epoch == b""
        assert doc.snapshot is None
        assert doc.updates == []
        payloads = [b"", b"\x00\x00", bytes(range(256)), b"x" * (1 << 20)]
        seqs = [store.append("d", data) for data in payloads]
        assert seqs == sorted(set(seqs)), f"log numbers must increase: {seqs}"
        doc = store.load("d")
        assert doc is not None
        assert doc.updates == list(zip(seqs, payloads, strict=True)), "log must round-trip"

        # Compaction folds exactly the entries up to `upto`.
        store.compact("d", b"snap-1", seqs[1])
        doc = store.load("d")
        assert doc is not None
        assert doc.snapshot == b"snap-1"
        assert doc.updates == list(zip(seqs[2:], payloads[2:], strict=True)), (
            "compact kept the wrong entries"
        )
        later = store.append("d", b"after")
        assert later > seqs[-1], "log numbers must never be reused after a compaction"
        store.compact("d", b"snap-2", seqs[1])  # an old upto: only the snapshot changes
        doc = store.load("d")
        assert doc is not None
        assert doc.snapshot == b"snap-2"
        assert doc.updates[-1] == (later, b"after")

        # Group commit: a batch appends in order, or not at all.
        batch = store.append_many([("d", b"m1"), ("d", b"m2")])
        assert batch == sorted(batch), f"append_many numbers must increase: {batch}"
        assert batch[0] > later, "append_many numbers must follow earlier appends"
        doc = store.load("d")
        assert doc is not None
        assert doc.updates[-2:] == [(batch[0], b"m1"), (batch[1], b"m2")]
        assert store.append_many([]) == []
        try:
            store.append_many([("d", b"lost"), ("missing", b"x")])
        except StoreError:
            pass
        else:
            raise AssertionError("append_many with a missing document must raise StoreError")
        doc = store.load("d")
        assert doc is not None
        assert doc.updates[-1] == (batch[1], b"m2"), "a failed append_many must append nothing"

        # Errors on missing documents; idempotent delete.
        for call in (
            lambda: store.append("missing", b"x"),
            lambda: store.compact("missing", b"s", 1),
        ):
            try:
                call()
            except StoreError:
                pass
            else:
                raise AssertionError("append/compact of a missing document must raise StoreError")
        store.delete("missing")

        # Names: any text, sorted; create replaces a document (new incarnation).
        store.create("é/文档 with spaces", b"\x01" * 16)
        assert store.names() == ["d", "é/文档 with spaces"], store.names()
        store.create("d", b"epoch-2")
        doc = store.load("d")
        assert doc is not None
        assert doc.epoch == b"epoch-2"
        assert doc.snapshot is None
        assert doc.updates == []
        store.delete("d")
        assert store.load("d") is None
        assert store.names() == ["é/文档 with spaces"]

        # Compaction in a worker thread while the loop thread appends: nothing lost.
        store.create("c", b"")
        first = [store.append("c", b"%d" % i) for i in range(50)]
        job = asyncio.ensure_future(asyncio.to_thread(store.compact, "c", b"snap-c", first[-1]))
        more = []
        for i in range(50, 200):
            more.append(store.append("c", b"%d" % i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await _step(job, "compact in a thread")
        doc = store.load("c")
        assert doc is not None
        assert doc.snapshot == b"snap-c"
        assert [u for _, u in doc.updates] == [b"%d" % i for i in range(50, 200)], (
            "concurrent compaction lost updates"
        )

        if reopen is not None:
            store = reopen(store)
            doc = store.load("c")
            assert doc is not None
            assert doc.snapshot == b"snap-c", "snapshot lost on reopen"
            assert len(doc.updates) == 150, "log lost on reopen"
            assert store.names() == ["c", "é/文档 with spaces"]
            assert store.append("c", b"z") > more[-1], "log numbers must survive a reopen"
    finally:
        store.close()
    store.close()  # idempotent
    try:
        store.load("c")
    except StoreError:
        pass
    else:
        raise AssertionError("a closed store must raise StoreError")


# -- transports ---------------------------------------------------------------------------


#: Builds ``(server transport, client transport, listen address)`` for check_transport.
TransportFactory = Callable[[], tuple[Transport[Connection], Transport[Connection], str]]


async def check_transport(factory: TransportFactory) -> None:
    """Check that a transport keeps the contract of ``crdtsync.net``, and its declared abilities.

    Every transport: bytes arrive complete and in order both ways whatever the
    chunking, connections are independent, a close delivers what was sent
    before it and then ends ``recv``, ``send`` after close fails, connecting to
    a closed listener fails, and two Peers sync over it. Then each ability the
    transport declares (``abilities``, the same on every connection it makes and
    accepts): ``MESSAGES`` (each send arrives as exactly one recv, empty
    messages through ``recv_message``), ``FLOW`` (``buffered_amount``; ``abort``
    ends both ends), ``CLOSE_CODES`` (the peer reads the code and reason sent)
    and ``IDENTITY`` (each end names the key the other end's transport holds,
    the same on every connection, with the hello bytes it declared).

    Args:
        factory: returns ``(server transport, client transport, listen address)``;
            the client connects to the address the listener reports.

    Raises:
        AssertionError: with what went wrong.
    """
    server_t, client_t, address = factory()
    declared = client_t.abilities
    assert server_t.abilities == declared, (
        f"client and server transports declare different abilities: "
        f"{declared!r} and {server_t.abilities!r}"
    )
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    finished: list[asyncio.Event] = []

    async def handler(conn: Connection) -> None:
        done = asyncio.Event()
        finished.append(done)
        await accepted.put(conn)
        await done.wait()

    async def pair() -> tuple[Connection, Connection]:
        client = await _step(client_t.connect(listener.address), "connect")
        server = await _step(accepted.get(), "accept")
        for end in (client, server):
            assert end.abilities == declared, (
                f"a connection declares {end.abilities!r}, its transport {declared!r}"
            )
        return client, server

    listener = await _step(server_t.listen(address, handler), "listen")
    try:
        client, server = await pair()

        # Bytes arrive complete and in order, both ways, whatever the chunking.
        chunks = [bytes([i % 256]) * (1 + (i * 7919) % 3000) for i in range(100)] + [
            b"\x00" * (1 << 20)
        ]
        for a, b in ((client, server), (server, client)):
            for chunk in chunks:
                await _step(a.send(chunk), "send")
            want = b"".join(chunks)
            got = bytearray()
            while len(got) < len(want):
                data = await _step(b.recv(), "recv")
                assert isinstance(data, bytes), "recv must return bytes"
                assert data, "recv must not return empty bytes"
                got += data
            assert bytes(got) == want, "bytes were lost, changed or reordered"

        # A second connection is independent of the first.
        client2, server2 = await pair()
        await _step(client2.send(b"two"), "send on the second connection")
        await _step(client.send(b"one"), "send on the first connection")
        assert await _recv_exactly(server2, 3, "recv two") == b"two"
        assert await _recv_exactly(server, 3, "recv one") == b"one"

        if Ability.MESSAGES in declared:
            await _check_messages(client, server)
            await _check_messages(server, client)

        # Close: what was sent first still arrives, then recv ends; send fails.
        await _step(client.send(b"last words"), "send before close")
        await _step(client.close(), "close")
        await _step(client.close(), "second close")
        got = bytearray()
        try:
            while True:
                got += await _step(server.recv(), "recv until the end")
        except ConnectionClosedError:
            pass
        assert bytes(got) == b"last words", f"bytes sent before close were lost: {bytes(got)!r}"
        for conn in (client, server):
            try:
                await _step(conn.send(b"x"), "send after close")
            except ConnectionClosedError:
                pass
            else:
                raise AssertionError("send on a closed connection must raise ConnectionClosedError")
        await _step(client2.close(), "close the second connection")

        if Ability.FLOW in declared:
            await _check_flow(*await pair())
        if Ability.CLOSE_CODES in declared:
            await _check_close_codes(*await pair())
        if Ability.IDENTITY in declared:
            await _check_identity(client, server, *await pair())
    finally:
        for ev in finished:
            ev.set()
        await listener.close()
    try:
        await _step(client_t.connect(listener.address), "connect after the listener closed")
    except TransportError:
        pass
    else:
        raise AssertionError("connect to a closed listener must raise TransportError")

    # A sync session runs over it end to end.
    await _step(_sync_over(server_t, client_t, address), "two peers sync over the transport")


async def _recv_exactly(conn: Connection, n: int, what: str) -> bytes:
    """Read ``n`` bytes, however the transport chunks them (a stream may split anything)."""
    got = bytearray()
    while len(got) < n:
        got += await _step(conn.recv(), what)
    return bytes(got)


async def _check_messages(sender: Connection, receiver: Connection) -> None:
    """A transport declaring MESSAGES: each send is one recv, exactly; empty ones too."""
    assert keeps_messages(sender)
    assert keeps_messages(receiver)
    sizes = [1, 2, 3, 100, 4096, 65_537, 1 << 20, 7]
    messages = [bytes([n % 251]) * n for n in sizes]
    for message in messages:
        await _step(sender.send(message), "send a message")
    for message in messages:
        got = await _step(receiver.recv(), "recv a message")
        assert got == message, (
            f"a transport declaring MESSAGES split or joined messages: sent {len(message)} "
            f"bytes, received {len(got)}"
        )
    await _step(sender.send(b""), "send an empty message")
    await _step(sender.send(b"after"), "send a message after the empty one")
    assert await _step(receiver.recv_message(), "recv_message an empty message") == b"", (
        "recv_message must return an empty message as sent"
    )
    assert await _step(receiver.recv_message(), "recv_message") == b"after"


async def _check_flow(client: Connection, server: Connection) -> None:
    """A transport declaring FLOW: buffered_amount is a count; abort ends both ends."""
    assert has_flow_control(client)
    assert has_flow_control(server)
    for end in (client, server):
        amount = end.buffered_amount
        assert isinstance(amount, int), f"buffered_amount {amount!r}"
        assert amount >= 0, f"buffered_amount {amount!r}"
    client.abort()
    for end, what in ((server, "the other end"), (client, "the aborted end")):
        try:
            while True:
                await _step(end.recv(), f"recv on {what} after abort")
        except ConnectionClosedError:
            pass
    try:
        await _step(client.send(b"x"), "send after abort")
    except ConnectionClosedError:
        pass
    else:
        raise AssertionError("send on an aborted connection must raise ConnectionClosedError")


async def _check_close_codes(client: Connection, server: Connection) -> None:
    """A transport declaring CLOSE_CODES: the code and reason sent are the ones read."""
    assert has_close_codes(client)
    assert has_close_codes(server)
    assert client.close_code is None, "close_code must be None while open"
    assert server.close_code is None, "close_code must be None while open"
    await _step(client.close_with(4321, "check"), "close_with")
    try:
        while True:
            await _step(server.recv(), "recv until the close")
    except ConnectionClosedError:
        pass
    for end in (server, client):
        assert end.close_code == 4321, f"close_code {end.close_code!r}, sent 4321"
        assert end.close_reason == "check", f"close_reason {end.close_reason!r}"


async def _check_identity(
    client: Connection, server: Connection, client2: Connection, server2: Connection
) -> None:
    """A transport declaring IDENTITY: each end names a key, stable across connections."""
    for end in (client, server, client2, server2):
        assert has_identity(end)
        key = end.remote_identity.public_key
        fp = end.remote_identity.fingerprint
        assert isinstance(key, bytes), f"remote_identity.public_key {key!r}"
        assert key, "remote_identity.public_key is empty"
        assert isinstance(fp, str), f"remote_identity.fingerprint {fp!r}"
        assert fp, "remote_identity.fingerprint is empty"
        assert isinstance(end.remote_hello, bytes), f"remote_hello {end.remote_hello!r}"
    assert has_identity(client)
    assert has_identity(client2)
    assert has_identity(server)
    assert has_identity(server2)
    # The client transport proves the same key on every connection it makes, and
    # the server transport on every one it accepts.
    assert client.remote_identity.public_key == client2.remote_identity.public_key, (
        "the server proved different keys on two connections"
    )
    assert server.remote_identity.public_key == server2.remote_identity.public_key, (
        "the client proved different keys on two connections"
    )
    assert client.remote_identity.fingerprint == client2.remote_identity.fingerprint
    await _step(client2.close(), "close")


async def _sync_over(
    server_t: Transport[Connection], client_t: Transport[Connection], address: str
) -> None:
    from crdtsync.peer.peer import Peer

    async with Peer(transport=server_t) as server, Peer(transport=client_t) as client:
        target = await server.listen(address)
        doc = await client.open("check")
        doc.text("t").insert(0, "over the wire")
        await client.connect(target)
        assert await client.wait_synced("check", timeout=_STEP), "the peers did not sync"
        remote = await server.open("check")
        assert str(remote.text("t")) == "over the wire"


# -- discovery ------------------------------------------------------------------------------


async def check_discovery(
    factory: Callable[[], Discovery],
    *,
    expect: Collection[str],
    own: str | None = None,
    timeout: float = _STEP,
) -> list[Hint]:
    """Check that a discovery source keeps the contract of :class:`~crdtsync.net.Discovery`.

    Starts the source, collects hints until every address of ``expect`` was
    hinted, closes it (twice: idempotent) and checks that iteration then ends::

        await check_discovery(lambda: StaticDiscovery(["lan://127.0.0.1:4000"]),
                              expect={"lan://127.0.0.1:4000"})

    Args:
        factory: makes the source (not started).
        expect: addresses that must be hinted (each in some hint's ``addresses``).
        own: this device's fingerprint: no hint may name it.
        timeout: seconds allowed for the expected hints to arrive.

    Returns:
        The hints seen (for further checks by the caller).

    Raises:
        AssertionError: with what went wrong.
    """
    source = factory()
    assert isinstance(source, Discovery), "not a Discovery (start, hints, close)"
    seen: list[Hint] = []
    missing = set(expect)

    async def collect() -> None:
        async for hint in source.hints():
            assert isinstance(hint, Hint), f"hints() yielded {hint!r}"
            assert own is None or hint.fingerprint != own, "a hint about this device itself"
            assert hint.gone or hint.addresses, "a hint with no address"
            for address in hint.addresses:
                assert urlsplit(address).scheme, f"not an address with a scheme: {address!r}"
            seen.append(hint)
            missing.difference_update(hint.addresses)

    await _step(source.start(), "start")
    task = asyncio.ensure_future(collect())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while missing and not task.done() and loop.time() < deadline:
            await asyncio.wait({task}, timeout=0.05)
        if task.done():
            task.result()  # an assertion inside collect
            raise AssertionError("hints() ended before close()")
        assert not missing, f"no hint for {sorted(missing)} within {timeout} s"
    finally:
        await _step(source.close(), "close")
        await _step(source.close(), "second close (idempotent)")
    # Iteration ends once closed.
    await _step(task, "the end of hints() after close")
    return seen
