"""Saved tree shapes decoded in Rust against the pure-Python reference.

``crdtsync.model.tree._decode_shape_py`` is the reference (and the path
without the extension); ``_decode_shape_native`` checks the node lists and
builds the state in Rust (``TreeState::from_shape``). Both share the header's
checks (``_shape_header``: writers, sizes, clocks, the newest operation, the
fields' types). Each example takes the shape ``tree_cache`` saves for a real
tree (two writers' random creates, moves and deletes), perhaps corrupts one
field the way a damaged or forged save could, and requires both decoders to
refuse it with the same exception and message, or to accept it as the same
state (parents, keys, log, clocks, floor).
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from helpers.native import require_native
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crdtsync import Doc, InvalidOperationError
from crdtsync.format import zstd
from crdtsync.model import tree as tree_mod

# What _take_offered catches (and logs) from a decoder.
_REFUSALS = (ValueError, KeyError, TypeError, AttributeError, IndexError)


def _core_class() -> Any:
    cls = tree_mod._tree_core_class()
    require_native(cls is not None)
    return cls


def _snapshot(state: Any) -> dict[str, Any]:
    pure = state if isinstance(state, tree_mod._TreeState) else state.mirror()
    return {
        "parent": dict(pure.parent),
        "kids": {p: dict(d) for p, d in pure.kids.items() if d},
        "order": dict(pure.order),
        "log": list(pure.log),
        "floor": pure.floor,
        "clock": pure.clock,
        "last": dict(pure.last),
        "trashed": pure.trashed,
        "trim_at": pure.trim_at,
        "recent": dict(pure.recent),
    }


def _outcome(decode: Any) -> tuple[Any, ...]:
    try:
        state = decode()
    except _REFUSALS as exc:
        return ("refused", type(exc), exc.args)
    return ("state", _snapshot(state))


def _both(entry: dict[str, Any], sizes: dict[str, int]) -> tuple[Any, ...]:
    """Both decoders' outcomes on the same shape; fails if they differ."""
    cls = _core_class()
    # Each gets its own copy: neither may depend on what the other did to it.
    py = _outcome(lambda: tree_mod._decode_shape_py(copy.deepcopy(entry), dict(sizes)))
    rust = _outcome(lambda: tree_mod._decode_shape_native(copy.deepcopy(entry), dict(sizes), cls))
    assert rust == py
    return py


# -- real shapes ------------------------------------------------------------------------

_step = st.tuples(
    st.sampled_from(["create", "create", "move", "move", "delete", "sync"]),
    st.integers(0, 1),  # which writer acts
    st.integers(0, 1_000),  # a node (modulo the live ones)
    st.one_of(st.none(), st.integers(0, 1_000)),  # a parent (None: the top level)
    st.sampled_from([None, None, 0, 1, 3]),  # an index
)


def _shape_of(doc: Doc) -> tuple[dict[str, Any], dict[str, int]]:
    """The saved shape of tree "t" (what Doc.save stores) and its containers' sizes."""
    doc.tree("t").children()
    blob = tree_mod.tree_cache(doc)
    assert blob.startswith(tree_mod._CACHE_MAGIC)
    raw = zstd.decompress(
        blob[len(tree_mod._CACHE_MAGIC) :],
        1 << 24,
        what="x",
        malformed=ValueError,
        too_large=ValueError,
    )
    (entry,) = json.loads(raw)["trees"]
    b = doc.tree("t")._binding()
    assert b is not None
    return entry, b.container_sizes()


@st.composite
def real_shapes(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, int]]:
    peers = draw(st.sampled_from([(1, 2), (7, 12345), (2**40 + 1, 9), (1, 10)]))
    docs = [Doc(peer_id=p) for p in peers]
    trees = [d.tree("t") for d in docs]
    # A few nested nodes by both writers to start from (never an empty tree:
    # tree_cache saves none).
    a = trees[0].create()
    trees[0].create(trees[0].create(a))
    docs[1].import_update(docs[0].export_update())
    trees[1].create(a)
    trees[1].create(None, 0)
    for kind, who, node, parent, index in draw(st.lists(_step, max_size=30)):
        t = trees[who]
        live = list(t)

        def pick(c: int | None, live: list[str] = live) -> str | None:
            return live[c % len(live)] if live and c is not None else None

        with contextlib.suppress(InvalidOperationError):
            if kind == "create":
                t.create(pick(parent), index)
            elif kind == "move" and live:
                t.move(pick(node), pick(parent), index)
            elif kind == "delete" and live:
                t.delete(pick(node))
            elif kind == "sync":
                docs[1 - who].import_update(docs[who].export_update())
    if draw(st.booleans()):
        docs[0].import_update(docs[1].export_update())
    return _shape_of(docs[0])


# -- corruptions --------------------------------------------------------------------------

_BAD_IDS = [
    "",
    "1",
    ":1",
    "1:",
    "01:1",
    "1:01",
    "1:1:1",
    "a:1",
    "1:a",
    "-1:1",
    "1:-1",
    "+1:1",
    "1 :1",
    "1: 1",
    "\u0661:1",
    "1:\u0661",
    "\ud800:1",
    "1:\ud800",
    "1" * 17 + ":1",
    "1:" + "1" * 17,
    "99999:1",
    "1:0",
    "0:0",
]
_BAD_KEYS = [
    "",
    "a",
    "0a",
    "-a",
    "a-",
    "a.",
    "a\u00e9",
    "\u00e9a",
    "a\ud800",
    "\ud800",
    "a00",
    "a10",
    "b0",
    "b1",
    "c12",
    "Z",
    "A" + "0" * 25,
    tree_mod._SMALLEST_INT,
    "a" + "1" * tree_mod.MAX_KEY,
    "z" * 26,
    "A" * 27,
    "\x00a",
    "a\n",
]
_GOOD_KEYS = ["a0", "a1", "Zz", "b00", "a" + "1" * (tree_mod.MAX_KEY - 1), "z" * 27, "A" * 28]
_ODD_VALUES = [True, False, 1.0, 0.5, None, "0", [], {}, -3, 2**63, 2**64, 2**70, -(2**70)]


def _corrupt(data: st.DataObject, entry: dict[str, Any], sizes: dict[str, int]) -> None:
    """Damage one part of ``entry`` (or ``sizes``) in place."""
    ids = entry["ids"].split(" ")
    keys = entry["pos"].split(" ")
    parents = entry["parents"]
    n = len(ids)
    i = data.draw(st.integers(0, n - 1))
    what = data.draw(
        st.sampled_from(
            [
                "id",
                "id clock",
                "id clock",
                "dup id",
                "id spacing",
                "id of a writer without clock",
                "parent",
                "parent",
                "parent index",
                "cycle",
                "cycle",
                "parents length",
                "trash",
                "untrash",
                "key",
                "key",
                "good key",
                "any key",
                "keys spacing",
                "writers",
                "last",
                "top",
                "field type",
                "no field",
            ]
        )
    )
    if what == "id":
        ids[i] = data.draw(st.sampled_from(_BAD_IDS) | st.text(max_size=8))
    elif what == "id clock":
        w = data.draw(st.sampled_from(sorted(sizes)))
        lam = data.draw(st.integers(0, 60) | st.sampled_from([tree_mod.MAX_LAMPORT, 10**16 - 1]))
        ids[i] = f"{w}:{lam}"
    elif what == "dup id" and n > 1:
        ids[i] = ids[(i + 1 + data.draw(st.integers(0, n - 2))) % n]
    elif what == "id spacing":
        ids[i] = data.draw(st.sampled_from([" ", "  ", "\t", ""])) + ids[i]
    elif what == "id of a writer without clock":
        # A writer with a container whose clock the shape leaves out.
        w = ids[i].split(":")[0]
        entry["last"].pop(w, None)
    elif what == "parent":
        parents[i] = data.draw(st.sampled_from(_ODD_VALUES) | st.integers(-(2**66), 2**66))
    elif what == "parent index":
        parents[i] = data.draw(st.sampled_from([-2, -1, i, n, n + 1]) | st.integers(-3, n))
    elif what == "cycle":
        under = [j for j, p in enumerate(parents) if type(p) is int and 0 <= p < n]
        if under:
            j = data.draw(st.sampled_from(under))
            parents[parents[j]] = j
    elif what == "parents length":
        if data.draw(st.booleans()):
            parents.pop()
        else:
            parents.append(-1)
    elif what == "trash":
        parents[i] = -2  # keeps its key: a deleted node with a position (if live)
    elif what == "untrash":
        parents[i] = -1  # keeps its key: "" if it was deleted
    elif what == "key":
        keys[i] = data.draw(st.sampled_from(_BAD_KEYS))
    elif what == "good key":
        keys[i] = data.draw(st.sampled_from(_GOOD_KEYS))
    elif what == "any key":
        keys[i] = data.draw(st.text(max_size=6).filter(lambda k: " " not in k))
    elif what == "keys spacing":
        keys[i] = data.draw(st.sampled_from([" ", "a0 ", " a0"]))
    elif what == "writers":
        w = data.draw(st.sampled_from(sorted(sizes)))
        change = data.draw(st.sampled_from(["size", "extra", "gone", "type"]))
        if change == "size":
            entry["writers"][w] = data.draw(
                st.sampled_from([0, sizes[w] + 1, float(sizes[w]), True, None])
            )
        elif change == "extra":
            entry["writers"]["424242"] = 1
        elif change == "gone":
            entry["writers"].pop(w, None)
        else:
            entry["writers"] = [w]
    elif what == "last":
        w = data.draw(st.sampled_from(sorted(entry["last"]) or ["1"]))
        entry["last"][w] = data.draw(
            st.sampled_from(
                [0, -1, True, 1.5, None, tree_mod.MAX_LAMPORT + 1, tree_mod.MAX_LAMPORT]
            )
            | st.integers(1, 50)
        )
    elif what == "top":
        top_l, top_w = entry["top"]
        entry["top"] = data.draw(
            st.sampled_from(
                [
                    [top_l + 1, top_w],
                    [top_l, top_w + 1],
                    [top_l],
                    [top_l, top_w, 0],
                    None,
                    "ab",
                    [True, top_w],
                ]
            )
        )
    elif what == "field type":
        field = data.draw(st.sampled_from(["ids", "pos", "parents", "last", "top"]))
        entry[field] = data.draw(st.sampled_from([5, None, "1:1", [], {}]))
        return
    elif what == "no field":
        del entry[data.draw(st.sampled_from(sorted(entry)))]
        return
    entry["ids"] = " ".join(ids)
    entry["pos"] = " ".join(keys)


def _intact(entry: dict[str, Any]) -> bool:
    types = {"ids": str, "pos": str, "parents": list, "last": dict, "writers": dict, "top": list}
    if not all(type(entry.get(f)) is t for f, t in types.items()) or len(entry["top"]) != 2:
        return False
    # (Node lists of one length: _corrupt indexes all three with one index.)
    return len(entry["ids"].split(" ")) == len(entry["pos"].split(" ")) == len(entry["parents"])


_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(real_shapes())
def test_a_real_shape_decodes_to_the_same_state(
    shape: tuple[dict[str, Any], dict[str, int]],
) -> None:
    entry, sizes = shape
    got = _both(entry, sizes)
    assert got[0] == "state", got


@settings(_SETTINGS, max_examples=400)
@given(real_shapes(), st.data())
def test_a_corrupted_shape_is_refused_alike(
    shape: tuple[dict[str, Any], dict[str, int]], data: st.DataObject
) -> None:
    entry, sizes = copy.deepcopy(shape)
    for _ in range(data.draw(st.integers(1, 2))):
        if not _intact(entry):
            break  # (a field of the wrong type or length: nothing left to damage inside it)
        _corrupt(data, entry, sizes)
    got = _both(entry, sizes)
    # (--hypothesis-show-statistics: which refusals the examples reached)
    event("accepted" if got[0] == "state" else f"{got[1].__name__}: {str(got[2])[:24]}")


# -- by hand --------------------------------------------------------------------------------


def _chain(n: int) -> tuple[dict[str, Any], dict[str, int]]:
    """A shape of ``n`` nodes of writer 3, each under the one before."""
    entry = {
        "writers": {"3": n},
        "last": {"3": n},
        "top": [n, 3],
        "ids": " ".join(f"3:{lam}" for lam in range(1, n + 1)),
        "parents": [-1, *range(n - 1)],
        "pos": " ".join(["a0"] * n),
    }
    return entry, {"3": n}


def test_a_deep_chain_and_its_cycle() -> None:
    """A chain as deep as the tree: no recursion, no quadratic walk (either side)."""
    entry, sizes = _chain(100_000)
    assert _both(entry, sizes)[0] == "state"
    entry["parents"][0] = 99_999  # the first node under the last: one long cycle
    assert _both(entry, sizes) == ("refused", ValueError, ("a cycle",))


# Keys whose repr Python writes with escapes: the message shows them the same.
_SURROGATE = "a\ud800"
_QUOTES = "a0'\""


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda e: e.update(ids="3:1 3:1 3:3"), (ValueError, ("node lists disagree",))),
        (
            lambda e: e.update(ids="3:1 3:2 3:9"),
            (ValueError, ("node 3:9 was not created by a known writer",)),
        ),
        (
            lambda e: e.update(ids="3:1 4:2 3:3"),
            (ValueError, ("node 4:2 was not created by a known writer",)),
        ),
        (lambda e: e.update(ids="3:1  3:3"), (ValueError, ("malformed node ids",))),
        (lambda e: e.update(parents=[-1, True, 1]), (ValueError, ("bad parent index",))),
        (lambda e: e.update(parents=[-1, 0, 2]), (ValueError, ("bad parent index",))),
        (
            lambda e: e.update(parents=[-1, -2, 1]),
            (ValueError, ("a deleted node with a position",)),
        ),
        (
            lambda e: e.update(pos=f"a0 {_SURROGATE} a0"),
            (ValueError, (f"invalid position key {_SURROGATE!r}",)),
        ),
        (
            lambda e: e.update(pos=f"a0 a0 {_QUOTES}"),
            (ValueError, (f"invalid position key {_QUOTES!r}",)),
        ),
        (lambda e: e.update(parents=[2, 0, 1]), (ValueError, ("a cycle",))),
    ],
)
def test_each_refusal_says_the_same(edit: Any, error: tuple[Any, ...]) -> None:
    entry, sizes = _chain(3)
    edit(entry)
    assert _both(entry, sizes) == ("refused", *error)


def test_a_writer_without_its_clock_is_a_key_error_on_both() -> None:
    entry, _ = _chain(3)
    entry["writers"]["5"] = 1
    sizes = {"3": 3, "5": 1}
    entry["ids"] = "3:1 5:1 3:3"
    assert _both(entry, sizes) == ("refused", KeyError, (5,))


def test_the_rust_decoder_is_used_with_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    _core_class()
    entry, sizes = _chain(3)
    assert isinstance(tree_mod._decode_shape(entry, sizes), tree_mod._NativeState)
    # A container key Rust would compare as a number (never from container_sizes): Python.
    odd = {**entry, "writers": {"03": 3}, "last": {"03": 3}}
    with pytest.raises(ValueError, match="not created by a known writer"):
        tree_mod._decode_shape(odd, {"03": 3})
    monkeypatch.setattr(tree_mod, "_tree_core_class", lambda: None)
    assert isinstance(tree_mod._decode_shape(entry, sizes), tree_mod._TreeState)


def test_a_loaded_save_has_the_state_of_its_tree() -> None:
    """Doc.load installs the Rust-decoded state: the same tree, and it keeps working."""
    _core_class()
    doc = Doc(peer_id=4)
    t = doc.tree("t")
    ids = [t.create(None if i < 3 else f"4:{i // 3}") for i in range(20)]
    t.move(ids[5], ids[1], 0)
    t.delete(ids[7])
    loaded = Doc.load(doc.save(), peer_id=4)
    lt = loaded.tree("t")
    b = lt._binding()
    assert b is not None
    assert isinstance(b.state, tree_mod._NativeState)
    assert lt.to_py() == t.to_py()
    b.check(deep=True)
    lt.move(ids[2], ids[0])
    t.move(ids[2], ids[0])
    assert lt.to_py() == t.to_py()


def test_a_refusal_from_rust_costs_a_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """A panic in ``from_shape`` arrives as ``InvalidOperationError`` (``tree_guard``),
    a ``ValueError``: the load ignores the shape and reads the operations."""
    _core_class()
    doc = Doc(peer_id=4)
    t = doc.tree("t")
    x = t.create()
    t.create(x)
    saved = doc.save()

    def panicking(*args: Any) -> Any:
        raise InvalidOperationError("internal error in crdtsync._native's tree: panic: test")

    rebuilds: list[int] = []
    real = tree_mod._Binding._rebuild

    def counting(self: Any, old: Any = None) -> None:
        rebuilds.append(1)
        real(self, old)

    monkeypatch.setattr(tree_mod, "_decode_shape_native", panicking)
    monkeypatch.setattr(tree_mod._Binding, "_rebuild", counting)
    loaded = Doc.load(saved)
    assert loaded.tree("t").to_py() == t.to_py()
    assert rebuilds == [1]
