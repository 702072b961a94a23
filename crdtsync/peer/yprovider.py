"""A y-websocket client: keep a :class:`~crdtsync.model.doc.Doc` in sync with one room.

:class:`YProvider` speaks plain y-protocols (:mod:`crdtsync.protocol.yprotocol`) to
any y-websocket server: the node ``@y/websocket-server``, pycrdt-websocket, or
the crdtsync relay's ``/<room>`` endpoint. It behaves like y-websocket's
``WebsocketProvider``, so Yjs clients in the same room see a Python peer as one
of their own::

    doc = Doc()
    async with YProvider(doc, "ws://127.0.0.1:1234", "notes", token=token) as provider:
        await provider.wait_synced(timeout=10)
        doc.text("body").insert(0, "hello from Python")     # sent as it happens
        provider.set_presence({"user": {"name": "py"}})

One connection, message by message::

    provider                                  server
    sync step 1 (doc.version)         ->
    awareness (our state, if any)     ->
                                      <-      sync step 1 (server's state vector)
    sync step 2 (what it lacks)       ->
                                      <-      sync step 2 (what we lack)   => synced
    update (each local transaction)   <->     update (each remote transaction)
    awareness (on change, every 15 s) <->     awareness (everyone's presence)

The exchange of state vectors at every (re)connection is what makes offline
edits arrive: nothing is queued while disconnected, the step 2 carries it all.

The protocol itself is a sans-I/O :class:`~crdtsync.protocol.ysession.YSession`
(the same one the relay's y-protocols endpoint runs, on the server side); this
class is its asyncio shell: it moves messages between the session and a
connection, imports and exports the document, and reconnects.

y-protocols messages carry no length of their own, so the transport must keep
message boundaries: ``transport`` is a ``Transport[MessageConnection]``, and a
transport that does not declare ``Ability.MESSAGES`` is refused at once
(:class:`~crdtsync.errors.UnsupportedTransportError`) instead of breaking on the
first message split in two.

Robustness: every message is decoded strictly with a size limit, updates are
imported through :meth:`Doc.import_yjs_update`, which validates them before the
engine sees them (a refused update leaves the document unchanged), and anything
the server sends that does not decode or validate is reported through
``on_status`` as an ``error``, after which the connection is dropped and made
again with backoff. The provider never raises into the event loop and the
process never dies on the server's bytes. Only a refusal that retrying cannot
fix stops it: close codes 4400 to 4499 (y-websocket's convention; 4400 invalid
room, 4401 bad token, 4403 room not allowed), or a permission-denied message
before the first sync. The refusal is :attr:`YProvider.error`, with its exact
class (``InvalidRoomError``, ``TokenError``, ``TokenExpiredError``,
``RoomNotAllowedError``), an ``error`` then a ``stopped`` status, a WARNING of
the ``crdtsync.peer.yprovider`` logger, and what :meth:`YProvider.wait_synced`
returns at once. A token provider (``token=`` a function, see
:mod:`crdtsync.peer.tokens`) is asked before every connection, and once more at
once when the server refuses a token as expired, before giving up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote, urlencode

from crdtsync.errors import (
    AuthError,
    CrdtSyncError,
    EngineError,
    InvalidRoomError,
    InvalidUpdateError,
    LimitExceededError,
    LocalProtocolError,
    RoomNotAllowedError,
    TokenError,
    TokenExpiredError,
    TransportError,
    UnsupportedTransportError,
)
from crdtsync.model.doc import Doc
from crdtsync.net import (
    Ability,
    CloseCodeConnection,
    FlowConnection,
    MessageConnection,
    Transport,
    has_close_codes,
    has_flow_control,
)
from crdtsync.peer.peer import Backoff, Status, SyncResult
from crdtsync.peer.schemes import websocket_transport
from crdtsync.peer.tokens import TokenSource, check_token_source, fetch_token
from crdtsync.protocol import ysession as ys
from crdtsync.protocol.awareness import Awareness, AwarenessChange

__all__ = ["YProvider"]

log = logging.getLogger("crdtsync.peer.yprovider")

_Kind = Literal["connected", "synced", "disconnected", "error", "stopped"]

#: Characters kept as they are in the room part of the URL: RFC 3986 path
#: characters and "/", so a room reaches y-websocket servers (which take the raw
#: path as the room name) spelled the way y-websocket's own provider sends it.
_ROOM_SAFE = "/:@!$&'()*+,;=-._~"
# Close codes in the 4400-4499 range that other servers use for conditions
# retrying fixes (slow consumer, rate limit); the crdtsync relay uses 4529.
_TRANSIENT_4XX = frozenset({4408, 4429})
# Seconds to wait, after a "permission denied" before the first sync, for the
# server's close code (which says why: 4401 a bad token, 4403 another room).
_DENIAL_GRACE = 2.0


def _said(text: str, limit: int = 300) -> str:
    """Text the server sent (a reason), safe in a log line."""
    text = text[:limit]
    return text if text.isprintable() else repr(text)


def _refusal(code: int | None, reason: str) -> AuthError | InvalidRoomError | None:
    """The error for a close code that means "do not come back", else None."""
    if code is None or not 4400 <= code < 4500 or code in _TRANSIENT_4XX:
        return None
    text = f"the server refused the connection ({code}): {reason}".rstrip(": ")
    if code == 4400:
        return InvalidRoomError(text, from_peer=True)
    if code == 4401:
        if "expired" in reason.lower():
            return TokenExpiredError(text, from_peer=True)
        return TokenError(text, from_peer=True)
    if code == 4403:
        return RoomNotAllowedError(text, from_peer=True)
    return AuthError(text, from_peer=True)


class _Link:
    """One live connection: its session, outbox and writer."""

    def __init__(self, conn: MessageConnection, session: ys.YSession) -> None:
        self.conn = conn
        # The connection again if it declares FLOW (abort) / CLOSE_CODES, else None.
        self.flow: FlowConnection | None = conn if has_flow_control(conn) else None
        self.codes: CloseCodeConnection | None = conn if has_close_codes(conn) else None
        self.session = session
        # Messages waiting for the writer, in order, and their total size.
        self.outbox: deque[bytes] = deque()
        self.queued = 0
        # Set when the outbox has something; set-and-cleared by the writer.
        self.wakeup = asyncio.Event()
        # Set whenever the outbox is empty (close() waits on it to flush).
        self.flushed = asyncio.Event()
        self.flushed.set()
        self.writer: asyncio.Task[None] | None = None
        # Set once the connection is being torn down: nothing more is queued.
        self.ending = False
        # Whether the server's first sync step 2 was applied on this connection.
        self.synced = False
        # Why the connection is being dropped: an error about the server's bytes.
        self.failure: CrdtSyncError | None = None
        # A "permission denied" before the first sync: access refused.
        self.denied: AuthError | None = None
        # Whether a write was refused (read-only access; logged once per connection).
        self.write_refused = False


class YProvider:
    """Keeps ``doc`` in sync with room ``room`` of a y-websocket server.

    Args:
        doc: the document to sync (edits to it are sent as they happen).
        url: the server, e.g. ``ws://127.0.0.1:1234`` (``wss://`` for TLS).
        room: the room (document) name, appended to the URL as its path.
        token: access token, sent as the ``token`` query parameter; or a token
            provider, a function or async function returning one, asked again
            before every connection (:mod:`crdtsync.peer.tokens`).
        params: more query parameters (like y-websocket's ``params``).
        awareness: the presence states to share (default: a new
            :class:`Awareness` under ``doc.peer_id``, which is the document's Yjs
            client id, as y-websocket does). Its times are the event loop's clock.
        backoff: reconnect delays.
        transport: what connects: a transport whose connections keep message
            boundaries (default: ``WebSocketTransport()`` with a message limit
            matching ``max_payload``).
        max_payload: largest update or awareness payload accepted from the
            server; a larger message is a protocol error (the connection is
            dropped and made again).
        max_pending: bytes of outgoing messages allowed to queue up behind
            each other for a slow server; past it the connection is dropped and
            the reconnection's state-vector exchange sends the difference instead.
        seed: seed of the backoff jitter (tests).

    Raises:
        UnsupportedTransportError: ``transport`` does not declare
            ``Ability.MESSAGES`` (also a TypeError).
        InvalidAuthError: ``token`` is neither a string nor a function (a ValueError).
        MissingDependencyError: no transport was given and the ``websockets``
            package is not installed (``pip install 'crdtsync[websocket]'``).
    """

    def __init__(
        self,
        doc: Doc,
        url: str,
        room: str,
        *,
        token: TokenSource | None = None,
        params: dict[str, str] | None = None,
        awareness: Awareness | None = None,
        backoff: Backoff | None = None,
        transport: Transport[MessageConnection] | None = None,
        max_payload: int = 16 << 20,
        max_pending: int = 32 << 20,
        seed: int | None = None,
    ) -> None:
        if transport is None:
            # Room for the message header around a maximal payload.
            transport = websocket_transport(max_message=max_payload + 64)
        elif Ability.MESSAGES not in transport.abilities:
            raise UnsupportedTransportError(
                f"YProvider needs a transport that keeps message boundaries "
                f"(Ability.MESSAGES); {type(transport).__name__} declares {transport.abilities!r}"
            )
        self._transport = transport
        # The synced document.
        self.doc = doc
        # The room name, as given.
        self.room = room
        if token is not None:
            check_token_source(token)
        # The token, or the provider asked for one before every connection.
        self._token = token
        self._params = dict(params or {})
        base = f"{url.rstrip('/')}/{quote(room, safe=_ROOM_SAFE)}"
        # What status events call the server: the room URL without the query (tokens).
        self.address = base
        # The URL connected to, query included (like WebsocketProvider.url); with a
        # token provider, the last one connected to.
        self.url = self._url(token if isinstance(token, str) else None)
        self._awareness = awareness if awareness is not None else Awareness(doc.peer_id)
        self._backoff = backoff or Backoff()
        self._options = ys.YSessionOptions(max_payload=max_payload)
        self._max_pending = max_pending
        self._rng = random.Random(seed)
        # The current connection, while there is one.
        self._link: _Link | None = None
        # The error that made us stop reconnecting (a refusal), if any.
        self._error: CrdtSyncError | None = None
        # Why the last connection attempt failed or ended (wait_synced's reason).
        self._last_error: CrdtSyncError | None = None
        self._last_reason = ""
        self._status_cbs: list[Callable[[Status], None]] = []
        self._presence_cbs: list[Callable[[AwarenessChange], None]] = []
        # Replaced on every state change; waiters wait on the current one.
        self._changed = asyncio.Event()
        # Set by close(): ends the backoff sleep at once.
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Fire-and-forget closes, referenced until done.
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> YProvider:
        """Start connecting (in the background; see :meth:`wait_synced`). Idempotent.

        Raises:
            LocalProtocolError: the provider was closed.
        """
        if self._closed:
            raise LocalProtocolError("the provider is closed")
        if not self._started:
            self._started = True
            self._loop = asyncio.get_running_loop()
            self._unsubscribe = self.doc.observe_updates(self._on_doc_update)
            self._task = self._loop.create_task(self._run())
            self._task.add_done_callback(self._run_done)
            self._schedule_presence()
        return self

    async def __aenter__(self) -> YProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Tell the room we left, close the connection and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_event.set()
        link = self._link
        if link is not None and self._awareness.local_state is not None:
            # Like y-websocket's destroy(): others drop our cursor now, not in 30 s.
            data = self._awareness.set_local_state(None, now=self._now())
            link.session.send_awareness(data)
            self._pump(link)
            with contextlib.suppress(TimeoutError):  # a server that does not read: go anyway
                await asyncio.wait_for(link.flushed.wait(), 1.0)
        if link is not None:
            with contextlib.suppress(TimeoutError):  # the close handshake is bounded: go anyway
                await asyncio.wait_for(self._close_quietly(link.conn), 5.0)
        if self._task is not None:
            try:
                # The loop ends by itself: close() woke the backoff sleep and the
                # connect, and closed the connection. The bound is a safety net.
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except TimeoutError:
                log.warning("the connection loop of %s did not stop in 10 s", self.address)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._notify()

    # -- state -------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Whether we are connected and the server's first sync step 2 was applied."""
        link = self._link
        return link is not None and link.synced and not link.ending

    @property
    def connected(self) -> bool:
        """Whether a connection is open."""
        return self._link is not None and not self._link.ending

    @property
    def error(self) -> CrdtSyncError | None:
        """The refusal that stopped the provider from reconnecting, if any."""
        return self._error

    @property
    def awareness(self) -> Awareness:
        """The presence states of the room, ours under ``doc.peer_id``."""
        return self._awareness

    async def wait_synced(self, timeout: float | None = None) -> SyncResult:
        """Wait until :attr:`synced`.

        Returns:
            A :class:`~crdtsync.peer.peer.SyncResult`, true in a boolean context
            once synced. False, with the reason and the error, at once when the
            provider is closed or was refused (:attr:`error`: ``TokenError``,
            ``TokenExpiredError``, ``RoomNotAllowedError``, ``InvalidRoomError``...);
            else after ``timeout`` seconds (not connected, and why the last
            attempt failed; or connected and the server's sync step 2 not in yet).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.synced:
            if self._error is not None:
                return SyncResult(False, f"{self.address} refused: {self._error}", self._error)
            if self._closed:
                return SyncResult(False, "the provider is closed")
            changed = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return self._not_synced()
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                if self.synced:
                    break
                return self._not_synced()
        return SyncResult(True)

    def _not_synced(self) -> SyncResult:
        if self._error is not None:
            return SyncResult(False, f"{self.address} refused: {self._error}", self._error)
        if self.connected:
            return SyncResult(False, f"connected to {self.address}; its sync step 2 is not in yet")
        why = f" (last attempt: {self._last_reason})" if self._last_reason else ""
        return SyncResult(False, f"not connected to {self.address}{why}", self._last_error)

    def on_status(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call ``callback(status)`` on connected / synced / disconnected / error.

        ``status.address`` is the room URL (without its query) and ``status.doc``
        the room name.

        Returns:
            A function that unsubscribes.
        """
        self._status_cbs.append(callback)
        return lambda: self._status_cbs.remove(callback) if callback in self._status_cbs else None

    def on_presence(self, callback: Callable[[AwarenessChange], None]) -> Callable[[], None]:
        """Call ``callback(change)`` when remote presence states change.

        Returns:
            A function that unsubscribes.
        """
        self._presence_cbs.append(callback)
        return lambda: (
            self._presence_cbs.remove(callback) if callback in self._presence_cbs else None
        )

    def set_presence(self, state: Any) -> None:
        """Publish our presence state (JSON-compatible; None: we left)."""
        data = self._awareness.set_local_state(state, now=self._now())
        link = self._link
        if link is not None:
            link.session.send_awareness(data)
            self._pump(link)
        self._schedule_presence()

    # -- the connection loop -----------------------------------------------------------

    def _url(self, token: str | None) -> str:
        query = dict(self._params)
        if token is not None:
            query["token"] = token
        return self.address + (f"?{urlencode(query, quote_via=quote)}" if query else "")

    async def _run(self) -> None:
        attempt = 0
        # Whether this attempt's token was asked for again after an expiry.
        renewed = False
        while not self._closed and self._error is None:
            refusal: CrdtSyncError | None = None
            url = await self._next_url()
            if url is not None:
                log.debug("connecting to %s (attempt %d)", self.address, attempt + 1)
                try:
                    conn = await self._connect(url)
                except TransportError as exc:  # every transport's failure is one: retry
                    self._last_error, self._last_reason = exc, str(exc)
                    self._report("disconnected", str(exc), exc)
                else:
                    if conn is None:
                        break
                    synced, refusal = await self._serve(conn)
                    if synced:
                        attempt = 0  # a connection that synced did useful work
                        renewed = False
            if self._closed:
                break
            if refusal is not None:
                if isinstance(refusal, TokenExpiredError) and callable(self._token) and not renewed:
                    renewed = True
                    log.info(
                        "%s: the token has expired; asking the token provider again", self.address
                    )
                    continue
                self._stop(refusal)
                break
            delay = self._backoff.delay(attempt, self._rng)
            attempt += 1
            log.debug(
                "reconnecting to %s in %.2f s (attempt %d): %s",
                self.address,
                delay,
                attempt + 1,
                _said(self._last_reason or "closed"),
            )
            with contextlib.suppress(TimeoutError):  # the backoff sleep, cut short by close()
                await asyncio.wait_for(self._stop_event.wait(), delay)
        self._notify()

    async def _next_url(self) -> str | None:
        """The URL of the next attempt, with a token the provider gives now (None: it failed)."""
        token = self._token
        if token is None or isinstance(token, str):
            return self.url
        limit = 10.0
        try:
            async with asyncio.timeout(limit):
                self.url = self._url(await fetch_token(token))
        except Exception as exc:  # the application's provider: reported, then retried
            reason = (
                f"the token provider did not answer within {limit:g} s"
                if isinstance(exc, TimeoutError)
                else f"the token provider failed: {exc!r}"
            )
            err = exc if isinstance(exc, CrdtSyncError) else None
            self._last_error, self._last_reason = err, reason
            log.warning("%s: %s", self.address, reason, exc_info=err is None)
            self._report("error", reason, err)
            return None
        return self.url

    def _stop(self, refusal: CrdtSyncError) -> None:
        """A refusal retrying cannot fix: stop reconnecting, and say so."""
        self._error = refusal
        log.warning(
            "stopped connecting to %s: %s: %s",
            self.address,
            type(refusal).__name__,
            _said(str(refusal)),
        )
        self._report("stopped", f"not reconnecting: {refusal}", refusal)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        """The connection loop ended: a crash (a bug of ours) is logged and reported."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        log.error("the connection loop of %s failed", self.address, exc_info=exc)
        err = exc if isinstance(exc, CrdtSyncError) else EngineError(f"connection loop: {exc!r}")
        self._error = err
        self._report("error", f"the connection loop failed: {exc!r}", err)
        self._notify()

    async def _connect(self, url: str) -> MessageConnection | None:
        """Connect, unless close() comes first (then None)."""
        connecting = asyncio.ensure_future(self._transport.connect(url))
        stopping = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait((connecting, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
        if not connecting.done():
            # close() came first: let the cancelled connect finish (a cancel is not
            # immediate), without raising here what it ends with.
            await asyncio.wait({connecting})
        if connecting.cancelled():
            return None
        exc = connecting.exception()
        if exc is not None:
            if self._closed and isinstance(exc, TransportError):
                return None  # it failed while we were closing anyway
            raise exc
        conn = connecting.result()
        if self._closed:
            await self._close_quietly(conn)
            return None
        return conn

    async def _serve(self, conn: MessageConnection) -> tuple[bool, CrdtSyncError | None]:
        """Run one connection to its end: whether it synced, and the refusal that ended it."""
        session = ys.YSession.client(now=self._now(), options=self._options)
        link = _Link(conn, session)
        self._link = link
        link.writer = asyncio.get_running_loop().create_task(self._write_loop(link))
        mine = self._awareness.local_state is not None
        session.start(
            self.doc.version, self._awareness.encode_update([self.doc.peer_id]) if mine else None
        )
        self._pump(link)
        log.info("connected to %s", self.address)
        self._last_error, self._last_reason = None, ""
        self._report("connected", "")
        self._notify()
        try:
            while not link.ending:
                try:
                    if link.denied is None:
                        data = await conn.recv()
                    else:
                        # Access was denied: the close code that follows says why.
                        async with asyncio.timeout(_DENIAL_GRACE):
                            data = await conn.recv()
                except (TransportError, TimeoutError):
                    break
                session.receive_data(data, now=self._now())
                self._process(link)
                if link.failure is not None:
                    await self._close_with(link, link.failure)
                    break
                # else: link.ending may have been set (a refusal): the loop ends
        finally:
            link.ending = True
            link.wakeup.set()
            if link.writer is not None:
                link.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link.writer
            await self._close_quietly(conn)
            self._link = None
            self._drop_remote_presence()
        code = reason = None
        if link.codes is not None:
            code, reason = link.codes.close_code, link.codes.close_reason
        refusal: CrdtSyncError | None = _refusal(code, reason or "") or link.denied
        if self._closed:
            refusal = None
        if refusal is not None:
            self._report("error", str(refusal), refusal)
        why = "closed" if code is None else f"closed ({code}{' ' + reason if reason else ''})"
        if link.failure is not None:
            why = str(link.failure)
        self._last_error, self._last_reason = link.failure or refusal, why
        if link.synced:
            log.info("disconnected from %s: %s", self.address, _said(why))
        self._report("disconnected", why, link.failure or refusal)
        self._notify()
        return link.synced, refusal

    async def _close_with(self, link: _Link, failure: CrdtSyncError) -> None:
        """Close a connection whose server sent something bad, with the session's code."""
        code = link.session.close_code or ys.CLOSE_PROTOCOL_ERROR
        if link.codes is not None:
            with contextlib.suppress(TransportError):  # it broke meanwhile: closed either way
                await link.codes.close_with(code, type(failure).__name__)
        else:
            await self._close_quietly(link.conn)

    @staticmethod
    async def _close_quietly(conn: MessageConnection) -> None:
        with contextlib.suppress(TransportError):  # already closed or broken: that is the aim
            await conn.close()

    async def _write_loop(self, link: _Link) -> None:
        """The only writer of a connection: messages go out in the order queued."""
        try:
            while not link.ending:
                await link.wakeup.wait()
                link.wakeup.clear()
                while link.outbox:
                    data = link.outbox.popleft()
                    link.queued -= len(data)
                    await link.conn.send(data)
                link.flushed.set()
        except TransportError:
            # recv() ends too once the connection is gone; make sure it is.
            self._drop(link)

    def _drop(self, link: _Link) -> None:
        """End a connection now (abort it when the transport can)."""
        if link.flow is not None:
            link.flow.abort()
        else:
            task = self._get_loop().create_task(self._close_quietly(link.conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pump(self, link: _Link) -> None:
        """Move what the session queued to the connection's outbox."""
        for message in link.session.data_to_send():
            self._queue(link, message)

    def _queue(self, link: _Link, data: bytes) -> None:
        if link.ending:
            return
        # The limit is on the backlog ahead of this message, so that one message
        # alone (a step 2 may carry a whole large document) always goes out.
        if link.queued > self._max_pending:
            # The server reads slower than we write: drop the backlog and the
            # connection; the next connection's state vectors resend what matters.
            link.ending = True
            link.outbox.clear()
            link.queued = 0
            err = LimitExceededError(f"over {self._max_pending} bytes waiting to be sent")
            self._report("error", str(err), err)
            self._drop(link)
            return
        link.outbox.append(data)
        link.queued += len(data)
        link.flushed.clear()
        link.wakeup.set()

    # -- messages ----------------------------------------------------------------------

    def _process(self, link: _Link) -> None:
        """React to what the session reported; a failure is reported and ends the link."""
        session = link.session
        while events := session.events_received():
            for ev in events:
                try:
                    self._handle(link, ev)
                except InvalidUpdateError as exc:
                    self._fail(link, exc)
                    session.reject_update(exc)
                except CrdtSyncError as exc:
                    self._fail(link, exc)
                    session.fail(exc)
                except Exception as exc:  # a bug of ours must not kill the provider either
                    log.exception("handling a message from %s failed", self.address)
                    err = EngineError(f"failed to handle a message from the server: {exc!r}")
                    self._fail(link, err)
                    session.fail(err)
        self._pump(link)

    def _fail(self, link: _Link, err: CrdtSyncError) -> None:
        """The server sent something bad: report it; the connection is then closed."""
        if link.failure is not None:
            return
        link.failure = err
        if isinstance(err, InvalidUpdateError):
            reason = f"the server sent an update that was refused: {err}"
        else:
            reason = f"the server sent a bad message: {err}"
        self._report("error", reason, err)

    def _handle(self, link: _Link, ev: ys.YEvent) -> None:
        session = link.session
        if isinstance(ev, ys.SyncRequested):
            session.send_sync_step2(self.doc.export_yjs_update(since=ev.version))
        elif isinstance(ev, ys.UpdateReceived):
            self.doc.import_yjs_update(ev.update, origin=self)
            session.update_applied(ev)
        elif isinstance(ev, ys.Synced):
            link.synced = True
            self._report("synced", "")
            self._notify()
        elif isinstance(ev, ys.AwarenessReceived):
            self._on_awareness(link, ev)
        elif isinstance(ev, ys.AwarenessQueried):
            session.send_awareness(self._awareness.full_update())
        elif isinstance(ev, ys.AccessDenied):
            if isinstance(ev.error, AuthError):
                # Refused before we got anything: access itself was denied, and
                # coming back cannot change that. The server's close code, if it
                # sends one, says why (reported when the connection ends).
                link.denied = ev.error
            else:
                # After a sync it is a refused write (a read-only grant): we stay
                # and keep receiving.
                if not link.write_refused:
                    log.warning("%s refused a write: %s", self.address, _said(str(ev.error)))
                link.write_refused = True
                self._report("error", str(ev.error), ev.error)
        elif (
            isinstance(ev, ys.Closed)
            and ev.error is not None
            and not isinstance(ev.error, AuthError)  # a refusal: reported as AccessDenied
        ):
            self._fail(link, ev.error)  # a message that did not decode, or was too big

    def _on_awareness(self, link: _Link, ev: ys.AwarenessReceived) -> None:
        me = self.doc.peer_id
        change = self._awareness.apply_entries(list(ev.entries), now=self._now())
        if any(c == me and s is None for c, _, s in ev.entries) and (
            self._awareness.local_state is not None
        ):
            # Someone announced us gone while we are here: the awareness outbid
            # the removal with a newer clock; tell the room (y-protocols does).
            link.session.send_awareness(self._awareness.encode_update([me]))
        self._presence_changed(change)
        self._schedule_presence()

    def _drop_remote_presence(self) -> None:
        """The connection ended: everyone we knew of through it is gone (as in y-websocket)."""
        others = [c for c in self._awareness.states if c != self._awareness.client_id]
        self._presence_changed(self._awareness.remove(others, now=self._now()))

    def _presence_changed(self, change: AwarenessChange) -> None:
        if change:
            for cb in list(self._presence_cbs):
                cb(change)

    def _schedule_presence(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self._awareness.get_timer()
        if when is not None and self._started and not self._closed:
            self._timer = self._get_loop().call_at(when, self._presence_tick, when)

    def _presence_tick(self, when: float) -> None:
        self._timer = None
        # asyncio may fire a timer slightly early: the deadline counts as reached.
        renew, change = self._awareness.handle_timer(max(self._now(), when))
        link = self._link
        if renew is not None and link is not None:
            link.session.send_awareness(renew)
            self._pump(link)
        self._presence_changed(change)
        self._schedule_presence()

    # -- document updates --------------------------------------------------------------

    def _on_doc_update(self, update: bytes, origin: object, local: bool) -> None:
        if origin is self:
            return  # it came from the server
        link = self._link
        if link is not None:
            link.session.send_update(update)
            self._pump(link)

    # -- helpers -----------------------------------------------------------------------

    def _report(self, kind: _Kind, reason: str, error: CrdtSyncError | None = None) -> None:
        self._status(Status(kind, self.address, doc=self.room, reason=reason, error=error))

    def _status(self, status: Status) -> None:
        for cb in list(self._status_cbs):
            cb(status)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        return self._get_loop().time()

    def __repr__(self) -> str:
        state = "synced" if self.synced else "connected" if self.connected else "offline"
        return f"<YProvider {self.address} {state}>"
