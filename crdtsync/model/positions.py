"""Positions in a text that stay on the same character while others edit (Yjs relative positions).

A Yjs editor binding (y-codemirror.next, y-prosemirror, the crdtsync demo page)
shares its caret in presence as a *relative position*: the id of the character
the caret stands before, so the caret follows that character wherever concurrent
edits move it. Its JSON form, which :func:`relative_position` returns and
:func:`absolute_position` reads, is Yjs' ``relativePositionToJSON``::

    {"tname": "body", "item": {"client": 1234, "clock": 56}, "assoc": 0}
                                    before the character 1234:56 of root text "body"
    {"tname": "body", "assoc": 0}   at the end of root text "body"

(``clock`` counts UTF-16 code units, as Yjs does.)

Why not pycrdt's ``StickyIndex``: in pycrdt 0.14 it adds a UTF-8 byte offset
within an item to the item's clock, which counts UTF-16 units, so outside ASCII it
names the wrong character, and with characters outside the BMP it names clocks
that do not exist and panics. So the item map is computed here, from what is
certain:

1. the document's full update, parsed by crdtsync's own parser
   (:mod:`crdtsync.format.yupdate`): every String item with its id and content;
2. the document's validator index: which items live in this text;
3. the engine's offset of the *first* character of each live item (exact there:
   the bug is only in offsets inside an item);
4. a check: the items, in that order, must spell the text exactly, and each
   must start where the previous one ended. If anything disagrees, the
   functions return None rather than a wrong position.

Only root texts are supported (a nested text returns None). Each call reads the
whole document (its cost grows with the number of items); the map is cached until
the document changes.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass
from typing import Any

import pycrdt

from crdtsync.format.yupdate import CONTENT_STRING, parse_update
from crdtsync.model.containers import Text, engine_error

__all__ = ["absolute_position", "relative_position"]

# A client id or clock a Yjs client could send: a JSON number within 2**53.
_MAX_ID = 2**53


@dataclass(frozen=True)
class _ItemMap:
    """The live String items of one text, in document order."""

    name: str  # the root's name
    text: str
    clients: tuple[int, ...]
    clocks: tuple[int, ...]
    contents: tuple[str, ...]
    starts: tuple[int, ...]  # code-point offset of each item in the text


# Doc -> root name -> (document version, the text's content, its map), while the Doc lives.
_cache: weakref.WeakKeyDictionary[Any, dict[str, tuple[bytes, str, _ItemMap | None]]] = (
    weakref.WeakKeyDictionary()
)


def _utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def _item_map(text: Text) -> _ItemMap | None:
    doc = text._doc
    if doc is None:
        return None
    name = doc.root_name(text)
    if name is None:
        return None  # not a root text
    content = str(text)
    version = doc.version.to_bytes()
    per_doc = _cache.setdefault(doc, {})
    cached = per_doc.get(name)
    if cached is not None and cached[0] == version and cached[1] == content:
        return cached[2]
    result = _build(doc, text, name, content)
    per_doc[name] = (version, content, result)
    return result


def _build(doc: Any, text: Text, name: str, content: str) -> _ItemMap | None:
    parsed = parse_update(doc.export_yjs_update(), doc.limits)
    checker = doc.index()
    deleted = {client: sorted(ranges) for client, ranges in parsed.delete_set.items() if ranges}
    live: list[tuple[int, int, str]] = []
    for s in parsed.structs():
        if s.kind != CONTENT_STRING or not isinstance(s.content, str):
            continue
        where = checker.where_of(s.client, s.clock)
        if where is None or where[0] != name:
            continue
        if _overlaps(deleted.get(s.client), s.clock, s.end):
            continue
        live.append((s.client, s.clock, s.content))
    located: list[tuple[int, int, int, str]] = []
    try:
        with doc._y.transaction() as txn:
            for client, clock, chars in live:
                sticky = pycrdt.StickyIndex.from_json(
                    {"item": {"client": client, "clock": clock}, "assoc": 0}, text._y
                )
                located.append((sticky.get_index(txn), client, clock, chars))
    except BaseException as exc:
        if engine_error(exc) is exc and not isinstance(exc, Exception):
            raise
        return None
    located.sort()
    clients, clocks, contents, starts = [], [], [], []
    byte_at = cp_at = 0
    for byte_start, client, clock, chars in located:
        if byte_start != byte_at:
            return None
        clients.append(client)
        clocks.append(clock)
        contents.append(chars)
        starts.append(cp_at)
        byte_at += len(chars.encode("utf-8"))
        cp_at += len(chars)
    if "".join(contents) != content:
        return None
    return _ItemMap(name, content, tuple(clients), tuple(clocks), tuple(contents), tuple(starts))


def _overlaps(ranges: list[tuple[int, int]] | None, start: int, end: int) -> bool:
    if not ranges:
        return False
    i = bisect.bisect_right(ranges, (start, _MAX_ID)) - 1
    if i >= 0 and ranges[i][0] + ranges[i][1] > start:
        return True
    return i + 1 < len(ranges) and ranges[i + 1][0] < end


def relative_position(text: Text, index: int) -> dict[str, Any] | None:
    """The Yjs relative position of code point ``index`` of a root text, as JSON.

    Args:
        text: a root text of a document (``doc.text("body")``).
        index: 0 <= index <= len(text); at ``len(text)`` the position is the end.

    Returns:
        ``{"tname": name, "item": {"client": c, "clock": k}, "assoc": 0}`` (before
        that character), ``{"tname": name, "assoc": 0}`` (the end), or None when the
        text is not a root text or its items cannot be mapped with certainty.

    Raises:
        IndexError: ``index`` is out of range.
    """
    m = _item_map(text)
    if m is None:
        return None
    if not 0 <= index <= len(m.text):
        raise IndexError(f"text index {index} out of range for length {len(m.text)}")
    if index == len(m.text):
        return {"tname": m.name, "assoc": 0}
    i = bisect.bisect_right(m.starts, index) - 1
    offset = _utf16(m.contents[i][: index - m.starts[i]])
    item = {"client": m.clients[i], "clock": m.clocks[i] + offset}
    return {"tname": m.name, "item": item, "assoc": 0}


def absolute_position(text: Text, position: object) -> int | None:
    """Where a relative position (JSON, from another client's presence) is now, in code points.

    The position is untrusted input: anything that is not a well-formed position
    of a live character (or the end) of this text gives None, never an error.

    Args:
        text: the root text the position should be in.
        position: the JSON value (dicts, lists, numbers...).

    Returns:
        The code-point index, or None.
    """
    if not isinstance(position, dict):
        return None
    assoc = position.get("assoc", 0)
    if type(assoc) is not int:
        return None
    item = position.get("item")
    m = _item_map(text)
    if m is None:
        return None
    if item is None:
        if position.get("tname") != m.name:
            return None
        return len(m.text) if assoc >= 0 else 0
    if not isinstance(item, dict):
        return None
    client, clock = item.get("client"), item.get("clock")
    if type(client) is not int or type(clock) is not int:
        return None
    if not (0 <= client < _MAX_ID and 0 <= clock < _MAX_ID):
        return None
    for i, (c, k, chars) in enumerate(zip(m.clients, m.clocks, m.contents, strict=True)):
        if c != client or not k <= clock < k + _utf16(chars):
            continue
        # The UTF-16 offset inside the item, back to code points.
        units = clock - k
        cp = 0
        while units > 0:
            units -= 2 if ord(chars[cp]) > 0xFFFF else 1
            cp += 1
        if units < 0:
            return None  # between the two halves of a surrogate pair
        index = m.starts[i] + cp
        return index + 1 if assoc < 0 else index
    return None
