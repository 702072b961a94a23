"""The last seen content of every text a document's observers see, for code-point deltas.

Theory of operation
-------------------
pycrdt reports a text change as a delta in UTF-8 bytes. Retained and inserted
parts are in the new text, so they translate into code points from it alone;
a deleted part is not, so its length in code points needs the text as it was.
:class:`TextMirrors` keeps that: the content of each text under observation,
by path, updated by every text event.

A path names a text only until the containers above it change, so the mirrors
follow every structural change before any text event of the same transaction
is translated (:meth:`TextMirrors.follow`): a list event renumbers the paths
below it (items inserted or deleted before a text move it), a map key that is
overwritten or deleted drops the texts under it, and every text that appears
(a new ``Text("abc")``, or one inside a new map or list) is recorded with its
content and reported as an insertion of that content, since yrs sends no text
event for a text created in the same transaction. Events are handled
outermost first, so an inner event's path, which is already the new path, meets
mirrors already renumbered.

Embeds (a Yjs peer's ``insertEmbed``) are not characters: ``Text`` leaves them
out of ``str(text)`` and of its indexes, and the engine counts each as one
offset unit. A text without embeds is mirrored as its string (the fast path); a
text with embeds as a tuple of units, one code point (a one-character ``str``)
or ``None`` (an embed) each, so that byte offsets can step over embeds. The
deltas are in ``str(text)`` positions: an embed takes none, so an inserted
embed is left out of the delta and a retained or deleted one counts nothing.

A delta is checked against the mirror as it is translated (every retained part
must be where the mirror has it, and the mirror's length must add up); a
mismatch, which would be a bug here, gives ``None`` (read the text) rather than
a wrong delta, and is logged.
"""

from __future__ import annotations

import logging
from typing import Any

import pycrdt

__all__ = ["Path", "TextMirrors"]

Path = tuple[str | int, ...]

#: A mirrored text: its string (no embeds), or its units (a code point, or None: an embed).
_Content = str | tuple[str | None, ...]

log = logging.getLogger("crdtsync.doc")

#: Reserved key of nested non-map kinds (counters, registers, trees): no texts below.
_KIND_KEY = "\x00k"


class TextMirrors:
    """Content of the observed texts by path, kept in step with the document's events."""

    __slots__ = ("_below", "_texts")

    def __init__(self) -> None:
        # Path -> the text's content as last seen (units where it has embeds).
        self._texts: dict[Path, _Content] = {}
        # Proper prefix of a mirrored path -> how many mirrored paths it has, so
        # that a structural event with no text below it costs O(1).
        self._below: dict[Path, int] = {}

    def _set(self, path: Path, content: _Content) -> None:
        if path not in self._texts:
            below = self._below
            for i in range(1, len(path)):
                below[path[:i]] = below.get(path[:i], 0) + 1
        self._texts[path] = content

    def _pop(self, path: Path) -> _Content:
        content = self._texts.pop(path)
        below = self._below
        for i in range(1, len(path)):
            left = below[path[:i]] - 1
            if left:
                below[path[:i]] = left
            else:
                del below[path[:i]]
        return content

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, path: Path) -> str | None:
        """The mirrored content at ``path``, embeds left out (for tests)."""
        content = self._texts.get(path)
        return None if content is None else _shown(content)

    def scan(self, path: Path, y: Any, found: list[tuple[Path, str]] | None = None) -> None:
        """Record every text in the engine value ``y`` found at ``path``.

        Args:
            path: where ``y`` is.
            y: a pycrdt value (texts, maps and lists are walked; others ignored).
            found: if given, receives ``(path, content)`` of each non-empty text.
        """
        stack: list[tuple[Path, Any]] = [(path, y)]
        while stack:
            where, v = stack.pop()
            t = type(v)
            if t is pycrdt.Text:
                content = _content(v)
                self._set(where, content)
                shown = _shown(content)
                if found is not None and shown:
                    found.append((where, shown))
            elif t is pycrdt.Map:
                if _KIND_KEY in v:
                    continue  # a counter, register or tree: no texts we report
                for k in v:
                    if not k.startswith("\x00"):
                        stack.append(((*where, k), v[k]))
            elif t is pycrdt.Array:
                for i, item in enumerate(v):
                    stack.append(((*where, i), item))

    def _drop_under(self, prefix: Path) -> None:
        if prefix in self._texts:
            self._pop(prefix)
        if prefix not in self._below:
            return
        n = len(prefix)
        for p in [p for p in self._texts if p[:n] == prefix]:
            self._pop(p)

    def follow(self, events: list[tuple[Path, Any]]) -> list[tuple[Path, str]]:
        """Follow the structural events of one transaction (map and list events).

        Args:
            events: ``(path, event)`` for each map or list event.

        Returns:
            ``(path, content)`` of every non-empty text that appeared.
        """
        found: list[tuple[Path, str]] = []
        for path, ev in sorted(events, key=lambda pe: len(pe[0])):
            if isinstance(ev, pycrdt.ArrayEvent):
                self._follow_list(path, ev, found)
            elif isinstance(ev, pycrdt.MapEvent):
                mev: Any = ev  # pycrdt's stubs do not declare the event's attributes
                target = mev.target
                for key, change in mev.keys.items():
                    if key.startswith("\x00"):
                        continue
                    self._drop_under((*path, key))
                    if change.get("action") != "delete" and key in target:
                        self.scan((*path, key), target[key], found)
        return found

    def _follow_list(self, path: Path, ev: Any, found: list[tuple[Path, str]]) -> None:
        n = len(path)
        # Mirrors right below this list, by their old index.
        below: dict[int, list[Path]] = {}
        has_texts = path in self._below
        for p in self._texts if has_texts else ():
            if len(p) > n and p[:n] == path and type(p[n]) is int:
                below.setdefault(p[n], []).append(p)  # type: ignore[arg-type]
        moved: dict[Path, _Content] = {}
        old = new = 0
        inserted: list[tuple[int, Any]] = []
        for op in ev.delta:
            if "retain" in op:
                k = int(op["retain"])
                if old != new:
                    for i in range(old, old + k):
                        for p in below.get(i, ()):
                            moved[(*path, new + i - old, *p[n + 1 :])] = self._pop(p)
                old += k
                new += k
            elif "delete" in op:
                k = int(op["delete"])
                for i in range(old, old + k):
                    for p in below.get(i, ()):
                        self._pop(p)
                old += k
            elif "insert" in op:
                items = op["insert"]
                for j, item in enumerate(items):
                    inserted.append((new + j, item))
                new += len(items)
        if old != new:
            # Items after the last op keep their order, shifted by the same amount.
            for i in sorted(below):
                if i >= old:
                    for p in below[i]:
                        if p in self._texts:
                            moved[(*path, new + i - old, *p[n + 1 :])] = self._pop(p)
        for p, content in moved.items():
            self._set(p, content)
        for index, item in inserted:
            self.scan((*path, index), item, found)

    def delta(self, path: Path, ev: Any) -> list[dict[str, Any]] | None:
        """Translate a text event's byte delta into code points; update the mirror.

        Args:
            path: the text's path (after the transaction).
            ev: the pycrdt ``TextEvent``.

        Returns:
            The delta in code points, or ``None`` if the mirror was out of step.
        """
        target = ev.target
        text = str(target)
        new_b = text.encode("utf-8")
        # A length other than the UTF-8 length means embeds (see _content).
        new: _Content = text if len(target) == len(new_b) else _units(target)
        old = self._texts.get(path)
        self._set(path, new)
        if type(new) is not str or (old is not None and type(old) is not str):
            old_units = None if old is None else _as_units(old)
            return _units_delta(path, ev.delta, _as_units(new), old_units)
        at = 0  # byte position in new
        pos = 0  # code-point position in old (when known)
        delta: list[dict[str, Any]] = []
        try:
            for op in ev.delta:
                if "insert" in op:
                    s = op["insert"]
                    if not isinstance(s, str):
                        raise _OutOfStep  # an embed, yet the text has none
                    delta.append({"insert": s})
                    at += len(s.encode("utf-8"))
                elif "retain" in op:
                    nbytes = int(op["retain"])
                    kept = new_b[at : at + nbytes].decode("utf-8")
                    at += nbytes
                    if old is not None:
                        if old[pos : pos + len(kept)] != kept:
                            raise _OutOfStep
                        pos += len(kept)
                    entry: dict[str, Any] = {"retain": len(kept)}
                    if "attributes" in op:
                        entry["attributes"] = op["attributes"]
                    delta.append(entry)
                elif "delete" in op:
                    if old is None:
                        raise _OutOfStep
                    nbytes = int(op["delete"])
                    start = pos
                    consumed = 0
                    while consumed < nbytes and pos < len(old):
                        consumed += len(old[pos].encode("utf-8"))
                        pos += 1
                    if consumed != nbytes:
                        raise _OutOfStep
                    delta.append({"delete": pos - start})
            if old is not None and old[pos:] != new_b[at:].decode("utf-8"):
                raise _OutOfStep
        except (_OutOfStep, UnicodeDecodeError):
            if old is not None:
                log.error("the text at %r was out of step with its events; delta dropped", path)
            return None
        return delta


class _OutOfStep(Exception):
    """The mirror does not match the event (internal: the delta is dropped)."""


def _content(y: Any) -> _Content:
    """What to mirror of the engine text ``y``: its string, or its units if it has embeds."""
    s = str(y)
    # The engine counts each embed as one offset unit and str() leaves them
    # out: a length other than the string's UTF-8 length means embeds.
    if len(y) == (len(s) if s.isascii() else len(s.encode("utf-8"))):
        return s
    return _units(y)


def _units(y: Any) -> tuple[str | None, ...]:
    """The units of the engine text ``y``: a code point each, or None for an embed."""
    units: list[str | None] = []
    for chunk, _attrs in y.diff():
        if isinstance(chunk, str):
            units.extend(chunk)
        else:
            units.append(None)
    return tuple(units)


def _as_units(content: _Content) -> tuple[str | None, ...]:
    return tuple(content) if type(content) is str else content  # type: ignore[return-value]


def _shown(content: _Content) -> str:
    """The string ``Text`` shows: the characters, embeds left out."""
    if type(content) is str:
        return content
    return "".join(u for u in content if u is not None)


def _take(units: tuple[str | None, ...], i: int, nbytes: int) -> int:
    """The unit index ``nbytes`` engine offset units after unit ``i``."""
    done = 0
    while done < nbytes:
        if i >= len(units):
            raise _OutOfStep
        u = units[i]
        done += 1 if u is None else len(u.encode("utf-8"))
        i += 1
    if done != nbytes:
        raise _OutOfStep  # ends inside a character
    return i


def _units_delta(
    path: Path,
    ops: Any,
    new: tuple[str | None, ...],
    old: tuple[str | None, ...] | None,
) -> list[dict[str, Any]] | None:
    """:meth:`TextMirrors.delta` for a text with embeds: positions in characters only."""
    at = 0  # unit index in new
    pos = 0  # unit index in old (when known)
    delta: list[dict[str, Any]] = []

    def add(entry: dict[str, Any]) -> None:
        # Leaving embeds out can put two ops of one kind side by side: merged.
        last = delta[-1] if delta else None
        if last is not None and last.keys() == entry.keys():
            if "insert" in entry:
                last["insert"] += entry["insert"]
                return
            if "delete" in entry:
                last["delete"] += entry["delete"]
                return
            if last.get("attributes") == entry.get("attributes"):
                last["retain"] += entry["retain"]
                return
        delta.append(entry)

    try:
        for op in ops:
            if "insert" in op:
                s = op["insert"]
                if not isinstance(s, str):
                    if at >= len(new) or new[at] is not None:
                        raise _OutOfStep
                    at += 1  # an embed: no position in str(text), not in the delta
                    continue
                if new[at : at + len(s)] != tuple(s):
                    raise _OutOfStep
                at += len(s)
                add({"insert": s})
            elif "retain" in op:
                end = _take(new, at, int(op["retain"]))
                kept = new[at:end]
                at = end
                if old is not None:
                    if old[pos : pos + len(kept)] != kept:
                        raise _OutOfStep
                    pos += len(kept)
                chars = sum(1 for u in kept if u is not None)
                if chars:
                    entry: dict[str, Any] = {"retain": chars}
                    if "attributes" in op:
                        entry["attributes"] = op["attributes"]
                    add(entry)
            elif "delete" in op:
                if old is None:
                    raise _OutOfStep
                end = _take(old, pos, int(op["delete"]))
                chars = sum(1 for u in old[pos:end] if u is not None)
                pos = end
                if chars:
                    add({"delete": chars})
        if old is not None and old[pos:] != new[at:]:
            raise _OutOfStep
    except _OutOfStep:
        if old is not None:
            log.error("the text at %r was out of step with its events; delta dropped", path)
        return None
    while delta and set(delta[-1]) == {"retain"}:
        delta.pop()  # a plain retain at the end says nothing
    return delta
