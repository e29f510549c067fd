"""Paths: the keys of nested documents (maps inside maps, maps inside list elements).

A top-level key is a plain string, exactly as before nesting existed. A nested key is a *path*:
its top-level key followed by one or more segments, each either a field name (a string) or a
list element (an :class:`~microsync.state.ids.OpId`, for a map held by a list element). Every
CRDT of a document lives at one key; a nested field is simply a CRDT at a longer key, so each
field merges on its own.

Internally (document dictionaries, snapshots) a path is one string: ``"\\x00"`` then its
segments joined by ``"\\x00"``, an element written ``"\\x01<counter>.<actor hex>"``. Field names
inside a path hold no control characters, and no top-level key starts with ``"\\x00"``, so the
two forms never collide and the old keys keep their bytes. On the wire (:mod:`codec`) a path is
a CBOR array: ``[key, segment, ...]``, a field a text string, an element ``[counter, actor]``.

Hostile bounds, checked on every path that reaches a document (a local handle, a decoded
operation, a snapshot): at most :data:`MAX_DEPTH` segments after the top-level key, each field
name 1 to :data:`~microsync.state.codec.MAX_KEY` characters, the whole path at most
:data:`MAX_PATH_BYTES` bytes as stored.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from microsync.encoding import Value
from microsync.errors import DecodeError
from microsync.state.ids import MAX_ACTOR, MAX_COUNTER, OpId

__all__ = [
    "MAX_DEPTH",
    "MAX_PATH_BYTES",
    "Segment",
    "check_top_key",
    "from_wire",
    "is_path",
    "join",
    "segments",
    "split",
    "to_wire",
]

MAX_KEY: Final = 256
"""Longest document key or field name, in characters."""
MAX_DEPTH: Final = 8
"""Most segments below the top-level key (``doc.map("a").map("b")...``)."""
MAX_PATH_BYTES: Final = 2048
"""Longest stored path, in UTF-8 bytes."""

Segment: TypeAlias = str | OpId
_SEP: Final = "\x00"
_ELEM: Final = "\x01"


def is_path(key: str) -> bool:
    """Whether the stored key ``key`` is a nested path (else a top-level key)."""
    return key.startswith(_SEP)


def check_top_key(key: object) -> str:
    """``key`` if it is a valid top-level key, else :class:`DecodeError`."""
    if type(key) is not str or len(key) > MAX_KEY or key.startswith(_SEP):
        raise DecodeError(f"key: text of at most {MAX_KEY} characters, not starting with NUL")
    return key


def _check_field(name: object) -> str:
    if type(name) is not str or not 0 < len(name) <= MAX_KEY:
        raise DecodeError(f"path: a field name is 1 to {MAX_KEY} characters")
    if any(c < " " or c == "\x7f" for c in name):
        raise DecodeError("path: a field name holds no control characters")
    return name


def _segment_text(seg: Segment) -> str:
    if isinstance(seg, OpId):
        return f"{_ELEM}{seg.counter}.{seg.actor.hex()}"
    return _check_field(seg)


def join(top: str, *segs: Segment) -> str:
    """The stored key of ``top`` followed by ``segs`` (``top`` itself if there are none)."""
    if not segs:
        return top
    if len(segs) > MAX_DEPTH:
        raise DecodeError(f"path: deeper than {MAX_DEPTH}")
    first = _check_field(check_top_key(top))
    key = _SEP + _SEP.join([first, *(_segment_text(s) for s in segs)])
    if len(key.encode()) > MAX_PATH_BYTES:
        raise DecodeError(f"path: over {MAX_PATH_BYTES} bytes")
    return key


def segments(key: str) -> tuple[str, tuple[Segment, ...]]:
    """The top-level key and the segments of the stored key ``key`` (:class:`DecodeError` if
    it is not one :func:`join` makes)."""
    if not is_path(key):
        return check_top_key(key), ()
    top, *rest = key[1:].split(_SEP)
    segs: list[Segment] = []
    for text in rest:
        if text.startswith(_ELEM):
            counter, _, actor = text[1:].partition(".")
            try:
                c, a = int(counter), bytes.fromhex(actor)
            except ValueError:
                raise DecodeError("path: malformed element") from None
            if not (0 < c <= MAX_COUNTER and 0 < len(a) <= MAX_ACTOR) or str(c) != counter:
                raise DecodeError("path: malformed element")
            segs.append(OpId(c, a))
        else:
            segs.append(text)
    if not segs or join(top, *segs) != key:
        raise DecodeError("path: not canonical")
    return top, tuple(segs)


def split(key: str) -> tuple[str, Segment] | None:
    """``(parent key, last segment)`` of a nested key; ``None`` for a top-level key."""
    if not is_path(key):
        return None
    top, segs = segments(key)
    return join(top, *segs[:-1]), segs[-1]


def to_wire(key: str) -> Value:
    """The wire form of a stored key: the string itself, or ``[top, segment, ...]``."""
    if not is_path(key):
        return key
    top, segs = segments(key)
    out: list[Value] = [top]
    for s in segs:
        out.append([s.counter, s.actor] if isinstance(s, OpId) else s)
    return out


def from_wire(value: Value) -> str:
    """The stored key a wire key names (:class:`DecodeError` if malformed or out of bounds)."""
    if not isinstance(value, list):
        return check_top_key(value)
    if not 2 <= len(value) <= MAX_DEPTH + 1:
        raise DecodeError(f"path: 1 to {MAX_DEPTH} segments below the key")
    top, *rest = value
    segs: list[Segment] = []
    for item in rest:
        if isinstance(item, list):
            if len(item) != 2:
                raise DecodeError("path: an element is [counter, actor]")
            c, a = item
            if type(c) is not int or not 0 < c <= MAX_COUNTER:
                raise DecodeError("path: element counter out of range")
            if type(a) is not bytes or not 0 < len(a) <= MAX_ACTOR:
                raise DecodeError("path: element actor malformed")
            segs.append(OpId(c, a))
        else:
            segs.append(_check_field(item))
    return join(_check_field(check_top_key(top)), *segs)
