"""The sync session's message codec: round trips, strictness, and every limit."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.errors import DecodeError
from microsync.feed import GroupId
from microsync.protocol.messages import (
    LIMITS,
    MAX_RECORD_SIZE,
    WIRE_VERSION,
    Bye,
    Certificates,
    ChunkData,
    ChunkMissing,
    ChunkRequest,
    Conflict,
    Credit,
    Digest,
    Done,
    Entries,
    Ephemeral,
    ErrorCode,
    ErrorMessage,
    ForkEvidenceMessage,
    Frontier,
    FrontierHead,
    Hello,
    KeyRefused,
    KeyRequest,
    KeyResponse,
    Match,
    Message,
    MsgType,
    Ping,
    decode_message,
    encode_message,
    message_type,
)

ids = st.binary(min_size=32, max_size=32)
groups = ids.map(GroupId)
counts = st.integers(0, 2**20)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        lambda tags, b, n: Hello(tags=tuple(sorted(set(tags))), credit_batches=b, credit_bytes=n),
        st.lists(st.binary(min_size=16, max_size=16), max_size=20),
        counts,
        counts,
    ),
    st.builds(
        lambda tags: Match(confirms=tuple(sorted(set(tags)))),
        st.lists(st.binary(min_size=16, max_size=16), max_size=5),
    ),
    st.builds(lambda g, d, s: Digest(group=g, digest=d, serving=s), groups, ids, st.booleans()),
    st.builds(
        lambda g, heads, nf: Frontier(
            group=g,
            heads=tuple(
                FrontierHead(device=d, seq=s, head=h) for d, (s, h) in sorted(heads.items())
            ),
            newest_first=nf,
        ),
        groups,
        st.dictionaries(ids, st.tuples(st.integers(1, 2**63 - 1), ids), max_size=5),
        st.booleans(),
    ),
    st.builds(
        lambda g, c: Certificates(group=g, certificates=tuple(c)),
        groups,
        st.lists(st.binary(max_size=300), max_size=4),
    ),
    st.builds(
        lambda g, items: Entries(group=g, items=tuple(items)),
        groups,
        st.lists(
            st.tuples(st.binary(max_size=200), st.none() | st.binary(max_size=200)),
            min_size=1,
            max_size=5,
        ),
    ),
    st.builds(lambda b, n: Credit(batches=b, bytes=n), counts, counts),
    st.builds(lambda g: Done(group=g), groups),
    st.builds(
        lambda g, w: KeyRequest(group=g, wanted=tuple(w)),
        groups,
        st.lists(st.tuples(st.integers(0, 2**32), st.binary(max_size=32)), min_size=1, max_size=4),
    ),
    st.builds(lambda g, r: KeyResponse(group=g, response=r), groups, st.binary(max_size=200)),
    st.builds(lambda g: KeyRefused(group=g), groups),
    st.builds(lambda g, d: Ephemeral(group=g, data=d), groups, st.binary(max_size=200)),
    st.just(Ping()),
    st.just(Bye()),
    st.builds(
        lambda g, i, h: ChunkRequest(group=g, ids=tuple(i), hops=h),
        groups,
        st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=16, unique=True),
        st.integers(0, 1),
    ),
    st.builds(
        lambda g, i: ChunkMissing(group=g, ids=tuple(i)),
        groups,
        st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=16, unique=True),
    ),
    st.builds(
        lambda g, i, d: ChunkData(group=g, id=i, data=d),
        groups,
        st.binary(min_size=32, max_size=32),
        st.binary(max_size=300),
    ),
    st.builds(
        lambda g, e: Conflict(group=g, entries=tuple(e)),
        groups,
        st.lists(st.binary(max_size=300), min_size=1, max_size=16),
    ),
    st.builds(
        lambda g, a, b: ForkEvidenceMessage(group=g, first=a, second=a + b),
        groups,
        st.binary(max_size=300),
        st.binary(min_size=1, max_size=300),
    ),
    st.builds(
        lambda c, r: ErrorMessage(code=c, reason=r),
        st.sampled_from(ErrorCode),
        st.text(max_size=50),
    ),
)


@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    record = encode_message(message)
    assert decode_message(record) == message
    assert encode_message(decode_message(record)) == record


@settings(max_examples=40)
@given(messages)
def test_no_strict_prefix_of_a_record_decodes(message: Message) -> None:
    record = encode_message(message)
    for cut in range(len(record)):
        with pytest.raises(DecodeError):
            decode_message(record[:cut])


@given(messages, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_refused(message: Message, extra: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(encode_message(message) + extra)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except DecodeError:
        return
    assert encode_message(message) == data


def test_every_type_has_a_strategy_and_a_code() -> None:
    assert {t.value for t in MsgType} == set(range(1, 21))
    assert message_type(Bye()) is MsgType.BYE


def raw(*fields: encoding.Value) -> bytes:
    return encoding.encode([int(f) if isinstance(f, MsgType) else f for f in fields])


G = b"\x07" * 32


@pytest.mark.parametrize(
    "record",
    [
        raw(),
        raw(WIRE_VERSION),
        raw(2, MsgType.BYE),  # unknown version
        raw(WIRE_VERSION, 99),  # unknown type
        raw(WIRE_VERSION, MsgType.BYE, 0),  # extra field
        raw(WIRE_VERSION, MsgType.DONE),  # missing field
        raw(WIRE_VERSION, MsgType.DONE, b"\x07" * 31),  # short group id
        raw(WIRE_VERSION, MsgType.DIGEST, G, b"x" * 33, True),
        raw(WIRE_VERSION, MsgType.DIGEST, G, b"x" * 32, 1),  # not a boolean
        raw(WIRE_VERSION, MsgType.DIGEST, G, b"x" * 32),
        raw(WIRE_VERSION, MsgType.HELLO, [b"b" * 16, b"a" * 16], 1, 1),  # unsorted tags
        raw(WIRE_VERSION, MsgType.HELLO, [b"a" * 16, b"a" * 16], 1, 1),  # duplicate tags
        raw(WIRE_VERSION, MsgType.HELLO, [b"a" * 15], 1, 1),
        raw(WIRE_VERSION, MsgType.HELLO, [b"%016d" % i for i in range(513)], 1, 1),
        raw(WIRE_VERSION, MsgType.HELLO, [], -1, 1),
        raw(WIRE_VERSION, MsgType.MATCH, [b"b" * 16, b"a" * 16]),  # unsorted confirmations
        raw(WIRE_VERSION, MsgType.MATCH, [b"a" * 17]),
        raw(WIRE_VERSION, MsgType.MATCH),
        raw(WIRE_VERSION, MsgType.HELLO, [], True, 1),  # a boolean is not a count
        raw(WIRE_VERSION, MsgType.FRONTIER, G, [[b"d" * 32, 0, b"h" * 32]], False),  # seq 0
        raw(WIRE_VERSION, MsgType.FRONTIER, G, [], 1),  # not a boolean
        raw(WIRE_VERSION, MsgType.FRONTIER, G, [[b"d" * 32, 1, b"h" * 32]] * 2, False),
        raw(WIRE_VERSION, MsgType.ENTRIES, G, []),  # an empty batch
        raw(WIRE_VERSION, MsgType.ENTRIES, G, [[b"w" * 5000, None]]),  # wire too long
        raw(WIRE_VERSION, MsgType.ENTRIES, G, [[b"w", b"b"]] * 257),  # too many items
        raw(WIRE_VERSION, MsgType.ENTRIES, G, [[b"w", b"b" * 262144]] * 5),  # over 1 MiB
        raw(WIRE_VERSION, MsgType.ENTRIES, G, [[b"w", "text"]]),
        raw(WIRE_VERSION, MsgType.CERTIFICATES, G, [b"c" * 1025]),
        raw(WIRE_VERSION, MsgType.KEY_REQUEST, G, []),
        raw(WIRE_VERSION, MsgType.KEY_REQUEST, G, [[1, b"r" * 33]]),
        raw(WIRE_VERSION, MsgType.EPHEMERAL, G, b"e" * (LIMITS.max_ephemeral + 1)),
        raw(WIRE_VERSION, MsgType.ERROR, 77, "no such code"),
        raw(WIRE_VERSION, MsgType.ERROR, 1, "r" * 201),
        raw(WIRE_VERSION, MsgType.CREDIT, 2**21, 0),
        raw(WIRE_VERSION, MsgType.CHUNK_REQUEST, G, []),  # an empty request
        raw(WIRE_VERSION, MsgType.CHUNK_REQUEST, G, [b"c" * 32, b"c" * 32]),  # repeated
        raw(WIRE_VERSION, MsgType.CHUNK_REQUEST, G, [b"%032d" % i for i in range(17)]),
        raw(WIRE_VERSION, MsgType.CHUNK_REQUEST, G, [b"c" * 31]),
        raw(WIRE_VERSION, MsgType.CHUNK_MISSING, G, []),
        raw(WIRE_VERSION, MsgType.CHUNK_DATA, G, b"c" * 33, b"data"),
        raw(WIRE_VERSION, MsgType.CHUNK_DATA, G, b"c" * 32, b"d" * (LIMITS.max_chunk_data + 1)),
        raw(WIRE_VERSION, MsgType.CHUNK_DATA, G, b"c" * 32),
        raw(WIRE_VERSION, MsgType.CONFLICT, G, []),  # an empty conflict
        raw(WIRE_VERSION, MsgType.CONFLICT, G, [b"w"] * 17),  # more than 16 entries
        raw(WIRE_VERSION, MsgType.CONFLICT, G, [b"w" * 4161]),  # longer than an entry
        raw(WIRE_VERSION, MsgType.CONFLICT, G, ["text"]),
        raw(WIRE_VERSION, MsgType.FORK_EVIDENCE, G, b"a", b"a"),  # one entry twice
        raw(WIRE_VERSION, MsgType.FORK_EVIDENCE, G, b"a", b"b" * 4161),
        raw(WIRE_VERSION, MsgType.FORK_EVIDENCE, G, b"a"),
    ],
)
def test_malformed_records_raise_decode_error(record: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(record)


def test_non_canonical_and_oversized_records_are_refused() -> None:
    canonical = encode_message(Credit(batches=1, bytes=2))
    loose = cbor2.dumps([WIRE_VERSION, int(MsgType.CREDIT), 1, 2], canonical=False)
    assert loose == canonical  # small ints: same bytes; now spell one integer long
    long_int = bytes([0x84, 0x01, 0x06, 0x18, 0x01, 0x02])
    with pytest.raises(DecodeError):
        decode_message(long_int)
    indefinite = bytes([0x9F, 0x01, 0x0D, 0xFF])
    with pytest.raises(DecodeError):
        decode_message(indefinite)
    with pytest.raises(DecodeError):
        decode_message(b"\x00" * (MAX_RECORD_SIZE + 1))
    tagged = cbor2.dumps(cbor2.CBORTag(24, [WIRE_VERSION, int(MsgType.BYE)]))
    with pytest.raises(DecodeError):
        decode_message(tagged)


def test_a_full_vault_chunk_fits_one_record() -> None:
    data = b"d" * LIMITS.max_chunk_data
    record = encode_message(ChunkData(group=GroupId(G), id=b"c" * 32, data=data))
    assert len(record) <= MAX_RECORD_SIZE
    assert decode_message(record) == ChunkData(group=GroupId(G), id=b"c" * 32, data=data)


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536, LIMITS.max_chunk_data])
def test_chunk_data_records_are_the_generic_canonical_encoding(size: int) -> None:
    """CHUNK_DATA has a copy-saving encoder and decoder: same bytes, same strictness."""
    message = ChunkData(group=GroupId(G), id=b"c" * 32, data=bytes(range(256)) * (size // 256))
    message = ChunkData(group=message.group, id=message.id, data=message.data + b"x" * (size % 256))
    record = encode_message(message)
    assert record == encoding.encode(
        [WIRE_VERSION, int(MsgType.CHUNK_DATA), G, b"c" * 32, message.data]
    )
    assert decode_message(record) == message


@pytest.mark.parametrize(
    "record",
    [
        # a 5-byte payload written with a 1-byte length (not the shortest head)
        bytes((0x85, 1, 17, 0x58, 32)) + G + bytes((0x58, 32)) + b"c" * 32 + b"\x58\x05abcde",
        # a length that does not match what follows
        bytes((0x85, 1, 17, 0x58, 32)) + G + bytes((0x58, 32)) + b"c" * 32 + b"\x45abcd",
        # a short id
        bytes((0x85, 1, 17, 0x58, 32)) + G + bytes((0x58, 31)) + b"c" * 31 + b"\x41a",
        # over the chunk limit
        encoding.encode([WIRE_VERSION, 17, G, b"c" * 32, b"d" * (LIMITS.max_chunk_data + 1)]),
    ],
)
def test_malformed_chunk_data_records_are_refused(record: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(record)


# Known-answer vectors: the exact bytes of the fork messages (docs/sync.md, "Messages").
# 0x84/0x85 array head, 0x01 version, 0x13 (19) / 0x14 (20) type, 0x58 0x20 + 32-byte group,
# then the fields; any change to these bytes is a wire change.
FORK_VECTORS = [
    (
        Conflict(group=GroupId(G), entries=(b"\xaa" * 3, b"\xbb")),
        "840113" + "5820" + "07" * 32 + "82" + "43aaaaaa" + "41bb",
    ),
    (
        ForkEvidenceMessage(group=GroupId(G), first=b"\x01\x02", second=b"\x03"),
        "850114" + "5820" + "07" * 32 + "420102" + "4103",
    ),
]


@pytest.mark.parametrize(("message", "hex_record"), FORK_VECTORS)
def test_fork_messages_match_their_known_answer_bytes(message: Message, hex_record: str) -> None:
    assert encode_message(message).hex() == hex_record
    assert decode_message(bytes.fromhex(hex_record)) == message
