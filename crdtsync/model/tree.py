r"""The movable tree: Kleppmann et al.'s highly-available move operation on pycrdt.

Theory of operation
-------------------
The algorithm is the one of Kleppmann, Mulligan, Gomes and Beresford, "A
highly-available move operation for replicated trees" (IEEE TPDS 2021). Every
edit is a *move* ``(t, node, parent, pos)``: put ``node`` under ``parent`` at
sibling position ``pos``. Creating a node is its first move (from nowhere),
deleting it is a move under the trash. ``t`` is a Lamport timestamp
``(lamport, writer)``, unique per operation, greater than every operation its
writer had seen. The tree is *defined* as the result of applying all known
operations in timestamp order, where an operation is skipped if, at its place
in that order:

* it would make ``node`` its own ancestor (``parent`` is ``node`` or below it);
* ``node`` does not exist yet and this is not the operation that creates it; or
* ``parent`` does not exist yet.

The last two rules only bite on operations that arrive before the creation
they depend on (ops of different writers travel independently) or on forged
ones; both make the state a function of the *set* of operations, never of
their arrival order. Apply order is kept by undo/redo: every applied operation
is logged with what it replaced; when older operations arrive, the log is
undone back to the oldest of them, they are merged in and the undone ones
redone (:meth:`_TreeState.integrate`). A batch of ``k`` operations thus costs
``O(k log n)`` plus the redo of the operations that are newer than the batch's
oldest; a local operation is always the newest and costs no undo at all.

Storage (what a Yjs client sees): the tree is one Y.Map (``ydoc.getMap(name)``
for a root tree; a nested Y.Map for a ``Tree()`` stored as a value):

=====================  ==========================================  ============================
key                     value                                       written by
=====================  ==========================================  ============================
``"\x00k"``             ``"tree"``                                  nested trees only (kind)
``"\x00i"``             16 random hex digits                        nested trees only (cache id)
``"<w>"``               Y.Map: the *container* of writer ``w``      ``w``, with its first edit
``"<w>"/"<lamport>"``   an operation ``"<node> <parent> <pos>"``     ``w``; never changed after
``"<w>"/"d<lamport>"``  Y.Map: data of node ``"<w>:<lamport>"``     ``w`` with the node; then
                                                                    anyone edits inside it
=====================  ==========================================  ============================

Why a Y.Map keyed by clock rather than an appended Y.Array: the engine finds
the end of an array by walking its items, and a writer's appends only merge
into one item while nothing else by that writer comes in between (a node's
data map, an edit anywhere in the document does), so each append would cost
a walk over the whole log. A new map key costs the same whatever came before.

``<w>`` and ``<lamport>`` are canonical decimal integers (``lamport`` at most
2**53). An operation's timestamp is ``(lamport, w)``, read from where it is
stored, so it cannot collide with another writer's. In an operation:

* ``<node>`` is empty for the operation that creates node ``"<w>:<lamport>"``;
  otherwise a node reference;
* ``<parent>`` is empty for the top level, ``-`` for the trash (a deletion),
  otherwise a node reference;
* a node reference is ``"<client>:<seq>"``, or just ``"<seq>"`` when the node
  was created by ``w`` itself;
* ``<pos>`` is the fractional position key among siblings (empty for the trash).

Node ids are ``"<client>:<lamport of its creating operation>"``. Only a writer
adds keys to its own container, so no two writers ever race on a Y.Map key (a
race would lose one of the writes). Anything malformed -- a key or value of
the wrong type or shape, a reference that is not canonical, a position key
that is not valid -- is an ignored operation, on every replica alike.

Sibling order: children are sorted by ``(pos, node id)``. Position keys are
the fractional indexing of Figma and rocicorp's "fractional-indexing" (base
62, a variable-length integer part: appending or prepending adds a digit only
every 62**k times), except that instead of the middle candidate, a key is one
of the :data:`SPREAD` shortest candidates around the middle, picked by a hash
of the operation's timestamp (:func:`key_between`). Two replicas inserting at
the same index concurrently thus get different keys with probability
1 - 1/SPREAD, at no cost in length (a jitter suffix would cost 2-3 characters
per key). A tie -- that bad luck or a forged key -- is ordered by node id, and
a later local insert *between* two tied siblings lands just after them. Runs
of local inserts into one gap (typing forward or backward in the middle of a
list) take their keys near the previous insert rather than in the middle,
which keeps them short (``_TreeState.recent``, ``bias`` in :func:`key_between`).

Derived state: :class:`_TreeState` (parent map, sorted children, undo log) is
pure, and is what ``proofs/tree_model_check.py`` checks against the
specification. :class:`_Binding` ties one state to the tree's Y.Map: shallow
observers queue what remote transactions add, and the next read folds the
queue in -- so ``k`` imports in a row cost one undo/redo pass. On an observed
document each transaction is folded as it ends instead, and reported as
per-node :class:`~crdtsync.model.tree_events.TreeChange`\ s (:func:`tree_changes`).
Bindings are kept per document, by root name or by a nested tree's ``"\x00i"``
id, so every wrapper of one tree shares one state.

The log is truncated (:meth:`_TreeState.truncate`): an operation older than
anything a known writer can still send is never undone again, so its undo
record is dropped. An operation that arrives below the truncation point
anyway (a writer that was offline longer, a writer never seen before) makes the
binding rebuild the state from the document's operations: the state is a
function of the *set* of operations, so this converges like any other order.
``docs/TREE.md`` ("Log truncation") gives the rule and its cost.

``Doc.save`` stores the shape of each bound tree next to the update
(:func:`tree_cache`); ``Doc.load`` uses a shape only if it is well formed and
matches the operations it summarises -- the same document version, the same
writers' containers with the same number of entries -- and otherwise reads the
operations (:func:`offer_cache`). A loaded shape has no undo log: the log is
built, by a rebuild, the first time an operation older than the newest arrives.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import weakref
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pycrdt

from crdtsync.errors import (
    InvalidOperationError,
    InvalidUpdateError,
    InvalidValueError,
    TreeCycleError,
)
from crdtsync.format import accel, zstd
from crdtsync.format.checker import NativeChecker
from crdtsync.format.yupdate import CONTENT_TYPE, TYPE_MAP
from crdtsync.model._engine_private import changed_entries, entry_writer, observe_entries
from crdtsync.model.containers import KIND_KEY, Container, Map, engine_error, to_engine, wrap
from crdtsync.model.tree_events import TreeChange, shape_changes

if TYPE_CHECKING:
    from crdtsync.model.doc import Doc

__all__ = ["Tree", "TreeChange"]

_log = logging.getLogger("crdtsync.model.tree")

#: Reserved key of a nested tree's Y.Map holding its random id (the cache key).
ID_KEY = "\x00i"

# Parent ids with a special meaning. Real node ids are "<digits>:<digits>".
ROOT = ""  # the top level
TRASH = "-"  # deleted nodes live under the trash
_ENDS = (ROOT, TRASH)  # where every walk up the tree ends
_ABSENT = "\x00"  # undo record: the node did not exist before this operation

#: Longest position key accepted (and generated): a key this long takes some
#: 24,000 inserts at one spot between the same two neighbours.
MAX_KEY = 4096
#: Sibling lists longer than this are kept sorted (``_TreeState.order``); shorter
#: ones are sorted when needed.
_FEW = 8
#: Largest Lamport clock (JavaScript's safe integers, so Yjs clients can read it).
MAX_LAMPORT = 2**53
_MAX_OP = 3 * 42 + MAX_KEY  # two references, separators and a key
_M64 = (1 << 64) - 1

# An operation: (timestamp, node, parent, pos). The timestamp packs
# (lamport, writer) into one int, lamport << 64 | writer, so that sorting and
# bisecting compare a single int.
_Op = tuple[int, str, str, str]
# A log entry: the operation plus what it replaced: (old parent, old pos).
# old parent None = the operation was skipped; _ABSENT = it created the node.
_Entry = tuple[int, str, str, str, "str | None", str]


# --------------------------------------------------------------------------------
# Fractional position keys (rocicorp's fractional-indexing, base 62)

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VAL = {c: i for i, c in enumerate(_DIGITS)}
_SMALLEST_INT = "A" + "0" * 26
_KEY_CHARS = re.compile("[0-9A-Za-z]+").fullmatch
#: How many candidate keys the jitter chooses from: two replicas inserting at
#: one place concurrently pick the same key with probability 1/SPREAD (and are
#: then ordered by node id).
SPREAD = 16


def _int_len(head: str) -> int:
    """Length of the integer part announced by a key's first character (0: invalid)."""
    o = ord(head)
    if 97 <= o <= 122:  # a..z: 2..27 characters
        return o - 95
    if 65 <= o <= 90:  # Z..A: 2..27 characters (A is the most negative)
        return 92 - o
    return 0


def valid_key(key: object) -> bool:
    """Whether ``key`` is a position key we generate and can generate around."""
    if type(key) is not str or not 2 <= len(key) <= MAX_KEY:
        return False
    n = _int_len(key[0])
    if n == 0 or len(key) < n or not _KEY_CHARS(key):
        return False
    # A trailing zero in the fraction would leave no key between it and its prefix.
    return not ((len(key) > n and key[-1] == "0") or key == _SMALLEST_INT)


def _increment_int(x: str) -> str | None:
    d = _VAL[x[-1]] + 1
    if d < 62 and len(x) > 1:  # the common case: no carry
        return x[:-1] + _DIGITS[d]
    digs = list(x[1:])
    for i in range(len(digs) - 1, -1, -1):
        d = _VAL[digs[i]] + 1
        if d < 62:
            digs[i] = _DIGITS[d]
            return x[0] + "".join(digs)
        digs[i] = "0"
    head = x[0]
    if head == "Z":
        return "a0"
    if head == "z":
        return None
    h = chr(ord(head) + 1)
    if h > "a":
        digs.append("0")
    else:
        digs.pop()
    return h + "".join(digs)


def _decrement_int(x: str) -> str | None:
    digs = list(x[1:])
    for i in range(len(digs) - 1, -1, -1):
        d = _VAL[digs[i]] - 1
        if d >= 0:
            digs[i] = _DIGITS[d]
            return x[0] + "".join(digs)
        digs[i] = "z"
    head = x[0]
    if head == "a":
        return "Zz"
    if head == "A":
        return None
    h = chr(ord(head) - 1)
    if h < "Z":
        digs.append("z")
    else:
        digs.pop()
    return h + "".join(digs)


def _num(s: str, n: int) -> int:
    """The first ``n`` digits of fraction ``s`` (padded with zeros) as an integer."""
    x = 0
    for i in range(n):
        x = x * 62 + (_VAL[s[i]] if i < len(s) else 0)
    return x


def _digits(x: int, n: int) -> str:
    """``x`` written with exactly ``n`` base-62 digits."""
    out = []
    for _ in range(n):
        x, d = divmod(x, 62)
        out.append(_DIGITS[d])
    return "".join(reversed(out))


def _fraction(a: str, b: str | None, r: int, bias: int = 0) -> str:
    """A fraction strictly between fractions ``a`` < ``b`` (``None``: 1).

    It has the shortest length at which the interval holds at least
    :data:`SPREAD` fractions (none ending in ``0``), and is the ``r``-th of the
    :data:`SPREAD` of them nearest the middle -- or nearest ``a`` if ``bias``
    is positive, nearest ``b`` if negative.
    """
    n = 1
    while True:
        lo = _num(a, n) + 1
        hi = 62**n - 1 if b is None else _num(b, n) - (len(b) <= n)
        if hi >= lo:
            # Candidates lo..hi, minus the multiples of 62 (a trailing zero).
            count = hi - lo + 1 - (hi // 62 - (lo - 1) // 62)
            if count >= SPREAD:
                if bias > 0:
                    k = r % SPREAD
                elif bias < 0:
                    k = count - SPREAD + r % SPREAD
                else:
                    k = (count - SPREAD) // 2 + r % SPREAD
                x = lo + k
                skipped = 0
                while True:  # step over the multiples of 62 up to x
                    s = x // 62 - (lo - 1) // 62
                    if s == skipped:
                        return _digits(x, n)
                    x = lo + k + s
                    skipped = s
        n += 1


# The integer part of a key is a variable-length integer: head "a" + 1 digit
# holds 0..61, "b" + 2 digits the next 62**2, ... "z" + 26 digits; "Z" + 1 digit
# holds -62..-1, "Y" + 2 digits the 62**2 before, ... "A" + 26 digits.
# _INT_BASE[k] is the first value of the positive head with k + 1 digits.
_INT_BASE: list[int] = [sum(62 ** (j + 1) for j in range(k)) for k in range(27)]
_POW62: list[int] = [62**j for j in range(28)]


def _int_value(x: str) -> int:
    """The integer an integer part stands for (the order of keys is the order of values)."""
    h = ord(x[0])
    v = _num(x[1:], len(x) - 1)
    if h >= 97:
        return _INT_BASE[h - 97] + v
    k = 90 - h
    return v - _INT_BASE[k] - _POW62[k + 1]


def _int_part(v: int) -> str | None:
    """Inverse of :func:`_int_value`; ``None`` outside the representable range."""
    if v >= 0:
        k = bisect_left(_INT_BASE, v + 1) - 1
        if k > 25:
            return None
        return chr(97 + k) + _digits(v - _INT_BASE[k], k + 1)
    k = bisect_left(_INT_BASE, -v) - 1
    if k > 25:
        return None
    x = chr(90 - k) + _digits(v + _INT_BASE[k] + _POW62[k + 1], k + 1)
    return None if x == _SMALLEST_INT else x


def _step_int(x: str, steps: int, up: bool) -> str | None:
    """Integer part ``x`` plus (or minus) ``steps``; ``None`` past the ends."""
    return _int_part(_int_value(x) + (steps if up else -steps))


def key_between(a: str | None, b: str | None, jitter: int, bias: int = 0) -> str:
    """A position key strictly between valid keys ``a`` < ``b`` (``None``: unbounded).

    Like rocicorp's ``generateKeyBetween`` (appending and prepending step the
    integer part, so keys grow by a digit only every 62**k of them), except
    that ``jitter`` picks the key among :data:`SPREAD` candidates instead of
    always the middle one: two replicas inserting at one place concurrently
    then get different keys, at no cost in length.

    ``bias`` serves runs of inserts into one gap: positive when the insert
    follows the previous one (typing forward), negative when it precedes it.
    The key is then taken near ``a`` (near ``b``), which leaves the rest of
    the gap to the next inserts: a thousand inserts typed forward into one gap
    need 18 characters instead of 180 from the middle.

    Raises:
        InvalidOperationError: if the key would exceed :data:`MAX_KEY`.
    """
    steps = 1 + jitter % SPREAD
    if a is None:
        if b is None:
            k = "a" + _DIGITS[steps - 1]
        else:
            ib = b[: _int_len(b[0])]
            i = _step_int(ib, steps, up=False) if ib != _SMALLEST_INT else None
            if i is not None:
                k = i
            elif ib == _SMALLEST_INT:
                k = ib + _fraction("", b[len(ib) :], jitter, bias)
            else:
                k = _SMALLEST_INT + _fraction("", None, jitter)
    else:
        ia = a[: _int_len(a[0])]
        i = _step_int(ia, steps, up=True)
        if i is not None and (b is None or i < b):
            k = i
        elif b is not None and b.startswith(ia) and len(b) > len(ia):
            k = ia + _fraction(a[len(ia) :], b[len(ia) :], jitter, bias)
        else:
            k = ia + _fraction(a[len(ia) :], None, jitter, bias)
    if len(k) > MAX_KEY:
        raise InvalidOperationError(
            f"position keys between these siblings are exhausted (over {MAX_KEY} characters)"
        )
    return k


def _jitter(t: int) -> int:
    # A fixed mix of the timestamp: deterministic (tests replay exactly), and
    # different for the different timestamps of concurrent inserts.
    return (((t ^ (t >> 64)) * 0x9E3779B97F4A7C15) & _M64) >> 40


# --------------------------------------------------------------------------------
# The pure tree state

#: Lamport steps of history the log keeps for writers it has not seen yet (a
#: replica that joins and edits before we hear from it): their operations are
#: newer than ``clock - WINDOW`` unless they were offline that long.
WINDOW = 1 << 14
#: A known writer whose latest operation is more than this many Lamport steps
#: behind is presumed gone and no longer holds the log's truncation back.
HORIZON = 1 << 16


def _canon(s: str) -> bool:
    """Whether ``s`` is a canonical decimal integer (no sign, no leading zero, <= 16 digits)."""
    return 0 < len(s) <= 16 and s.isascii() and s.isdigit() and (s[0] != "0" or len(s) == 1)


def node_ts(node: str) -> int:
    """The timestamp of the operation that creates ``node`` (a valid node id)."""
    client, _, seq = node.partition(":")
    return int(seq) << 64 | int(client)


# Where the fold writes the undo records nobody will need: appending to it is
# a no-op in C.
_DISCARD: deque[_Entry] = deque(maxlen=0)


def _logged(log: list[_Entry], t: int) -> bool:
    """Whether the log (sorted) has an entry with timestamp ``t``."""
    i = bisect_left(log, (t,))
    return i < len(log) and log[i][0] == t


class _Conflict(Exception):
    """Two different operations with one timestamp: the state must be rebuilt."""


class _Stale(Exception):
    """An operation older than the log's floor: the state must be rebuilt."""


class _TreeState:
    """The tree defined by a set of move operations, maintained incrementally.

    Invariants (checked by :meth:`check`): the state equals the fold of
    :meth:`_do` over the operations in timestamp order, starting from the empty
    tree; every node's parent is ``ROOT``, ``TRASH`` or a node of the state; no
    node is its own ancestor; ``kids[p]`` maps exactly the nodes whose parent
    is ``p`` (except the trash, which keeps no children) to their position
    keys, and ``order[p]``, when present, is ``kids[p]`` sorted by ``(pos,
    node)``. The ``log`` holds exactly the operations with a timestamp at or
    above ``floor``, in order, each with its undo record; the ones below were
    truncated (or never logged, for a state loaded from a saved shape).

    Siblings are kept unordered in ``kids`` and sorted lazily into ``order``:
    undoing and redoing a batch of remote operations then costs two dict
    operations per move instead of two sorted-list updates, and only the
    sibling lists someone reads get sorted again. Local operations keep
    ``order`` up to date (they need it to place a node at an index anyway).
    A node's position key lives only in its parent's ``kids`` entry, and
    duplicates are found in the log itself: every structure a move touches is
    one more cache miss on a large tree, and moves are memory-bound.
    """

    __slots__ = (
        "clock",
        "floor",
        "kids",
        "last",
        "log",
        "order",
        "parent",
        "recent",
        "trashed",
        "trim_at",
    )

    #: The Rust state behind a :class:`_NativeState`; ``None`` here (the
    #: pure-Python state): ``Tree.move`` takes its native hot path only with one.
    core: Any = None

    def __init__(self) -> None:
        # node -> parent id (ROOT, TRASH or a node).
        self.parent: dict[str, str] = {}
        # parent id -> {child: position key}, in no particular order.
        self.kids: dict[str, dict[str, str]] = {}
        # parent id -> [(pos, child)] sorted: a cache of kids, absent if stale.
        self.order: dict[str, list[tuple[str, str]]] = {}
        # The known operations at or above `floor`, with their undo records, in
        # timestamp order.
        self.log: list[_Entry] = []
        self.floor = 0
        # writer -> greatest Lamport clock among its known operations.
        self.last: dict[int, int] = {}
        # Greatest Lamport clock of any known operation.
        self.clock = 0
        # Number of nodes directly in the trash: while 0, every node is live
        # and liveness needs no walk up the tree.
        self.trashed = 0
        # parent -> the node a local operation last put there. Not part of the
        # tree: it only tells key_for which way a run of inserts is going.
        self.recent: dict[str, str] = {}
        # Log length at which a local operation tries to truncate the log.
        self.trim_at = WINDOW + (WINDOW >> 2)

    def key_of(self, n: str) -> str:
        """The position key of node ``n`` (``""`` in the trash)."""
        p = self.parent[n]
        return "" if p == TRASH else self.kids[p][n]

    def parent_of(self, n: str) -> str | None:
        """The parent of ``n`` (``ROOT``, ``TRASH`` or a node), ``None`` if unknown."""
        return self.parent.get(n)

    def walk_up(self, start: str, node: str | None) -> str:
        """Walk up from ``start`` to ``ROOT``, ``TRASH`` or ``node``; where it stopped."""
        parent = self.parent
        a = start
        while a != "" and a != "-" and a != node:  # noqa: PLR1714 - not ROOT/TRASH
            a = parent[a]
        return a

    def empty(self) -> _TreeState:
        """A new empty state of the same kind (pure Python)."""
        return _TreeState()

    def views(self) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """``(parent, kids)`` as mappings, for :func:`shape_changes`."""
        return self.parent, self.kids

    @property
    def positions(self) -> dict[str, str]:
        """Every node's position key (``""`` in the trash): for tests and checks."""
        return {n: self.key_of(n) for n in self.parent}

    # -- applying ---------------------------------------------------------------------

    def _place(self, n: str, p: str, k: str) -> None:
        self.parent[n] = p
        if p == TRASH:
            self.trashed += 1
            return
        d = self.kids.get(p)
        if d is None:
            self.kids[p] = {n: k}
        else:
            d[n] = k
        self.order.pop(p, None)

    def _unplace(self, n: str, p: str) -> str:
        del self.parent[n]
        if p == TRASH:
            self.trashed -= 1
            return ""
        self.order.pop(p, None)
        return self.kids[p].pop(n)

    def _do(self, op: _Op) -> None:
        """Apply one operation that is newer than every logged one, logging it."""
        t, n, p, k = op
        parent = self.parent
        old = parent.get(n)
        if old is None:
            # R1: a node comes into being only by its own creation, under
            # something that exists.
            if (p != "" and p != "-" and p not in parent) or node_ts(n) != t:  # noqa: PLR1714
                self.log.append((t, n, p, k, None, ""))
                return
            self._place(n, p, k)
            self.log.append((t, n, p, k, _ABSENT, ""))
            return
        if p != "" and p != "-":  # noqa: PLR1714 - not ROOT/TRASH; literals are fastest
            if p not in parent:  # R2
                self.log.append((t, n, p, k, None, ""))
                return
            kids = self.kids
            if p == n or kids.get(n):  # R3; a leaf is nobody's ancestor: no walk
                a = p
                while a != "" and a != "-":  # noqa: PLR1714 - as above
                    if a == n:  # n is p or an ancestor of p: the move would make a cycle
                        self.log.append((t, n, p, k, None, ""))
                        return
                    a = parent[a]
            if old != "-":
                # The hot path, a move between two sibling sets, inlined.
                order = self.order
                oldk = kids[old].pop(n)
                if order:
                    order.pop(old, None)
                    order.pop(p, None)
                parent[n] = p
                d = kids.get(p)
                if d is None:
                    kids[p] = {n: k}
                else:
                    d[n] = k
                self.log.append((t, n, p, k, old, oldk))
                return
        oldk = self._unplace(n, old)
        self._place(n, p, k)
        self.log.append((t, n, p, k, old, oldk))

    def _undo(self, e: _Entry) -> None:
        _, n, p, _, old, oldk = e
        if old is None:
            return
        if old != "-" and p != "-" and old != _ABSENT:
            # The hot path, the inverse of a move between two sibling sets.
            kids, order = self.kids, self.order
            del kids[p][n]
            if order:
                order.pop(p, None)
                order.pop(old, None)
            self.parent[n] = old
            kids[old][n] = oldk
            return
        self._unplace(n, p)
        if old == _ABSENT:
            self.kids.pop(n, None)  # its children were undone first: it has none
            self.order.pop(n, None)
        else:
            self._place(n, old, oldk)

    def apply_local(self, op: _Op, create: bool) -> None:
        """Apply a checked local operation, newer than everything known."""
        t, n, p, k = op
        lam = t >> 64
        self.clock = lam
        self.last[t & _M64] = lam
        kids, order = self.kids, self.order
        if create:
            old = _ABSENT
            oldk = ""
        else:
            old = self.parent[n]
            if old == TRASH:
                self.trashed -= 1
                oldk = ""
            else:
                oldk = kids[old].pop(n)
                lst = order.get(old)
                if lst is not None:  # keep the sorted cache: local edits read it next
                    del lst[bisect_left(lst, (oldk, n))]
        self.parent[n] = p
        if p == TRASH:
            self.trashed += 1
        else:
            self.recent[p] = n
            d = kids.get(p)
            if d is None:
                kids[p] = {n: k}
            else:
                d[n] = k
            lst = order.get(p)
            if lst is not None:
                e = (k, n)
                if not lst or lst[-1] < e:
                    lst.append(e)  # appending, the common case: one comparison
                else:
                    insort(lst, e)
        log = self.log
        log.append((t, n, p, k, old, oldk))
        if len(log) > self.trim_at:
            self.truncate()

    def apply_local_reported(self, op: _Op, create: bool, out: list[TreeChange]) -> None:
        """:meth:`apply_local`, appending the change an observer sees to ``out``."""
        _, n, p, k = op
        if create:
            self.apply_local(op, True)
            i = bisect_left(self.sorted_kids(p), (k, n))
            out.append(TreeChange("create", n, new_parent=p or None, new_index=i))
            return
        old = self.parent[n]
        oldk = self.kids[old][n]  # local operations only touch live nodes
        j = bisect_left(self.sorted_kids(old), (oldk, n))
        self.apply_local(op, False)
        if p == TRASH:
            out.append(TreeChange("delete", n, old_parent=old or None, old_index=j))
            return
        i = bisect_left(self.sorted_kids(p), (k, n))
        out.append(TreeChange("move", n, old or None, j, p or None, i))

    def integrate(
        self,
        new: list[_Op],
        old: dict[str, tuple[str | None, str]] | None = None,
        trim: bool = True,
    ) -> bool:
        """Add operations received in any order, possibly known already.

        Args:
            new: the operations.
            old: if given, receives the place before this batch (``(parent, pos)``,
                parent ``None`` if absent) of every node the batch may move.
            trim: truncate the log afterwards (see :meth:`truncate`).

        Returns:
            Whether the state changed.

        Raises:
            _Conflict: two different operations claim one timestamp (the
                document was rewritten under us: the caller rebuilds).
            _Stale: an operation is older than the log's floor (the caller
                rebuilds). Either way the tree is unchanged.
        """
        log = self.log
        floor = self.floor
        newest = log[-1][0] if log else -1
        # Every known operation at or above the floor is in the log: a
        # timestamp found there is a duplicate. Large batches look them up in
        # a set made once, small ones by bisection.
        known: set[int] | None = {e[0] for e in log} if len(new) > 256 else None
        fresh: list[_Op] = []
        prev: _Op | None = None
        for op in sorted(new):
            t = op[0]
            if prev is not None and prev[0] == t:
                # Repeated in this batch: one timestamp names one operation.
                if prev != op:
                    raise _Conflict
                continue
            prev = op
            if t <= newest and (t in known if known is not None else _logged(log, t)):
                # Known already: it must be the very same operation.
                if log[bisect_left(log, (t,))][:4] != op:
                    raise _Conflict
                continue
            if t < floor:
                raise _Stale
            fresh.append(op)
        if not fresh:
            return False
        clock = self.clock
        last = self.last
        for op in fresh:
            t = op[0]
            lam = t >> 64
            clock = max(clock, lam)
            w = t & _M64
            if last.get(w, 0) < lam:
                last[w] = lam
        self.clock = clock
        i = bisect_left(log, (fresh[0][0],))
        undone = log[i:]
        if old is not None:
            parent = self.parent
            for e in undone:
                n = e[1]
                if n not in old:
                    old[n] = (parent.get(n), self.key_of(n) if n in parent else "")
            for op in fresh:
                n = op[1]
                if n not in old:
                    old[n] = (parent.get(n), self.key_of(n) if n in parent else "")
        redo: list[_Op] = fresh
        if len(undone) + len(fresh) > 256:
            # A large batch touches many sibling lists: drop the sorted caches
            # at once (read ones are sorted again) rather than one at a time.
            self.order.clear()
        if undone:
            del log[i:]
            for e in reversed(undone):
                self._undo(e)
            # Two sorted runs: timsort merges them in linear time.
            redo = [e[:4] for e in undone]
            redo += fresh
            redo.sort()
        do = self._do
        start = 0
        if trim:
            # Operations below where the log will be truncated need no undo
            # record: fold them without one (a rebuild is mostly these).
            f = self._floor_for(clock)
            if redo[0][0] < f:
                self.truncate_at(f)  # the part of the log not undone
                start = bisect_left(redo, (f,))
                self.log = _DISCARD  # type: ignore[assignment]
                try:
                    for op in redo[:start]:
                        do(op)
                finally:
                    self.log = log
        for op in redo[start:] if start else redo:
            do(op)
        if trim:
            self.truncate()
        return True

    def truncate(self) -> None:
        """Drop the undo records that no operation can need any more.

        Each writer's operations reach us in its own order and carry
        increasing Lamport clocks, so a writer whose latest known operation
        has clock ``L`` can only send operations with clocks above ``L``. The
        log therefore keeps every operation above ``min(L_w)`` over the known
        writers ``w``, and always the last :data:`WINDOW` clock steps (writers
        not known yet); a writer more than :data:`HORIZON` steps behind no
        longer holds it back. An operation that arrives below the floor anyway
        raises :class:`_Stale` in :meth:`integrate`, and the binding rebuilds.
        """
        self.truncate_at(self._floor_for(self.clock))
        self.trim_at = len(self.log) + (WINDOW >> 2)

    def _floor_for(self, clock: int) -> int:
        """The timestamp below which :meth:`truncate` drops the log (see there)."""
        sigma = clock
        for lam in self.last.values():
            if lam < sigma and lam >= clock - HORIZON:
                sigma = lam
        keep = max(clock - HORIZON, min(sigma, clock - WINDOW))
        return (keep + 1) << 64  # operations at clocks up to `keep` go

    def truncate_at(self, t: int) -> None:
        """Drop the log entries below timestamp ``t``.

        Any ``t`` is safe: correctness never depends on where the floor is, only
        on :meth:`integrate` refusing what arrives below it.
        """
        if t > self.floor:
            log = self.log
            del log[: bisect_left(log, (t,))]
            self.floor = t

    # -- reading --------------------------------------------------------------------------

    def sorted_kids(self, p: str) -> list[tuple[str, str]]:
        """``[(pos, child)]`` of ``p`` in order (maybe a cached list: do not modify).

        Only the lists of parents with more than :data:`_FEW` children are kept
        (in ``order``): sorting a few is cheaper than keeping them sorted, and
        every structure a move touches is a cache miss on a large tree.
        """
        lst = self.order.get(p)
        if lst is None:
            d = self.kids.get(p)
            if not d:
                return []
            lst = sorted([(k, n) for n, k in d.items()])
            if len(lst) > _FEW:
                self.order[p] = lst
        return lst

    def top(self, n: str) -> str:
        """``ROOT`` if ``n`` is live, ``TRASH`` if deleted (``n`` must be in the state)."""
        parent = self.parent
        while n != "" and n != "-":  # noqa: PLR1714 - not ROOT/TRASH; literals are fastest
            n = parent[n]
        return n

    def live(self, n: object) -> bool:
        """Whether ``n`` is a node reachable from the top level."""
        return type(n) is str and n in self.parent and (not self.trashed or self.top(n) == ROOT)

    def key_for(
        self, p: str, node: str | None, index: int | None, t: int, new_id: str
    ) -> str | None:
        """Position key putting ``node`` (``None``: a new node) at ``index`` under ``p``.

        Returns:
            The key, or ``None`` if ``node`` is already there (nothing to do).

        Raises:
            InvalidOperationError: if ``index`` is not an int in range.
        """
        lst = self.sorted_kids(p)
        if index is None and lst:
            # Appending, the common case: after the last sibling other than node.
            lk, ln = lst[-1]
            if ln == node:
                return None  # already the last child
            o = ord(lk[0])
            n = o - 95 if o > 96 else 92 - o  # length of the integer part
            h = (((t ^ (t >> 64)) * 0x9E3779B97F4A7C15) & _M64) >> 40  # _jitter(t)
            d = _VAL[lk[n - 1]] + 1 + h % SPREAD
            if d < 62:  # step the integer part's last digit: no carry
                return lk[: n - 1] + _DIGITS[d]
            return key_between(lk, None, h)
        if index == 0 and lst:
            # Prepending: before the first sibling other than node.
            fk, fn = lst[0]
            if fn == node:
                return None  # already the first child
            o = ord(fk[0])
            n = o - 95 if o > 96 else 92 - o  # length of the integer part
            h = (((t ^ (t >> 64)) * 0x9E3779B97F4A7C15) & _M64) >> 40  # _jitter(t)
            d = _VAL[fk[n - 1]] - 1 - h % SPREAD
            if d >= 0:  # step the integer part's last digit down: no borrow
                k = fk[: n - 1] + _DIGITS[d]
                if k != _SMALLEST_INT:
                    return k
            return key_between(None, fk, h)
        j = -1
        if node is not None and self.parent[node] == p:
            j = bisect_left(lst, (self.kids[p][node], node))
        others = len(lst) - (j >= 0)
        if index is None:
            index = others
        elif type(index) is not int:
            raise InvalidOperationError(f"indexes are int or None, not {type(index).__name__}")
        elif not 0 <= index <= others:
            raise InvalidOperationError(
                f"index {index} out of range: the parent has {others} other children"
            )
        if index == j:
            return None
        # others[i] is lst[i] before the node's own slot j, lst[i + 1] after it.
        li = index - 1 if j < 0 or index - 1 < j else index
        ri = index if j < 0 or index < j else index + 1
        lo = lst[li][0] if index > 0 else None
        hi = lst[ri][0] if index < others else None
        if lo is not None and lo == hi:
            # Tied keys: only the node id orders the pair. Fit between them if the
            # id allows, otherwise land just after the tied run.
            me = node if node is not None else new_id
            if lst[li][1] < me < lst[ri][1]:
                return lo
            while ri < len(lst) and (lst[ri][0] == lo or ri == j):
                ri += 1
            hi = lst[ri][0] if ri < len(lst) else None
        bias = 0
        last = self.recent.get(p)
        if last is not None and last != node:
            if index > 0 and lst[li][1] == last:
                bias = 1  # right after the previous insert: typing forward
            elif index < others and ri < len(lst) and lst[ri][1] == last:
                # (ri passes the end when a tied run ends the siblings: no right
                # neighbour then; hypothesis found the IndexError.)
                bias = -1  # right before it: typing backward
        return key_between(lo, hi, _jitter(t), bias)

    def children(self, p: str) -> list[str]:
        """Children of ``p`` in order."""
        return [n for _, n in self.sorted_kids(p)]

    def walk(self) -> Iterator[str]:
        """Every live node, depth first, parents before children, siblings in order."""
        stack = [n for _, n in reversed(self.sorted_kids(ROOT))]
        while stack:
            n = stack.pop()
            yield n
            if n in self.kids:
                stack.extend(m for _, m in reversed(self.sorted_kids(n)))

    def snapshot(self) -> dict[str, tuple[str | None, str]]:
        """Every node's ``(parent, pos)``: the ``old`` of a change that may move anything."""
        kids = self.kids
        return {n: (p, "" if p == TRASH else kids[p][n]) for n, p in self.parent.items()}

    # -- checking -------------------------------------------------------------------------

    def check(self, deep: bool = True, ops: Sequence[_Op] | None = None) -> None:
        """Assert the invariants (for tests and the model check).

        Args:
            deep: also compare with a state rebuilt from scratch from the same
                operations (the incremental result must be the fold).
            ops: every operation (needed for ``deep`` once the log is truncated).

        Raises:
            AssertionError: naming the broken invariant.
        """
        parent = self.parent
        for n, p in parent.items():
            assert p in (ROOT, TRASH) or p in parent, f"{n}: parent {p} unknown"
            seen = 0
            a = n
            while a not in (ROOT, TRASH):  # single parent by construction; no cycle:
                a = parent[a]
                seen += 1
                assert seen <= len(parent), f"cycle through {n}"
            if p != TRASH:
                assert n in self.kids.get(p, {}), f"{n} missing from kids[{p}]"
        placed = sum(1 for p in parent.values() if p != TRASH)
        assert placed == sum(len(v) for v in self.kids.values()), "stray kids entries"
        for p, d in self.kids.items():
            for n, k in d.items():
                assert parent.get(n) == p, f"{n} in kids[{p}] but its parent is {parent.get(n)}"
                assert valid_key(k), f"{n} has an invalid position {k!r}"
        assert self.trashed == sum(1 for p in parent.values() if p == TRASH), "trash count"
        for p, lst in self.order.items():
            want = sorted((k, n) for n, k in self.kids.get(p, {}).items())
            assert lst == want, f"stale order of kids[{p}]"
        ts = [e[0] for e in self.log]
        assert all(ts[i] < ts[i + 1] for i in range(len(ts) - 1)), "log out of order"
        assert not ts or ts[0] >= self.floor, "log entries below the floor"
        if not deep:
            return
        if ops is None:
            assert self.floor == 0, "the log is truncated: pass every operation"
            ops = [e[:4] for e in self.log]
        fresh = _TreeState()
        fresh.integrate(list(ops), trim=False)
        assert fresh.parent == parent, "state differs from the fold of its operations"
        assert fresh.positions == self.positions, "positions differ from the fold"
        assert [e for e in fresh.log if e[0] >= self.floor] == self.log, "log differs from the fold"
        assert {k: v for k, v in fresh.kids.items() if v} == {
            k: v for k, v in self.kids.items() if v
        }, "children differ from the fold"
        assert fresh.clock == self.clock, "clock differs from the operations'"
        assert fresh.last == self.last, "writers' clocks differ from the operations'"


# --------------------------------------------------------------------------------
# The same state in Rust (crdtsync._native.TreeCore), when the extension is built


def _tree_core_class() -> Any:
    """``crdtsync._native.TreeCore`` if the Rust core is in use, else ``None``."""
    mod = accel.native_module()
    return getattr(mod, "TreeCore", None) if mod is not None else None


class _ParentView(Mapping[str, str]):
    """``node -> parent`` of a native state, read from Rust on demand."""

    __slots__ = ("_core",)

    def __init__(self, core: Any) -> None:
        self._core = core

    def __getitem__(self, n: str) -> str:
        p = self._core.parent_of(n) if type(n) is str else None
        if p is None:
            raise KeyError(n)
        return str(p)

    def get(self, n: str, default: Any = None) -> Any:
        p = self._core.parent_of(n) if type(n) is str else None
        return default if p is None else p

    def __contains__(self, n: object) -> bool:
        return type(n) is str and bool(self._core.contains(n))

    def __len__(self) -> int:
        return int(self._core.node_count())

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, _ in self._core.parent_items()])

    def items(self) -> Any:
        return dict(self._core.parent_items()).items()

    def values(self) -> Any:
        return [p for _, p in self._core.parent_items()]


class _SiblingView(Mapping[str, str]):
    """``child -> position key`` under one parent of a native state."""

    __slots__ = ("_core", "_p")

    def __init__(self, core: Any, p: str) -> None:
        self._core = core
        self._p = p

    def __getitem__(self, n: str) -> str:
        if type(n) is not str or self._core.parent_of(n) != self._p:
            raise KeyError(n)
        return str(self._core.key_of(n))

    def __len__(self) -> int:
        return len(self._core.kids_of(self._p) or ())

    def __iter__(self) -> Iterator[str]:
        return iter(self._core.kids_of(self._p) or {})

    def items(self) -> Any:
        return (self._core.kids_of(self._p) or {}).items()


class _KidsView(Mapping[str, Mapping[str, str]]):
    """``parent -> {child: position key}`` of a native state, read on demand."""

    __slots__ = ("_core",)

    def __init__(self, core: Any) -> None:
        self._core = core

    def __getitem__(self, p: str) -> Mapping[str, str]:
        # (Not kids_of: that copies the children, and a save asks once per node.)
        if type(p) is not str or (p != ROOT and not self._core.contains(p)):
            raise KeyError(p)
        return _SiblingView(self._core, p)

    def __len__(self) -> int:
        return len(self._core.kids_dict())

    def __iter__(self) -> Iterator[str]:
        return iter(self._core.kids_dict())


class _LogView(Sequence[_Entry]):
    """The log of a native state, read on demand (entries as in :class:`_TreeState`)."""

    __slots__ = ("_core",)

    def __init__(self, core: Any) -> None:
        self._core = core

    def __len__(self) -> int:
        return int(self._core.log_len())

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self._core.log_list()[i]
        return self._core.log_entry(i)

    def __iter__(self) -> Iterator[_Entry]:
        return iter(self._core.log_list())

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    # Compared by value, like a list: unhashable like one.
    __hash__ = None  # type: ignore[assignment]


class _NativeState:
    """:class:`_TreeState`'s interface on the Rust port (``native/core/src/tree.rs``).

    The pure-Python class stays the reference: the Rust state applies,
    undoes, truncates and keys exactly as it does
    (``tests/model/test_tree_native.py`` runs both on the same random
    histories), except where a key needs ``key_between``'s arbitrary
    precision: the Rust side hands those back and this class computes them
    here. ``Tree.move`` calls :attr:`core` directly (one call checks, keys
    and applies a local move); everything else comes through here.
    """

    __slots__ = ("core",)

    def __init__(self, core: Any) -> None:
        self.core = core

    @classmethod
    def from_state(cls, st: _TreeState, core_class: Any) -> _NativeState:
        """The native twin of a pure-Python state (one :func:`_decode_shape_py` built)."""
        kids = st.kids
        core = core_class(WINDOW, HORIZON)
        core.load(
            [(n, p, "" if p == TRASH else kids[p][n]) for n, p in st.parent.items()],
            st.last,
            st.clock,
            st.floor,
            st.log,
            st.trim_at,
        )
        core.recent = st.recent
        return cls(core)

    def empty(self) -> _NativeState:
        """A new empty state of the same kind."""
        return _NativeState(type(self.core)(WINDOW, HORIZON))

    # -- the attributes of _TreeState, read from Rust -----------------------------------

    @property
    def parent(self) -> Mapping[str, str]:
        return _ParentView(self.core)

    @property
    def kids(self) -> Mapping[str, Mapping[str, str]]:
        return _KidsView(self.core)

    @property
    def order(self) -> dict[str, list[tuple[str, str]]]:
        return dict(self.core.order_dict())

    @property
    def log(self) -> Sequence[_Entry]:
        return _LogView(self.core)

    @property
    def floor(self) -> int:
        return int(self.core.floor)

    @property
    def clock(self) -> int:
        return int(self.core.clock)

    @property
    def last(self) -> dict[int, int]:
        return dict(self.core.last)

    @property
    def trashed(self) -> int:
        return int(self.core.trashed)

    @property
    def trim_at(self) -> int:
        return int(self.core.trim_at)

    @property
    def recent(self) -> dict[str, str]:
        return dict(self.core.recent)

    @recent.setter
    def recent(self, value: dict[str, str]) -> None:
        self.core.recent = value

    @property
    def positions(self) -> dict[str, str]:
        """Every node's position key (``""`` in the trash): for tests and checks."""
        return {n: self.core.key_of(n) for n, _ in self.core.parent_items()}

    def views(self) -> tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]]:
        """``(parent, kids)`` as mappings, for :func:`shape_changes`."""
        return _ParentView(self.core), _KidsView(self.core)

    # -- the methods of _TreeState --------------------------------------------------------

    def key_of(self, n: str) -> str:
        return str(self.core.key_of(n))

    def parent_of(self, n: str) -> str | None:
        p = self.core.parent_of(n)
        return None if p is None else str(p)

    def walk_up(self, start: str, node: str | None) -> str:
        return str(self.core.walk_up(start, node))

    def apply_local(self, op: _Op, create: bool) -> None:
        t, n, p, k = op
        self.core.apply_local(t, n, p, k, create)

    def apply_local_reported(self, op: _Op, create: bool, out: list[TreeChange]) -> None:
        """:meth:`_TreeState.apply_local_reported` on the native state."""
        # (Indexes by rank in Rust: copying a big parent's children would cost
        # them all on every move.)
        _, n, p, k = op
        core = self.core
        if create:
            self.apply_local(op, True)
            i = core.rank(p, k, n)
            out.append(TreeChange("create", n, new_parent=p or None, new_index=i))
            return
        old = str(core.parent_of(n))
        oldk = self.key_of(n)  # local operations only touch live nodes
        j = core.rank(old, oldk, n)
        self.apply_local(op, False)
        if p == TRASH:
            out.append(TreeChange("delete", n, old_parent=old or None, old_index=j))
            return
        i = core.rank(p, k, n)
        out.append(TreeChange("move", n, old or None, j, p or None, i))

    def integrate(
        self,
        new: list[_Op],
        old: dict[str, tuple[str | None, str]] | None = None,
        trim: bool = True,
    ) -> bool:
        """:meth:`_TreeState.integrate` (same arguments, result and exceptions)."""
        status, olds = self.core.integrate(new, old is not None, trim)
        if status == 2:
            raise _Conflict
        if status == 3:
            raise _Stale
        if old is not None:
            for n, p, k in olds:
                old.setdefault(n, (p, k))
        return bool(status)

    def truncate(self) -> None:
        self.core.truncate()

    def _floor_for(self, clock: int) -> int:
        return int(self.core.floor_for(clock))

    def truncate_at(self, t: int) -> None:
        self.core.truncate_at(t)

    def sorted_kids(self, p: str) -> list[tuple[str, str]]:
        return list(self.core.sorted_kids(p))

    def top(self, n: str) -> str:
        return str(self.core.top(n))

    def live(self, n: object) -> bool:
        return bool(self.core.live(n))

    def key_for(
        self, p: str, node: str | None, index: int | None, t: int, new_id: str
    ) -> str | None:
        """:meth:`_TreeState.key_for` (same result and exceptions)."""
        if index is not None and type(index) is not int:
            # _TreeState.key_for prepends for anything equal to 0 when there
            # are siblings, and refuses every other non-int.
            if not (index == 0 and self.core.has_kids(p)):
                raise InvalidOperationError(f"indexes are int or None, not {type(index).__name__}")
            index = 0
        r = self.core.key_for(p, node, index, t, new_id)
        if r is None or type(r) is str:
            return r
        if type(r) is int:
            raise InvalidOperationError(
                f"index {index} out of range: the parent has {r} other children"
            )
        lo, hi, bias = r
        return key_between(lo, hi, _jitter(t), bias)

    def children(self, p: str) -> list[str]:
        return list(self.core.children(p))

    def walk(self) -> Iterator[str]:
        return iter(self.core.walk())

    def snapshot(self) -> dict[str, tuple[str | None, str]]:
        kids = self.core.kids_dict()
        return {n: (p, "" if p == TRASH else kids[p][n]) for n, p in self.core.parent_items()}

    def mirror(self) -> _TreeState:
        """A pure-Python copy (for checks and tests)."""
        core = self.core
        st = _TreeState()
        st.parent = dict(core.parent_items())
        st.kids = core.kids_dict()
        st.order = dict(core.order_dict())
        st.log = list(core.log_list())
        st.floor = int(core.floor)
        st.last = dict(core.last)
        st.clock = int(core.clock)
        st.trashed = int(core.trashed)
        st.recent = dict(core.recent)
        st.trim_at = int(core.trim_at)
        return st

    def check(self, deep: bool = True, ops: Sequence[_Op] | None = None) -> None:
        """:meth:`_TreeState.check` on a pure-Python copy of this state."""
        self.mirror().check(deep, ops)


#: A tree state: the pure-Python reference or its Rust port.
_State = _TreeState | _NativeState


def _new_state() -> _State:
    """An empty state: in Rust when the extension is in use, else in Python."""
    cls = _tree_core_class()
    return _TreeState() if cls is None else _NativeState(cls(WINDOW, HORIZON))


# --------------------------------------------------------------------------------
# Reading operations out of the document


# A stored operation, "<node> <parent> <pos>", checked in one pass by the
# regular expression engine: canonical decimal numbers of at most 16 digits,
# references "<client>:<clock>" or "<clock>", ASCII only.
_NUM = "(?:0|[1-9][0-9]{0,15})"
_REF = f"{_NUM}(?::{_NUM})?"
_OP_FIELDS = re.compile(f"({_REF})? (-|{_REF})? ([0-9A-Za-z]*)").fullmatch
_CANON = re.compile(_NUM).fullmatch


def _ref_of(s: str, owner: str) -> str | None:
    """The node a well-formed reference names (``None``: its clock is out of range)."""
    _, sep, seq = s.rpartition(":")
    if len(seq) == 16 and int(seq) > MAX_LAMPORT:
        return None
    return s if sep else owner + ":" + seq


def parse_op(owner: str, key: str, value: object, wid: int | None = None) -> _Op | None:
    """The operation stored at ``key`` in ``owner``'s container, or ``None`` if malformed.

    Args:
        owner: the container's key (the writer id, canonical decimal).
        key: the entry's key (the Lamport clock, canonical decimal).
        value: the entry: ``"<node> <parent> <pos>"``.
        wid: ``int(owner)``, if the caller has it already.
    """
    if type(value) is not str or len(value) > _MAX_OP or _CANON(key) is None:
        return None
    m = _OP_FIELDS(value)
    if m is None:
        return None
    lam = int(key)
    if lam > MAX_LAMPORT or lam == 0:
        return None
    n, p, k = m.groups()
    # (A reference shorter than 16 characters cannot hold a 16-digit clock,
    # the only kind that can exceed MAX_LAMPORT: no need to look closer.)
    if n is None:
        node: str | None = owner + ":" + key
    elif len(n) < 16:
        node = n if ":" in n else owner + ":" + n
    else:
        node = _ref_of(n, owner)
        if node is None:
            return None
    if p is None:
        parent = ROOT
    elif p == "-":
        parent = TRASH
        k = ""
    elif len(p) < 16:
        parent = p if ":" in p else owner + ":" + p
    else:
        ref = _ref_of(p, owner)
        if ref is None:
            return None
        parent = ref
    if parent != TRASH:
        # The regular expression checked the characters; now the shape.
        o = ord(k[0]) if k else 0
        n_int = o - 95 if 97 <= o <= 122 else 92 - o if 65 <= o <= 90 else 0  # _int_len
        if n_int == 0 or len(k) < n_int or len(k) > MAX_KEY or k == _SMALLEST_INT:
            return None
        if len(k) > n_int and k[-1] == "0":
            return None
    assert node is not None
    return (lam << 64 | (int(owner) if wid is None else wid), node, parent, k)


def _read_container(owner: str, cont: pycrdt.Map[Any], out: list[_Op]) -> None:
    """Append every valid operation of one writer's container to ``out``."""
    entries: Any = None
    try:
        # One JSON string is much faster than a get() per key; data maps come
        # along and are skipped.
        entries = json.loads(str(cont))
    except BaseException as exc:  # fall back to reading key by key
        if engine_error(exc) is exc and not isinstance(exc, Exception):
            raise  # a real exit (KeyboardInterrupt), not a panic
    if type(entries) is not dict:
        entries = {k: cont.get(k) for k in cont.keys()}  # noqa: SIM118 - pycrdt Map
    wid = int(owner)
    for k, v in entries.items():
        if type(v) is str:
            op = parse_op(owner, k, v, wid)
            if op is not None:
                out.append(op)


class _Binding:
    """One tree's state, bound to its Y.Map and kept up to date with it.

    Observers, all shallow (edits inside node data maps cost the tree nothing):
    the tree's Y.Map (writers' containers appearing or being replaced) and
    each container (operations added). They only *queue* what remote
    transactions brought; :meth:`sync` folds the queue in on the next read (or,
    on an observed document, when the transaction ends), so a burst of imports
    costs one undo/redo pass. The tree's own writes are applied when made and
    ignored by the observers (the document says whether a transaction is an
    import).
    """

    __slots__ = (
        "__weakref__",
        "dirty",
        "doc",
        "events",
        "local",
        "own",
        "pending",
        "prefix",
        "put",
        "rebuild",
        "scan",
        "state",
        "subs",
        "wid",
        "wkey",
        "y",
        "ydoc",
    )

    def __init__(self, doc: Doc, y: pycrdt.Map[Any] | None) -> None:
        # The document (weakly: engine callbacks hold the binding).
        self.doc = weakref.ref(doc)
        # This writer's container, once known, and the function that writes
        # one entry into it.
        self.own: pycrdt.Map[Any] | None = None
        self.put: Callable[[str, str, str | None], None] | None = None
        # What remote transactions brought since the last fold: operations,
        # containers to read whole, or "rebuild everything".
        self.pending: list[tuple[str, str, str]] = []
        self.scan: set[str] = set()
        self.rebuild = True
        self.dirty = True
        # In Rust when the extension is in use (_NativeState), else in Python.
        self.state: _State = _new_state()
        # The changes of local edits in the open transaction, for observers
        # (only while the document is observed).
        self.events: list[TreeChange] = []
        # Set while the tree commits a write of its own outside any transaction,
        # so that the observers skip it at the least cost (otherwise they ask
        # the document whether the transaction is an import).
        self.local = False
        # Subscriptions: "" for the tree's map, "<w>" for a container.
        # Dropping one unsubscribes.
        self.subs: dict[str, Any] = {}
        if y is not None:
            self.engine(doc, y)
        # (else the document is not hydrated: see __getattr__)

    def engine(self, doc: Doc, y: pycrdt.Map[Any]) -> None:
        """Bind to the tree's Y.Map: set what comes from the engine, observe the map."""
        # The engine document and the tree's Y.Map.
        self.ydoc = y.doc
        self.y = y
        # This replica's writer id, as an int and as a key, and the prefix of
        # the ids it creates.
        writer = str(doc.peer_id)
        self.wid = int(writer)
        self.wkey = writer
        self.prefix = writer + ":"
        ref = weakref.ref(self)
        self.subs[""] = observe_entries(y, lambda ev: _on_tree(ref, ev))

    if not TYPE_CHECKING:  # (mypy would otherwise take any attribute name)

        def __getattr__(self, name: str) -> Any:
            # Called only for a missing attribute: those engine() sets are missing
            # while the document is not hydrated (a tree read from its saved shape,
            # see Doc.load), and whatever reaches for them hydrates it first.
            if name in _ENGINE_SLOTS:
                doc = self.doc()
                if doc is not None and doc._lazy is not None:
                    doc._hydrate()
                    return object.__getattribute__(self, name)
            raise AttributeError(f"'_Binding' object has no attribute {name!r}")

    def _watch(self, owner: str, cont: pycrdt.Map[Any]) -> None:
        # Callbacks hold the binding weakly: the engine keeps callbacks as long
        # as the document lives, and must not keep the binding with them.
        if owner not in self.subs:
            ref = weakref.ref(self)

            def on_event(event: Any) -> None:
                b = ref()
                if b is not None and not b.local:  # not our own write (the hot path)
                    _on_container(b, owner, event)

            self.subs[owner] = observe_entries(cont, on_event)

    def containers(self) -> dict[str, pycrdt.Map[Any]]:
        """Every writer's container in the tree's map (canonical keys, Y.Map values)."""
        y = self.y
        out = {}
        for owner in list(y.keys()):
            if _canon(owner):
                cont = y.get(owner)
                if isinstance(cont, pycrdt.Map):
                    out[owner] = cont
        return out

    def container_sizes(self) -> dict[str, int]:
        """The number of entries in every writer's container (what a saved shape summarises)."""
        return {w: len(c) for w, c in self.containers().items()}

    def read_all(self) -> list[_Op]:
        """Every valid operation in the document (watching every container)."""
        ops: list[_Op] = []
        for owner, cont in self.containers().items():
            _read_container(owner, cont, ops)
            self._watch(owner, cont)
        return ops

    def sync(self, old: dict[str, tuple[str | None, str]] | None = None) -> bool:
        """Fold in whatever remote transactions brought.

        Args:
            old: if given, receives the place before of every node that may
                have moved (see :func:`~crdtsync.model.tree_events.shape_changes`).

        Returns:
            Whether the state may have changed.
        """
        self.dirty = False
        if not self.rebuild:
            ops = []
            for owner, key, value in self.pending:
                op = parse_op(owner, key, value)
                if op is not None:
                    ops.append(op)
            self.pending = []
            if self.scan:
                scan, self.scan = self.scan, set()
                y = self.y
                for owner in sorted(scan):
                    cont = y.get(owner)
                    if isinstance(cont, pycrdt.Map):
                        _read_container(owner, cont, ops)
                        self._watch(owner, cont)
            if not ops:
                return False
            try:
                return self.state.integrate(ops, old)
            except (_Conflict, _Stale):
                pass
        self._rebuild(old)
        return True

    def _rebuild(self, old: dict[str, tuple[str | None, str]] | None = None) -> None:
        """Read every operation again and fold them from the empty tree."""
        self.rebuild = False
        self.pending = []
        self.scan = set()
        self.own = self.put = None
        for k in [k for k in self.subs if k]:
            del self.subs[k]
        before = self.state
        state = before.empty()
        state.integrate(self.read_all())  # one timestamp per (container, key): no conflict
        state.recent = before.recent
        self.state = state
        if old is not None:
            for n, place in before.snapshot().items():
                old.setdefault(n, place)
            for n in state.parent:
                old.setdefault(n, (None, ""))

    def install(self, cached: _State, *, watch: bool = True) -> None:
        """Start from a saved shape that :func:`_decode_shape` accepted; watch every container.

        Args:
            cached: the shape's state.
            watch: observe the containers now (on an unhydrated document,
                :func:`attach_lazy` does it after the engine's apply).
        """
        if watch:
            for owner, cont in self.containers().items():
                self._watch(owner, cont)
        if isinstance(self.state, _NativeState) and isinstance(cached, _TreeState):
            # Decoded in Python (a writer key Rust does not compare): to Rust.
            self.state = _NativeState.from_state(cached, type(self.state.core))
        else:
            self.state = cached
        self.rebuild = False
        self.dirty = bool(self.pending or self.scan)

    def check(self, deep: bool = True) -> None:
        """Assert the state's invariants against every operation in the document."""
        ops: list[_Op] = []
        for owner, cont in self.containers().items():
            _read_container(owner, cont, ops)
        self.state.check(deep, ops)

    # -- writing ------------------------------------------------------------------------

    def ref(self, n: str) -> str:
        """How this writer refers to ``n`` (ROOT and TRASH refer to themselves)."""
        if n.startswith(self.prefix):
            return n[len(self.prefix) :]
        return n

    def own_container(self) -> pycrdt.Map[Any]:
        """This writer's container, created if needed (call inside a transaction)."""
        own = self.own
        if own is None:
            y = self.y
            own = y.get(self.wkey)
            if not isinstance(own, pycrdt.Map):
                y[self.wkey] = pycrdt.Map()
                own = y[self.wkey]
            self.own = own
            self.put = entry_writer(self.ydoc, own)
            self._watch(self.wkey, own)
        return own


def _remote(b: _Binding | None) -> bool:
    """Whether an event is an import's (not the tree's own write, applied already)."""
    if b is None or b.local:
        return False
    doc = b.doc()
    return doc is not None and doc.importing


def _on_tree(ref: Callable[[], _Binding | None], event: Any) -> None:
    """Observer of a tree's Y.Map: writers' containers added or replaced (never raises)."""
    b = ref()
    if not _remote(b):
        return
    assert b is not None
    changes = changed_entries(event)
    if changes is None:
        b.rebuild = b.dirty = True
        return
    for k, action, _ in changes:
        if _canon(k):
            if action == "add":
                b.scan.add(k)
            else:  # a writer's container replaced or removed
                b.rebuild = True
            b.dirty = True


def _on_container(b: _Binding, owner: str, event: Any) -> None:
    """Observer of one writer's container: operations added (never raises)."""
    if not _remote(b):
        return
    b.dirty = True
    changes = changed_entries(event)
    if changes is None:
        b.rebuild = True
        return
    for k, action, value in changes:
        if k[:1] == "d":
            continue  # a data map: not part of the structure
        if action == "add":
            if value is not None:  # anything but a string is not an operation
                b.pending.append((owner, k, value))
        else:  # an operation changed or removed: only a rebuild is sure
            b.rebuild = True


#: _Binding attributes set from the engine (absent while the document is not hydrated).
_ENGINE_SLOTS = frozenset(("y", "ydoc", "wid", "wkey", "prefix"))

# Every bound tree, per document: by "r:<root name>" or "n:<nested tree id>".
_BINDINGS: weakref.WeakKeyDictionary[Doc, dict[str, _Binding]] = weakref.WeakKeyDictionary()
# Saved shapes that Doc.load offered and no binding has taken yet, per document:
# (the document version they summarise, {binding key: entry}).
_OFFERED: weakref.WeakKeyDictionary[Doc, tuple[bytes, dict[str, Any]]] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------
# The container


class Tree(Container):
    """A movable tree: ordered children, moves that never duplicate, each node a map.

    Node ids are strings. ``None`` as a parent means the top level (a tree is a
    forest: it can have many top-level nodes).

    Examples:
        >>> from crdtsync import Doc
        >>> a, b = Doc(peer_id=1), Doc(peer_id=2)
        >>> t = a.tree("outline")
        >>> ch1 = t.create(data={"title": "Chapter 1"})
        >>> ch2 = t.create(data={"title": "Chapter 2"})
        >>> b.import_update(a.export_update())
        >>> b.tree("outline").move(ch2, parent=ch1)   # concurrently...
        >>> t.move(ch1, parent=ch2)                   # ...a cycle: one of them wins
        >>> a.import_update(b.export_update())
        >>> b.import_update(a.export_update())
        >>> a.to_py() == b.to_py()
        True
        >>> a.tree("outline").children(None) == [ch2]  # the earlier move won
        True
    """

    kind = "tree"
    __slots__ = ("_b",)

    def __init__(self) -> None:
        """Create a detached, empty tree; assign it into a document to use it."""
        super().__init__()
        # The binding to the document's state, once looked up.
        self._b: _Binding | None = None

    def _bind(self, doc: Doc, y: Any) -> None:
        super()._bind(doc, y)
        self._b = None

    if not TYPE_CHECKING:  # (mypy would otherwise take any attribute name)

        def __getattr__(self, name: str) -> Any:
            # Called only for a missing attribute: ``_y`` is missing on a root
            # wrapper made before its document was hydrated (see Doc.load), and
            # whatever reaches for it hydrates the document first.
            if name == "_y":
                doc = self._doc
                if doc is not None and doc._lazy is not None:
                    doc._hydrate()
                    return object.__getattribute__(self, name)
            raise AttributeError(f"'Tree' object has no attribute {name!r}")

    def _prelim(self, doc: Doc) -> Any:
        return pycrdt.Map({KIND_KEY: self.kind, ID_KEY: secrets.token_hex(8)})

    def _key(self, doc: Doc) -> str | None:
        """This tree's key among the document's bindings (``None``: a stray wrapper)."""
        y = self._y
        tid = y.get(ID_KEY) if KIND_KEY in y else None
        if type(tid) is str:
            return "n:" + tid
        name = doc.root_name(self)
        return None if name is None else "r:" + name

    def _existing(self) -> _Binding | None:
        """This tree's binding if one exists already (on this wrapper or another)."""
        b = self._b
        doc = self._doc
        if b is None and doc is not None:
            key = self._key(doc)
            per_doc = _BINDINGS.get(doc)
            if key is not None and per_doc is not None:
                b = per_doc.get(key)
        return b

    def _bound(self) -> _Binding | None:
        """This tree's binding, created if needed, not necessarily up to date."""
        b = self._b
        if b is None:
            doc = self._doc
            if doc is None:
                return None
            if doc._lazy is not None:
                b = _bind_lazily(doc, self)
                if b is not None:
                    self._b = b
                    return b
                doc._hydrate()  # the shape cannot be taken without the engine
            key = self._key(doc)
            per_doc = _BINDINGS.setdefault(doc, {})
            b = per_doc.get(key) if key is not None else None
            if b is None:
                b = _Binding(doc, self._y)
                cached = _take_offered(doc, key, b.container_sizes) if key is not None else None
                if cached is not None:
                    b.install(cached)
                if key is not None:
                    per_doc[key] = b
            self._b = b
        return b

    def _binding(self) -> _Binding | None:
        """This tree's up-to-date binding (``None`` while detached)."""
        b = self._b or self._bound()
        if b is not None and b.dirty:
            b.sync()
        return b

    def _state(self) -> _State:
        b = self._binding()
        return b.state if b is not None else _TreeState()

    # -- checks -----------------------------------------------------------------------

    @staticmethod
    def _live(st: _State, node: object, what: str = "node") -> str:
        if type(node) is not str:
            raise InvalidOperationError(f"node ids are str, not {type(node).__name__}")
        if st.parent_of(node) is None:
            raise InvalidOperationError(f"unknown {what} {node!r}")
        if st.trashed and st.top(node) != ROOT:
            raise InvalidOperationError(f"{what} {node!r} is deleted")
        return node

    @staticmethod
    def _target(st: _State, node: str | None, parent: object) -> str:
        """Check that ``parent`` can receive ``node`` (``None``: a new node)."""
        if parent is None:
            return ROOT
        if type(parent) is not str:
            raise InvalidOperationError(f"parent ids are str or None, not {type(parent).__name__}")
        p = st.parent_of(parent)
        if p is None:
            raise InvalidOperationError(f"unknown parent {parent!r}")
        if parent == node:
            raise TreeCycleError(f"cannot move {node!r} under itself")
        # One walk up from the parent answers both "is it live?" and "is the
        # node its ancestor?".
        a = st.walk_up(parent, node)
        if a == node:
            raise TreeCycleError(f"cannot move {node!r} under its own descendant {parent!r}")
        if a == TRASH:
            raise InvalidOperationError(f"parent {parent!r} is deleted")
        return parent

    @staticmethod
    def _next(st: _State, wid: int) -> tuple[int, int]:
        lam = st.clock + 1
        if lam > MAX_LAMPORT:
            raise InvalidOperationError("this tree's Lamport clock is exhausted")
        return lam, lam << 64 | wid

    # -- editing ------------------------------------------------------------------------

    def _commit(
        self,
        doc: Doc,
        b: _Binding,
        *,
        key: str,
        entry: str,
        op: _Op,
        create: bool,
        data: dict[str, Any] | None,
    ) -> None:
        """Write one operation (and a new node's data map), then apply it.

        Args:
            doc: the document.
            b: the binding.
            key: the operation's Lamport clock, its key in our container.
            entry: the stored form, ``"<node> <parent> <pos>"``.
            op: the operation.
            create: whether it creates ``op``'s node (its data map comes with it).
            data: a new node's initial data, if any.
        """
        put = b.put
        if put is not None and data is None and self._pending_root is None and not doc.observed:
            # The hot path: nobody to tell, the container exists: one engine
            # write, in the open transaction or in one of its own.
            b.local = True
            try:
                put(key, entry, "d" + key if create else None)
            except BaseException as exc:
                raise engine_error(exc) from None
            finally:
                b.local = False
            b.state.apply_local(op, create)
            return
        if not doc.in_transaction:
            b.events = []  # left over from a transaction nobody reported: stale
        with doc.edit(self):
            own = b.own_container()
            assert b.put is not None
            b.put(key, entry, "d" + key if create and not data else None)
            if data:
                own["d" + key] = to_engine(data, doc)
            if doc.observed:
                b.state.apply_local_reported(op, create, b.events)
            else:
                b.state.apply_local(op, create)

    def create(
        self,
        parent: str | None = None,
        index: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        """Create a node and return its id.

        Args:
            parent: the parent node, or ``None`` for the top level.
            index: position among the parent's children (``0 <= index <= n``);
                ``None`` appends.
            data: the node's initial data (a dict of storable values).

        Returns:
            The new node's id, ``"<peer id>:<clock>"``.

        Raises:
            InvalidOperationError: unknown or deleted parent, bad index.
            InvalidValueError: ``data`` cannot be stored (nothing is written).
        """
        doc = self._d()
        b = self._binding()
        assert b is not None
        st = b.state
        p = self._target(st, None, parent)
        if data is not None:
            if type(data) is not dict:
                raise InvalidValueError(f"node data is a dict, not {type(data).__name__}")
            to_engine(data, doc)  # refuse bad values before writing anything
        lam, t = self._next(st, b.wid)
        node = b.prefix + str(lam)
        key = st.key_for(p, None, index, t, node)
        assert key is not None
        self._commit(
            doc,
            b,
            key=str(lam),
            entry=f" {b.ref(p)} {key}",
            op=(t, node, p, key),
            create=True,
            data=data or None,
        )
        return node

    def move(self, node: str, parent: str | None = None, index: int | None = None) -> None:
        """Move ``node`` (with its subtree) under ``parent`` at ``index``.

        Args:
            node: the node to move.
            parent: the new parent, or ``None`` for the top level.
            index: position among the new siblings, counted without ``node``;
                ``None`` appends.

        Raises:
            TreeCycleError: ``parent`` is ``node`` or one of its descendants.
            InvalidOperationError: unknown or deleted node or parent, bad index.
        """
        # This is the hot path of local editing: the checks of _live and
        # _target, the append case of key_for and apply_local are inlined
        # (they are called only to raise the right error, or off the common
        # path). Each function call saved is a tenth of a microsecond.
        b = self._b
        if b is None or b.dirty:
            self._d()
            b = self._binding()
            assert b is not None
        st = b.state
        core = st.core
        if core is not None:
            # The Rust state: one call checks the move, computes its key and
            # entry and applies it; then the one engine write.
            doc = self._doc
            assert doc is not None
            put = b.put
            if put is not None and self._pending_root is None and not doc.observed:
                r = core.move_local(node, parent, index, b.wid)
                if r is not False:
                    if r is None:
                        return  # already there: nothing to write
                    if type(r) is int:
                        self._refuse(r, node, parent)
                    if len(r) == 4:  # a key only Python's key_between computes
                        lo, hi, bias, jit = r
                        r = core.finish_move(key_between(lo, hi, jit, bias), b.wid)
                    b.local = True
                    try:
                        put(r[0], r[1], None)
                    except BaseException as exc:
                        core.rollback_local()  # the engine refused the write
                        raise engine_error(exc) from None
                    finally:
                        b.local = False
                    return
            self._move_checked(doc, b, node, parent, index)
            return
        assert isinstance(st, _TreeState)
        pm = st.parent
        old = pm.get(node) if type(node) is str else None
        if old is None or (st.trashed and st.top(node) != ROOT):
            self._live(st, node)  # raises
            raise AssertionError  # pragma: no cover - _live raised
        if parent is None:
            p = ROOT
        else:
            if type(parent) is not str or parent not in pm:
                self._target(st, node, parent)
            if st.trashed:
                # One walk up from the parent answers "is the node its
                # ancestor?" and "is the parent live?".
                a = parent
                while a != "" and a != "-":  # noqa: PLR1714 - not ROOT/TRASH; literals are fastest
                    if a == node:
                        self._target(st, node, parent)
                    a = pm[a]
                if a == TRASH:
                    self._target(st, node, parent)
            elif parent == node or st.kids.get(node):
                # Without deleted nodes every node is live and every chain ends
                # at ROOT, the empty string; a leaf is nobody's ancestor.
                a = parent
                while a:
                    if a == node:
                        self._target(st, node, parent)
                    a = pm[a]
            p = parent
        lam = st.clock + 1
        wid = b.wid
        if lam > MAX_LAMPORT:
            self._next(st, wid)  # raises
        t = lam << 64 | wid
        order = st.order
        key = None
        lk = ""
        empty = False
        if index is None or index == 0:
            lst = order.get(p)
            if lst is None:
                dk = st.kids.get(p)
                if not dk:
                    empty = True
                elif node not in dk:
                    if len(dk) > _FEW:
                        lst = st.sorted_kids(p)
                    else:  # a few siblings, none of them the node: their extreme key
                        lk = max(dk.values()) if index is None else min(dk.values())
            elif not lst:
                empty = True
            if lst:
                if index is None:
                    lk, ln = lst[-1]
                    if ln == node:
                        return  # already the last child: nothing to write
                else:
                    lk, ln = lst[0]
                    if ln == node:
                        return  # already the first child: nothing to write
        if lk:
            # Appending after the last sibling, or prepending before the first
            # (key_for's common cases): step the integer part's last digit.
            h = (((wid ^ lam) * 0x9E3779B97F4A7C15) & _M64) >> 40  # _jitter(t)
            if index is None:
                o = ord(lk[0])
                n = o - 95 if o > 96 else 92 - o  # length of the integer part
                d = _VAL[lk[n - 1]] + 1 + h % SPREAD
                key = lk[: n - 1] + _DIGITS[d] if d < 62 else key_between(lk, None, h)
            else:
                o = ord(lk[0])
                n = o - 95 if o > 96 else 92 - o
                d = _VAL[lk[n - 1]] - 1 - h % SPREAD
                if d >= 0:
                    key = lk[: n - 1] + _DIGITS[d]
                if key is None or key == _SMALLEST_INT:
                    # a borrow, or not a valid key: what key_for does then
                    key = key_between(None, lk, h)
        elif empty:
            # The first child of a leaf (a third of random moves on a big tree):
            # key_between(None, None, h), which bias never changes.
            h = (((wid ^ lam) * 0x9E3779B97F4A7C15) & _M64) >> 40  # _jitter(t)
            key = "a" + _DIGITS[h % SPREAD]
        if key is None:
            found = st.key_for(p, node, index, t, node)
            if found is None:
                return  # already there: nothing to write
            key = found
        pre = b.prefix  # (a node of ours is referred to by its clock alone)
        entry = (
            f"{node[len(pre) :] if node.startswith(pre) else node} "
            f"{p[len(pre) :] if p.startswith(pre) else p} {key}"
        )
        doc = self._doc
        assert doc is not None
        put = b.put
        if put is None or self._pending_root is not None or doc.observed:
            self._commit(
                doc, b, key=str(lam), entry=entry, op=(t, node, p, key), create=False, data=None
            )
            return
        b.local = True
        try:
            put(str(lam), entry, None)
        except BaseException as exc:
            raise engine_error(exc) from None
        finally:
            b.local = False
        # st.apply_local((t, node, p, key), False), for a live node:
        kids = st.kids
        oldk = kids[old].pop(node)
        ol = order.get(old)
        if ol is not None:
            del ol[bisect_left(ol, (oldk, node))]
        pm[node] = p
        dk = kids.get(p)
        if dk is None:
            kids[p] = {node: key}
        else:
            dk[node] = key
        lst = order.get(p)
        if lst is not None:
            e = (key, node)
            if not lst or lst[-1] < e:
                lst.append(e)
            else:
                insort(lst, e)
        if index is not None:
            st.recent[p] = node  # (key_for's bias only reads it for inserts at an index)
        st.clock = lam
        st.last[wid] = lam
        log = st.log
        log.append((t, node, p, key, old, oldk))
        if len(log) > st.trim_at:
            st.truncate()

    @staticmethod
    def _refuse(code: int, node: str, parent: str | None) -> None:
        """Raise what the checks of ``move`` raise for a native refusal ``code``.

        The codes of ``TreeState::move_local`` (``native/core/src/tree.rs``),
        each the first check that fails in :meth:`_live` then :meth:`_target`
        order, with the same error and message.
        """
        if code == 1:
            raise InvalidOperationError(f"unknown node {node!r}")
        if code == 2:
            raise InvalidOperationError(f"node {node!r} is deleted")
        if code == 3:
            raise InvalidOperationError(f"unknown parent {parent!r}")
        if code == 4:
            raise TreeCycleError(f"cannot move {node!r} under itself")
        if code == 5:
            raise TreeCycleError(f"cannot move {node!r} under its own descendant {parent!r}")
        raise InvalidOperationError(f"parent {parent!r} is deleted")

    def _move_checked(
        self, doc: Doc, b: _Binding, node: str, parent: str | None, index: int | None
    ) -> None:
        """``move`` through the state's methods: what the native fast path left.

        The same checks, in the same order, with the same errors and the same
        key as the pure-Python ``move`` (which is :meth:`_TreeState.key_for`'s
        for anything equal to 0, as its inlined prepend is).
        """
        st = b.state
        self._live(st, node)
        p = self._target(st, node, parent)
        if index is not None and type(index) is not int and index == 0:
            index = 0
        lam, t = self._next(st, b.wid)
        key = st.key_for(p, node, index, t, node)
        if key is None:
            return  # already there: nothing to write
        self._commit(
            doc,
            b,
            key=str(lam),
            entry=f"{b.ref(node)} {b.ref(p)} {key}",
            op=(t, node, p, key),
            create=False,
            data=None,
        )

    def delete(self, node: str) -> None:
        """Delete ``node`` and its subtree.

        Raises:
            InvalidOperationError: unknown or already deleted node.
        """
        doc = self._d()
        b = self._binding()
        assert b is not None
        st = b.state
        self._live(st, node)
        lam, t = self._next(st, b.wid)
        self._commit(
            doc,
            b,
            key=str(lam),
            entry=f"{b.ref(node)} - ",
            op=(t, node, TRASH, ""),
            create=False,
            data=None,
        )

    # -- reading ------------------------------------------------------------------------

    def parent(self, node: str) -> str | None:
        """The parent of ``node``, or ``None`` for a top-level node.

        Raises:
            InvalidOperationError: unknown or deleted node.
        """
        st = self._state()
        p = st.parent_of(self._live(st, node))
        return None if p == ROOT else p

    def children(self, parent: str | None = None) -> list[str]:
        """The children of ``parent`` (``None``: the top-level nodes), in order.

        Raises:
            InvalidOperationError: unknown or deleted parent.
        """
        st = self._state()
        if parent is None:
            return st.children(ROOT)
        return st.children(self._live(st, parent, "parent"))

    def data(self, node: str) -> Map:
        """The map of ``node``'s data; edit it like any :class:`~crdtsync.Map`.

        Raises:
            InvalidOperationError: unknown or deleted node, or a node whose
                creator (a foreign client) wrote no data map.
        """
        doc = self._doc
        st = self._state()
        self._live(st, node)
        assert doc is not None
        dm = self._data_map(node)
        if dm is None:
            raise InvalidOperationError(f"node {node!r} has no data map")
        m = wrap(doc, dm)
        assert isinstance(m, Map)
        return m

    def _data_map(self, node: str) -> pycrdt.Map[Any] | None:
        owner, _, seq = node.partition(":")
        cont = self._y.get(owner)
        if not isinstance(cont, pycrdt.Map):
            return None
        dm = cont.get("d" + seq)
        if not isinstance(dm, pycrdt.Map) or KIND_KEY in dm:
            return None
        return dm

    def __contains__(self, node: object) -> bool:
        return self._state().live(node)

    def __len__(self) -> int:
        return sum(1 for _ in self._state().walk())

    def __iter__(self) -> Iterator[str]:
        """Every live node id, depth first, parents before their children."""
        return iter(list(self._state().walk()))

    def to_py(self) -> list[dict[str, Any]]:
        """The forest as ``[{"id": ..., "data": {...}, "children": [...]}, ...]``."""
        doc = self._doc
        if doc is None:
            return []
        st = self._state()
        top: list[dict[str, Any]] = []
        # Iterative, so that a deep chain cannot exhaust Python's recursion limit.
        stack: list[tuple[str, list[dict[str, Any]]]] = [
            (n, top) for n in reversed(st.children(ROOT))
        ]
        while stack:
            n, out = stack.pop()
            dm = self._data_map(n)
            item: dict[str, Any] = {
                "id": n,
                "data": wrap(doc, dm).to_py() if dm is not None else {},
                "children": [],
            }
            out.append(item)
            stack.extend((m, item["children"]) for m in reversed(st.children(n)))
        return top


# --------------------------------------------------------------------------------
# Change events (called by the document while a transaction ends)


def tree_changes(
    tree: Container | None, events: Iterable[tuple[Sequence[str | int], Any]]
) -> tuple[TreeChange, ...] | None:
    """What one transaction did to ``tree``, per node, for the document's observers.

    Folds what the transaction brought (remote operations) or takes what it
    did (local edits), and adds the data changes found in ``events``.

    Args:
        tree: the tree (``None`` or another kind: nothing can be said).
        events: the transaction's deep events inside the tree, with each one's
            path from the tree's Y.Map.

    Returns:
        The changes, or ``None`` if this replica had not read the tree before
        (read it whole).
    """
    if not isinstance(tree, Tree):
        return None
    known = tree._existing() is not None
    try:
        b = tree._bound()
        if b is None:
            return None
        if not known:
            b.sync()
            return None
        out: list[TreeChange] = []
        if b.events:
            out, b.events = b.events, []
        elif b.dirty:
            old: dict[str, tuple[str | None, str]] = {}
            if b.sync(old):
                st = b.state
                out = shape_changes(*st.views(), old)
        data: dict[str, dict[str, str]] = {}
        for path, ev in events:
            if len(path) < 2:
                continue
            owner, dkey = path[0], path[1]
            if type(owner) is not str or type(dkey) is not str or dkey[:1] != "d":
                continue
            if not _canon(owner) or not _canon(dkey[1:]):
                continue
            keys = data.setdefault(owner + ":" + dkey[1:], {})
            if len(path) == 2:
                # (A concurrent write that lost changes nothing visible: no keys.)
                for k, ch in ev.keys.items():
                    keys.setdefault(k, str(ch.get("action")))
            else:
                keys.setdefault(str(path[2]), "update")
        live = b.state.live
        out += [
            TreeChange("data", n, keys=keys) for n, keys in sorted(data.items()) if keys and live(n)
        ]
        return tuple(out)
    except Exception:  # a bug: say so, and let observers read the tree whole
        _log.exception("could not describe a tree change; reporting it as unknown")
        return None


def nested_trees(
    doc: Doc, root: Any, events: Sequence[Any]
) -> tuple[list[Any], dict[tuple[str | int, ...], tuple[Container, list[Any]]]]:
    """Split a root's deep events into those inside nested trees and the others.

    Args:
        doc: the document.
        root: the root's engine type (a pycrdt Map or Array).
        events: the transaction's deep events of that root.

    Returns:
        The events outside every tree, and per tree (by its path from the
        root) its wrapper and its events with their paths from the tree.
    """
    rest: list[Any] = []
    found: dict[tuple[str | int, ...], tuple[Container, list[Any]]] = {}
    is_tree: dict[tuple[str | int, ...], Any] = {}

    def tree_at(prefix: tuple[str | int, ...]) -> Any:
        if prefix not in is_tree:
            obj = root
            try:
                for step in prefix:
                    obj = obj[step]
            except (KeyError, IndexError, TypeError):
                obj = None
            ok = isinstance(obj, pycrdt.Map) and KIND_KEY in obj and obj[KIND_KEY] == "tree"
            is_tree[prefix] = obj if ok else None
        return is_tree[prefix]

    for ev in events:
        path = tuple(ev.path)
        where = None
        # A tree's own map, a writer's container in it, or anything below a
        # node's data map: the path passes a writer key (a canonical number).
        candidates = [i for i, s in enumerate(path) if type(s) is str and _canon(s)]
        if isinstance(ev, pycrdt.MapEvent) and any(_canon(k) for k in ev.keys):  # type: ignore[attr-defined]
            candidates.append(len(path))  # perhaps a tree's map: writers' containers changed
        for i in sorted(set(candidates)):
            if tree_at(path[:i]) is not None:
                where = path[:i]
                break
        if where is None:
            rest.append(ev)
            continue
        if where not in found:
            t = tree_at(where)
            found[where] = (wrap(doc, t), [])
        found[where][1].append((path[len(where) :], ev))
    return rest, found


# --------------------------------------------------------------------------------
# Saved shapes (Doc.save / Doc.load)

#: First bytes of the blob Doc.save stores next to the update; the digit is the
#: version of what follows (a zstd frame holding one JSON object).
_CACHE_MAGIC = b"crdtsync-tree-shapes-1\n"
#: Node ids and the ids' space-separated list, checked in one pass.
_IDS = re.compile(f"{_NUM}:{_NUM}(?: {_NUM}:{_NUM})*").fullmatch


def tree_cache(doc: Doc) -> bytes:
    """The shape of every root tree bound on ``doc``, to store with its saved update.

    Only root trees: a nested tree's map may have been deleted since it was
    bound (by this replica or a remote one), and the engine frees a deleted
    type's branch (garbage collection) while the binding still points at it;
    reading it is undefined behaviour in the engine (a segfault, or a panic,
    found by ``scripts/fuzz_lazy_load.py``). A root's branch is never freed.
    Nested trees are read from their operations on load.

    Returns:
        The blob (empty if no tree has a shape worth saving).
    """
    per_doc = _BINDINGS.get(doc)
    if not per_doc:
        return b""
    trees = []
    for key, b in sorted(per_doc.items()):
        if not key.startswith("r:"):
            continue  # a nested tree (see above): never touch its binding here
        if b.dirty:
            b.sync()
        st = b.state
        if not st.parent:
            continue
        ids = list(st.parent)
        index = {n: i for i, n in enumerate(ids)}
        parents = [-1 if p == ROOT else -2 if p == TRASH else index[p] for p in st.parent.values()]
        kids = st.kids
        top = st.log[-1][0] if st.log else st.floor - 1
        trees.append(
            {
                "key": key,
                "writers": b.container_sizes(),
                "last": {str(w): lam for w, lam in st.last.items()},
                "top": [top >> 64, top & _M64],
                "ids": " ".join(ids),
                "parents": parents,
                "pos": " ".join("" if p == TRASH else kids[p][n] for n, p in st.parent.items()),
            }
        )
    if not trees:
        return b""
    body = {"version": doc.version.to_bytes().hex(), "trees": trees}
    return _CACHE_MAGIC + zstd.compress(json.dumps(body, separators=(",", ":")).encode(), level=3)


def offer_cache(doc: Doc, blob: bytes) -> None:
    """Offer the shapes that :func:`tree_cache` saved to the trees of a loaded ``doc``.

    A shape is taken by the tree's binding when it is created (the root trees'
    right away), only if the document has not changed since it was loaded and
    the shape passes :func:`_decode_shape`'s checks. Anything else in the blob
    is ignored: the trees are then read from their operations, as without it.
    """
    if not blob:
        return
    try:
        if not blob.startswith(_CACHE_MAGIC):
            raise ValueError("unknown shape format")
        raw = zstd.decompress(
            blob[len(_CACHE_MAGIC) :],
            len(blob) * 64 + 65_536,
            what="saved tree shapes",
            malformed=InvalidUpdateError,
            too_large=InvalidUpdateError,
        )
        body = json.loads(raw)
        version = bytes.fromhex(body["version"])
        entries = {e["key"]: e for e in body["trees"] if type(e.get("key")) is str}
    except (InvalidUpdateError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.info("ignoring the saved tree shapes: %s", exc)
        return
    if version != doc._version_bytes():
        _log.info("ignoring the saved tree shapes: they describe another version")
        return
    _OFFERED[doc] = (version, entries)
    for key in list(entries):
        if key.startswith("r:") and _is_root_tree(doc, key[2:]):
            root = doc.root(key[2:], "tree")
            assert isinstance(root, Tree)
            root._bound()


def lazy_root(doc: Doc) -> Tree:
    """A root tree's wrapper for an unhydrated ``doc``: its ``_y`` slot stays empty.

    (For ``Doc._root``; :func:`attach_lazy` fills the slot at hydration, and
    anything reading it before hydrates the document: see ``Tree.__getattr__``.)
    """
    tree = Tree.__new__(Tree)
    tree._doc = doc
    tree._pending_root = None
    tree._read_at = None
    tree._b = None
    return tree


def _is_root_tree(doc: Doc, name: str) -> bool:
    """Whether ``doc.roots()`` lists ``name`` as a tree (before hydration, from the registry)."""
    lazy = doc._lazy
    if lazy is not None:
        lazy.roots_asked = True
        try:
            kind = doc._lazy_registry_kind(name)
        except LookupError:
            doc._hydrate()  # the index and the parse cannot tell: ask the engine
        else:
            # The registry's kind wins in roots(); only a registry entry says "tree".
            if kind == "tree":
                lazy.tree_names.add(name)
            return kind == "tree"
    return doc.roots().get(name) == "tree"


def _lazy_sizes(doc: Doc, name: str) -> dict[str, int] | None:
    """:meth:`_Binding.container_sizes` of root tree ``name``, from the index (before hydration).

    ``None`` unless every live entry of the tree's map is a writer's
    container (a canonical key holding a Y.Map): anything else is left to
    the engine (the document hydrates), so that no forged layout can make
    the answer differ from the engine's.
    """
    checker = doc._checker
    if not isinstance(checker, NativeChecker):
        return None
    entries = checker.map_entries(name)
    if entries is None:
        return {}
    sizes: dict[str, int] = {}
    for key, (client, clock, kind, type_ref) in entries.items():
        if not _canon(key) or kind != CONTENT_TYPE or type_ref != TYPE_MAP:
            return None
        sizes[key] = checker.map_size((client, clock)) or 0
    return sizes


def _bind_lazily(doc: Doc, tree: Tree) -> _Binding | None:
    """The binding of a root tree of an unhydrated ``doc``, from its saved shape.

    Returns:
        The binding (its engine side attached at hydration: :func:`attach_lazy`),
        or ``None`` when the shape cannot be taken without the engine (the
        caller hydrates and binds as usual).
    """
    lazy = doc._lazy
    assert lazy is not None
    name = next((n for n, t in lazy.trees.items() if t is tree), None)
    if name is None:
        return None
    key = "r:" + name
    per_doc = _BINDINGS.setdefault(doc, {})
    if key in per_doc:
        return None
    sizes = _lazy_sizes(doc, name)
    if sizes is None:
        return None
    cached = _take_offered(doc, key, lambda: sizes)
    if cached is None:
        return None  # refused: the engine's operations give the state, as without a shape
    b = _Binding(doc, None)
    b.install(cached, watch=False)
    lazy.sizes[name] = sizes
    per_doc[key] = b
    return b


def attach_lazy(
    doc: Doc, tree: Tree, y: pycrdt.Map[Any], sizes: dict[str, int] | None, version_ok: bool
) -> None:
    """At hydration: give a root tree made before it its Y.Map, and its binding its observers.

    The engine has applied the load's update: observers attached now never
    see it. What the lazy checks took from the index is verified against the
    engine; a difference (a bug in the index) is logged, and the tree is
    then read from its operations, as the eager load would have.
    """
    tree._y = y
    b = tree._b
    if b is None:
        return
    b.engine(doc, y)
    for owner, cont in b.containers().items():
        b._watch(owner, cont)
    if not version_ok or sizes is None or b.container_sizes() != sizes or KIND_KEY in y:
        _log.error("a tree's saved shape was taken on wrong grounds before hydration (a bug)")
        b.rebuild = b.dirty = True


def _take_offered(doc: Doc, key: str, sizes: Callable[[], dict[str, int]]) -> _State | None:
    """The saved shape offered for the tree of ``key``, if it is still valid.

    ``sizes`` gives the tree's containers' sizes (:meth:`_Binding.container_sizes`).
    """
    offered = _OFFERED.get(doc)
    if offered is None:
        return None
    version, entries = offered
    entry = entries.pop(key, None)
    if not entries:
        del _OFFERED[doc]
    if entry is None:
        return None
    if version != doc._version_bytes():
        return None  # edited or imported into since it was loaded
    try:
        return _decode_shape(entry, sizes())
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        _log.info("ignoring the saved shape of tree %s: %s", key, exc)
        return None


def _decode_shape(entry: dict[str, Any], sizes: dict[str, int]) -> _State:
    """A state from a saved shape, after checking it against the document.

    Checked: it summarises the operations the document holds (the same
    writers' containers, each with the same number of entries; its newest
    timestamp and each writer's clock within range), and it is a valid
    state: canonical, distinct node ids created by those writers, parents
    among them (or the top level, or the trash), no cycle, valid position
    keys. What is *not* checked, because only replaying the operations can:
    that the shape is the one they define (``docs/TREE.md``, "Saved shapes").

    With the Rust core, its node lists are checked and the state built in
    Rust (:func:`_decode_shape_native`), else in Python
    (:func:`_decode_shape_py`, the reference): the same checks, in the same
    order, with the same errors.

    Args:
        entry: one tree's shape, as :func:`tree_cache` wrote it.
        sizes: the number of entries in each writer's container of the tree
            in the loaded document (:meth:`_Binding.container_sizes`).

    Raises:
        ValueError: naming the first check that failed.
    """
    core_class = _tree_core_class()
    # (Rust compares writers as numbers: every container key must be canonical,
    # as container_sizes gives them, for that to be Python's string compare.)
    if core_class is None or not all(_CANON(w) for w in sizes):
        return _decode_shape_py(entry, sizes)
    return _decode_shape_native(entry, sizes, core_class)


def _shape_header(
    entry: dict[str, Any], sizes: dict[str, int]
) -> tuple[dict[int, int], int, int, Any, Any, Any]:
    """The checks of a shape's writers and clocks, shared by both decoders.

    Returns:
        ``(last, clock, floor, ids, pos, parents)``: the writers' clocks, the
        greatest of them, the log's floor, and the node lists (their types
        checked).
    """
    writers = entry["writers"]
    conts = sizes
    if type(writers) is not dict or set(writers) != set(conts):
        raise ValueError("its writers are not the document's")
    for w, size in conts.items():
        if writers[w] != size:
            raise ValueError(f"writer {w}'s container has another size")
    last_raw = entry["last"]
    if type(last_raw) is not dict:
        raise ValueError("bad writer clocks")
    last: dict[int, int] = {}
    for w, lam in last_raw.items():
        if w not in conts or type(lam) is not int or not 0 < lam <= MAX_LAMPORT:
            raise ValueError("bad writer clock")
        last[int(w)] = lam
    top_l, top_w = entry["top"]
    if type(top_l) is not int or type(top_w) is not int or last.get(top_w) != top_l:
        raise ValueError("bad newest operation")
    clock = max(last.values()) if last else 0
    if top_l != clock:
        raise ValueError("the newest operation is not the latest clock")
    ids_s, pos_s, parents = entry["ids"], entry["pos"], entry["parents"]
    if type(ids_s) is not str or type(pos_s) is not str or type(parents) is not list:
        raise ValueError("bad node lists")
    return last, clock, ((top_l << 64) | top_w) + 1, ids_s, pos_s, parents


def _decode_shape_native(
    entry: dict[str, Any], sizes: dict[str, int], core_class: Any
) -> _NativeState:
    """:func:`_decode_shape` in Rust (``TreeState::from_shape`` in ``native/core/src/tree.rs``)."""
    last, clock, floor, ids_s, pos_s, parents = _shape_header(entry, sizes)
    core = core_class.from_shape(
        ids_s, pos_s, parents, [int(w) for w in sizes], last, clock, floor, WINDOW, HORIZON
    )
    return _NativeState(core)


def _decode_shape_py(entry: dict[str, Any], sizes: dict[str, int]) -> _TreeState:
    """:func:`_decode_shape` in Python: the reference, and the path without the Rust core."""
    last, clock, floor, ids_s, pos_s, parents = _shape_header(entry, sizes)
    conts = sizes
    if _IDS(ids_s) is None:
        raise ValueError("malformed node ids")
    ids = ids_s.split(" ")
    keys = pos_s.split(" ")
    n_nodes = len(ids)
    if len(keys) != n_nodes or len(parents) != n_nodes or len(set(ids)) != n_nodes:
        raise ValueError("node lists disagree")
    for n in ids:
        w, _, lam_s = n.partition(":")
        lam = int(lam_s)
        if w not in conts or lam > last[int(w)] or lam == 0:
            raise ValueError(f"node {n} was not created by a known writer")
    st = _TreeState()
    parent, kids = st.parent, st.kids
    for i, n in enumerate(ids):
        pi = parents[i]
        if type(pi) is not int or not -2 <= pi < n_nodes or pi == i:
            raise ValueError("bad parent index")
        k = keys[i]
        if pi == -2:
            if k:
                raise ValueError("a deleted node with a position")
            parent[n] = TRASH
            st.trashed += 1
            continue
        if not valid_key(k):
            raise ValueError(f"invalid position key {k!r}")
        p = ROOT if pi == -1 else ids[pi]
        parent[n] = p
        d = kids.get(p)
        if d is None:
            kids[p] = {n: k}
        else:
            d[n] = k
    # No cycle: every chain of parents ends at the top level or the trash.
    done: set[str] = {ROOT, TRASH}
    for n in ids:
        path = []
        a = n
        while a not in done:
            path.append(a)
            a = parent[a]
            if len(path) > n_nodes:
                raise ValueError("a cycle")
        done.update(path)
    st.last = last
    st.clock = clock
    st.floor = floor
    return st
