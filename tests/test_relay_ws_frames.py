"""The relay's RFC 6455 framing without sockets (microsync.net.ws_frames): known answers from
the RFC, interop with websockets' own framing, frames fed in any cut, and every rule a hostile
peer can break refused with its close code before any payload is held. Also the relay
client's DATA fast paths, checked against the codec."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.streams import StreamReader

from microsync.errors import DecodeError, RemoteProtocolError
from microsync.net.relay import (
    BUCKETS,
    MAX_PAYLOAD,
    Closed,
    Data,
    Error,
    ErrorCode,
    Join,
    decode,
    encode,
)
from microsync.net.relay_client import data_parts, data_payload
from microsync.net.ws_frames import (
    CloseCode,
    Frame,
    FrameError,
    FrameReader,
    Opcode,
    close_payload,
    frame,
    frame_of_parts,
    parse_close,
)

MAX = 73_728
RID = bytes(range(32))


def frames_of(reader: FrameReader) -> list[Frame]:
    out = []
    while (got := reader.next()) is not None:
        out.append(got)
    return out


def read_all(
    data: bytes, *, masked: bool, cut: int | None = None, views: bool = False
) -> list[Frame]:
    reader = FrameReader(masked=masked, max_size=MAX, views=views)
    got: list[Frame] = []
    step = cut or max(1, len(data))
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
        got += frames_of(reader)
    assert reader.buffered == 0
    return got


def refused(data: bytes, *, masked: bool = True, max_size: int = MAX) -> FrameError:
    reader = FrameReader(masked=masked, max_size=max_size)
    reader.feed(data)
    with pytest.raises(FrameError) as caught:
        frames_of(reader)
    assert isinstance(caught.value, RemoteProtocolError)  # a typed error from a peer
    return caught.value


def header(first: int, length: int, *, mask: bool = True) -> bytes:
    """A hand-built frame header (for frames :func:`frame` would never make)."""
    bit = 0x80 if mask else 0
    if length < 126:
        raw = bytes((first, bit | length))
    elif length < 65536:
        raw = bytes((first, bit | 126)) + length.to_bytes(2, "big")
    else:
        raw = bytes((first, bit | 127)) + length.to_bytes(8, "big")
    return raw + (b"\x00\x00\x00\x00" if mask else b"")


# --- known answers (RFC 6455 5.7) and interop ------------------------------------------------


def test_the_rfc_examples() -> None:
    hello = bytes.fromhex("810548656c6c6f")
    assert frame(Opcode.TEXT, b"Hello") == hello
    masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert frame(Opcode.TEXT, b"Hello", mask=bytes.fromhex("37fa213d")) == masked
    assert read_all(masked, masked=True) == [Frame(Opcode.TEXT, b"Hello")]
    assert frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")
    fragmented = bytes.fromhex("010348656c80026c6f")
    assert read_all(fragmented, masked=False) == [Frame(Opcode.TEXT, b"Hello")]


@given(st.binary(max_size=70_000), st.booleans())
def test_websockets_reads_ours_and_we_read_theirs(payload: bytes, masked: bool) -> None:
    ours = frame(Opcode.BINARY, payload, mask=os.urandom(4) if masked else None)
    stream = StreamReader()
    stream.feed_data(ours)
    parser = WsFrame.parse(stream.read_exact, mask=masked)
    try:
        next(parser)
    except StopIteration as done:
        assert done.value.data == payload and done.value.opcode is WsOpcode.BINARY
    else:
        raise AssertionError("websockets wanted more bytes")
    theirs = WsFrame(WsOpcode.BINARY, payload).serialize(mask=masked)
    assert read_all(theirs, masked=masked) == [Frame(Opcode.BINARY, payload)]


# --- any cut of any stream of frames ------------------------------------------------------------

MESSAGES = st.lists(
    st.tuples(
        st.sampled_from([Opcode.BINARY, Opcode.TEXT, Opcode.PING, Opcode.PONG]),
        st.binary(max_size=300),
        st.integers(1, 3),  # fragments (data messages only)
    ),
    max_size=8,
)


def serialize(messages: list[tuple[Opcode, bytes, int]], masked: bool) -> tuple[bytes, list[Frame]]:
    """The frames of ``messages`` (a data message in ``parts`` fragments, a ping between the
    first two) and the frames a reader hands out for them."""
    out, expect = bytearray(), []
    mask = os.urandom(4) if masked else None
    for opcode, payload, parts in messages:
        if opcode in (Opcode.PING, Opcode.PONG) or parts == 1:
            out += frame(opcode, payload[:125] if opcode > 7 else payload, mask=mask)
            expect.append(Frame(opcode, payload[:125] if opcode > 7 else payload))
            continue
        cuts = [len(payload) * i // parts for i in range(parts + 1)]
        for i in range(parts):
            piece = frame(
                opcode if i == 0 else Opcode.CONTINUATION, payload[cuts[i] : cuts[i + 1]], mask=mask
            )
            out += bytes((piece[0] & 0x7F if i < parts - 1 else piece[0],)) + piece[1:]
            if i == 0:
                out += frame(Opcode.PING, b"between", mask=mask)  # control frames may interleave
                expect.append(Frame(Opcode.PING, b"between"))
        expect.append(Frame(opcode, payload))
    return bytes(out), expect


@given(MESSAGES, st.booleans(), st.integers(1, 400))
def test_frames_come_out_whole_and_in_order_whatever_the_cut(
    messages: list[tuple[Opcode, bytes, int]], masked: bool, cut: int
) -> None:
    data, expect = serialize(messages, masked)
    assert read_all(data, masked=masked, cut=cut) == expect
    assert read_all(data, masked=masked, cut=1) == expect  # one byte at a time
    assert read_all(data, masked=masked, cut=cut, views=True) == expect  # views of the input


@given(MESSAGES, st.integers(1, 400))
def test_feeding_again_before_reading_everything_loses_nothing(
    messages: list[tuple[Opcode, bytes, int]], cut: int
) -> None:
    """A reader held mid-read (flow control) may be fed more before it is read again."""
    data, expect = serialize(messages, False)
    reader, got = FrameReader(masked=False, max_size=MAX, views=True), []
    for i in range(0, len(data), cut):
        reader.feed(data[i : i + cut])
        if (one := reader.next()) is not None:  # at most one frame read per feed
            got.append(one)
    got += frames_of(reader)
    assert got == expect and reader.buffered == 0


def test_a_truncated_header_waits_and_holds_no_payload() -> None:
    data = frame(Opcode.BINARY, os.urandom(70_000), mask=os.urandom(4))
    reader = FrameReader(masked=True, max_size=MAX)
    for i in range(13):
        reader.feed(data[i : i + 1])
        assert reader.next() is None
    reader.feed(data[13:-1])
    assert reader.next() is None
    reader.feed(data[-1:])
    assert reader.next() == Frame(Opcode.BINARY, apply_mask_back(data))


def apply_mask_back(data: bytes) -> bytes:
    mask = data[10:14]
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data[14:]))


# --- what a hostile peer may send -----------------------------------------------------------------


def test_an_announced_huge_frame_is_refused_from_its_header() -> None:
    error = refused(header(0x82, 2**63 - 1))
    assert error.code is CloseCode.MESSAGE_TOO_BIG
    assert refused(header(0x82, MAX + 1)).code is CloseCode.MESSAGE_TOO_BIG
    reader = FrameReader(masked=True, max_size=MAX)
    reader.feed(header(0x82, MAX) + bytes(100))  # at the limit: it waits for the rest
    assert reader.next() is None


def test_fragments_may_not_add_up_past_the_limit() -> None:
    first = header(0x02, 40_000) + bytes(40_000)
    assert refused(first + header(0x80, 40_000)).code is CloseCode.MESSAGE_TOO_BIG


def test_the_masking_rule_of_each_direction() -> None:
    unmasked = frame(Opcode.BINARY, b"from a client")
    assert refused(unmasked, masked=True).code is CloseCode.PROTOCOL_ERROR
    masked = frame(Opcode.BINARY, b"from a server", mask=os.urandom(4))
    assert refused(masked, masked=False).code is CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_refused(opcode: int) -> None:
    assert refused(header(0x80 | opcode, 0)).code is CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("bits", [0x40, 0x20, 0x10])
def test_reserved_bits_are_refused(bits: int) -> None:
    # no extension was negotiated (compression is off), so RSV1-3 must be clear
    assert refused(header(0x82 | bits, 1) + b"x").code is CloseCode.PROTOCOL_ERROR


def test_control_frame_rules() -> None:
    assert refused(header(0x89, 126) + bytes(126)).code is CloseCode.PROTOCOL_ERROR
    assert refused(header(0x09, 1) + b"x").code is CloseCode.PROTOCOL_ERROR  # fragmented ping
    assert read_all(header(0x89, 125) + bytes(125), masked=True) == [Frame(Opcode.PING, bytes(125))]


def test_continuation_rules() -> None:
    lone = header(0x80, 1) + b"x"
    assert refused(lone).code is CloseCode.PROTOCOL_ERROR
    started = header(0x02, 1) + b"x"
    assert refused(started + header(0x82, 1) + b"y").code is CloseCode.PROTOCOL_ERROR


def test_close_frame_bodies() -> None:
    assert parse_close(b"") == (None, "")
    assert parse_close(close_payload(CloseCode.GOING_AWAY, "bye")) == (1001, "bye")
    assert parse_close((3000).to_bytes(2, "big")) == (3000, "")
    for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000):
        with pytest.raises(FrameError) as bad:
            parse_close(code.to_bytes(2, "big"))
        assert bad.value.code is CloseCode.PROTOCOL_ERROR
    with pytest.raises(FrameError) as one_byte:
        parse_close(b"\x03")
    assert one_byte.value.code is CloseCode.PROTOCOL_ERROR
    with pytest.raises(FrameError) as not_utf8:
        parse_close(b"\x03\xe8\xff")
    assert not_utf8.value.code is CloseCode.INVALID_DATA
    with pytest.raises(ValueError):
        close_payload(CloseCode.NORMAL, "x" * 124)
    with pytest.raises(ValueError):
        frame(Opcode.BINARY, b"x", mask=b"abc")


@given(st.binary(max_size=64))
def test_any_bytes_give_frames_or_a_frame_error_and_never_anything_else(data: bytes) -> None:
    for masked in (True, False):
        reader = FrameReader(masked=masked, max_size=1024)
        reader.feed(data)
        try:
            frames_of(reader)
        except FrameError as error:
            assert error.code in set(CloseCode)


@given(st.lists(st.binary(max_size=300), max_size=5), st.booleans())
def test_a_frame_of_parts_is_the_frame_of_the_parts_joined(parts: list[bytes], mask: bool) -> None:
    key = os.urandom(4) if mask else None
    joined = frame(Opcode.BINARY, b"".join(parts), mask=key)
    assert frame_of_parts(Opcode.BINARY, [memoryview(p) for p in parts], mask=key) == joined


# --- the relay client's DATA fast paths (microsync.net.relay_client) -----------------------------


@given(st.integers(1, 2**32 - 1), st.integers(1, MAX_PAYLOAD) | st.sampled_from([65_537, 65_544]))
def test_data_parts_are_the_encoded_message(channel: int, size: int) -> None:
    message = Data(channel=channel, payload=os.urandom(size))
    assert b"".join(data_parts(message)) == encode(message)


def test_data_parts_refuse_what_encode_refuses() -> None:
    for bad in (Data(channel=0, payload=b"x"), Data(channel=1, payload=b"")):
        with pytest.raises(ValueError):
            data_parts(bad)
    with pytest.raises(ValueError):
        data_parts(Data(channel=1, payload=bytes(MAX_PAYLOAD + 1)))


def _relay_messages() -> st.SearchStrategy[bytes]:
    """Relay messages, some damaged: a byte changed, cut short, padded into a larger bucket."""
    data = st.builds(
        lambda channel, size: encode(Data(channel=channel, payload=os.urandom(size))),
        st.integers(1, 2**32 - 1),
        st.integers(1, 3_000) | st.sampled_from([65_537, MAX_PAYLOAD]),
    )
    others = st.sampled_from(
        [encode(Closed(channel=2)), encode(Error(code=ErrorCode.IDLE)), encode(Join(rid=RID))]
    )

    def damage(raw: bytes, how: int, at: int, value: int) -> bytes:
        i = at % len(raw)
        if how == 1:
            return raw[:i] + bytes([value]) + raw[i + 1 :]
        if how == 2:
            bigger = [b for b in BUCKETS if b > len(raw)]
            return raw + bytes(bigger[0] - len(raw)) if bigger else raw
        return raw[:i] if how == 3 else raw

    return st.builds(
        damage, data | others, st.integers(0, 3), st.integers(0, 2**20), st.integers(0, 255)
    )


@given(_relay_messages())
def test_the_client_reads_data_without_decoding_exactly_as_decode_would(raw: bytes) -> None:
    """``data_payload`` takes a message only when ``decode`` reads it as DATA in its own
    bucket, and hands out the same channel and payload."""
    try:
        message = decode(raw, from_client=False)
    except DecodeError:
        message = None
    found = data_payload(memoryview(raw))
    canonical = isinstance(message, Data) and encode(message) == raw
    assert (found is not None) == canonical
    if found is not None:
        assert isinstance(message, Data)
        assert (found[0], bytes(found[1])) == (message.channel, message.payload)
