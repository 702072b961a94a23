"""``crdtsync peer``: a peer that syncs one document and prints its changes.

::

    crdtsync lan-key --out team.key                       # once, then share it (lan-invite)
    crdtsync peer notes --store notes.db --lan --key-file team.key
    crdtsync peer notes --store notes.db --relay ws://relay:8765 --token TOKEN
    crdtsync peer notes --store notes.db --lan --key-file team.key --relay URL --token TOKEN

With ``--lan`` it finds the other devices of the group on the local network
(zeroconf) and links with them directly (:meth:`Peer.start_lan
<crdtsync.peer.peer.Peer.start_lan>`); with ``--relay`` it syncs through a
relay; with both, through both (either alone suffices to converge). Every
change of the document, local or remote, is one JSON line on stdout::

    {"doc": "notes", "where": "lan://192.168.1.20:40123", "device": "3q2x...",
     "who": [{"client": 123, "device": "3q2x..."}],
     "what": [{"path": ["items"], "kind": "list", "delta": [{"retain": 2}, {"insert": ["milk"]}]}]}

* ``where``: ``"local"`` (this process), or the address of the link it came
  through; ``device``: that link's device fingerprint (LAN links prove one).
* ``who``: the client ids that wrote the change's new items, each with the
  device that declared it over the LAN (None when unknown: a relay client, or
  an edit forwarded from a device we never linked with). Deletions name no
  writer (Yjs does not record who deleted).
* ``what``: the changed containers (:class:`~crdtsync.model.doc.Change`).

Link events (discovered, linked, refused...) go to stderr, one line each.
Ctrl-C (or SIGTERM) stops it cleanly: links closed, the store flushed; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from crdtsync.errors import AuthError, CrdtSyncError, InvalidUpdateError
from crdtsync.format.yupdate import parse_update
from crdtsync.model.doc import Change, ChangeEvent, Doc
from crdtsync.net import has_identity
from crdtsync.peer.guests import Guest, Origin
from crdtsync.peer.peer import Peer, Status

__all__ = ["ChangePrinter", "add_peer_arguments", "change_line", "run_peer"]

_TOKEN_ENV = "CRDTSYNC_TOKEN"


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crdtsync peer``."""
    parser.add_argument("doc", metavar="DOC", help="the document to sync")
    parser.add_argument(
        "--store", required=True, metavar="PATH", help="the SQLite store (made if missing)"
    )
    lan = parser.add_argument_group("LAN (peer-to-peer, no relay)")
    lan.add_argument("--lan", action="store_true", help="sync with the group's devices directly")
    lan.add_argument("--key-file", metavar="FILE", help="the group key (crdtsync lan-key)")
    lan.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="IP",
        help="an IPv4 address to listen and announce on (repeat; default: every interface)",
    )
    lan.add_argument("--port", type=int, default=0, help="the TCP port (default: any free one)")
    lan.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a lan://[FINGERPRINT@]host:port to link with by hand (repeat)",
    )
    lan.add_argument(
        "--allow",
        action="append",
        metavar="FINGERPRINT",
        help="only these devices may link (repeat; default: every device with the key)",
    )
    lan.add_argument(
        "--no-zeroconf", action="store_true", help="no mDNS: only the --static addresses"
    )
    relay = parser.add_argument_group("relay")
    relay.add_argument("--relay", metavar="URL", help="also sync through a relay (ws://, wss://)")
    relay.add_argument(
        "--token", metavar="TOKEN", help=f"an access token for the relay (env {_TOKEN_ENV})"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, float) and value != value:  # noqa: PLR0124 - NaN never equals itself
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return repr(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)  # a container value (a nested map, a counter...): shown, not walked


def _change(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {"path": list(change.path), "kind": change.kind}
    if change.keys is not None:
        out["keys"] = dict(change.keys)
    if change.delta is not None:
        out["delta"] = _jsonable(change.delta)
    if change.created:
        out["created"] = True
    return out


def change_line(
    doc: str,
    update: bytes,
    origin: Origin,
    changes: tuple[Change, ...],
    *,
    device_of: Callable[[int], str | None] | None = None,
) -> dict[str, Any]:
    """The JSON object ``crdtsync peer`` prints for one transaction (see the module docs).

    Args:
        doc: the document's name.
        update: the transaction's Yjs update.
        origin: where it came from (a connection, a guest, or None: this process).
        changes: what it changed.
        device_of: ``client id -> fingerprint or None`` (the LAN manager's ``device_of``).
    """
    where = "local"
    device = None
    if isinstance(origin, Guest):
        where = f"guest {origin.address}"
    elif origin is not None:
        where = str(origin.remote_address)
        if has_identity(origin):
            device = origin.remote_identity.fingerprint
    writers: list[int] = []
    if update:
        # It was imported, so it parses; if not, there is nobody to name.
        with contextlib.suppress(InvalidUpdateError):
            writers = sorted(parse_update(update).state_vector_after())
    who = [
        {"client": c, "device": device_of(c) if device_of is not None else None} for c in writers
    ]
    return {
        "doc": doc,
        "where": where,
        "device": device,
        "who": who,
        "what": [_change(c) for c in changes],
    }


@dataclass
class _Record:
    """One transaction being put together: its update (who, where) and its changes (what)."""

    update: bytes | None = None
    origin: Origin = None
    changes: list[Change] = field(default_factory=list)


class ChangePrinter:
    """Prints a line per transaction of one document of a Peer (the ``DocWatcher``).

    A transaction reaches this object twice, synchronously and in either order:
    as a :class:`ChangeEvent` from the document's observer (what changed) and as
    an update from :meth:`Peer.watch` (who wrote it, where it came from); a
    root the transaction created is reported after its update. The two halves
    are joined here and printed on the next turn of the loop.
    """

    def __init__(self, peer: Peer, doc: str, out: TextIO) -> None:
        self.peer = peer
        self.name = doc
        self.out = out
        self._records: list[_Record] = []
        self._flush: asyncio.Handle | None = None
        self._unobserve: Callable[[], None] | None = None

    def attach(self, doc: Doc) -> None:
        """Watch ``doc`` (again, when the Peer replaced the document)."""
        if self._unobserve is not None:
            self._unobserve()
        self._unobserve = doc.observe(self._observed)

    def _observed(self, event: ChangeEvent) -> None:
        last = self._records[-1] if self._records else None
        only_created = all(c.created for c in event.changes)
        if last is not None and last.update is not None and (not last.changes or only_created):
            last.changes.extend(event.changes)
        else:
            self._records.append(_Record(changes=list(event.changes)))
        self._schedule()

    def updated(self, name: str, update: bytes, origin: Origin) -> None:
        """A transaction of ``name``: its update and origin."""
        if name != self.name:
            return
        last = self._records[-1] if self._records else None
        if last is not None and last.update is None:
            last.update, last.origin = update, origin
        else:
            self._records.append(_Record(update, origin))
        self._schedule()

    def presence(self, name: str, data: bytes, origin: Origin) -> None:
        """Presence is not printed."""

    def _schedule(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Print the transactions put together so far."""
        self._flush = None
        records, self._records = self._records, []
        lan = self.peer.lan
        device_of = lan.device_of if lan is not None else None
        for record in records:
            line = change_line(
                self.name,
                record.update or b"",
                record.origin,
                tuple(record.changes),
                device_of=device_of,
            )
            self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.out.flush()


def run_peer(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    """Run ``crdtsync peer`` until Ctrl-C.

    Returns:
        0 after a clean stop; 1 if it cannot start (a key file, a port, the
        relay refusing the token); 2 for bad arguments.
    """
    env = environ or {}
    if not args.lan and not args.relay:
        print("crdtsync peer: give --lan (with --key-file), --relay URL, or both", file=sys.stderr)
        return 2
    if args.lan and not args.key_file:
        print("crdtsync peer: --lan needs --key-file (crdtsync lan-key)", file=sys.stderr)
        return 2
    if args.relay and not args.relay.startswith(("ws://", "wss://")):
        print("crdtsync peer: --relay is a ws:// or wss:// URL", file=sys.stderr)
        return 2
    token = args.token or env.get(_TOKEN_ENV) or None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("crdtsync peer: %(message)s"))
    lan_log = logging.getLogger("crdtsync.lan")
    lan_log.addHandler(handler)
    lan_log.setLevel(logging.INFO)
    try:
        return asyncio.run(_peer(args, token))
    except KeyboardInterrupt:
        return 0  # a ^C before the handler was installed
    finally:
        lan_log.removeHandler(handler)


async def _peer(args: argparse.Namespace, token: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Peer(store=args.store) as peer:
            doc = await peer.open(args.doc)
            printer = ChangePrinter(peer, args.doc, sys.stdout)
            printer.attach(doc)
            peer.on_open(lambda name, new: printer.attach(new) if name == args.doc else None)
            peer.watch(printer)
            peer.on_status(_say_status)
            if args.lan:
                lan = await peer.start_lan(
                    args.key_file,
                    interfaces=args.interface or None,
                    port=args.port,
                    allowed=args.allow,
                    static=args.static,
                    zeroconf=not args.no_zeroconf,
                )
                print(
                    f"crdtsync peer: device {lan.fingerprint} on {', '.join(lan.addresses)}; "
                    f"syncing {args.doc!r} (Ctrl-C stops)",
                    file=sys.stderr,
                    flush=True,
                )
            failures: list[BaseException] = []
            connecting: asyncio.Task[None] | None = None
            if args.relay:
                connecting = asyncio.ensure_future(
                    peer.connect(args.relay, token=token, timeout=None)
                )
                connecting.add_done_callback(lambda t: _failed(t, failures, stop))
                print(f"crdtsync peer: relay {args.relay}", file=sys.stderr, flush=True)
            await stop.wait()
            if connecting is not None and not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
            if failures:
                raise failures[0]
    except AuthError as exc:
        print(f"crdtsync peer: the relay refused us: {exc}", file=sys.stderr)
        return 1
    except (CrdtSyncError, OSError) as exc:
        print(f"crdtsync peer: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


def _failed(task: asyncio.Task[None], failures: list[BaseException], stop: asyncio.Event) -> None:
    """The first connection to the relay failed for good (refused): stop."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        failures.append(exc)
        stop.set()


def _say_status(status: Status) -> None:
    """LAN events are logged under crdtsync.lan already; the relay's are said here."""
    if status.device is not None or status.kind in ("synced",):
        return
    if status.kind in ("connected", "disconnected", "error"):
        where = status.address or ""
        reason = f": {status.reason}" if status.reason else ""
        print(f"crdtsync peer: {status.kind} {where}{reason}", file=sys.stderr, flush=True)
