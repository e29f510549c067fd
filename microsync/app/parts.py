"""Structured posts: the typed parts a post may carry besides its text. Sans-IO, pure.

A post's ``parts`` field (optional, so a post without parts encodes exactly as before) is a
list of at most :data:`MAX_PARTS` parts, each a CBOR list led by its kind:

    [1, text]                              TextPart
    [2, url] / [2, url, title]             LinkPart
    [3, label, lat, lon, precision]        PlacePart (micro-degrees, snapped to precision)
    [4, ref]                               AttachmentPart (a vault blob id, as ``bytes(ref)``)

Every part is hostile until checked (a member's validly signed post may carry anything):
sizes are bounded, a link's scheme is one of :data:`URL_SCHEMES` and its text printable ASCII
with no spaces, labels and titles hold no control characters, and a place's coordinates must
be exactly the centre of a cell at its stated precision (never finer than ``street``), so a
place never carries more than it says. Anything else is a :class:`~microsync.errors.DecodeError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias, assert_never

from microsync.app.ephemeral import GRID, _snap, coarsen
from microsync.encoding import Value
from microsync.errors import DecodeError

__all__ = [
    "MAX_LABEL",
    "MAX_PARTS",
    "MAX_PART_REF",
    "MAX_PART_TEXT",
    "MAX_URL",
    "PLACE_PRECISIONS",
    "URL_SCHEMES",
    "AttachmentPart",
    "LinkPart",
    "Part",
    "PartKind",
    "PlacePart",
    "TextPart",
    "check_parts",
    "parts_from_value",
    "parts_to_value",
]

MAX_PARTS: Final = 16
"""Most parts one post carries."""
MAX_PART_TEXT: Final = 16 * 1024
"""Longest text part, in UTF-8 bytes."""
MAX_PART_REF: Final = 1024
"""Longest attachment ref, in bytes (as a post's ``attachments``)."""
MAX_URL: Final = 2048
"""Longest link, in bytes."""
MAX_LABEL: Final = 256
"""Longest link title or place label, in UTF-8 bytes."""
URL_SCHEMES: Final = ("https", "http", "mailto")
"""The link schemes a part may carry (no ``javascript:``, ``data:``, ``file:`` ...)."""
PLACE_PRECISIONS: Final = ("street", "city", "region")
"""The precisions a place may have: a check-in never pins anyone to the metre."""


class PartKind(enum.IntEnum):
    TEXT = 1
    LINK = 2
    PLACE = 3
    ATTACHMENT = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class TextPart:
    """A paragraph of text."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkPart:
    """A link (``https``, ``http`` or ``mailto``) with an optional title."""

    url: str
    title: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacePart:
    """A named place at coarse coordinates: micro-degrees, the centre of the cell at
    ``precision`` that the place is in. Build one with :meth:`at`, which snaps the position
    before anything is encoded."""

    label: str
    lat: int
    lon: int
    precision: str = "city"

    @classmethod
    def at(cls, label: str, lat: float, lon: float, precision: str = "city") -> PlacePart:
        """The place ``label`` at ``lat``/``lon`` (degrees), snapped to ``precision``
        (``"street"``, ``"city"`` or ``"region"``; ``ValueError`` otherwise)."""
        if precision not in PLACE_PRECISIONS:
            raise ValueError(f"a place's precision is one of {', '.join(PLACE_PRECISIONS)}")
        micro_lat, micro_lon = coarsen(lat, lon, precision)
        return cls(label=label, lat=micro_lat, lon=micro_lon, precision=precision)

    @property
    def latitude(self) -> float:
        return self.lat / 1_000_000

    @property
    def longitude(self) -> float:
        return self.lon / 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachmentPart:
    """A file in the group's vault: ``ref`` is ``bytes(blob_ref)`` (resolve it with
    ``group.vault.get(part.ref)``)."""

    ref: bytes


Part: TypeAlias = TextPart | LinkPart | PlacePart | AttachmentPart
"""Any part of a structured post, for ``match part: case LinkPart(url=url): ...``."""


def parts_to_value(parts: tuple[Part, ...]) -> list[Value]:
    """``parts`` as they go on the wire (checked by :func:`check_parts` before encoding)."""
    return [_to_value(p) for p in parts]


def _to_value(part: Part) -> Value:
    match part:
        case TextPart(text=text):
            return [int(PartKind.TEXT), text]
        case LinkPart(url=url, title=title):
            link: list[Value] = [int(PartKind.LINK), url]
            return link if title is None else [*link, title]
        case PlacePart(label=label, lat=lat, lon=lon, precision=precision):
            return [int(PartKind.PLACE), label, lat, lon, str(precision)]
        case AttachmentPart(ref=ref):
            return [int(PartKind.ATTACHMENT), ref]
        case _:
            assert_never(part)


def check_parts(value: Value) -> bool:
    """Is ``value`` a valid wire list of parts (module doc)?"""
    return isinstance(value, list) and 0 < len(value) <= MAX_PARTS and all(map(_valid, value))


def parts_from_value(value: Value) -> tuple[Part, ...]:
    """The parts of a checked wire list (:class:`DecodeError` if it is not valid)."""
    if not check_parts(value):
        raise DecodeError("app op post: bad parts")
    assert isinstance(value, list)
    return tuple(_from_value(item) for item in value)


def _from_value(item: Value) -> Part:
    assert isinstance(item, list)
    kind, *rest = item
    match PartKind(kind):  # type: ignore[arg-type]
        case PartKind.TEXT:
            return TextPart(text=str(rest[0]))
        case PartKind.LINK:
            return LinkPart(url=str(rest[0]), title=None if len(rest) == 1 else str(rest[1]))
        case PartKind.PLACE:
            label, lat, lon, precision = rest
            assert type(lat) is int and type(lon) is int  # checked by _valid
            return PlacePart(label=str(label), lat=lat, lon=lon, precision=str(precision))
        case PartKind.ATTACHMENT:
            ref = rest[0]
            assert type(ref) is bytes  # checked by _valid
            return AttachmentPart(ref=ref)
        case unknown:
            assert_never(unknown)


def _valid(item: Value) -> bool:
    if not isinstance(item, list) or not item or type(item[0]) is not int:
        return False
    kind, *rest = item
    if kind == PartKind.TEXT:
        return len(rest) == 1 and _text(rest[0], MAX_PART_TEXT)
    if kind == PartKind.LINK:
        return len(rest) in (1, 2) and _url(rest[0]) and all(_label(t) for t in rest[1:])
    if kind == PartKind.PLACE:
        return len(rest) == 4 and _label(rest[0]) and _place(rest[1], rest[2], rest[3])
    if kind == PartKind.ATTACHMENT:
        return len(rest) == 1 and type(rest[0]) is bytes and 0 < len(rest[0]) <= MAX_PART_REF
    return False  # an unknown kind of part


def _text(value: Value, limit: int) -> bool:
    return type(value) is str and len(value.encode()) <= limit


def _label(value: Value) -> bool:
    return (
        _text(value, MAX_LABEL)
        and value != ""
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in str(value))
    )


def _url(value: Value) -> bool:
    if type(value) is not str or not 0 < len(value) <= MAX_URL:
        return False
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        return False  # printable ASCII, no spaces: internationalised names go punycoded
    scheme, colon, rest = value.partition(":")
    if not colon or scheme.lower() not in URL_SCHEMES:
        return False
    if scheme.lower() == "mailto":
        return rest != ""
    return rest.startswith("//") and rest[2:].split("/", 1)[0] not in ("", "@")


def _place(lat: Value, lon: Value, precision: Value) -> bool:
    if type(precision) is not str or precision not in PLACE_PRECISIONS:
        return False
    cell = GRID[precision]
    for v, limit in ((lat, 90_000_000), (lon, 180_000_000)):
        if type(v) is not int or not -limit <= v <= limit:
            return False
        if _snap(v, cell, limit) != v:
            return False  # finer than its precision says
    return True
