"""Exhaustive small-scope check of the sync protocol (see SYNC.md).

Runs the real :class:`crdtsync.protocol.session.Session` and real documents, with a
minimal shell (the Peer's rules: accept, open, catch-up, import then ack,
forward), and explores **every** interleaving of frame deliveries, frame
losses, connection cuts, timeouts and reconnects up to a bound, by depth-first
search over world states (states already seen are not explored twice).

Checked in every state (safety):
  S1  no exception escapes a session or the shell;
  S2  a session end that reports a document synced has a peer whose document
      contains everything this end's document contains (an ack means stored).
Checked in every final state, after the fair completion (liveness under
eventual connectivity: from there on no frame is lost, closed links reconnect,
stuck links time out):
  L1  every document is identical on every peer;
  L2  every session end reports the document synced.

Usage: python proofs/check_sync.py --peers 2 --edits 1 --losses 1 --cuts 0
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crdtsync import Doc
from crdtsync.protocol import session as p

NAME = "d"
INF = 1e9


@dataclass
class Bound:
    peers: int = 2
    edits: int = 1  # local edits per peer
    losses: int = 1  # frames lost, in total
    cuts: int = 0  # connections cut, in total
    reconnects: int = 2  # reconnects per link during the bounded phase


@dataclass
class Stats:
    states: int = 0
    finals: int = 0
    pruned: int = 0
    max_depth: int = 0


@dataclass
class Link:
    client: int
    server: int
    ends: list[p.Session] | None = None  # [client end, server end]
    queues: list[deque[bytes]] = field(default_factory=lambda: [deque(), deque()])  # c->s, s->c
    reconnects: int = 0


class World:
    """Peers (documents + shell rules) and links (session pairs + frames in flight)."""

    def __init__(self, bound: Bound) -> None:
        self.bound = bound
        self.docs = [Doc(peer_id=i + 1) for i in range(bound.peers)]
        # 2 peers: 1 dials 2. 3 peers: a chain 1 -> 2 <- 3, so 2 must forward.
        self.links = [Link(0, 1)] + ([Link(2, 1)] if bound.peers == 3 else [])
        # With 3 peers the two ends of the chain edit: the middle one must forward.
        self.edits_left = [bound.edits] * 2 if bound.peers == 2 else [bound.edits, 0, bound.edits]
        self.losses_left = bound.losses
        self.cuts_left = bound.cuts
        self._wire_docs()
        for i in range(len(self.links)):
            self.connect(i)

    # -- copying (DFS needs independent copies of the whole world) -----------------------

    def clone(self) -> World:
        new = copy.copy(self)
        new.docs = []
        for d in self.docs:
            twin = Doc(peer_id=d.peer_id)
            twin.import_yjs_update(d.export_yjs_update())
            new.docs.append(twin)
        new.links = copy.deepcopy(self.links)
        new.edits_left = list(self.edits_left)
        new._wire_docs()
        return new

    def _wire_docs(self) -> None:
        for i, doc in enumerate(self.docs):
            doc.observe_updates(
                lambda update, origin, local, i=i: self._on_update(i, update, origin)
            )

    # -- shell rules (what crdtsync.peer.peer.Peer does) ------------------------------------

    def sessions_of(self, peer: int) -> list[p.Session]:
        out = []
        for link in self.links:
            if link.ends is not None:
                if link.client == peer:
                    out.append(link.ends[0])
                if link.server == peer:
                    out.append(link.ends[1])
        return out

    def _on_update(self, peer: int, update: bytes, origin: Any) -> None:
        # Stored (the document is the store here), then sent on every other session.
        for s in self.sessions_of(peer):
            if s is not origin:
                s.send_update(NAME, update)

    def process(self, peer: int, s: p.Session) -> None:
        doc = self.docs[peer]
        while events := s.events_received():
            for ev in events:
                if isinstance(ev, p.HelloReceived):
                    s.accept(verify_writers=False)
                elif isinstance(ev, p.DocRequested):
                    s.open_doc(ev.name, ev.epoch, doc.version)
                elif isinstance(ev, p.CatchUpNeeded):
                    s.send_catch_up(ev.name, doc.export_yjs_update(since=ev.since))
                elif isinstance(ev, p.UpdateReceived):
                    doc.import_yjs_update(ev.update, origin=s)
                    s.ack(ev.name, ev.seq)

    def flush(self) -> None:
        for link in self.links:
            if link.ends is None:
                continue
            for side in (0, 1):
                link.queues[side].extend(link.ends[side].data_to_send())

    def connect(self, i: int) -> None:
        link = self.links[i]
        doc = self.docs[link.client]
        client = p.Session.client(link.client + 1, docs=[(NAME, b"", doc.version)], now=0.0)
        client.verify_writers = False
        server = p.Session.server(link.server + 1, now=0.0)
        link.ends = [client, server]
        link.queues = [deque(), deque()]
        self.flush()

    # -- actions ---------------------------------------------------------------------------

    def actions(self) -> list[tuple[Any, ...]]:
        acts: list[tuple[Any, ...]] = []
        for peer in range(len(self.docs)):
            if self.edits_left[peer]:
                acts.append(("edit", peer))
        for i, link in enumerate(self.links):
            ends = link.ends
            if ends is None:
                continue
            for side in (0, 1):
                if link.queues[side]:
                    acts.append(("deliver", i, side))
                    if self.losses_left:
                        acts.append(("lose", i, side))
            quiet = not link.queues[0] and not link.queues[1]
            states = [e.state for e in ends]
            if self.cuts_left and p.State.CLOSED not in states:
                acts.append(("cut", i))
            if quiet and p.State.CLOSED in states and states != [p.State.CLOSED, p.State.CLOSED]:
                acts.append(("timeout", i, states.index(p.State.CLOSED) ^ 1))
            elif quiet and p.State.CLOSED not in states and not self.link_synced(link):
                acts.append(("timeout", i, 0))
            if (
                quiet
                and states == [p.State.CLOSED, p.State.CLOSED]
                and link.reconnects < self.bound.reconnects
            ):
                acts.append(("reconnect", i))
        return acts

    def link_synced(self, link: Link) -> bool:
        assert link.ends is not None
        return all(e.is_synced(NAME) for e in link.ends)

    def apply(self, act: tuple[Any, ...]) -> None:
        kind = act[0]
        if kind == "edit":
            peer = act[1]
            self.edits_left[peer] -= 1
            text = self.docs[peer].text("t")
            text.insert(len(text), "abc"[peer])
        elif kind in ("deliver", "lose"):
            _, i, side = act
            link = self.links[i]
            assert link.ends is not None
            frame = link.queues[side].popleft()
            if kind == "lose":
                self.losses_left -= 1
            else:
                dst = link.ends[1 - side]
                dst.receive_data(frame)
                self.process(link.server if side == 0 else link.client, dst)
        elif kind == "cut":
            link = self.links[act[1]]
            assert link.ends is not None
            self.cuts_left -= 1
            link.queues = [deque(), deque()]
            for side, peer in ((0, link.client), (1, link.server)):
                link.ends[side].receive_eof()
                self.process(peer, link.ends[side])
        elif kind == "timeout":
            _, i, side = act
            link = self.links[i]
            assert link.ends is not None
            end = link.ends[side]
            # Far enough ahead that an idle, ack or handshake timeout is due.
            end.handle_timer(INF)
            end.handle_timer(2 * INF)
            self.process(link.client if side == 0 else link.server, end)
        elif kind == "reconnect":
            link = self.links[act[1]]
            link.reconnects += 1
            self.connect(act[1])
        self.flush()

    # -- checks ----------------------------------------------------------------------------

    def check_safety(self) -> None:
        for link in self.links:
            if link.ends is None:
                continue
            for side, (me, other) in enumerate(
                ((link.client, link.server), (link.server, link.client))
            ):
                if link.ends[side].is_synced(NAME):
                    mine, theirs = self.docs[me].version, self.docs[other].version
                    assert mine <= theirs, (
                        f"S2: peer {me + 1} reports synced but peer {other + 1} lacks its data "
                        f"({dict(mine)} vs {dict(theirs)})"
                    )

    def complete(self) -> None:
        """Fair completion: nothing is lost any more; closed links come back."""
        self.losses_left = 0
        self.cuts_left = 0
        self.edits_left = [0] * len(self.docs)
        for _ in range(10_000):
            acts = self.actions()
            acts = [a for a in acts if a[0] == "deliver"] or acts
            if not acts:
                for i, link in enumerate(self.links):
                    assert link.ends is not None
                    if [e.state for e in link.ends] == [p.State.CLOSED, p.State.CLOSED]:
                        link.reconnects = -(10**6)  # eventual connectivity: always reconnect
                        acts = [("reconnect", i)]
                        break
            if not acts:
                return
            self.apply(acts[0])
            self.check_safety()
        raise AssertionError("L: the completion did not settle")

    def check_liveness(self) -> None:
        want = (self.docs[0].to_py(), self.docs[0].version)
        for i, doc in enumerate(self.docs):
            assert (doc.to_py(), doc.version) == want, (
                f"L1: peer {i + 1} differs: {doc.to_py()} vs {want[0]}"
            )
        for link in self.links:
            assert link.ends is not None
            assert self.link_synced(link), "L2: a session end is not synced"

    def fingerprint(self) -> Any:
        def sess(s: p.Session) -> Any:
            chans = tuple(
                (
                    c.state.value,
                    c.send_seq,
                    c.acked,
                    c.recv_seq,
                    c.recv_acked,
                    c.catch_up_sent,
                    c.local_chan,
                    c.remote_chan,
                )
                for c in s._docs.values()
            )
            return (s.state.value, s._reader.index, s._writer.index, bytes(s._reader.buffer), chans)

        return (
            tuple(tuple(sorted(d.version.items())) for d in self.docs),
            tuple(
                (
                    None if lk.ends is None else tuple(sess(e) for e in lk.ends),
                    tuple(map(tuple, lk.queues)),
                    lk.reconnects,
                )
                for lk in self.links
            ),
            tuple(self.edits_left),
            self.losses_left,
            self.cuts_left,
        )


def explore(world: World, stats: Stats, seen: set[Any], depth: int = 0) -> None:
    stats.states += 1
    stats.max_depth = max(stats.max_depth, depth)
    world.check_safety()
    acts = world.actions()
    if not acts:
        stats.finals += 1
        final = world.clone()
        final.complete()
        final.check_liveness()
        return
    for act in acts:
        nxt = world.clone()
        nxt.apply(act)
        key = nxt.fingerprint()
        if key in seen:
            stats.pruned += 1
            continue
        seen.add(key)
        explore(nxt, stats, seen, depth + 1)


def check(
    peers: int = 2, edits: int = 1, losses: int = 1, cuts: int = 0, reconnects: int = 2
) -> Stats:
    """Explore every schedule within the bound; raise AssertionError on a violation."""
    sys.setrecursionlimit(100_000)
    stats = Stats()
    world = World(Bound(peers, edits, losses, cuts, reconnects))
    explore(world, stats, {world.fingerprint()})
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=2, choices=[2, 3])
    ap.add_argument("--edits", type=int, default=1)
    ap.add_argument("--losses", type=int, default=1)
    ap.add_argument("--cuts", type=int, default=0)
    ap.add_argument("--reconnects", type=int, default=2)
    args = ap.parse_args(argv)
    start = time.time()
    stats = check(args.peers, args.edits, args.losses, args.cuts, args.reconnects)
    print(
        f"peers={args.peers} edits/peer={args.edits} losses={args.losses} cuts={args.cuts} "
        f"reconnects/link={args.reconnects}: {stats.states} states, {stats.finals} final states "
        f"(each completed and checked), {stats.pruned} revisits pruned, "
        f"max depth {stats.max_depth}, "
        f"{time.time() - start:.1f} s: OK"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
