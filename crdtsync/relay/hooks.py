"""Extension points of an embedded relay: :class:`RelayHooks`.

What an application running a :class:`~crdtsync.relay.server.Relay` in its own
process may plug in (as Hocuspocus' hooks do)::

    hooks = RelayHooks(
        authenticate=lambda req: users.may_enter(req.auth, req.rooms),
        loaded=lambda room: log.info("room %s loaded", room),
        changed=lambda room, updates: search_index.update(room, updates),
        stored=lambda room, n: metrics.stored(room, n),
    )
    relay = Relay(config, hooks=hooks)

* ``authenticate(request) -> bool`` runs on every connection, after the token
  check (both protocols): False refuses it as an authentication failure (a
  crdtsync ``AUTH_FAILED``, a y-protocols 4401).
* ``loaded(room)``: a room was loaded into memory (from the store, or new).
* ``changed(room, updates)``: the room changed; debounced per room (``debounce``
  seconds after the last change, at most ``max_wait`` after the first), with
  every Yjs v1 update of that time in order. Only stored updates are reported.
* ``stored(room, count)``: ``count`` updates of the room were stored durably.

Hooks are called on the event loop; one that returns an awaitable runs as a
task (except ``authenticate``, which must answer at once: an awaitable is not
True, so it refuses). A hook that raises (or whose task fails) is logged and counted in
``/metrics`` (``errors_total{kind="hook"}``) and changes nothing else: the
relay keeps serving. ``authenticate`` fails closed: an exception refuses the
connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuthRequest", "Debouncer", "RelayHooks"]

log = logging.getLogger("crdtsync.relay.hooks")


@dataclass(frozen=True)
class AuthRequest:
    """What ``authenticate`` is asked about.

    Attributes:
        protocol: ``"crdtsync"`` or ``"y"``.
        address: the client's address.
        rooms: the rooms it asks for now (a crdtsync handshake may name several;
            rooms a session opens later pass the token check only).
        subject: the token's subject (None: no token, or none in it).
        read_only: the token grants reading only.
        auth: the handshake's ``auth`` value (crdtsync), or the query string's
            parameters (y-protocols, without ``token``).
    """

    protocol: str
    address: str
    rooms: tuple[str, ...]
    subject: str | None
    read_only: bool
    auth: Any


@dataclass(frozen=True)
class RelayHooks:
    """The hooks (see the module docs); each None when unused.

    Attributes:
        authenticate: admits a connection (True) or refuses it.
        loaded: a room was loaded.
        changed: a room changed: its stored updates since the last call (debounced).
        stored: updates of a room were stored.
        debounce: seconds of quiet before ``changed`` is called.
        max_wait: seconds after the first change by which ``changed`` is called
            however busy the room.
    """

    authenticate: Callable[[AuthRequest], Any] | None = None
    loaded: Callable[[str], Any] | None = None
    changed: Callable[[str, tuple[bytes, ...]], Any] | None = None
    stored: Callable[[str, int], Any] | None = None
    debounce: float = 2.0
    max_wait: float = 10.0


@dataclass
class _Pending:
    first: float
    last: float
    updates: list[bytes] = field(default_factory=list)


class Debouncer:
    """Sans-I/O: which rooms' collected updates are due, on a clock the caller passes.

    Args:
        debounce: quiet time before a room is due.
        max_wait: a room is due this long after its first update at the latest.
    """

    def __init__(self, debounce: float, max_wait: float) -> None:
        self.debounce = debounce
        self.max_wait = max(max_wait, debounce)
        self._rooms: dict[str, _Pending] = {}

    def add(self, room: str, update: bytes, now: float) -> None:
        """An update of ``room`` at ``now``."""
        pending = self._rooms.get(room)
        if pending is None:
            pending = self._rooms[room] = _Pending(now, now)
        pending.last = now
        pending.updates.append(update)

    def get_timer(self) -> float | None:
        """When the next room is due (None: nothing pending)."""
        return min(
            (min(p.last + self.debounce, p.first + self.max_wait) for p in self._rooms.values()),
            default=None,
        )

    def due(self, now: float) -> list[tuple[str, tuple[bytes, ...]]]:
        """The rooms due at ``now`` with their updates (forgotten here)."""
        out = []
        for room, p in list(self._rooms.items()):
            if now >= min(p.last + self.debounce, p.first + self.max_wait):
                out.append((room, tuple(p.updates)))
                del self._rooms[room]
        return out


class HookRunner:
    """Calls the hooks safely; watches a backend for ``changed`` and ``stored``.

    Args:
        hooks: the hooks.
        commit: the backend's commit (stored updates only are reported).
        failed: told of each failing hook (for metrics).
    """

    def __init__(
        self, hooks: RelayHooks, commit: Callable[[], None], failed: Callable[[str], None]
    ) -> None:
        self.hooks = hooks
        self._commit = commit
        self._failed = failed
        self._debouncer = Debouncer(hooks.debounce, hooks.max_wait)
        self._unstored: list[tuple[str, bytes]] = []
        self._commit_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def call(self, name: str, hook: Callable[..., Any] | None, *args: Any) -> Any:
        """Call ``hook(*args)``; log and count a failure; run an awaitable result as a task."""
        if hook is None:
            return None
        try:
            result = hook(*args)
        except Exception:
            self._failed(name)
            log.exception("the %s hook failed", name)
            return None
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(name, t))
            return None
        return result

    def _task_done(self, name: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failed(name)
            log.error("the %s hook failed", name, exc_info=exc)

    # -- DocWatcher ----------------------------------------------------------------------

    def updated(self, name: str, update: bytes, origin: object) -> None:
        """A transaction of room ``name``: reported once stored."""
        if self.hooks.changed is None and self.hooks.stored is None:
            return
        self._unstored.append((name, update))
        if self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_soon(self._stored)

    def presence(self, name: str, data: bytes, origin: object) -> None:
        """Presence is not reported to hooks."""

    def _stored(self) -> None:
        self._commit_handle = None
        batch, self._unstored = self._unstored, []
        try:
            self._commit()  # a no-op when the relay committed them already
        except Exception:
            # Not stored: not reported (the clients resend them when they reconnect).
            log.warning("updates not stored: not reported to the hooks")
            return
        loop = asyncio.get_running_loop()
        counts: dict[str, int] = {}
        for name, update in batch:
            counts[name] = counts.get(name, 0) + 1
            if self.hooks.changed is not None:
                self._debouncer.add(name, update, loop.time())
        for name, count in counts.items():
            self.call("stored", self.hooks.stored, name, count)
        self._arm()

    def _arm(self) -> None:
        when = self._debouncer.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        for name, updates in self._debouncer.due(asyncio.get_running_loop().time()):
            self.call("changed", self.hooks.changed, name, updates)
        self._arm()

    def flush(self) -> None:
        """Report every pending change now (the relay is closing)."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._stored()
        for name, updates in self._debouncer.due(float("inf")):
            self.call("changed", self.hooks.changed, name, updates)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
