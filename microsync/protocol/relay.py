"""The relay's wire codec: what a device and the blind relay say to each other over one
WebSocket (the broker that acts on it is :mod:`microsync.protocol.relay_broker`; the
WebSocket adapters are :mod:`microsync.net.relay` and :mod:`microsync.net.relay_client`).

Every message is one binary WebSocket message (:func:`encode` / :func:`decode`)::

    message = u8 kind || u24 body length || body || zero padding up to a bucket in BUCKETS

    JOIN   1  rid[32]                  client -> relay
    LEAVE  2  rid[32]                  client -> relay   (no new pairings; channels stay)
    DATA   3  channel u32 || payload   both ways          (1 <= len(payload) <= MAX_PAYLOAD)
    CLOSE  4  channel u32              client -> relay
    PAIRED 5  rid[32] || channel u32 || initiator u8
    CLOSED 6  channel u32              relay -> client    (the other end closed or left)
    ERROR  7  code u16                 relay -> client    (then the relay disconnects)

Channel ids are per client (1, 2, 3...), so the two ends of one channel see different numbers.
Decoding is strict: a bucket length, a known kind for the direction, an exact body layout, an
all-zero padding; anything else is a :class:`~microsync.errors.DecodeError`. Every length on
the wire is one of :data:`BUCKETS`, so a message's size says little about its content.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, assert_never

from microsync.errors import DecodeError

__all__ = [
    "BUCKETS",
    "CHANNEL_SIZE",
    "DATA_OVERHEAD",
    "HEADER_SIZE",
    "MAX_MESSAGE",
    "MAX_PAYLOAD",
    "RID_SIZE",
    "ClientMessage",
    "Close",
    "Closed",
    "Data",
    "Error",
    "ErrorCode",
    "Join",
    "Kind",
    "Leave",
    "Message",
    "Paired",
    "RelayMessage",
    "bucket_for",
    "data_channel",
    "data_sizes",
    "decode",
    "encode",
    "rechannel",
]

BUCKETS: Final = (256, 1024, 4096, 16384, 65536, 65552, 73728)
"""Every message the relay sends or accepts is exactly one of these lengths. 65,552 holds one
full Noise frame (2 + 65,535 bytes) in one DATA message: the stream's usual bulk write crosses
the relay as one message, not as 64 KiB plus a 256-byte tail."""
MAX_MESSAGE: Final = BUCKETS[-1]
HEADER_SIZE: Final = 4
RID_SIZE: Final = 32
CHANNEL_SIZE: Final = 4
DATA_OVERHEAD: Final = HEADER_SIZE + CHANNEL_SIZE
MAX_PAYLOAD: Final = MAX_MESSAGE - DATA_OVERHEAD
"""The most bytes one DATA message carries."""


class Kind(IntEnum):
    JOIN = 1
    LEAVE = 2
    DATA = 3
    CLOSE = 4
    PAIRED = 5
    CLOSED = 6
    ERROR = 7


class ErrorCode(IntEnum):
    """Why the relay is about to disconnect a client."""

    MALFORMED = 1
    RELAY_FULL = 2
    TOO_MANY_RIDS = 3
    RATE_LIMIT = 4
    IDLE = 5
    ADDRESS_FULL = 6
    UNPAIRED = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    rid: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    rid: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    channel: int
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    channel: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Paired:
    rid: bytes
    channel: int
    initiator: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    channel: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    code: ErrorCode


ClientMessage = Join | Leave | Data | Close
RelayMessage = Paired | Data | Closed | Error
Message = ClientMessage | RelayMessage
CLIENT_KINDS: Final = frozenset({Kind.JOIN, Kind.LEAVE, Kind.DATA, Kind.CLOSE})
RELAY_KINDS: Final = frozenset({Kind.PAIRED, Kind.DATA, Kind.CLOSED, Kind.ERROR})


def bucket_for(length: int) -> int:
    """The smallest bucket that holds ``length`` bytes."""
    for size in BUCKETS:
        if length <= size:
            return size
    raise ValueError("message larger than the largest bucket")


def data_sizes(length: int) -> list[int]:
    """How to cut ``length`` bytes into DATA payloads with little padding.

    The cheaper on the wire of two cuts: into full 72 KiB messages, or into full messages of
    the bucket below (neither pads); in both the tail goes whole or, when cheaper, as one more
    full message of that bucket plus a small one: a 65,537-byte Noise frame goes as one
    65,552-byte message.

    >>> data_sizes(65_537), data_sizes(73_000), data_sizes(200_000)
    ([65537], [73000], [65544, 65544, 65544, 3368])
    """
    cuts = [_cut(length, MAX_PAYLOAD), _cut(length, BUCKETS[-2] - DATA_OVERHEAD)]
    return min(cuts, key=lambda sizes: (sum(map(_padded, sizes)), len(sizes)))


def _cut(length: int, chunk: int) -> list[int]:
    full = BUCKETS[-2] - DATA_OVERHEAD
    sizes = [chunk] * ((length - 1) // chunk) if length > MAX_PAYLOAD else []
    tail = length - chunk * len(sizes)
    if tail > full and _padded(tail) > _padded(full) + _padded(tail - full):
        return [*sizes, full, tail - full]
    return [*sizes, tail] if tail else sizes


def _padded(payload: int) -> int:
    return bucket_for(DATA_OVERHEAD + payload)


def _u32(value: int) -> bytes:
    if not 0 < value < 2**32:
        raise ValueError("channel ids are 1 to 2**32 - 1")
    return value.to_bytes(CHANNEL_SIZE, "big")


def _body(message: Message) -> tuple[Kind, list[bytes | memoryview]]:
    match message:
        case Join(rid=rid) | Leave(rid=rid) if len(rid) != RID_SIZE:
            raise ValueError("a rendezvous id is 32 bytes")
        case Join(rid=rid):
            return Kind.JOIN, [rid]
        case Leave(rid=rid):
            return Kind.LEAVE, [rid]
        case Data(channel=channel, payload=payload):
            if not 0 < len(payload) <= MAX_PAYLOAD:
                raise ValueError(f"a DATA payload is 1 to {MAX_PAYLOAD} bytes")
            return Kind.DATA, [_u32(channel), payload]
        case Close(channel=channel):
            return Kind.CLOSE, [_u32(channel)]
        case Paired(rid=rid, channel=channel, initiator=initiator):
            return Kind.PAIRED, [rid, _u32(channel), bytes((initiator,))]
        case Closed(channel=channel):
            return Kind.CLOSED, [_u32(channel)]
        case Error(code=code):
            return Kind.ERROR, [code.to_bytes(2, "big")]
        case _:
            assert_never(message)


def encode(message: Message) -> bytes:
    """The padded wire form of ``message`` (its length is one of :data:`BUCKETS`)."""
    kind, parts = _body(message)
    length = sum(len(part) for part in parts)
    size = bucket_for(HEADER_SIZE + length)
    header = bytes((kind,)) + length.to_bytes(3, "big")
    return b"".join([header, *parts, bytes(size - HEADER_SIZE - length)])


def decode(data: bytes, *, from_client: bool) -> Message:
    """Strictly decode one wire message sent by a client (or, if not, by the relay)."""
    if len(data) not in BUCKETS:
        raise DecodeError("a relay message length is not a bucket")
    length = int.from_bytes(data[1:HEADER_SIZE], "big")
    end = HEADER_SIZE + length
    if end > len(data) or data.count(0, end) != len(data) - end:
        raise DecodeError("bad relay message length or padding")
    try:
        kind = Kind(data[0])
    except ValueError:
        raise DecodeError("unknown relay message kind") from None
    if kind not in (CLIENT_KINDS if from_client else RELAY_KINDS):
        raise DecodeError("relay message kind not allowed in this direction")
    return _parse(kind, memoryview(data)[HEADER_SIZE:end])


def data_channel(data: bytes) -> int | None:
    """The channel of ``data`` when it is a DATA message from a client in its own (smallest)
    bucket, which the relay forwards with :func:`rechannel`; ``None`` for anything else,
    which goes through :func:`decode` (that is where a malformed message is refused)."""
    size = len(data)
    if size < BUCKETS[0] or data[0] != Kind.DATA:
        return None
    end = HEADER_SIZE + int.from_bytes(data[1:HEADER_SIZE], "big")
    if not DATA_OVERHEAD < end <= size or size != bucket_for(end):
        return None
    if data.count(0, end) != size - end:
        return None
    return int.from_bytes(data[HEADER_SIZE:DATA_OVERHEAD], "big") or None


def rechannel(data: bytes, channel: int) -> bytes:
    """A DATA message (:func:`data_channel` said so) sent on as ``channel``: one copy, equal
    to ``encode(Data(channel=channel, payload=...))`` of the same payload."""
    return b"".join((data[:HEADER_SIZE], _u32(channel), memoryview(data)[DATA_OVERHEAD:]))


def _channel(body: memoryview) -> int:
    channel = int.from_bytes(body[:CHANNEL_SIZE], "big")
    if channel == 0:
        raise DecodeError("channel id 0")
    return channel


def _parse(kind: Kind, body: memoryview) -> Message:
    sizes = {
        Kind.JOIN: RID_SIZE,
        Kind.LEAVE: RID_SIZE,
        Kind.CLOSE: CHANNEL_SIZE,
        Kind.CLOSED: CHANNEL_SIZE,
        Kind.PAIRED: RID_SIZE + CHANNEL_SIZE + 1,
        Kind.ERROR: 2,
    }
    if kind is Kind.DATA:
        if len(body) <= CHANNEL_SIZE:
            raise DecodeError("empty DATA message")
        return Data(channel=_channel(body), payload=bytes(body[CHANNEL_SIZE:]))
    if len(body) != sizes[kind]:
        raise DecodeError("bad relay message body length")
    match kind:
        case Kind.JOIN:
            return Join(rid=bytes(body))
        case Kind.LEAVE:
            return Leave(rid=bytes(body))
        case Kind.CLOSE:
            return Close(channel=_channel(body))
        case Kind.CLOSED:
            return Closed(channel=_channel(body))
        case Kind.PAIRED:
            if body[-1] > 1:
                raise DecodeError("bad initiator flag")
            rid, channel = bytes(body[:RID_SIZE]), _channel(body[RID_SIZE:])
            return Paired(rid=rid, channel=channel, initiator=body[-1] == 1)
        case Kind.ERROR:
            try:
                return Error(code=ErrorCode(int.from_bytes(body, "big")))
            except ValueError:
                raise DecodeError("unknown relay error code") from None
    raise AssertionError("unreachable")  # pragma: no cover
