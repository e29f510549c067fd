"""The app state of one group as a pure fold of app operations (no I/O, no clock reads).

Operations are applied in causal order: an entry names in ``deps`` the app entries its author
had applied, and waits here until they are applied too. Every rule is checked by every replica
from signed authorship, never trusted from the UI:

* a post's author is the person whose device signed it; only that person edits it, and only
  that person or an admin (moderation, :mod:`microsync.app.moderation`) deletes it;
* edits are last-writer-wins by ``(hlc, entry id)``; a delete wins over every edit, for good;
* a reaction is an (emoji, person) pair held by the reacting entries not withdrawn; an unreact
  withdraws only the reacting entries it names, and only its own person's (observed-remove);
* a read cursor counts only from the person's own devices and merges by pointwise maximum;
* an op names the entries it acts on (the post, the reactions it withdraws) in its ``deps``,
  so every replica has applied them before it and decides alike (:func:`deps_for`).

Replicas that applied the same set of operations hold equal state, whatever the arrival order
(``tests/test_app_timeline.py`` checks this with Hypothesis). A delete or an expiry reports the
entry ids whose bodies the caller must purge from disk.

Times (``docs/security.md``, "Timestamps"): the rules above that must agree on every replica
(edits, locations) use the signed ``hlc``. What only this device sees uses it *bounded by when
the entry arrived here*: ``arrived`` maps each entry that was dated after its arrival to the
arrival time (by this device's clock; the caller keeps it). Such an entry is shown, sorted and
counted as activity at ``min(hlc, arrival + MAX_DRIFT_MS)``, and a disappearing post expires
at ``min(hlc, arrival) + ttl``: at the latest its time-to-live after it arrived, whatever the
author's clock (or an attacker) wrote. An entry not in ``arrived`` was not dated in the future
when it arrived, and its ``hlc`` is used as it is.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import assert_never

from microsync.app import forget, moderation
from microsync.app.ops import (
    AppOp,
    AppOperation,
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
    as_operation,
)
from microsync.app.parts import Part
from microsync.feed.entry import MAX_DEPS, EntryId
from microsync.identity import DeviceId, PersonId
from microsync.state.clock import MAX_DRIFT_MS

__all__ = ["AppEntry", "Change", "ChangeKind", "PostState", "Timeline", "deps_for"]


def _nobody(device: DeviceId, seq: int) -> bool:
    """The default moderator check: no entry moderates (a timeline without membership)."""
    return False


@dataclass(frozen=True, slots=True)
class AppEntry:
    """An app operation with the signed header fields the rules need."""

    id: EntryId
    device: DeviceId
    person: PersonId
    seq: int
    hlc: int
    deps: tuple[EntryId, ...]
    op: AppOperation


@dataclass(slots=True)
class PostState:
    id: EntryId
    author: PersonId
    device: DeviceId
    seq: int
    created_at: int  # as shown here: the hlc bounded by the arrival (see the module docstring)
    text: str | None  # None once deleted or expired
    attachments: tuple[bytes, ...]
    reply_to: EntryId | None
    ttl_ms: int | None
    expires_at: int | None = None  # by this device's clock: min(hlc, arrival) + ttl
    last_edit: tuple[int, bytes] | None = None
    edits: list[EntryId] = field(default_factory=list)
    deleted: bool = False
    expired: bool = False
    # emoji -> person -> the reacting entries still standing
    reactions: dict[str, dict[PersonId, set[EntryId]]] = field(default_factory=dict)
    parts: tuple[Part, ...] = ()  # the post's typed parts (shown only while not gone)
    reacted_at: dict[EntryId, int] = field(default_factory=dict)  # reacting entry -> shown at

    @property
    def edited(self) -> bool:
        return self.last_edit is not None

    @property
    def gone(self) -> bool:
        return self.deleted or self.expired

    def reaction_summary(self) -> dict[str, frozenset[PersonId]]:
        out = {}
        for emoji, people in self.reactions.items():
            holding = frozenset(p for p, tags in people.items() if tags)
            if holding:
                out[emoji] = holding
        return dict(sorted(out.items()))

    def reaction_times(self) -> list[tuple[str, PersonId, int]]:
        """``(emoji, person, when)`` of every standing reaction, ``when`` the earliest time
        (as shown here) of the person's standing reacting entries, oldest first."""
        out = [
            (emoji, person, min(self.reacted_at.get(t, 0) for t in tags))
            for emoji, people in self.reactions.items()
            for person, tags in people.items()
            if tags
        ]
        return sorted(out, key=lambda r: (r[2], r[0], r[1]))


class ChangeKind(enum.StrEnum):
    """What kind of change applying an entry made (a string enum: ``kind == "post"`` holds)."""

    POST = "post"
    REPLY = "reply"
    EDIT = "edit"
    DELETE = "delete"
    EXPIRE = "expire"
    REACTION = "reaction"
    CURSOR = "cursor"
    LOCATION = "location"
    DOC = "doc"
    MODERATE = "moderate"  # an admin deleted someone else's post, or it arrived hidden
    HIDE = "hide"  # an admin hid a member's posts (``purge`` lists what went)


@dataclass(frozen=True, slots=True)
class Change:
    """What applying one entry changed (for events); ``purge`` lists bodies to delete."""

    kind: ChangeKind
    entry: AppEntry
    post: EntryId | None = None
    purge: tuple[EntryId, ...] = ()


def named_by(op: AppOp) -> list[bytes]:
    """The entries ``op`` acts on (its post, the post it answers, the reactions it withdraws)."""
    operation = as_operation(op)
    match operation:
        case PostOp(reply_to=reply_to):
            return [] if reply_to is None else [reply_to]
        case EditOp(post=post) | DeleteOp(post=post) | ReactOp(post=post):
            return [post]
        case UnreactOp(post=post, removes=removes):
            return [post, *removes]
        case CursorOp() | LocationOp() | DocOp() | ForgetOp() | HideOp():
            return []
        case _:
            assert_never(operation)


def deps_for(op: AppOp, heads: AbstractSet[EntryId]) -> tuple[EntryId, ...]:
    """The ``deps`` of a new entry carrying ``op``: the entries it acts on, then as many of the
    current heads as fit (``MAX_DEPS``), the smallest ids first. A group whose history has
    many heads (tens of thousands of entries nobody's later entry named) is not sorted whole
    for every post: only the few smallest are picked (``heapq.nsmallest``, one pass)."""
    needed = sorted({EntryId(i) for i in named_by(op)})
    room = max(0, MAX_DEPS - len(needed))
    smallest = heapq.nsmallest(room + len(needed), heads) if room else []
    rest = [h for h in smallest if h not in needed][:room]
    return tuple(needed + rest)


class Timeline:
    """Posts, threads, reactions and read cursors of one group."""

    def __init__(
        self,
        arrived: dict[EntryId, int] | None = None,
        moderates: Callable[[DeviceId, int], bool] | None = None,
    ) -> None:
        self.arrived: dict[EntryId, int] = {} if arrived is None else arrived
        self.moderates: Callable[[DeviceId, int], bool] = moderates or _nobody
        """Was entry ``seq`` of a device written by an admin (moderation counts)?"""
        self.hidden: dict[DeviceId, int] = {}  # device -> last seq an admin's hide covers
        self.posts: dict[EntryId, PostState] = {}
        self.replies: dict[EntryId, list[EntryId]] = {}
        self.cursors: dict[PersonId, dict[DeviceId, int]] = {}
        self.cursor_at: dict[PersonId, int] = {}  # when each person last moved their cursor
        self.locations: dict[PersonId, AppEntry] = {}
        self.forgotten: dict[PersonId, int] = {}  # kept locations up to this hlc are purged
        self.active: dict[PersonId, int] = {}  # latest shown time of an applied entry per person
        self.applied: dict[EntryId, AppEntry] = {}
        self.frontier: dict[DeviceId, int] = {}  # highest applied app entry per device
        self.latest: dict[DeviceId, EntryId] = {}  # the entry at that seq
        self.heads: set[EntryId] = set()
        self.rejected: set[EntryId] = set()
        self._waiting: dict[EntryId, AppEntry] = {}
        self._blocked: dict[EntryId, int] = {}  # waiting entry -> deps not applied yet
        self._waiters: dict[EntryId, list[EntryId]] = {}  # missing dep -> entries waiting on it
        self._reactions: dict[EntryId, tuple[EntryId, str, PersonId]] = {}
        self._expiring: list[tuple[int, int, EntryId]] = []  # (expires_at, order, post)

    # ------------------------------------------------------------------ applying

    def add(self, entries: Iterable[AppEntry]) -> list[Change]:
        """Apply every entry whose causal past is applied; keep the others waiting. Duplicates
        change nothing. Among entries ready together, the order is ``(hlc, id)`` (any order
        gives the same state; this one makes events come out in time order)."""
        changes: list[Change] = []
        ready: list[tuple[int, bytes, AppEntry]] = []
        applied = self.applied
        for entry in entries:
            if entry.id in applied or entry.id in self._waiting:
                continue
            missing = {d for d in entry.deps if d not in applied} if entry.deps else None
            if missing:
                self._waiting[entry.id] = entry
                self._blocked[entry.id] = len(missing)
                for dep in missing:
                    self._waiters.setdefault(dep, []).append(entry.id)
            else:
                heapq.heappush(ready, (entry.hlc, bytes(entry.id), entry))
        while ready:
            _, _, entry = heapq.heappop(ready)
            if entry.id in self.applied:
                continue
            changes.extend(self._apply(entry))
            for waiter in self._waiters.pop(entry.id, ()):
                self._blocked[waiter] -= 1
                if self._blocked[waiter] == 0:
                    del self._blocked[waiter]
                    unblocked = self._waiting.pop(waiter)
                    heapq.heappush(ready, (unblocked.hlc, bytes(unblocked.id), unblocked))
        return changes

    def recorded(self) -> list[AppEntry]:
        """Every entry given to :meth:`add`: the applied ones in the order they were applied,
        then those still waiting for their causal past (what a snapshot keeps)."""
        return [*self.applied.values(), *self._waiting.values()]

    def shown_at(self, entry: AppEntry) -> int:
        """When ``entry`` is shown as written here: its ``hlc``, but never more than
        ``MAX_DRIFT_MS`` after it arrived."""
        arrived = self.arrived.get(entry.id)
        return entry.hlc if arrived is None else min(entry.hlc, arrived + MAX_DRIFT_MS)

    def _expires_at(self, entry: AppEntry, ttl_ms: int | None) -> int | None:
        if ttl_ms is None:
            return None
        return min(entry.hlc, self.arrived.get(entry.id, entry.hlc)) + ttl_ms

    @property
    def waiting(self) -> int:
        """Entries held back until their causal past arrives."""
        return len(self._waiting)

    def _apply(self, entry: AppEntry) -> list[Change]:
        self.applied[entry.id] = entry
        if entry.seq > self.frontier.get(entry.device, 0):
            self.frontier[entry.device] = entry.seq
            self.latest[entry.device] = entry.id
        self.heads.difference_update(entry.deps)
        self.heads.add(entry.id)
        self.active[entry.person] = max(self.active.get(entry.person, 0), self.shown_at(entry))
        change = self._change(entry)
        if change is None:
            self.rejected.add(entry.id)
            return []
        gone = self.posts.get(change.post) if change.post is not None else None
        if gone is not None and gone.gone:
            gone.parts = ()  # a deleted post's parts go with its text
        return [change]

    def _change(self, entry: AppEntry) -> Change | None:
        """Apply ``entry``'s operation; ``None`` if the rules refuse it."""
        op = entry.op
        match op:
            case PostOp():
                return self._post(entry, op)
            case EditOp():
                return self._edit(entry, op)
            case DeleteOp():
                return self._delete(entry, op)
            case ReactOp():
                return self._react(entry, op)
            case UnreactOp():
                return self._unreact(entry, op)
            case CursorOp():
                return self._cursor(entry, op)
            case LocationOp():
                return self._location(entry)
            case DocOp():
                return Change(ChangeKind.DOC, entry)
            case ForgetOp():
                return Change(ChangeKind.LOCATION, entry, purge=forget.forget(self, entry, op))
            case HideOp():
                purge = moderation.hide(self, entry, op)
                return None if purge is None else Change(ChangeKind.HIDE, entry, purge=purge)
            case _:
                assert_never(op)

    def _post(self, entry: AppEntry, op: PostOp) -> Change | None:
        reply_to = EntryId(op.reply_to) if op.reply_to is not None else None
        if reply_to is not None and (reply_to not in entry.deps or reply_to not in self.posts):
            return None  # a reply names its post in deps, or it is refused
        self.posts[entry.id] = PostState(
            id=entry.id,
            author=entry.person,
            device=entry.device,
            seq=entry.seq,
            created_at=self.shown_at(entry),
            text=op.text,
            attachments=op.attachments,
            reply_to=reply_to,
            ttl_ms=op.ttl_ms,
            expires_at=self._expires_at(entry, op.ttl_ms),
            parts=op.parts,
        )
        expires_at = self.posts[entry.id].expires_at
        if expires_at is not None:
            heapq.heappush(self._expiring, (expires_at, len(self.posts), entry.id))
        if reply_to is not None:
            self.replies.setdefault(reply_to, []).append(entry.id)
        if moderation.hidden(self, self.posts[entry.id]):  # a hide that counted covers it
            purge = moderation.remove(self.posts[entry.id])
            return Change(ChangeKind.MODERATE, entry, entry.id, purge=purge)
        if reply_to is not None:
            return Change(ChangeKind.REPLY, entry, entry.id)
        return Change(ChangeKind.POST, entry, entry.id)

    def _target(self, entry: AppEntry, post_id: bytes) -> PostState | None:
        """The post an op acts on. It must be named in the op's ``deps``: then every replica
        has applied it before the op, and they all decide alike."""
        if EntryId(post_id) not in entry.deps:
            return None
        return self.posts.get(EntryId(post_id))

    def _own_post(self, entry: AppEntry, post_id: bytes) -> PostState | None:
        post = self._target(entry, post_id)
        if post is None or post.author != entry.person:
            return None  # only the author edits or deletes, checked on every replica
        return post

    def _edit(self, entry: AppEntry, op: EditOp) -> Change | None:
        post = self._own_post(entry, op.post)
        if post is None:
            return None
        post.edits.append(entry.id)
        if post.gone:  # an edit racing a delete: the delete wins, the edit's body goes too
            return Change(ChangeKind.EDIT, entry, post.id, purge=(entry.id,))
        stamp = (entry.hlc, bytes(entry.id))
        if post.last_edit is None or stamp > post.last_edit:
            post.last_edit = stamp
            post.text = op.text
        return Change(ChangeKind.EDIT, entry, post.id)

    def _delete(self, entry: AppEntry, op: DeleteOp) -> Change | None:
        post = self._target(entry, op.post)
        if post is not None and post.author != entry.person:  # an admin's, or refused
            purge = moderation.delete(self, entry, post)
            return None if purge is None else Change(ChangeKind.MODERATE, entry, post.id, purge)
        if post is None:
            return None
        post.deleted = True
        post.text, post.attachments, post.last_edit = None, (), None
        return Change(ChangeKind.DELETE, entry, post.id, purge=(post.id, *post.edits))

    def _react(self, entry: AppEntry, op: ReactOp) -> Change | None:
        post = self._target(entry, op.post)
        if post is None:
            return None
        post.reactions.setdefault(op.emoji, {}).setdefault(entry.person, set()).add(entry.id)
        self._reactions[entry.id] = (post.id, op.emoji, entry.person)
        post.reacted_at[entry.id] = self.shown_at(entry)
        return Change(ChangeKind.REACTION, entry, post.id)

    def _unreact(self, entry: AppEntry, op: UnreactOp) -> Change | None:
        post = self._target(entry, op.post)
        if post is None:
            return None
        for tag in op.removes:
            if EntryId(tag) not in entry.deps:
                return None
            if self._reactions.get(EntryId(tag)) != (post.id, op.emoji, entry.person):
                return None  # only the reactor withdraws, and only reactions it has seen
        held = post.reactions.get(op.emoji, {}).get(entry.person, set())
        held.difference_update(EntryId(t) for t in op.removes)
        return Change(ChangeKind.REACTION, entry, post.id)

    def _cursor(self, entry: AppEntry, op: CursorOp) -> Change | None:
        if not op.cursor:
            return Change(ChangeKind.CURSOR, entry)  # a placeholder: changes nothing
        mine = self.cursors.setdefault(entry.person, {})
        at = self.shown_at(entry)
        self.cursor_at[entry.person] = max(self.cursor_at.get(entry.person, at), at)
        for device, seq in op.cursor:
            key = DeviceId(device)
            mine[key] = max(mine.get(key, 0), seq)
        return Change(ChangeKind.CURSOR, entry)

    def _location(self, entry: AppEntry) -> Change | None:
        if entry.hlc <= self.forgotten.get(entry.person, -1):
            return Change(ChangeKind.LOCATION, entry, purge=(entry.id,))  # forgotten already
        known = self.locations.get(entry.person)
        if known is None or (entry.hlc, entry.id) > (known.hlc, known.id):
            self.locations[entry.person] = entry
        return Change(ChangeKind.LOCATION, entry)

    # ------------------------------------------------------------------ time

    def expire(self, now: int) -> list[Change]:
        """Mark disappearing posts whose time is up (by ``now``, this device's clock) and report
        what to purge. Only the posts due are visited (a heap by expiry time), in the order
        they were posted, so a live entry does not cost a scan of every post."""
        due: list[tuple[int, EntryId]] = []
        while self._expiring and self._expiring[0][0] <= now:
            _, order, post_id = heapq.heappop(self._expiring)
            due.append((order, post_id))
        out = []
        for _, post_id in sorted(due):
            post = self.posts[post_id]
            if post.gone:
                continue
            post.expired = True
            post.text, post.attachments, post.last_edit = None, (), None
            post.parts = ()
            purge = (post.id, *post.edits)
            out.append(Change(ChangeKind.EXPIRE, self.applied[post.id], post.id, purge))
        return out

    def forget_body(self, post_id: EntryId, deleted: bool) -> None:
        """Record a purge done on an earlier run (the body is gone from disk)."""
        post = self.posts.get(post_id)
        if post is not None:
            post.text, post.attachments, post.last_edit = None, (), None
            post.parts = ()
            if deleted:
                post.deleted = True
            else:
                post.expired = True

    # ------------------------------------------------------------------ reading

    def visible(self) -> list[PostState]:
        """Posts and replies not deleted or expired, newest first."""
        found = [p for p in self.posts.values() if not p.gone]
        return sorted(found, key=lambda p: (p.created_at, p.id), reverse=True)

    def thread(self, post_id: EntryId) -> list[PostState]:
        """Replies to ``post_id`` (and replies to them), oldest first, depth first."""
        out: list[PostState] = []
        stack = [post_id]
        seen: set[EntryId] = set()
        while stack:
            current = stack.pop()
            kids = sorted(
                (self.posts[r] for r in self.replies.get(current, ())),
                key=lambda p: (p.created_at, p.id),
            )
            for kid in reversed(kids):
                if kid.id not in seen:
                    seen.add(kid.id)
                    stack.append(kid.id)
            if current != post_id:
                out.append(self.posts[current])
        return [p for p in out if not p.gone]

    def summary(self) -> tuple[object, ...]:
        """A comparable digest: equal for replicas that applied the same set of entries."""
        return (
            tuple(
                (
                    p.id,
                    p.author,
                    p.text,
                    p.attachments,
                    p.reply_to,
                    p.deleted,
                    p.expired,
                    p.last_edit,
                    tuple((e, tuple(sorted(ps))) for e, ps in p.reaction_summary().items()),
                )
                for p in sorted(self.posts.values(), key=lambda p: p.id)
            ),
            tuple((p, tuple(sorted(c.items()))) for p, c in sorted(self.cursors.items())),
            tuple((p, e.id) for p, e in sorted(self.locations.items())),
            frozenset(self.rejected),
            tuple(sorted(self.hidden.items())),
        )
