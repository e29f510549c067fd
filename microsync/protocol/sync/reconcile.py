"""Reconciliation of one matched group: compare digests, swap frontiers, stream what the peer
lacks, and end with one ``DONE`` each way; then stay LIVE and push new entries.

Theory of operation (``docs/sync.md``, "States and the transition table")
----------------------------------------------------------------------
Each side sent its ``DIGEST`` when it matched the group. Equal digests: LIVE at once. A side
that serves the peer sends its ``FRONTIER`` and waits for the peer's; a side only served
waits for the peer's frontier and answers it with its own clamped to it; when neither serves,
both just send ``DONE``. After the frontiers each side streams (``ENTRIES``, within the credit
the peer granted) and ends its stream with ``DONE``. The end is two phases, not two flags:
SYNCING (both still stream), AWAIT_DONE (ours is sent), SENDING (the peer's came), and LIVE
once both are through. A message moves the phase only through :data:`RECONCILE`; this side's
own ``DONE`` moves it through :data:`OUR_DONE`; :meth:`Reconcile.enter` is the one place the
phase is set.

Invariants: entries go only to a peer :meth:`Reconcile.serves` admits (a former member: only
up to its exit); the peer's entries spend the credit granted to it, or the session closes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from microsync import encoding
from microsync.crypto import labelled_hash, labels
from microsync.errors import RemoteProtocolError
from microsync.feed.entry import EntryId, GroupId
from microsync.identity import DeviceId
from microsync.protocol.forks import ForkExchange
from microsync.protocol.messages import (
    Certificates,
    Credit,
    Digest,
    Done,
    Entries,
    Frontier,
    FrontierHead,
    Item,
    MsgType,
    batch_size,
)
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.stream import (
    PeerView,
    needs_certificates,
    note_held,
    position,
    send_certificates,
    take,
)
from microsync.protocol.sync.table import Row

__all__ = [
    "FORK_EXCHANGE",
    "OUR_DONE",
    "RECONCILE",
    "STREAMING",
    "SYNC_FRONTIER_DIGEST",
    "GroupPhase",
    "Reconcile",
    "frontier_digest",
]

SYNC_FRONTIER_DIGEST: Final = labels.SYNC_FRONTIER_DIGEST


class GroupPhase(enum.Enum):
    """Where one matched group stands in a session."""

    AWAIT_DIGEST = "await-digest"
    AWAIT_FRONTIER = "await-frontier"
    SYNCING = "syncing"  # both sides stream
    AWAIT_DONE = "await-done"  # our DONE is sent; the peer streams on
    SENDING = "sending"  # the peer's DONE came; we stream on
    LIVE = "live"


STREAMING: Final = (GroupPhase.SYNCING, GroupPhase.AWAIT_DONE, GroupPhase.SENDING, GroupPhase.LIVE)
"""The phases after the frontiers: entries, certificates and key messages flow."""

OUR_DONE: Final[dict[GroupPhase, GroupPhase]] = {
    GroupPhase.SYNCING: GroupPhase.AWAIT_DONE,
    GroupPhase.SENDING: GroupPhase.LIVE,
}
"""The one move no message makes: this side's stream ended, it sent its ``DONE``."""


def frontier_digest(
    frontier: Mapping[DeviceId, tuple[int, EntryId]], forks: Mapping[DeviceId, int] | None = None
) -> bytes:
    """A hash of a frontier: over the sorted ``(device, seq, head id)`` triples, and, when some
    feeds are known forked, ``[triples, sorted (device, fork seq) pairs]``."""
    rows: list[encoding.Value] = [[d, s, h] for d, (s, h) in sorted(frontier.items())]
    if forks:
        marks: list[encoding.Value] = [[d, s] for d, s in sorted(forks.items())]
        rows = [rows, marks]
    return labelled_hash(SYNC_FRONTIER_DIGEST, encoding.encode(rows))


class Reconcile:
    """One matched group's reconciliation (and its fork exchange, :attr:`forks`)."""

    def __init__(self, link: Link, group: GroupId) -> None:
        self._link, self.group = link, group
        self.phase = GroupPhase.AWAIT_DIGEST
        self.view = PeerView(group)
        self.forks: ForkExchange = ForkExchange(link, group, self)
        self.snapshot: dict[DeviceId, int] = {}  # the frontier we digested
        self.digest = b""  # the digest we sent
        self.serving = False  # what we told the peer in our Digest, updated as views change
        self.peer_serves = False
        self.certs_received = 0

    def enter(self, phase: GroupPhase) -> None:
        """Move to ``phase``: the one place the phase changes (from a table row, or
        :data:`OUR_DONE`)."""
        self.phase = phase

    def open(self) -> None:
        """The group matched: send our ``Digest``."""
        heads = self._link.host.frontier(self.group)
        self.snapshot = {d: seq for d, (seq, _) in heads.items()}
        self.digest = frontier_digest(heads, self.forks.forks())
        self.serving = self.serves()
        self._link.send(Digest(group=self.group, digest=self.digest, serving=self.serving))

    # ------------------------------------------------------------------ who is served

    def serves(self) -> bool:
        """May the peer be sent entries: a member's device in our view, or a former one, up
        to the operation that put it out (so it learns it is out, and nothing more)."""
        host, view = self._link.host, self.view
        if host.may_serve(self.group, self._link.peer):
            view.limit = None
            return True
        exit_limit = getattr(host, "exit_limit", None)  # ExitHost
        limit = None if exit_limit is None else exit_limit(self.group, self._link.peer)
        view.limit = None if limit is None else {d: seq for d, (seq, _) in limit.items()}
        view.limit_heads = {} if limit is None else dict(limit)
        return view.limit is not None

    def may_tell(self, device: DeviceId, seq: int) -> bool:
        """May the peer be sent our entry of ``device``'s feed at ``seq`` (in a conflict or in
        evidence): it is served, and a former member only within the causal past of its exit."""
        limit = self.view.limit
        return self.serves() and (limit is None or seq <= limit.get(device, 0))

    def assume_held(self, device: DeviceId, seq: int) -> None:
        self.view.known[device] = max(seq, self.view.known.get(device, 0))

    def send_certificates(self) -> None:
        send_certificates(self._link, self.view)

    # ------------------------------------------------------------------ handlers

    def on_digest(self, m: Digest) -> GroupPhase:
        self.peer_serves = m.serving
        if m.digest == self.digest:  # both sides compare the same two digests: one decision
            self.view.known, self.view.knows = dict(self.snapshot), True
            self._go_live()
            self._link.keys_soon(self.group)
            return GroupPhase.LIVE
        if self.serving:  # the peer is a member in our view: it may see our frontier
            self.forks.share()  # before the frontier: the peer serves us nothing forked
            view = self.view
            ours = view.limit_heads if view.limit is not None else self._link.host.frontier(m.group)
            heads = sorted(ours.items())
            self._send_frontier([FrontierHead(device=d, seq=s, head=h) for d, (s, h) in heads])
            return GroupPhase.AWAIT_FRONTIER
        if m.serving:  # answer its frontier with ours clamped to it: it learns nothing new
            return GroupPhase.AWAIT_FRONTIER
        self._link.send(Done(group=self.group))  # neither side sends entries
        return GroupPhase.AWAIT_DONE

    def on_frontier(self, m: Frontier) -> GroupPhase:
        view = self.view
        view.known, view.knows = {DeviceId(h.device): h.seq for h in m.heads}, True
        view.newest_budget = self._link.options.newest_first_window if m.newest_first else 0
        self.forks.check_heads(m.heads)
        if self.serving:
            view.certs_due = True
            self._link.push_soon(self.group)
            return GroupPhase.SYNCING
        if self.peer_serves:
            self._send_frontier(self._clamped(m.heads))
        self._link.send(Done(group=self.group))
        return GroupPhase.AWAIT_DONE

    def on_certificates(self, m: Certificates) -> None:
        self.certs_received += len(m.certificates)
        if self.certs_received > self._link.options.limits.max_feeds:
            raise RemoteProtocolError("more certificates than a group has feeds")
        self._link.host.learn_certificates(m.certificates)

    def on_entries(self, m: Entries) -> None:
        link, size = self._link, m.size
        link.window = link.window.take(size)
        for wire, _ in m.items:
            note_held(self.view.known, wire)
        if link.receiver is not None:
            accepted = link.receiver.receive_from(m.group, link.peer, m.items)
        else:
            accepted = link.host.receive(m.group, m.items)
        link.stats.entries_received += len(m.items)
        link.stats.entries_accepted += accepted
        link.stats.bytes_received += size
        link.window = link.window.give_back(size)
        link.send(Credit(batches=1, bytes=size))
        if not self.serving:
            self._reconsider_serving()
        if self.phase in (GroupPhase.SENDING, GroupPhase.LIVE):  # the peer's stream ended
            link.keys_soon(self.group)

    def on_done(self, m: Done) -> GroupPhase:
        self._link.keys_soon(self.group)
        if self.phase is GroupPhase.AWAIT_DONE:
            self._go_live()
            return GroupPhase.LIVE
        return GroupPhase.SENDING

    # ------------------------------------------------------------------ streaming

    def push(self) -> bool:
        """Push entries until none are left (True) or the credit runs out (False)."""
        link, view = self._link, self.view
        if not view.knows or not self.serves():
            self.serving = False
            return self._exhausted()
        while True:
            credit = link.credit
            if credit.batches < 1:
                return False
            items = take(link, view, min(link.options.batch_bytes, credit.bytes))
            if items is None:
                return False
            if not items:
                return self._exhausted()
            due = view.certs_due or (view.certs_check and needs_certificates(view, items))
            self._send(items, due)
            if view.drained:  # a live push: one entry, all there was; no second look
                return self._exhausted()

    def push_fresh(self, items: Sequence[Item]) -> bool:
        """Push ``items``, this device's own entries handed over after their commit, without
        asking the host, when they are exactly what the peer lacks: LIVE, the last push took
        everything the host had (nothing waits for credit), each item the next of its feed
        after what the peer holds, and the batch fits the credit. ``False`` (nothing done)
        otherwise: the caller takes the general path. As on every push, ``serves`` is asked
        first and the certificates go first when due or when the batch may need new ones."""
        link, view, items = self._link, self.view, tuple(items)
        if not self._takes_fresh() or not self.serves() or view.limit is not None:
            return False  # ``serves`` may have just found a former member: only up to its exit
        after = dict(view.known)
        for wire, _ in items:
            device, seq = position(wire)
            if seq != after.get(DeviceId(device), 0) + 1:
                return False  # a gap or a repeat: the host knows what the peer lacks
            after[DeviceId(device)] = seq
        size = batch_size(items)
        credit = link.credit
        if len(items) > link.options.batch_entries or credit.batches < 1:
            return False
        if size > min(link.options.batch_bytes, credit.bytes):
            return False
        view.known = after
        self._send(items, view.certs_due or needs_certificates(view, items))
        return self._exhausted()

    def _takes_fresh(self) -> bool:
        view = self.view
        return (
            self.phase is GroupPhase.LIVE
            and self.serving
            and view.knows
            and view.drained
            and view.limit is None
            and view.newest_budget == 0
            and not view.sent_ahead
            and self.group not in self._link.dirty
        )

    def _send(self, items: Sequence[Item], certificates: bool) -> None:
        """One ``ENTRIES`` batch, after the certificates of the group if due (just before
        entries, so none are sent when nothing is due)."""
        link, view = self._link, self.view
        if certificates:
            view.certs_due = view.certs_check = False
            self.send_certificates()
        view.fed.update(position(wire)[0] for wire, _ in items)
        batch = Entries(group=self.group, items=tuple(items))
        link.credit = link.credit.spend(batch.size)
        link.stats.entries_sent += len(items)
        link.stats.bytes_sent += batch.size
        link.send(batch)

    def _exhausted(self) -> bool:
        self._link.dirty.pop(self.group, None)
        self.view.certs_check = False  # every entry of the update was sent (or checked)
        after = OUR_DONE.get(self.phase)
        if after is not None:
            self._link.send(Done(group=self.group))
            self.enter(after)
        return True

    def _go_live(self) -> None:
        self.serving = self.serves()
        if self.serving:  # anything appended since the digest
            self.view.certs_due = True
            self._link.push_soon(self.group)

    def _reconsider_serving(self) -> None:
        """Entries from the peer may have shown it is a member after all (an add we lacked)."""
        if self.view.knows and self.serves():
            self.serving = self.view.certs_due = True
            self._link.push_soon(self.group)

    def _send_frontier(self, heads: list[FrontierHead]) -> None:
        rows = tuple(heads[: self._link.options.limits.max_feeds])
        newest = self._link.options.newest_first
        self._link.send(Frontier(group=self.group, heads=rows, newest_first=newest))

    def _clamped(self, theirs: tuple[FrontierHead, ...]) -> list[FrontierHead]:
        """Our frontier cut down to the peer's: where we are ahead we claim only its head."""
        ours = self._link.host.frontier(self.group)
        rows = []
        for head in theirs:
            mine = ours.get(DeviceId(head.device))
            if mine is None:
                continue
            seq, entry = mine
            rows.append(head if seq >= head.seq else replace(head, seq=seq, head=entry))
        return rows


_G = GroupPhase

RECONCILE: Final[dict[tuple[GroupPhase, MsgType], Row[Reconcile, Any, GroupPhase]]] = {
    (_G.AWAIT_DIGEST, MsgType.DIGEST): Row(
        Reconcile.on_digest, (_G.LIVE, _G.AWAIT_FRONTIER, _G.AWAIT_DONE)
    ),
    (_G.AWAIT_FRONTIER, MsgType.FRONTIER): Row(Reconcile.on_frontier, (_G.SYNCING, _G.AWAIT_DONE)),
    (_G.SYNCING, MsgType.DONE): Row(Reconcile.on_done, (_G.SENDING,)),
    (_G.AWAIT_DONE, MsgType.DONE): Row(Reconcile.on_done, (_G.LIVE,)),
    **{
        (p, MsgType.CERTIFICATES): Row(Reconcile.on_certificates)
        for p in (_G.AWAIT_FRONTIER, *STREAMING)
    },
    **{(p, MsgType.ENTRIES): Row(Reconcile.on_entries) for p in STREAMING},
}
"""Reconciliation: (phase of the group, message type) -> (handler, next phases)."""

FORK_EXCHANGE: Final[dict[tuple[GroupPhase, MsgType], Row[ForkExchange, Any, GroupPhase]]] = {
    # evidence may precede the frontier; a conflict answers one
    **{
        (p, MsgType.FORK_EVIDENCE): Row(ForkExchange.on_fork_evidence)
        for p in (_G.AWAIT_FRONTIER, *STREAMING)
    },
    **{(p, MsgType.CONFLICT): Row(ForkExchange.on_conflict) for p in STREAMING},
}
"""The fork exchange of a group (:class:`~microsync.protocol.forks.ForkExchange`): the phase
stays."""
