"""The content AD written directly (``group.keys._content_ad``) against the canonical CBOR
encoder it replaces on the decrypt path: the same bytes for every field an entry can carry,
and for anything else (hostile or just unusual values) the same bytes or the same error,
because it then goes through ``encoding.encode`` itself."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.crypto import SymmetricKey
from microsync.errors import DecodeError, DecryptionError
from microsync.feed.entry import GroupId
from microsync.group.keys import _content_ad, decrypt_content, encrypt_content
from microsync.identity import DeviceId

U64 = st.integers(min_value=0, max_value=2**64 - 1)
# the edges of each canonical integer head, where a hand-written encoder goes wrong
EDGES = st.sampled_from(
    [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]
)
ANY_INT = st.one_of(U64, EDGES, st.integers(min_value=-(2**65), max_value=2**65))
FIELD = st.one_of(
    ANY_INT,
    st.booleans(),
    st.none(),
    st.binary(max_size=300),
    st.text(max_size=5),
    st.binary(max_size=40).map(bytearray),
    st.floats(allow_nan=True),
)


def _slow(*fields: object) -> bytes | type[DecodeError]:
    try:
        return encoding.encode(list(fields))  # type: ignore[arg-type]
    except DecodeError:
        return DecodeError


def _fast(*fields: object) -> bytes | type[DecodeError]:
    try:
        return _content_ad(*fields)  # type: ignore[arg-type]
    except DecodeError:
        return DecodeError


@settings(max_examples=500, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.one_of(U64, EDGES),
    st.binary(min_size=32, max_size=32),
    st.one_of(U64, EDGES),
    st.one_of(U64, EDGES),
    st.binary(min_size=16, max_size=16),
)
def test_an_entrys_ad_is_the_canonical_encoding(
    group: bytes, epoch: int, device: bytes, seq: int, kind: int, ref: bytes
) -> None:
    fields = (group, epoch, device, seq, kind, ref)
    assert _content_ad(GroupId(group), epoch, DeviceId(device), seq, kind, ref) == _slow(*fields)


@settings(max_examples=1000, deadline=None)
@given(st.tuples(FIELD, FIELD, FIELD, FIELD, FIELD, FIELD))
def test_any_fields_give_what_the_encoder_gives_or_its_error(fields: tuple[object, ...]) -> None:
    assert _fast(*fields) == _slow(*fields)


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 1000])
def test_byte_strings_at_each_head_size(length: int) -> None:
    blob = bytes(range(256)) * 4
    fields = (blob[:length], 1, b"d" * 32, 2, 3, blob[-length:] if length else b"")
    assert _fast(*fields) == _slow(*fields)


def test_a_body_opens_only_under_its_own_fields() -> None:
    key = SymmetricKey(bytes(range(32)))
    group, device, ref = GroupId(b"g" * 32), DeviceId(b"d" * 32), b"r" * 16
    where = {"group": group, "epoch": 300, "device": device, "seq": 70000, "type": 5}
    body = encrypt_content(lambda n: b"\x07" * n, key, ref, b"hello", **where)  # type: ignore[arg-type]
    assert decrypt_content(key, body, **where) == b"hello"  # type: ignore[arg-type]
    for name, other in [("epoch", 301), ("seq", 69999), ("type", 4), ("device", group)]:
        with pytest.raises(DecryptionError):
            decrypt_content(key, body, **{**where, name: other})  # type: ignore[arg-type]
