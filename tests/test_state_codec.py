"""The operation codec: known-answer bytes, round trips, and strict rejection of bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.errors import DecodeError, LocalProtocolError
from microsync.state import (
    CounterAdd,
    Document,
    IdRange,
    ListDelete,
    ListInsert,
    ListMove,
    Op,
    OpId,
    OpTooLarge,
    RegisterDelete,
    RegisterSet,
    SetAdd,
    SetRemove,
    TextDelete,
    TextInsert,
    Timestamp,
    UnknownOpVersion,
    decode_op,
    encode_op,
)
from microsync.state.codec import MAX_OP_BYTES
from tests.test_state_support import actor, local_edit

A, B = b"A", b"B"

VECTORS: list[tuple[Op, str]] = [
    (
        RegisterSet(
            id=OpId(1, A), key="k", ts=Timestamp(1700000000000, 0, A), value={"n": [1, "x"]}
        ),
        "870101414101616b821b0000018bcfe5680000a1616e82016178",
    ),
    (
        RegisterDelete(id=OpId(2, A), key="k", ts=Timestamp(1700000000001, 3, A)),
        "860102414102616b821b0000018bcfe5680103",
    ),
    (CounterAdd(id=OpId(3, A), key="c", delta=-5), "860103414103616324"),
    (SetAdd(id=OpId(4, A), key="s", element="milk"), "8601044141046173646d696c6b"),
    (
        SetRemove(id=OpId(5, A), key="s", element="milk", tags=(OpId(4, A), OpId(2, B))),
        "8701054141056173646d696c6b828204414182024142",
    ),
    (TextInsert(id=OpId(6, A), key="t", origin=None, text="hé"), "8701064141066174f66368c3a9"),
    (
        TextDelete(id=OpId(8, A), key="t", ranges=(IdRange(6, A, 2),)),
        "8601074141086174818306414102",
    ),
    (
        ListInsert(id=OpId(9, A), key="l", origin=OpId(6, B), values=(1, b"\x00")),
        "870108414109616c8206414282014100",
    ),
    (
        ListDelete(id=OpId(11, A), key="l", ranges=(IdRange(9, A, 1), IdRange(3, B, 2))),
        "86010941410b616c8283094141018303414202",
    ),
    (
        ListMove(id=OpId(12, A), key="l", origin=None, element=OpId(10, A)),
        "87010a41410c616cf6820a4141",
    ),
]


@pytest.mark.parametrize(("op", "hexed"), VECTORS, ids=lambda v: type(v).__name__)
def test_known_answers(op: Op, hexed: str) -> None:
    assert encode_op(op).hex() == hexed
    assert decode_op(bytes.fromhex(hexed)) == op


@pytest.mark.parametrize(("op", "hexed"), VECTORS, ids=lambda v: type(v).__name__)
def test_every_strict_prefix_and_any_trailing_byte_is_rejected(op: Op, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            decode_op(data[:end])
    with pytest.raises(DecodeError):
        decode_op(data + b"\x00")


def test_unknown_version_is_its_own_error() -> None:
    data = bytearray(bytes.fromhex(VECTORS[2][1]))
    data[1] = 2
    with pytest.raises(UnknownOpVersion):
        decode_op(bytes(data))


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(OpTooLarge):
        decode_op(b"\x00" * (MAX_OP_BYTES + 1))


def test_encoding_an_oversized_op_is_a_local_error() -> None:
    op = TextInsert(id=OpId(1, A), key="t", origin=None, text="x" * MAX_OP_BYTES)
    with pytest.raises(LocalProtocolError):
        encode_op(op)
    late = TextInsert(id=OpId(2**53, A), key="t", origin=None, text="xy")
    with pytest.raises(LocalProtocolError):
        encode_op(late)


@pytest.mark.parametrize(
    "fields",
    [
        [1, 99, A, 1, "k", 0],  # unknown kind
        [1, 3, A, 1, "k"],  # missing field
        [1, 3, A, 1, "k", 0],  # zero delta
        [1, 3, A, 1, "k", True],  # a boolean is not an integer
        [1, 3, A, 0, "k", 1],  # counters start at 1
        [1, 3, b"", 1, "k", 1],  # empty actor
        [1, 3, b"x" * 65, 1, "k", 1],  # actor too long
        [1, 3, A, 1, "k" * 257, 1],  # key too long
        [1, 3, A, 2**53 + 1, "k", 1],  # counter past the limit
        [1, 6, A, 1, "t", None, ""],  # empty insert
        [1, 6, A, 2**53, "t", None, "ab"],  # insert past the last counter
        [1, 6, A, 1, "t", [1], "a"],  # malformed origin
        [1, 7, A, 1, "t", []],  # no ranges
        [1, 7, A, 1, "t", [[1, A, 0]]],  # empty range
        [1, 8, A, 1, "l", None, []],  # no values
        [1, 1, A, 1, "k", [1], 0],  # malformed timestamp
        [1, 4, A, 1, "s", [[[[[[[[[[0]]]]]]]]]]],  # element nested too deeply
        ["1", 3, A, 1, "k", 1],  # version is not an integer
        {"v": 1},  # not an array
    ],
)
def test_malformed_operations_are_rejected(fields: encoding.Value) -> None:
    with pytest.raises(DecodeError):
        decode_op(encoding.encode(fields))


def test_non_canonical_encoding_is_rejected() -> None:
    data = bytes.fromhex(VECTORS[2][1])
    # counter 3 written as a two-byte integer instead of in the initial byte
    longer = data.replace(bytes.fromhex("414103"), bytes.fromhex("41411803"), 1)
    with pytest.raises(DecodeError):
        decode_op(longer)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_round_trip_of_random_local_edits(data: st.DataObject) -> None:
    doc = Document(actor(0))
    for _ in range(8):
        op = local_edit(doc, data, now=1_000)
        if op is not None:
            assert decode_op(encode_op(op)) == op


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_escape_as_another_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_op(data)
