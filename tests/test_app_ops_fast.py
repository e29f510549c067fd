"""The text-only post fast path of ``AppOp.from_bytes`` (``app.ops._text_post``) against the
generic strict decoder: on any input, it either gives exactly what the strict decoder gives,
or steps aside (``None``) so the strict decoder decides; it never accepts what that refuses."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.app.ops import MAX_TEXT, AppOp, PostOp, _from_bytes_strict, _text_post
from microsync.errors import DecodeError

PREFIX = bytes.fromhex("830101a164") + b"text"


def _strict(data: bytes) -> object:
    try:
        return _from_bytes_strict(data)
    except DecodeError:
        return DecodeError


def _agrees(data: bytes) -> None:
    fast = _text_post(data)
    strict = _strict(data)
    if fast is not None:
        assert fast == strict
    public = AppOp.from_bytes(data) if strict is not DecodeError else DecodeError
    assert public == strict


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_every_text_post_is_read_by_the_fast_path_as_the_strict_one_reads_it(text: str) -> None:
    data = PostOp(text=text).to_bytes()
    assert _text_post(data) == PostOp(text=text) == _strict(data)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_after_the_prefix(tail: bytes) -> None:
    _agrees(PREFIX + tail)


@settings(max_examples=600, deadline=None)
@given(st.text(max_size=60), st.data())
def test_mutated_text_posts(text: str, data: st.DataObject) -> None:
    wire = bytearray(PostOp(text=text).to_bytes())
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "insert"]))
    at = data.draw(st.integers(0, len(wire) - 1))
    if how == "flip":
        wire[at] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut":
        del wire[at:]
    elif how == "extend":
        wire += data.draw(st.binary(min_size=1, max_size=4))
    else:
        wire[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    _agrees(bytes(wire))


def test_lengths_that_a_shorter_head_would_spell_and_bad_text_are_left_to_the_strict_path() -> None:
    cases = [
        PREFIX + bytes([0x78, 5]) + b"hello",  # 1-byte length for 5: not canonical
        PREFIX + bytes([0x79, 0, 30]) + b"x" * 30,  # 2-byte length for 30
        PREFIX + bytes([0x7A, 0, 0, 1, 0]) + b"x" * 256,  # 4-byte length for 256
        PREFIX + bytes([0x7B]) + (300).to_bytes(8, "big") + b"x" * 300,
        PREFIX + bytes([0x62]) + b"\xc3\x28",  # invalid UTF-8
        PREFIX + bytes([0x63]) + b"\xed\xa0\x80",  # a surrogate
        PREFIX + bytes([0x7F]) + b"ab\xff",  # indefinite length
        PREFIX + bytes([0x62]) + b"ab" + b"\x00",  # trailing byte
    ]
    for data in cases:
        assert _text_post(data) is None
        assert _strict(data) is DecodeError
    longest = PREFIX + bytes([0x7A]) + MAX_TEXT.to_bytes(4, "big") + b"x" * MAX_TEXT
    assert _text_post(longest) == _strict(longest) == PostOp(text="x" * MAX_TEXT)
    over = PREFIX + bytes([0x7A]) + (MAX_TEXT + 1).to_bytes(4, "big") + b"x" * (MAX_TEXT + 1)
    assert _text_post(over) is None and _strict(over) is DecodeError
