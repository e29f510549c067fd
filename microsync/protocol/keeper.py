"""The keeper wire protocol: messages and their padded, strict codec (sans-IO).

Theory of operation
-------------------
A client and a keeper exchange one binary WebSocket message per protocol message::

    message = u8 kind || u24 body length || canonical CBOR body || zeros up to a bucket

Every message is exactly one of :data:`BUCKETS` long (an item's bucket follows its padded
size: :data:`microsync.group.mailbox.ITEM_SIZES` plus fixed room for the framing), so the
keeper, and anyone watching, sees padded sizes and timing only. The body is a CBOR array whose
layout the kind fixes:

    ======== ==== ==================================================== ===============
    kind     code body                                                 direction
    ======== ==== ==================================================== ===============
    PROVE    1    [request, mailbox, public key, signature]            client -> keeper
    PUSH     2    [request, mailbox, [[item id, payload], ...]]        client -> keeper
    PULL     3    [request, mailbox, after, before, newest_first, n,   client -> keeper
                   wait]
    DELETE   4    [request, mailbox, [item id, ...]]                   client -> keeper
    CHALLENGE 16  [nonce, keeper id]                                   keeper -> client
    PROVED   17   [request]                                            keeper -> client
    STORED   18   [request, [[cursor, duplicate], ...]]                keeper -> client
    ITEMS    19   [request, [[cursor, item id, payload], ...]]         keeper -> client
    END      20   [request, more]                                      keeper -> client
    DELETED  21   [request, count]                                     keeper -> client
    REFUSED  22   [request, code]                                      keeper -> client
    ERROR    23   [code]                    (then the keeper hangs up) keeper -> client
    ======== ==== ==================================================== ===============

A PUSH carries 1 to :data:`MAX_BATCH` items and commits all or none of them (one fsync for
the lot); its STORED lists each item's cursor, in order, and whether the keeper already held it.
A cursor is the keeper's per-mailbox position of an item (1, 2, 3..., never reused). Decoding
is strict: a bucket length, all-zero padding, a known kind for the direction, canonical CBOR,
exact array lengths and field sizes. Anything else is a :class:`~microsync.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeVar, assert_never

from microsync import encoding
from microsync.crypto.keys import SIGNATURE_SIZE, VerifyKey
from microsync.encoding import Value, expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError, MicrosyncError
from microsync.group.mailbox import (
    CHALLENGE_SIZE,
    ID_SIZE,
    ITEM_OVERHEAD,
    ITEM_SIZES,
    ItemId,
    MailboxId,
    Proof,
    SealedItem,
)

__all__ = [
    "BATCH_BYTES",
    "BUCKETS",
    "ITEM_ROOM",
    "KEEPER_ID_SIZE",
    "MAX_BATCH",
    "MAX_DELETE",
    "MAX_MESSAGE",
    "MAX_PAGE",
    "Challenge",
    "ClientMessage",
    "Delete",
    "Deleted",
    "End",
    "Error",
    "ErrorCode",
    "Items",
    "KeeperError",
    "KeeperMessage",
    "KeeperRefused",
    "Prove",
    "Proved",
    "Pull",
    "Push",
    "Refusal",
    "Refused",
    "Stored",
    "decode",
    "encode",
]

E = TypeVar("E", bound=IntEnum)

HEADER_SIZE: Final = 4
ROOM: Final = 512
"""Framing room in every bucket: header, CBOR heads, request, cursor and item id."""
_ITEM_BUCKETS: Final = tuple(size + ITEM_OVERHEAD + ROOM for size in ITEM_SIZES)
_STEPS: Final = {m << k for k in range(13, 20) for m in (2, 3)}
BUCKETS: Final = tuple(
    sorted(
        {*_ITEM_BUCKETS}
        | {
            s
            for s in _STEPS
            if s < _ITEM_BUCKETS[-1] and min(abs(s - b) for b in _ITEM_BUCKETS) > 4096
        }
    )
)
"""One item of each padded size fits its own bucket exactly; the steps between them (2 and 3
times powers of two) keep a batch of small items from padding by more than half."""
MAX_MESSAGE: Final = BUCKETS[-1]
MAX_PAGE: Final = 256
"""The most items one PULL asks for (the keeper sends them one message each)."""
KEEPER_ID_SIZE: Final = 16
MAX_BATCH: Final = 64
"""The most items one PUSH or ITEMS carries."""
ITEM_ROOM: Final = 48
"""CBOR framing of one item inside a PUSH or ITEMS."""
BATCH_BYTES: Final = MAX_MESSAGE - ROOM
"""Sealed bytes plus ``ITEM_ROOM`` each that one batch holds at most (it fits a bucket)."""
MAX_DELETE: Final = 256
"""The most item ids one DELETE names."""
MAX_PAYLOAD: Final = ITEM_SIZES[-1] + ITEM_OVERHEAD
MAX_CURSOR: Final = 2**63 - 1


class Refusal(IntEnum):
    """Why the keeper refused one request (the connection stays open)."""

    NOT_PROVED = 1
    """The request names a mailbox not proved on this connection."""
    BAD_PROOF = 2
    MAILBOX_FULL = 3
    """The mailbox is at its quota: delete, or wait for retention to free room."""
    CONNECTION_FULL = 4
    """This connection pushed its quota of bytes: reconnect later."""
    KEEPER_FULL = 5
    """The keeper's disk (or its configured cap) is full: retry later."""
    TOO_MANY_MAILBOXES = 6
    """This connection proved its quota of mailboxes."""


class ErrorCode(IntEnum):
    """Why the keeper is about to hang up."""

    MALFORMED = 1
    TOO_MANY_FAILURES = 2
    BUSY = 3
    IDLE = 4


class KeeperRefused(MicrosyncError):
    """The keeper refused a request; ``code`` says why (a :class:`Refusal`)."""

    def __init__(self, code: Refusal) -> None:
        super().__init__(f"the keeper refused: {code.name.lower().replace('_', ' ')}")
        self.code = code


class KeeperError(MicrosyncError):
    """The keeper hung up on this connection; ``code`` says why (an :class:`ErrorCode`)."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(f"the keeper closed the connection: {code.name.lower()}")
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class Prove:
    request: int
    proof: Proof


@dataclass(frozen=True, slots=True, kw_only=True)
class Push:
    request: int
    mailbox: MailboxId
    items: tuple[SealedItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pull:
    """Up to ``limit`` items with ``after < cursor`` (and ``cursor < before`` unless ``before``
    is 0), oldest first, or newest first when ``newest_first``.

    ``wait`` (oldest first only): if there is none yet, the keeper holds the request until an
    item arrives or its live wait ends (END with ``more`` false): live delivery by long poll."""

    request: int
    mailbox: MailboxId
    after: int = 0
    before: int = 0
    newest_first: bool = False
    limit: int = MAX_PAGE
    wait: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    request: int
    mailbox: MailboxId
    items: tuple[ItemId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """The fresh per-connection ``nonce``, and the keeper's ``keeper`` id: random, made with
    its database, so a client that sees it change knows its cursors mean nothing there."""

    nonce: bytes
    keeper: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Proved:
    request: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """Each pushed item's cursor, and whether the keeper held it already, in push order."""

    request: int
    cursors: tuple[int, ...]
    duplicates: tuple[bool, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Items:
    """Some items of a PULL's page, in the order asked for (at most ``MAX_BATCH``)."""

    request: int
    cursors: tuple[int, ...]
    items: tuple[SealedItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    """The page of a PULL is complete; ``more``: items past it remain."""

    request: int
    more: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Deleted:
    request: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    request: int
    code: Refusal


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    code: ErrorCode


ClientMessage = Prove | Push | Pull | Delete
KeeperMessage = Challenge | Proved | Stored | Items | End | Deleted | Refused | Error
Message = ClientMessage | KeeperMessage


class Kind(IntEnum):
    PROVE = 1
    PUSH = 2
    PULL = 3
    DELETE = 4
    CHALLENGE = 16
    PROVED = 17
    STORED = 18
    ITEMS = 19
    END = 20
    DELETED = 21
    REFUSED = 22
    ERROR = 23


CLIENT_KINDS: Final = frozenset({Kind.PROVE, Kind.PUSH, Kind.PULL, Kind.DELETE})


def _fields(message: Message) -> tuple[Kind, list[Value]]:
    match message:
        case Prove(request=r, proof=p):
            return Kind.PROVE, [r, p.mailbox, bytes(p.key), p.signature]
        case Push(request=r, mailbox=m, items=items):
            return Kind.PUSH, [r, m, [[item.id, item.payload] for item in items]]
        case Pull(request=r, mailbox=m, after=a, before=b, newest_first=n, limit=k, wait=w):
            return Kind.PULL, [r, m, a, b, n, k, w]
        case Delete(request=r, mailbox=m, items=items):
            return Kind.DELETE, [r, m, list[Value](items)]
        case Challenge(nonce=nonce, keeper=keeper):
            return Kind.CHALLENGE, [nonce, keeper]
        case Proved(request=r):
            return Kind.PROVED, [r]
        case Stored(request=r, cursors=cursors, duplicates=duplicates):
            return Kind.STORED, [r, [[c, d] for c, d in zip(cursors, duplicates, strict=True)]]
        case Items(request=r, cursors=cursors, items=items):
            rows: list[Value] = [[c, i.id, i.payload] for c, i in zip(cursors, items, strict=True)]
            return Kind.ITEMS, [r, rows]
        case End(request=r, more=more):
            return Kind.END, [r, more]
        case Deleted(request=r, count=count):
            return Kind.DELETED, [r, count]
        case Refused(request=r, code=code):
            return Kind.REFUSED, [r, int(code)]
        case Error(code=code):
            return Kind.ERROR, [int(code)]
        case _:
            assert_never(message)


def bucket_for(length: int) -> int:
    """The smallest bucket that holds ``length`` bytes."""
    for size in BUCKETS:
        if length <= size:
            return size
    raise ValueError("message larger than the largest keeper bucket")


def encode(message: Message) -> bytes:
    """The padded wire form of ``message`` (its length is one of :data:`BUCKETS`)."""
    kind, fields = _fields(message)
    body = encoding.encode(fields)
    size = bucket_for(HEADER_SIZE + len(body))
    header = bytes((kind,)) + len(body).to_bytes(3, "big")
    return b"".join((header, body, bytes(size - HEADER_SIZE - len(body))))


def decode(data: bytes, *, from_client: bool) -> Message:
    """Strictly decode one message sent by a client (``from_client``) or by the keeper."""
    if len(data) not in BUCKETS:
        raise DecodeError("a keeper message length is not a bucket")
    end = HEADER_SIZE + int.from_bytes(data[1:HEADER_SIZE], "big")
    if end > len(data) or data.count(0, end) != len(data) - end:
        raise DecodeError("bad keeper message length or padding")
    try:
        kind = Kind(data[0])
    except ValueError:
        raise DecodeError("unknown keeper message kind") from None
    if (kind in CLIENT_KINDS) != from_client:
        raise DecodeError("keeper message kind not allowed in this direction")
    body = encoding.decode(data[HEADER_SIZE:end], max_size=MAX_MESSAGE)
    return _parse(kind, body)


def _request(value: Value) -> int:
    return expect_int(value, "request", 1, 2**32 - 1)


def _cursor(value: Value, low: int = 0) -> int:
    return expect_int(value, "cursor", low, MAX_CURSOR)


def _id(value: Value, name: str) -> bytes:
    return expect_bytes(value, name, ID_SIZE)


def _bool(value: Value, name: str) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"{name}: expected a boolean")
    return value


def _item(item_id: Value, payload: Value) -> SealedItem:
    sealed = expect_bytes(payload, "payload", max_size=MAX_PAYLOAD)
    if len(sealed) - ITEM_OVERHEAD not in ITEM_SIZES:
        raise DecodeError("an item payload is not a padded size")
    return SealedItem(id=ItemId(_id(item_id, "item")), payload=sealed)


def _parse(kind: Kind, body: Value) -> Message:
    counts = {Kind.PROVE: 4, Kind.PUSH: 3, Kind.PULL: 7, Kind.DELETE: 3, Kind.CHALLENGE: 2}
    counts |= {Kind.PROVED: 1, Kind.STORED: 2, Kind.ITEMS: 2, Kind.END: 2, Kind.DELETED: 2}
    counts |= {Kind.REFUSED: 2, Kind.ERROR: 1}
    f = expect_list(body, kind.name.lower(), counts[kind])
    if kind in CLIENT_KINDS:
        return _parse_client(kind, f)
    return _parse_keeper(kind, f)


def _parse_client(kind: Kind, f: list[Value]) -> ClientMessage:
    request, mailbox = _request(f[0]), MailboxId(_id(f[1], "mailbox"))
    match kind:
        case Kind.PROVE:
            key = VerifyKey(_id(f[2], "key"))
            signature = expect_bytes(f[3], "signature", SIGNATURE_SIZE)
            return Prove(
                request=request, proof=Proof(mailbox=mailbox, key=key, signature=signature)
            )
        case Kind.PUSH:
            pairs = expect_list(f[2], "items")
            if not 0 < len(pairs) <= MAX_BATCH:
                raise DecodeError(f"push: 1 to {MAX_BATCH} items")
            items = tuple(_item(*expect_list(pair, "item", 2)) for pair in pairs)
            return Push(request=request, mailbox=mailbox, items=items)
        case Kind.PULL:
            after, before = _cursor(f[2]), _cursor(f[3])
            newest_first = _bool(f[4], "newest_first")
            limit, wait = expect_int(f[5], "limit", 1, MAX_PAGE), _bool(f[6], "wait")
            if wait and (newest_first or before):
                raise DecodeError("pull: only an oldest-first pull with no end waits")
            return Pull(
                request=request,
                mailbox=mailbox,
                after=after,
                before=before,
                newest_first=newest_first,
                limit=limit,
                wait=wait,
            )
        case Kind.DELETE:
            ids = expect_list(f[2], "items")
            if not 0 < len(ids) <= MAX_DELETE:
                raise DecodeError(f"delete: 1 to {MAX_DELETE} item ids")
            names = tuple(ItemId(_id(i, "item")) for i in ids)
            return Delete(request=request, mailbox=mailbox, items=names)
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_keeper(kind: Kind, f: list[Value]) -> KeeperMessage:
    match kind:
        case Kind.CHALLENGE:
            nonce = expect_bytes(f[0], "nonce", CHALLENGE_SIZE)
            return Challenge(nonce=nonce, keeper=expect_bytes(f[1], "keeper", KEEPER_ID_SIZE))
        case Kind.PROVED:
            return Proved(request=_request(f[0]))
        case Kind.STORED:
            pairs = [expect_list(pair, "stored", 2) for pair in expect_list(f[1], "stored")]
            if not 0 < len(pairs) <= MAX_BATCH:
                raise DecodeError(f"stored: 1 to {MAX_BATCH} cursors")
            cursors = tuple(_cursor(c, 1) for c, _ in pairs)
            duplicates = tuple(_bool(d, "duplicate") for _, d in pairs)
            return Stored(request=_request(f[0]), cursors=cursors, duplicates=duplicates)
        case Kind.ITEMS:
            rows = [expect_list(row, "item", 3) for row in expect_list(f[1], "items")]
            if not 0 < len(rows) <= MAX_BATCH:
                raise DecodeError(f"items: 1 to {MAX_BATCH}")
            cursors = tuple(_cursor(c, 1) for c, _, _ in rows)
            items = tuple(_item(i, p) for _, i, p in rows)
            return Items(request=_request(f[0]), cursors=cursors, items=items)
        case Kind.END:
            return End(request=_request(f[0]), more=_bool(f[1], "more"))
        case Kind.DELETED:
            return Deleted(request=_request(f[0]), count=expect_int(f[1], "count", 0, MAX_DELETE))
        case Kind.REFUSED:
            return Refused(request=_request(f[0]), code=_enum(Refusal, f[1]))
        case Kind.ERROR:
            return Error(code=_enum(ErrorCode, f[0]))
    raise AssertionError("unreachable")  # pragma: no cover


def _enum(kind: type[E], value: Value) -> E:
    try:
        return kind(expect_int(value, "code", 0, 2**16))
    except ValueError:
        raise DecodeError(f"unknown {kind.__name__} code") from None
