"""Presence (awareness): ephemeral per-client state, y-protocols compatible, sans-I/O.

Each client publishes a JSON state (cursor, user name...) under its client id with
a clock that it bumps on every change. States are never persisted; a remote state
that is not renewed within ``timeout`` seconds is dropped, and the local state is
re-sent every ``timeout / 2`` so that others keep it. Time is passed in (``now``),
like the sync session, so tests drive it with a fake clock.

The bytes are the y-protocols awareness update, so a relay can hand them to Yjs
clients unchanged::

    update = varuint count, count x (varuint client id, varuint clock, varstring JSON)

where the JSON text ``null`` means "this client is gone".

Budgets. A presence state comes from any connected client, read-only ones
included, and every newcomer receives all of them at once, so presence is
bounded at every level:

* one state: at most :data:`MAX_STATE_BYTES` of JSON text and
  :data:`MAX_STATE_VALUES` JSON values (a megabyte of ``[[],[],...]`` would
  otherwise cost fifty times its size as Python objects); refused whole
  (:class:`~crdtsync.errors.FrameTooLargeError`);
* one :class:`Awareness` (a document's presence): at most ``max_states``
  states and ``max_bytes`` of state *cost* (:func:`state_cost`: text bytes plus
  :data:`VALUE_COST` per value, so it tracks memory, not just wire size); a state
  that does not fit is ignored, like a newcomer when the room is full, and the
  previous state of that client stays;
* only JSON that can be sent on again is accepted: no ``NaN``, ``Infinity`` or
  numbers that overflow to it (``1e999``), no lone surrogates (JSON text that a
  browser's ``JSON.parse`` takes but UTF-8 cannot carry), so that relaying what
  was accepted can never fail.

The full-presence message a newcomer gets is cached until a state changes.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crdtsync.errors import FrameTooLargeError, InvalidValueError, MalformedFrameError
from crdtsync.format.varint import VarintError, read_varuint, write_varuint
from crdtsync.format.yupdate import json_depth

__all__ = [
    "MAX_PRESENCE_BYTES",
    "MAX_STATES",
    "MAX_STATE_BYTES",
    "MAX_STATE_VALUES",
    "Awareness",
    "AwarenessChange",
    "decode_awareness",
    "encode_awareness",
    "split_awareness",
    "state_cost",
]

#: Default time (seconds) after which a silent remote client is considered gone.
DEFAULT_TIMEOUT = 30.0
_MAX_ENTRIES = 10_000
#: Present states one Awareness holds; entries adding more are ignored.
MAX_STATES = 10_000
#: Largest JSON text of one state, in bytes.
MAX_STATE_BYTES = 64 << 10
#: Most JSON values (objects, arrays, strings, numbers...) in one state.
MAX_STATE_VALUES = 4096
#: What one decoded JSON value costs in memory beyond its text, for budgets.
VALUE_COST = 64
#: Default budget of one Awareness: the sum of :func:`state_cost` of its states.
MAX_PRESENCE_BYTES = 4 << 20
_MAX_JSON_DEPTH = 32
_MAX_ID = 2**53


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON a peer can be sent")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} overflows a double")
    return value


def _check_state(state: Any, max_values: int) -> int:
    """Count a decoded state's JSON values; refuse strings UTF-8 cannot carry.

    Iterative (the depth is bounded anyway, by the JSON depth check).

    Raises:
        ValueError: a lone surrogate, or more than ``max_values`` values.
    """
    count = 0
    stack = [state]
    while stack:
        v = stack.pop()
        count += 1
        if count > max_values:
            raise ValueError(f"more than {max_values} JSON values")
        if isinstance(v, str):
            if not v.isascii():
                v.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(v, dict):
            for k, x in v.items():
                if not k.isascii():
                    k.encode("utf-8")
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)
    return count


def state_cost(state: Any) -> int:
    """What keeping ``state`` costs, for budgets: its JSON text plus a charge per value."""
    if state is None:
        return 0
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(text.encode("utf-8")) + VALUE_COST * _check_state(state, 1 << 62)


def encode_awareness(entries: Iterable[tuple[int, int, Any]]) -> bytes:
    """Encode ``(client id, clock, state)`` entries (``state`` None: removed).

    The JSON is compact (no spaces), like y-protocols writes it.
    """
    items = list(entries)
    out = bytearray()
    write_varuint(out, len(items))
    for client, clock, state in items:
        write_varuint(out, client)
        write_varuint(out, clock)
        text = json.dumps(state, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        raw = text.encode("utf-8")
        write_varuint(out, len(raw))
        out += raw
    return bytes(out)


def decode_awareness(
    data: bytes, *, max_state_bytes: int = MAX_STATE_BYTES
) -> list[tuple[int, int, Any]]:
    """Decode an awareness update strictly.

    Args:
        data: the update (hostile).
        max_state_bytes: largest JSON text of one state.

    Returns:
        ``(client id, clock, state)`` entries, ``state`` None for removals.

    Raises:
        MalformedFrameError: truncated, trailing bytes, bad UTF-8 or JSON, JSON a
            peer could not be sent (NaN, Infinity, 1e999, lone surrogates), JSON
            nested deeper than 32, or more than 10,000 entries.
        FrameTooLargeError: a state over ``max_state_bytes`` or
            :data:`MAX_STATE_VALUES` values.
    """
    return [(c, k, s) for c, k, s, _ in _decode(data, max_state_bytes)]


def _decode(data: bytes, max_state_bytes: int) -> list[tuple[int, int, Any, int]]:
    """:func:`decode_awareness`, with each state's :func:`state_cost`."""
    pos = 0
    n = len(data)

    def read_uint() -> int:
        nonlocal pos
        try:
            value, pos = read_varuint(data, pos, bits=56)
        except VarintError as exc:
            what = "update truncated" if exc.truncated else "varuint too long"
            raise MalformedFrameError(f"awareness {what}") from None
        return value

    count = read_uint()
    if count > _MAX_ENTRIES:
        raise MalformedFrameError(f"awareness update lists {count} clients")
    out = []
    for _ in range(count):
        client = read_uint()
        clock = read_uint()
        length = read_uint()
        if pos + length > n:
            raise MalformedFrameError("awareness state overruns the update")
        raw = data[pos : pos + length]
        pos += length
        if client >= _MAX_ID or clock >= _MAX_ID:
            raise MalformedFrameError("awareness client id or clock out of range")
        if length > max_state_bytes:
            raise FrameTooLargeError(f"awareness state of {length} bytes (limit {max_state_bytes})")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedFrameError("awareness state is not UTF-8") from None
        if json_depth(text) > _MAX_JSON_DEPTH:
            raise MalformedFrameError("awareness state nested too deeply")
        try:
            state = (
                json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
                if text
                else None
            )
        except ValueError as exc:
            raise MalformedFrameError(f"awareness state is not JSON: {exc}") from None
        cost = 0
        if state is not None:
            try:
                values = _check_state(state, MAX_STATE_VALUES)
            except UnicodeEncodeError:
                raise MalformedFrameError(
                    "awareness state holds a lone surrogate (not valid Unicode text)"
                ) from None
            except ValueError as exc:
                raise FrameTooLargeError(f"awareness state holds {exc}") from None
            cost = len(raw) + VALUE_COST * values
        out.append((client, clock, state, cost))
    if pos != n:
        raise MalformedFrameError(f"{n - pos} trailing bytes after the awareness update")
    return out


def split_awareness(data: bytes, max_bytes: int) -> list[bytes]:
    """Split an awareness update into updates of at most ``max_bytes`` each, by entries.

    A whole room's presence can be larger than one frame of the sync protocol;
    its entries are independent, so they travel in several messages. An entry
    larger than ``max_bytes`` on its own is left out (the per-state cap keeps
    every accepted state far below any frame limit).

    Raises:
        MalformedFrameError: the bytes are not an awareness update.
    """
    if len(data) <= max_bytes:
        return [data]
    pos = 0

    def read_uint() -> int:
        nonlocal pos
        try:
            value, pos = read_varuint(data, pos, bits=56)
        except VarintError:
            raise MalformedFrameError("awareness update truncated") from None
        return value

    entries: list[bytes] = []
    for _ in range(read_uint()):
        start = pos
        read_uint()
        read_uint()
        length = read_uint()  # (not `pos += read_uint()`: that reads pos before the call)
        pos += length
        if pos > len(data):
            raise MalformedFrameError("awareness state overruns the update")
        entries.append(data[start:pos])
    parts: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for entry in entries:
        if len(entry) + 8 > max_bytes:
            continue
        if batch and size + len(entry) + 8 > max_bytes:
            parts.append(_join(batch))
            batch, size = [], 0
        batch.append(entry)
        size += len(entry)
    if batch:
        parts.append(_join(batch))
    return parts


def _join(entries: list[bytes]) -> bytes:
    out = bytearray()
    write_varuint(out, len(entries))
    for e in entries:
        out += e
    return bytes(out)


@dataclass(frozen=True)
class AwarenessChange:
    """Client ids whose state appeared, changed or went away in one operation."""

    added: tuple[int, ...] = ()
    updated: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


class Awareness:
    """The awareness states of one document, as seen by one client.

    Examples:
        >>> a, b = Awareness(1), Awareness(2)
        >>> update = a.set_local_state({"user": "ann", "cursor": 3}, now=0.0)
        >>> b.apply_update(update, now=0.0)
        AwarenessChange(added=(1,), updated=(), removed=())
        >>> b.states[1]
        {'user': 'ann', 'cursor': 3}
        >>> b.handle_timer(31.0)  # ann said nothing for 31 s: gone
        (None, AwarenessChange(added=(), updated=(), removed=(1,)))

    Args:
        client_id: this client's id (the document's writer id).
        timeout: seconds after which a silent remote state is dropped.
        max_states: most present states kept.
        max_bytes: budget of the states kept, in :func:`state_cost` units.
    """

    def __init__(
        self,
        client_id: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_states: int = MAX_STATES,
        max_bytes: int = MAX_PRESENCE_BYTES,
    ) -> None:
        # Our own id: remote updates may never remove our state.
        self.client_id = client_id
        # Silence after which a remote state is dropped.
        self.timeout = timeout
        # Budgets: present states, and their total cost.
        self.max_states = max_states
        self.max_bytes = max_bytes
        # client id -> cost of its present state (state_cost), and their sum.
        self._costs: dict[int, int] = {}
        self.total_cost = 0
        # The full-presence message, until a state changes (newcomers ask often).
        self._full: bytes | None = None
        # client id -> current state (present clients only).
        self.states: dict[int, Any] = {}
        # client id -> (clock, time of last update): kept after removal, for
        # ``timeout``, so that a late old update cannot resurrect a removed state
        # (then forgotten: departed clients must not accumulate).
        self.meta: dict[int, tuple[int, float]] = {}
        # (time of removal, client id), oldest first: when to forget meta entries.
        self._removed: deque[tuple[float, int]] = deque()
        # (expiry, client id) of present remote states, a heap with stale entries
        # skipped lazily: the next expiry without scanning every state.
        self._expiry: list[tuple[float, int]] = []

    @property
    def local_state(self) -> Any:
        """Our state, or None when we are not present."""
        return self.states.get(self.client_id)

    def set_local_state(self, state: Any, *, now: float) -> bytes:
        """Set (or with None, clear) our state.

        Returns:
            The awareness update to send to every peer.

        Raises:
            InvalidValueError: the state is not JSON (NaN, objects, lone
                surrogates...); the previous state stays.
        """
        # y-protocols ignores clock 0 from an unknown client, so our first clock is 1.
        clock = self.meta.get(self.client_id, (0, 0.0))[0] + 1
        if state is None:
            self.states.pop(self.client_id, None)
            self._set_cost(self.client_id, 0)
        else:
            # Round-trip through JSON: what peers see is exactly what we keep.
            try:
                text = json.dumps(state, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
                raw = text.encode("utf-8")
            except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
                raise InvalidValueError(f"a presence state must be JSON text: {exc}") from None
            if len(raw) > MAX_STATE_BYTES:
                raise InvalidValueError(
                    f"a presence state of {len(raw)} bytes of JSON (limit {MAX_STATE_BYTES})"
                )
            value = json.loads(text)
            try:
                values = _check_state(value, MAX_STATE_VALUES)
            except ValueError as exc:
                raise InvalidValueError(f"a presence state holds {exc}") from None
            self.states[self.client_id] = value
            self._set_cost(self.client_id, len(raw) + VALUE_COST * values)
        self.meta[self.client_id] = (clock, now)
        self._full = None
        return self.encode_update([self.client_id])

    def cost(self, client: int) -> int:
        """What ``client``'s present state costs (:func:`state_cost`; 0 when absent)."""
        return self._costs.get(client, 0)

    def _set_cost(self, client: int, cost: int) -> None:
        self.total_cost += cost - self._costs.pop(client, 0)
        if cost:
            self._costs[client] = cost

    def encode_update(self, clients: Iterable[int]) -> bytes:
        """The awareness update carrying the current state of ``clients``."""
        return encode_awareness(
            (c, self.meta[c][0], self.states.get(c)) for c in clients if c in self.meta
        )

    def full_update(self) -> bytes:
        """An update with every known present state (sent to a newly joined peer).

        Cached until a state changes: bounded by ``max_bytes``, and computed once
        however many newcomers (or presence queries) ask.
        """
        if self._full is None:
            self._full = self.encode_update(sorted(self.states))
        return self._full

    def apply_update(self, data: bytes, *, now: float) -> AwarenessChange:
        """Merge a remote awareness update (y-protocols rules).

        Raises:
            MalformedFrameError: the bytes are not an awareness update.
            FrameTooLargeError: a state is over the per-state limits.
        """
        return self._apply(_decode(data, MAX_STATE_BYTES), now=now)

    def apply_entries(self, entries: list[tuple[int, int, Any]], *, now: float) -> AwarenessChange:
        """Merge decoded entries (see :func:`decode_awareness`)."""
        return self._apply([(c, k, s, state_cost(s)) for c, k, s in entries], now=now)

    def _apply(self, entries: list[tuple[int, int, Any, int]], *, now: float) -> AwarenessChange:
        added: list[int] = []
        updated: list[int] = []
        removed: list[int] = []
        self._forget_removed(now)
        for client, clock, state, cost in entries:
            known = self.meta.get(client)
            current = known[0] if known is not None else 0
            present = client in self.states
            if not (current < clock or (current == clock and state is None and present)):
                continue
            if state is None and client == self.client_id and self.local_state is not None:
                # Nobody removes us but us: outbid the removal with a newer clock.
                self.meta[client] = (clock + 1, now)
                continue
            if state is None and known is None:
                continue  # the removal of a client we never knew: nothing to keep
            if state is not None and not present and len(self.states) >= self.max_states:
                continue  # full: a newcomer waits for someone to leave
            if state is not None and (
                self.total_cost - self._costs.get(client, 0) + cost > self.max_bytes
            ):
                continue  # over the budget: the client keeps its previous state, if any
            # meta first: rebuilding the expiry heap reads it for every state.
            self.meta[client] = (clock, now)
            self._full = None
            if state is None:
                self.states.pop(client, None)
                self._set_cost(client, 0)
                self._removed.append((now, client))
            else:
                self.states[client] = state
                self._set_cost(client, cost)
                if client != self.client_id:
                    self._push_expiry(now + self.timeout, client)
            if state is None:
                if present:
                    removed.append(client)
            elif not present:
                added.append(client)
            else:
                updated.append(client)
        return AwarenessChange(tuple(added), tuple(updated), tuple(removed))

    def _push_expiry(self, when: float, client: int) -> None:
        heapq.heappush(self._expiry, (when, client))
        if len(self._expiry) > 2 * len(self.states) + 64:
            # Mostly stale entries (clients that renewed since): rebuild.
            self._expiry = [
                (self.meta[c][1] + self.timeout, c) for c in self.states if c != self.client_id
            ]
            heapq.heapify(self._expiry)

    def _next_expiry(self) -> float | None:
        heap = self._expiry
        while heap:
            when, client = heap[0]
            known = self.meta.get(client)
            if client in self.states and known is not None and known[1] + self.timeout == when:
                return when
            heapq.heappop(heap)  # renewed or removed since
        return None

    def _forget_removed(self, now: float) -> None:
        removed = self._removed
        while removed and now >= removed[0][0] + self.timeout:
            _, client = removed.popleft()
            known = self.meta.get(client)
            if client not in self.states and known is not None and now >= known[1] + self.timeout:
                del self.meta[client]

    def remove(self, clients: Iterable[int], *, now: float) -> AwarenessChange:
        """Drop remote states (their peer disconnected). Our own is never dropped."""
        removed = []
        for c in clients:
            if c != self.client_id and c in self.states:
                del self.states[c]
                self._set_cost(c, 0)
                self._full = None
                clock = self.meta[c][0]
                self.meta[c] = (clock, now)
                self._removed.append((now, c))
                removed.append(c)
        return AwarenessChange(removed=tuple(removed))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something to do."""
        deadlines = []
        expiry = self._next_expiry()
        if expiry is not None:
            deadlines.append(expiry)
        if self._removed:
            deadlines.append(self._removed[0][0] + self.timeout)
        if self.local_state is not None:
            deadlines.append(self.meta[self.client_id][1] + self.timeout / 2)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> tuple[bytes | None, AwarenessChange]:
        """Renew our state when due and drop silent remote ones.

        Returns:
            ``(update to send or None, change)``.
        """
        renew = None
        local = self.local_state
        if local is not None and now >= self.meta[self.client_id][1] + self.timeout / 2:
            renew = self.set_local_state(local, now=now)
        stale = []
        while (when := self._next_expiry()) is not None and now >= when:
            _, client = heapq.heappop(self._expiry)
            stale.append(client)
        change = self.remove(stale, now=now)
        self._forget_removed(now)
        return renew, change
