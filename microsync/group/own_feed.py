"""Where this device's next entry in a group goes: its ``seq`` and the least ``hlc`` it may
carry (issue 19: answered from memory where it can be).

The ``seq`` is one past the feed head the store holds. The least ``hlc`` is one past the head
entry's, so a feed's timestamps strictly increase even when the clock stands still or steps
back ("newest first" never contradicts the order a device wrote in). Only this device's own
entry is read: a peer's timestamps never reach here (the app layer bounds what it derives
from them).

The head entry is usually one the replica already holds: the entry it appended last, or its
last membership entry (the opened membership keeps every one). It is looked up by the head's
id, which names exactly one entry (a hash of its signed header), and used only if it is the
entry at the head's ``seq`` of this device's feed; otherwise the store is read. So the answer
is always the one reading the head entry back gives (``tests/test_rekey_own_feed.py``), also
after a rolled-back write or when another writer moved the head.
"""

from __future__ import annotations

from collections.abc import Callable

from microsync.feed import Entry, EntryId, GroupId
from microsync.group.member import GroupStore
from microsync.identity import DeviceId

__all__ = ["OwnFeed"]


class OwnFeed:
    """This device's feed in ``group``: :meth:`next` position, :attr:`last` entry written."""

    __slots__ = ("device", "group", "last")

    def __init__(self, group: GroupId, device: DeviceId) -> None:
        self.group = group
        self.device = device
        self.last: Entry | None = None
        """The entry this replica appended last (a hint: checked against the head)."""

    def __repr__(self) -> str:
        return f"OwnFeed({self.group.hex()[:8]}, {self.device.hex()[:8]})"

    def next(self, store: GroupStore, held: Callable[[EntryId], Entry | None]) -> tuple[int, int]:
        """``(seq, least hlc)`` of the next entry (module doc); ``held``: an entry this
        replica holds in memory by its id, or ``None``."""
        status = store.feed_status(self.group, self.device)
        head = status.head_seq
        if not head:
            return 1, 0
        previous = self._held(head, status.head_id, held)
        if previous is None:
            stored = store.entry_at(self.group, self.device, head)
            if stored is None:
                return head + 1, 0
            previous = stored.entry
        return head + 1, previous.header.hlc + 1

    def _held(
        self, head: int, head_id: EntryId | None, held: Callable[[EntryId], Entry | None]
    ) -> Entry | None:
        if head_id is None:
            return None
        last = self.last
        found = last if last is not None and last.id == head_id else held(head_id)
        if found is None or found.id != head_id:
            return None
        h = found.header
        return found if h.seq == head and h.device == self.device else None
