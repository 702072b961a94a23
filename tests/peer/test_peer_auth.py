"""A Peer's life with access tokens and refusals, against a real relay on 127.0.0.1.

What issue 14 asked for, one test per point: tokens that expire while a Peer
lives (a relay restart after the TTL), token providers, ``connect`` with a new
token, refusals raised or reported with their exact class, ``wait_synced``
saying why, ``connect(wait=False)``, addresses that can never work, and the
``crdtsync.peer`` logger. Token expiry never sleeps a real TTL: tokens are minted
in the past, or valid for a few seconds with waits on events.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import WAIT, room_state, running_relay, ws_peer
from helpers.waiting import eventually, started

from crdtsync import (
    AuthError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CrdtSyncError,
    Doc,
    InvalidAuthError,
    InvalidRoomError,
    Peer,
    ReadOnlyError,
    RoomNotAllowedError,
    Status,
    SyncResult,
    TokenError,
    TokenExpiredError,
    TransportError,
    UnsupportedAddressError,
    YProvider,
)
from crdtsync.relay import mint_token, verify_token

SECRET = b"peer-auth-test-secret-0123456789abcdef"


def token(room: str = "notes", *, write: bool = True, **kw: Any) -> str:
    kw.setdefault("ttl", 600)
    return mint_token(SECRET, room, write=write, **kw)


def expired(room: str = "notes") -> str:
    """A token that expired an hour ago (the relay allows 30 s of clock skew)."""
    return token(room, now=time.time() - 7200, ttl=60)


def expiring(seconds: float) -> str:
    """A token the relay accepts for about ``seconds`` more (its 30 s leeway included)."""
    return token(ttl=1, now=time.time() - 31 + seconds)


class Statuses:
    """Every status of a Peer, and a wait for the first matching one (bounded)."""

    def __init__(self, peer: Peer) -> None:
        self.seen: list[Status] = []
        self._changed = asyncio.Event()
        peer.on_status(self._on_status)

    def _on_status(self, status: Status) -> None:
        self.seen.append(status)
        self._changed.set()

    async def wait(self, predicate: Callable[[Status], bool], what: str) -> Status:
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for status in self.seen:
                        if predicate(status):
                            return status
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            kinds = [(s.kind, s.reason) for s in self.seen]
            raise AssertionError(f"timed out waiting for {what}; statuses: {kinds}") from None

    def refusals(self) -> list[Status]:
        return [s for s in self.seen if s.kind == "error" and isinstance(s.error, AuthError)]


async def bounded(aw: Awaitable[SyncResult]) -> SyncResult:
    """An await that must end by itself (a hang is a failure, not a pass)."""
    return await asyncio.wait_for(aw, WAIT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- auth over a long life -------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_token_expired_at_a_reconnect_is_reported_exactly_and_not_retried(
    tmp_path: Path,
) -> None:
    """Issue 14: after a relay restart past the TTL the Peer retried every ~5 s forever,
    with a plain AuthError. Now it stops at the first refusal and says TokenExpiredError."""
    short = expiring(4.0)
    async with ws_peer() as peer:
        statuses = Statuses(peer)
        doc = await peer.open("notes")
        doc.text("body").insert(0, "a")
        async with running_relay(tmp_path, secret=SECRET) as relay:
            port, url = relay.port, relay.url
            await peer.connect(url, token=short)
            assert await peer.wait_synced("notes", WAIT)

        def is_expired() -> bool:
            try:
                verify_token(SECRET, short)
            except TokenExpiredError:
                return True
            return False

        await eventually(is_expired, WAIT, "the token to expire while the relay is down")
        async with running_relay(tmp_path, secret=SECRET, port=port) as relay:
            stopped = await statuses.wait(lambda s: s.kind == "stopped", "the Peer to give up")
            assert type(stopped.error) is TokenExpiredError
            assert stopped.address == url
            result = await bounded(peer.wait_synced("notes"))
            assert not result
            assert type(result.error) is TokenExpiredError
            assert "expired" in result.reason
            assert peer.connections() == []
            # connect() again, with a fresh token, starts over.
            await peer.connect(url, token=token())
            assert await peer.wait_synced("notes", WAIT)
            assert (await room_state(relay, "notes")) == {"body": "a"}
        # One refusal, and no retry after it (a retry would have been refused again).
        assert [type(s.error) for s in statuses.refusals()] == [TokenExpiredError]


@pytest.mark.anyio
async def test_connect_with_another_token_replaces_it(tmp_path: Path) -> None:
    """Issue 14: ``connect(url, token=new)`` on a connected address was ignored, even
    ``token="garbage"``. Now the connection is made again with the new token at once."""
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        await relay.peer.open("notes")  # a reader creates no room (issue 18, item 9)
        statuses = Statuses(peer)
        doc = await peer.open("notes")
        await peer.connect(relay.url, token=token(write=False))
        assert await peer.wait_synced("notes", WAIT)
        doc.text("body").insert(0, "hello")  # refused: the token is read-only
        refused = await bounded(peer.wait_synced("notes"))
        assert type(refused.error) is ReadOnlyError
        assert (await room_state(relay, "notes")) == {}

        await peer.connect(relay.url, token=token(write=True))
        assert await peer.wait_synced("notes", WAIT)
        assert (await room_state(relay, "notes")) == {"body": "hello"}

        with pytest.raises(TokenError) as info:
            await peer.connect(relay.url, token="garbage")
        assert type(info.value) is TokenError
        stopped = await statuses.wait(lambda s: s.kind == "stopped", "the Peer to give up")
        assert stopped.error is info.value
        assert peer.connections() == []
        result = await bounded(peer.wait_synced("notes"))
        assert type(result.error) is TokenError


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["function", "async function"])
async def test_a_token_provider_is_asked_at_every_connection_and_again_after_an_expiry(
    tmp_path: Path, kind: str
) -> None:
    plan = ["expired", "valid"]  # then valid at every later connection
    handed: list[str] = []

    def next_token() -> str:
        which = plan.pop(0) if plan else "valid"
        handed.append(which)
        return token() if which == "valid" else expired()

    async def next_token_async() -> str:
        await asyncio.sleep(0)  # (noqa: sleep) a real await (an auth call)
        return next_token()

    provider = next_token if kind == "function" else next_token_async
    async with ws_peer() as peer:
        statuses = Statuses(peer)
        doc = await peer.open("notes")
        doc.text("body").insert(0, "a")
        async with running_relay(tmp_path, secret=SECRET) as relay:
            port = relay.port
            # The first token is refused as expired: the provider is asked again at once.
            await peer.connect(relay.url, token=provider)
            assert handed == ["expired", "valid"]
            assert await peer.wait_synced("notes", WAIT)
        doc.text("body").insert(1, "b")  # offline
        plan[:] = ["expired", "valid"]
        async with running_relay(tmp_path, secret=SECRET, port=port) as relay:
            assert await peer.wait_synced("notes", WAIT)
            # Asked at every connection (not while the relay was unreachable).
            assert handed == ["expired", "valid", "expired", "valid"]
            assert (await room_state(relay, "notes")) == {"body": "ab"}
        assert [type(s.error) for s in statuses.refusals()] == [TokenExpiredError] * 2
        assert not [s for s in statuses.seen if s.kind == "stopped"]


@pytest.mark.anyio
async def test_a_provider_whose_fresh_token_is_expired_too_is_given_up(tmp_path: Path) -> None:
    calls = 0

    def stale() -> str:
        nonlocal calls
        calls += 1
        return expired()

    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        await peer.open("notes")
        with pytest.raises(TokenExpiredError):
            await peer.connect(relay.url, token=stale)
        assert calls == 2  # asked once more after the first expiry, then given up


@pytest.mark.anyio
async def test_a_failing_token_provider_is_reported_and_retried(tmp_path: Path) -> None:
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the auth service is down")
        return token()

    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        statuses = Statuses(peer)
        await peer.open("notes")
        await peer.connect(relay.url, token=flaky)
        assert await peer.wait_synced("notes", WAIT)
        [failure] = [s for s in statuses.seen if "token provider failed" in s.reason]
        assert failure.kind == "error"
        assert "the auth service is down" in failure.reason
        assert calls == 2


# -- refusals a user sees --------------------------------------------------------------------


def _refused_tokens() -> dict[str, tuple[str | None, type[AuthError]]]:
    return {
        "none": (None, TokenError),
        "garbage": ("not-a-token", TokenError),
        "wrong secret": (
            mint_token(b"another-secret-0123456789abcdef", "notes", write=True, ttl=600),
            TokenError,
        ),
        "expired": (expired(), TokenExpiredError),
        "another room": (token("other"), RoomNotAllowedError),
    }


@pytest.mark.anyio
async def test_connect_raises_the_exact_refusal(tmp_path: Path) -> None:
    """Issue 14: every refusal came back as a plain AuthError, and a token for another
    room made connect() return normally. Each is raised with its own class now."""
    async with running_relay(tmp_path, secret=SECRET) as relay:
        for case, (tok, cls) in _refused_tokens().items():
            async with ws_peer() as peer:
                statuses = Statuses(peer)
                await peer.open("notes")
                with pytest.raises(AuthError) as info:
                    await peer.connect(relay.url, token=tok)
                assert type(info.value) is cls, case
                assert info.value.from_peer, case
                reported = [s for s in statuses.seen if s.error is info.value]
                assert reported, (case, statuses.seen)


@pytest.mark.anyio
async def test_a_room_refused_later_reaches_status_logs_and_wait_synced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A document opened after connect() is refused without raising: on_status, a
    WARNING of crdtsync.peer, and wait_synced returns at once with the refusal."""
    caplog.set_level(logging.WARNING, logger="crdtsync")
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        statuses = Statuses(peer)
        await peer.open("notes")
        await peer.connect(relay.url, token=token("notes"))
        assert await peer.wait_synced("notes", WAIT)
        await peer.open("other")
        result = await bounded(peer.wait_synced("other"))  # no timeout: must not hang
        assert not result
        assert type(result.error) is RoomNotAllowedError
        assert "'other'" in result.reason
        status = await statuses.wait(lambda s: s.doc == "other", "the refusal's status")
        assert status.kind == "error"
        assert type(status.error) is RoomNotAllowedError
        assert await peer.wait_synced("notes", WAIT)  # the connection serves the rest
    lines = [r.getMessage() for r in caplog.records if r.name == "crdtsync.peer"]
    assert any("'other'" in line and "RoomNotAllowedError" in line for line in lines), lines


@pytest.mark.anyio
async def test_a_refused_write_reaches_wait_synced_at_once(tmp_path: Path) -> None:
    """Issue 14: with a read-only token, wait_synced returned False after its whole
    timeout, the reason only on on_status. It returns ReadOnlyError at once now."""
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        await relay.peer.open("notes")  # a reader creates no room (issue 18, item 9)
        doc = await peer.open("notes")
        doc.text("body").insert(0, "typed offline")
        await peer.connect(relay.url, token=token(write=False))  # the handshake is fine
        result = await bounded(peer.wait_synced("notes"))
        assert isinstance(result, SyncResult)
        assert not result
        assert type(result.error) is ReadOnlyError
        assert "refused 'notes'" in result.reason
        assert (await room_state(relay, "notes")) == {}


@pytest.mark.anyio
async def test_wait_synced_result_is_a_bool_with_a_reason(tmp_path: Path) -> None:
    async with ws_peer() as peer:
        await peer.open("notes")
        await peer.connect(f"ws://127.0.0.1:{free_port()}", wait=False)
        offline = await peer.wait_synced("notes", 0.2)
        assert bool(offline) is False
        assert offline.reason.startswith("not connected to ws://127.0.0.1:")
        assert "last attempt" in offline.reason
        assert isinstance(offline.error, TransportError)
        missing = await peer.wait_synced("never-opened", 0.0)
        assert not missing
        assert "not open" in missing.reason
    async with running_relay(tmp_path) as relay, ws_peer() as peer:
        await peer.open("notes")
        await peer.connect(relay.url)
        synced = await peer.wait_synced("notes", WAIT)
        assert bool(synced) is True
        assert synced == SyncResult(True)


@pytest.mark.anyio
async def test_connect_without_waiting_starts_offline(tmp_path: Path) -> None:
    """Local-first: a Peer may start while the relay is down, without an exception."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    async with ws_peer() as peer:
        doc = await peer.open("notes")
        doc.text("body").insert(0, "offline")
        await peer.connect(url, wait=False)  # returns at once, retrying in the background
        with pytest.raises(ConnectTimeoutError) as info:
            await peer.connect(url, timeout=0.2)  # the documented timeout still raises
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, CrdtSyncError)
        assert "last attempt" in str(info.value)
        async with running_relay(tmp_path, port=port) as relay:
            assert await peer.wait_synced("notes", WAIT)
            assert (await room_state(relay, "notes")) == {"body": "offline"}


@pytest.mark.anyio
async def test_addresses_that_can_never_work_fail_at_once(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        http = relay.url.replace("ws://", "http://")
        for make in (Peer, ws_peer):  # the scheme's transport, and an explicit WebSocketTransport
            async with make() as peer:
                with pytest.raises(ValueError, match=r"http://|ws://") as info:
                    await asyncio.wait_for(peer.connect(http, timeout=WAIT), WAIT)
                assert isinstance(info.value, UnsupportedAddressError)
                # A y-protocols room URL: the path form is for y-websocket clients.
                with pytest.raises(UnsupportedAddressError) as room:
                    await peer.connect(relay.url + "/notes?token=s3cret")
                assert "YProvider" in str(room.value)
                assert "y-websocket" in str(room.value)
                assert "s3cret" not in str(room.value)
                assert peer.connections() == []


@pytest.mark.anyio
async def test_a_bad_room_name_offered_at_connect_raises(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, ws_peer() as peer:
        await peer.open("a b")
        (await peer.open("fine")).text("body").insert(0, "ok")
        with pytest.raises(InvalidRoomError):
            await peer.connect(relay.url)
        assert await peer.wait_synced("fine", WAIT)  # the connection serves the others


@pytest.mark.anyio
async def test_the_peer_logs_connects_handshakes_refusals_and_reconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14: logging.basicConfig(level=DEBUG) showed nothing of a Peer."""
    caplog.set_level(logging.DEBUG, logger="crdtsync")
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    secret_token = token()
    async with ws_peer() as peer:
        await peer.open("notes")
        await peer.connect(url, token=secret_token, wait=False)
        await eventually(
            lambda: any("reconnecting to" in r.getMessage() for r in caplog.records),
            WAIT,
            "a reconnect attempt to be logged",
        )
        async with running_relay(tmp_path, secret=SECRET, port=port):
            assert await peer.wait_synced("notes", WAIT)
            with pytest.raises(TokenExpiredError):
                await peer.connect(url, token=expired())
    records = [r for r in caplog.records if r.name == "crdtsync.peer"]
    text = "\n".join(f"{r.levelname} {r.getMessage()}" for r in records)
    assert f"DEBUG connecting to {url} (attempt 1)" in text
    assert f"DEBUG reconnecting to {url} in " in text
    assert f"INFO connected to {url}" in text
    assert f"WARNING stopped connecting to {url}: TokenExpiredError" in text
    assert secret_token not in text
    for record in caplog.records:  # nowhere in the crdtsync hierarchy
        assert secret_token not in record.getMessage()


@pytest.mark.anyio
async def test_disconnect_and_close_end_a_connect_that_waits_forever() -> None:
    """``connect(timeout=None)`` to an address nobody answers ends when told to stop."""
    url = f"ws://127.0.0.1:{free_port()}"
    async with ws_peer() as peer:
        waiting = await started(peer.connect(url, timeout=None))  # connect() is trying
        await peer.disconnect(url)
        with pytest.raises(ConnectionClosedError, match="disconnect"):
            await asyncio.wait_for(waiting, WAIT)
    peer = ws_peer()
    await peer.start()
    waiting = await started(peer.connect(url, timeout=None))  # connect() is trying
    await peer.close()
    with pytest.raises(ConnectionClosedError, match="closed"):
        await asyncio.wait_for(waiting, WAIT)


@pytest.mark.anyio
async def test_a_token_that_is_neither_a_string_nor_a_function_is_refused_where_given(
    tmp_path: Path,
) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        with pytest.raises(InvalidAuthError):
            await peer.connect(relay.url, token=b"bytes")  # type: ignore[arg-type]
        with pytest.raises(InvalidAuthError):
            YProvider(Doc(), relay.url, "notes", token=42)  # type: ignore[arg-type]
        # A provider that returns something else: reported, and asked again.
        answers: list[object] = [42, token()]
        statuses = Statuses(peer)
        await peer.open("notes")
        await peer.connect(relay.url, token=lambda: answers.pop(0))  # type: ignore[arg-type, return-value]
        assert await peer.wait_synced("notes", WAIT)
        [bad] = [s for s in statuses.seen if "token provider" in s.reason]
        assert isinstance(bad.error, InvalidAuthError)
        assert "returned int instead of a string" in bad.reason
