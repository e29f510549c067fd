"""The records of ``group.whats_new()``: a read position (:class:`Cursor`), one frozen
dataclass per kind of news, and the page (:class:`WhatsNew`). Sans-IO, pure.

A :class:`Cursor` is where a person has read up to: per device of the group, the highest feed
``seq`` covered (feeds hold every entry type: posts, vault files, membership), and the time it
was made (for what is not in a feed: live locations). It is a plain value: keep it, compare
it, store it with :meth:`Cursor.to_bytes` (strictly decoded back by :meth:`Cursor.from_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias

from microsync import encoding
from microsync.app.events import Location, Post
from microsync.blobs import BlobRef
from microsync.encoding import expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError
from microsync.identity import DeviceId, PersonId

__all__ = [
    "MAX_CURSOR_DEVICES",
    "Cursor",
    "DocEdited",
    "Joined",
    "Left",
    "Moved",
    "NewFile",
    "NewPost",
    "NewReaction",
    "NewReply",
    "News",
    "NewsBase",
    "WhatsNew",
]

MAX_CURSOR_DEVICES: Final = 4096
"""Most devices a cursor names (as a cursor entry, ``microsync.app.ops.MAX_CURSOR``)."""
_MAX_SEQ: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Cursor:
    """A read position: ``positions`` (device -> the highest feed seq read, sorted by
    device) and ``at`` (Unix ms: what is not in a feed counts as read up to then)."""

    positions: tuple[tuple[DeviceId, int], ...] = ()
    at: int = 0

    @classmethod
    def of(cls, positions: Mapping[DeviceId, int], at: int) -> Cursor:
        """The cursor at ``positions`` (devices at 0 are left out) and ``at``."""
        return cls(tuple(sorted((d, s) for d, s in positions.items() if s > 0)), at)

    def seq(self, device: DeviceId) -> int:
        """The highest seq of ``device``'s feed this cursor covers (0: none)."""
        return dict(self.positions).get(device, 0)

    def to_bytes(self) -> bytes:
        """Canonical CBOR ``[at, [[device, seq], ...]]``."""
        pairs = [[bytes(d), s] for d, s in self.positions]
        return encoding.encode([self.at, pairs])  # type: ignore[list-item]

    @classmethod
    def from_bytes(cls, data: bytes) -> Cursor:
        """Decode strictly (:class:`DecodeError` for anything :meth:`to_bytes` cannot make)."""
        at, pairs = expect_list(encoding.decode(data, max_size=64 * 1024 * 4), "cursor", 2)
        items = expect_list(pairs, "cursor positions")
        if len(items) > MAX_CURSOR_DEVICES:
            raise DecodeError("cursor: too many devices")
        positions = []
        for item in items:
            device, seq = expect_list(item, "cursor position", 2)
            positions.append(
                (DeviceId(expect_bytes(device, "device", 32)), expect_int(seq, "seq", 1, _MAX_SEQ))
            )
        cursor = cls(tuple(positions), expect_int(at, "at"))
        if cursor.to_bytes() != data:
            raise DecodeError("cursor: not canonical")
        return cursor


@dataclass(frozen=True, slots=True, kw_only=True)
class NewsBase:
    """What every kind of news has: who did it (``None`` if unknown) and when (as shown
    here: bounded by when it arrived, ``docs/security.md``, "Timestamps")."""

    person: PersonId | None
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewPost(NewsBase):
    """Someone else's post."""

    post: Post


@dataclass(frozen=True, slots=True, kw_only=True)
class NewReply(NewsBase):
    """Someone else's reply (to anyone's post)."""

    post: Post


@dataclass(frozen=True, slots=True, kw_only=True)
class NewReaction(NewsBase):
    """``person`` reacted with ``emoji`` to ``post``, which is yours (still standing)."""

    post: Post
    emoji: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFile(NewsBase):
    """Someone else added ``ref`` to the vault (still there)."""

    ref: BlobRef


@dataclass(frozen=True, slots=True, kw_only=True)
class Moved(NewsBase):
    """Someone else kept a location in the group's history (``keep_history=True``)."""

    latitude: float
    longitude: float
    precision: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined(NewsBase):
    """``person`` became a member (``by``: who added them)."""

    by: PersonId | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Left(NewsBase):
    """``person`` stopped being a member: removed ``by`` someone, or left (``by`` is
    ``person``)."""

    by: PersonId | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DocEdited(NewsBase):
    """The shared document ``doc`` was changed ``changes`` times by ``people`` (everyone but
    you; ``person`` the latest), ``at`` the latest change: one record per document per page."""

    doc: str
    people: frozenset[PersonId]
    changes: int


News: TypeAlias = NewPost | NewReply | NewReaction | NewFile | Moved | Joined | Left | DocEdited
"""Any kind of news, for ``match item: case NewReaction(post=post, emoji=e): ...``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WhatsNew:
    """One page of what happened after a cursor, oldest first.

    ``cursor`` is where the page ends: pass it to ``mark_read(up_to=...)`` to mark exactly what
    was shown, or as ``since`` to get the next page while ``more`` is true. ``locations``: the
    live locations others shared after the cursor's time (they are not in any feed), latest
    per person; on every page, current as of the read."""

    items: tuple[News, ...]
    cursor: Cursor
    more: bool
    locations: tuple[Location, ...] = ()
