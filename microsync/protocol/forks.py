"""What a sync session needs to catch forks: the optional :class:`ForkHost` port, the
comparison of a peer's frontier with what this device holds, and one group's exchange of
conflicts and evidence in a session (:class:`ForkExchange`).

Theory of operation (``docs/sync.md``, "Forks and stale views")
---------------------------------------------------------------
A frontier names, per feed, the head ``seq`` and the head's entry id: a statement, by the peer,
that its copy of the feed ends with *that* signed entry. Where this device holds the feed at
least that far, it compares the id with its own entry at that ``seq`` (:func:`compare_heads`):

* the same id: the peer's view is a prefix of ours. When the peer serves us (its frontier is
  its whole view) and it is shorter, the peer serves a **stale** (old or partial) view of that
  feed;
* another id: the device signed two entries at that position (or earlier): a **fork**. The
  session sends the peer its own entries from there back (``Conflict``), the peer keeps the
  lowest pair that differs as evidence, and evidence is passed on (``FORK_EVIDENCE``) to every
  peer served, so every device that syncs learns it.

Invariant: the comparison reads only what the host already holds; it never asks the peer for
anything, so a stale or lying peer costs at most one ``Conflict`` per feed per frontier. The
exchange tells the peer an entry only where :meth:`Served.may_tell` allows it, and takes at
most ``SyncOptions.max_conflicts`` conflicts per group per session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from microsync.errors import DecodeError, RemoteProtocolError, VerificationError
from microsync.feed.entry import EntryId, GroupId, feed_position, parse_entry
from microsync.feed.ingest import Conflicted
from microsync.identity import DeviceId
from microsync.protocol.messages import (
    SIGNATURE_SIZE,
    Conflict,
    ForkEvidenceMessage,
    FrontierHead,
)
from microsync.protocol.sync.link import Link

__all__ = ["ForkExchange", "ForkHost", "HeadCheck", "Served", "compare_heads"]


@runtime_checkable
class ForkHost(Protocol):
    """Optional: what a host adds to :class:`~microsync.protocol.session.SyncHost` to catch
    forks. Its ``frontier`` must then name, for a forked feed, the entry just before the fork
    (what every device that knows the fork agrees on)."""

    def forks(self, group: GroupId) -> Mapping[DeviceId, int]:
        """Per forked feed of ``group``: the lowest ``seq`` it is known to be forked at."""
        ...

    def fork_evidence(self, group: GroupId) -> list[tuple[DeviceId, int, bytes, bytes]]:
        """Per forked feed: ``(device, seq, first, second)``, the two signed entries (wire
        forms) at its fork point."""
        ...

    def entry_wires(self, group: GroupId, device: DeviceId, seq: int, limit: int) -> list[bytes]:
        """This device's entries of one feed (wire forms) at ``seq``, ``seq - 1``, ... (at most
        ``limit``); empty when it does not hold ``seq``."""
        ...

    def accept_fork_evidence(
        self, group: GroupId, peer: DeviceId, first: bytes, second: bytes
    ) -> bool:
        """Verify and keep evidence a peer passed on (``feed.ingest.accept_fork_evidence``);
        ``True`` when it lowered a fork point here. ``DecodeError`` / ``VerificationError``
        for a pair that proves nothing."""
        ...

    def accept_conflict(
        self, group: GroupId, peer: DeviceId, entries: Sequence[bytes]
    ) -> Conflicted | None:
        """Compare a peer's run of one feed with ours and keep the lowest differing pair
        (``feed.ingest.accept_conflict``)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadCheck:
    """A peer's frontier against ours: feeds where the peer's head is another entry than
    ours at that ``seq`` (device, seq), and feeds where it is ours but older (device ->
    (peer's seq, ours))."""

    conflicts: tuple[tuple[DeviceId, int], ...] = ()
    stale: Mapping[DeviceId, tuple[int, int]] | None = None


def compare_heads(
    heads: Sequence[FrontierHead],
    ours: Mapping[DeviceId, tuple[int, EntryId]],
    forks: Mapping[DeviceId, int],
    wire_at: Callable[[DeviceId, int], bytes | None],
) -> HeadCheck:
    """Compare the peer's ``heads`` with ``ours`` (this device's frontier, forked feeds cut
    before their fork). ``wire_at(device, seq)``: our entry there, for feeds where we are
    ahead. Feeds already known forked at or below the peer's head are left out (the evidence
    covers them); so are feeds where the peer is ahead (the peer compares those)."""
    conflicts: list[tuple[DeviceId, int]] = []
    stale: dict[DeviceId, tuple[int, int]] = {}
    named = set()
    for head in heads:
        device = DeviceId(head.device)
        named.add(device)
        mine = ours.get(device)
        if mine is None or forks.get(device, head.seq + 1) <= head.seq or mine[0] < head.seq:
            continue
        seq, entry = mine
        if seq > head.seq:
            wire = wire_at(device, head.seq)
            entry = parse_entry(wire).id if wire is not None else EntryId(head.head)
        if entry != head.head:
            conflicts.append((device, head.seq))
        elif seq > head.seq:
            stale[device] = (head.seq, seq)
    stale.update({d: (0, seq) for d, (seq, _) in ours.items() if d not in named})
    return HeadCheck(conflicts=tuple(conflicts), stale=stale)


class Served(Protocol):
    """What the fork exchange needs from the group's reconciliation."""

    @property
    def peer_serves(self) -> bool:
        """The peer said (in its ``Digest``) that it serves us."""
        ...

    def may_tell(self, device: DeviceId, seq: int) -> bool:
        """May the peer be sent our entry of ``device``'s feed at ``seq``?"""
        ...

    def assume_held(self, device: DeviceId, seq: int) -> None:
        """Count the peer as holding ``device``'s feed up to ``seq`` (ours will not chain)."""
        ...

    def send_certificates(self) -> None:
        """Send the certificates the peer lacks."""
        ...


class ForkExchange:
    """One matched group's fork evidence and conflicts in a session. Its messages
    (``CONFLICT``, ``FORK_EVIDENCE``) never change the group's phase."""

    def __init__(self, link: Link, group: GroupId, served: Served) -> None:
        self._link, self.group, self._served = link, group, served
        self.host = link.host if isinstance(link.host, ForkHost) else None
        self.shared: dict[DeviceId, int] = {}  # evidence sent or received, per feed
        self.conflicts_out = 0  # Conflicts sent to a peer that serves us, not answered yet
        self.conflicts_in = 0

    def forks(self) -> Mapping[DeviceId, int] | None:
        """The host's fork points of the group (``None``: the host does not track forks)."""
        return None if self.host is None else self.host.forks(self.group)

    def share(self, *, also: DeviceId | None = None) -> None:
        """Send the evidence of every fork the peer is not known to hold (and of ``also``'s
        feed in any case), with the certificates it needs to check it."""
        if self.host is None:
            return
        fresh = [
            (device, seq, first, second)
            for device, seq, first, second in self.host.fork_evidence(self.group)
            if (seq < self.shared.get(device, seq + 1) or device == also)
            and self._served.may_tell(device, seq)
        ]
        if not fresh:
            return
        self._served.send_certificates()
        for device, seq, first, second in fresh:
            self.shared[device] = seq
            self._link.send(ForkEvidenceMessage(group=self.group, first=first, second=second))

    def check_heads(self, heads: tuple[FrontierHead, ...]) -> None:
        """Compare the peer's frontier with what we hold: a different head at a position we
        hold is a fork (we send ours from there back); an older one, from a peer that serves
        us, is a stale view (counted)."""
        host = self.host
        if host is None:
            return
        ours = self._link.host.frontier(self.group)
        check = compare_heads(
            heads,
            ours,
            host.forks(self.group),
            lambda d, seq: next(iter(host.entry_wires(self.group, d, seq, 1)), None),
        )
        if self._served.peer_serves and check.stale:
            self._link.stats.stale.update(check.stale)
        for device, seq in check.conflicts:
            if self._send_conflict(device, seq):  # ours from there on will not chain
                self._served.assume_held(device, ours[device][0])

    def _send_conflict(self, device: DeviceId, seq: int) -> bool:
        if self.host is None or not self._served.may_tell(device, seq):
            return False
        limit = self._link.options.limits.max_conflict_entries
        run = self.host.entry_wires(self.group, device, seq, limit)
        if run:
            self._link.send(Conflict(group=self.group, entries=tuple(run)))
            self.conflicts_out += self._served.peer_serves  # a peer that serves us answers it
        return bool(run)

    def on_conflict(self, m: Conflict) -> None:
        """The peer's own entries where it saw ours differ: keep the fork, then pass the
        evidence back, or, when the feeds differ further back still, our entries below."""
        if self.host is None:
            return
        self.conflicts_out = max(0, self.conflicts_out - 1)  # the answer to ours, or its own
        self.conflicts_in += 1
        if self.conflicts_in > self._link.options.max_conflicts:  # each costs an answer
            raise RemoteProtocolError("more conflicts than a walk back needs")
        try:
            found = self.host.accept_conflict(m.group, self._link.peer, m.entries)
            device, _ = feed_position(m.entries[0][:-SIGNATURE_SIZE])
        except (DecodeError, VerificationError):
            raise RemoteProtocolError("a conflict that is not a signed run of one feed") from None
        self._link.stats.forks_learnt += found is not None
        if found is not None and found.earlier:
            self._send_conflict(found.device, found.seq - 1)
        else:  # always answered with the evidence held, so the peer may stop waiting
            self.share(also=device)

    def on_fork_evidence(self, m: ForkEvidenceMessage) -> None:
        """Evidence of a fork the peer passed on: verify and keep it."""
        if self.host is None:
            return
        self.conflicts_out = max(0, self.conflicts_out - 1)
        try:
            lowered = self.host.accept_fork_evidence(m.group, self._link.peer, m.first, m.second)
            device, seq = feed_position(m.first[:-SIGNATURE_SIZE])
        except (DecodeError, VerificationError):
            raise RemoteProtocolError("fork evidence that does not verify") from None
        self.shared[device] = min(seq, self.shared.get(device, seq))
        self._link.stats.forks_learnt += lowered
