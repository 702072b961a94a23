"""Bounded zstd: the one place crdtsync compresses and decompresses with zstd.

Compressed bytes from outside are a decompression bomb until proven otherwise,
so :func:`decompress` accepts only a single frame that declares its content
size, refuses a declared size over the caller's limit *before* allocating
anything, and checks that the frame really inflates to that size.

Callers (the document envelope, sync frames) report problems with their own
error classes: they pass the two factories, so a message names what was being
read and the class says whose fault it is.
"""

from __future__ import annotations

from collections.abc import Callable

import zstandard

__all__ = ["compress", "decompress"]

ErrorFactory = Callable[[str], Exception]


def compress(data: bytes, level: int = 3) -> bytes:
    """One zstd frame of ``data`` that declares its content size (what :func:`decompress` needs)."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def decompress(
    data: bytes,
    limit: int,
    *,
    what: str,
    malformed: ErrorFactory,
    too_large: ErrorFactory,
) -> bytes:
    """Inflate one zstd frame whose declared content size is at most ``limit`` bytes.

    Args:
        data: the compressed bytes (hostile).
        limit: largest output accepted, in bytes.
        what: what the bytes are, for messages ("compressed update").
        malformed: makes the error for corrupt bytes or a missing or wrong size.
        too_large: makes the error for a declared size over ``limit``.

    Returns:
        The decompressed bytes.

    Raises:
        Exception: whatever ``malformed`` or ``too_large`` return.
    """
    try:
        size = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as exc:
        raise malformed(f"corrupt {what}: {exc}") from None
    if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise malformed(f"{what} does not declare its size")
    if size > limit:
        # Refused before allocating: a decompression bomb never inflates.
        raise too_large(f"{what} would decompress to {size} bytes (limit {limit})")
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise malformed(f"corrupt {what}: {exc}") from None
    if len(out) != size:
        raise malformed(f"{what} size does not match its header")
    return bytes(out)
