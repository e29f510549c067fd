"""``group.whats_new()``: everything that happened after a cursor, read from stored state,
marking nothing; and ``group.mark_read()``, the explicit write of the read position.

Theory of operation
-------------------
Every change worth telling is an entry of some device's feed: posts, replies, reactions,
kept locations and document changes (app entries, opened by the app state's fold), vault adds
(the vault index) and membership operations (the membership resolution). So "what is new
after cursor ``c``" is, per device, the entries after ``c.seq(device)``, which the store reads
lazily in seq order: the cost of a page is the entries it walks past, never the history.

The devices' runs are merged by time (``heapq.merge`` over the per-device runs, each kept in
seq order), so a page is a *prefix of every run*: its cursor is exact (every entry at or
before it was considered, none after), and the next page, or ``mark_read(up_to=page.cursor)``,
continues exactly there, whatever arrives in between. A run stops before the first app entry
this device has not folded yet (no key for it yet, or waiting for its causal past): the cursor
never passes what could not be shown, so it is told once it can be. Entries that do not count
(a revoked stretch) and entries that are nobody's news (your own, cursors, edits) are walked
past.

The read position a person shares across their devices is the cursor entry of the app state
(``Kind.CURSOR``: device -> seq, merged by pointwise maximum from that person's devices only),
the same one ``feed(since="last_opened")`` writes; ``since="last_read"`` reads it, with the
time of the latest cursor entry as its ``at``.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, assert_never

from microsync.app.docs import SharedDoc
from microsync.app.events import Location
from microsync.app.ops import (
    APP_TYPE,
    CursorOp,
    DeleteOp,
    DocOp,
    EditOp,
    ForgetOp,
    HideOp,
    LocationOp,
    PostOp,
    ReactOp,
    UnreactOp,
)
from microsync.app.timeline import AppEntry, Timeline
from microsync.app.views import post_view, when
from microsync.blobs import VAULT_TYPE, BlobRef
from microsync.feed.entry import EntryId
from microsync.feed.store import StoredEntry
from microsync.group.ops import MEMBERSHIP_TYPE, OpKind
from microsync.identity import DeviceId, PersonId
from microsync.node.news import (
    Cursor,
    DocEdited,
    Joined,
    Left,
    Moved,
    NewFile,
    NewPost,
    NewReaction,
    NewReply,
    News,
    WhatsNew,
)

if TYPE_CHECKING:
    from microsync.app.state import AppState
    from microsync.group.replica import GroupReplica
    from microsync.node.group import Group

__all__ = ["MAX_LIMIT", "MAX_WALK", "Since", "Sources", "mark_read", "page", "read", "settled"]

Since = Cursor | Literal["last_read"] | None
MAX_LIMIT: Final = 1000
"""Most items one page holds."""
MAX_WALK: Final = 20_000
"""Most entries one page walks past; a page that stops there says ``more``."""


@dataclass(frozen=True, slots=True, repr=False)  # it holds a replica: never print its parts
class Sources:
    """What a read looks at: the group's replica (feeds, membership) and app state, the
    vault's current files and the current live locations (``group.vault.list()``,
    ``group.locations()``)."""

    replica: GroupReplica
    app: AppState
    files: Sequence[BlobRef]
    locations: Mapping[PersonId, Location]


@dataclass(frozen=True, slots=True)
class _Step:
    at: int
    device: DeviceId
    seq: int
    stored: StoredEntry


def read(group: Group, since: Since, limit: int) -> WhatsNew:
    """``group.whats_new()``: one page of news after ``since`` (module doc), ``limit`` items
    at most (1 .. :data:`MAX_LIMIT`; ``ValueError`` otherwise)."""
    if type(limit) is not int or not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit is 1 .. {MAX_LIMIT}")
    sources = Sources(group._replica, group._app_state, group.vault.list(), group.locations())
    return page(sources, since, limit, group._now())


def page(sources: Sources, since: Since, limit: int, now: int) -> WhatsNew:
    """One page of news after ``since`` from ``sources``, at most ``limit`` items."""
    start = _start(sources.replica, sources.app, since, now)
    reader = _Reader(sources, now)
    found = _Page(limit, dict(start.positions))
    for walked, step in enumerate(_merged(sources.replica, sources.app, start, now)):
        if walked >= MAX_WALK or not found.add(step, reader.news(step)):
            found.more = True  # this step is the next page's first
            break
    locations = tuple(
        loc
        for person, loc in sorted(sources.locations.items())
        if person != reader.me and _ms(loc) > start.at
    )
    last = start.at if found.more else max(now, start.at)
    cursor = Cursor.of(found.positions, last)
    return WhatsNew(items=tuple(found.items), cursor=cursor, more=found.more, locations=locations)


class _Page:
    """The items of a page so far, and how far each device's run was walked."""

    def __init__(self, limit: int, positions: dict[DeviceId, int]) -> None:
        self.limit = limit
        self.positions = positions
        self.items: list[News] = []
        self.docs: dict[str, int] = {}  # document -> the index of its record in ``items``
        self.more = False

    def add(self, step: _Step, item: News | None) -> bool:
        """Take ``step`` (and its ``item``, if any) into the page; ``False`` if it is full."""
        index = self.docs.get(item.doc) if isinstance(item, DocEdited) else None
        if item is not None and index is None and len(self.items) >= self.limit:
            return False
        self.positions[step.device] = step.seq
        if isinstance(item, DocEdited) and index is not None:
            self.items[index] = _merge_doc(self.items[index], item)
        elif item is not None:
            if isinstance(item, DocEdited):
                self.docs[item.doc] = len(self.items)
            self.items.append(item)
        return True


def _merge_doc(earlier: News, later: DocEdited) -> DocEdited:
    assert isinstance(earlier, DocEdited)
    return dataclasses.replace(
        later, people=earlier.people | later.people, changes=earlier.changes + later.changes
    )


def settled(replica: GroupReplica, app: AppState, now: int) -> dict[DeviceId, int]:
    """How far every feed can be marked read now: its head, but never past the first app
    entry not folded yet (it is news once it can be shown)."""
    start = _start(replica, app, "last_read", now)
    positions = dict(start.positions)
    for step in _merged(replica, app, start, now):
        positions[step.device] = step.seq
    return positions


def mark_read(group: Group, up_to: Cursor | None) -> None:
    """``group.mark_read()``: share this person's read position, up to ``up_to`` (``None``:
    everything settled now), with their other devices (a cursor entry; what was read already
    stays read)."""
    replica, app, now = group._replica, group._app_state, group._now()
    positions = settled(replica, app, now) if up_to is None else dict(up_to.positions)
    me = replica.me.identity.person_id
    read_at = app.timeline(now).cursor_at.get(me, 0)
    # live locations are read up to the cursor entry's time: a newer one is a reason to write
    live = any(p != me and _ms(loc) > read_at for p, loc in group.locations().items())
    group._deliver(app.mark_read(now, up_to=positions, restate=live))


def _start(replica: GroupReplica, app: AppState, since: Since, now: int) -> Cursor:
    if since == "last_read":
        me = replica.me.identity.person_id
        return Cursor.of(app.cursor(now), app.timeline(now).cursor_at.get(me, 0))
    if since is None:
        return Cursor()
    if isinstance(since, Cursor):
        return since
    raise ValueError('since is "last_read", a Cursor or None')


def _merged(replica: GroupReplica, app: AppState, start: Cursor, now: int) -> Iterator[_Step]:
    """Every device's entries after ``start``, each run in seq order, merged by time."""
    timeline = app.timeline(now)
    after = dict(start.positions)
    runs = [
        _run(replica, timeline, device, after.get(device, 0), status.forked_at, now)
        for device, status in sorted(replica.store.feeds(replica.id).items())
    ]
    return heapq.merge(*runs, key=lambda s: (s.at, bytes(s.device), s.seq))


def _run(
    replica: GroupReplica,
    timeline: Timeline,
    device: DeviceId,
    after: int,
    forked_at: int | None,
    now: int,
) -> Iterator[_Step]:
    """``device``'s entries after ``after``, up to the first app entry not folded yet."""
    state = replica.state
    for stored in replica.store.entries(replica.id, device, after_seq=after):
        header = stored.entry.header
        if forked_at is not None and header.seq >= forked_at:
            return  # nothing from a fork on is shown
        at = min(header.hlc, now)
        if header.type == APP_TYPE and state.counts(device, header.seq):
            applied = timeline.applied.get(stored.entry.id)
            if applied is None:
                return  # not folded yet: the cursor waits before it
            at = timeline.shown_at(applied)
        yield _Step(at, device, header.seq, stored)


class _Reader:
    """Turns walked entries into news for this person."""

    def __init__(self, sources: Sources, now: int) -> None:
        self._replica = replica = sources.replica
        self.me = replica.me.identity.person_id
        self._timeline = sources.app.timeline(now)
        self._names = {p: m.name for p, m in replica.state.members.items()}
        self._files = {ref.entry: ref for ref in sources.files}

    def news(self, step: _Step) -> News | None:
        """The news ``step`` is for this person (``None``: nothing to tell)."""
        header = step.stored.entry.header
        if header.type == APP_TYPE:
            entry = self._timeline.applied.get(step.stored.entry.id)
            if entry is None or entry.id in self._timeline.rejected:
                return None
            return None if entry.person == self.me else self._app_news(entry, step.at)
        if header.type == VAULT_TYPE:
            ref = self._files.get(step.stored.entry.id)
            if ref is None or ref.author == self.me:
                return None
            return NewFile(person=ref.author, at=when(step.at), ref=ref)
        if header.type == MEMBERSHIP_TYPE:
            return self._member_news(step.stored.entry.id, step.at)
        return None

    def _app_news(self, entry: AppEntry, at: int) -> News | None:
        op = entry.op
        match op:
            case PostOp():
                post = self._timeline.posts.get(entry.id)
                if post is None or post.gone:
                    return None
                kind = NewPost if post.reply_to is None else NewReply
                return kind(person=entry.person, at=when(at), post=post_view(post, self._names))
            case ReactOp():
                return self._reaction(entry, op, at)
            case LocationOp(lat=lat, lon=lon, precision=precision):
                if entry.hlc <= self._timeline.forgotten.get(entry.person, -1):
                    return None  # its author forgot it since
                latitude, longitude = lat / 1_000_000, lon / 1_000_000
                return Moved(
                    person=entry.person,
                    at=when(at),
                    latitude=latitude,
                    longitude=longitude,
                    precision=precision,
                )
            case DocOp():
                return self._doc(entry, op, at)
            case EditOp() | DeleteOp() | UnreactOp() | CursorOp() | ForgetOp() | HideOp():
                return None  # nobody's news
            case _:
                assert_never(op)

    def _reaction(self, entry: AppEntry, op: ReactOp, at: int) -> News | None:
        post = self._timeline.posts.get(EntryId(op.post))
        if post is None or post.gone or post.author != self.me:
            return None
        standing = post.reactions.get(op.emoji, {}).get(entry.person, set())
        if entry.id not in standing:
            return None  # withdrawn since
        view = post_view(post, self._names)
        return NewReaction(person=entry.person, at=when(at), post=view, emoji=op.emoji)

    def _doc(self, entry: AppEntry, op: DocOp, at: int) -> DocEdited | None:
        if not SharedDoc.valid(entry, op.payload):
            return None  # an operation every replica refuses (written as someone else ...)
        people = frozenset({entry.person})
        return DocEdited(person=entry.person, at=when(at), doc=op.doc, people=people, changes=1)

    def _member_news(self, op_id: EntryId, at: int) -> News | None:
        replica = self._replica
        resolution = replica.resolution
        record = replica.operation(op_id)
        if record is None or op_id not in resolution.effective:
            return None
        author = resolution.authors.get(op_id)
        op = record.op
        if op.kind is OpKind.ADD and op.person is not None:
            return Joined(person=op.person, at=when(at), by=author)
        if op.kind is OpKind.REMOVE and op.person is not None:
            return Left(person=op.person, at=when(at), by=author)
        if op.kind is OpKind.LEAVE:
            return Left(person=author, at=when(at), by=author)
        return None


def _ms(location: Location) -> int:
    return round(location.at.timestamp() * 1000)
