"""The app state of one group: posts, threads, reactions, read cursors, delete-for-everyone and
disappearing posts, and shared documents. Synchronous and sans-IO: every call that can change
the state takes ``now`` (this device's clock, Unix ms) and returns the events it produced; the
caller (:class:`microsync.Group`) delivers them.

The state is the :class:`~microsync.app.timeline.Timeline` fold of the group's app entries,
rebuilt from the store when it is first read in a process and kept current as entries arrive.
Entries are opened by the group's one content fold (:class:`~microsync.group.fold.ContentFold`:
decrypt-or-lock, the cut-off gate, retry). Plaintext is never written to disk: bodies stay
encrypted in the store, and a deleted or expired post's bodies are deleted from it (SQLite
``secure_delete`` plus a truncated WAL, so no copy is left in the file). Which bodies were
purged, and why, is remembered in the profile (:mod:`microsync.app.saved`).

Times (``docs/security.md``, "Timestamps"): an entry's ``hlc`` is whatever its author signed,
up to ``2**63 - 1``. Every app entry dated after the moment it reached this device has that
moment recorded in the profile (:mod:`microsync.app.arrivals`, by this device's clock, kept
for good), and the :class:`~microsync.app.timeline.Timeline` shows it at no more than
``MAX_DRIFT_MS`` after it, and expires it by it. This device's own writes are dated at its
clock, never more than ``MAX_DRIFT_MS`` ahead of it whatever they answer
(:func:`~microsync.state.clock.bounded`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from microsync.app import arrivals, saved
from microsync.app.docs import Publish, SharedDoc
from microsync.app.events import AppEvent, DocChanged, Post
from microsync.app.moderation import hidden_events
from microsync.app.ops import APP_TYPE, AppOp, AppOperation, CursorOp, DocOp, Kind
from microsync.app.timeline import AppEntry, Change, ChangeKind, PostState, Timeline, deps_for
from microsync.app.unfolded import Unfolded
from microsync.app.views import post_event, post_view, to_ms
from microsync.errors import MicrosyncError, NotAMember
from microsync.feed.entry import MAX_DEPS, Entry, EntryId
from microsync.feed.store import StoredEntry
from microsync.group.fold import ContentFold, Folded
from microsync.group.state import Window
from microsync.identity import DeviceId, PersonId
from microsync.state import Document
from microsync.state.clock import bounded

if TYPE_CHECKING:
    from collections.abc import Callable

    from microsync.group.replica import GroupReplica

__all__ = ["AppState"]

Since = Literal["last_opened"] | datetime | None


class AppState:
    """The app state of the group ``replica`` holds (module doc). ``listening``: whether
    anyone takes the events of posts (building their views costs time); the others are
    returned whatever it says."""

    def __init__(self, replica: GroupReplica) -> None:
        self._replica = replica
        self.keys = saved.Keys(replica.id)
        self.listening = True
        self._timeline: Timeline | None = None
        self._fold: ContentFold[AppOperation] = replica.content_fold(AppOp.from_bytes)
        self._provisional: dict[EntryId, tuple[Entry, bytes]] = {}
        self._docs: dict[str, SharedDoc] = {}
        self._admins: dict[DeviceId, tuple[Window, ...]] = {}  # the admin stretches folded with
        self._unfolded = Unfolded()  # what arrived while not loaded (folded when it is)

    def _moderates(self, device: DeviceId, seq: int) -> bool:
        return self._replica.state.moderates(device, seq)

    def _admins_moved(self) -> bool:
        """Did the admin stretches change since the timeline was folded? (A promotion seen
        late can make a moderation count, a demotion seen late void one: fold again.)"""
        return dict(self._replica.state.admin_windows) != self._admins

    @property
    def loaded(self) -> bool:
        """Has the timeline been folded in this process (``timeline``)?"""
        return self._timeline is not None

    def unload(self) -> None:
        """Forget the folded state and the open documents: the next read folds again."""
        self._timeline = None
        self._docs = {}
        self._unfolded.clear()

    # ------------------------------------------------------------------ loading

    def timeline(self, now: int, held_back: frozenset[EntryId] = frozenset()) -> Timeline:
        """The folded timeline, loaded from the snapshot and the store on first use (quietly:
        what was there before is no news; ``held_back``: entries left out, to fold as news)."""
        if self._timeline is not None:
            return self._timeline
        store = self._replica.store
        arrived = arrivals.load(store, self.keys.arrived)
        self._timeline = Timeline(arrived, self._moderates)
        self._fold = self._replica.content_fold(AppOp.from_bytes)
        if not self._load_snapshot(now, held_back):
            self._timeline = Timeline(arrived, self._moderates)
            self._fold = self._replica.content_fold(AppOp.from_bytes)
            loaded = self._unfolded.entries_after(self._replica, {})
            loaded = [s for s in loaded if s.entry.id not in held_back]
            self._absorb(
                [s.entry for s in loaded],
                now,
                quiet=True,
                known={s.entry.id: s.body for s in loaded},
            )
        for post_id, (deleted, _) in saved.purged(store, self.keys.purged).items():
            self._timeline.forget_body(post_id, deleted)
        waiting = {i: p for i, p in self._provisional.items() if i not in held_back}
        if waiting:
            self._absorb(
                [e for e, _ in waiting.values()],
                now,
                quiet=True,
                known={i: b for i, (_, b) in waiting.items()},
                provisional=True,
            )
        self._apply(self._timeline.expire(now), quiet=True)
        self._fold.mark()
        self._admins = dict(self._replica.state.admin_windows)
        self._unfolded.clear()
        return self._timeline

    def _load_snapshot(self, now: int, held_back: frozenset[EntryId]) -> bool:
        """Fold this device's snapshot plus the tail of the store (``False``, and nothing
        folded, unless the store still holds every entry the snapshot covers)."""
        opened = saved.load_snapshot(self._replica, self.keys.snapshot)
        if opened is None:
            return False
        snapshot, locked = opened
        self._note_arrivals(((e.id, e.hlc) for e in snapshot.entries), now)  # older versions
        timeline = self._timeline
        assert timeline is not None
        timeline.add(snapshot.entries)
        covered = {device: seq for device, (seq, _) in snapshot.frontier.items()}
        tail = self._unfolded.entries_after(self._replica, covered)
        tail = [s for s in tail if s.entry.id not in held_back]
        self._absorb(
            locked + [s.entry for s in tail],
            now,
            quiet=True,
            known={s.entry.id: s.body for s in tail},
        )
        return True

    def snapshot(self, now: int) -> None:
        """Save a snapshot of the app state in the profile, so the next start folds it plus
        the entries stored since instead of decrypting all history again."""
        timeline = self.timeline(now)
        locked = tuple(sorted((e.header.device, e.header.seq) for e in self._fold.locked.values()))
        saved.save_snapshot(self._replica, self.keys.snapshot, timeline, locked)

    def _note_arrivals(self, dated: Iterable[tuple[EntryId, int]], now: int) -> None:
        """Record ``now`` as the arrival of each ``(entry id, hlc)`` dated after it (the first
        arrival counts: a recorded one is kept)."""
        future = [i for i, hlc in dated if hlc > now]
        if not future:
            return  # the common case: nothing read from the profile
        known = self._timeline.arrived if self._timeline is not None else {}
        fresh = {i: now for i in future if i not in known}
        known.update(fresh)
        arrivals.append(self._replica.store, self.keys.arrived, fresh)

    # ------------------------------------------------------------------ folding

    def _absorb(
        self,
        entries: Sequence[Entry],
        now: int,
        *,
        quiet: bool = False,
        known: Mapping[EntryId, bytes | None] | None = None,
        provisional: bool = False,
    ) -> list[AppEvent]:
        """Open app entries with the content fold (those this device cannot open yet wait in
        it) and fold them. ``known``: bodies the caller already has (``None``: purged); with
        ``provisional`` they are pending entries, which the store's feeds do not hold yet."""
        return self._fold_opened(self._fold.fold(entries, known), now, quiet, provisional)

    def _fold_opened(
        self, opened: list[Folded[AppOperation]], now: int, quiet: bool, provisional: bool
    ) -> list[AppEvent]:
        timeline = self._timeline
        assert timeline is not None
        found: list[AppEntry] = []
        purged: dict[EntryId, tuple[bool, EntryId | None]] | None = None
        for item in opened:
            entry, op = item.entry, item.value
            if op is None:  # purged: a post keeps a tombstone, anything else applies as a no-op
                if purged is None:
                    purged = saved.purged(self._replica.store, self.keys.purged)
                op = saved.tombstone(purged[entry.id][1]) if entry.id in purged else saved.NO_OP
            if not provisional:
                self._provisional.pop(entry.id, None)  # in its feed now
            assert item.person is not None
            h = entry.header
            found.append(AppEntry(entry.id, h.device, item.person, h.seq, h.hlc, h.deps, op))
        self._note_arrivals(((e.id, e.hlc) for e in found), now)  # stored before recorded
        return self._apply(timeline.add(found), quiet=quiet)

    def _apply(self, changes: list[Change], *, quiet: bool = False) -> list[AppEvent]:
        """Purge what ``changes`` deleted, fold document operations, and return the events."""
        timeline = self._timeline
        assert timeline is not None
        if any(c.purge for c in changes):
            saved.purge(self._replica.store, self.keys, timeline, changes)
        events: list[AppEvent] = []
        for change in changes:
            op = change.entry.op
            if not isinstance(op, DocOp):
                continue
            if op.doc in self._docs:
                changed = bool(self._docs[op.doc]._apply(change.entry, op.payload))
            else:  # not open here: it is folded when it is opened
                changed = SharedDoc.valid(change.entry, op.payload)
            if changed and not quiet:
                events.append(DocChanged(person=change.entry.person, doc=op.doc))
        if quiet or not self.listening:
            return events
        names = self._names()
        for change in changes:
            if change.kind is ChangeKind.HIDE:  # one event for each post the hide removed
                events += hidden_events(change, lambda p: self._view(p, names))
                continue
            post = self._view(change.post, names) if change.post is not None else None
            event = post_event(change.kind, change.entry.person, post)
            if event is not None:
                events.append(event)
        return events

    def pending(self, pending: Sequence[tuple[Entry, bytes]], now: int) -> list[AppEvent]:
        """Entries whose signature verified but whose feed has a gap before them (a newest-first
        sync sends the latest first): shown at once, provisionally. They are signed by their
        author, so nothing about them changes when the gap fills; if it never does (a fork),
        they stay shown until the next restart."""
        fresh = [(e, b) for e, b in pending if e.header.type == APP_TYPE]
        if not fresh:
            return []
        self._note_arrivals(((e.id, e.header.hlc) for e, _ in fresh), now)
        for entry, body in fresh:
            self._provisional[entry.id] = (entry, body)
        if self._timeline is None:
            return []
        known = {e.id: b for e, b in fresh}
        return self._absorb([e for e, _ in fresh], now, known=known, provisional=True)

    def received(
        self, accepted: Sequence[Entry], now: int, known: Mapping[EntryId, bytes | None] | None
    ) -> list[AppEvent]:
        """Entries of this group were stored (sync, or this device's own): fold them, retry
        the locked ones, expire what is due."""
        self._note_arrivals(
            ((e.id, e.header.hlc) for e in accepted if e.header.type == APP_TYPE), now
        )
        if self._timeline is not None and (self._fold.cutoffs_moved() or self._admins_moved()):
            # a removal's cut-off reached back over entries already folded: fold again, and
            # reopen the documents (a handle from before shows the old state; ask doc() again)
            self.unload()
        if self._timeline is None:
            if not self.listening:
                self._unfolded.note(accepted, known)  # folded with the rest on first use
                return []
            # someone listens (the fold was dropped above): what came before is history,
            # this batch is news (but what was shown provisionally was news already)
            self.timeline(now, frozenset(e.id for e in accepted if e.id not in self._provisional))
        locked = self._fold.locked
        retry = [e for e in locked.values() if e.id not in self._provisional]
        fresh = [e for e in accepted if e.header.type == APP_TYPE]
        events = self._absorb(retry + fresh, now, known=known) if fresh or retry else []
        waiting = {i: b for i, (_, b) in self._provisional.items() if i in self._fold.locked}
        if waiting:
            entries = [self._provisional[i][0] for i in waiting]
            events += self._absorb(entries, now, known=waiting, provisional=True)
        self._fold.mark()
        return events + self.expire(now)

    def expire(self, now: int) -> list[AppEvent]:
        """Disappearing posts whose time is up by ``now``: purged, and their events."""
        return self._apply(self.timeline(now).expire(now))

    def forget_forked(self, forks: Mapping[DeviceId, int], now: int) -> None:
        """Feeds were found forked at ``forks`` (device -> seq): rebuild the view from the store
        without what they hold from there on. The saved snapshot may hold it, so it goes."""
        self._replica.store.put_meta(self.keys.snapshot, b"")
        self._provisional = {
            i: (e, b)
            for i, (e, b) in self._provisional.items()
            if e.header.seq < forks.get(e.header.device, e.header.seq + 1)
        }
        if self._timeline is not None:
            self._timeline = None
            self.timeline(now)

    # ------------------------------------------------------------------ writing

    def write(self, op: AppOperation, now: int) -> tuple[Entry, list[AppEvent]]:
        """Append ``op`` to this device's feed and fold it: the entry and the events it made
        (:class:`NotAMember` if this device is not a member, or the group refuses it)."""
        stored, events = self.write_stored(op, now)
        return stored.entry, events

    def write_stored(self, op: AppOperation, now: int) -> tuple[StoredEntry, list[AppEvent]]:
        """:meth:`write`, returning the entry with the body it stored (and committed: the
        live push hands both to the peers as they are)."""
        timeline = self.timeline(now)
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
        hlc = bounded(max([0, *answered]), now)
        stored = self._replica.write_content(APP_TYPE, op.to_bytes(), now=hlc, deps=deps)
        events = self._fold_own(stored, op, now)
        if stored.entry.id in timeline.rejected:
            raise NotAMember(f"the group refuses this {op.kind.name.lower()} from this person")
        return stored, events

    def _fold_own(self, stored: StoredEntry, op: AppOperation, now: int) -> list[AppEvent]:
        """Fold this device's own new entry: it knows the operation, nothing is decrypted."""
        assert stored.body is not None
        folded = self._fold.accept(stored.entry, stored.body, op)
        return self._fold_opened([folded], now, quiet=False, provisional=False)

    def mark_read(
        self, now: int, up_to: Mapping[DeviceId, int] | None = None, *, restate: bool = False
    ) -> list[AppEvent]:
        """Share this person's read position (a cursor entry): every app entry applied, or
        ``up_to`` (device -> feed seq); with ``restate``, even if no position moves (the
        entry's time is when they last read); never fails a read."""
        timeline = self.timeline(now)
        cursor = self.cursor(now)
        target = timeline.frontier if up_to is None else up_to
        ahead = {d: s for d, s in target.items() if s > cursor.get(d, 0)}
        if not ahead and restate:
            me = self._replica.me.device
            ahead = {me: max(1, cursor.get(me, 0))}
        if not ahead or not self._replica.is_member:
            return []
        op = CursorOp(cursor=tuple(sorted(ahead.items())))
        deps = deps_for(op, timeline.heads)
        try:
            stored = self._replica.write_content(APP_TYPE, op.to_bytes(), now=now, deps=deps)
        except MicrosyncError:
            return []  # reading never fails because the cursor could not be written
        return self._fold_own(stored, op, now)

    # ------------------------------------------------------------------ documents

    def doc(self, name: str, publish: Publish, clock: Callable[[], int]) -> SharedDoc:
        """The open document ``name``, folded from the timeline on first use; ``publish``
        writes a local change (the caller writes it with :meth:`write`)."""
        found = self._docs.get(name)
        if found is not None:
            return found
        timeline = self.timeline(clock())
        shared = SharedDoc(name, Document(bytes(self._replica.me.device)), publish, clock)
        for entry in timeline.applied.values():
            op = entry.op
            if isinstance(op, DocOp) and op.doc == name and entry.id not in timeline.rejected:
                shared._apply(entry, op.payload)
        self._docs[name] = shared
        return shared

    def close_doc(self, name: str) -> None:
        """Forget the open document ``name`` (a local change did not land: rebuild it)."""
        self._docs.pop(name, None)

    # ------------------------------------------------------------------ reading

    def _names(self) -> dict[PersonId, str]:
        return {p: m.name for p, m in self._replica.state.members.items()}

    def _view(self, post_id: EntryId, names: Mapping[PersonId, str]) -> Post | None:
        timeline = self._timeline
        post = None if timeline is None else timeline.posts.get(post_id)
        return None if post is None else post_view(post, names)

    def require(self, post_id: bytes, now: int) -> PostState:
        """The post ``post_id`` (``KeyError`` if this device has none with that id)."""
        post = self.timeline(now).posts.get(EntryId(bytes(post_id)))
        if post is None:
            raise KeyError(f"no post {bytes(post_id)[:4].hex()} in this group")
        return post

    def post(self, post_id: bytes, now: int) -> Post:
        """One post or reply as shown now (``KeyError`` if there is none with that id)."""
        return post_view(self.require(post_id, now), self._names())

    def thread(self, post_id: bytes, now: int) -> list[Post]:
        """The replies to a post, oldest first (nested replies follow their parent)."""
        self.require(post_id, now)
        names = self._names()
        return [post_view(p, names) for p in self.timeline(now).thread(EntryId(bytes(post_id)))]

    def cursor(self, now: int) -> dict[DeviceId, int]:
        """This person's read position: the highest seq seen per device."""
        person = self._replica.me.identity.person_id
        return dict(self.timeline(now).cursors.get(person, {}))

    def unseen(self, now: int) -> list[PostState]:
        """Posts and replies by others this person has not seen on any of their devices."""
        cursor = self.cursor(now)
        me = self._replica.me.identity.person_id
        return [
            p
            for p in self.timeline(now).visible()
            if p.author != me and p.seq > cursor.get(p.device, 0)
        ]

    def feed(self, since: Since, now: int) -> tuple[list[Post], list[AppEvent]]:
        """Posts and replies, newest first (``Group.feed``), and the events reading made
        (expiries; with ``"last_opened"``, the cursor it wrote)."""
        timeline = self.timeline(now)
        events = self.expire(now)
        if since == "last_opened":
            chosen = self.unseen(now)
            events += self.mark_read(now)
        elif isinstance(since, datetime):
            cut = to_ms(since)
            chosen = [p for p in timeline.visible() if p.created_at > cut]
        elif since is None:
            chosen = timeline.visible()
        else:
            raise ValueError('since is None, "last_opened" or a datetime')
        names = self._names()
        return [post_view(p, names) for p in chosen], events
