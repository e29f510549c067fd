"""The app primitives on :class:`microsync.Group`: posts, threads, reactions, read cursors,
delete-for-everyone and disappearing posts, and the event stream.

The state is the :class:`~microsync.app.timeline.Timeline` fold of the group's app entries,
rebuilt from the store when the group is first used in a process and kept current as entries
arrive. Plaintext is never written to disk: bodies stay encrypted in the store, and a deleted or
expired post's bodies are deleted from it (SQLite ``secure_delete`` plus a truncated WAL, so no
copy is left in the file). Which bodies were purged, and why, is remembered in the profile.

Times (``docs/security.md``, "Timestamps"): an entry's ``hlc`` is whatever its author signed,
up to ``2**63 - 1``. Every app entry dated after the moment it reached this device has that
moment recorded in the profile (:mod:`microsync.app.arrivals`, by this device's clock, kept
for good), and the :class:`~microsync.app.timeline.Timeline` shows it at no more than
``MAX_DRIFT_MS`` after it, and expires it by it. This device's own writes are dated at its
clock, never more than ``MAX_DRIFT_MS`` ahead of it whatever they answer
(:func:`~microsync.state.clock.bounded`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal, assert_never

from microsync import encoding
from microsync.app import arrivals
from microsync.app.docs import SharedDoc
from microsync.app.events import AppEvent as Event
from microsync.app.events import (
    Deleted,
    DeviceForked,
    DocChanged,
    Edited,
    Expired,
    Post,
    Posted,
    Reacted,
    Replied,
)
from microsync.app.ops import (
    APP_TYPE,
    AppOp,
    AppOperation,
    CursorOp,
    DeleteOp,
    DocOp,
    EditOp,
    Kind,
    PostOp,
    ReactOp,
    UnreactOp,
)
from microsync.app.snapshot import Snapshot, open_snapshot, seal_snapshot
from microsync.app.timeline import AppEntry, Change, ChangeKind, PostState, Timeline, deps_for
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import DecodeError, DecryptionError, MicrosyncError, NotAMember
from microsync.feed.entry import MAX_DEPS, Entry, EntryId
from microsync.feed.store import StoredEntry
from microsync.group.membership import Window
from microsync.identity import DeviceId, PersonId
from microsync.state import Document, Op, encode_op
from microsync.state.clock import bounded

if TYPE_CHECKING:
    from microsync.group.replica import GroupReplica

__all__ = ["AppMixin", "DeviceForked", "Event", "Post", "when"]


def tombstone(reply_to: EntryId | None) -> PostOp:
    """What a purged post folds as: it existed (in its thread), its content is gone."""
    return PostOp(text="", reply_to=reply_to)


PLACEHOLDER: Final = CursorOp(cursor=())
"""What any other purged entry folds as: it happened, it changes nothing."""


def post_event(
    kind: ChangeKind, person: PersonId, post: Post | None
) -> Posted | Replied | Edited | Deleted | Expired | Reacted | None:
    """The event a change of ``kind`` makes (``None``: cursors, locations and documents, which
    tell of themselves or not at all)."""
    match kind:
        case ChangeKind.POST:
            return Posted(person=person, post=post)
        case ChangeKind.REPLY:
            return Replied(person=person, post=post)
        case ChangeKind.EDIT:
            return Edited(person=person, post=post)
        case ChangeKind.DELETE:
            return Deleted(person=person, post=post)
        case ChangeKind.EXPIRE:
            return Expired(person=person, post=post)
        case ChangeKind.REACTION:
            return Reacted(person=person, post=post)
        case ChangeKind.CURSOR | ChangeKind.LOCATION | ChangeKind.DOC:
            return None
        case _:
            assert_never(kind)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


_LAST_MS: Final = int(datetime.max.replace(tzinfo=UTC).timestamp() * 1000) - 86_400_000


def when(ms: int) -> datetime:
    """Milliseconds since the epoch as a local ``datetime``: any integer gives one (times past
    what ``datetime`` holds, year 9999, are shown at its end rather than raising)."""
    return datetime.fromtimestamp(min(max(ms, 0), _LAST_MS) / 1000).astimezone()


class AppMixin:
    """Mixed into :class:`microsync.Group`: needs ``_replica``, ``_now()``, ``_person()`` and
    ``_emit(event)`` (the I/O side delivers events; this module stays sans-IO)."""

    _replica: GroupReplica
    _now: Callable[[], int]
    _person: Callable[[], PersonId]
    _emit: Callable[[Event], None]
    _app: Timeline | None = None
    _locked_app: dict[EntryId, tuple[Entry, int]]
    _provisional: dict[EntryId, tuple[Entry, bytes]] | None = None
    _app_windows: dict[DeviceId, tuple[Window, ...]] | None = None

    def _wants_events(self) -> bool:
        """Hook: does anyone listen to events? (Building their views costs time.)"""
        return True

    # ------------------------------------------------------------------ loading

    @property
    def _purged_key(self) -> str:
        return f"app/{self._replica.id.hex()}/purged"

    @property
    def _snapshot_key(self) -> str:
        return f"app/{self._replica.id.hex()}/snapshot"

    @property
    def _arrived_key(self) -> str:
        return f"app/{self._replica.id.hex()}/arrived"

    def _arrivals(self) -> dict[EntryId, int]:
        """Arrival times of the app entries dated after they arrived (see the module doc);
        the same dict as the timeline's once it is loaded."""
        if self._app is not None:
            return self._app.arrived
        return arrivals.load(self._replica.store, self._arrived_key)

    def _note_arrivals(self, dated: Iterable[tuple[EntryId, int]]) -> None:
        """Record ``now`` as the arrival of each ``(entry id, hlc)`` dated after it (the first
        arrival counts: a recorded one is kept)."""
        now = self._now()
        future = [i for i, hlc in dated if hlc > now]
        if not future:
            return  # the common case: nothing read from the profile
        known = self._app.arrived if self._app is not None else {}  # else: load keeps the first
        fresh = {i: now for i in future if i not in known}
        known.update(fresh)
        arrivals.append(self._replica.store, self._arrived_key, fresh)

    def _timeline(self) -> Timeline:
        if self._app is None:
            arrived = self._arrivals()
            self._app = Timeline(arrived)
            self._locked_app = {}
            if not self._load_snapshot():
                self._app = Timeline(arrived)
                self._locked_app = {}
                loaded = self._app_entries_after({})
                bodies = {s.entry.id: s.body for s in loaded}
                self._absorb_app([s.entry for s in loaded], quiet=True, known=bodies)
            for post_id, (deleted, _) in self._purged().items():
                self._app.forget_body(post_id, deleted)
            if self._provisional:
                self._absorb_app(
                    [e for e, _ in self._provisional.values()],
                    quiet=True,
                    known={i: b for i, (_, b) in self._provisional.items()},
                    provisional=True,
                )
            self._expire(quiet=True)
            self._app_windows = dict(self._replica.state.windows)
        return self._app

    def _cutoffs_moved(self) -> bool:
        """Did a device's counted stretch of feed change since the timeline was folded?"""
        windows = self._replica.state.windows
        old = self._app_windows or {}
        return any(windows.get(device) != stretch for device, stretch in old.items())

    def _app_pending(self, pending: Sequence[tuple[Entry, bytes]]) -> None:
        """Entries whose signature verified but whose feed has a gap before them (a newest-first
        sync sends the latest first): shown at once, provisionally. They are signed by their
        author, so nothing about them changes when the gap fills; if it never does (a fork),
        they stay shown until the next restart."""
        fresh = [(e, b) for e, b in pending if e.header.type == APP_TYPE]
        if not fresh:
            return
        self._note_arrivals((e.id, e.header.hlc) for e, _ in fresh)
        if self._provisional is None:
            self._provisional = {}
        for entry, body in fresh:
            self._provisional[entry.id] = (entry, body)
        if self._app is not None:
            self._absorb_app(
                [e for e, _ in fresh], known={e.id: b for e, b in fresh}, provisional=True
            )

    def _app_entries_after(self, frontier: dict[DeviceId, int]) -> list[StoredEntry]:
        store = self._replica.store
        group = self._replica.id
        feeds = store.feeds(group)
        return [
            s
            for device, status in feeds.items()
            for s in store.entries(group, device, after_seq=frontier.get(device, 0))
            if s.entry.header.type == APP_TYPE
            and (status.forked_at is None or s.entry.header.seq < status.forked_at)
        ]

    def _forget_forked(self, forks: Mapping[DeviceId, int]) -> None:
        """Feeds were found forked at ``forks`` (device -> seq): rebuild the view from the store
        without what they hold from there on. The saved snapshot may hold it, so it goes."""
        self._replica.store.put_meta(self._snapshot_key, b"")
        if self._provisional:
            self._provisional = {
                i: (e, b)
                for i, (e, b) in self._provisional.items()
                if e.header.seq < forks.get(e.header.device, e.header.seq + 1)
            }
        if self._app is not None:
            self._app = None
            self._timeline()

    def _load_snapshot(self) -> bool:
        """Fold this device's snapshot plus the tail of the store; ``False`` (and nothing
        folded) unless the store still holds every entry the snapshot covers, as it names them:
        a snapshot never overrides signed entries (see :mod:`microsync.app.snapshot`)."""
        store = self._replica.store
        data = store.get_meta(self._snapshot_key)
        if not data:
            return False
        group = self._replica.id
        try:
            snapshot = open_snapshot(data, group=group, signer=self._replica.me.identity.device_key)
        except MicrosyncError:
            return False
        for device, (seq, entry_id) in snapshot.frontier.items():
            stored = store.entry_at(group, device, seq)
            if stored is None or stored.entry.id != entry_id:
                return False
        state = self._replica.state
        for e in snapshot.entries:
            if not state.counts(e.device, e.seq):
                return False  # a cut-off arrived since that reaches back: replay it all
        timeline = self._app
        assert timeline is not None
        self._note_arrivals((e.id, e.hlc) for e in snapshot.entries)  # saved by older versions
        timeline.add(snapshot.entries)
        locked = [
            stored.entry
            for device, seq in snapshot.locked
            if (stored := store.entry_at(group, device, seq)) is not None
        ]
        covered = {device: seq for device, (seq, _) in snapshot.frontier.items()}
        tail = self._app_entries_after(covered)
        self._absorb_app(
            locked + [s.entry for s in tail], quiet=True, known={s.entry.id: s.body for s in tail}
        )
        return True

    def snapshot(self) -> None:
        """Save a snapshot of this group's app state in the profile, so the next start folds
        it plus the entries stored since instead of decrypting all history again. Devices do
        this themselves when they close; it is never needed for correctness."""
        timeline = self._timeline()
        replica = self._replica
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
                e = dataclasses.replace(e, op=PLACEHOLDER)
            entries.append(e)
        feeds = store.feeds(replica.id)
        frontier = {
            device: (status.head_seq, status.head_id)
            for device, status in feeds.items()
            if status.head_id is not None
        }
        locked = tuple(sorted((e.header.device, seq) for e, seq in self._locked_app.values()))
        sealed = seal_snapshot(
            Snapshot(frontier, tuple(entries), locked),
            group=replica.id,
            signer=replica.me.identity.device_key,
            rng=replica.me.rng,
        )
        store.put_meta(self._snapshot_key, sealed)

    def _purged(self) -> dict[EntryId, tuple[bool, EntryId | None]]:
        """Purged posts: whether deleted (or expired), and the post a purged reply answered
        (kept so the tombstone stays in its thread)."""
        data = self._replica.store.get_meta(self._purged_key)
        if data is None:
            return {}
        out = {}
        for item in expect_list(encoding.decode(data, max_size=2**26), "purged"):
            post, deleted, *parent = expect_list(item, "purged item")
            reply_to = EntryId(expect_bytes(parent[0], "reply_to", 32)) if parent else None
            out[EntryId(expect_bytes(post, "post", 32))] = (bool(deleted), reply_to)
        return out

    def _absorb_app(
        self,
        entries: Sequence[Entry],
        *,
        quiet: bool = False,
        known: Mapping[EntryId, bytes | None] | None = None,
        provisional: bool = False,
    ) -> None:
        """Decrypt and fold app entries (entries this device cannot open yet wait for a key).
        ``known`` holds bodies the caller already has (``None``: purged), which saves reading
        them back from the store; with ``provisional`` they are pending entries, which the
        store's feeds do not hold yet."""
        timeline = self._app
        assert timeline is not None
        store = self._replica.store
        state = self._replica.state
        opened: list[AppEntry] = []
        purged: dict[EntryId, tuple[bool, EntryId | None]] | None = None
        people: dict[DeviceId, PersonId | None] = {}
        for entry in entries:
            h = entry.header
            if not state.counts(h.device, h.seq):
                # not admitted (yet: its add may not be open here), or past a cut-off: it
                # waits like an entry with no key, and is tried again as membership moves
                self._locked_app[entry.id] = (entry, h.seq)
                continue
            stored: StoredEntry | None
            if known is not None and entry.id in known:
                stored = StoredEntry(entry=entry, body=known[entry.id])
            else:
                stored = store.entry_at(self._replica.id, h.device, h.seq)
            if stored is None:
                continue
            if stored.body is None:
                purged = self._purged() if purged is None else purged
                # a purged post keeps a tombstone (see forget_body); any other body-less entry
                # (a purged edit) is applied as a no-op, so what names it in deps can apply
                op: AppOperation = (
                    tombstone(purged[entry.id][1]) if entry.id in purged else PLACEHOLDER
                )
            else:
                try:
                    op = AppOp.from_bytes(self._replica.decrypt(stored))
                except DecryptionError:
                    self._locked_app[entry.id] = (entry, h.seq)
                    continue
                except DecodeError:
                    continue  # a member wrote garbage: it never counts
            self._locked_app.pop(entry.id, None)
            if self._provisional is not None and not provisional:
                self._provisional.pop(entry.id, None)  # in its feed now
            if h.device not in people:
                certificate = store.certificate(h.device)
                people[h.device] = None if certificate is None else certificate.person
            person = people[h.device]
            if person is None:
                continue
            opened.append(AppEntry(entry.id, h.device, person, h.seq, h.hlc, h.deps, op))
        self._note_arrivals((e.id, e.hlc) for e in opened)  # stored before this was recorded
        self._apply_changes(timeline.add(opened), quiet=quiet)

    def _apply_changes(self, changes: list[Change], *, quiet: bool = False) -> None:
        purge = [c for c in changes if c.purge]
        timeline = self._app
        assert timeline is not None
        if purge:
            store = self._replica.store
            record = self._purged()
            with store.transaction():
                for change in purge:
                    for entry_id in change.purge:
                        store.delete_body(entry_id)
                    if change.post is not None and change.kind in (
                        ChangeKind.DELETE,
                        ChangeKind.EXPIRE,
                    ):
                        gone = timeline.posts[change.post]
                        record[change.post] = (change.kind is ChangeKind.DELETE, gone.reply_to)
                value = [[p, d, *([r] if r else [])] for p, (d, r) in sorted(record.items())]
                store.put_meta(self._purged_key, encoding.encode(value))  # type: ignore[arg-type]
                store.put_meta(self._snapshot_key, b"")  # it may hold what was just purged
            scrub = getattr(store, "scrub", None)
            if scrub is not None:
                scrub()
        docs = self._open_docs()
        for change in changes:
            op = change.entry.op
            if not isinstance(op, DocOp):
                continue
            if op.doc in docs:
                changed = bool(docs[op.doc]._apply(change.entry, op.payload))
            else:  # not open here: it is folded when it is opened
                changed = SharedDoc.valid(change.entry, op.payload)
            if changed and not quiet:
                self._emit(DocChanged(person=change.entry.person, doc=op.doc))
        if quiet or not self._wants_events():
            return
        for change in changes:
            post = self._post_view(change.post) if change.post is not None else None
            event = post_event(change.kind, change.entry.person, post)
            if event is not None:
                self._emit(event)

    def _app_received(
        self, accepted: Sequence[Entry], known: Mapping[EntryId, bytes | None] | None = None
    ) -> None:
        """Called after entries of this group were stored (sync, or this device's own)."""
        self._note_arrivals((e.id, e.header.hlc) for e in accepted if e.header.type == APP_TYPE)
        if self._app is not None and self._cutoffs_moved():
            # a removal's cut-off reached back over entries already folded: fold again, and
            # reopen the documents (a handle from before shows the old state; ask doc() again)
            self._app = None
            self.__dict__.pop("_docs", None)
        if self._app is None:
            return  # loaded from the store on first use
        retry = [e for e, _ in self._locked_app.values() if e.id not in (self._provisional or {})]
        fresh = [e for e in accepted if e.header.type == APP_TYPE]
        if fresh or retry:
            self._absorb_app(retry + fresh, known=known)
        locked_provisional = {
            i: b for i, (e, b) in (self._provisional or {}).items() if i in self._locked_app
        }
        if locked_provisional:
            entries = [self._provisional[i][0] for i in locked_provisional]  # type: ignore[index]
            self._absorb_app(entries, known=locked_provisional, provisional=True)
        self._expire()

    def _expire(self, *, quiet: bool = False) -> None:
        timeline = self._app
        assert timeline is not None
        self._apply_changes(timeline.expire(self._now()), quiet=quiet)

    # ------------------------------------------------------------------ writing

    async def _write(self, op: AppOperation) -> Entry:
        timeline = self._timeline()
        if not self._replica.is_member:
            raise NotAMember("this device is not a member of the group")
        deps = deps_for(op, timeline.heads)
        mine = timeline.latest.get(self._replica.me.device)
        if op.kind is Kind.DOC and mine is not None and mine not in deps:
            # a document needs each device's operations in the order it made them
            deps = (mine, *deps[: MAX_DEPS - 1])
        # a hybrid logical clock: never earlier than what it answers (as shown here), but never
        # more than MAX_DRIFT_MS ahead of this device's clock, whatever a peer dated its entry
        applied = timeline.applied
        answered = [timeline.shown_at(applied[d]) + 1 for d in deps if d in applied]
        now = bounded(max([0, *answered]), self._now())
        entry = self._replica.append_content(APP_TYPE, op.to_bytes(), now=now, deps=deps)
        self._absorb_app([entry])
        if entry.id in timeline.rejected:
            raise NotAMember(f"the group refuses this {op.kind.name.lower()} from this person")
        return entry

    async def post(
        self, text: str, attachments: Sequence[bytes] = (), *, ttl: float | None = None
    ) -> Post:
        """Post ``text`` to the group. With ``ttl`` (seconds) the post disappears: every device
        purges it from its disk once that time has passed."""
        ttl_ms = None if ttl is None else int(ttl * 1000)
        op = PostOp(text=text, attachments=tuple(attachments), ttl_ms=ttl_ms)
        entry = await self._write(op)
        return self._must_view(entry.id)

    async def reply(self, post_id: bytes, text: str, *, ttl: float | None = None) -> Post:
        """Reply to a post (or to a reply)."""
        self._require_post(post_id)
        ttl_ms = None if ttl is None else int(ttl * 1000)
        op = PostOp(text=text, reply_to=bytes(post_id), ttl_ms=ttl_ms)
        entry = await self._write(op)
        return self._must_view(entry.id)

    async def edit(self, post_id: bytes, text: str) -> Post:
        """Change the text of one of your own posts (``NotAMember`` for someone else's)."""
        self._require_post(post_id)
        await self._write(EditOp(post=bytes(post_id), text=text))
        return self._must_view(EntryId(bytes(post_id)))

    async def delete(self, post_id: bytes) -> None:
        """Delete one of your own posts for everyone: every device that applies this purges
        the post's text from its disk and keeps only a tombstone."""
        self._require_post(post_id)
        await self._write(DeleteOp(post=bytes(post_id)))

    async def react(self, post_id: bytes, emoji: str) -> None:
        """React to a post with ``emoji``."""
        self._require_post(post_id)
        await self._write(ReactOp(post=bytes(post_id), emoji=emoji))

    async def unreact(self, post_id: bytes, emoji: str) -> None:
        """Withdraw your own ``emoji`` reaction to a post (a no-op if you have none)."""
        post = self._require_post(post_id)
        tags = sorted(post.reactions.get(emoji, {}).get(self._person(), set()))
        if tags:
            op = UnreactOp(post=bytes(post_id), emoji=emoji, removes=tuple(tags[:32]))
            await self._write(op)

    # ------------------------------------------------------------------ documents

    def _open_docs(self) -> dict[str, SharedDoc]:
        docs: dict[str, SharedDoc] | None = self.__dict__.get("_docs")
        if docs is None:
            docs = {}
            self.__dict__["_docs"] = docs
        return docs

    def doc(self, name: str) -> SharedDoc:
        """The group's shared document ``name`` (created on first write): registers,
        counters, sets, lists and texts every member can read and change, merged without
        conflicts (see ``docs/state.md``)."""
        if not isinstance(name, str) or not 0 < len(name.encode()) <= 256:
            raise ValueError("a document name is 1 to 256 bytes of text")
        docs = self._open_docs()
        found = docs.get(name)
        if found is not None:
            return found
        timeline = self._timeline()

        async def publish(op: Op) -> None:
            try:
                await self._write(DocOp(doc=name, payload=encode_op(op)))
            except BaseException:
                docs.pop(name, None)  # the local change did not land: rebuild from the feed
                raise

        shared = SharedDoc(name, Document(bytes(self._replica.me.device)), publish, self._now)
        for entry in timeline.applied.values():
            op = entry.op
            if isinstance(op, DocOp) and op.doc == name and entry.id not in timeline.rejected:
                shared._apply(entry, op.payload)
        docs[name] = shared
        return shared

    # ------------------------------------------------------------------ reading

    def _require_post(self, post_id: bytes) -> PostState:
        post = self._timeline().posts.get(EntryId(bytes(post_id)))
        if post is None:
            raise KeyError(f"no post {bytes(post_id)[:4].hex()} in this group")
        return post

    def _names(self) -> dict[PersonId, str]:
        return {p: m.name for p, m in self._replica.state.members.items()}

    def _post_view(self, post_id: EntryId, names: dict[PersonId, str] | None = None) -> Post | None:
        post = self._timeline().posts.get(post_id)
        if post is None:
            return None
        names = self._names() if names is None else names
        return Post(
            id=post.id,
            author=post.author,
            author_name=names.get(post.author, "(former member)"),
            text=post.text,
            created_at=when(post.created_at),
            attachments=post.attachments,
            reactions=post.reaction_summary(),
            reply_to=post.reply_to,
            edited=post.edited,
            deleted=post.deleted,
        )

    def _must_view(self, post_id: EntryId) -> Post:
        view = self._post_view(post_id)
        assert view is not None
        return view

    def post_by_id(self, post_id: bytes) -> Post:
        """One post or reply (``KeyError`` if this device has none with that id)."""
        self._require_post(post_id)
        return self._must_view(EntryId(bytes(post_id)))

    def thread(self, post_id: bytes) -> list[Post]:
        """The replies to a post, oldest first (nested replies follow their parent)."""
        self._require_post(post_id)
        names = self._names()
        found = self._timeline().thread(EntryId(bytes(post_id)))
        return [v for p in found if (v := self._post_view(p.id, names)) is not None]

    def _cursor(self) -> dict[DeviceId, int]:
        return dict(self._timeline().cursors.get(self._person(), {}))

    def _unseen(self) -> list[PostState]:
        cursor = self._cursor()
        me = self._person()
        return [
            p
            for p in self._timeline().visible()
            if p.author != me and p.seq > cursor.get(p.device, 0)
        ]

    def unread_count(self) -> int:
        """Posts and replies by others that this person has not seen on any of their devices."""
        return len(self._unseen())

    def feed(self, since: Literal["last_opened"] | datetime | None = None) -> list[Post]:
        """Posts and replies, newest first: all of them (``since=None``), those after a moment
        (a ``datetime``), or those unseen since this person last opened the group
        (``"last_opened"``), which also marks them read on every device of this person.
        Deleted and expired posts are left out."""
        timeline = self._timeline()
        self._expire()
        names = self._names()
        if since == "last_opened":
            chosen = self._unseen()
            self._mark_read()
        elif isinstance(since, datetime):
            cut = _ms(since)
            chosen = [p for p in timeline.visible() if p.created_at > cut]
        elif since is None:
            chosen = timeline.visible()
        else:
            raise ValueError('since is None, "last_opened" or a datetime')
        return [v for p in chosen if (v := self._post_view(p.id, names)) is not None]

    def _mark_read(self) -> None:
        timeline = self._timeline()
        cursor = self._cursor()
        ahead = {d: s for d, s in timeline.frontier.items() if s > cursor.get(d, 0)}
        if not ahead or not self._replica.is_member:
            return
        op = CursorOp(cursor=tuple(sorted(ahead.items())))
        try:
            entry = self._replica.append_content(
                APP_TYPE, op.to_bytes(), now=self._now(), deps=deps_for(op, timeline.heads)
            )
        except MicrosyncError:
            return  # reading never fails because the cursor could not be written
        self._absorb_app([entry])
