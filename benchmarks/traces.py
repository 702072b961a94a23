"""Editing traces for the benchmarks: load one, replay it through each engine.

The traces live outside the repository, in ``../shared/traces`` (see the README
there; they are CC BY 4.0, Joseph Gentle and contributors). Each is gzipped JSON
``{"startContent", "endContent", "txns": [{"patches": [[pos, ndel, ins], ...]}]}``
with positions in code points.

Every replay has the same shape, so timings compare engines and not loops: one
engine call per delete and per insert; a trace transaction with a single call
runs as that call (each engine's own implicit transaction), one with several
calls (multi-patch transactions, or a patch that both deletes and inserts) runs
inside one explicit transaction. Loro has no per-call transactions: its replay
commits after each trace transaction, so its history has the same changes as
the others (and its snapshot size matches the published figure).

Offsets: crdtsync and Loro take code points, like the traces. Raw pycrdt takes
UTF-8 byte offsets; :class:`ByteOffsets` converts as cheaply as we know how,
so that the pycrdt baseline is the fastest correct code a pycrdt user could
write, not a strawman.
"""

from __future__ import annotations

import gzip
import json
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, ClassVar

import loro
import pycrdt

REPO = Path(__file__).resolve().parents[1]
TRACES_DIR = REPO.parent / "shared" / "traces"

try:
    import crdtsync
except ModuleNotFoundError as exc:  # a checkout without `pip install -e .`
    if exc.name != "crdtsync":
        raise
    sys.path.insert(0, str(REPO))
    import crdtsync

#: The sequential traces, in the order tables list them.
SEQUENTIAL = ("automerge-paper", "seph-blog1", "friendsforever_flat")

#: Name of the text root every replay edits.
TEXT = "text"

#: Writer ids, fixed so that sizes are the same on every run: a v1 update
#: repeats the client id in every item's origin, so its varint length shows.
#: Each engine gets a typical value of its own random default: crdtsync and
#: pycrdt pick ids below 2**53 (an 8-byte varint 15 times in 16), Yjs in
#: JavaScript a uint32 (5 bytes); ``node/sizes.mjs`` uses ``YJS_CLIENT_ID``.
CRDTSYNC_PEER_ID = 2**52 + 12345
PYCRDT_CLIENT_ID = 2**52 + 12345
YJS_CLIENT_ID = 2**31 + 12345

Patch = tuple[int, int, str]


@dataclass(frozen=True, eq=False)
class Trace:
    """A sequential editing trace.

    Attributes:
        name: file name without ``.json.gz``.
        start: text before the first transaction.
        end: text after the last one.
        txns: each transaction's patches ``(pos, ndel, ins)``, in code points.
    """

    name: str
    start: str
    end: str
    txns: tuple[tuple[Patch, ...], ...]

    @property
    def ops(self) -> int:
        """Number of patches (the unit of the per-op figures)."""
        return sum(len(t) for t in self.txns)

    @property
    def ascii(self) -> bool:
        """Whether the text is ASCII throughout (then byte offsets are code points)."""
        return self.start.isascii() and all(s.isascii() for t in self.txns for _, _, s in t)

    @cached_property
    def plan(self) -> tuple[tuple[bool, tuple[Patch, ...]], ...]:
        """``(single, patches)`` per transaction; ``single``: exactly one engine call."""
        return tuple((len(t) == 1 and (t[0][1] > 0) != (t[0][2] != ""), t) for t in self.txns)

    def head(self, n: int) -> Trace:
        """The trace cut after its first ``n`` patches (whole transactions only)."""
        txns: list[tuple[Patch, ...]] = []
        count = 0
        for t in self.txns:
            if count + len(t) > n:
                break
            txns.append(t)
            count += len(t)
        cut = Trace(f"{self.name}[:{count}]", self.start, "", tuple(txns))
        return Trace(cut.name, cut.start, replay_str(cut), cut.txns)


def trace_path(name: str) -> Path:
    """Where the trace ``name`` is stored."""
    return TRACES_DIR / f"{name}.json.gz"


@cache
def load_trace(name: str) -> Trace:
    """Read a sequential trace (cached: the big ones take a second to parse).

    Raises:
        FileNotFoundError: if ``../shared/traces`` does not hold it.
        ValueError: if it is a concurrent trace.
    """
    with gzip.open(trace_path(name), "rt", encoding="utf-8") as f:
        data = json.load(f)
    if "startContent" not in data:
        raise ValueError(f"{name} is a concurrent trace; only sequential ones replay here")
    txns = tuple(tuple((p[0], p[1], p[2]) for p in t["patches"]) for t in data["txns"])
    return Trace(name, data["startContent"], data["endContent"], txns)


# --------------------------------------------------------------------------------
# Reference


def replay_str(trace: Trace) -> str:
    """Replay on a plain ``str`` (the reference; O(n) per patch)."""
    s = trace.start
    for t in trace.txns:
        for pos, nd, ins in t:
            s = s[:pos] + ins + s[pos + nd :]
    return s


# --------------------------------------------------------------------------------
# Replays


class Replay:
    """One engine replaying one trace, in steps, so that engines can be interleaved.

    ``run(stop)`` applies transactions ``[done, stop)``; timing alternating
    chunks of several replays exposes them to the same background load, which
    on a shared machine matters more than anything else in the ratio.

    Args:
        trace: the trace to replay; the start content is inserted here.
    """

    #: Column name in the tables.
    engine: ClassVar[str] = ""

    def __init__(self, trace: Trace) -> None:
        # The trace being replayed.
        self.trace = trace
        # Transactions applied so far.
        self.done = 0
        trace.plan  # noqa: B018 - built now, outside any timed run

    def run(self, stop: int | None = None) -> None:
        """Apply the transactions up to ``stop`` (default: all)."""
        stop = len(self.trace.txns) if stop is None else stop
        self._run(self.trace.plan[self.done : stop])
        self.done = max(self.done, stop)

    def _run(self, plan: tuple[tuple[bool, tuple[Patch, ...]], ...]) -> None:
        raise NotImplementedError

    def text(self) -> str:
        """The text as replayed so far."""
        raise NotImplementedError


class CrdtsyncReplay(Replay):
    """Replay through ``doc.text(TEXT)`` as a user writes it: ``insert`` and ``delete``."""

    engine = "crdtsync"

    def __init__(self, trace: Trace, doc: crdtsync.Doc | None = None) -> None:
        super().__init__(trace)
        # The document edited.
        self.doc = crdtsync.Doc(peer_id=CRDTSYNC_PEER_ID) if doc is None else doc
        if trace.start:
            self.doc.text(TEXT).insert(0, trace.start)

    def _run(self, plan: tuple[tuple[bool, tuple[Patch, ...]], ...]) -> None:
        doc = self.doc
        text = doc.text(TEXT)
        insert, delete, transaction = text.insert, text.delete, doc.transaction
        for single, t in plan:
            if single:
                pos, nd, s = t[0]
                if nd:
                    delete(pos, nd)
                else:
                    insert(pos, s)
                continue
            with transaction():
                for pos, nd, s in t:
                    if nd:
                        delete(pos, nd)
                    if s:
                        insert(pos, s)

    def text(self) -> str:
        """The text as replayed so far."""
        return str(self.doc.text(TEXT))


# --------------------------------------------------------------------------------
# raw pycrdt


class ByteOffsets:
    """Code point -> UTF-8 byte offset for raw pycrdt, the cheapest correct way.

    Keeps the sorted code-point positions of the non-ASCII characters and their
    extra bytes (1 to 3 each). While there are none, which is always the case
    for ASCII traces, conversion is the identity and the replay skips us
    entirely (one ``str.isascii()`` per insert); with ``k`` of them an edit
    costs ``O(k)``, well under a microsecond for the few arrows of seph-blog1.
    Past ``MIRROR_THRESHOLD`` non-ASCII characters a copy of the text,
    converted at C speed (``len(s[:i].encode())``), is cheaper: we switch to it,
    and back when few are left.

    Args:
        read: returns the engine's current text (read once per switch to the copy).
    """

    MIRROR_THRESHOLD = 1024

    __slots__ = ("extra", "mirror", "pos", "read")

    def __init__(self, read: Callable[[], str]) -> None:
        # Reads the engine's text, after the edit being recorded.
        self.read = read
        # Code-point positions of the non-ASCII characters, sorted.
        self.pos: list[int] = []
        # Their UTF-8 length minus one, in the same order.
        self.extra: list[int] = []
        # The text itself, in mirror mode only.
        self.mirror: str | None = None

    @property
    def active(self) -> bool:
        """Whether conversion is needed (the text is not all ASCII)."""
        return bool(self.pos) or self.mirror is not None

    def to_bytes(self, i: int) -> int:
        """Byte offset of code point ``i``."""
        m = self.mirror
        if m is not None:
            return len(m[:i].encode())
        return i + sum(self.extra[: bisect_left(self.pos, i)])

    def span(self, i: int, n: int) -> tuple[int, int]:
        """Byte offset and byte length of code points ``[i, i + n)``."""
        m = self.mirror
        if m is not None:
            start = len(m[:i].encode())
            return start, len(m[i : i + n].encode())
        pos, extra = self.pos, self.extra
        k0 = bisect_left(pos, i)
        k1 = bisect_left(pos, i + n, k0)
        return i + sum(extra[:k0]), n + sum(extra[k0:k1])

    def inserted(self, i: int, s: str) -> None:
        """Record an insert of ``s`` at code point ``i`` (after the engine made it)."""
        m = self.mirror
        if m is not None:
            self.mirror = m[:i] + s + m[i:]
            return
        pos, extra = self.pos, self.extra
        n = len(s)
        k = bisect_left(pos, i)
        pos[k:] = [p + n for p in pos[k:]]
        if not s.isascii():
            new = [(i + j, len(c.encode()) - 1) for j, c in enumerate(s) if ord(c) > 127]
            pos[k:k] = [p for p, _ in new]
            extra[k:k] = [e for _, e in new]
            if len(pos) > self.MIRROR_THRESHOLD:
                self.mirror = self.read()
                pos.clear()
                extra.clear()

    def deleted(self, i: int, n: int) -> None:
        """Record a delete of code points ``[i, i + n)``."""
        m = self.mirror
        if m is not None:
            m = m[:i] + m[i + n :]
            # Extra bytes bound the non-ASCII count from above; switch back with
            # hysteresis so that a text hovering at the threshold does not flap.
            if len(m.encode()) - len(m) <= self.MIRROR_THRESHOLD // 2:
                self.mirror = None
                new = [(j, len(c.encode()) - 1) for j, c in enumerate(m) if ord(c) > 127]
                self.pos[:] = [p for p, _ in new]
                self.extra[:] = [e for _, e in new]
            else:
                self.mirror = m
            return
        pos, extra = self.pos, self.extra
        k0 = bisect_left(pos, i)
        k1 = bisect_left(pos, i + n, k0)
        del pos[k0:k1], extra[k0:k1]
        pos[k0:] = [p - n for p in pos[k0:]]


class PycrdtReplay(Replay):
    """Replay through raw pycrdt: ``Text.insert`` and ``del text[a:b]``, in bytes.

    ASCII edits on an ASCII text pass positions through untouched; anything else
    goes through :class:`ByteOffsets`.
    """

    engine = "pycrdt"

    def __init__(self, trace: Trace) -> None:
        super().__init__(trace)
        # The engine document and its text.
        self.doc = pycrdt.Doc(client_id=PYCRDT_CLIENT_ID)
        self._text = self.doc.get(TEXT, type=pycrdt.Text)
        # Offset conversion, active while the text holds non-ASCII characters.
        self._off = ByteOffsets(self._text.__str__)
        if trace.start:
            self._insert_slow(0, trace.start)

    def _delete_slow(self, pos: int, nd: int) -> None:
        b, nb = self._off.span(pos, nd)
        del self._text[b : b + nb]
        self._off.deleted(pos, nd)

    def _insert_slow(self, pos: int, s: str) -> None:
        self._text.insert(self._off.to_bytes(pos), s)
        self._off.inserted(pos, s)

    def _run(self, plan: tuple[tuple[bool, tuple[Patch, ...]], ...]) -> None:
        text, off = self._text, self._off
        insert, transaction = text.insert, self.doc.transaction
        delete_slow, insert_slow = self._delete_slow, self._insert_slow
        for single, t in plan:
            if single:
                pos, nd, s = t[0]
                if nd:
                    if off.active:
                        delete_slow(pos, nd)
                    else:
                        del text[pos : pos + nd]
                elif off.active or not s.isascii():
                    insert_slow(pos, s)
                else:
                    insert(pos, s)
                continue
            with transaction():
                for pos, nd, s in t:
                    if nd:
                        if off.active:
                            delete_slow(pos, nd)
                        else:
                            del text[pos : pos + nd]
                    if s:
                        if off.active or not s.isascii():
                            insert_slow(pos, s)
                        else:
                            insert(pos, s)

    def text(self) -> str:
        """The text as replayed so far."""
        return str(self._text)


# --------------------------------------------------------------------------------
# Loro


class LoroReplay(Replay):
    """Replay through ``LoroText.insert``/``delete`` (code points), one commit per txn."""

    engine = "loro"

    def __init__(self, trace: Trace) -> None:
        super().__init__(trace)
        # The Loro document and its text.
        self.doc = loro.LoroDoc()
        self._text = self.doc.get_text(TEXT)
        if trace.start:
            self._text.insert(0, trace.start)
            self.doc.commit()

    def _run(self, plan: tuple[tuple[bool, tuple[Patch, ...]], ...]) -> None:
        text = self._text
        insert, delete, commit = text.insert, text.delete, self.doc.commit
        for _, t in plan:
            for pos, nd, s in t:
                if nd:
                    delete(pos, nd)
                if s:
                    insert(pos, s)
            commit()

    def text(self) -> str:
        """The text as replayed so far."""
        return str(self._text.to_string())


REPLAYS: tuple[type[Replay], ...] = (CrdtsyncReplay, PycrdtReplay, LoroReplay)


def replay_crdtsync(trace: Trace, doc: crdtsync.Doc | None = None) -> crdtsync.Doc:
    """The crdtsync document after the whole trace."""
    r = CrdtsyncReplay(trace, doc)
    r.run()
    return r.doc


def replay_pycrdt(trace: Trace) -> pycrdt.Doc:
    """The raw pycrdt document after the whole trace."""
    r = PycrdtReplay(trace)
    r.run()
    return r.doc


def replay_loro(trace: Trace) -> loro.LoroDoc:
    """The Loro document after the whole trace."""
    r = LoroReplay(trace)
    r.run()
    return r.doc


def versions() -> dict[str, Any]:
    """Versions of the Python engines measured."""
    from importlib.metadata import version

    return {
        "python": sys.version.split()[0],
        "crdtsync": crdtsync.__version__,
        "pycrdt": version("pycrdt"),
        "loro": version("loro"),
        "zstandard": version("zstandard"),
    }


def iter_available(names: tuple[str, ...] = SEQUENTIAL) -> Iterator[Trace]:
    """The traces among ``names`` that are present, loaded."""
    for name in names:
        if trace_path(name).exists():
            yield load_trace(name)
