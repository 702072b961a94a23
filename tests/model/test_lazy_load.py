"""Lazy loads (hydration): ``Doc.load`` defers the engine's apply until something needs it.

A save with tree shapes, loaded with the Rust checker, is checked and indexed
at load; pycrdt applies it on the first access to the engine (``Doc._hydrate``).
These tests pin three things: a lazily loaded document behaves exactly like
an eagerly loaded one (a differential run of random operations on both), the
tree reads of the benchmark do not hydrate while everything that needs the
engine does, and forged saves are refused or fall back as the eager load does.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pycrdt
import pytest
from helpers.native import require_native

from crdtsync import Doc, Map, RootTypeError, Tree, Version
from crdtsync.errors import CrdtSyncError
from crdtsync.format import envelope, zstd
from crdtsync.format.yupdate import CONTENT_TYPE, TYPE_MAP
from crdtsync.model import doc as doc_mod
from crdtsync.model import tree as tree_mod
from crdtsync.model.containers import Container
from crdtsync.model.doc import DEFAULT_LIMITS


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


def lazy(doc: Doc) -> bool:
    """Whether the engine has not applied the loaded history yet."""
    return doc._lazy is not None


@contextlib.contextmanager
def eager_loads() -> Iterator[None]:
    """Loads inside apply the history to the engine at once (the reference)."""
    old = doc_mod._LAZY_LOADS
    doc_mod._LAZY_LOADS = False
    try:
        yield
    finally:
        doc_mod._LAZY_LOADS = old


def load_both(saved: bytes, peer_id: int = 9) -> tuple[Doc, Doc]:
    with eager_loads():
        eager = Doc.load(saved, peer_id=peer_id)
    assert not lazy(eager)
    return Doc.load(saved, peer_id=peer_id), eager


# -- documents to save ---------------------------------------------------------------


def random_tree_ops(t: Tree, rng: random.Random, n: int) -> None:
    for _ in range(n):
        nodes = list(t)
        r = rng.random()
        if not nodes or r < 0.3:
            parent = rng.choice(nodes) if nodes and rng.random() < 0.7 else None
            data = {"n": rng.randrange(100)} if rng.random() < 0.5 else None
            t.create(parent, data=data)
        elif r < 0.85:
            node = rng.choice(nodes)
            parent = rng.choice([None, *nodes])
            with contextlib.suppress(CrdtSyncError):  # a cycle or itself: refused
                t.move(node, parent, rng.choice([None, 0]))
        elif r < 0.93:
            t.delete(rng.choice(nodes))
        else:
            node = rng.choice(nodes)
            with contextlib.suppress(CrdtSyncError):  # (a node without a data map)
                t.data(node)["k"] = rng.randrange(1000)


def sync(*docs: Doc) -> None:
    for a in docs:
        for b in docs:
            if a is not b:
                b.import_update(a.export_update(since=b.version))


def replicas(seed: int) -> list[Doc]:
    """Three writers with trees, data maps, a text, a map and a list, partly synced."""
    rng = random.Random(seed)
    docs = [Doc(peer_id=i + 1) for i in range(3)]
    for step in range(6):
        for d in docs:
            random_tree_ops(d.tree("t"), rng, rng.randrange(3, 15))
            if rng.random() < 0.5:
                random_tree_ops(d.tree("u"), rng, 3)
            d.map("m")[f"k{rng.randrange(5)}"] = rng.randrange(100)
            d.text("x").insert(0, rng.choice(["ab", "é", "xyz"]))
            d.list("l").append(step)
        if rng.random() < 0.7:
            sync(*docs)
    for d in docs:
        d.tree("t").children()  # bound: its shape is saved
    return docs


# -- the differential run ---------------------------------------------------------------


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except CrdtSyncError as exc:
        return ("error", type(exc).__name__, str(exc))


def plain_origin(origin: Any) -> Any:
    """An origin by its type unless it is plain (each run has its own undo manager)."""
    if origin is not None and not isinstance(origin, str):
        return type(origin).__name__
    return origin


def plain_event(ev: Any) -> Any:
    """An event to compare: plain origin, changes by path (the engine reports the
    roots of one transaction in an order of its own, even between two eager loads)."""
    return (plain_origin(ev.origin), ev.local, sorted(ev.changes, key=repr))


def saved_form(doc: Doc) -> tuple[bytes, Any]:
    """What ``doc.save()`` holds (its bytes vary: the shapes' JSON lists writers in
    the order their containers were read)."""
    env = envelope.unpack(doc.save(), DEFAULT_LIMITS)
    return env.update, shapes_of(doc.save())[1] if env.cache else None


def run_ops(doc: Doc, others: list[Doc], seed: int, n: int) -> list[Any]:
    """A random sequence of operations on ``doc``; returns what each one showed."""
    rng = random.Random(seed)
    out: list[Any] = []
    events: list[Any] = []
    updates: list[Any] = []
    undo: Any = None

    def node(nullable: bool = False) -> str | None:
        nodes = list(doc.tree("t"))
        if not nodes or (nullable and rng.random() < 0.3):
            return None
        return rng.choice(nodes)

    def pick() -> Callable[[], Any]:
        t = doc.tree("t")
        ops: list[Callable[[], Any]] = [
            lambda: t.children(None),
            lambda: t.children(node(True)),
            lambda: t.parent(node()) if len(t) else None,
            lambda: (len(t), list(t), node() in t, "nope" in t),
            t.to_py,
            lambda: t.create(node(True), data={"v": rng.randrange(9)}),
            lambda: t.move(node(), node(True)) if len(t) else None,
            lambda: t.delete(node()) if len(t) else None,
            lambda: t.data(node()).to_py() if len(t) else None,
            lambda: t.data(node()).__setitem__("d", rng.randrange(9)) if len(t) else None,
            lambda: doc.map("m").__setitem__("z", rng.randrange(9)),
            lambda: doc.text("x").insert(0, "q"),
            lambda: doc.import_update(rng.choice(others).export_update()),
            doc.export_update,
            lambda: doc.export_update(since=rng.choice(others).version),
            lambda: saved_form(doc),
            lambda: doc.version,
            doc.roots,
            doc.to_py,
            lambda: doc.tree("u").children(None),
            lambda: doc.observe(events.append) and None,
            lambda: doc.observe_updates(lambda u, o, loc: updates.append((u, o, loc))) and None,
            transaction,
            undo_step,
            lambda: doc.pending,
            lambda: doc.contains(rng.choice(others).export_yjs_update()),
        ]
        return rng.choice(ops)

    def transaction() -> None:
        with doc.transaction(origin="batch"):
            doc.map("m")["a"] = rng.randrange(9)
            doc.tree("t").create(None)

    def undo_step() -> Any:
        nonlocal undo
        if undo is None:
            undo = doc.undo_manager([doc.map("m")], capture_timeout=0)
        doc.map("m")["u"] = rng.randrange(9)
        return undo.undo()

    for _ in range(n):
        out.append(outcome(pick()))
        out.append(
            (
                [plain_event(ev) for ev in events],
                [(u, plain_origin(o), loc) for u, o, loc in updates],
            )
        )
    out.append((doc.to_py(), doc.version, saved_form(doc), doc.export_update()))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_a_lazy_load_behaves_as_the_eager_one(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    docs = replicas(seed)
    saved = docs[seed % 3].save()
    others = [Doc.load(d.save(), peer_id=20 + i) for i, d in enumerate(docs)]
    for d, o in zip(docs, others, strict=True):  # the others move on
        random_tree_ops(o.tree("t"), random.Random(seed + 100 + o.peer_id), 5)
        assert d.to_py() != {}
        assert o.to_py()
    lazy_doc, eager_doc = load_both(saved)
    assert lazy(lazy_doc)
    assert run_ops(lazy_doc, others, seed, 25) == run_ops(eager_doc, others, seed, 25)
    assert not lazy(lazy_doc)  # something on the way needed the engine
    # Hydration found what the lazy checks assumed (attach_lazy logs otherwise).
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("seed", range(6))
def test_tree_reads_then_anything(seed: int) -> None:
    """Reads from the shape first (no hydration), then the differential run."""
    docs = replicas(seed)
    lazy_doc, eager_doc = load_both(docs[0].save())
    for d in (lazy_doc, eager_doc):
        t = d.tree("t")
        for n in list(t)[:20]:
            t.children(n)
            t.parent(n)
    assert lazy(lazy_doc)
    assert [(n, lazy_doc.tree("t").parent(n)) for n in lazy_doc.tree("t")] == [
        (n, eager_doc.tree("t").parent(n)) for n in eager_doc.tree("t")
    ]
    others = docs[1:]
    assert run_ops(lazy_doc, others, seed, 15) == run_ops(eager_doc, others, seed, 15)


# -- what hydrates and what does not -------------------------------------------------------


def saved_doc() -> tuple[bytes, list[str]]:
    doc = Doc(peer_id=4)
    t = doc.tree("t")
    ids = [t.create(data={"i": 0})]
    for i in range(1, 40):
        ids.append(t.create(ids[i // 3], data={"i": i}))
    for i in range(60):
        with contextlib.suppress(CrdtSyncError):
            t.move(ids[(i * 7) % 40], ids[(i * 11) % 40])
    doc.text("x").insert(0, "hello")
    return doc.save(), ids


def test_the_benchmark_path_does_not_hydrate() -> None:
    saved, ids = saved_doc()
    doc = Doc.load(saved)
    assert lazy(doc)
    t = doc.tree("t")
    top = t.children(None)
    assert top
    assert [t.parent(n) for n in ids]
    assert all(n in t for n in ids)
    assert len(t) == len(ids)
    assert set(t) == set(ids)
    assert doc.tree("t") is t
    assert doc.root("t", "tree") is t
    assert doc.pending == 0
    assert doc.held_updates() == []
    assert doc.contains(b"\x00\x00")  # an empty update: answered by the index
    assert lazy(doc)
    with eager_loads():
        eager = Doc.load(saved)
    assert top == eager.tree("t").children(None)
    assert doc.to_py() == eager.to_py()
    assert not lazy(doc)


def other_writer() -> Doc:
    doc = Doc(peer_id=77)
    doc.text("y").insert(0, "hi")
    return doc


def shown(x: Any) -> Any:
    """What a result shows: a container's content, a plain value, else its type."""
    if isinstance(x, Container):
        return type(x).__name__, x.to_py()
    if x is None or isinstance(x, str | int | bytes | list | dict | tuple | Version):
        return x
    return type(x).__name__


HYDRATING: dict[str, Callable[[Doc], Any]] = {
    "to_py": lambda d: d.to_py(),
    "roots": lambda d: d.roots(),
    "version": lambda d: d.version,
    "peer_id": lambda d: d.peer_id,
    "repr": repr,
    "export_update": lambda d: d.export_update(),
    "save": lambda d: d.save(),
    "import_update": lambda d: d.import_update(Doc(peer_id=77).export_update()),
    "new_writers": lambda d: d.new_writers(other_writer().export_yjs_update()),
    "transaction": lambda d: d.transaction().__enter__(),
    "observe": lambda d: d.observe(lambda ev: None),
    "observe_updates": lambda d: d.observe_updates(lambda u, o, loc: None),
    "a map root": lambda d: d.map("m"),
    "a text root": lambda d: d.text("x"),
    "another tree": lambda d: d.tree("other"),
    "in": lambda d: "t" in d,
    "tree data": lambda d: d.tree("t").data(d.tree("t").children()[0]),
    "tree to_py": lambda d: d.tree("t").to_py(),
    "tree create": lambda d: d.tree("t").create(),
    "tree move": lambda d: d.tree("t").move(d.tree("t").children()[0], None),
    "tree delete": lambda d: d.tree("t").delete(d.tree("t").children()[0]),
    "tree engine type": lambda d: d.tree("t")._y,
    "undo manager": lambda d: d.undo_manager([d.map("m")]),
}


@pytest.mark.parametrize("name", sorted(HYDRATING))
def test_what_needs_the_engine_hydrates(name: str) -> None:
    saved, _ = saved_doc()
    doc, eager = load_both(saved, peer_id=5)
    doc.tree("t").children()
    eager.tree("t").children()
    assert lazy(doc)
    assert outcome(lambda: shown(HYDRATING[name](doc))) == outcome(
        lambda: shown(HYDRATING[name](eager))
    )
    assert not lazy(doc)
    assert doc.tree("t").children() == eager.tree("t").children()
    assert doc.to_py() == eager.to_py()
    assert doc.text("x").to_py() == "hello"


def test_engine_attributes_are_absent_until_hydration() -> None:
    saved, _ = saved_doc()
    doc = Doc.load(saved)
    t = doc.tree("t")
    t.children()
    for name in doc_mod._ENGINE_ATTRS:
        assert name not in vars(doc)
    b = t._b
    assert b is not None
    for name in tree_mod._ENGINE_SLOTS:
        with pytest.raises(AttributeError):
            object.__getattribute__(b, name)
    assert isinstance(b.y, pycrdt.Map)  # reaching for one hydrates
    assert not lazy(doc)
    assert all(name in vars(doc) for name in doc_mod._ENGINE_ATTRS)
    assert t._y is b.y


def test_remote_edits_after_hydration_reach_the_tree() -> None:
    """The observers attached at hydration see later imports, not the load's own apply."""
    saved, ids = saved_doc()
    doc = Doc.load(saved, peer_id=5)
    t = doc.tree("t")
    t.children()
    other = Doc.load(saved, peer_id=6)
    other.tree("t").move(ids[5], None)
    other.tree("t").delete(ids[6])
    events: list[Any] = []
    doc.observe(events.append)
    doc.import_update(other.export_update(since=doc.version))
    assert t.children() == other.tree("t").children()
    assert ids[6] not in t
    assert [c.tree for e in events for c in e.changes if c.kind == "tree"]
    tree_mod._BINDINGS[doc]["r:t"].check()


def test_local_edits_after_a_lazy_load_reach_other_replicas() -> None:
    saved, ids = saved_doc()
    doc = Doc.load(saved, peer_id=5)
    t = doc.tree("t")
    assert t.children()
    n = t.create(ids[0], data={"new": True})
    other = Doc.load(saved, peer_id=6)
    other.import_update(doc.export_update(since=other.version))
    assert other.tree("t").parent(n) == ids[0]
    assert other.tree("t").data(n)["new"] is True
    assert Doc.load(doc.save()).to_py() == doc.to_py()


# -- paths that stay eager -----------------------------------------------------------------


def test_the_pure_python_checker_loads_eagerly() -> None:
    saved, _ = saved_doc()
    doc = Doc.load(saved, native=False)
    assert not lazy(doc)
    assert doc.tree("t").children() == Doc.load(saved).tree("t").children()


def test_pure_python_env_loads_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    from crdtsync.format import accel

    saved, _ = saved_doc()
    # What CRDTSYNC_PURE_PYTHON=1 selects at import (as conftest.checker_path does).
    monkeypatch.setenv(accel.PURE_PYTHON_ENV, "1")
    monkeypatch.setattr(accel, "NATIVE", False)
    monkeypatch.setattr(accel, "_NATIVE_MODULE", None)
    doc = Doc.load(saved)
    assert doc._checker.native is False
    assert not lazy(doc)


def test_saves_without_shapes_or_with_held_updates_load_eagerly() -> None:
    doc = Doc(peer_id=3)
    doc.text("x").insert(0, "abc")
    assert not lazy(Doc.load(doc.save()))  # no tree read: no shapes
    doc.tree("t").create()
    assert lazy(Doc.load(doc.save()))
    assert not lazy(Doc.load(doc.export_update()))  # not a save
    writer = Doc(peer_id=8)
    writer.text("y").insert(0, "1")
    first = writer.version
    writer.text("y").insert(1, "2")
    doc.import_yjs_update(writer.export_yjs_update(since=first))  # held: 8:0 is missing
    assert doc.pending == 1
    loaded = Doc.load(doc.save())
    assert loaded.pending == 1
    assert not lazy(loaded)


# -- forged saves ------------------------------------------------------------------------------


def shapes_of(saved: bytes) -> tuple[bytes, dict[str, Any]]:
    env = envelope.unpack(saved, DEFAULT_LIMITS)
    magic = tree_mod._CACHE_MAGIC
    raw = zstd.decompress(
        env.cache[len(magic) :], 1 << 24, what="x", malformed=ValueError, too_large=ValueError
    )
    return env.update, json.loads(raw)


def forge(update_of: Doc, shapes_from: Doc, *, version: bytes | None = None) -> bytes:
    """``update_of``'s state with ``shapes_from``'s tree shapes, claiming a version.

    By default the shapes claim ``update_of``'s version, so that the checks
    behind the version check are the ones exercised.
    """
    update = update_of.export_yjs_update()
    _, body = shapes_of(shapes_from.save())
    v = update_of.version.to_bytes() if version is None else version
    body["version"] = v.hex()
    blob = tree_mod._CACHE_MAGIC + zstd.compress(json.dumps(body).encode())
    return envelope.pack(update, compact=True, snapshot=True, cache=blob)


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts trees read from their operations (rather than from a saved shape)."""
    calls: list[int] = []
    real = tree_mod._Binding._rebuild

    def counting(self: Any, old: Any = None) -> None:
        calls.append(1)
        real(self, old)

    monkeypatch.setattr(tree_mod._Binding, "_rebuild", counting)
    return calls


def both_read(saved: bytes, rebuilds: list[int]) -> tuple[Any, Any, bool]:
    """Loads lazily and eagerly, reads tree "t" on each: what each showed, and
    whether the lazy one stayed unhydrated."""
    lazy_doc, eager_doc = load_both(saved)
    shown = []
    for d in (lazy_doc, eager_doc):
        before = len(rebuilds)
        got = outcome(lambda d=d: d.tree("t").children())
        shown.append((got, len(rebuilds) - before))
    still_lazy = lazy(lazy_doc)
    assert lazy_doc.to_py() == eager_doc.to_py()
    return shown[0], shown[1], still_lazy


def writer_doc() -> Doc:
    doc = Doc(peer_id=4)
    t = doc.tree("t")
    a = t.create(data={"a": 1})
    t.create(a)
    t.create()
    return doc


def test_forged_registry_says_map_for_the_tree(rebuilds: list[int]) -> None:
    shapes = writer_doc()
    forged = Doc(peer_id=4)
    forged.map("t")["4"] = Map({"1": "x"})  # a map root where the shapes say tree
    lazy_seen, eager_seen, _ = both_read(forge(forged, shapes), rebuilds)
    assert lazy_seen == eager_seen
    assert lazy_seen[0][:2] == ("error", RootTypeError.__name__)


def test_forged_registry_value_that_is_not_a_string(rebuilds: list[int]) -> None:
    shapes = writer_doc()
    forged = writer_doc()
    forged.tree("t").children()
    forged._registry["t"] = 5  # (the engine's own map: no wrapper writes this)
    lazy_seen, eager_seen, still_lazy = both_read(forge(forged, shapes), rebuilds)
    assert lazy_seen == eager_seen
    assert not still_lazy  # the index cannot tell: the engine was asked


def test_forged_container_of_another_size(rebuilds: list[int]) -> None:
    shapes = writer_doc()
    forged = Doc.load(shapes.save())
    forged.tree("t").create()  # one more entry in writer 4's container
    lazy_seen, eager_seen, still_lazy = both_read(forge(forged, shapes), rebuilds)
    assert lazy_seen == eager_seen
    assert lazy_seen[1] == 1  # the shape was refused: read from the operations
    assert not still_lazy


def test_forged_writer_missing(rebuilds: list[int]) -> None:
    shapes = writer_doc()
    forged = Doc.load(shapes.save(), peer_id=5)
    forged.tree("t").create()  # a second writer's container
    lazy_seen, eager_seen, _ = both_read(forge(forged, shapes), rebuilds)
    assert lazy_seen == eager_seen
    assert lazy_seen[1] == 1


def test_forged_version(rebuilds: list[int]) -> None:
    shapes = writer_doc()
    for version in (b"\x00", b"\x01\x04\x63", shapes.version.to_bytes() + b"\x00"):
        lazy_seen, eager_seen, _ = both_read(forge(shapes, shapes, version=version), rebuilds)
        assert lazy_seen == eager_seen
        assert lazy_seen[1] == 1


def test_a_foreign_entry_in_the_trees_map_falls_back_to_the_engine(
    rebuilds: list[int],
) -> None:
    """Keys the tree ignores (not a writer's container) leave the check to the engine."""
    doc = writer_doc()
    t = doc.tree("t")
    t._y["x"] = 1  # (the engine's map: a foreign client's entry)
    t.children()
    lazy_seen, eager_seen, still_lazy = both_read(doc.save(), rebuilds)
    assert lazy_seen == eager_seen
    assert lazy_seen[1] == 0
    assert not still_lazy


def test_a_deleted_entry_is_not_counted(rebuilds: list[int]) -> None:
    """A container whose entry was overwritten or deleted: the live entries only."""
    doc = writer_doc()
    t = doc.tree("t")
    n = t.create(data={"z": 1})
    own = t._y["4"]
    del own["d" + n.split(":")[1]]  # (a data map removed from the container)
    own["q"] = 1
    own["q"] = 2  # (one key written twice: one live entry)
    t._b = None
    tree_mod._BINDINGS[doc].clear()
    t.children()
    lazy_seen, eager_seen, still_lazy = both_read(doc.save(), rebuilds)
    assert lazy_seen == eager_seen
    assert lazy_seen[1] == 0
    assert still_lazy


# -- the index's map queries against the engine ----------------------------------------------


def co_walk(checker: Any, container: Any, y: pycrdt.Map[Any], seen: list[int]) -> None:
    """Compare the index's live entries of ``container`` with the engine's map ``y``, deeply."""
    entries = checker.map_entries(container) or {}
    assert set(entries) == set(y.keys()), container
    assert (checker.map_size(container) or 0) == len(y), container
    seen.append(len(y))
    for key, (client, clock, kind, type_ref) in entries.items():
        value = y.get(key)
        assert (kind == CONTENT_TYPE and type_ref == TYPE_MAP) == isinstance(value, pycrdt.Map)
        if isinstance(value, pycrdt.Map):
            co_walk(checker, (client, clock), value, seen)


@pytest.mark.parametrize("seed", range(6))
def test_the_index_lists_the_entries_the_engine_has(seed: int) -> None:
    """``map_entries`` / ``map_size`` against ``Map.keys()``: overwrites, concurrent
    writes of one key, deletions, nested maps."""
    docs = replicas(seed)
    rng = random.Random(seed)
    for step in range(8):
        for d in docs:
            m = d.map("m")
            key = f"c{rng.randrange(4)}"
            if rng.random() < 0.3 and key in m:
                del m[key]
            else:
                m[key] = Map({"n": step}) if rng.random() < 0.5 else step
        if step % 3 == 2:
            sync(*docs)
    sync(*docs)
    for d in docs:
        checker = d.index()
        seen: list[int] = []
        for name in ("m", "t", "u", doc_mod.REGISTRY):
            co_walk(checker, name, d._y.get(name, type=pycrdt.Map), seen)
        assert len(seen) > 10


def test_a_save_with_formatting_loads_eagerly() -> None:
    """yrs may delete formatting items of its own accord while applying: the
    index must hear of it, so such a load applies at once (as before)."""
    doc = Doc(peer_id=3)
    doc.tree("t").create()
    doc._y.get("x", type=pycrdt.Text).insert(0, "ab", attrs={"bold": True})  # (a Yjs client's)
    saved = doc.save()
    loaded, eager = load_both(saved)
    assert not lazy(loaded)
    assert loaded.tree("t").children() == eager.tree("t").children()
    assert saved_form(loaded) == saved_form(eager)
