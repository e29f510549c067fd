"""The sync session's wire messages: frozen, slotted, keyword-only dataclasses, one per
message type (see ``docs/sync.md``), the :class:`Limits` every field is held to, and
:func:`message_type`. The codec (:func:`~microsync.protocol.messages.encode_message`,
:func:`~microsync.protocol.messages.decode_message`) is in :mod:`microsync.protocol.messages`,
which re-exports every name here: import them from there.

Groups are named by id only after both sides proved they hold the group (``Hello`` carries
keyed tags, never an id).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from microsync.feed.entry import GroupId

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
    "message_type",
]

WIRE_VERSION: Final = 1
ID_SIZE: Final = 32
TAG_SIZE: Final = 16
SIGNATURE_SIZE: Final = 64
MAX_CHUNK_HOPS: Final = 1
"""How far a chunk request travels: a device that lacks a chunk may ask its own peers once
(the star layout, everyone joined through one inviter, needs no more); a request passed on is
answered from what its receiver holds."""

Item: TypeAlias = tuple[bytes, bytes | None]
"""One entry on the wire: its signed header bytes and its body (``None`` when purged)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Every count and size the codec accepts. A peer exceeding one is a protocol error."""

    max_tags: int = 512
    max_feeds: int = 8192
    max_batch_entries: int = 256
    max_batch_bytes: int = 1024 * 1024
    max_certificates: int = 512
    max_wanted_keys: int = 256
    max_key_response: int = 512 * 1024
    max_ephemeral: int = 4096
    max_reason: int = 200
    max_chunk_ids: int = 16  # per ChunkRequest / ChunkMissing
    max_chunk_data: int = 1024 * 1024 + 16  # one sealed vault chunk (blobs.MAX_CHUNK_SIZE + tag)
    max_conflict_entries: int = 16  # signed headers per Conflict


LIMITS: Final = Limits()
MAX_RECORD_SIZE: Final = LIMITS.max_batch_bytes + 64 * 1024
"""No record is larger: a full batch plus its CBOR overhead (about 12 bytes an item)."""


class MsgType(enum.IntEnum):
    """The message types; the value is the second item of every record."""

    HELLO = 1
    DIGEST = 2
    FRONTIER = 3
    CERTIFICATES = 4
    ENTRIES = 5
    CREDIT = 6
    DONE = 7
    KEY_REQUEST = 8
    KEY_RESPONSE = 9
    KEY_REFUSED = 10
    EPHEMERAL = 11
    PING = 12
    BYE = 13
    ERROR = 14
    MATCH = 15
    CHUNK_REQUEST = 16
    CHUNK_DATA = 17
    CHUNK_MISSING = 18
    CONFLICT = 19
    FORK_EVIDENCE = 20


class ErrorCode(enum.IntEnum):
    """Why a session was closed with an :class:`ErrorMessage`."""

    PROTOCOL = 1  # malformed, oversized or out-of-state message
    TIMEOUT = 2  # the peer was silent for too long
    INTERNAL = 3  # this side failed (storage...)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Opens the session: membership tags (sorted, padded) and the first flow-control grant."""

    tags: tuple[bytes, ...]
    credit_batches: int
    credit_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """The answer to ``Hello``: for groups the receiver is behind in, a confirmation tag under
    a key the receiver offered and the sender holds without offering it (sorted)."""

    confirms: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Digest:
    """A hash of the sender's frontier of ``group``; equal digests end the round.
    ``serving``: whether the sender will send entries to the receiver (``may_serve``)."""

    group: GroupId
    digest: bytes
    serving: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontierHead:
    """One feed of a frontier: its device, head ``seq`` and head entry id."""

    device: bytes
    seq: int
    head: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Frontier:
    """The sender's feeds of ``group`` (what it holds), and how it wants to be sent the rest."""

    group: GroupId
    heads: tuple[FrontierHead, ...]
    newest_first: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificates:
    """Device certificates the receiver needs to check the entries that follow."""

    group: GroupId
    certificates: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Entries:
    """One batch of entries of ``group``; it spends one batch and its size of credit."""

    group: GroupId
    items: tuple[Item, ...]

    @property
    def size(self) -> int:
        return batch_size(self.items)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credit:
    """More flow-control credit for the receiver of this message to spend on entries."""

    batches: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """The sender has sent everything of ``group`` the receiver lacked at the start."""

    group: GroupId


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest:
    """Epoch keys of ``group`` the sender lacks: (epoch number, commitment or key ref)."""

    group: GroupId
    wanted: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyResponse:
    """Keys wrapped to the requester (an opaque bundle the group layer opens)."""

    group: GroupId
    response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRefused:
    """The answerer will not give keys of ``group`` to the requester."""

    group: GroupId


@dataclass(frozen=True, slots=True, kw_only=True)
class Ephemeral:
    """Opaque bytes for ``group`` that are not stored (presence, location): the app verifies."""

    group: GroupId
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """Keeps an idle session open (resets the peer's idle timer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    """The sender closes the session normally."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """The sender closes the session because of an error (a fixed, secret-free reason)."""

    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkRequest:
    """Vault chunks of ``group`` the sender wants (distinct ids). The request is the flow
    control: the receiver answers each id once, with ``ChunkData`` or in a ``ChunkMissing``,
    and the sender keeps a bounded number of ids outstanding. ``hops``: how many more devices
    may pass the request on to their own peers when they lack a chunk (0 to
    :data:`MAX_CHUNK_HOPS`; a request passed on carries one less)."""

    group: GroupId
    ids: tuple[bytes, ...]
    hops: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkData:
    """One requested sealed chunk (the requester checks it against its id before keeping it)."""

    group: GroupId
    id: bytes
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkMissing:
    """Requested chunks the sender does not hold (or will not serve)."""

    group: GroupId
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """The sender's own entries of one feed (signed headers, no bodies), from the position
    where the receiver's frontier names a different head, going back one by one: the receiver
    finds the lowest that differs from its own and keeps the pair as evidence of a fork."""

    group: GroupId
    entries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkEvidenceMessage:
    """Proof that a device forked its feed: two different entries it signed at one position
    (signed headers, no bodies). The receiver verifies both before it marks the feed forked."""

    group: GroupId
    first: bytes
    second: bytes


Message: TypeAlias = (
    Hello
    | Match
    | Digest
    | Frontier
    | Certificates
    | Entries
    | Credit
    | Done
    | KeyRequest
    | KeyResponse
    | KeyRefused
    | Ephemeral
    | Ping
    | Bye
    | ErrorMessage
    | ChunkRequest
    | ChunkData
    | ChunkMissing
    | Conflict
    | ForkEvidenceMessage
)


def batch_size(items: tuple[Item, ...] | list[Item]) -> int:
    """The bytes a batch of items counts against the flow-control credit."""
    return sum(len(wire) + (0 if body is None else len(body)) for wire, body in items)


def message_type(message: Message) -> MsgType:
    """The :class:`MsgType` of ``message``."""
    return _TYPES[type(message)]


_TYPES: Final[dict[type, MsgType]] = {
    Hello: MsgType.HELLO,
    Digest: MsgType.DIGEST,
    Frontier: MsgType.FRONTIER,
    Certificates: MsgType.CERTIFICATES,
    Entries: MsgType.ENTRIES,
    Credit: MsgType.CREDIT,
    Done: MsgType.DONE,
    KeyRequest: MsgType.KEY_REQUEST,
    KeyResponse: MsgType.KEY_RESPONSE,
    KeyRefused: MsgType.KEY_REFUSED,
    Ephemeral: MsgType.EPHEMERAL,
    Ping: MsgType.PING,
    Bye: MsgType.BYE,
    ErrorMessage: MsgType.ERROR,
    Match: MsgType.MATCH,
    ChunkRequest: MsgType.CHUNK_REQUEST,
    ChunkData: MsgType.CHUNK_DATA,
    ChunkMissing: MsgType.CHUNK_MISSING,
    Conflict: MsgType.CONFLICT,
    ForkEvidenceMessage: MsgType.FORK_EVIDENCE,
}
