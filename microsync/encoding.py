"""Canonical, strict CBOR (RFC 8949) through cbor2.

Theory of operation
-------------------
:func:`encode` writes the canonical form (RFC 7049 section 3.9: shortest integer and length
heads, definite lengths, map keys sorted length-first then bytewise, shortest exact floats).

:func:`decode` accepts exactly the bytes :func:`encode` would write, and nothing else:

1. the input must fit the caller's size limit (checked before any parsing);
2. cbor2 parses it with indefinite lengths and duplicate keys refused and a depth bound;
3. the result must consist only of the data model below (so a tag that cbor2 turned into a
   ``datetime``, ``set`` or ``CBORTag`` is refused) with integers in the 64-bit CBOR range;
4. re-encoding the result must give back the input byte for byte. This single check rejects
   non-minimal integers and lengths, unsorted keys, trailing bytes, bignum tags and any other
   second spelling of the same value.

Every failure is a :class:`~microsync.errors.DecodeError`; nothing else escapes.

Data model: ``None``, ``bool``, ``int`` (-2**64 .. 2**64-1), ``float``, ``str``, ``bytes``,
``list`` and ``dict`` with ``str`` or ``int`` keys.

The helpers ``expect_*`` type-check fields of a decoded value for the small codecs elsewhere
in microsync, each raising :class:`DecodeError` with the field's name.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import cbor2

from microsync.errors import DecodeError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "Value",
    "decode",
    "encode",
    "expect_bytes",
    "expect_int",
    "expect_list",
    "expect_optional_bytes",
    "expect_str",
]

Value: TypeAlias = (
    bool | int | float | str | bytes | list["Value"] | dict[str | int, "Value"] | None
)

DEFAULT_MAX_DEPTH = 16
_INT_MIN = -(2**64)
_INT_MAX = 2**64 - 1
_CBOR2_ERRORS = (
    cbor2.CBORError,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    MemoryError,
    EOFError,
)


def encode(value: Value) -> bytes:
    """The canonical CBOR encoding of ``value`` (which must be in the data model)."""
    _check_model(value, DEFAULT_MAX_DEPTH * 4)
    return _encode_unchecked(value)


def _encode_unchecked(value: Any) -> bytes:
    return bytes(cbor2.dumps(value, canonical=True))


def decode(data: bytes, *, max_size: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Value:
    """Decode ``data`` strictly (see the module docstring) or raise :class:`DecodeError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes")
    if len(data) > max_size:
        raise DecodeError(f"encoding is {len(data)} bytes, over the limit of {max_size}")
    if not data:
        raise DecodeError("empty input")
    try:
        value = cbor2.loads(
            bytes(data),
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except _CBOR2_ERRORS as exc:
        raise DecodeError(f"malformed CBOR: {type(exc).__name__}") from None
    _check_model(value, max_depth)
    if _encode_unchecked(value) != data:
        raise DecodeError("not the canonical encoding")
    return value  # type: ignore[no-any-return]


def _check_model(value: object, depth: int) -> None:
    """Raise :class:`DecodeError` unless ``value`` is in the data model within ``depth``.

    The items of a container that are text, bytes, ``None``, booleans or 64-bit integers are
    checked in the container's own loop, without a call each (most values are flat)."""
    if depth < 0:
        raise DecodeError("nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is bytes:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
            raise DecodeError("integer out of the 64-bit range")
        return
    if kind is float:
        if math.isnan(value):  # type: ignore[arg-type]
            raise DecodeError("NaN is not allowed")
        return
    inner = depth - 1
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            if inner < 0:
                raise DecodeError("nested too deeply")
            kind = type(item)
            if kind is str or kind is bytes or item is None or kind is bool:
                continue
            if kind is not int or not _INT_MIN <= item <= _INT_MAX:
                _check_model(item, inner)
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            kind = type(key)
            if kind is not str and kind is not int:
                raise DecodeError("map keys must be text or integers")
            if inner < 0:
                raise DecodeError("nested too deeply")
            if kind is int and not _INT_MIN <= key <= _INT_MAX:
                raise DecodeError("integer out of the 64-bit range")
            kind = type(item)
            if kind is str or kind is bytes or item is None or kind is bool:
                continue
            if kind is not int or not _INT_MIN <= item <= _INT_MAX:
                _check_model(item, inner)
        return
    raise DecodeError(f"type not allowed: {kind.__name__}")


def expect_list(value: Value, name: str, length: int | None = None) -> list[Value]:
    """``value`` as a list (of exactly ``length`` items when given)."""
    if type(value) is not list:
        raise DecodeError(f"{name}: expected an array")
    if length is not None and len(value) != length:
        raise DecodeError(f"{name}: expected {length} items, got {len(value)}")
    return value


def expect_bytes(value: Value, name: str, size: int | None = None, max_size: int = 2**20) -> bytes:
    """``value`` as bytes, of exactly ``size`` bytes when given, else at most ``max_size``."""
    if type(value) is not bytes:
        raise DecodeError(f"{name}: expected a byte string")
    if size is not None and len(value) != size:
        raise DecodeError(f"{name}: expected {size} bytes, got {len(value)}")
    if len(value) > max_size:
        raise DecodeError(f"{name}: longer than {max_size} bytes")
    return value


def expect_optional_bytes(value: Value, name: str, size: int) -> bytes | None:
    """``None`` or exactly ``size`` bytes."""
    return None if value is None else expect_bytes(value, name, size)


def expect_int(value: Value, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
    """``value`` as an integer in ``[low, high]`` (booleans are not integers here)."""
    if type(value) is not int:
        raise DecodeError(f"{name}: expected an integer")
    if not low <= value <= high:
        raise DecodeError(f"{name}: {value} is outside [{low}, {high}]")
    return value


def expect_str(value: Value, name: str, max_length: int = 1024) -> str:
    """``value`` as text of at most ``max_length`` characters."""
    if type(value) is not str:
        raise DecodeError(f"{name}: expected text")
    if len(value) > max_length:
        raise DecodeError(f"{name}: longer than {max_length} characters")
    return value
