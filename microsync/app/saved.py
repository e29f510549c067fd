"""What the app state keeps in the profile besides the feeds: which bodies were purged (and
why), and this device's snapshot of the fold (:mod:`microsync.app.snapshot`). Sans-IO: it reads
and writes profile values through the group's store."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from microsync import encoding
from microsync.app.ops import APP_TYPE, CursorOp, PostOp
from microsync.app.snapshot import Snapshot, open_snapshot, seal_snapshot
from microsync.app.timeline import Change, ChangeKind, Timeline
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import MicrosyncError
from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.feed.store import StoredEntry
from microsync.identity import DeviceId

if TYPE_CHECKING:
    from microsync.group.replica import GroupReplica, GroupStore

__all__ = [
    "NO_OP",
    "Keys",
    "app_entries_after",
    "load_snapshot",
    "purge",
    "purged",
    "save_snapshot",
    "tombstone",
]

Purged = dict[EntryId, tuple[bool, EntryId | None]]


@dataclass(frozen=True, slots=True)
class Keys:
    """The profile keys of one group's app state."""

    group: GroupId

    @property
    def purged(self) -> str:
        return f"app/{self.group.hex()}/purged"

    @property
    def snapshot(self) -> str:
        return f"app/{self.group.hex()}/snapshot"

    @property
    def arrived(self) -> str:
        return f"app/{self.group.hex()}/arrived"

    @property
    def board(self) -> str:
        return f"app/{self.group.hex()}/announcements"


def tombstone(reply_to: EntryId | None) -> PostOp:
    """What a purged post folds as: it existed (in its thread), its content is gone."""
    return PostOp(text="", reply_to=reply_to)


NO_OP: Final = CursorOp(cursor=())
"""What any other purged entry folds as: it happened, it changes nothing."""


def purged(store: GroupStore, key: str) -> Purged:
    """Purged posts: whether deleted (or expired), and the post a purged reply answered
    (kept so the tombstone stays in its thread)."""
    data = store.get_meta(key)
    if data is None:
        return {}
    out = {}
    for item in expect_list(encoding.decode(data, max_size=2**26), "purged"):
        post, deleted, *parent = expect_list(item, "purged item")
        reply_to = EntryId(expect_bytes(parent[0], "reply_to", 32)) if parent else None
        out[EntryId(expect_bytes(post, "post", 32))] = (bool(deleted), reply_to)
    return out


_GONE: Final = (ChangeKind.DELETE, ChangeKind.EXPIRE, ChangeKind.MODERATE)


def purge(store: GroupStore, keys: Keys, timeline: Timeline, changes: Sequence[Change]) -> None:
    """Delete the bodies ``changes`` purge, record why, and drop the snapshot (it may hold
    them); then scrub the store, so no copy is left in the file."""
    record = purged(store, keys.purged)
    with store.transaction():
        for change in changes:
            for entry_id in change.purge:
                store.delete_body(entry_id)
            gone = change.kind in _GONE
            if change.post is not None and change.purge and gone:
                reply_to = timeline.posts[change.post].reply_to
                record[change.post] = (change.kind is not ChangeKind.EXPIRE, reply_to)
            if change.kind is ChangeKind.HIDE:  # moderation: each post it hid was deleted
                for post in (timeline.posts[i] for i in change.purge if i in timeline.posts):
                    record[post.id] = (True, post.reply_to)
        value = [[p, d, *([r] if r else [])] for p, (d, r) in sorted(record.items())]
        store.put_meta(keys.purged, encoding.encode(value))  # type: ignore[arg-type]
        store.put_meta(keys.snapshot, b"")  # it may hold what was just purged
    scrub = getattr(store, "scrub", None)
    if scrub is not None:
        scrub()


def app_entries_after(replica: GroupReplica, frontier: Mapping[DeviceId, int]) -> list[StoredEntry]:
    """The stored app entries after ``frontier`` (device -> seq), none from a fork on."""
    store = replica.store
    group = replica.id
    return [
        s
        for device, status in store.feeds(group).items()
        for s in store.entries(group, device, after_seq=frontier.get(device, 0))
        if s.entry.header.type == APP_TYPE
        and (status.forked_at is None or s.entry.header.seq < status.forked_at)
    ]


def load_snapshot(replica: GroupReplica, key: str) -> tuple[Snapshot, list[Entry]] | None:
    """This device's snapshot and the entries it could not open, or ``None`` unless the store
    still holds every entry the snapshot covers, as it names them, and each still counts: a
    snapshot never overrides signed entries (see :mod:`microsync.app.snapshot`)."""
    store = replica.store
    data = store.get_meta(key)
    if not data:
        return None
    group = replica.id
    try:
        snapshot = open_snapshot(data, group=group, signer=replica.me.identity.device_key)
    except MicrosyncError:
        return None
    for device, (seq, entry_id) in snapshot.frontier.items():
        stored = store.entry_at(group, device, seq)
        if stored is None or stored.entry.id != entry_id:
            return None
    state = replica.state
    for e in snapshot.entries:
        if not state.counts(e.device, e.seq):
            return None  # a cut-off arrived since that reaches back: replay it all
    locked = [
        stored.entry
        for device, seq in snapshot.locked
        if (stored := store.entry_at(group, device, seq)) is not None
    ]
    return snapshot, locked


def save_snapshot(
    replica: GroupReplica,
    key: str,
    timeline: Timeline,
    locked: tuple[tuple[DeviceId, int], ...],
) -> None:
    """Seal ``timeline`` (what was purged only as tombstones) with the store's frontier and
    the ``locked`` entries, and keep it under ``key``."""
    store = replica.store
    gone: set[EntryId] = set()
    tombstones: set[EntryId] = set()
    for post in timeline.posts.values():
        if post.gone:
            tombstones.add(post.id)
            gone.update(post.edits)
    entries = []
    for e in timeline.recorded():
        if e.id in tombstones:
            e = dataclasses.replace(e, op=tombstone(timeline.posts[e.id].reply_to))
        elif e.id in gone:
            e = dataclasses.replace(e, op=NO_OP)
        entries.append(e)
    frontier = {
        device: (status.head_seq, status.head_id)
        for device, status in store.feeds(replica.id).items()
        if status.head_id is not None
    }
    sealed = seal_snapshot(
        Snapshot(frontier, tuple(entries), locked),
        group=replica.id,
        signer=replica.me.identity.device_key,
        rng=replica.me.rng,
    )
    store.put_meta(key, sealed)
