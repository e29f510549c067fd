"""A running device's links to its groups' keepers: push on write, pull on start, live.

Theory of operation
-------------------
:class:`KeeperLinks` (one per :class:`~microsync.node.runtime.Runtime`) keeps one
:class:`GroupKeeperLink` task per (group, keeper URL) while the group names that keeper (its
``SETTINGS`` ops, or for a joiner still waiting for them, the welcome's hint). A link never
proves two groups' mailboxes on one connection: the keeper could link them. It holds two
connections of its own group: **work** (push, catch-up pulls, deletes) and **live** (a
``watch`` of the current epoch's mailbox; the keeper serves a connection's requests in order,
so a waiting pull would hold pushes back on a shared one).

* **Push.** Every stored entry of every admitted feed (this device's and every other member's:
  the keeper then cannot tell from who pushed it whose it is) goes, as ``[wire, body]`` named by
  its entry id, to the mailbox of the epoch whose key sealed it. What the keeper acknowledged is
  kept durably per feed (:mod:`~microsync.node.keeper_state`); a restart pushes only the rest.
* **Pull.** Every mailbox of an epoch this device holds a key of, oldest epoch first, each
  from its durable cursor on (resumable), the first time its newest items first, through the
  peer sync's receive path (:mod:`~microsync.node.keeper_pull` has the rules).
* **Live.** The live connection watches the current epoch's mailbox; a new epoch restarts it.
* **Faults.** Any failure ends the connections, is shown in :attr:`GroupKeeperLink.status`, and
  the link retries with backoff. Nothing is marked pushed before the keeper committed it, nor
  pulled before it was stored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from websockets.exceptions import WebSocketException

from microsync.app.saved import Keys
from microsync.errors import DecodeError, DecryptionError, MicrosyncError
from microsync.feed import GroupId
from microsync.group.envelope import sealed_ref
from microsync.group.keys import body_ref
from microsync.group.mailbox import Mailbox
from microsync.group.ops import MEMBERSHIP_TYPE
from microsync.identity import DeviceId
from microsync.net.keeper_client import KeeperClient, Record
from microsync.node import keeper_state as saved
from microsync.node.keeper_pull import KeeperPull

if TYPE_CHECKING:
    from microsync.node import Group
    from microsync.node.runtime import Runtime

__all__ = ["GroupKeeperLink", "KeeperLinks", "KeeperStatus", "keeper_status"]

log = logging.getLogger("microsync.node")

RECHECK: Final = 10.0
"""Seconds between full passes (push what is new, pull every mailbox) while connected."""
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
PAGE: Final = 1024
"""At most this many entries pushed per call of the client's push (it cuts them into PUSH
messages) ..."""
PAGE_BYTES: Final = 8 << 20
"""... and at most about this many bytes (memory stays bounded whatever a device holds)."""
MAX_MAILBOXES: Final = 48
"""Newest epochs' mailboxes used per connection (a keeper proves at most 64 per connection)."""
KEEPER_ERRORS: Final = (OSError, ConnectionError, MicrosyncError, TimeoutError, WebSocketException)
"""What a keeper connection may fail with (a keeper down, killed, refusing): retried later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperStatus:
    """One keeper of a group as this device sees it now."""

    url: str
    connected: bool
    status: str
    """``"connected"``, ``"offline"`` (the device is not started), or why not connected
    (``"unreachable: ..."``, ``"refused: the keeper refused: keeper full"``)."""
    unpushed: int
    """Entries this device holds that the keeper has not acknowledged yet."""
    pushed: int
    pulled: int
    skipped: int


def keeper_status(group: Group) -> list[KeeperStatus]:
    """Each of ``group``'s keepers: reachability and what is left to push."""
    net = group.device._net
    links = {} if net is None or net.keepers is None else net.keepers.links
    found = []
    for url in group._replica.state.keepers:
        link = links.get((group.id, url))
        if link is None:
            link = GroupKeeperLink(None, group.id, url, group_face=group)
            found.append(link.report(connected=False, status="offline"))
        else:
            found.append(link.report(connected=link.connected, status=link.status))
    return found


class GroupKeeperLink:
    """One group at one keeper (see the module docstring)."""

    def __init__(
        self, runtime: Runtime | None, group: GroupId, url: str, *, group_face: Group | None = None
    ) -> None:
        self._runtime, self.group, self.url = runtime, group, url
        self._face = group_face
        self.connected = False
        self.status = "connecting"  # "connected", or why not (as KeeperStatus.status)
        self.pushed = self.pulled = 0
        self.skipped = 0  # items pulled that did not open or decode (garbage, another group's)
        self._wake = asyncio.Event()
        self._frontier: dict[DeviceId, int] | None = None
        self._purge_seen: bytes | None = None  # the purge record at the last purge pass
        self._derived: dict[tuple[int, bytes], Mailbox] = {}  # (epoch, key ref) -> mailbox
        self.pulls = KeeperPull(self)

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None  # only a status report has none
        return self._runtime

    def report(self, *, connected: bool, status: str) -> KeeperStatus:
        """This link's :class:`KeeperStatus`."""
        return KeeperStatus(
            url=self.url,
            connected=connected,
            status=status,
            unpushed=sum(1 for _ in self._unpushed()),
            pushed=self.pushed,
            pulled=self.pulled,
            skipped=self.skipped,
        )

    def wake(self) -> None:
        """Something new to push: do a pass now."""
        self._wake.set()

    def _held(self) -> Group | None:
        if self._face is not None:
            return self._face
        return self.runtime.device._held(self.group)

    async def run(self) -> None:
        """Stay linked until cancelled (backoff on failure)."""
        delay = BACKOFF_START
        while not self.runtime.stopping:
            try:
                await _unwrapped(self._linked_once())
                delay = BACKOFF_START
            except KEEPER_ERRORS as exc:
                self.status = f"unreachable: {_brief(exc)}"
                log.info("keeper %s: %s", self.url, _brief(exc))
            finally:
                self.connected = False
            if self.runtime.stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _linked_once(self) -> None:
        self._purge_seen = None
        async with await KeeperClient.connect(self.url) as work:
            self.connected, self.status = True, "connected"
            await self._pass(work)
            async with asyncio.TaskGroup() as tasks:
                watching: tuple[bytes, asyncio.Task[None]] | None = None
                while not self.runtime.stopping:
                    current = self._current_mailbox()
                    if watching is not None and (current is None or watching[0] != current.id):
                        watching[1].cancel()
                        watching = None
                    if watching is None and current is not None:
                        watching = (current.id, tasks.create_task(self.pulls.live(current)))
                    if watching is not None and watching[1].done():
                        watching[1].result()  # its error ends this connection
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RECHECK):  # (never swallows a cancel)
                            await self._wake.wait()
                    self._wake.clear()
                    await self._pass(work)
                if watching is not None:
                    watching[1].cancel()

    # ------------------------------------------------------------------ keys and mailboxes

    def _mailboxes(self) -> list[Mailbox]:
        """The mailboxes this device can use, oldest epoch first: one per epoch key held (the
        newest :data:`MAX_MAILBOXES`), or the welcome's hint while it holds none."""
        group = self._held()
        if group is None:
            return []
        keys = sorted(group._replica.epoch_keys().items())[-MAX_MAILBOXES:]
        found = [Mailbox.derive(k.control.secret_bytes()) for _, k in keys]
        hint = saved.load_hint(group._replica.store, self.group)
        if hint is not None and hint[1] not in {k.control.secret_bytes() for _, k in keys}:
            found.insert(0, Mailbox.derive(hint[1]))
        return found

    def _current_mailbox(self) -> Mailbox | None:
        group = self._held()
        key = None if group is None else group._replica.current_epoch_key()
        if key is None:
            boxes = self._mailboxes()
            return boxes[-1] if boxes else None
        return Mailbox.derive(key.control.secret_bytes())

    def _mailbox_of(self, number: int, ref: bytes) -> Mailbox | None:
        found = self._derived.get((number, ref))
        if found is not None:
            return found
        group = self._held()
        key = None if group is None else group._replica.key_for(number, ref)
        if key is None:
            return None
        found = self._derived[(number, ref)] = Mailbox.derive(key.control.secret_bytes())
        return found

    # ------------------------------------------------------------------ a pass

    async def _pass(self, work: KeeperClient) -> None:
        """Push what the keeper lacks, purge what was deleted here, then pull what this
        device lacks."""
        await self._push(work)
        await self._purge(work)
        group = self._held()
        if group is not None:  # vault chunks, on connections of their own (node/keeper_chunks.py)
            await group.vault.keeper_push(self.url)
        for mailbox in self._mailboxes():
            await self.pulls.pull(work, mailbox)

    def _unpushed(self) -> Iterator[tuple[Mailbox, Record, DeviceId, int]]:
        """Entries not yet acknowledged by this keeper, feed by feed in order; a feed stops at
        an entry whose epoch key this device lacks (the frontier stays contiguous)."""
        group = self._held()
        if group is None:
            return
        replica, store = group._replica, group._replica.store
        frontier = self._frontier_now()
        usable = {m.id for m in self._mailboxes()}
        for device, feed in sorted(store.feeds(self.group).items()):
            if not replica.admits(device, 1):
                continue
            for stored in store.entries(self.group, device, frontier.get(device, 0)):
                h = stored.entry.header
                if feed.forked_at is not None and h.seq >= feed.forked_at:
                    break
                mailbox = self._entry_mailbox(h.epoch, h.type, stored.body)
                if mailbox is None:
                    break
                if mailbox.id not in usable:  # older than the newest MAX_MAILBOXES epochs:
                    self._acknowledged(device, h.seq)  # peers serve it, the keeper does not
                    continue
                record = Record(
                    name=stored.entry.id, data=saved.encode_record(stored.entry.wire, stored.body)
                )
                yield mailbox, record, device, h.seq

    def _entry_mailbox(self, epoch: int, type: int, body: bytes | None) -> Mailbox | None:
        if body is None:
            return self._current_mailbox()  # a purged body: its wire keeps the chain
        try:
            ref = sealed_ref(body) if type == MEMBERSHIP_TYPE else body_ref(body)
        except (DecodeError, DecryptionError):
            return None
        return self._mailbox_of(epoch, ref)

    def _frontier_now(self) -> dict[DeviceId, int]:
        group = self._held()
        if self._frontier is None and group is not None:
            self._frontier = saved.load_frontier(group._replica.store, self.group, self.url)
        return self._frontier if self._frontier is not None else {}

    def _acknowledged(self, device: DeviceId, seq: int) -> None:
        frontier = self._frontier_now()
        if seq == frontier.get(device, 0) + 1:
            frontier[device] = seq

    def _save_frontier(self) -> None:
        group = self._held()
        if group is not None and self._frontier is not None:
            saved.save_frontier(group._replica.store, self.group, self.url, self._frontier)

    async def _push(self, work: KeeperClient) -> None:
        batch: list[tuple[Mailbox, Record, DeviceId, int]] = []
        size = 0
        try:
            for item in self._unpushed():
                full = len(batch) >= PAGE or size >= PAGE_BYTES
                if batch and (batch[0][0].id != item[0].id or full):
                    await self._push_batch(work, batch)
                    batch, size = [], 0
                batch.append(item)
                size += len(item[1].data)
            if batch:
                await self._push_batch(work, batch)
        finally:
            self._save_frontier()

    async def _push_batch(
        self, work: KeeperClient, batch: list[tuple[Mailbox, Record, DeviceId, int]]
    ) -> None:
        positions = {record.name: (device, seq) for _, record, device, seq in batch}

        def stored(record: Record, cursor: int) -> None:
            self._acknowledged(*positions[record.name])
            self.pushed += 1

        try:
            await work.push(batch[0][0], [record for _, record, _, _ in batch], on_stored=stored)
        except MicrosyncError as exc:
            self.status = f"refused: {_brief(exc)}"
            raise

    def _purged_marker(self) -> bytes | None:
        group = self._held()
        if group is None:
            return None
        return group._replica.store.get_meta(Keys(self.group).purged) or b""

    async def _purge(self, work: KeeperClient) -> None:
        """Delete-for-everyone reaches the keeper: every entry whose body was purged here (a
        deleted or expired post and its edits, a removed vault file) that the keeper was given
        is deleted there, and its wire alone pushed again (the feed's chain stays whole for
        whoever pulls it). Scans the feeds only when the group's purge record changed (and
        once per connection)."""
        marker = self._purged_marker()
        group = self._held()
        if group is None or marker == self._purge_seen:
            return
        store = group._replica.store
        forgotten = saved.load_forgotten(store, self.group, self.url)
        frontier = self._frontier_now()
        gone: list[tuple[DeviceId, int, bytes]] = []
        for device in sorted(store.feeds(self.group)):
            for stored in store.entries(self.group, device, 0, frontier.get(device, 0)):
                if stored.body is None and stored.entry.id not in forgotten:
                    gone.append((device, stored.entry.header.seq, stored.entry.id))
        if gone:
            names = [name for _, _, name in gone]
            for mailbox in self._mailboxes():
                await work.delete(mailbox, names)
            for device, seq, _ in gone:  # push the wires again, without their bodies
                frontier[device] = min(frontier.get(device, 0), seq - 1)
            await self._push(work)
            saved.save_forgotten(store, self.group, self.url, forgotten | set(names))
        self._purge_seen = marker


class KeeperLinks:
    """Every keeper link of one runtime: started and stopped as groups' settings change."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.links: dict[tuple[GroupId, str], GroupKeeperLink] = {}
        self._tasks: dict[tuple[GroupId, str], asyncio.Task[None]] = {}

    def wanted(self) -> set[tuple[GroupId, str]]:
        """(group, keeper) pairs this device should be linked to now."""
        found: set[tuple[GroupId, str]] = set()
        for group in self.runtime.device.groups():
            replica = group._replica
            urls = replica.state.keepers
            if not replica.is_member:
                hint = saved.load_hint(replica.store, group.id)
                urls = () if hint is None or replica.state.genesis is not None else hint[0]
            found |= {(group.id, url) for url in urls}
        return found

    def changed(self, group: GroupId | None = None) -> None:
        """Groups or their settings may have changed: start and stop links, wake pushers."""
        if self.runtime.stopping:
            return
        wanted = self.wanted()
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()
                self.links.pop(key, None)
        for key in sorted(wanted - set(self._tasks)):
            link = GroupKeeperLink(self.runtime, *key)
            task = self.runtime.spawn(link.run(), f"keeper {key[1]} for {key[0].hex()[:8]}")
            if task is not None:
                self._tasks[key], self.links[key] = task, link
        for (gid, _), link in self.links.items():
            if group is None or gid == group:
                link.wake()

    def status(self, group: GroupId) -> dict[str, str]:
        """Keeper URL -> ``"connected"`` or why not, for ``group``."""
        return {url: link.status for (gid, url), link in self.links.items() if gid == group}


async def _unwrapped(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work``; a task group's failure made only of keeper errors raises its first."""
    try:
        await work
    except BaseExceptionGroup as failed:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from failed  # being stopped: stop, whatever failed
        ours, rest = failed.split(KEEPER_ERRORS)
        if rest is not None or ours is None:
            raise
        first = ours.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _brief(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__
