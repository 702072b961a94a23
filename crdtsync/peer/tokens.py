"""Access tokens on the client side: a string, or a function asked at every connection.

``Peer.connect(url, token=...)`` and ``YProvider(..., token=...)`` take a
:data:`TokenSource`: a token string, or a *token provider*, a function (plain or
``async``) that returns one, as Hocuspocus' provider takes ``token``. A provider
is asked again for every connection (a ``Peer`` asks once the transport is
connected, just before the handshake, so not in vain while offline; a
``YProvider`` before connecting, since the token is part of its URL), so a
long-lived client keeps working across token expiries: when the server refuses
a token as expired, the client asks its provider once more at once, and gives
up (reporting :class:`~crdtsync.errors.TokenExpiredError`) only if the new token
is refused too. A provider that raises is reported (an ``error`` status and a
WARNING log) and asked again at the next attempt, after the backoff.

    async def fresh_token() -> str:            # e.g. ask your auth service
        return await auth_service.token_for("notes")

    await peer.connect("wss://relay.example", token=fresh_token)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from crdtsync.errors import InvalidAuthError

__all__ = ["TokenSource", "check_token_source", "fetch_token"]

#: A token, or a function (plain or async) returning the token to use now.
TokenSource: TypeAlias = str | Callable[[], str | Awaitable[str]]


def check_token_source(token: object) -> None:
    """Check a ``token=`` argument where it is given, not in a reconnect loop.

    Raises:
        InvalidAuthError: it is neither a string nor a callable (also a ValueError).
    """
    if not isinstance(token, str) and not callable(token):
        raise InvalidAuthError(
            f"token must be a string or a function returning one, not {type(token).__name__}"
        )


async def fetch_token(source: TokenSource) -> str:
    """The token to send now: ``source`` itself, or what the provider returns.

    Raises:
        InvalidAuthError: the provider returned something other than a string.
        Exception: whatever the provider raised, unchanged (the caller reports it).
    """
    if isinstance(source, str):
        return source
    value = source()
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str):
        raise InvalidAuthError(
            f"the token provider returned {type(value).__name__} instead of a string"
        )
    return value
