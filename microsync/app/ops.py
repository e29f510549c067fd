"""App operations: what a content entry of type :data:`APP_TYPE` carries, encrypted.

Every app operation uses the same entry type, so the cleartext header never says whether an
entry is a post, a reaction or a read cursor. The plaintext is canonical CBOR
``[version, kind, {field: value}]``; decoding is strict (unknown kinds or fields, wrong types,
oversize values: :class:`~microsync.errors.DecodeError`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias, cast

from microsync import encoding
from microsync.app.parts import Part, check_parts, parts_from_value, parts_to_value
from microsync.encoding import Value
from microsync.errors import DecodeError

__all__ = [
    "APP_TYPE",
    "MAX_ATTACHMENTS",
    "MAX_TEXT",
    "PRECISIONS",
    "AppOp",
    "AppOperation",
    "CursorOp",
    "DeleteOp",
    "DocOp",
    "EditOp",
    "ForgetOp",
    "HideOp",
    "Kind",
    "LocationOp",
    "PostOp",
    "Precision",
    "ReactOp",
    "UnreactOp",
    "as_operation",
]

APP_TYPE: Final = 2
"""Feed entry type of every app operation (membership is type 1)."""

_VERSION: Final = 1
MAX_TEXT: Final = 64 * 1024
"""Longest post, reply or edit text, in UTF-8 bytes."""
MAX_ATTACHMENTS: Final = 32
MAX_EMOJI: Final = 64
MAX_REF: Final = 1024
MAX_TTL_MS: Final = 10 * 365 * 24 * 3600 * 1000
MAX_REMOVES: Final = 32
MAX_CURSOR: Final = 4096
_ID: Final = 32
_MAX_BYTES: Final = MAX_TEXT + 64 * 1024


class Kind(enum.IntEnum):
    POST = 1  # a post, or a reply when ``reply_to`` is set
    EDIT = 2
    DELETE = 3
    REACT = 4
    UNREACT = 5
    CURSOR = 6  # a person's read position, shared with their own devices
    LOCATION = 7  # a location kept in history (the default is an ephemeral announcement)
    DOC = 8  # an operation on a named document (microsync.state)
    FORGET = 9  # the author forgets their own kept locations (microsync.app.location)
    HIDE = 20  # moderation: an admin hides a member's posts (docs/app.md, "Moderation")


class Precision(enum.StrEnum):
    """How coarse a shared location is (a string enum: ``precision == "city"`` holds)."""

    EXACT = "exact"
    STREET = "street"
    CITY = "city"
    REGION = "region"


PRECISIONS: Final = tuple(p.value for p in Precision)


class _Dispatch(type):
    """``AppOp(kind, **fields)`` (the historical form) builds the per-kind class of ``kind``."""

    def __call__(cls, *args: Any, **fields: Any) -> Any:
        if cls is AppOp:
            if len(args) != 1 or not isinstance(args[0], int):
                raise TypeError("AppOp(kind, **fields) takes one Kind and the kind's fields")
            return _CLASSES[Kind(args[0])](**fields)
        return super().__call__(*args, **fields)


class AppOp(metaclass=_Dispatch):
    """One app operation: the base of the per-kind classes (:class:`PostOp` ... :class:`DocOp`,
    their union :data:`AppOperation`, for ``match``). Each carries exactly the fields of its
    kind, named as on the wire; ``kind`` is a class attribute.

    The historical form ``AppOp(Kind.POST, text=...)`` still builds the class of that kind.
    """

    __slots__ = ()
    kind: ClassVar[Kind]

    if TYPE_CHECKING:

        def __init__(self, kind: Kind, /, **fields: Any) -> None: ...

    def to_bytes(self) -> bytes:
        """The canonical plaintext ``[version, kind, {field: value}]``."""
        fields: dict[str | int, Value] = {}
        required = _SCHEMA[self.kind][0]
        for name in _FIELDS[self.kind]:
            value = getattr(self, name)
            if value is None or (value == () and name not in required):
                continue
            if name in ("attachments", "removes"):
                fields[name] = list(value)
            elif name == "parts":
                fields[name] = parts_to_value(value)
            elif name in ("cursor", "upto"):
                fields[name] = [[d, s] for d, s in value]
            elif name == "precision":
                fields[name] = str(value)
            else:
                fields[name] = value
        _check(self.kind, fields)
        data = encoding.encode([_VERSION, int(self.kind), fields])
        if len(data) > _MAX_BYTES:  # receivers would refuse it: say so here
            raise DecodeError(f"app op {self.kind.name.lower()}: over {_MAX_BYTES} bytes")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> AppOperation:
        """Decode strictly (:class:`DecodeError` for unknown kinds or fields, wrong types,
        oversize values). A post of text only, the common case, is read directly
        (:func:`_text_post`); everything else, and every error, is the generic path's."""
        post = _text_post(data) if type(data) is bytes else None
        return _from_bytes_strict(data) if post is None else post


def _from_bytes_strict(data: bytes) -> AppOperation:
    """:meth:`AppOp.from_bytes` by the generic strict decoder alone (what decides errors)."""
    value = encoding.decode(data, max_size=_MAX_BYTES)
    if not isinstance(value, list) or len(value) != 3:
        raise DecodeError("app op: expected [version, kind, fields]")
    version, kind, fields = value
    if version != _VERSION:
        raise DecodeError("app op: unknown version")
    try:
        parsed = Kind(kind) if type(kind) is int else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise DecodeError("app op: unknown kind")
    if not isinstance(fields, dict) or not all(type(k) is str for k in fields):
        raise DecodeError("app op: fields must be a map of names")
    _check(parsed, fields)
    args: dict[str, object] = {}
    for key, item in fields.items():
        name = str(key)
        if name in ("attachments", "removes"):
            assert isinstance(item, list)
            args[name] = tuple(item)
        elif name == "parts":
            args[name] = parts_from_value(item)
        elif name in ("cursor", "upto"):
            assert isinstance(item, list)
            args[name] = tuple((pair[0], pair[1]) for pair in item)  # type: ignore[index]
        elif name == "precision":
            args[name] = Precision(str(item))
        else:
            args[name] = item
    return _CLASSES[parsed](**args)  # type: ignore[arg-type]


_TEXT_POST: Final = bytes.fromhex("830101a164") + b"text"
"""``[1, 1, {"text": ...`` in canonical CBOR: the start of every post that is text only."""
_TEXT_POST_LEN: Final = len(_TEXT_POST)


def _text_post(data: bytes) -> PostOp | None:
    """The post in ``data`` if it is exactly ``[1, 1, {"text": text}]`` in canonical CBOR
    with a valid text, else ``None`` (the generic decoder then decides). Canonical means the
    text's length has its shortest head; the text must be valid UTF-8 (as cbor2 requires), at
    most :data:`MAX_TEXT` bytes, and end the data."""
    pos = _TEXT_POST_LEN
    if data[:pos] != _TEXT_POST or len(data) <= pos:
        return None
    head = data[pos]
    if not 0x60 <= head <= 0x7B:  # major type 3 (text), a definite length
        return None
    size, pos = head - 0x60, pos + 1
    if size >= 24:
        width = 1 << (size - 24)  # 1, 2, 4 or 8 bytes of length follow
        size = int.from_bytes(data[pos : pos + width], "big")
        pos += width
        if size < (24 if width == 1 else 1 << (4 * width)):
            return None  # a shorter head would do: not canonical
    if pos + size != len(data) or size > MAX_TEXT:
        return None
    try:
        text = data[pos:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return PostOp(text=text)


@dataclass(frozen=True, slots=True)
class PostOp(AppOp):
    """A post, or a reply when ``reply_to`` (the post's entry id) is set. ``parts``: its
    typed parts (:mod:`microsync.app.parts`), left off the wire when there are none, so a post
    without them encodes as it always has."""

    kind: ClassVar[Kind] = Kind.POST
    text: str
    reply_to: bytes | None = None
    attachments: tuple[bytes, ...] = ()
    ttl_ms: int | None = None
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class EditOp(AppOp):
    """New text for the author's own post ``post`` (its entry id)."""

    kind: ClassVar[Kind] = Kind.EDIT
    post: bytes
    text: str


@dataclass(frozen=True, slots=True)
class DeleteOp(AppOp):
    """Delete the author's own post ``post`` for everyone."""

    kind: ClassVar[Kind] = Kind.DELETE
    post: bytes


@dataclass(frozen=True, slots=True)
class ReactOp(AppOp):
    """React to ``post`` with ``emoji``."""

    kind: ClassVar[Kind] = Kind.REACT
    post: bytes
    emoji: str


@dataclass(frozen=True, slots=True)
class UnreactOp(AppOp):
    """Withdraw the reacting entries ``removes`` (this person's ``emoji`` on ``post``)."""

    kind: ClassVar[Kind] = Kind.UNREACT
    post: bytes
    emoji: str
    removes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class HideOp(AppOp):
    """Moderation: hide, for everyone, every post and reply written by the devices named in
    ``upto`` at or before the ``seq`` named for each (an admin's, checked by every replica)."""

    kind: ClassVar[Kind] = Kind.HIDE
    upto: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class CursorOp(AppOp):
    """A person's read position: ``(device, seq)`` of the app entries seen."""

    kind: ClassVar[Kind] = Kind.CURSOR
    cursor: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class LocationOp(AppOp):
    """A location kept in history: micro-degrees, already coarsened to ``precision``."""

    kind: ClassVar[Kind] = Kind.LOCATION
    lat: int
    lon: int
    precision: Precision
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))


@dataclass(frozen=True, slots=True)
class ForgetOp(AppOp):
    """The author's own kept locations up to ``up_to`` (their signed time, ms) are forgotten:
    every device purges them from its disk, and any that arrives later as well."""

    kind: ClassVar[Kind] = Kind.FORGET
    up_to: int


@dataclass(frozen=True, slots=True)
class DocOp(AppOp):
    """An operation ``payload`` (``microsync.state``) on the document named ``doc``."""

    kind: ClassVar[Kind] = Kind.DOC
    doc: str
    payload: bytes


AppOperation: TypeAlias = (
    PostOp
    | EditOp
    | DeleteOp
    | ReactOp
    | UnreactOp
    | CursorOp
    | LocationOp
    | DocOp
    | ForgetOp
    | HideOp
)
"""Any app operation, for ``match op: case PostOp(): ...`` with ``assert_never``."""


def as_operation(op: AppOp) -> AppOperation:
    """``op`` as the union of the per-kind classes (every :class:`AppOp` is one of them)."""
    if not isinstance(op, _CLASSES.get(op.kind, ())):
        raise TypeError(f"not an app operation: {op!r}")
    return cast(AppOperation, op)


_CLASSES: Final[dict[Kind, type[AppOperation]]] = {
    c.kind: c
    for c in (
        PostOp,
        EditOp,
        DeleteOp,
        ReactOp,
        UnreactOp,
        CursorOp,
        LocationOp,
        DocOp,
        ForgetOp,
        HideOp,
    )
}


def _is_id(value: Value) -> bool:
    return type(value) is bytes and len(value) == _ID


def _text(value: Value, limit: int) -> bool:
    return type(value) is str and len(value.encode()) <= limit


def _int(value: Value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _ids(value: Value, limit: int) -> bool:
    return isinstance(value, list) and len(value) <= limit and all(_is_id(v) for v in value)


def _refs(value: Value) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_ATTACHMENTS
        and all(type(v) is bytes and 0 < len(v) <= MAX_REF for v in value)
    )


def _cursor(value: Value) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_CURSOR
        and all(
            isinstance(p, list) and len(p) == 2 and _is_id(p[0]) and _int(p[1], 1, 2**63 - 1)
            for p in value
        )
    )


_CHECKS: dict[str, Callable[[Value], bool]] = {
    "text": lambda v: _text(v, MAX_TEXT),
    "post": _is_id,
    "reply_to": _is_id,
    "attachments": _refs,
    "ttl_ms": lambda v: _int(v, 1000, MAX_TTL_MS),
    "emoji": lambda v: _text(v, MAX_EMOJI) and v != "",
    "removes": lambda v: _ids(v, MAX_REMOVES) and v != [],
    "cursor": _cursor,
    "upto": lambda v: _cursor(v) and v != [],
    "lat": lambda v: _int(v, -90_000_000, 90_000_000),
    "lon": lambda v: _int(v, -180_000_000, 180_000_000),
    "precision": lambda v: type(v) is str and v in PRECISIONS,
    "doc": lambda v: _text(v, 256) and v != "",
    "payload": lambda v: type(v) is bytes and len(v) <= 60 * 1024,
    "parts": check_parts,
    "label": lambda v: _text(v, 128) and v != "",
    "up_to": lambda v: _int(v, 0, 2**63 - 1),
}

# kind -> (required fields, optional fields)
_SCHEMA: dict[Kind, tuple[frozenset[str], frozenset[str]]] = {
    Kind.POST: (frozenset({"text"}), frozenset({"reply_to", "attachments", "ttl_ms", "parts"})),
    Kind.EDIT: (frozenset({"post", "text"}), frozenset()),
    Kind.DELETE: (frozenset({"post"}), frozenset()),
    Kind.REACT: (frozenset({"post", "emoji"}), frozenset()),
    Kind.UNREACT: (frozenset({"post", "emoji", "removes"}), frozenset()),
    Kind.CURSOR: (frozenset({"cursor"}), frozenset()),
    Kind.LOCATION: (frozenset({"lat", "lon", "precision"}), frozenset({"label"})),
    Kind.DOC: (frozenset({"doc", "payload"}), frozenset()),
    Kind.FORGET: (frozenset({"up_to"}), frozenset()),
    Kind.HIDE: (frozenset({"upto"}), frozenset()),
}
_FIELDS = {k: sorted(req | opt) for k, (req, opt) in _SCHEMA.items()}


def _check(kind: Kind, fields: Mapping[str | int, Value]) -> None:
    required, optional = _SCHEMA[kind]
    names: set[str | int] = set(fields)
    if not required <= names:
        missing = sorted(str(n) for n in required - names)
        raise DecodeError(f"app op {kind.name.lower()}: missing {missing}")
    if names - required - optional:
        unknown = sorted(str(n) for n in names - required - optional)
        raise DecodeError(f"app op {kind.name.lower()}: unknown {unknown}")
    for name, value in fields.items():
        if not _CHECKS[str(name)](value):
            raise DecodeError(f"app op {kind.name.lower()}: bad {name}")
