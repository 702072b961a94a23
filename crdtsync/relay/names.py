"""Room names and room patterns: what the relay accepts, and nothing else.

A room name is what a y-websocket client puts after the host (``ws://host/<room>``)
and what a crdtsync peer opens. It ends up in the store, in logs and in metrics, so
it is held to a small, boring alphabet rather than sanitised:

- 1 to :data:`MAX_ROOM_LENGTH` characters from ``A-Z a-z 0-9 . _ ~ : @ + -``
  (RFC 3986 unreserved characters plus three harmless sub-delimiters), and ``/``;
- ``/`` only *separates* non-empty segments: no leading or trailing ``/``, no ``//``;
- no segment is ``.`` or ``..``, so no name looks like a path that climbs;
- no ``%``: a name reaches :func:`validate_room` already decoded, exactly once
  (:func:`room_from_path`), so ``%2e%2e`` becomes ``..`` and is refused, and a
  double-encoded ``%252e`` keeps a ``%`` and is refused too.

A room *pattern*, the ``r`` claim of an access token, is a room name in which ``*``
may also appear; ``*`` matches any run of characters, ``/`` included
(:func:`pattern_matches`). No other character is special: ``?`` and ``[`` are not in
the alphabet at all.
"""

from __future__ import annotations

import re
import urllib.parse

from crdtsync.errors import InvalidRoomError

__all__ = [
    "MAX_ROOM_LENGTH",
    "pattern_matches",
    "room_from_path",
    "validate_pattern",
    "validate_room",
]

MAX_ROOM_LENGTH = 128
"""Longest room name or pattern, in characters (all ASCII, so also in bytes)."""

_ROOM_CHARS = re.compile(r"[A-Za-z0-9._~:@+\-/]*")
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9._~:@+\-/*]*")
# A '%' not followed by two hex digits: refused rather than kept literally, so a
# name has exactly one decoded form.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A raw path longer than this cannot decode to a valid name (each character of a
# valid name takes at most 3 characters percent-encoded); refuse it before decoding.
_MAX_RAW_PATH = 1 + 3 * MAX_ROOM_LENGTH


def _shown(text: str) -> str:
    """A short, escaped excerpt of untrusted text for an error message."""
    excerpt = text if len(text) <= 40 else text[:40] + "..."
    return repr(excerpt)


def _check(name: str, chars: re.Pattern[str], what: str, allowed: str) -> str:
    if not isinstance(name, str):
        raise InvalidRoomError(f"{what} must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidRoomError(f"{what} is empty")
    if len(name) > MAX_ROOM_LENGTH:
        raise InvalidRoomError(f"{what} is longer than {MAX_ROOM_LENGTH} characters")
    if chars.fullmatch(name) is None:
        raise InvalidRoomError(f"{what} {_shown(name)} has characters outside {allowed}")
    if name.startswith("/") or name.endswith("/"):
        raise InvalidRoomError(f"{what} {_shown(name)} starts or ends with '/'")
    for segment in name.split("/"):
        if not segment:
            raise InvalidRoomError(f"{what} {_shown(name)} has an empty segment ('//')")
        if segment in (".", ".."):
            raise InvalidRoomError(f"{what} {_shown(name)} has a '.' or '..' segment")
    return name


def validate_room(name: str) -> str:
    """Check a room name against the rules in this module's docstring.

    Args:
        name: the decoded room name.

    Returns:
        The name, unchanged.

    Raises:
        InvalidRoomError: the name breaks a rule; the message says which.
    """
    return _check(name, _ROOM_CHARS, "room name", "[A-Za-z0-9._~:@+-/]")


def validate_pattern(pattern: str) -> str:
    """Check a token's room pattern: a room name that may also contain ``*``.

    Args:
        pattern: e.g. ``notes``, ``team-a/*`` or ``*``.

    Returns:
        The pattern, unchanged.

    Raises:
        InvalidRoomError: the pattern breaks a rule; the message says which.
    """
    return _check(pattern, _PATTERN_CHARS, "room pattern", "[A-Za-z0-9._~:@+-/*]")


def room_from_path(raw_path: str) -> str:
    """The room named by the path of a WebSocket request (``/team-a/notes?token=...``).

    The query string, from the first ``?``, is not part of the path and is ignored
    here. The path must start with ``/``; that one ``/`` is removed, the rest is
    percent-decoded exactly once as UTF-8 and then checked with
    :func:`validate_room`.

    Args:
        raw_path: the request target as received, e.g. websockets' ``request.path``.

    Returns:
        The validated room name.

    Raises:
        InvalidRoomError: no leading ``/``, a broken percent-escape, bytes that are
            not UTF-8, or a decoded name that :func:`validate_room` refuses.
    """
    path = raw_path.partition("?")[0]
    if not path.startswith("/"):
        raise InvalidRoomError("request path does not start with '/'")
    path = path[1:]
    if len(path) > _MAX_RAW_PATH:
        raise InvalidRoomError(f"room name is longer than {MAX_ROOM_LENGTH} characters")
    if _BAD_ESCAPE.search(path):
        raise InvalidRoomError(f"room path {_shown(path)} has a broken percent-escape")
    try:
        name = urllib.parse.unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRoomError(f"room path {_shown(path)} does not decode as UTF-8") from None
    return validate_room(name)


def pattern_matches(pattern: str, room: str) -> bool:
    """Whether ``room`` matches ``pattern``, where ``*`` matches any run of characters.

    Every other character matches only itself. The classic two-pointer glob match
    with one backtrack point: linear for patterns with a single ``*`` and at worst
    ``len(pattern) * len(room)`` steps, both bounded by :data:`MAX_ROOM_LENGTH`.

    Args:
        pattern: a pattern accepted by :func:`validate_pattern`.
        room: a room name.

    Returns:
        True when the whole of ``room`` matches the whole of ``pattern``.
    """
    p = r = 0
    star = -1  # index in pattern of the last '*' seen
    star_r = 0  # index in room where that '*' currently stops matching
    while r < len(room):
        if p < len(pattern) and pattern[p] == "*":
            star, star_r = p, r
            p += 1
        elif p < len(pattern) and pattern[p] == room[r]:
            p += 1
            r += 1
        elif star >= 0:
            # Let the last '*' swallow one more character and retry after it.
            star_r += 1
            p, r = star + 1, star_r
        else:
            return False
    # The room is used up: only '*'s may remain in the pattern.
    return all(c == "*" for c in pattern[p:])
