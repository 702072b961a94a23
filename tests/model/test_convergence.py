"""Strong eventual consistency under random edits and random, unreliable delivery.

In the style of Loro's fuzzer: actions are ``edit(site)``, ``deliver(a, b)``
(a subset of the updates a has produced or received, reordered and duplicated,
imported by b) and ``sync_all``; after ``sync_all`` every replica must be equal,
and each type's own law must hold (counter = sum of every delta ever made,
register conflicts = the writes no other write had seen).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from crdtsync import Counter, Doc, List, Map, Register, Text
from crdtsync.model.values import Value

N_SITES = 3
DOCS = ("a", "b")  # several roots of each kind per document

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.binary(max_size=4),
)
values: st.SearchStrategy[Value] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        # map keys may not start with NUL (reserved by crdtsync)
        st.dictionaries(
            st.text(max_size=3).filter(lambda k: not k.startswith("\x00")), inner, max_size=3
        ),
    ),
    max_leaves=6,
)
texts = st.text(alphabet=st.sampled_from("ab é😀日\n"), min_size=1, max_size=4)


class Replicas(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sites = [Doc(peer_id=i + 1) for i in range(N_SITES)]
        # Every update each site has produced or received, in arrival order.
        self.logs: list[list[bytes]] = [[] for _ in range(N_SITES)]
        self.counter_total: dict[str, int] = dict.fromkeys(DOCS, 0)
        # Register writes: (site peer id, clock after write, value, writes seen).
        self.writes: dict[str, list[tuple[int, int, Any, frozenset[int]]]] = {n: [] for n in DOCS}
        self.mark = [site.version for site in self.sites]

    def _record(self, i: int) -> None:
        site = self.sites[i]
        update = site.export_update(since=self.mark[i])
        self.mark[i] = site.version
        self.logs[i].append(update)

    @rule(
        i=st.integers(0, N_SITES - 1),
        name=st.sampled_from(DOCS),
        key=st.sampled_from("xyz"),
        value=values,
    )
    def map_set(self, i: int, name: str, key: str, value: Value) -> None:
        self.sites[i].map("m" + name)[key] = value
        self._record(i)

    @rule(i=st.integers(0, N_SITES - 1), name=st.sampled_from(DOCS), key=st.sampled_from("xyz"))
    def map_delete(self, i: int, name: str, key: str) -> None:
        m = self.sites[i].map("m" + name)
        if key in m:
            del m[key]
            self._record(i)

    @rule(
        i=st.integers(0, N_SITES - 1),
        name=st.sampled_from(DOCS),
        pos=st.integers(0, 10),
        value=values,
        nested=st.sampled_from(["plain", "text", "counter", "register"]),
    )
    def list_insert(self, i: int, name: str, pos: int, value: Value, nested: str) -> None:
        lst = self.sites[i].list("l" + name)
        item: Any = {
            "plain": value,
            "text": Text("t"),
            "counter": Counter(1),
            "register": Register(value),
        }[nested]
        lst.insert(pos, item)
        self._record(i)

    @rule(i=st.integers(0, N_SITES - 1), name=st.sampled_from(DOCS), pos=st.integers(0, 10))
    def list_delete(self, i: int, name: str, pos: int) -> None:
        lst = self.sites[i].list("l" + name)
        if len(lst):
            del lst[pos % len(lst)]
            self._record(i)

    @rule(
        i=st.integers(0, N_SITES - 1),
        name=st.sampled_from(DOCS),
        pos=st.integers(0, 50),
        s=texts,
        ndel=st.integers(0, 3),
    )
    def text_edit(self, i: int, name: str, pos: int, s: str, ndel: int) -> None:
        t = self.sites[i].text("t" + name)
        n = len(t)
        at = pos % (n + 1)
        with self.sites[i].transaction():
            t.delete(at, min(ndel, n - at))
            t.insert(at, s)
        self._record(i)

    @rule(
        i=st.integers(0, N_SITES - 1),
        name=st.sampled_from(DOCS),
        delta=st.integers(-(2**70), 2**70),
    )
    def counter_add(self, i: int, name: str, delta: int) -> None:
        self.sites[i].counter("c" + name).increment(delta)
        self.counter_total[name] += delta
        self._record(i)

    @rule(i=st.integers(0, N_SITES - 1), name=st.sampled_from(DOCS), value=values)
    def register_set(self, i: int, name: str, value: Value) -> None:
        site = self.sites[i]
        version = site.version
        seen = frozenset(
            idx
            for idx, (peer, clock, _, _) in enumerate(self.writes[name])
            if version.get(peer, 0) >= clock
        )
        site.register("r" + name).set(value)
        self.writes[name].append((site.peer_id, site.version[site.peer_id], value, seen))
        self._record(i)

    @rule(
        src=st.integers(0, N_SITES - 1),
        dst=st.integers(0, N_SITES - 1),
        seed=st.integers(0, 2**32),
        keep=st.floats(0.0, 1.0),
    )
    def deliver(self, src: int, dst: int, seed: int, keep: float) -> None:
        """Unreliable link: a random subset of src's updates, shuffled, some duplicated."""
        if src == dst:
            return
        rng = random.Random(seed)
        batch = [u for u in self.logs[src] if rng.random() < keep]
        batch += rng.sample(batch, k=len(batch) // 3)
        rng.shuffle(batch)
        for update in batch:
            self.sites[dst].import_update(update)
            self.logs[dst].append(update)

    @rule(src=st.integers(0, N_SITES - 1), dst=st.integers(0, N_SITES - 1))
    def sync_pair(self, src: int, dst: int) -> None:
        """A state-vector sync: only what dst lacks."""
        if src != dst:
            update = self.sites[src].export_update(since=self.sites[dst].version)
            self.sites[dst].import_update(update)
            self.logs[dst].append(update)

    @rule(i=st.integers(0, N_SITES - 1))
    def save_and_reload(self, i: int) -> None:
        old = self.sites[i]
        new = Doc.load(old.save(), peer_id=old.peer_id)
        assert new.to_py() == old.to_py()
        assert new.version == old.version
        self.sites[i] = new

    @rule()
    def sync_all(self) -> None:
        for _ in range(2):
            for a, b in itertools.permutations(range(N_SITES), 2):
                self.sites[b].import_update(
                    self.sites[a].export_update(since=self.sites[b].version)
                )
        assert all(s.to_py() == self.sites[0].to_py() for s in self.sites)

    @invariant()
    def converges_after_sync_all(self) -> None:
        # Checking on copies keeps partial-delivery states reachable by later steps.
        copies = [Doc.load(s.export_update(), peer_id=s.peer_id) for s in self.sites]
        for _ in range(2):
            for a, b in itertools.permutations(range(N_SITES), 2):
                copies[b].import_update(copies[a].export_update(since=copies[b].version))
        first = copies[0].to_py()
        for c in copies[1:]:
            assert c.to_py() == first
            assert c.version == copies[0].version
        for name in DOCS:
            assert copies[0].counter("c" + name).value == self.counter_total[name]
            expected = self._maximal_writes(name)
            got = copies[0].register("r" + name).conflicts
            assert sorted(map(_canon, got)) == sorted(map(_canon, expected))
            if expected:
                assert copies[0].register("r" + name).value == got[0]

    def _maximal_writes(self, name: str) -> list[Any]:
        writes = self.writes[name]
        dominated = set().union(*(w[3] for w in writes)) if writes else set()
        return [w[2] for idx, w in enumerate(writes) if idx not in dominated]


def _canon(v: Any) -> str:
    """A representation equal for equal values of equal types (dict order aside)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k!r}:{_canon(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_canon(x) for x in v) + "]"
    return f"{type(v).__name__}:{v!r}"


TestReplicas = Replicas.TestCase
TestReplicas.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_roots_accessed_differently_still_converge() -> None:
    a, b = Doc(), Doc()
    a.counter("likes").increment()
    a.text("unused")
    b.map("other")
    b.import_update(a.export_update())
    a.import_update(b.export_update())
    assert a.to_py() == b.to_py() == {"likes": 1}


def test_concurrent_first_writes_of_one_root_with_two_kinds_converge() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    a.map("x")["k"] = 1
    b.counter("x").increment(5)
    ua, ub = a.export_update(), b.export_update()
    a.import_update(ub)
    b.import_update(ua)
    # the registry's winner decides how everyone reads the root
    assert a.to_py() == b.to_py()
    assert a.roots() == b.roots()


def test_nested_value_kinds_survive_replication() -> None:
    a = Doc()
    a.map("m")["all"] = [Map({"k": Text("x")}), List([Counter(2)]), Register({"a": [1]})]
    b = Doc()
    b.import_update(a.export_update())
    inner = b.map("m")["all"]
    assert isinstance(inner[0]["k"], Text)
    assert isinstance(inner[1][0], Counter)
    assert isinstance(inner[2], Register)
    inner[1][0].increment(3)
    a.import_update(b.export_update(since=a.version))
    assert a.to_py() == b.to_py() == {"m": {"all": [{"k": "x"}, [5], {"a": [1]}]}}
