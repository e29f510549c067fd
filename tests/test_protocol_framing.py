"""Frames, chunked records and the SecureChannel (microsync.protocol.framing).

The decoder is fed one byte at a time and in random slices; records are chunked at every
boundary size; a channel closes for good on the first frame it cannot accept.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.errors import DecryptionError, LocalProtocolError, RemoteProtocolError
from microsync.protocol.framing import (
    FLAG_LAST,
    FLAG_MORE,
    MAX_CHUNK_SIZE,
    MAX_FRAME_SIZE,
    FrameDecoder,
    RecordAssembler,
    SecureChannel,
    chunk_record,
    encode_frame,
)
from microsync.protocol.noise import MAX_PLAINTEXT_SIZE, CipherState

BOUNDARY_SIZES = [
    0,
    1,
    MAX_CHUNK_SIZE - 1,
    MAX_CHUNK_SIZE,
    MAX_CHUNK_SIZE + 1,
    2 * MAX_CHUNK_SIZE,
    2 * MAX_CHUNK_SIZE + 1,
]


def _slices(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def channel_pair(max_record_size: int = 1 << 20) -> tuple[SecureChannel, SecureChannel]:
    """Two ends of a channel over fixed keys, as a finished handshake would give them."""
    one, two = os.urandom(32), os.urandom(32)
    a = SecureChannel(
        CipherState(one), CipherState(two), handshake_hash=b"h", max_record_size=max_record_size
    )
    b = SecureChannel(
        CipherState(two), CipherState(one), handshake_hash=b"h", max_record_size=max_record_size
    )
    return a, b


# --- frames -----------------------------------------------------------------------------------


def test_frame_is_big_endian_length_then_body() -> None:
    assert encode_frame(b"abc") == b"\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00"
    assert encode_frame(bytes(MAX_FRAME_SIZE))[:2] == b"\xff\xff"
    with pytest.raises(LocalProtocolError):
        encode_frame(bytes(MAX_FRAME_SIZE + 1))


def test_decoder_one_byte_at_a_time() -> None:
    stream = b"".join(encode_frame(body) for body in [b"", b"x", b"hello" * 100])
    decoder = FrameDecoder()
    frames: list[bytes] = []
    for index in range(len(stream)):
        frames += decoder.feed(stream[index : index + 1])
    assert frames == [b"", b"x", b"hello" * 100]
    assert decoder.buffered == 0


def test_truncated_input_waits() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00") == []
    assert decoder.feed(b"\x05abc") == []
    assert decoder.buffered == 5
    assert decoder.feed(b"de\x00") == [b"abcde"]
    assert decoder.buffered == 1


def test_frame_views_stay_valid_while_more_bytes_arrive() -> None:
    decoder, second_frame = FrameDecoder(), encode_frame(b"second")
    decoder.append(encode_frame(b"first") + second_frame[:5])
    first = decoder.next_frame_view()
    assert decoder.next_frame_view() is None
    decoder.append(second_frame[5:])  # a partial frame was left over: now a growing buffer
    second = decoder.next_frame_view()
    decoder.append(encode_frame(b"third"))
    assert first is not None and second is not None
    assert (bytes(first), bytes(second)) == (b"first", b"second")
    assert decoder.next_frame() == b"third" and decoder.buffered == 0


def test_oversized_length_prefix_is_refused() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    assert decoder.feed(encode_frame(bytes(100))) == [bytes(100)]
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\x00\x65")  # 101, refused before the body arrives


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_frames_round_trip_in_any_slicing(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(body) for body in bodies)
    decoder = FrameDecoder()
    frames = [frame for piece in _slices(stream, cuts) for frame in decoder.feed(piece)]
    assert frames == bodies


# --- records ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_chunking_at_boundaries(size: int) -> None:
    record = os.urandom(size)
    plaintexts = list(chunk_record(record))
    assert len(plaintexts) == max(1, -(-size // MAX_CHUNK_SIZE))
    assert all(len(p) <= MAX_PLAINTEXT_SIZE for p in plaintexts)
    assert [p[0] for p in plaintexts] == [FLAG_MORE] * (len(plaintexts) - 1) + [FLAG_LAST]
    assembler = RecordAssembler()
    results = [assembler.add(p) for p in plaintexts]
    assert results[:-1] == [None] * (len(plaintexts) - 1)
    assert results[-1] == record
    assert not assembler.partial


def test_assembler_refuses_what_chunk_record_would_not_write() -> None:
    for bad in [b"", b"\x02data", b"\xffdata", bytes([FLAG_MORE]) + b"short"]:
        with pytest.raises(RemoteProtocolError):
            RecordAssembler().add(bad)


def test_record_size_limits() -> None:
    with pytest.raises(LocalProtocolError):
        chunk_record(bytes(101), max_record_size=100)
    assembler = RecordAssembler(max_record_size=MAX_CHUNK_SIZE + 10)
    plaintexts = list(chunk_record(bytes(MAX_CHUNK_SIZE + 11), max_record_size=10**6))
    assert assembler.add(plaintexts[0]) is None
    with pytest.raises(RemoteProtocolError):
        assembler.add(plaintexts[1])


# --- the secure channel -----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, 3 * MAX_CHUNK_SIZE)),
        max_size=4,
    ),
    cuts=st.lists(st.integers(0, 4 * MAX_FRAME_SIZE), max_size=10),
)
def test_channel_round_trip_in_any_slicing(sizes: list[int], cuts: list[int]) -> None:
    a, b = channel_pair()
    records = [os.urandom(size) for size in sizes]
    stream = b"".join(a.encrypt_record(record) for record in records)
    received = [record for piece in _slices(stream, cuts) for record in b.feed(piece)]
    assert received == records
    b.receive_eof()  # nothing cut off


def _frames(data: bytes) -> list[bytes]:
    return [encode_frame(body) for body in FrameDecoder().feed(data)]


def _expect_closed(channel: SecureChannel, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        channel.feed(data)
    assert channel.closed
    with pytest.raises(LocalProtocolError):
        channel.feed(b"")
    with pytest.raises(LocalProtocolError):
        channel.encrypt_record(b"after the end")


def test_tampered_frame_closes_the_channel() -> None:
    a, b = channel_pair()
    frame = bytearray(a.encrypt_record(b"hello"))
    frame[5] ^= 0x01
    _expect_closed(b, bytes(frame), DecryptionError)


def test_replayed_frame_closes_the_channel() -> None:
    a, b = channel_pair()
    frame = a.encrypt_record(b"pay me")
    assert b.feed(frame) == [b"pay me"]
    _expect_closed(b, frame, DecryptionError)


def test_reordered_frames_close_the_channel() -> None:
    a, b = channel_pair()
    first, second = a.encrypt_record(b"1"), a.encrypt_record(b"2")
    _expect_closed(b, second + first, DecryptionError)


def test_dropped_chunk_closes_the_channel() -> None:
    a, b = channel_pair()
    frames = _frames(a.encrypt_record(bytes(2 * MAX_CHUNK_SIZE + 5)))
    assert len(frames) == 3
    _expect_closed(b, frames[0] + frames[2], DecryptionError)


def test_truncated_frame_closes_the_channel() -> None:
    a, b = channel_pair()
    first, second = a.encrypt_record(b"first"), a.encrypt_record(b"second")
    _expect_closed(b, first[:-1] + second, DecryptionError)


def test_stream_ending_inside_a_frame_or_record_is_an_error() -> None:
    a, b = channel_pair()
    assert b.feed(a.encrypt_record(b"whole")[:-3]) == []
    with pytest.raises(RemoteProtocolError):
        b.receive_eof()
    assert b.closed
    a, b = channel_pair()
    first_chunk = _frames(a.encrypt_record(bytes(MAX_CHUNK_SIZE + 1)))[0]
    assert b.feed(first_chunk) == []
    with pytest.raises(RemoteProtocolError):
        b.receive_eof()


def test_oversized_record_from_the_peer_closes_the_channel() -> None:
    a, _ = channel_pair(max_record_size=10**6)
    key_a, key_b = os.urandom(32), os.urandom(32)
    sender = SecureChannel(CipherState(key_a), CipherState(key_b), handshake_hash=b"")
    small = SecureChannel(
        CipherState(key_b), CipherState(key_a), handshake_hash=b"", max_record_size=1000
    )
    _expect_closed(small, sender.encrypt_record(bytes(1001)), RemoteProtocolError)
    with pytest.raises(LocalProtocolError):
        a.encrypt_record(bytes(10**6 + 1))
    assert not a.closed  # a local mistake sends nothing and breaks nothing


def test_failed_frame_does_not_advance_the_nonce() -> None:
    a, b = channel_pair()
    good = a.encrypt_record(b"good")
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(DecryptionError):
        b.feed(bytes(bad))
    assert "received=0" in repr(b)
