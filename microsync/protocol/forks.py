"""What a sync session needs to catch forks: the optional :class:`ForkHost` port, and the
comparison of a peer's frontier with what this device holds.

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
anything, so a stale or lying peer costs at most one ``Conflict`` per feed per frontier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from microsync.feed.entry import EntryId, GroupId, parse_entry
from microsync.feed.ingest import Conflicted
from microsync.identity import DeviceId
from microsync.protocol.messages import FrontierHead

__all__ = ["ForkHost", "HeadCheck", "compare_heads"]


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
