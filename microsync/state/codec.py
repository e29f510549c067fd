"""The wire form of an operation: strict canonical CBOR with a version tag.

    [version=1, kind, actor, counter, key, *fields]

===== =============== ===================================================================
kind  operation       fields
===== =============== ===================================================================
1     RegisterSet     ``[wall, tick]`` (the timestamp; its node is the actor), value
2     RegisterDelete  ``[wall, tick]``
3     CounterAdd      delta (non-zero)
4     SetAdd          element
5     SetRemove       element, ``[[counter, actor], ...]`` (the observed tags)
6     TextInsert      origin (``null`` or ``[counter, actor]``), text (not empty)
7     TextDelete      ``[[counter, actor, length], ...]``
8     ListInsert      origin, ``[value, ...]`` (not empty)
9     ListDelete      ``[[counter, actor, length], ...]``
10    ListMove        origin, ``[counter, actor]`` (the element)
11    MapDelete       ``[[actor, last counter], ...]`` (what the author had seen, by actor)
===== =============== ===================================================================

``key`` is a text string (a top-level key, as it always was) or, for a field of a nested map,
a path ``[key, segment, ...]`` (:mod:`microsync.state.paths`): a segment is a field name or a
list element ``[counter, actor]``; every kind may be a field, counters too. An operation without
a path encodes byte for byte as before nesting existed (``tests/test_state_nested.py`` pins
both forms).

:func:`decode_op` accepts exactly what :func:`encode_op` writes. Malformed, non-canonical or
out-of-range input raises :class:`~microsync.errors.DecodeError`; an unknown version
:class:`UnknownOpVersion`, input over :data:`MAX_OP_BYTES` :class:`OpTooLarge` (both subclasses).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final, assert_never

from microsync import encoding
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError, LocalProtocolError
from microsync.state.clock import Timestamp
from microsync.state.ids import MAX_ACTOR, MAX_COUNTER, OpId
from microsync.state.ops import (
    CounterAdd,
    IdRange,
    ListDelete,
    ListInsert,
    ListMove,
    MapDelete,
    Op,
    RegisterDelete,
    RegisterSet,
    SetAdd,
    SetRemove,
    TextDelete,
    TextInsert,
    span,
)
from microsync.state.paths import MAX_KEY, check_top_key, from_wire, to_wire

__all__ = [
    "MAX_KEY",
    "MAX_OP_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "VERSION",
    "OpTooLarge",
    "UnknownOpVersion",
    "check_value",
    "decode_op",
    "encode_op",
]

VERSION: Final = 1
MAX_OP_BYTES: Final = 1 << 20
"""Largest encoded operation."""
MAX_SEEN: Final = 4096
"""Most actors in a :class:`MapDelete`'s version vector."""
MAX_VALUE_BYTES: Final = 64 * 1024
"""Largest encoded register value, set element or list value."""
MAX_VALUE_DEPTH: Final = 8
"""Deepest nesting of arrays and maps inside one value."""
MAX_ITEMS: Final = 1 << 16
"""Most list values, tags or ranges in one operation."""
_MAX_DELTA: Final = MAX_COUNTER


class UnknownOpVersion(DecodeError):
    """The operation declares a format version this implementation does not speak."""


class OpTooLarge(DecodeError):
    """The encoded operation is over :data:`MAX_OP_BYTES`."""


def check_value(value: Value) -> Value:
    """``value`` if it is a valid register value, set element or list value (in the CBOR data
    model, at most :data:`MAX_VALUE_BYTES` encoded and :data:`MAX_VALUE_DEPTH` deep), else
    :class:`DecodeError`."""
    data = encoding.encode(value)
    return encoding.decode(data, max_size=MAX_VALUE_BYTES, max_depth=MAX_VALUE_DEPTH)


# ---------------------------------------------------------------------------------- encode


def _id(i: OpId) -> Value:
    return [i.counter, i.actor]


def _origin(o: OpId | None) -> Value:
    return None if o is None else _id(o)


def _ranges(ranges: tuple[IdRange, ...]) -> Value:
    return [[r.counter, r.actor, r.length] for r in ranges]


def _fields(op: Op) -> list[Value]:
    match op:
        case RegisterSet():
            return [1, [op.ts.wall, op.ts.counter], op.value]
        case RegisterDelete():
            return [2, [op.ts.wall, op.ts.counter]]
        case CounterAdd():
            return [3, op.delta]
        case SetAdd():
            return [4, op.element]
        case SetRemove():
            return [5, op.element, [_id(t) for t in op.tags]]
        case TextInsert():
            return [6, _origin(op.origin), op.text]
        case TextDelete():
            return [7, _ranges(op.ranges)]
        case ListInsert():
            return [8, _origin(op.origin), list(op.values)]
        case ListDelete():
            return [9, _ranges(op.ranges)]
        case ListMove():
            return [10, _origin(op.origin), _id(op.element)]
        case MapDelete():
            return [11, [[actor, counter] for actor, counter in op.seen]]
        case _:
            assert_never(op)


def encode_op(op: Op) -> bytes:
    """The canonical bytes of ``op`` (:class:`LocalProtocolError` if over the size limit or
    past the last counter)."""
    if not 1 <= op.id.counter <= op.id.counter + span(op) - 1 <= MAX_COUNTER:
        raise LocalProtocolError("operation counters outside 1 .. 2**53")
    kind, *rest = _fields(op)
    data = encoding.encode([VERSION, kind, op.id.actor, op.id.counter, to_wire(op.key), *rest])
    if len(data) > MAX_OP_BYTES:
        raise LocalProtocolError(f"operation is {len(data)} bytes, over {MAX_OP_BYTES}")
    return data


# ---------------------------------------------------------------------------------- decode


def _actor(v: Value, name: str) -> bytes:
    actor = expect_bytes(v, name, max_size=MAX_ACTOR)
    if not actor:
        raise DecodeError(f"{name}: empty actor")
    return actor


def _counter(v: Value, name: str) -> int:
    return expect_int(v, name, 1, MAX_COUNTER)


def _dec_id(v: Value, name: str) -> OpId:
    counter, actor = expect_list(v, name, 2)
    return OpId(_counter(counter, name), _actor(actor, name))


def _dec_origin(v: Value) -> OpId | None:
    return None if v is None else _dec_id(v, "origin")


def _dec_ranges(v: Value) -> tuple[IdRange, ...]:
    items = expect_list(v, "ranges")
    if not 0 < len(items) <= MAX_ITEMS:
        raise DecodeError("ranges: expected 1 to 65536 ranges")
    out = []
    for item in items:
        counter, actor, length = expect_list(item, "range", 3)
        c, n = _counter(counter, "range"), expect_int(length, "range length", 1, MAX_COUNTER)
        if c + n > MAX_COUNTER:
            raise DecodeError("range: past the last counter")
        out.append(IdRange(c, _actor(actor, "range"), n))
    return tuple(out)


def _dec_value(v: Value, name: str) -> Value:
    try:
        return check_value(v)
    except DecodeError:
        raise DecodeError(f"{name}: not a valid value") from None


def _dec_ts(v: Value, actor: bytes) -> Timestamp:
    wall, tick = expect_list(v, "ts", 2)
    return Timestamp(expect_int(wall, "ts wall"), expect_int(tick, "ts tick", 0, 2**32), actor)


def _dec_text(v: Value) -> str:
    text = expect_str(v, "text", MAX_OP_BYTES)
    if not text:
        raise DecodeError("text: empty insert")
    return text


def _dec_values(v: Value) -> tuple[Value, ...]:
    values = expect_list(v, "values")
    if not 0 < len(values) <= MAX_ITEMS:
        raise DecodeError("values: expected 1 to 65536 values")
    return tuple(_dec_value(x, "value") for x in values)


def _dec_tags(v: Value) -> tuple[OpId, ...]:
    tags = expect_list(v, "tags")
    if len(tags) > MAX_ITEMS:
        raise DecodeError("tags: too many")
    return tuple(_dec_id(t, "tag") for t in tags)


def _dec_seen(v: Value) -> tuple[tuple[bytes, int], ...]:
    items = expect_list(v, "seen")
    if len(items) > MAX_SEEN:
        raise DecodeError(f"seen: over {MAX_SEEN} actors")
    out = []
    for item in items:
        actor, counter = expect_list(item, "seen", 2)
        out.append((_actor(actor, "seen"), _counter(counter, "seen")))
    if any(a >= b for (a, _), (b, _) in itertools.pairwise(out)):
        raise DecodeError("seen: actors not strictly sorted")
    return tuple(out)


_Decoder = Callable[[OpId, str, list[Value]], Op]

_KINDS: dict[int, tuple[int, _Decoder]] = {
    1: (2, lambda i, k, f: RegisterSet(
        id=i, key=k, ts=_dec_ts(f[0], i.actor), value=_dec_value(f[1], "value"))),
    2: (1, lambda i, k, f: RegisterDelete(id=i, key=k, ts=_dec_ts(f[0], i.actor))),
    3: (1, lambda i, k, f: CounterAdd(id=i, key=k, delta=_dec_delta(f[0]))),
    4: (1, lambda i, k, f: SetAdd(id=i, key=k, element=_dec_value(f[0], "element"))),
    5: (2, lambda i, k, f: SetRemove(
        id=i, key=k, element=_dec_value(f[0], "element"), tags=_dec_tags(f[1]))),
    6: (2, lambda i, k, f: TextInsert(id=i, key=k, origin=_dec_origin(f[0]), text=_dec_text(f[1]))),
    7: (1, lambda i, k, f: TextDelete(id=i, key=k, ranges=_dec_ranges(f[0]))),
    8: (2, lambda i, k, f: ListInsert(
        id=i, key=k, origin=_dec_origin(f[0]), values=_dec_values(f[1]))),
    9: (1, lambda i, k, f: ListDelete(id=i, key=k, ranges=_dec_ranges(f[0]))),
    10: (2, lambda i, k, f: ListMove(
        id=i, key=k, origin=_dec_origin(f[0]), element=_dec_id(f[1], "element"))),
    11: (1, lambda i, k, f: MapDelete(id=i, key=k, seen=_dec_seen(f[0]))),
}  # fmt: skip


def _dec_delta(v: Value) -> int:
    delta = expect_int(v, "delta", -_MAX_DELTA, _MAX_DELTA)
    if delta == 0:
        raise DecodeError("delta: zero")
    return delta


def decode_op(data: bytes) -> Op:
    """The operation encoded in ``data``, decoded strictly (see the module docstring)."""
    if len(data) > MAX_OP_BYTES:
        raise OpTooLarge(f"operation is {len(data)} bytes, over {MAX_OP_BYTES}")
    items = expect_list(encoding.decode(data, max_size=MAX_OP_BYTES), "operation")
    if len(items) < 5:
        raise DecodeError("operation: too short")
    version, kind, actor, counter, key, *fields = items
    if version != VERSION or type(version) is not int:
        raise UnknownOpVersion(f"operation version {version!r} is not {VERSION}")
    if type(kind) is not int or kind not in _KINDS:
        raise DecodeError(f"operation: unknown kind {kind!r}")
    arity, decoder = _KINDS[kind]
    if len(fields) != arity:
        raise DecodeError(f"operation kind {kind}: expected {arity} fields")
    op_id = OpId(_counter(counter, "counter"), _actor(actor, "actor"))
    if isinstance(key, list):
        stored = from_wire(key)
    else:
        stored = check_top_key(expect_str(key, "key", MAX_KEY))
    op = decoder(op_id, stored, fields)
    if op_id.counter + span(op) - 1 > MAX_COUNTER:
        raise DecodeError("operation: counters past the limit")
    return op
