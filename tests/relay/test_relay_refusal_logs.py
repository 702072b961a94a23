"""The relay logs every refusal, on both protocols: who, which room, why; never the token.

Issue 14: a y-websocket client refused with 4401 or 4403 left no trace in the
relay's log, while the same refusal over the crdtsync protocol was logged. The
log here is the relay's real output: the JSON lines ``crdtsync relay`` writes
(``JsonFormatter`` on the ``crdtsync`` logger), captured at DEBUG.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import WAIT, YClient, errors, running_relay, ws_peer, y_refusal
from helpers.waiting import eventually

from crdtsync import AuthError, InvalidRoomError, ReadOnlyError
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import mint_token
from crdtsync.relay.logs import JsonFormatter

SECRET = b"relay-log-test-secret-0123456789abcdef"


def token(room: str = "notes", *, write: bool = True, **kw: Any) -> str:
    kw.setdefault("ttl", 600)
    return mint_token(SECRET, room, write=write, **kw)


@pytest.fixture
def relay_log() -> Iterator[io.StringIO]:
    """The JSON lines of the whole ``crdtsync`` hierarchy, at DEBUG."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("crdtsync")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def refusals(out: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "refused"]


def find(out: io.StringIO, **fields: Any) -> dict[str, Any]:
    for line in refusals(out):
        if all(line.get(k) == v for k, v in fields.items()):
            return line
    raise AssertionError(f"no refusal with {fields} in:\n{out.getvalue()}")


@pytest.mark.anyio
async def test_every_refusal_is_logged_on_both_protocols_without_the_token(
    tmp_path: Path, relay_log: io.StringIO
) -> None:
    bad = "v1.bm90LWEtdG9rZW4.c2VjcmV0LXNpZ25hdHVyZQ"  # well-formed, signed by nobody
    stale = token(now=time.time() - 7200, ttl=60)
    other = token("other")
    reader = token(write=False)
    star = token("*")
    used = [bad, stale, other, reader, star]
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await relay.peer.open("notes")  # a reader creates no room (issue 18, item 9)
        # -- y-protocols: 4401 (bad, expired), 4403 (another room), 4400 (bad name).
        code, _, _ = await y_refusal(relay.url, f"/notes?token={bad}")
        assert code == 4401
        line = find(relay_log, protocol="y", error="TokenError")
        assert line["room"] == "notes"
        assert line["reason"] == "token signature does not verify"
        assert line["remote"].startswith("127.0.0.1:")
        code, _, _ = await y_refusal(relay.url, f"/notes?token={stale}")
        assert code == 4401
        find(relay_log, protocol="y", error="TokenExpiredError", room="notes")
        code, _, _ = await y_refusal(relay.url, f"/notes?token={other}")
        assert code == 4403
        find(relay_log, protocol="y", error="RoomNotAllowedError", room="notes")
        code, _, _ = await y_refusal(relay.url, f"/a%20b?token={other}")
        assert code == 4400
        assert find(relay_log, protocol="y", error="InvalidRoomError")["room"] == "/a%20b"
        # A read-only y client's write: logged once, however often it types.
        yc = await YClient.open(relay.url, "notes", token=reader)
        await yc.sync()
        for key in "ab":
            await yc.edit(lambda d, k=key: d.text("body").insert(0, k))  # type: ignore[misc]
            await yc.pump_until(lambda: isinstance(yc.received[-1], y.AuthDenied))
        await yc.aclose()
        written = [r for r in refusals(relay_log) if r["error"] == "ReadOnlyError"]
        assert [(r["protocol"], r["room"]) for r in written] == [("y", "notes")]

        # -- crdtsync: the whole session (bad, expired), a room, a read-only write.
        for tok, cls in ((bad, "TokenError"), (stale, "TokenExpiredError")):
            async with ws_peer() as peer:
                await peer.open("notes")
                with pytest.raises(AuthError):
                    await peer.connect(relay.url, token=tok)
            line = find(relay_log, protocol="crdtsync", error=cls)
            assert line["rooms"] == ["notes"]
            assert line["remote"].startswith("127.0.0.1:")
        async with ws_peer() as peer:
            await peer.open("notes")
            with pytest.raises(AuthError):
                await peer.connect(relay.url, token=other)
        line = find(relay_log, protocol="crdtsync", error="RoomNotAllowedError", room="notes")
        assert line["reason"] == "the token does not allow room 'notes'"
        async with ws_peer() as peer:
            (await peer.open("a b")).text("body").insert(0, "x")
            with pytest.raises(InvalidRoomError):
                await peer.connect(relay.url, token=star)
        find(relay_log, protocol="crdtsync", error="InvalidRoomError", room="a b")
        async with ws_peer() as peer:
            (await peer.open("notes")).text("body").insert(0, "nope")
            await peer.connect(relay.url, token=reader)
            result = await asyncio.wait_for(peer.wait_synced("notes"), WAIT)
            assert isinstance(result.error, ReadOnlyError)
        await eventually(
            lambda: any(
                r["protocol"] == "crdtsync" and r["error"] == "ReadOnlyError"
                for r in refusals(relay_log)
            ),
            WAIT,
            "the read-only refusal to be logged",
        )
    text = relay_log.getvalue()
    for tok in used:
        for part in tok.split(".")[1:]:  # neither the claims nor the signature
            assert part not in text, "a token reached the log"
    # Each refusal is one line, not a "refused" and a "session error" for the same thing.
    assert '"session error"' not in text


@pytest.mark.anyio
async def test_room_refusals_of_one_connection_are_logged_up_to_a_bound(
    tmp_path: Path, relay_log: io.StringIO
) -> None:
    """One HELLO may name a thousand rooms: the first 16 refusals are logged, all counted."""
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        for i in range(40):
            await peer.open(f"room-{i}")
        with pytest.raises(AuthError):
            await peer.connect(relay.url, token=token("notes"))
        assert await errors(relay, "room_not_allowed") == 40
    lines = [r for r in refusals(relay_log) if r["error"] == "RoomNotAllowedError"]
    assert len(lines) == 16
    assert len({line["remote"] for line in lines}) == 1
    assert "further room refusals of this connection are not logged" in relay_log.getvalue()
