"""Code-point <-> UTF-8 byte offset translation for text containers.

pycrdt addresses text by UTF-8 byte offsets; users address it as Python does, by
code point. Converting needs the text, and reading the whole text on every
keystroke would make editing O(n). So each text keeps a small cache:

* *ASCII mode* (the common case): the text is all ASCII, byte offsets equal
  code-point indexes, and no copy of the text is kept. A local ASCII insert or
  any delete keeps the mode; nothing is read.
* *Mirror mode*: the text holds non-ASCII characters; we keep a copy of it and
  convert with ``len(s[:i].encode())`` (C speed). Local edits update the copy.

The cache is valid while ``epoch`` matches the document's text epoch, which the
document bumps on every import and every text edit (so two wrappers of the same
engine text can never use each other's stale copy). A stale cache is rebuilt
from the engine in one read.
"""

from __future__ import annotations

__all__ = ["TextIndex"]


class TextIndex:
    """Offset cache of one text; see the module docstring."""

    __slots__ = ("ascii", "epoch", "mirror", "n")

    def __init__(self, content: str, epoch: int) -> None:
        # Length in code points (asking the engine would cost a transaction).
        self.n: int = len(content)
        # Whether byte offsets equal code-point indexes.
        self.ascii: bool = content.isascii()
        # The text itself, only kept when it is not ASCII.
        self.mirror: str = "" if self.ascii else content
        # Document text epoch this cache reflects.
        self.epoch: int = epoch

    def to_bytes(self, index: int) -> int:
        """Byte offset of code-point ``index`` (0 <= index <= length)."""
        if self.ascii:
            return index
        return len(self.mirror[:index].encode("utf-8"))

    def span_bytes(self, index: int, length: int) -> tuple[int, int]:
        """Byte offset and byte length of the code-point range ``[index, index+length)``."""
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
