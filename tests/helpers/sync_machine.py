"""The sync fault-injection state machine, shared by the test and the long-run script.

3 to 5 Peers on a :class:`MemoryNetwork`, connected in a random connected graph
(every peer dials one earlier peer, plus random extra edges), each holding the
same three documents. Rules edit every container type on any peer, let virtual
time pass, switch random faults on (drop, duplicate, reorder, delay, corrupt,
disconnect), partition and heal the network, cut every connection, and restart
peers from their stores. Everything runs on :class:`VirtualTimeLoop`, so
timeouts, keepalives and reconnect backoffs cost no wall-clock time and a
failing schedule replays exactly.

Checked:

* right after a local edit, the editing peer does not claim to be synced;
* at quiescence inside a partition, two peers joined by an open session that
  both report a document synced hold equal copies of it;
* after healing and quiescence, every peer holds identical documents (value
  and version) and every peer reports every document synced (so ``wait_synced``
  is true exactly when the copies are identical).
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdtsync import Doc, InvalidOperationError
from crdtsync.peer.peer import Backoff, Grant, Peer
from crdtsync.protocol.session import SessionOptions, State
from crdtsync.store.memory import MemoryStore
from crdtsync.testing import VirtualTimeLoop, advance
from crdtsync.transports.memory import Faults, MemoryNetwork

DOCS = ("alpha", "beta", "gamma")
OPTIONS = SessionOptions(
    handshake_timeout=2.0, ack_timeout=4.0, ping_interval=0.5, idle_timeout=2.0
)
BACKOFF = Backoff(initial=0.05, factor=2.0, cap=1.0, jitter=0.5)
SETTLE = 40.0  # virtual seconds: > idle timeout + backoff cap + handshakes, many times over

#: How many schedules ran to completion (read by scripts/sync_schedules.py).
COMPLETED = [0]

probability = st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.2])


def _trusting(_hello: Any) -> Grant:
    # Mesh peers forward each other's edits: they are relays for each other.
    return Grant(relay=True)


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.peers: list[Peer] = []
        self.stores: list[MemoryStore] = []
        self.edges: list[tuple[int, int]] = []
        self.partitioned = False
        self.generation = 0

    # -- helpers ---------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def advance(self, seconds: float) -> None:
        self.run(advance(seconds))

    def make_peer(self, i: int) -> Peer:
        self.generation += 1
        return Peer(
            self.stores[i],
            transport=self.net.transport(f"p{i}"),
            peer_id=1000 * self.generation + i,
            authorize=_trusting,
            options=OPTIONS,
            backoff=BACKOFF,
            compact_every=10**9,  # compaction runs in a thread: not on virtual time
            seed=self.generation,
        )

    async def start_peer(self, i: int) -> None:
        peer = self.peers[i]
        await peer.start()
        for name in DOCS:
            await peer.open(name)
        await peer.listen(f"mem://p{i}")

    async def dial(self, i: int, j: int) -> None:
        with contextlib.suppress(TimeoutError):  # it keeps trying in the background
            await self.peers[i].connect(f"mem://p{j}", timeout=0)

    def doc(self, i: int, name: str) -> Doc:
        return self.peers[i]._docs[name].doc

    # -- setup -------------------------------------------------------------------------

    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**32 - 1), data=st.data())
    def setup(self, n: int, seed: int, data: st.DataObject) -> None:
        self.net = MemoryNetwork(seed=seed, latency=0.001)
        self.stores = [MemoryStore() for _ in range(n)]
        self.peers = [self.make_peer(i) for i in range(n)]
        for i in range(n):
            self.run(self.start_peer(i))
        self.edges = [
            (i, data.draw(st.integers(0, i - 1), label=f"parent of {i}")) for i in range(1, n)
        ]
        extra = data.draw(
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3)
        )
        self.edges += [(a, b) for a, b in extra if a != b and (a, b) not in self.edges]
        for a, b in self.edges:
            self.run(self.dial(a, b))

    # -- edits -------------------------------------------------------------------------

    @rule(
        i=st.integers(0, 4),
        name=st.sampled_from(DOCS),
        op=st.sampled_from(
            [
                "text",
                "text-del",
                "list",
                "list-del",
                "map",
                "map-del",
                "counter",
                "register",
                "tree",
            ]
        ),
        value=st.integers(-3, 1000),
    )
    def edit(self, i: int, name: str, op: str, value: int) -> None:
        i %= len(self.peers)
        doc = self.doc(i, name)
        before = doc.version
        try:
            if op == "text":
                t = doc.text("text")
                t.insert(value % (len(t) + 1), "xyz"[value % 3] * (1 + value % 2))
            elif op == "text-del":
                t = doc.text("text")
                if len(t):
                    t.delete(value % len(t), 1)
            elif op == "list":
                lst = doc.list("list")
                lst.insert(value % (len(lst) + 1), value)
            elif op == "list-del":
                lst = doc.list("list")
                if len(lst):
                    lst.pop(value % len(lst))
            elif op == "map":
                doc.map("map")[f"k{value % 5}"] = value
            elif op == "map-del":
                doc.map("map").pop(f"k{value % 5}", None)
            elif op == "counter":
                doc.counter("counter").increment(value)
            elif op == "register":
                doc.register("register").set(value)
            else:
                tree = doc.tree("tree")
                nodes = tree.children(None)
                if nodes and value % 3 == 0:
                    tree.move(nodes[value % len(nodes)], None, 0)
                else:
                    tree.create(None, data={"v": value})
        except InvalidOperationError:
            return
        if doc.version != before:
            # Just edited: that edit cannot be acknowledged yet.
            assert not self.peers[i].is_synced(name), "synced right after an unacknowledged edit"

    # -- time and faults -----------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.0, 0.002, 0.01, 0.1, 0.5, 3.0]))
    def wait(self, seconds: float) -> None:
        self.advance(seconds)

    @rule(
        drop=probability,
        duplicate=probability,
        reorder=probability,
        delay=probability,
        corrupt=probability,
        disconnect=probability,
    )
    def faults(self, **p: float) -> None:
        self.net.set_faults(Faults(**p))

    @rule()
    def no_faults(self) -> None:
        self.net.set_faults(None)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        n = len(self.peers)
        side = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        self.net.partition(
            [f"p{i}" for i in range(n) if side[i]], [f"p{i}" for i in range(n) if not side[i]]
        )
        self.partitioned = True

    @rule()
    def heal(self) -> None:
        self.net.heal()
        self.partitioned = False

    @rule()
    def cut_all(self) -> None:
        self.net.disconnect_all()

    @rule(i=st.integers(0, 4))
    def restart(self, i: int) -> None:
        i %= len(self.peers)
        self.run(self.peers[i].close())
        self.peers[i] = self.make_peer(i)
        self.run(self.start_peer(i))
        for a, b in self.edges:
            if a == i:
                self.run(self.dial(a, b))

    # -- checks ------------------------------------------------------------------------

    @precondition(lambda self: self.partitioned)
    @rule()
    def quiesce_partitioned(self) -> None:
        """Inside a partition: synced on both ends of an open session means equal."""
        self.net.set_faults(None)
        self.advance(SETTLE)
        for i, peer in enumerate(self.peers):
            for link in peer._links:
                if link.session.state is not State.OPEN:
                    continue
                j = self.index_of(link.session.peer_id)
                if j is None:
                    continue
                for name in DOCS:
                    if peer.is_synced(name) and self.peers[j].is_synced(name):
                        assert self.snapshot(i, name) == self.snapshot(j, name), (
                            f"p{i} and p{j} both report {name} synced but differ"
                        )

    @rule()
    def heal_and_check(self) -> None:
        self.net.heal()
        self.partitioned = False
        self.net.set_faults(None)
        self.advance(SETTLE)
        self.check_converged()

    def index_of(self, peer_id: int | None) -> int | None:
        for j, q in enumerate(self.peers):
            if q.peer_id == peer_id:
                return j
        return None

    def snapshot(self, i: int, name: str) -> tuple[Any, Any]:
        doc = self.doc(i, name)
        return doc.to_py(), dict(doc.version)

    def check_converged(self) -> None:
        for name in DOCS:
            first = self.snapshot(0, name)
            for i in range(1, len(self.peers)):
                assert self.snapshot(i, name) == first, f"p{i} differs from p0 on {name}"
            for i, peer in enumerate(self.peers):
                assert peer.is_synced(name), f"p{i} does not report {name} synced after healing"
                assert self.run(peer.wait_synced(name, timeout=0.0)), (
                    "wait_synced disagrees with is_synced"
                )

    @invariant()
    def sessions_never_raise(self) -> None:
        # Errors are recorded on sessions, never raised: the loop is still usable.
        assert not self.loop.is_closed()

    def teardown(self) -> None:
        try:
            if self.peers:
                self.net.heal()
                self.net.set_faults(None)
                self.advance(SETTLE)
                self.check_converged()
                COMPLETED[0] += 1
        finally:
            for peer in self.peers:
                self.run(peer.close())
            self.loop.close()
