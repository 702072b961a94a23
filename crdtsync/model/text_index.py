"""Code-point <-> UTF-8 byte offset translation for text containers.

pycrdt addresses text by UTF-8 byte offsets; users address it as Python does, by
code point. Converting needs the text, and reading the whole text on every
keystroke would make editing O(n). So each text keeps a small cache:

* *ASCII mode* (the common case): the text is all ASCII, byte offsets equal
  code-point indexes, and no copy of the text is kept. A local ASCII insert or
  any delete keeps the mode; nothing is read.
* *Mirror mode*: the text holds non-ASCII characters; we keep a copy of it and
  convert with ``len(s[:i].encode())`` (C speed). Local edits update the copy.

* *Embed mode*: the engine's text also holds embeds (a Yjs peer's
  ``insertEmbed``: an object or a shared type inside the text). ``str()`` of the
  engine's text leaves them out, but its offsets count each as one unit, so a
  translation that ignored them would hand the engine offsets inside a
  multi-byte character; yrs 0.28 then splits the character into a zero-length
  item, which corrupts the document and can panic (``block_store.rs:60``,
  divide by zero) in the transaction's commit. Embeds stay invisible to the
  code-point API: an insert goes right after the character before it (ahead of
  any embeds there), a delete removes only characters (the embeds between them
  stay, so one delete may be several engine ranges). The cache is not updated
  by local edits in this mode, only rebuilt (texts with embeds are rare).

The cache is valid while ``epoch`` matches the document's text epoch, which the
document bumps on every import and every text edit (so two wrappers of the same
engine text can never use each other's stale copy). A stale cache is rebuilt
from the engine in one read (two when it holds embeds).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

__all__ = ["TextIndex", "embed_positions"]


def embed_positions(chunks: Iterable[tuple[Any, Any]]) -> list[tuple[int, int]]:
    """Where the embeds of a text sit, from the engine's ``diff()`` chunks.

    Returns:
        ``(p, k)`` pairs, ``p`` ascending: ``k`` embeds lie right before code
        point ``p`` (``p`` may be the text's length).
    """
    out: list[tuple[int, int]] = []
    pos = 0
    for chunk, _attrs in chunks:
        if isinstance(chunk, str):
            pos += len(chunk)
        elif out and out[-1][0] == pos:
            out[-1] = (pos, out[-1][1] + 1)
        else:
            out.append((pos, 1))
    return out


class TextIndex:
    """Offset cache of one text; see the module docstring."""

    __slots__ = ("_before", "_pos", "ascii", "embeds", "epoch", "mirror", "n")

    def __init__(
        self, content: str, epoch: int, embeds: list[tuple[int, int]] | None = None
    ) -> None:
        # Length in code points (asking the engine would cost a transaction).
        self.n: int = len(content)
        # Embed mode: (code point, count) of the embeds (see embed_positions).
        self.embeds: list[tuple[int, int]] = embeds or []
        # Whether byte offsets equal code-point indexes.
        self.ascii: bool = content.isascii() and not self.embeds
        # The text itself, only kept when it is not ASCII.
        self.mirror: str = "" if self.ascii else content
        # Document text epoch this cache reflects.
        self.epoch: int = epoch
        # Embed mode: the embed positions, and the embeds at or before each.
        self._pos = [p for p, _ in self.embeds]
        self._before: list[int] = []
        total = 0
        for _, k in self.embeds:
            total += k
            self._before.append(total)

    def _embeds_below(self, index: int) -> int:
        """How many embeds lie before code point ``index`` (ahead of the ones at it)."""
        i = bisect.bisect_left(self._pos, index)
        return self._before[i - 1] if i else 0

    def _start(self, index: int) -> int:
        """Engine offset of code point ``index`` itself (after the embeds right before it)."""
        i = bisect.bisect_right(self._pos, index)
        embeds = self._before[i - 1] if i else 0
        return len(self.mirror[:index].encode("utf-8")) + embeds

    def to_bytes(self, index: int) -> int:
        """Byte offset of code-point ``index`` (0 <= index <= length)."""
        if self.ascii:
            return index
        return len(self.mirror[:index].encode("utf-8")) + self._embeds_below(index)

    def spans(self, index: int, length: int) -> list[tuple[int, int]]:
        """Engine ranges ``(offset, length)`` of the code points ``[index, index+length)``.

        One range, except in embed mode where embeds lie between those code
        points: then one range per run of characters, last first, so that
        deleting them in that order leaves the offsets of the others valid.
        """
        if not self.embeds:
            return [self.span_bytes(index, length)]
        end = index + length
        cuts = [p for p in self._pos if index < p < end]
        out = []
        for a, b in zip([index, *cuts], [*cuts, end], strict=True):
            out.append((self._start(a), len(self.mirror[a:b].encode("utf-8"))))
        out.reverse()
        return out

    def span_bytes(self, index: int, length: int) -> tuple[int, int]:
        """Byte offset and byte length of the code-point range ``[index, index+length)``.

        Only without embeds (see :meth:`spans`).
        """
        if self.ascii:
            return index, length
        start = len(self.mirror[:index].encode("utf-8"))
        return start, len(self.mirror[index : index + length].encode("utf-8"))

    def inserted(self, index: int, s: str, current: str | None) -> None:
        """Record a local insert of ``s`` at code point ``index``.

        Args:
            index: where it went.
            s: what was inserted.
            current: the engine's text after the insert, read by the caller only
                when switching from ASCII mode (``None`` otherwise).
        """
        self.n += len(s)
        if self.ascii:
            if not s.isascii():
                assert current is not None
                self.ascii = False
                self.mirror = current
        else:
            m = self.mirror
            self.mirror = m[:index] + s + m[index:]

    def deleted(self, index: int, length: int) -> None:
        """Record a local delete of ``length`` code points at ``index``."""
        self.n -= length
        if not self.ascii:
            m = self.mirror[:index] + self.mirror[index + length :]
            if m.isascii():
                self.ascii = True
                self.mirror = ""
            else:
                self.mirror = m
