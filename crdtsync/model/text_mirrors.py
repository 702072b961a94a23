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

log = logging.getLogger("crdtsync.doc")

#: Reserved key of nested non-map kinds (counters, registers, trees): no texts below.
_KIND_KEY = "\x00k"


class TextMirrors:
    """Content of the observed texts by path, kept in step with the document's events."""

    __slots__ = ("_below", "_texts")

    def __init__(self) -> None:
        # Path -> the text's content as last seen.
        self._texts: dict[Path, str] = {}
        # Proper prefix of a mirrored path -> how many mirrored paths it has, so
        # that a structural event with no text below it costs O(1).
        self._below: dict[Path, int] = {}

    def _set(self, path: Path, content: str) -> None:
        if path not in self._texts:
            below = self._below
            for i in range(1, len(path)):
                below[path[:i]] = below.get(path[:i], 0) + 1
        self._texts[path] = content

    def _pop(self, path: Path) -> str:
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
        """The mirrored content at ``path`` (for tests)."""
        return self._texts.get(path)

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
                content = str(v)
                self._set(where, content)
                if found is not None and content:
                    found.append((where, content))
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
        moved: dict[Path, str] = {}
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
        new = str(ev.target)
        old = self._texts.get(path)
        self._set(path, new)
        new_b = new.encode("utf-8")
        at = 0  # byte position in new
        pos = 0  # code-point position in old (when known)
        delta: list[dict[str, Any]] = []
        try:
            for op in ev.delta:
                if "insert" in op:
                    s = op["insert"]
                    if not isinstance(s, str):
                        delta.append({"insert": s})  # an embed: one position
                        at += 1
                        continue
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
