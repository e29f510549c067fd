"""The canonical CBOR codec: round-trip laws, known answers and adversarial input.

Everything :func:`decode` refuses must be refused with :class:`DecodeError` and nothing else,
and everything it accepts must be exactly what :func:`encode` writes.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.encoding import (
    DEFAULT_MAX_DEPTH,
    Value,
    decode,
    encode,
    expect_bytes,
    expect_int,
    expect_list,
    expect_optional_bytes,
    expect_str,
)
from microsync.errors import DecodeError, MicrosyncError

INT_MIN = -(2**64)
INT_MAX = 2**64 - 1
BIG = 1 << 20  # a max_size that never gets in the way


# --------------------------------------------------------------------------- helpers


def same(a: object, b: object) -> bool:
    """Structural equality that also tells ``True`` from ``1`` and ``-0.0`` from ``0.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        keys_a = {(type(k), k) for k in a}
        keys_b = {(type(k), k) for k in b}
        return keys_a == keys_b and all(same(a[k], b[k]) for k in a)
    return a == b


def depth(value: object) -> int:
    """Nesting depth as :func:`decode` counts it: a scalar is 0, ``[0]`` is 1."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((max(depth(k), depth(v)) for k, v in value.items()), default=0)
    return 0


def nested_lists(levels: int) -> Value:
    value: Value = 0
    for _ in range(levels):
        value = [value]
    return value


def nested_maps(levels: int) -> Value:
    value: Value = 0
    for _ in range(levels):
        value = {"a": value}
    return value


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def decode_or_none(data: Any) -> Value | DecodeError:
    """``decode`` with no size limit; a DecodeError is returned, anything else propagates."""
    try:
        return decode(data, max_size=BIG)
    except DecodeError as exc:
        return exc


# --------------------------------------------------------------------------- strategies

BOUNDARY_INTS = [
    0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, INT_MAX,
    -1, -24, -25, -256, -257, -65536, -65537, -(2**32), -(2**32) - 1, -(2**63), INT_MIN,
]  # fmt: skip

ints = st.one_of(st.integers(INT_MIN, INT_MAX), st.sampled_from(BOUNDARY_INTS))
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(), st.booleans(), ints, floats, st.text(max_size=40), st.binary(max_size=40)
)
keys = st.one_of(st.text(max_size=8), ints)


def values(levels: int) -> st.SearchStrategy[Value]:
    """Values of the data model nested at most ``levels`` deep."""
    if levels == 0:
        return scalars
    child = values(levels - 1)
    return st.one_of(
        scalars,
        st.lists(child, max_size=5),
        st.dictionaries(keys, child, max_size=5),
    )


model_values = values(4)
# Containers only, so that an encoding has more than one interesting byte.
containers = st.one_of(
    st.lists(values(3), min_size=1, max_size=6),
    st.dictionaries(keys, values(3), min_size=1, max_size=6),
)


# --------------------------------------------------------------------------- round trip laws


@settings(max_examples=400, deadline=None)
@given(model_values)
def test_round_trip_is_exact(value: Value) -> None:
    assert depth(value) <= DEFAULT_MAX_DEPTH
    data = encode(value)
    decoded = decode(data, max_size=len(data))
    assert same(decoded, value)
    assert encode(decoded) == data


@settings(max_examples=200, deadline=None)
@given(model_values)
def test_encode_is_deterministic(value: Value) -> None:
    # A structurally equal copy built independently (dicts re-inserted in reverse order) must
    # encode to the same bytes: canonical order does not depend on insertion order.
    def rebuild(v: Value) -> Value:
        if isinstance(v, list):
            return [rebuild(x) for x in v]
        if isinstance(v, dict):
            return {k: rebuild(v[k]) for k in reversed(list(v))}
        return v

    assert encode(value) == encode(value) == encode(rebuild(value))


@settings(max_examples=200, deadline=None)
@given(model_values)
def test_decode_then_encode_gives_back_the_input(value: Value) -> None:
    data = encode(value)
    assert encode(decode(data, max_size=BIG)) == data


@settings(max_examples=200, deadline=None)
@given(containers)
def test_map_keys_come_out_sorted_length_first(value: Value) -> None:
    # Walking the decoded maps, key encodings are strictly increasing (length, then bytes).
    def check(v: Value) -> None:
        if isinstance(v, dict):
            key_bytes = [encode(k) for k in v]
            assert key_bytes == sorted(key_bytes, key=lambda b: (len(b), b))
            assert len(set(key_bytes)) == len(key_bytes)
            for item in v.values():
                check(item)
        elif isinstance(v, list):
            for item in v:
                check(item)

    check(decode(encode(value), max_size=BIG))


@settings(max_examples=150, deadline=None)
@given(model_values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_rejected(value: Value, trailer: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(encode(value) + trailer, max_size=BIG)


@settings(max_examples=150, deadline=None)
@given(model_values)
def test_every_proper_prefix_is_rejected(value: Value) -> None:
    data = encode(value)
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:end], max_size=BIG)


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    result = decode_or_none(data)
    if not isinstance(result, DecodeError):
        assert encode(result) == data


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes overwritten, inserted or deleted."""
    data = bytearray(encode(draw(containers)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["set", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if kind == "insert" or where == len(data):
            data.insert(where, byte)
        elif kind == "set":
            data[where] = byte
        else:
            del data[where]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_encodings())
def test_mutated_encodings_raise_only_decode_error(data: bytes) -> None:
    result = decode_or_none(data)
    if not isinstance(result, DecodeError):
        assert encode(result) == data


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_single_bit_flip_is_rejected_or_is_itself_canonical(data: st.DataObject) -> None:
    original = encode(data.draw(model_values))
    flipped = flip(original, data.draw(st.integers(0, len(original) * 8 - 1)))
    result = decode_or_none(flipped)
    if not isinstance(result, DecodeError):
        assert encode(result) == flipped


def test_every_single_bit_flip_of_a_record_like_value() -> None:
    # Exhaustive over one multi-field value: all 8 * len flips.
    original = encode([1, b"\x00" * 32, "phone", 1_700_000_000_000, {"k": [True, None, 1.5]}])
    rejected = 0
    for bit in range(len(original) * 8):
        flipped = flip(original, bit)
        result = decode_or_none(flipped)
        if isinstance(result, DecodeError):
            rejected += 1
        else:
            assert encode(result) == flipped
    assert rejected > 0  # the header bytes, at least, cannot all survive a flip


# --------------------------------------------------------------------------- known answers

# RFC 8949 appendix A (the canonical subset), plus length-first map key order.
KNOWN_ANSWERS: list[tuple[Value, str]] = [
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (INT_MAX, "1bffffffffffffffff"),
    (-1, "20"),
    (INT_MIN, "3bffffffffffffffff"),
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.5, "f93e00"),
    (65504.0, "f97bff"),
    (5.960464477539063e-8, "f90001"),
    (-4.0, "f9c400"),
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.1, "fb3ff199999999999a"),
    (1.0e300, "fb7e37e43c8800759c"),
    (-4.1, "fbc010666666666666"),
    (float("inf"), "f97c00"),
    (float("-inf"), "f9fc00"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    ("", "60"),
    ("a", "6161"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ([], "80"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    ({"b": 1, "a": 2, "aa": 3, 10: 0, -1: 0}, "a50a00200061610261620162616103"),
]


@pytest.mark.parametrize(("value", "hex_encoding"), KNOWN_ANSWERS)
def test_known_answers(value: Value, hex_encoding: str) -> None:
    data = bytes.fromhex(hex_encoding)
    assert encode(value) == data
    assert same(decode(data, max_size=len(data)), value)


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        INT_MIN - 1,
        float("nan"),
        (1, 2),
        {1, 2},
        bytearray(b"x"),
        object(),
        {True: 1},
        {1.5: 1},
        {b"k": 1},
        [[float("nan")]],
        {"k": 2**64},
        nested_lists(DEFAULT_MAX_DEPTH * 4 + 1),
    ],
    ids=lambda value: "object()" if type(value) is object else repr(value)[:60],
)
def test_encode_refuses_values_outside_the_model(value: Any) -> None:
    with pytest.raises(DecodeError):
        encode(value)


# --------------------------------------------------------------------------- adversarial input

ADVERSARIAL = {
    "duplicate map keys": "a2616101616102",
    "non-minimal int 1 byte": "1800",
    "non-minimal int 2 bytes": "190001",
    "non-minimal int 4 bytes": "1a00000001",
    "non-minimal int 8 bytes": "1b0000000000000001",
    "non-minimal negative int": "3800",
    "non-minimal byte string length": "5800",
    "non-minimal text length": "780161",
    "non-minimal array length": "980100",
    "non-minimal map length": "b8010000",
    "tag 1 epoch datetime": "c11a514b67b0",
    "tag 0 datetime string": "c074323031332d30332d32315432303a30343a30305a",
    "tag 2 bignum in range": "c2420100",
    "tag 2 bignum out of range": "c249010000000000000000",
    "tag 3 negative bignum": "c34101",
    "tag 258 set": "d90102820102",
    "tag 24 embedded cbor": "d81841ff",
    "tag 55799 self-describe prefix": "d9d9f700",
    "tag 55799 alone": "d9d9f7",
    "tag 28/29 shared reference cycle": "d81c81d81d00",
    "tag 30 rational with zero denominator": "d81e820100",
    "tag 35 invalid regex": "d8236128",
    "tag 37 short uuid": "d8254101",
    "unknown tag": "da0001000000",
    "indefinite array": "9f0102ff",
    "indefinite map": "bf616101ff",
    "indefinite byte string": "5f4101ff",
    "indefinite text string": "7f6161ff",
    "lone break": "ff",
    "undefined": "f7",
    "simple value 16": "f0",
    "simple value 255": "f8ff",
    "half NaN": "f97e00",
    "single NaN": "fa7fc00000",
    "double NaN": "fb7ff8000000000000",
    "invalid UTF-8": "62c328",
    "lone surrogate in UTF-8": "63eda080",
    "overlong UTF-8": "62c0af",
    "byte string map key": "a1410100",
    "array map key": "a1810100",
    "map map key": "a1a00000",
    "float map key": "a1f93c0000",
    "bool map key": "a1f500",
    "null map key": "a1f600",
    "unsorted map keys": "a2616201616101",
    "map keys sorted bytewise, not length first": "a21818002000",
    "non-shortest float (1.5 as double)": "fb3ff8000000000000",
    "non-shortest float (1.5 as single)": "fa3fc00000",
    "non-shortest infinity": "fb7ff0000000000000",
    "reserved additional info 28": "1c",
    "reserved additional info 30": "5e",
    "truncated header": "19",
    "truncated byte string": "4401",
    "bytes then trailing zero": "4000",
}


@pytest.mark.parametrize("hex_data", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_known_answers(hex_data: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(hex_data), max_size=BIG)


HUGE_LENGTHS = {
    "byte string claiming 2**63 bytes": b"\x5b" + (2**63).to_bytes(8, "big") + b"abc",
    "text string claiming 2**63 bytes": b"\x7b" + (2**63).to_bytes(8, "big") + b"abc",
    "byte string claiming 2**64-1 bytes": b"\x5b" + b"\xff" * 8 + b"abc",
    "array claiming 2**63-1 items": b"\x9b" + (2**63 - 1).to_bytes(8, "big") + b"\x00",
    "map claiming 2**63-1 pairs": b"\xbb" + (2**63 - 1).to_bytes(8, "big") + b"\x00\x00",
    "array claiming 2**32-1 items": b"\x9a\xff\xff\xff\xff\x00",
}


@pytest.mark.parametrize("data", HUGE_LENGTHS.values(), ids=HUGE_LENGTHS.keys())
def test_huge_length_fields_are_rejected_without_allocating(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data, max_size=BIG)


@pytest.mark.parametrize(
    "data",
    [b"\x81" * 10_000 + b"\x00", b"\xa1\x00" * 10_000 + b"\x00", b"\x9f" * 10_000],
    ids=["arrays", "maps", "indefinite arrays"],
)
def test_ten_thousand_deep_nesting_is_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data, max_size=len(data))


def test_depth_limit_is_exact() -> None:
    for build in (nested_lists, nested_maps):
        at_limit = encode(build(DEFAULT_MAX_DEPTH))
        assert same(decode(at_limit, max_size=BIG), build(DEFAULT_MAX_DEPTH))
        with pytest.raises(DecodeError):
            decode(encode(build(DEFAULT_MAX_DEPTH + 1)), max_size=BIG)


def test_max_depth_argument_is_honoured() -> None:
    data = encode([[1]])
    assert decode(data, max_size=BIG, max_depth=2) == [[1]]
    with pytest.raises(DecodeError):
        decode(data, max_size=BIG, max_depth=1)
    assert decode(encode(7), max_size=BIG, max_depth=0) == 7


def test_size_limit() -> None:
    data = encode(b"x" * 100)
    assert decode(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(DecodeError, match="over the limit"):
        decode(data, max_size=len(data) - 1)


def test_size_limit_is_checked_before_parsing() -> None:
    # Garbage longer than the limit is refused for its size, not parsed.
    with pytest.raises(DecodeError, match="over the limit"):
        decode(b"\xff" * 11, max_size=10)


def test_empty_input() -> None:
    with pytest.raises(DecodeError):
        decode(b"", max_size=BIG)


@pytest.mark.parametrize("not_bytes", ["00", "", None, 0, [0]])
def test_non_bytes_input(not_bytes: Any) -> None:
    with pytest.raises(DecodeError):
        decode(not_bytes, max_size=BIG)


def test_bytes_like_input_is_accepted() -> None:
    data = encode([1, "two", b"3"])
    as_bytearray: Any = bytearray(data)
    as_memoryview: Any = memoryview(data)
    assert decode(as_bytearray, max_size=BIG) == [1, "two", b"3"]
    assert decode(as_memoryview, max_size=BIG) == [1, "two", b"3"]


def test_decode_errors_are_microsync_errors() -> None:
    with pytest.raises(MicrosyncError):
        decode(b"\xf7", max_size=BIG)


# --------------------------------------------------------------------------- one byte at a time

MULTI_FIELD = encode(
    [
        1,
        b"\x00\x01" * 20,
        "h\u00e9llo \u6c34",
        {"k": [True, None, 1.5, -0.0], 7: {"nested": b""}, -3: 1.1},
        INT_MIN,
        INT_MAX,
        2**32,
        [],
        {},
    ]
)


def test_fed_one_byte_at_a_time_only_the_whole_input_decodes() -> None:
    received = b""
    accepted: list[int] = []
    for byte in MULTI_FIELD:
        received += bytes([byte])
        if not isinstance(decode_or_none(received), DecodeError):
            accepted.append(len(received))
    assert accepted == [len(MULTI_FIELD)]
    assert encode(decode(MULTI_FIELD, max_size=BIG)) == MULTI_FIELD


def test_every_proper_prefix_of_a_multi_field_encoding_is_rejected() -> None:
    assert len(MULTI_FIELD) > 60
    for end in range(len(MULTI_FIELD)):
        with pytest.raises(DecodeError):
            decode(MULTI_FIELD[:end], max_size=BIG)


# --------------------------------------------------------------------------- expect_* helpers


def test_expect_list() -> None:
    assert expect_list([1, 2], "pair", 2) == [1, 2]
    assert expect_list([], "anything") == []
    with pytest.raises(DecodeError, match="pair"):
        expect_list([1], "pair", 2)
    with pytest.raises(DecodeError, match="pair"):
        expect_list([1, 2, 3], "pair", 2)
    wrong: Any
    for wrong in ({"a": 1}, b"ab", "ab", None, 2):
        with pytest.raises(DecodeError, match="items"):
            expect_list(wrong, "items")


def test_expect_bytes() -> None:
    assert expect_bytes(b"abc", "blob") == b"abc"
    assert expect_bytes(b"k" * 32, "key", 32) == b"k" * 32
    assert expect_bytes(b"1234", "blob", max_size=4) == b"1234"
    wrong: Any
    for wrong in ("abc", [1], 3, None, True, bytearray(b"abc")):
        with pytest.raises(DecodeError, match="blob"):
            expect_bytes(wrong, "blob")
    with pytest.raises(DecodeError, match="key"):
        expect_bytes(b"k" * 31, "key", 32)
    with pytest.raises(DecodeError, match="key"):
        expect_bytes(b"k" * 33, "key", 32)
    with pytest.raises(DecodeError, match="blob"):
        expect_bytes(b"12345", "blob", max_size=4)


def test_expect_optional_bytes() -> None:
    assert expect_optional_bytes(None, "maybe", 4) is None
    assert expect_optional_bytes(b"1234", "maybe", 4) == b"1234"
    wrong: Any
    for wrong in (b"123", b"12345", "1234", 0, False, []):
        with pytest.raises(DecodeError, match="maybe"):
            expect_optional_bytes(wrong, "maybe", 4)


def test_expect_int() -> None:
    assert expect_int(0, "seq") == 0
    assert expect_int(2**63 - 1, "seq") == 2**63 - 1
    assert expect_int(-5, "delta", low=-10, high=10) == -5
    wrong: Any
    for wrong in (True, False, 1.0, "1", b"\x01", None, [1]):
        with pytest.raises(DecodeError, match="seq"):
            expect_int(wrong, "seq")
    for out_of_range in (-1, 2**63, INT_MAX, INT_MIN):
        with pytest.raises(DecodeError, match="seq"):
            expect_int(out_of_range, "seq")
    with pytest.raises(DecodeError, match="delta"):
        expect_int(11, "delta", low=-10, high=10)
    with pytest.raises(DecodeError, match="delta"):
        expect_int(-11, "delta", low=-10, high=10)


def test_expect_str() -> None:
    assert expect_str("name", "device_name") == "name"
    assert expect_str("\u6c34" * 4, "device_name", max_length=4) == "\u6c34" * 4
    assert expect_str("x" * 1024, "device_name") == "x" * 1024
    wrong: Any
    for wrong in (b"name", 1, None, True, ["name"]):
        with pytest.raises(DecodeError, match="device_name"):
            expect_str(wrong, "device_name")
    with pytest.raises(DecodeError, match="device_name"):
        expect_str("x" * 1025, "device_name")
    with pytest.raises(DecodeError, match="device_name"):
        expect_str("\u6c34" * 5, "device_name", max_length=4)


@settings(max_examples=100, deadline=None)
@given(model_values)
def test_expect_int_accepts_exactly_non_bool_ints_in_range(value: Value) -> None:
    ok = type(value) is int and 0 <= value <= 2**63 - 1
    try:
        result = expect_int(value, "field")
    except DecodeError as exc:
        assert not ok
        assert "field" in str(exc)
    else:
        assert ok
        assert result == value


# --------------------------------------------------------------------------- the model check


def _reference_check(value: object, depth: int) -> None:
    """The model check item by item, as ``_check_model`` was written before it looked at a
    container's item types first: the fast one must accept and refuse exactly the same."""
    if depth < 0:
        raise DecodeError("nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is bytes:
        return
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            raise DecodeError("integer out of the 64-bit range")
        return
    if kind is float:
        if value != value:  # NaN
            raise DecodeError("NaN is not allowed")
        return
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            _reference_check(item, depth - 1)
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str and type(key) is not int:
                raise DecodeError("map keys must be text or integers")
            _reference_check(key, depth - 1)
            _reference_check(item, depth - 1)
        return
    raise DecodeError(f"type not allowed: {kind.__name__}")


outside = st.one_of(
    st.sampled_from([2**64, INT_MIN - 1, float("nan"), (1,), frozenset(), bytearray(b"x")]),
    st.just(object()),
)
loose_scalars = st.one_of(scalars, outside)


def loose_values(levels: int) -> st.SearchStrategy[Any]:
    """Values that are mostly in the model, with things outside it anywhere (keys too)."""
    if levels == 0:
        return loose_scalars
    child = loose_values(levels - 1)
    loose_keys = st.one_of(keys, st.sampled_from([2**64, True, 1.5, b"k", None]))
    return st.one_of(
        loose_scalars,
        st.lists(child, max_size=5),
        st.dictionaries(loose_keys, child, max_size=4),
    )


@settings(max_examples=600, deadline=None)
@given(loose_values(4), st.integers(0, 5))
def test_the_model_check_accepts_and_refuses_what_the_item_by_item_check_does(
    value: Any, limit: int
) -> None:
    from microsync.encoding import _check_model

    def verdict(check: Any) -> bool:
        try:
            check(value, limit)
        except DecodeError:
            return False
        return True

    assert verdict(_check_model) == verdict(_reference_check)
