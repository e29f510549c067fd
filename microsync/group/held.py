"""What a group replica keeps in memory for devices it does not admit yet (``docs/membership.md``,
"Who may be stored").

An entry whose device no valid membership operation admitted is never written; it may wait
here, checked, until an operation admits the device. :class:`HeldLimits` bounds the waiting
entries per group and per peer (count and bytes, content and membership entries apart);
:class:`HeldUsage` applies the bounds; :class:`DryStore` is the store a trial replica sees (reads
pass through, metadata writes are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from microsync.feed import Entry
from microsync.group.ops import MEMBERSHIP_TYPE
from microsync.identity import DeviceId

__all__ = ["JOINING", "DryStore", "Held", "HeldLimits", "HeldUsage"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldLimits:
    """How many entries of devices not admitted yet may wait in memory, per group and per
    peer: content entries (``entries``, ``bytes``) and membership entries (``ops``,
    ``op_bytes``). A peer may use ``1 / peer_share`` of each.

    The defaults are a member's: a new member's first entries may arrive before its add, and
    anything else waiting is an attacker's. :data:`JOINING` is for a device not in the group
    yet, which must hold everything up to its own add (the founder's feed up to it, and the
    feeds of members it has not opened the adds of), all from the peer that invited it."""

    entries: int = 2048
    bytes: int = 8 * 2**20
    ops: int = 4096
    op_bytes: int = 16 * 2**20
    peer_share: int = 2


JOINING: Final = HeldLimits(
    entries=65536, bytes=64 * 2**20, ops=8192, op_bytes=32 * 2**20, peer_share=1
)
"""What a device not in the group yet may hold in memory while it bootstraps."""


@dataclass(frozen=True, slots=True)
class Held:
    """An entry of a device not admitted yet, verified, waiting in memory."""

    entry: Entry
    body: bytes | None
    peer: DeviceId | None
    size: int


@dataclass(slots=True)
class HeldUsage:
    """Running totals while choosing which held entries fit (``GroupReplica._keep_held``)."""

    group: dict[bool, list[int]] = field(default_factory=lambda: {True: [0, 0], False: [0, 0]})
    peers: dict[tuple[DeviceId | None, bool], list[int]] = field(default_factory=dict)

    def add(self, held: Held, limits: HeldLimits) -> bool:
        op = held.entry.header.type == MEMBERSHIP_TYPE
        count, size = (limits.ops, limits.op_bytes) if op else (limits.entries, limits.bytes)
        mine = self.peers.setdefault((held.peer, op), [0, 0])
        ours = self.group[op]
        if ours[0] + 1 > count or ours[1] + held.size > size:
            return False
        share = limits.peer_share
        if held.peer is not None and (
            mine[0] + 1 > count // share or mine[1] + held.size > size // share
        ):
            return False
        for totals in (ours, mine):
            totals[0] += 1
            totals[1] += held.size
        return True


class DryStore:
    """A store seen through a trial replica: reads pass through, metadata writes are
    dropped (a trial absorbs operations only to learn whom they admit)."""

    def __init__(self, store: object) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def put_meta(self, key: str, value: bytes) -> None:
        return None
