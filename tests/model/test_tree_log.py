"""The tree's log: truncation at causal stability, late operations, saved shapes.

Truncation never decides what the tree is, only what a late operation costs:
an operation below the log's floor makes the binding rebuild from the
document's operations, so every replica still holds the fold of the same set.
Saved shapes are checked against the document they come with; one that does
not match is ignored.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from crdtsync import Doc, InvalidOperationError, Tree
from crdtsync.format import envelope, zstd
from crdtsync.model import tree as tree_mod
from crdtsync.model.doc import DEFAULT_LIMITS

# Every test runs on the Rust tree state and on the pure-Python reference.
pytestmark = pytest.mark.usefixtures("tree_path")


def binding(t: Tree) -> Any:
    b = t._binding()
    assert b is not None
    return b


def check(t: Tree) -> None:
    binding(t).check(deep=True)


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count: list[int] = []
    real = tree_mod._Binding._rebuild

    def counting(self: Any, old: Any = None) -> None:
        count.append(1)
        real(self, old)

    monkeypatch.setattr(tree_mod._Binding, "_rebuild", counting)
    return count


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int], None]:
    def set_policy(window: int, horizon: int) -> None:
        monkeypatch.setattr(tree_mod, "WINDOW", window)
        monkeypatch.setattr(tree_mod, "HORIZON", horizon)

    return set_policy


def sync(*docs: Doc) -> None:
    for a in docs:
        for b in docs:
            if a is not b:
                b.import_update(a.export_update(since=b.version))


def random_moves(t: Tree, n: int, seed: int) -> None:
    rng = random.Random(seed)
    nodes = list(t)
    for _ in range(n):
        with contextlib.suppress(InvalidOperationError):
            t.move(rng.choice(nodes), rng.choice([None, *nodes]), None)


# -- truncation -----------------------------------------------------------------------------


def test_a_lone_writer_keeps_only_a_window(small_window: Callable[[int, int], None]) -> None:
    small_window(64, 1024)
    doc = Doc(peer_id=1)
    t = doc.tree("t")
    for _ in range(20):
        t.create()
    random_moves(t, 1000, 1)
    st = binding(t).state
    assert st.floor > 0
    assert len(st.log) <= 64 + 64 // 4 + 1
    assert st.log[0][0] >> 64 > st.clock - 64 - 64 // 4 - 1
    check(t)


def test_a_known_writer_holds_truncation_back(
    small_window: Callable[[int, int], None], rebuilds: list[int]
) -> None:
    small_window(64, 4096)
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    ta = a.tree("t")
    for _ in range(20):
        ta.create()
    sync(a, b)
    tb = b.tree("t")
    tb.move(tb.children()[0], None)  # b is now a known writer, at clock 21
    sync(a, b)
    random_moves(ta, 600, 2)
    st = binding(ta).state
    b_clock = st.last[2]
    assert len(st.log) == st.clock - b_clock > 400  # everything since b's last operation
    # b's next operation has a greater clock than its last: never below the floor.
    count = len(rebuilds)
    tb.move(tb.children()[1], None, 0)
    a.import_update(b.export_update(since=a.version))
    ta.children()
    assert len(rebuilds) == count  # integrated by undo-do-redo, no rebuild
    check(ta)


def test_a_writer_silent_beyond_the_horizon_no_longer_holds_it(
    small_window: Callable[[int, int], None],
) -> None:
    small_window(32, 256)
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    ta = a.tree("t")
    ta.create()
    sync(a, b)
    b.tree("t").create()
    sync(a, b)
    for _ in range(10):
        ta.create()
    random_moves(ta, 1000, 3)
    st = binding(ta).state
    assert st.last[2] < st.clock - 256
    assert len(st.log) <= 256 + 32  # b, gone that long, is not waited for
    check(ta)


def test_an_operation_older_than_the_log_rebuilds_and_converges(
    small_window: Callable[[int, int], None], rebuilds: list[int]
) -> None:
    """A replica offline longer than the window: its operations arrive below the
    floor, the receiver rebuilds from the document, and everyone converges."""
    small_window(8, 32)
    a, b, c = Doc(peer_id=1), Doc(peer_id=2), Doc(peer_id=3)
    ta = a.tree("t")
    for _ in range(6):
        ta.create()
    sync(a, b, c)
    tc = c.tree("t")
    random_moves(tc, 20, 4)  # c, offline, at clocks 7..26
    random_moves(ta, 300, 5)  # a and b move on
    sync(a, b)
    tb = b.tree("t")
    tb.children()
    assert binding(tb).state.floor > (27 << 64)  # c's operations are below it
    before = len(rebuilds)
    sync(c, b)
    tb.children()
    assert len(rebuilds) == before + 1  # the late operations forced a rebuild
    sync(a, b, c)
    for d in (a, b, c):
        check(d.tree("t"))
    assert a.to_py() == b.to_py() == c.to_py()
    assert Doc.load(a.save()).to_py() == a.to_py()


# -- saved shapes ---------------------------------------------------------------------------


def saved_doc() -> Doc:
    doc = Doc(peer_id=4)
    t = doc.tree("t")
    ids: list[str] = []
    for i in range(30):
        ids.append(t.create(ids[i // 3] if i > 5 else None, data={"i": i}))
    random_moves(t, 200, 6)
    t.delete(t.children()[0])
    return doc


def shapes_of(saved: bytes) -> tuple[bytes, dict[str, Any]]:
    env = envelope.unpack(saved, DEFAULT_LIMITS)
    blob = env.cache
    magic = tree_mod._CACHE_MAGIC
    assert blob.startswith(magic)
    raw = zstd.decompress(
        blob[len(magic) :], 1 << 24, what="x", malformed=ValueError, too_large=ValueError
    )
    return env.update, json.loads(raw)


def with_shapes(update: bytes, body: dict[str, Any] | bytes) -> bytes:
    blob = (
        body
        if isinstance(body, bytes)
        else tree_mod._CACHE_MAGIC + zstd.compress(json.dumps(body).encode())
    )
    return envelope.pack(update, compact=True, snapshot=True, cache=blob)


def load_counting(data: bytes, rebuilds: list[int]) -> tuple[Doc, int]:
    before = len(rebuilds)
    doc = Doc.load(data)
    doc.tree("t").children()
    return doc, len(rebuilds) - before


def test_an_untouched_shape_is_used(rebuilds: list[int]) -> None:
    doc = saved_doc()
    update, body = shapes_of(doc.save())
    loaded, n = load_counting(with_shapes(update, body), rebuilds)
    assert n == 0
    assert loaded.to_py() == doc.to_py()
    check(loaded.tree("t"))


def tamper(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    body["trees"][0][field] = value(body["trees"][0][field]) if callable(value) else value
    return body


def _cycle(parents: list[int]) -> list[int]:
    out = list(parents)
    child = next(i for i, p in enumerate(out) if p >= 0)
    out[out[child]] = child  # the parent's parent becomes its child: a cycle
    return out


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("another version", lambda b: {**b, "version": "00"}),
        ("a writer's size", lambda b: tamper(b, "writers", lambda w: dict.fromkeys(w, 1))),
        ("an unknown writer", lambda b: tamper(b, "writers", lambda w: {**w, "12": 3})),
        ("a cycle", lambda b: tamper(b, "parents", _cycle)),
        ("a parent out of range", lambda b: tamper(b, "parents", lambda p: [99_999, *p[1:]])),
        ("a bad position key", lambda b: tamper(b, "pos", lambda s: "a00 " + s.split(" ", 1)[1])),
        ("a position in the trash", lambda b: tamper(b, "pos", lambda s: s.replace("  ", " a1 "))),
        ("a malformed id", lambda b: tamper(b, "ids", lambda s: "04:1 " + s.split(" ", 1)[1])),
        (
            "a node nobody created",
            lambda b: tamper(b, "ids", lambda s: "4:999 " + s.split(" ", 1)[1]),
        ),
        (
            "duplicate ids",
            lambda b: tamper(b, "ids", lambda s: " ".join([s.split()[1]] * 2 + s.split()[2:])),
        ),
        ("lists of other lengths", lambda b: tamper(b, "parents", lambda p: p[:-1])),
        ("a clock ahead", lambda b: tamper(b, "last", lambda w: {k: v + 1 for k, v in w.items()})),
        ("a wrong type", lambda b: tamper(b, "ids", 5)),
        ("no trees", lambda b: {"version": b["version"]}),
        ("not a dict", lambda b: [1, 2]),
    ],
)
def test_a_shape_that_does_not_match_is_ignored(
    what: str, edit: Callable[[dict[str, Any]], Any], rebuilds: list[int]
) -> None:
    doc = saved_doc()
    update, body = shapes_of(doc.save())
    loaded, n = load_counting(with_shapes(update, edit(body)), rebuilds)
    assert n == 1, f"a shape with {what} was used"
    assert loaded.to_py() == doc.to_py()
    check(loaded.tree("t"))


@pytest.mark.parametrize(
    "blob",
    [b"junk", tree_mod._CACHE_MAGIC + b"not zstd", tree_mod._CACHE_MAGIC + zstd.compress(b"[")],
)
def test_garbage_instead_of_shapes_is_ignored(blob: bytes, rebuilds: list[int]) -> None:
    doc = saved_doc()
    update, _ = shapes_of(doc.save())
    loaded, n = load_counting(with_shapes(update, blob), rebuilds)
    assert n == 1
    assert loaded.to_py() == doc.to_py()


def test_a_shape_goes_stale_when_the_document_changes_before_it_is_read(
    rebuilds: list[int],
) -> None:
    a = Doc(peer_id=1)
    a.map("m")["tree"] = Tree()
    nested = a.map("m")["tree"]
    x = nested.create()
    nested.create(x)
    saved = a.save()
    nested.move(x, None)
    nested.create()
    b = Doc.load(saved)
    b.import_update(a.export_update(since=b.version))  # before b reads the nested tree
    before = len(rebuilds)
    assert b.map("m")["tree"].to_py() == nested.to_py()
    assert len(rebuilds) == before + 1  # its saved shape no longer matched: read
    check(b.map("m")["tree"])


def test_a_loaded_shape_meets_a_concurrent_operation(rebuilds: list[int]) -> None:
    """No undo log after a load: the first older operation builds it (a rebuild)."""
    a = Doc(peer_id=1)
    ta = a.tree("t")
    x, y = ta.create(), ta.create()
    b = Doc.load(a.save(), peer_id=2)
    tb = b.tree("t")
    tb.move(y, x)  # (3, 2)
    ta.move(x, y)  # (3, 1): earlier in the log, concurrent: a cycle for (3, 2)
    loaded = Doc.load(b.save(), peer_id=2)
    lt = loaded.tree("t")
    assert lt.children(x) == [y]
    before = len(rebuilds)
    events: list[Any] = []
    loaded.observe(events.append)
    loaded.import_update(a.export_update(since=loaded.version))
    assert len(rebuilds) == before + 1
    assert lt.children(None) == [y]
    assert lt.children(y) == [x]
    changes = events[-1].changes[0].tree
    assert [c.action for c in changes] == ["move", "move"]
    check(lt)


def test_a_forged_shape_that_passes_the_checks_is_shown_until_the_log_is_built(
    rebuilds: list[int],
) -> None:
    """The documented limit: the checks cannot tell a forged but valid shape
    from the fold (only replaying the operations can). It affects only the
    replica that loads it, and only until its log is rebuilt."""
    doc = Doc(peer_id=1)
    t = doc.tree("t")
    x, y = t.create(), t.create()
    update, body = shapes_of(doc.save())
    entry = body["trees"][0]
    ids = entry["ids"].split(" ")
    entry["parents"][ids.index(y)] = ids.index(x)  # claims y is under x
    forged, n = load_counting(with_shapes(update, body), rebuilds)
    assert n == 0
    assert forged.tree("t").children(x) == [y]  # shown
    other = Doc(peer_id=2)
    other.import_update(forged.export_update())  # the forgery never travels
    assert other.tree("t").children(x) == []
    # An operation older than the loaded shape's newest builds the log: the fold wins.
    late = Doc(peer_id=3)
    late.tree("t").create()  # clock 1, below the loaded newest (2)
    forged.import_update(late.export_update())
    assert forged.tree("t").children(x) == []
    check(forged.tree("t"))


# -- the kind registry --------------------------------------------------------------------


def test_a_nested_tree_is_recognised_whatever_was_imported_before() -> None:
    """No registration by import side effect: wrap() finds the tree class itself."""
    doc = Doc()
    doc.map("m")["t"] = Tree()
    doc.map("m")["t"].create(data={"x": 1})
    code = (
        "import sys\n"
        "from crdtsync.model.doc import Doc\n"
        "assert 'crdtsync.model.tree' not in sys.modules, 'the tree was imported eagerly'\n"
        f"d = Doc(); d.import_update(bytes.fromhex('{doc.export_update().hex()}'))\n"
        "t = d.map('m')['t']\n"
        "print(type(t).__name__, len(t))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["Tree", "1"]
