"""What a group shows and tells: the read records (:class:`Post`, :class:`Presence`,
:class:`Location`) and one frozen dataclass per kind of event. Sans-IO.

Every event has ``kind`` (an :class:`EventKind`, a string enum: ``event.kind == "post"`` holds)
and ``person`` (who did it, when known); ``post`` and ``detail`` read the same on every kind as
they always have (``None`` where a kind has none), so code that predates the classes keeps
working. New code matches on the classes::

    match event:
        case Posted(post=post) | Replied(post=post): ...
        case MemberJoined(person=person): ...
        case _: ...

The events of the node layer (this device's exit, vault files) are in
:mod:`microsync.node.events`, with the union of all of them, ``microsync.Event``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, TypeAlias

from microsync.app.ops import Precision
from microsync.app.parts import Part
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId, PersonId

__all__ = [
    "AppEvent",
    "Deleted",
    "DeviceForked",
    "DocChanged",
    "Edited",
    "EventBase",
    "EventKind",
    "Expired",
    "ForkDetected",
    "Location",
    "LocationChanged",
    "MemberJoined",
    "MemberLeft",
    "Moderated",
    "Post",
    "PostEvent",
    "Posted",
    "Presence",
    "PresenceChanged",
    "Reacted",
    "Reaction",
    "Replied",
    "SharingStopped",
]


class EventKind(enum.StrEnum):
    POST = "post"
    REPLY = "reply"
    EDIT = "edit"
    DELETE = "delete"
    EXPIRE = "expire"
    REACTION = "reaction"
    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    PRESENCE = "presence"
    LOCATION = "location"
    DOC = "doc"
    DEVICE_FORKED = "device_forked"
    EXIT = "exit"
    VAULT_ADDED = "vault_added"
    VAULT_REMOVED = "vault_removed"
    MODERATED = "moderated"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """One person's standing ``emoji`` on a post, and when they reacted: the time their
    reaction entry was written as authored, shown no later than 5 minutes after it arrived
    here (``docs/security.md``, "Timestamps")."""

    person: PersonId
    emoji: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Post:
    """A post or a reply as this device sees it now. ``parts``: its typed parts
    (:mod:`microsync.app.parts`; empty once deleted or expired); ``reaction_records``: who
    reacted with what and when, oldest first (``reactions`` is the same without the times)."""

    id: EntryId
    author: PersonId
    author_name: str
    text: str | None  # None once deleted or expired
    created_at: datetime
    attachments: tuple[bytes, ...]
    reactions: dict[str, frozenset[PersonId]]
    reply_to: EntryId | None
    edited: bool
    deleted: bool
    parts: tuple[Part, ...] = ()
    reaction_records: tuple[Reaction, ...] = ()


@dataclass(frozen=True, slots=True)
class Location:
    """A member's latest shared location: degrees at ``precision`` (the centre of the cell the
    sharer was in), when it was shared (``at``) and how old it was when read (``age``, s)."""

    person_id: PersonId
    name: str
    lat: float
    lon: float
    precision: Precision
    at: datetime
    age: float
    label: str | None = None
    """The place name the sharer gave, if any (``"Oxford"``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SharingStopped:
    """A member stopped sharing their location with this device (or was never sharing it with
    this device any more: the two look the same to a viewer), at ``at``."""

    person_id: PersonId
    name: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a member has a device online now, and when one was last seen (announced, or
    wrote anything to the group)."""

    person_id: PersonId
    name: str
    online: bool
    status: str | None
    last_seen: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceForked:
    """A device signed two different entries at one position of its feed (a cloned or
    restored-from-backup device key): nothing it wrote from ``seq`` on is accepted or shown."""

    device: DeviceId
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBase:
    """What every event has: its ``kind`` (a class attribute) and the ``person`` it is about."""

    kind: ClassVar[EventKind]
    person: PersonId | None = None

    @property
    def post(self) -> Post | None:
        """The post the event is about, on the post kinds (``None`` elsewhere)."""
        return None

    @property
    def detail(self) -> object:
        """What the event is about besides a post (a :class:`Presence`, a :class:`Location`,
        a document name, a :class:`DeviceForked` ...), as before the per-kind classes."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PostEvent(EventBase):
    """The post kinds: ``post`` is the post as shown after the change (``None`` if gone)."""

    post: Post | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Posted(PostEvent):
    kind: ClassVar[EventKind] = EventKind.POST


@dataclass(frozen=True, slots=True, kw_only=True)
class Replied(PostEvent):
    kind: ClassVar[EventKind] = EventKind.REPLY


@dataclass(frozen=True, slots=True, kw_only=True)
class Edited(PostEvent):
    kind: ClassVar[EventKind] = EventKind.EDIT


@dataclass(frozen=True, slots=True, kw_only=True)
class Deleted(PostEvent):
    kind: ClassVar[EventKind] = EventKind.DELETE


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired(PostEvent):
    kind: ClassVar[EventKind] = EventKind.EXPIRE


@dataclass(frozen=True, slots=True, kw_only=True)
class Moderated(PostEvent):
    """An admin (``person``) removed ``post`` (someone else's) for everyone: a delete, or a
    hide of its author's posts (``docs/app.md``, "Moderation"). ``post.author`` wrote it."""

    kind: ClassVar[EventKind] = EventKind.MODERATED


@dataclass(frozen=True, slots=True, kw_only=True)
class Reacted(PostEvent):
    """A reaction was added to ``post`` or withdrawn from it."""

    kind: ClassVar[EventKind] = EventKind.REACTION


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberJoined(EventBase):
    kind: ClassVar[EventKind] = EventKind.MEMBER_JOINED


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberLeft(EventBase):
    kind: ClassVar[EventKind] = EventKind.MEMBER_LEFT


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChanged(EventBase):
    """``person``'s presence as it is now (``None``: no longer a member)."""

    kind: ClassVar[EventKind] = EventKind.PRESENCE
    presence: Presence | None = None

    @property
    def detail(self) -> object:
        return self.presence


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationChanged(EventBase):
    """``person``'s location as it is now; ``location`` is ``None`` once they stopped sharing
    it with this device, and ``stopped`` then says when."""

    kind: ClassVar[EventKind] = EventKind.LOCATION
    location: Location | None = None
    stopped: SharingStopped | None = None

    @property
    def detail(self) -> object:
        return self.location if self.location is not None else self.stopped


@dataclass(frozen=True, slots=True, kw_only=True)
class DocChanged(EventBase):
    """The shared document named ``doc`` changed (``person`` wrote the change)."""

    kind: ClassVar[EventKind] = EventKind.DOC
    doc: str

    @property
    def detail(self) -> object:
        return self.doc


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkDetected(EventBase):
    """A device of ``person`` was found forked: its posts from the fork on are gone."""

    kind: ClassVar[EventKind] = EventKind.DEVICE_FORKED
    fork: DeviceForked

    @property
    def detail(self) -> object:
        return self.fork


AppEvent: TypeAlias = (
    Posted
    | Replied
    | Edited
    | Deleted
    | Expired
    | Reacted
    | Moderated
    | MemberJoined
    | MemberLeft
    | PresenceChanged
    | LocationChanged
    | DocChanged
    | ForkDetected
)
"""The events of the app layer (:data:`microsync.Event` adds the node's)."""
