"""How the app state reads: :class:`~microsync.app.events.Post` views of the timeline's posts,
and times as ``datetime``. Sans-IO, pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, assert_never

from microsync.app.events import (
    Deleted,
    Edited,
    Expired,
    Moderated,
    Post,
    Posted,
    Reacted,
    Reaction,
    Replied,
)
from microsync.app.timeline import ChangeKind, PostState
from microsync.identity import PersonId

__all__ = ["PostChanged", "post_event", "post_view", "to_ms", "when"]

_LAST_MS: Final = int(datetime.max.replace(tzinfo=UTC).timestamp() * 1000) - 86_400_000

PostChanged = Posted | Replied | Edited | Deleted | Expired | Reacted | Moderated


def when(ms: int) -> datetime:
    """Milliseconds since the epoch as a local ``datetime``: any integer gives one (times past
    what ``datetime`` holds, year 9999, are shown at its end rather than raising)."""
    return datetime.fromtimestamp(min(max(ms, 0), _LAST_MS) / 1000).astimezone()


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def post_view(post: PostState, names: Mapping[PersonId, str]) -> Post:
    """``post`` as the public :class:`Post` (``names``: the members' names by person).

    A post nobody reacted to (most of them; ``Group.feed`` makes one view per post) skips the
    reaction summaries: both are empty then."""
    reacted = bool(post.reactions)
    return Post(
        id=post.id,
        author=post.author,
        author_name=names.get(post.author, "(former member)"),
        text=post.text,
        created_at=when(post.created_at),
        attachments=post.attachments,
        reactions=post.reaction_summary() if reacted else {},
        reply_to=post.reply_to,
        edited=post.last_edit is not None,
        deleted=post.deleted,
        parts=() if post.deleted or post.expired else post.parts,
        reaction_records=_records(post) if reacted else (),
    )


def _records(post: PostState) -> tuple[Reaction, ...]:
    return tuple(
        Reaction(person=person, emoji=emoji, at=when(at))
        for emoji, person, at in post.reaction_times()
    )


def post_event(kind: ChangeKind, person: PersonId, post: Post | None) -> PostChanged | None:
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
        case ChangeKind.MODERATE:
            return Moderated(person=person, post=post)
        case ChangeKind.CURSOR | ChangeKind.LOCATION | ChangeKind.DOC | ChangeKind.HIDE:
            return None  # a hide tells of each post it removed (``AppState``)
        case _:
            assert_never(kind)
