"""The sync session's wire messages and their strict codec (see ``docs/sync.md``).

Theory of operation
-------------------
Every record on the (already encrypted and authenticated) channel is ONE message: a canonical
CBOR array ``[version, type, field...]`` written by :func:`encode_message` and read back by
:func:`decode_message`. Decoding is strict: the record size is checked before parsing, the CBOR
must be canonical (:func:`microsync.encoding.decode`), the version must be
:data:`WIRE_VERSION`, the type known, the field count exact and every field within its limit
(:class:`Limits`). Any failure raises :class:`~microsync.errors.DecodeError`, and a message
that decodes always re-encodes to the same bytes.

Messages are frozen, slotted, keyword-only dataclasses (:mod:`microsync.protocol.message_types`,
every name re-exported here); groups are named by id only after both sides proved they hold
the group (``Hello`` carries keyed tags, never an id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias, assert_never

from microsync import encoding
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError
from microsync.feed.entry import MAX_BODY_SIZE, MAX_ENTRY_SIZE, GroupId
from microsync.identity import MAX_RECORD_SIZE as MAX_CERTIFICATE_SIZE
from microsync.protocol.message_types import (
    ID_SIZE,
    LIMITS,
    MAX_CHUNK_HOPS,
    MAX_RECORD_SIZE,
    SIGNATURE_SIZE,
    TAG_SIZE,
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
    Item,
    KeyRefused,
    KeyRequest,
    KeyResponse,
    Limits,
    Match,
    Message,
    MsgType,
    Ping,
    batch_size,
    message_type,
)

__all__ = [
    "ID_SIZE",
    "LIMITS",
    "MAX_CHUNK_HOPS",
    "MAX_RECORD_SIZE",
    "SIGNATURE_SIZE",
    "TAG_SIZE",
    "WIRE_VERSION",
    "Bye",
    "Certificates",
    "ChunkData",
    "ChunkMissing",
    "ChunkRequest",
    "Conflict",
    "Credit",
    "Digest",
    "Done",
    "Entries",
    "Ephemeral",
    "ErrorCode",
    "ErrorMessage",
    "ForkEvidenceMessage",
    "Frontier",
    "FrontierHead",
    "Hello",
    "Item",
    "KeyRefused",
    "KeyRequest",
    "KeyResponse",
    "Limits",
    "Match",
    "Message",
    "MsgType",
    "Ping",
    "batch_size",
    "decode_message",
    "encode_message",
    "message_type",
]

# ---------------------------------------------------------------------- encoding


def encode_message(message: Message) -> bytes:
    """The canonical record for ``message``."""
    if type(message) is ChunkData:
        return _encode_chunk_data(message)
    return encoding.encode([WIRE_VERSION, int(message_type(message)), *_fields(message)])


# A vault chunk is up to 1 MiB: its record is written and read without a generic CBOR pass
# (the generic decoder re-encodes to prove canonical form: one more copy of the chunk). The
# bytes are exactly ``encoding.encode([1, 17, group, id, data])`` (tests/test_sync_messages.py).
_CHUNK_DATA_HEAD: Final = bytes((0x85, WIRE_VERSION, 17, 0x58, ID_SIZE))


def _bytes_head(n: int) -> bytes:
    """The canonical (shortest) CBOR head of a byte string of ``n`` bytes."""
    if n < 24:
        return bytes((0x40 + n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


def _encode_chunk_data(m: ChunkData) -> bytes:
    if len(m.group) != ID_SIZE or len(m.id) != ID_SIZE or len(m.data) >= 2**32:
        return encoding.encode([WIRE_VERSION, int(MsgType.CHUNK_DATA), *_fields(m)])
    head = _CHUNK_DATA_HEAD + m.group + bytes((0x58, ID_SIZE)) + m.id
    return b"".join((head, _bytes_head(len(m.data)), m.data))


def _decode_chunk_data(record: bytes, limits: Limits) -> ChunkData | None:
    """The message if ``record`` is exactly a canonical CHUNK_DATA record, else ``None`` (the
    generic path then decodes it or says what is wrong)."""
    view = memoryview(record)
    if view[:5] != _CHUNK_DATA_HEAD or view[37:39] != bytes((0x58, ID_SIZE)):
        return None
    for width in (1, 2, 3, 5):  # the data's head: the one canonical form for its length
        n = len(record) - 71 - width
        if n >= 0 and view[71 : 71 + width] == _bytes_head(n) and len(_bytes_head(n)) == width:
            break
    else:
        return None
    if n > limits.max_chunk_data:
        raise DecodeError("data: longer than the chunk limit")
    group, chunk = GroupId(bytes(view[5:37])), bytes(view[39:71])
    return ChunkData(group=group, id=chunk, data=bytes(view[71 + width :]))


def _fields(message: Message) -> list[Value]:
    match message:
        case Hello():
            return [list(message.tags), message.credit_batches, message.credit_bytes]
        case Match():
            return [list(message.confirms)]
        case Digest():
            return [message.group, message.digest, message.serving]
        case Frontier():
            heads: list[Value] = [[h.device, h.seq, h.head] for h in message.heads]
            return [message.group, heads, message.newest_first]
        case Certificates():
            return [message.group, list(message.certificates)]
        case Entries():
            return [message.group, [[w, b] for w, b in message.items]]
        case Credit():
            return [message.batches, message.bytes]
        case Done() | KeyRefused():
            return [message.group]
        case KeyRequest():
            return [message.group, [[n, ref] for n, ref in message.wanted]]
        case KeyResponse():
            return [message.group, message.response]
        case Ephemeral():
            return [message.group, message.data]
        case Ping() | Bye():
            return []
        case ErrorMessage():
            return [int(message.code), message.reason]
        case ChunkRequest():
            return [message.group, list(message.ids), message.hops]
        case ChunkMissing():
            return [message.group, list(message.ids)]
        case ChunkData():
            return [message.group, message.id, message.data]
        case Conflict():
            return [message.group, list(message.entries)]
        case ForkEvidenceMessage():
            return [message.group, message.first, message.second]
        case _:
            assert_never(message)


# ---------------------------------------------------------------------- decoding


def decode_message(record: bytes, limits: Limits = LIMITS) -> Message:
    """Decode one record strictly, or raise :class:`DecodeError`."""
    if record[:3] == _CHUNK_DATA_HEAD[:3] and len(record) <= MAX_RECORD_SIZE:
        fast = _decode_chunk_data(record, limits)
        if fast is not None:
            return fast
    items = expect_list(encoding.decode(record, max_size=MAX_RECORD_SIZE, max_depth=5), "record")
    if len(items) < 2:
        raise DecodeError("record: expected a version and a type")
    if expect_int(items[0], "version") != WIRE_VERSION:
        raise DecodeError("record: unknown version")
    try:
        kind = MsgType(expect_int(items[1], "type"))
    except ValueError:
        raise DecodeError("record: unknown message type") from None
    decoder, arity = _DECODERS[kind]
    fields = items[2:]
    if len(fields) != arity:
        raise DecodeError(f"{kind.name}: expected {arity} fields, got {len(fields)}")
    return decoder(fields, limits)


def _group(value: Value) -> GroupId:
    return GroupId(expect_bytes(value, "group", ID_SIZE))


def _bounded(value: Value, name: str, limit: int) -> list[Value]:
    items = expect_list(value, name)
    if len(items) > limit:
        raise DecodeError(f"{name}: more than {limit} items")
    return items


def _tags(value: Value, name: str, lim: Limits) -> tuple[bytes, ...]:
    tags = tuple(expect_bytes(t, "tag", TAG_SIZE) for t in _bounded(value, name, lim.max_tags))
    if list(tags) != sorted(set(tags)):
        raise DecodeError(f"{name}: not sorted and distinct")
    return tags


def _hello(f: list[Value], lim: Limits) -> Message:
    tags = _tags(f[0], "tags", lim)
    batches = expect_int(f[1], "credit_batches", 0, 2**20)
    return Hello(
        tags=tags, credit_batches=batches, credit_bytes=expect_int(f[2], "credit_bytes", 0, 2**40)
    )


def _match(f: list[Value], lim: Limits) -> Message:
    return Match(confirms=_tags(f[0], "confirms", lim))


def _digest(f: list[Value], lim: Limits) -> Message:
    digest = expect_bytes(f[1], "digest", ID_SIZE)
    return Digest(group=_group(f[0]), digest=digest, serving=_bool(f[2], "serving"))


def _bool(value: Value, name: str) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"{name}: expected a boolean")
    return value


def _frontier(f: list[Value], lim: Limits) -> Message:
    heads = []
    for value in _bounded(f[1], "heads", lim.max_feeds):
        device, seq, head = expect_list(value, "head", 3)
        heads.append(
            FrontierHead(
                device=expect_bytes(device, "device", ID_SIZE),
                seq=expect_int(seq, "seq", 1),
                head=expect_bytes(head, "head", ID_SIZE),
            )
        )
    if [h.device for h in heads] != sorted({h.device for h in heads}):
        raise DecodeError("heads: devices not sorted and distinct")
    newest_first = _bool(f[2], "newest_first")
    return Frontier(group=_group(f[0]), heads=tuple(heads), newest_first=newest_first)


def _certificates(f: list[Value], lim: Limits) -> Message:
    certs = _bounded(f[1], "certificates", lim.max_certificates)
    return Certificates(
        group=_group(f[0]),
        certificates=tuple(
            expect_bytes(c, "certificate", max_size=MAX_CERTIFICATE_SIZE) for c in certs
        ),
    )


def _entries(f: list[Value], lim: Limits) -> Message:
    items: list[Item] = []
    for value in _bounded(f[1], "items", lim.max_batch_entries):
        wire, body = expect_list(value, "item", 2)
        wire_bytes = expect_bytes(wire, "wire", max_size=MAX_ENTRY_SIZE + SIGNATURE_SIZE)
        body_bytes = None if body is None else expect_bytes(body, "body", max_size=MAX_BODY_SIZE)
        items.append((wire_bytes, body_bytes))
    if not items:
        raise DecodeError("items: an empty batch")
    if batch_size(items) > lim.max_batch_bytes:
        raise DecodeError("items: batch over the byte limit")
    return Entries(group=_group(f[0]), items=tuple(items))


def _credit(f: list[Value], lim: Limits) -> Message:
    return Credit(
        batches=expect_int(f[0], "batches", 0, 2**20), bytes=expect_int(f[1], "bytes", 0, 2**40)
    )


def _done(f: list[Value], lim: Limits) -> Message:
    return Done(group=_group(f[0]))


def _key_request(f: list[Value], lim: Limits) -> Message:
    wanted = []
    for value in _bounded(f[1], "wanted", lim.max_wanted_keys):
        number, ref = expect_list(value, "slot", 2)
        wanted.append((expect_int(number, "epoch"), expect_bytes(ref, "ref", max_size=ID_SIZE)))
    if not wanted:
        raise DecodeError("wanted: an empty request")
    return KeyRequest(group=_group(f[0]), wanted=tuple(wanted))


def _key_response(f: list[Value], lim: Limits) -> Message:
    response = expect_bytes(f[1], "response", max_size=lim.max_key_response)
    return KeyResponse(group=_group(f[0]), response=response)


def _key_refused(f: list[Value], lim: Limits) -> Message:
    return KeyRefused(group=_group(f[0]))


def _ephemeral(f: list[Value], lim: Limits) -> Message:
    data = expect_bytes(f[1], "data", max_size=lim.max_ephemeral)
    return Ephemeral(group=_group(f[0]), data=data)


def _ping(f: list[Value], lim: Limits) -> Message:
    return Ping()


def _bye(f: list[Value], lim: Limits) -> Message:
    return Bye()


def _error(f: list[Value], lim: Limits) -> Message:
    try:
        code = ErrorCode(expect_int(f[0], "code"))
    except ValueError:
        raise DecodeError("code: unknown error code") from None
    return ErrorMessage(code=code, reason=expect_str(f[1], "reason", lim.max_reason))


def _chunk_ids(value: Value, lim: Limits) -> tuple[bytes, ...]:
    ids = tuple(expect_bytes(i, "id", ID_SIZE) for i in _bounded(value, "ids", lim.max_chunk_ids))
    if not ids or len(set(ids)) != len(ids):
        raise DecodeError("ids: empty or repeated")
    return ids


def _chunk_request(f: list[Value], lim: Limits) -> Message:
    hops = expect_int(f[2], "hops", 0, MAX_CHUNK_HOPS)
    return ChunkRequest(group=_group(f[0]), ids=_chunk_ids(f[1], lim), hops=hops)


def _chunk_missing(f: list[Value], lim: Limits) -> Message:
    return ChunkMissing(group=_group(f[0]), ids=_chunk_ids(f[1], lim))


def _chunk_data(f: list[Value], lim: Limits) -> Message:
    data = expect_bytes(f[2], "data", max_size=lim.max_chunk_data)
    return ChunkData(group=_group(f[0]), id=expect_bytes(f[1], "id", ID_SIZE), data=data)


def _wire(value: Value, name: str) -> bytes:
    return expect_bytes(value, name, max_size=MAX_ENTRY_SIZE + SIGNATURE_SIZE)


def _conflict(f: list[Value], lim: Limits) -> Message:
    entries = tuple(_wire(w, "entry") for w in _bounded(f[1], "entries", lim.max_conflict_entries))
    if not entries:
        raise DecodeError("entries: an empty conflict")
    return Conflict(group=_group(f[0]), entries=entries)


def _fork_evidence(f: list[Value], lim: Limits) -> Message:
    first, second = _wire(f[1], "first"), _wire(f[2], "second")
    if first == second:
        raise DecodeError("fork evidence: the same entry twice")
    return ForkEvidenceMessage(group=_group(f[0]), first=first, second=second)


_Decoder: TypeAlias = Callable[[list[Value], Limits], Message]

_DECODERS: Final[dict[MsgType, tuple[_Decoder, int]]] = {
    MsgType.HELLO: (_hello, 3),
    MsgType.DIGEST: (_digest, 3),
    MsgType.FRONTIER: (_frontier, 3),
    MsgType.CERTIFICATES: (_certificates, 2),
    MsgType.ENTRIES: (_entries, 2),
    MsgType.CREDIT: (_credit, 2),
    MsgType.DONE: (_done, 1),
    MsgType.KEY_REQUEST: (_key_request, 2),
    MsgType.KEY_RESPONSE: (_key_response, 2),
    MsgType.KEY_REFUSED: (_key_refused, 1),
    MsgType.EPHEMERAL: (_ephemeral, 2),
    MsgType.PING: (_ping, 0),
    MsgType.BYE: (_bye, 0),
    MsgType.ERROR: (_error, 2),
    MsgType.MATCH: (_match, 1),
    MsgType.CHUNK_REQUEST: (_chunk_request, 3),
    MsgType.CHUNK_DATA: (_chunk_data, 3),
    MsgType.CHUNK_MISSING: (_chunk_missing, 2),
    MsgType.CONFLICT: (_conflict, 2),
    MsgType.FORK_EVIDENCE: (_fork_evidence, 3),
}
