"""The header fast path (``entry._parse_fast``) against the generic strict decoder.

``Header.from_bytes`` first tries a hand-written reader for the one shape a header has and
falls back to the strict generic decoder (``Header._from_bytes_strict``) for anything else.
The fast path must never change an answer: for any bytes, it either declines (``None``) or
returns exactly what the strict decoder returns, and ``Header.from_bytes`` then accepts and
rejects exactly like the strict decoder, with the same error. The inputs below are built
field by field with a small CBOR writer that can also write non-minimal heads, wrong types,
wrong lengths, missing and extra fields, so they reach every branch of the fast path instead
of dying at the first byte as most random bytes would.
"""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from microsync.errors import MicrosyncError
from microsync.feed.entry import MAX_DEPS, EntryId, GroupId, Header, _parse_fast, feed_position
from microsync.identity import DeviceId

VECTORS = json.loads((Path(__file__).parent / "vectors" / "feed-v1.json").read_text())
WIDTHS = {0: 0, 1: 0x18, 2: 0x19, 4: 0x1A, 8: 0x1B}  # bytes after the head -> head low bits


def head(major: int, value: int, width: int | None = None) -> bytes:
    """A CBOR head: minimal when ``width`` is None, else forced to that many extra bytes
    (possibly non-minimal, possibly too small: the value is then truncated, also useful)."""
    if width is None:
        width = next(w for w in (0, 1, 2, 4, 8) if value < (24 if w == 0 else 256**w))
    if width == 0:
        return bytes([(major << 5) | (value % 24)])
    return bytes([(major << 5) | WIDTHS[width]]) + (value % 256**width).to_bytes(width, "big")


BOUNDARIES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]
in_range = st.one_of(st.sampled_from(BOUNDARIES), st.integers(0, 2**63 - 1))


def uint(value: int) -> bytes:
    return head(0, value)


def id32(data: bytes) -> bytes:
    return head(2, len(data)) + data


odd_values = st.sampled_from(  # other CBOR items, canonical: wrong types for every field
    [-1, -(2**64), True, False, None, "", "a", 1.5, [], [0], {}, b"", b"x" * 31, b"x" * 33, 2**64]
).map(lambda v: cbor2.dumps(v, canonical=True))
ids = st.binary(min_size=32, max_size=32)


@st.composite
def valid_fields(draw: st.DrawFn) -> list[bytes]:
    """The encoded fields of a header that the strict decoder accepts."""
    seq = draw(st.one_of(st.just(1), in_range.map(lambda n: max(n, 2))))
    count = draw(st.one_of(st.integers(0, 3), st.sampled_from([22, 23, 24, 25, MAX_DEPS])))
    dep = id32(draw(ids))
    return [
        uint(1),
        id32(draw(ids)),
        id32(draw(ids)),
        uint(seq),
        b"\xf6" if seq == 1 else id32(draw(ids)),
        uint(draw(in_range)),
        uint(draw(st.one_of(st.integers(0, 65535), st.sampled_from([0, 23, 24, 255, 256])))),
        uint(draw(in_range)),
        head(4, count) + dep * count,
        id32(draw(ids)),
        uint(draw(in_range)),
    ]


def rehead(item: bytes, width: int) -> bytes:
    """``item`` with its (minimal) head rewritten to ``width`` extra bytes."""
    major, low = item[0] >> 5, item[0] & 0x1F
    if major not in (0, 2, 4) or low > 0x1B:
        return item
    size = 0 if low < 24 else 2 ** (low - 24)
    value = low if size == 0 else int.from_bytes(item[1 : 1 + size], "big")
    return head(major, value, width) + item[1 + size :]


DAMAGE = [
    "wrong type",
    "out of range",
    "wide head",
    "drop field",
    "add field",
    "truncate",
    "extend",
    "flip byte",
    "wide array head",
    "bad id length",
]


@st.composite
def header_like(draw: st.DrawFn) -> bytes:
    """A valid header with zero, one or two things wrong with it."""
    fields = draw(valid_fields())
    wide = False
    tail: list[str] = []
    for damage in draw(st.lists(st.sampled_from(DAMAGE), max_size=2)):
        at = draw(st.integers(0, len(fields) - 1))
        if damage == "wrong type":
            fields[at] = draw(odd_values)
        elif damage == "out of range":  # seq 0, type 65536, anything 2**63 or more
            bad = draw(st.sampled_from([0, 65536, 2**63, 2**64 - 1]))
            fields[at] = uint(bad)
        elif damage == "wide head":
            fields[at] = rehead(fields[at], draw(st.sampled_from(sorted(WIDTHS))))
        elif damage == "drop field":
            del fields[at]
        elif damage == "add field":
            fields.insert(at, uint(draw(in_range)))
        elif damage == "bad id length":
            fields[at] = id32(draw(st.binary(min_size=31, max_size=33)))
        elif damage == "wide array head":
            wide = True
        else:
            tail.append(damage)
    data = head(4, len(fields), draw(st.sampled_from([1, 2])) if wide else None)
    data += b"".join(fields)
    for damage in tail:
        if damage == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif damage == "extend":
            data += draw(st.binary(min_size=1, max_size=3))
        elif data:  # flip byte
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return data


def outcome(parse: object, data: bytes) -> tuple[object, ...]:
    assert callable(parse)
    try:
        return ("accepted", parse(data))
    except MicrosyncError as error:
        return ("rejected", type(error), str(error))


def assert_same_answer(data: bytes) -> str:
    """Check both paths on ``data``; return which way it went (for Hypothesis' statistics)."""
    strict = outcome(Header._from_bytes_strict, data)
    fast = _parse_fast(data)
    if fast is not None:
        assert strict == ("accepted", fast)
    assert outcome(Header.from_bytes, data) == strict
    return f"strict {strict[0]}, fast {'declined' if fast is None else 'accepted'}"


@settings(max_examples=2000, deadline=None)
@given(data=header_like())
@example(data=bytes.fromhex(VECTORS["entries"][0]["header"]))
@example(data=bytes.fromhex(VECTORS["entries"][1]["header"]))
def test_fast_and_strict_agree_on_header_shaped_input(data: bytes) -> None:
    event(assert_same_answer(data))


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=200))
def test_fast_and_strict_agree_on_arbitrary_bytes(data: bytes) -> None:
    event(assert_same_answer(data))


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=4),
    at=st.integers(0, 200),
    index=st.sampled_from([0, 1]),
)
def test_fast_and_strict_agree_on_damaged_vectors(data: bytes, at: int, index: int) -> None:
    """Every way of overwriting, inserting or cutting a few bytes of a real header."""
    header = bytes.fromhex(VECTORS["entries"][index]["header"])
    at %= len(header) + 1
    assert_same_answer(header[:at] + data + header[at + len(data) :])
    assert_same_answer(header[:at] + data + header[at:])
    assert_same_answer(header[:at] + header[at + len(data) :])


REPLACEMENTS = [  # every field of the vectors is replaced by each of these in turn
    *(uint(n) for n in [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32, 2**63 - 1, 2**63]),
    *(head(0, n, w) for n in [0, 23, 24, 255, 256, 65535, 2**32 - 1] for w in sorted(WIDTHS)),
    *(bytes([b]) + bytes(8) for b in range(0x1C, 0x20)),  # reserved and indefinite heads
    *(bytes([b]) for b in range(0x18, 0x20)),  # a head whose length bytes are missing
    *(id32(b"i" * n) for n in [0, 31, 32, 33]),
    *(head(2, 32, w) + b"i" * 32 for w in [1, 2, 4]),
    *(head(4, n) + id32(b"d" * 32) * n for n in [0, 1, 23, 24, 64, 65]),
    *(head(4, 1, w) + id32(b"d" * 32) for w in [1, 2]),
    head(4, 1) + uint(7),
    b"\xf6",
    b"\xf7",
    *(cbor2.dumps(v, canonical=True) for v in [-1, True, "a", 1.5, {}, [], b""]),
]


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("position", range(11))
def test_fast_and_strict_agree_on_every_field_replaced(index: int, position: int) -> None:
    fields = cbor2.loads(bytes.fromhex(VECTORS["entries"][index]["header"]))
    encoded = [cbor2.dumps(f, canonical=True) for f in fields]
    for replacement in REPLACEMENTS:
        changed = [*encoded[:position], replacement, *encoded[position + 1 :]]
        assert_same_answer(head(4, 11) + b"".join(changed))


ID = ids.map(EntryId)
UINT = in_range


@st.composite
def headers(draw: st.DrawFn, max_deps: int = MAX_DEPS) -> Header:
    seq = draw(st.one_of(st.just(1), UINT.map(lambda n: max(n, 2))))
    return Header(
        group=GroupId(draw(ID)),
        device=DeviceId(draw(ID)),
        seq=seq,
        prev=None if seq == 1 else draw(ID),
        epoch=draw(UINT),
        type=draw(st.sampled_from([0, 23, 24, 255, 256, 65535]) | st.integers(0, 65535)),
        hlc=draw(UINT),
        deps=tuple(draw(st.lists(ID, max_size=max_deps))),
        body_hash=draw(ID),
        body_len=draw(UINT),
    )


@settings(max_examples=500, deadline=None)
@given(header=headers(max_deps=23))
def test_the_fast_path_reads_every_header_with_fewer_than_24_deps(header: Header) -> None:
    """The common case really takes the fast path (else there is no point to it)."""
    data = header.to_bytes()
    assert _parse_fast(data) == header
    assert Header.from_bytes(data) == header


@settings(max_examples=200, deadline=None)
@given(header=headers())
def test_every_valid_header_round_trips(header: Header) -> None:
    data = header.to_bytes()
    assert Header.from_bytes(data) == header == Header._from_bytes_strict(data)
    assert _parse_fast(data) in (None, header)


@settings(max_examples=1000, deadline=None)
@given(data=header_like())
@example(data=bytes.fromhex(VECTORS["entries"][0]["header"]))
def test_feed_position_agrees_with_the_strict_parse_on_every_valid_header(data: bytes) -> None:
    """The sync session's cheap (device, seq) read gives what the full parse gives, for every
    header the strict parser accepts."""
    strict = outcome(Header._from_bytes_strict, data)
    if strict[0] == "accepted":
        header = strict[1]
        assert isinstance(header, Header)
        assert feed_position(data) == (header.device, header.seq)
