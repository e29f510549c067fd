"""Moderation in the app timeline: an admin deletes anyone's post or reply for everyone, and
hides a (removed) member's posts. Pure functions on a :class:`~microsync.app.timeline.Timeline`.

Rules, checked by every replica (``docs/app.md``, "Moderation"):

* a delete of someone else's post counts only if its entry was written while its author was
  an admin, judged at the entry's own place in its feed (``Timeline.moderates(device, seq)``:
  :meth:`~microsync.group.state.GroupState.moderates`, the same cut-off lines as membership
  operations), so a forged or late moderation by a non-admin is refused everywhere;
* a :class:`~microsync.app.ops.HideOp` by an admin hides every post and reply the devices it
  names wrote at or before the position named for each, whenever they arrive (before the hide
  or after it: a post written before it that arrives later is hidden on arrival), so the
  result is a function of the set of entries;
* a moderated post is deleted exactly as its author's own delete would (text, attachments and
  edits purged from disk, a tombstone kept), and the change is of kind
  :attr:`~microsync.app.timeline.ChangeKind.MODERATE` (the :class:`Moderated` event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microsync.app.events import Moderated
from microsync.app.ops import HideOp
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId

if TYPE_CHECKING:
    from collections.abc import Callable

    from microsync.app.events import Post
    from microsync.app.timeline import AppEntry, Change, PostState, Timeline

__all__ = ["delete", "hidden", "hidden_events", "hide", "remove"]

Purge = tuple[EntryId, ...]


def remove(post: PostState) -> Purge:
    """Delete ``post`` for everyone; the entries whose bodies go (it, and its edits)."""
    post.deleted = True
    post.text, post.attachments, post.last_edit = None, (), None
    return (post.id, *post.edits)


def delete(timeline: Timeline, entry: AppEntry, post: PostState) -> Purge | None:
    """An admin's delete of someone else's ``post``: what to purge (``None``: refused, the
    entry was not written by an admin)."""
    if not timeline.moderates(entry.device, entry.seq):
        return None
    return remove(post)


def hidden(timeline: Timeline, post: PostState) -> bool:
    """Is ``post`` covered by a hide that counted?"""
    upto = timeline.hidden.get(post.device)
    return upto is not None and post.seq <= upto


def hide(timeline: Timeline, entry: AppEntry, op: HideOp) -> Purge | None:
    """An admin's hide: every applied post it covers goes; what to purge (``None``: refused)."""
    if not timeline.moderates(entry.device, entry.seq):
        return None
    for device, seq in op.upto:
        key = DeviceId(device)
        timeline.hidden[key] = max(seq, timeline.hidden.get(key, 0))
    purge: list[EntryId] = []
    for post in timeline.posts.values():
        if not post.gone and hidden(timeline, post):
            purge += remove(post)
    return tuple(purge)


def hidden_events(change: Change, view: Callable[[EntryId], Post | None]) -> list[Moderated]:
    """The events of a hide: one :class:`Moderated` for each post it removed."""
    posts = (view(entry) for entry in change.purge)
    return [Moderated(person=change.entry.person, post=p) for p in posts if p is not None]
