"""YProvider's tokens and refusals, against a real relay on 127.0.0.1 (issue 14).

The relay refuses a y-websocket client with a "permission denied" message, then a
close code (4401 a bad or expired token, 4403 another room, 4400 a bad room
name): the provider reports the exact class, stops, and says why from
``wait_synced``. A token provider is asked before every connection, and once
more at once when the relay refuses its token as expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import QUICK, WAIT, YClient, room_state, running_relay
from helpers.waiting import eventually

from crdtsync import (
    Doc,
    InvalidRoomError,
    ReadOnlyError,
    RoomNotAllowedError,
    Status,
    SyncResult,
    TokenError,
    TokenExpiredError,
    YProvider,
)
from crdtsync.relay import mint_token

SECRET = b"yprovider-auth-secret-0123456789abcdef"


def token(room: str = "notes", *, write: bool = True, **kw: Any) -> str:
    kw.setdefault("ttl", 600)
    return mint_token(SECRET, room, write=write, **kw)


def expired(room: str = "notes") -> str:
    return token(room, now=time.time() - 7200, ttl=60)


def collect(provider: YProvider) -> list[Status]:
    seen: list[Status] = []
    provider.on_status(seen.append)
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("room", "tok", "cls"),
    [
        ("notes", "v1.bm90LWEtdG9rZW4.c2lnbmVkLWJ5LW5vYm9keQ", TokenError),
        ("notes", None, TokenError),
        ("notes", "expired", TokenExpiredError),
        ("notes", "other", RoomNotAllowedError),
        ("a b", "star", InvalidRoomError),
    ],
)
async def test_refusals_have_their_exact_class_and_wait_synced_says_so(
    tmp_path: Path, room: str, tok: str | None, cls: type[Exception]
) -> None:
    given = {"expired": expired(), "other": token("other"), "star": token("*")}.get(tok or "", tok)
    async with running_relay(tmp_path, secret=SECRET) as relay:
        provider = YProvider(Doc(), relay.url, room, token=given, backoff=QUICK)
        seen = collect(provider)
        async with provider:
            result = await asyncio.wait_for(provider.wait_synced(), WAIT)  # at once
            assert isinstance(result, SyncResult)
            assert not result
            assert type(result.error) is cls
            assert type(provider.error) is cls
            assert "refused" in result.reason
        stopped = [s for s in seen if s.kind == "stopped"]
        assert [type(s.error) for s in stopped] == [cls]
        for status in seen:
            assert given is None or given not in status.reason


@pytest.mark.anyio
async def test_a_token_provider_is_asked_again_after_an_expiry_and_at_every_connection(
    tmp_path: Path,
) -> None:
    plan = ["expired", "valid"]  # then valid
    calls: list[str] = []

    async def fresh() -> str:
        which = plan.pop(0) if plan else "valid"
        calls.append(which)
        return token() if which == "valid" else expired()

    doc = Doc()
    doc.text("body").insert(0, "a")
    async with running_relay(tmp_path, secret=SECRET) as relay:
        port = relay.port
        provider = YProvider(doc, relay.url, "notes", token=fresh, backoff=QUICK)
        seen = collect(provider)
        await provider.start()
        try:
            assert await provider.wait_synced(timeout=WAIT)
            assert calls == ["expired", "valid"]
            assert "token=" in provider.url
            await relay.close()  # every client reconnects
            doc.text("body").insert(1, "b")
            async with running_relay(tmp_path, secret=SECRET, port=port) as again:
                before = len(calls)
                watcher = await YClient.open(again.url, "notes", token=token())
                await watcher.sync()
                await watcher.pump_until(lambda: watcher.text() == "ab")
                await watcher.aclose()
                assert len(calls) > before  # asked again for the new connection
                assert (await room_state(again, "notes")) == {"body": "ab"}
        finally:
            await provider.close()
    refused = [type(s.error) for s in seen if s.kind == "error"]
    assert refused == [TokenExpiredError]
    assert not [s for s in seen if s.kind == "stopped"]


@pytest.mark.anyio
async def test_a_provider_whose_fresh_token_is_expired_too_stops(tmp_path: Path) -> None:
    calls = 0

    def stale() -> str:
        nonlocal calls
        calls += 1
        return expired()

    async with (
        running_relay(tmp_path, secret=SECRET) as relay,
        YProvider(Doc(), relay.url, "notes", token=stale, backoff=QUICK) as provider,
    ):
        result = await asyncio.wait_for(provider.wait_synced(), WAIT)
        assert type(result.error) is TokenExpiredError
        assert calls == 2


@pytest.mark.anyio
async def test_a_refused_write_is_a_read_only_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="crdtsync.peer.yprovider")
    doc = Doc()
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await relay.peer.open("notes")  # a reader creates no room (issue 18, item 9)
        async with YProvider(
            doc, relay.url, "notes", token=token(write=False), backoff=QUICK
        ) as provider:
            seen = collect(provider)
            assert await provider.wait_synced(timeout=WAIT)
            doc.text("body").insert(0, "nope")
            doc.text("body").insert(0, "nope")
            await eventually(
                lambda: len([s for s in seen if s.kind == "error"]) >= 2, WAIT, "both refusals"
            )
            errors = [s for s in seen if s.kind == "error"]
            assert all(type(s.error) is ReadOnlyError for s in errors)
            assert provider.synced  # a refused write keeps the connection
            assert provider.error is None
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("connected to ws://127.0.0.1:") for line in lines), lines
    assert len([line for line in lines if "refused a write" in line]) == 1  # once, not per key
