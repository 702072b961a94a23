"""Hooks of an embedded relay: authenticate, loaded, changed (debounced), stored; failures."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import YClient, errors, running_relay, ws_peer, y_refusal
from hypothesis import given
from hypothesis import strategies as st

from crdtsync import AuthError, Doc
from crdtsync.relay.hooks import AuthRequest, Debouncer, RelayHooks


async def wait_for(event: asyncio.Event, timeout: float = 10.0) -> None:
    await asyncio.wait_for(event.wait(), timeout)


@pytest.mark.anyio
async def test_authenticate_admits_or_refuses_both_protocols(tmp_path: Path) -> None:
    asked: list[AuthRequest] = []

    def authenticate(req: AuthRequest) -> bool:
        asked.append(req)
        user = req.auth.get("user") if isinstance(req.auth, dict) else None
        return user == "alice"

    async with running_relay(tmp_path, hooks=RelayHooks(authenticate=authenticate)) as relay:
        # y-protocols: ?user=... reaches the hook (the token never does).
        code, _, _ = await y_refusal(relay.url, "/notes?user=eve")
        assert code == 4401
        yc = await YClient.open(relay.url, "notes?user=alice")
        await yc.sync()
        await yc.aclose()
        # crdtsync: the handshake's auth value.
        async with ws_peer(auth={"user": "bob"}) as bob:
            await bob.open("notes")
            with pytest.raises(AuthError):
                await bob.connect(relay.url, timeout=10)
        async with ws_peer(auth={"user": "alice"}) as alice:
            await alice.open("notes")
            await alice.connect(relay.url, timeout=10)
            assert await alice.wait_synced("notes", timeout=10)
        assert [(r.protocol, r.rooms) for r in asked] == [
            ("y", ("notes",)),
            ("y", ("notes",)),
            ("crdtsync", ("notes",)),
            ("crdtsync", ("notes",)),
        ]
        assert all(r.subject is None and not r.read_only for r in asked)
        assert await errors(relay, "auth") == 2


@pytest.mark.anyio
async def test_loaded_changed_and_stored_report_stored_updates(tmp_path: Path) -> None:
    loaded: list[str] = []
    changes: list[tuple[str, tuple[bytes, ...]]] = []
    stored: dict[str, int] = {}
    changed = asyncio.Event()

    def on_changed(room: str, updates: tuple[bytes, ...]) -> None:
        changes.append((room, updates))
        changed.set()

    def on_stored(room: str, count: int) -> None:
        stored[room] = stored.get(room, 0) + count

    hooks = RelayHooks(
        loaded=loaded.append, changed=on_changed, stored=on_stored, debounce=0.05, max_wait=1.0
    )
    async with running_relay(tmp_path, hooks=hooks) as relay:
        yc = await YClient.open(relay.url, "notes")
        await yc.sync()
        assert loaded == ["notes"]
        for word in ("one ", "two ", "three"):
            await yc.edit(lambda d, word=word: d.text("body").insert(len(d.text("body")), word))
        replica = Doc()
        while str(replica.text("body")) != "one two three":
            await wait_for(changed)
            changed.clear()
            for room, updates in changes:
                assert room == "notes"
                for update in updates:
                    replica.import_yjs_update(update)
            changes.clear()
        assert stored == {"notes": 3}
        await yc.aclose()


@pytest.mark.anyio
async def test_a_failing_hook_is_logged_and_the_relay_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failed_async = asyncio.Event()

    def boom(*_: Any) -> None:
        raise RuntimeError("hook bug")

    async def boom_later(*_: Any) -> None:
        failed_async.set()
        raise RuntimeError("async hook bug")

    def broken_auth(_: AuthRequest) -> bool:
        raise RuntimeError("auth hook bug")

    hooks = RelayHooks(loaded=boom, changed=boom_later, stored=boom, debounce=0.01)
    with caplog.at_level(logging.ERROR, logger="crdtsync.relay.hooks"):
        async with running_relay(tmp_path, hooks=hooks) as relay:
            a = await YClient.open(relay.url, "r")
            await a.sync()
            b = await YClient.open(relay.url, "r")
            await b.sync()
            await a.edit(lambda d: d.text("body").insert(0, "still served"))
            await b.pump_until(lambda: b.text() == "still served")
            await wait_for(failed_async)
            for c in (a, b):
                await c.aclose()
            assert await errors(relay, "hook") >= 3
        messages = [r.getMessage() for r in caplog.records]
        assert "the loaded hook failed" in messages
        assert "the stored hook failed" in messages
    # authenticate fails closed.
    async with running_relay(tmp_path, hooks=RelayHooks(authenticate=broken_auth)) as relay:
        code, _, _ = await y_refusal(relay.url, "/r")
        assert code == 4401
        assert await errors(relay, "hook") == 1


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 5, allow_nan=False)),
        max_size=40,
    )
)
def test_the_debouncer_reports_every_update_once_and_never_late(
    events: list[tuple[str, float]],
) -> None:
    deb = Debouncer(debounce=1.0, max_wait=3.0)
    now = 0.0
    reported: list[bytes] = []
    sent: list[bytes] = []
    first: dict[str, float] = {}
    for i, (room, gap) in enumerate(events):
        # Fire every timer that falls due before the next update.
        while (when := deb.get_timer()) is not None and when <= now + gap:
            for r, updates in deb.due(when):
                assert when <= first.pop(r) + 3.0 + 1e-9  # never past max_wait
                reported += updates
        now += gap
        update = f"{room}{i}".encode()
        first.setdefault(room, now)
        deb.add(room, update, now)
        sent.append(update)
    for _, updates in deb.due(float("inf")):
        reported += updates
    assert sorted(reported) == sorted(sent)
    assert deb.get_timer() is None
