"""The pull side of a device's link to a keeper: catch-up pages, the newest-first window, live.

Theory of operation
-------------------
A :class:`KeeperPull` (one per :class:`~microsync.node.keeper_link.GroupKeeperLink`) takes in
what a keeper holds for its group, mailbox by mailbox:

* **Catch-up.** From the mailbox's durable cursor on, oldest first. The client asks the keeper
  for the next page as soon as the current one has arrived (:meth:`KeeperClient.pull
  <microsync.net.keeper_client.KeeperClient.pull>` pipelines its requests), so the keeper reads
  and sends page *n + 1* while this device takes in page *n*: each page of :data:`PAGE` items
  (at most :data:`PAGE_BYTES`) is handed whole to the sync receive path
  (:meth:`DeviceHost.receive <microsync.node.host.DeviceHost.receive>`: every check of a peer
  sync applies), one batch, one transaction, as a peer's batch is.
* **Newest first.** A mailbox pulled from a keeper for the first time (cursor 0) first takes
  its newest :data:`NEWEST_FIRST` items, oldest of them first, without moving the cursor: a
  newcomer holds the latest posts (and its own add, written last) early, as a peer sync's
  newest-first window does. They wait in the feed layer's pending buffer until the oldest-first
  pull fills the gap before them.
* **Live.** A watch of the current epoch's mailbox on a connection of its own, each item taken
  in as it lands.

Invariants: the cursor moves only after what its page carries was stored here (the cursor is
written after the receive's commit; both are copies of what the keeper holds, so neither needs
an fsync of its own: a power cut rolls back to an earlier cursor, and the items are pulled
again). An item that does not open (the client counts it) or decode is skipped and counted;
an entry that fails a check is counted in ``Device.refused``, as from a peer. An entry this
device now holds because it was pulled from this keeper is marked acknowledged there (it need
not be pushed back), read from the receive path's own results: no second parse, no query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from microsync.errors import DecodeError, MicrosyncError
from microsync.feed import Ingested
from microsync.feed.ingest import Outcome
from microsync.group.mailbox import Mailbox
from microsync.net.keeper_client import KeeperClient, Pulled
from microsync.node import keeper_state as saved
from microsync.protocol.keeper import MAX_PAGE

if TYPE_CHECKING:
    from microsync.node.keeper_link import GroupKeeperLink

__all__ = ["NEWEST_FIRST", "PAGE", "PAGE_BYTES", "KeeperPull"]

PAGE: Final = MAX_PAGE
"""At most this many items taken in per receive batch (one transaction): one keeper page, so
the next page is on its way while this one is taken in ..."""
PAGE_BYTES: Final = 8 << 20
"""... and at most about this many bytes (memory stays bounded whatever a mailbox holds)."""
NEWEST_FIRST: Final = 1024
"""A mailbox's first pull from a keeper takes this many of its newest items first, as a peer
sync's newest-first window (``docs/sync.md``), then everything oldest first."""


class KeeperPull:
    """What ``link`` takes in from its keeper (see the module docstring)."""

    def __init__(self, link: GroupKeeperLink) -> None:
        self.link = link

    async def pull(self, work: KeeperClient, mailbox: Mailbox) -> None:
        """Everything in ``mailbox`` after its cursor (its newest items first, the first time)."""
        keeper = work.keeper_id
        after = self.cursor(keeper, mailbox)
        if after == 0:
            await self.pull_newest(work, mailbox)
        page: list[Pulled] = []
        size = 0
        async for item in work.pull(mailbox, after=after):
            page.append(item)
            size += len(item.data)
            if len(page) >= PAGE or size >= PAGE_BYTES:
                self.take_in(keeper, mailbox, page)
                page, size = [], 0
        if page:
            self.take_in(keeper, mailbox, page)

    async def pull_newest(self, work: KeeperClient, mailbox: Mailbox) -> None:
        """The newest :data:`NEWEST_FIRST` items, oldest of them first, cursor unmoved (the
        oldest-first pull after it takes everything: a cut here loses nothing)."""
        page: list[Pulled] = []
        size = 0
        newest = work.pull_newest(mailbox, limit=NEWEST_FIRST)
        async with contextlib.aclosing(newest) as items:  # may stop early (bytes)
            async for item in items:
                page.append(item)
                size += len(item.data)
                if size >= PAGE_BYTES:
                    break
        if page:
            self.take_in(work.keeper_id, mailbox, page[::-1], advance=False)

    async def live(self, mailbox: Mailbox) -> None:
        """Watch ``mailbox`` on a connection of its own, taking in each item as it lands."""
        async with await KeeperClient.connect(self.link.url) as live:
            keeper = live.keeper_id
            async for item in live.watch(mailbox, after=self.cursor(keeper, mailbox)):
                self.take_in(keeper, mailbox, [item])

    def cursor(self, keeper: bytes, mailbox: Mailbox) -> int:
        """The last cursor of ``mailbox`` at the keeper database ``keeper`` taken in here."""
        group = self.link._held()
        return 0 if group is None else saved.load_cursor(group._replica.store, keeper, mailbox.id)

    def take_in(
        self, keeper: bytes, mailbox: Mailbox, page: list[Pulled], *, advance: bool = True
    ) -> None:
        """Store what ``page`` carries through the sync receive path, then (``advance``) move
        the cursor (an entry this device already holds, or refuses, changes nothing)."""
        link = self.link
        group = link._held()
        if group is None:
            return
        items: list[tuple[bytes, bytes | None]] = []
        for pulled in page:
            try:
                items.append(saved.decode_record(pulled.data))
            except DecodeError:
                link.skipped += 1
        if items:
            device = link.runtime.device
            device._host.receive(link.group, items)
            link.pulled += len(items)
            self._held_here(device._inbound.results)
        if not advance:
            return
        store = group._replica.store
        last = max(p.cursor for p in page)
        if last > saved.load_cursor(store, keeper, mailbox.id):
            with link.runtime.device._store.replaceable():  # the keeper's progress: no fsync
                saved.save_cursor(store, keeper, mailbox.id, last)

    def _held_here(self, results: Sequence[Ingested | MicrosyncError]) -> None:
        """Entries pulled from this keeper that this device now holds need not be pushed back
        to it: those the receive path stored (now, or when a later item of the page filled
        their gap) or already held, the very same entries (a fork's other entry, garbage, or
        an entry still waiting is not acknowledged)."""
        link = self.link
        carried = {r.entry.id for r in results if isinstance(r, Ingested)}
        for result in results:
            if not isinstance(result, Ingested):
                continue
            joined = (result.entry,) if result.outcome is Outcome.DUPLICATE else result.accepted
            for entry in joined:
                h = entry.header
                if entry.id in carried and h.group == link.group:
                    link._acknowledged(h.device, h.seq)
