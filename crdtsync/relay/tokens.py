"""Signed access tokens for the relay: HMAC-SHA256 over a small JSON claim set.

A token says which rooms its holder may open and whether it may write, until when.
The relay and whoever mints tokens share one secret (``crdtsync secret``); there is
no public-key variant and no revocation list, so keep ``ttl`` short.

Format (all ASCII, at most :data:`MAX_TOKEN_LENGTH` characters)::

    v1.<claims>.<signature>

    claims     base64url, no padding, of a JSON object:
                 {"r": "<room pattern>", "w": true|false, "iat": <int>, "exp": <int>
                  [, "sub": "<subject>"]}
    signature  base64url, no padding, of HMAC-SHA256(secret, "v1." + claims)

``r`` is a room pattern (:func:`crdtsync.relay.names.validate_pattern`): a room name
in which ``*`` matches any run of characters. ``iat`` and ``exp`` are whole seconds
since the Unix epoch. ``sub`` is free text for logs (who the token was minted for).

:func:`verify_token` checks, in order: the shape and size of the token, the
signature (in constant time, and against the canonical encoding, so no two
different strings verify as the same token), then the claims with exact JSON
types (``true`` is not ``1``, ``1.0`` is not ``1``), no unknown or duplicate
keys, and finally the times. Whatever is wrong raises a :class:`TokenError`
(:class:`TokenExpiredError` for expiry) whose message says what, without the
secret or the token in it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from crdtsync.errors import InvalidOperationError, InvalidRoomError, TokenError, TokenExpiredError
from crdtsync.relay.names import pattern_matches, validate_pattern, validate_room

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MIN_SECRET_BYTES",
    "TokenClaims",
    "check_secret",
    "generate_secret",
    "load_secret",
    "mint_token",
    "verify_token",
]

MAX_TOKEN_LENGTH = 4096
"""Longest token :func:`verify_token` reads; longer strings are refused unparsed."""

MIN_SECRET_BYTES = 16
"""Shortest secret accepted: below 128 bits an HMAC key can be guessed offline."""

MAX_SUBJECT_LENGTH = 256
"""Longest ``sub`` claim, in characters."""

_MAX_SECRET_FILE = 4096
_VERSION = "v1"
# Seconds since the epoch stay below 2**53 so every JSON reader agrees on them.
_MAX_TIME = 2**53 - 1
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_REQUIRED = frozenset({"r", "w", "iat", "exp"})
_KNOWN = _REQUIRED | {"sub"}


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token grants.

    Attributes:
        room: the room pattern, e.g. ``notes``, ``team-a/*`` or ``*``.
        write: True for read-write access, False for read-only.
        issued: when the token was minted (whole seconds since the epoch).
        expires: when it stops being valid (whole seconds since the epoch).
        subject: who it was minted for, or None.
    """

    room: str
    write: bool
    issued: int
    expires: int
    subject: str | None = None

    def allows(self, room: str) -> bool:
        """Whether the token's pattern covers ``room``.

        ``*`` in the pattern matches any run of characters, ``/`` included; every
        other character matches itself only. A room name that
        :func:`~crdtsync.relay.names.validate_room` refuses is never allowed, even
        by ``*``.

        Args:
            room: a room name.

        Returns:
            True when the token may open ``room``.
        """
        try:
            validate_room(room)
        except InvalidRoomError:
            return False
        return pattern_matches(self.room, room)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    # base64's own decoder skips characters outside the alphabet; check first so a
    # token has exactly one spelling.
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise TokenError(f"token {what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"token {what} is not unpadded base64url") from None


def _sign(secret: bytes, claims_part: str) -> str:
    mac = hmac.new(secret, f"{_VERSION}.{claims_part}".encode("ascii"), hashlib.sha256)
    return _b64encode(mac.digest())


def check_secret(secret: bytes) -> bytes:
    """Check that a secret is usable as an HMAC key, e.g. when a relay starts.

    :func:`mint_token` and :func:`verify_token` make the same check on every call;
    calling this once at start-up turns a bad configuration into an error there
    instead of a refusal of every connection.

    Args:
        secret: the shared secret.

    Returns:
        The secret, unchanged.

    Raises:
        InvalidOperationError: it is not bytes, or shorter than
            :data:`MIN_SECRET_BYTES` bytes.
    """
    if not isinstance(secret, bytes | bytearray):
        raise InvalidOperationError(f"secret must be bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidOperationError(f"secret is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _check_subject(subject: str) -> bool:
    # isprintable() refuses control characters, lone surrogates and line breaks, so
    # a subject cannot forge a log line.
    return 0 < len(subject) <= MAX_SUBJECT_LENGTH and subject.isprintable()


def mint_token(
    secret: bytes,
    room: str,
    *,
    write: bool,
    ttl: float,
    now: float | None = None,
    subject: str | None = None,
) -> str:
    """Create a signed token for a room pattern.

    Args:
        secret: the relay's shared secret (at least :data:`MIN_SECRET_BYTES` bytes).
        room: a room pattern, e.g. ``notes``, ``team-a/*`` or ``*``.
        write: grant write access (else read-only).
        ttl: seconds until the token expires; at least 1.
        now: the current time (seconds since the epoch); ``time.time()`` if None.
        subject: who the token is for (1 to 256 printable characters), shown in
            the relay's logs.

    Returns:
        The token, an ASCII string.

    Raises:
        InvalidRoomError: ``room`` is not a valid room pattern.
        InvalidOperationError: the secret is too short, ``ttl`` is not a finite
            number of at least one second, or the subject is empty, too long or
            not printable.
    """
    check_secret(secret)
    validate_pattern(room)
    if not isinstance(write, bool):
        raise InvalidOperationError("write must be a bool")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise InvalidOperationError("ttl must be a finite number of seconds")
    if ttl < 1:
        raise InvalidOperationError("ttl must be at least 1 second")
    if subject is not None and (not isinstance(subject, str) or not _check_subject(subject)):
        raise InvalidOperationError(
            f"subject must be 1 to {MAX_SUBJECT_LENGTH} printable characters"
        )
    moment = time.time() if now is None else now
    if not math.isfinite(moment):
        raise InvalidOperationError("now must be a finite time")
    issued = math.floor(moment)
    expires = math.floor(moment + ttl)
    if not 0 <= issued < expires <= _MAX_TIME:
        raise InvalidOperationError("token times are out of range")
    claims: dict[str, Any] = {"r": room, "w": write, "iat": issued, "exp": expires}
    if subject is not None:
        claims["sub"] = subject
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    claims_part = _b64encode(payload)
    return f"{_VERSION}.{claims_part}.{_sign(secret, claims_part)}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise TokenError(f"token claims repeat the key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise TokenError(f"token claims contain {name}")


def _is_int(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_TIME


def _parse_claims(payload: bytes) -> TokenClaims:
    try:
        text = payload.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except TokenError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenError("token claims are not valid JSON") from None
    if not isinstance(data, dict):
        raise TokenError("token claims are not a JSON object")
    missing = _REQUIRED - data.keys()
    if missing:
        raise TokenError(f"token claims lack {', '.join(sorted(missing))}")
    unknown = data.keys() - _KNOWN
    if unknown:
        # Keys are shown escaped and truncated: they come from whoever holds the secret,
        # but are still not ours to print verbatim.
        shown = ", ".join(repr(k[:20]) for k in sorted(unknown)[:5])
        raise TokenError(f"token claims have unknown keys: {shown}")
    room, write, issued, expires = data["r"], data["w"], data["iat"], data["exp"]
    subject = data.get("sub")
    if not isinstance(room, str):
        raise TokenError("token claim 'r' is not a string")
    try:
        validate_pattern(room)
    except InvalidRoomError as exc:
        raise TokenError(f"token claim 'r' is not a valid room pattern: {exc}") from None
    if type(write) is not bool:
        raise TokenError("token claim 'w' is not a boolean")
    if not _is_int(issued):
        raise TokenError("token claim 'iat' is not a whole number of seconds")
    if not _is_int(expires):
        raise TokenError("token claim 'exp' is not a whole number of seconds")
    if expires <= issued:
        raise TokenError("token expires before it was issued")
    if "sub" in data and (not isinstance(subject, str) or not _check_subject(subject)):
        raise TokenError(f"token claim 'sub' is not 1 to {MAX_SUBJECT_LENGTH} printable characters")
    return TokenClaims(room=room, write=write, issued=issued, expires=expires, subject=subject)


def verify_token(
    secret: bytes, token: str, *, now: float | None = None, leeway: float = 30.0
) -> TokenClaims:
    """Check a token's signature and claims.

    Args:
        secret: the relay's shared secret (at least :data:`MIN_SECRET_BYTES` bytes).
        token: the token as received.
        now: the current time (seconds since the epoch); ``time.time()`` if None.
        leeway: seconds of clock difference tolerated between the minting machine
            and this one, both for ``exp`` (the token is accepted until
            ``exp + leeway``) and for ``iat`` (refused when later than
            ``now + leeway``).

    Returns:
        The verified claims.

    Raises:
        TokenExpiredError: the signature verifies but the token has expired.
        TokenError: anything else is wrong with the token (shape, size, encoding,
            signature, claim types, issued in the future).
        InvalidOperationError: the secret itself is too short, or ``now`` or
            ``leeway`` is not finite (setup errors, not the token's fault).
    """
    check_secret(secret)
    moment = time.time() if now is None else now
    if not (math.isfinite(moment) and math.isfinite(leeway)):
        # NaN would make every time comparison below false, i.e. accept the token.
        raise InvalidOperationError("now and leeway must be finite")
    if not isinstance(token, str):
        raise TokenError("token is not a string")
    if not token:
        raise TokenError("token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token does not have the form v1.<claims>.<signature>")
    version, claims_part, signature = parts
    if version != _VERSION:
        raise TokenError("token version is not v1")
    # Decoding checks the alphabet of both parts before the MAC, so the signed
    # string is always plain ASCII.
    payload = _b64decode(claims_part, "claims")
    _b64decode(signature, "signature")
    # Compare the canonical encodings: base64 can spell one 32-byte MAC in several
    # ways (the last character's unused low bits), and only one spelling is valid.
    if not hmac.compare_digest(_sign(secret, claims_part), signature):
        raise TokenError("token signature does not verify")
    claims = _parse_claims(payload)
    if moment >= claims.expires + leeway:
        raise TokenExpiredError("token has expired")
    if claims.issued > moment + leeway:
        raise TokenError("token is issued in the future")
    return claims


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a secret file (as written by ``crdtsync secret``).

    The file's bytes, without trailing whitespace and newlines, are the secret; they
    are used as they are, not hex-decoded.

    Args:
        path: the file.

    Returns:
        The secret.

    Raises:
        OSError: the file cannot be read.
        InvalidOperationError: the secret is shorter than :data:`MIN_SECRET_BYTES`
            bytes (an empty file included), or the file is larger than 4 KiB
            (probably not a secret file).
    """
    with open(path, "rb") as f:
        data = f.read(_MAX_SECRET_FILE + 1)
    if len(data) > _MAX_SECRET_FILE:
        raise InvalidOperationError(f"secret file {os.fspath(path)!r} is larger than 4 KiB")
    secret = data.rstrip()
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidOperationError(
            f"secret file {os.fspath(path)!r} holds fewer than {MIN_SECRET_BYTES} bytes"
        )
    return secret


def generate_secret() -> bytes:
    """A new random secret: 32 random bytes, hex-encoded (64 printable bytes).

    Returns:
        The secret, ASCII hex digits.
    """
    return secrets.token_hex(32).encode("ascii")
