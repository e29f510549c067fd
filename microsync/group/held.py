"""What a group replica keeps in memory for devices it does not admit yet (``docs/membership.md``,
"Who may be stored").

An entry whose device no valid membership operation admitted is never written; it may wait
here, checked, until an operation admits the device. :class:`HeldLimits` bounds the waiting
entries per group and per peer (count and bytes, content and membership entries apart);
:class:`HeldUsage` applies the bounds; :class:`DryStore` is the store a trial replica sees (reads
pass through, metadata writes are dropped); :class:`Waiting` is what waits while one batch is
received, indexed by device so a batch re-screens only what it can admit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from microsync.crypto import labels
from microsync.crypto.batch import PARALLEL_AT, BatchVerify
from microsync.errors import VerificationError
from microsync.feed import Entry, EntryId
from microsync.group.ops import MEMBERSHIP_TYPE
from microsync.identity import DeviceId

__all__ = [
    "JOINING",
    "DryStore",
    "Held",
    "HeldBuffer",
    "HeldLimits",
    "HeldUsage",
    "Waiting",
    "bad_signatures",
]


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
    """An entry of a device not admitted yet, verified, waiting in memory (its signature is
    never checked again when it is stored)."""

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

    def remove(self, held: Held) -> None:
        """Give back what :meth:`add` counted for ``held`` (it was stored)."""
        op = held.entry.header.type == MEMBERSHIP_TYPE
        for totals in (self.group[op], self.peers[(held.peer, op)]):
            totals[0] -= 1
            totals[1] -= held.size


class HeldBuffer:
    """The entries held across batches: in the order they came, by device, the membership
    ones apart, and their :class:`HeldUsage` under :attr:`limits`, kept up to date as entries
    come and go (counted again only when the limits change)."""

    def __init__(self, limits: HeldLimits) -> None:
        self.entries: dict[EntryId, Held] = {}
        self.by_device: dict[DeviceId, dict[EntryId, Held]] = {}
        self.ops: dict[EntryId, Held] = {}
        self.usage = HeldUsage()
        self.limits = limits

    def __repr__(self) -> str:
        return f"HeldBuffer({len(self.entries)} held)"

    def hold(self, held: Held) -> None:
        """Keep ``held`` (already counted in :attr:`usage`)."""
        entry_id = held.entry.id
        self.entries[entry_id] = held
        self.by_device.setdefault(held.entry.header.device, {})[entry_id] = held
        if held.entry.header.type == MEMBERSHIP_TYPE:
            self.ops[entry_id] = held

    def forget(self, entry_id: EntryId) -> None:
        """Drop a held entry (it was stored) and uncount it."""
        self.usage.remove(self._drop(entry_id))

    def _drop(self, entry_id: EntryId) -> Held:
        held = self.entries.pop(entry_id)
        device = held.entry.header.device
        mine = self.by_device[device]
        del mine[entry_id]
        if not mine:
            del self.by_device[device]
        self.ops.pop(entry_id, None)
        return held

    def recount(self, limits: HeldLimits) -> None:
        """Count what is held again under new ``limits``, forgetting what no longer fits (in
        the order it came)."""
        self.usage, self.limits = HeldUsage(), limits
        for entry_id, held in list(self.entries.items()):
            if not self.usage.add(held, limits):
                self._drop(entry_id)  # never counted under these limits


Pooled = tuple[int | None, Held]
"""A waiting entry and its index in the batch being received (``None``: held earlier)."""


@dataclass(slots=True)
class Waiting:
    """What waits while one batch is received: the entries held from earlier batches
    (``old``, by device; read, never changed here, so a failed batch leaves them as they were)
    and this batch's own (``fresh``, by device). Taking a device's admitted entries costs what
    that device has waiting, so a batch that admits nobody costs nothing per held entry."""

    old: dict[DeviceId, dict[EntryId, Held]]
    fresh: dict[DeviceId, list[Pooled]] = field(default_factory=dict)
    gone: set[EntryId] = field(default_factory=set)
    """Entries held earlier that this batch took (to store)."""
    taken: dict[DeviceId, int] = field(default_factory=dict)  # the last up_to per device

    def add(self, item: Pooled) -> None:
        self.fresh.setdefault(item[1].entry.header.device, []).append(item)

    def devices(self) -> set[DeviceId]:
        """Every device with an entry waiting (perhaps all taken)."""
        return self.old.keys() | self.fresh.keys()

    def of(self, device: DeviceId) -> Iterator[Held]:
        """``device``'s entries still waiting."""
        for held in self.old.get(device, {}).values():
            if held.entry.id not in self.gone:
                yield held
        for _, held in self.fresh.get(device, ()):
            yield held

    def take(self, device: DeviceId, up_to: int) -> list[Pooled]:
        """Remove and return ``device``'s waiting entries at seq 1 to ``up_to``."""
        ready: list[Pooled] = []
        if up_to > self.taken.get(device, 0):  # else: nothing held earlier is newly in reach
            self.taken[device] = up_to
            for held in self.old.get(device, {}).values():
                if held.entry.id not in self.gone and 1 <= held.entry.header.seq <= up_to:
                    self.gone.add(held.entry.id)
                    ready.append((None, held))
        fresh = self.fresh.get(device)
        if fresh:
            keep: list[Pooled] = []
            for item in fresh:
                (ready if 1 <= item[1].entry.header.seq <= up_to else keep).append(item)
            self.fresh[device] = keep
        return ready


class DryStore:
    """A store seen through a trial replica: reads pass through, metadata writes are
    dropped (a trial absorbs operations only to learn whom they admit)."""

    def __init__(self, store: object) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def put_meta(self, key: str, value: bytes) -> None:
        return None


def bad_signatures(entries: list[Entry], verify: BatchVerify) -> set[EntryId]:
    """Which of ``entries`` do not verify: one ``verify`` call for a batch worth it (it may use
    every core), else one by one."""
    if len(entries) < PARALLEL_AT:
        bad = set()
        for entry in entries:
            try:
                entry.verify_signature()
            except VerificationError:
                bad.add(entry.id)
        return bad
    signed = [(e.header.device, e.header_bytes, e.signature) for e in entries]
    verdicts = verify(labels.ENTRY_SIGNATURE, signed)
    return {e.id for e, ok in zip(entries, verdicts, strict=True) if not ok}
