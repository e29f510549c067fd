"""Feed entries: a signed header plus a separately stored body.

Wire form of an entry::

    entry = header_bytes || signature          (signature: 64 bytes, always last)
    header_bytes = canonical CBOR array
        [v, group, device, seq, prev, epoch, type, hlc, deps, body_hash, body_len]
    signature = Ed25519(device key, frame("microsync/v1/entry") || header_bytes)
    id        = BLAKE2b-256(frame("microsync/v1/entry-id") || header_bytes || signature)
    body_hash = BLAKE2b-256(frame("microsync/v1/body-hash") || body)

The body is stored apart from the header, so deleting it later (delete-for-everyone, expiry)
leaves the chain verifiable: ``body_hash`` and ``body_len`` stay in the signed header.
What the body contains (ciphertext under an epoch key) is decided by the layers above.

``docs/feeds.md`` documents every field byte by byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NewType, cast

from microsync import encoding
from microsync.crypto import SIGNATURE_SIZE, SigningKey, VerifyKey, labelled_hash, labels
from microsync.encoding import expect_bytes, expect_int, expect_list, expect_optional_bytes
from microsync.errors import DecodeError, Oversize, UnknownVersion
from microsync.identity import DeviceId

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_DEPS",
    "MAX_ENTRY_SIZE",
    "MAX_HLC",
    "Entry",
    "EntryId",
    "GroupId",
    "Header",
    "body_hash",
    "feed_position",
    "parse_entry",
    "sign_entry",
]

GroupId = NewType("GroupId", bytes)
EntryId = NewType("EntryId", bytes)

VERSION: Final = 1
MAX_DEPS: Final = 64
MAX_ENTRY_SIZE: Final = 4096
MAX_BODY_SIZE: Final = 256 * 1024
MAX_TYPE: Final = 0xFFFF
MAX_HLC: Final = 2**63 - 1
"""The largest ``hlc`` a header decodes with (every header integer is signed 64-bit at most, as
SQLite stores it); an author never signs a larger one (``GroupReplica._append``)."""
_ID = 32
_HEADER_FIELDS = 11


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The signed part of an entry. ``prev`` is ``None`` exactly when ``seq == 1``."""

    group: GroupId
    device: DeviceId
    seq: int
    prev: EntryId | None
    epoch: int
    type: int
    hlc: int
    deps: tuple[EntryId, ...]
    body_hash: bytes
    body_len: int
    v: int = VERSION

    def to_bytes(self) -> bytes:
        """The canonical encoding: the bytes the device signs."""
        return encoding.encode(
            [
                self.v,
                self.group,
                self.device,
                self.seq,
                self.prev,
                self.epoch,
                self.type,
                self.hlc,
                list(self.deps),
                self.body_hash,
                self.body_len,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """Decode strictly; :class:`DecodeError` / :class:`UnknownVersion` on bad input.

        The header is fixed-shape, so :func:`_parse_fast` reads the common case directly. It
        never rejects: whatever it does not fully recognise goes to the generic strict decoder
        (:meth:`_from_bytes_strict`), which alone decides every error, so both paths accept
        the same bytes and give the same header (``tests/test_feed_fast_parse.py``).
        """
        if type(data) is bytes:
            header = _parse_fast(data)
            if header is not None:
                return header
        return cls._from_bytes_strict(data)

    @classmethod
    def _from_bytes_strict(cls, data: bytes) -> Header:
        """The generic path: strict canonical CBOR decoding, then a type check per field."""
        items = expect_list(encoding.decode(data, max_size=MAX_ENTRY_SIZE), "header")
        if items and type(items[0]) is int and items[0] != VERSION:
            raise UnknownVersion(f"entry version {items[0]} is not supported")
        if len(items) != _HEADER_FIELDS:
            raise DecodeError(f"header: expected {_HEADER_FIELDS} fields, got {len(items)}")
        v, group, device, seq, prev, epoch, kind, hlc, deps, digest, body_len = items
        return cls(
            v=expect_int(v, "v"),
            group=GroupId(expect_bytes(group, "group", _ID)),
            device=DeviceId(expect_bytes(device, "device", _ID)),
            seq=expect_int(seq, "seq", 1),
            prev=_optional_id(prev),
            epoch=expect_int(epoch, "epoch"),
            type=expect_int(kind, "type", 0, MAX_TYPE),
            hlc=expect_int(hlc, "hlc"),
            deps=_deps(deps),
            body_hash=expect_bytes(digest, "body_hash", _ID),
            body_len=expect_int(body_len, "body_len"),
        )


def _optional_id(value: encoding.Value) -> EntryId | None:
    found = expect_optional_bytes(value, "prev", _ID)
    return None if found is None else EntryId(found)


def _deps(value: encoding.Value) -> tuple[EntryId, ...]:
    items = expect_list(value, "deps")
    if len(items) > MAX_DEPS:
        raise DecodeError(f"deps: more than {MAX_DEPS}")
    return tuple(EntryId(expect_bytes(item, "dep", _ID)) for item in items)


# The fast path of Header.from_bytes: canonical CBOR read byte by byte for the one shape a
# header has. Each helper returns the value and the next offset, or None for anything it does
# not recognise (the strict decoder then runs and reports the error, if there is one).
_MAX_UINT: Final = 2**63 - 1  # the bound expect_int applies to every header integer


def _uint(data: bytes, pos: int) -> tuple[int, int] | None:
    """A canonical CBOR unsigned integer (major type 0, shortest head) at ``pos``."""
    head = data[pos]
    if head < 0x18:
        return head, pos + 1
    if head == 0x18:
        value, end = data[pos + 1], pos + 2
        return (value, end) if value >= 0x18 else None
    size = _UINT_SIZES.get(head)
    end = pos + 1 + size if size is not None else 0
    if size is None or end > len(data):
        return None
    value = int.from_bytes(data[pos + 1 : end], "big")
    return (value, end) if value >> (4 * size) and value <= _MAX_UINT else None


# head byte -> length of the integer that follows; a shorter head must not have sufficed, so
# the value must use its upper half: 2 bytes >= 2**8, 4 bytes >= 2**16, 8 bytes >= 2**32
_UINT_SIZES: Final = {0x19: 2, 0x1A: 4, 0x1B: 8}


def _id32(data: bytes, pos: int) -> bytes | None:
    """A 32-byte byte string (head ``58 20``) at ``pos``."""
    if data[pos] != 0x58 or data[pos + 1] != _ID or pos + 2 + _ID > len(data):
        return None
    return data[pos + 2 : pos + 2 + _ID]


def feed_position(header: bytes) -> tuple[DeviceId, int]:
    """``(device, seq)`` of an entry's header bytes, reading only those two fields when the
    header has the plain canonical shape (a few bytes in, no hashing); the full strict parse
    otherwise (:class:`DecodeError` for malformed bytes). For bookkeeping only: it checks
    nothing an entry must satisfy."""
    try:
        if header[0] == 0x8B and header[1] == VERSION:
            device = _id32(header, 36)
            found = _uint(header, 70)
            if device is not None and found is not None and found[0] >= 1:
                return DeviceId(device), found[0]
    except IndexError:
        pass
    parsed = Header.from_bytes(header)
    return parsed.device, parsed.seq


def _parse_fast(data: bytes) -> Header | None:
    """The header in ``data`` if it has the plain canonical shape, else ``None``.

    Written out in one function (the one-byte integers and the 32-byte ids read in place, a
    call only for a longer integer): it runs once per entry received."""
    try:
        # No size check needed: this shape (at most MAX_DEPS deps) is under 2.5 KiB, below
        # MAX_ENTRY_SIZE, and the last field must end exactly at the end of ``data``.
        if data[:2] != _HEAD or data[2:4] != _ID_HEAD or data[36:38] != _ID_HEAD:
            return None
        head = data[70]
        if head < 0x18:
            seq, pos = head, 71
        else:
            found = _uint(data, 70)
            if found is None:
                return None
            seq, pos = found
        if seq < 1:
            return None
        if data[pos] == 0xF6:  # null
            prev, pos = None, pos + 1
        elif data[pos : pos + 2] == _ID_HEAD:
            prev, pos = EntryId(data[pos + 2 : pos + 34]), pos + 34
        else:
            return None
        numbers: list[int] = []
        for _ in range(3):  # epoch, type, hlc
            head = data[pos]
            if head < 0x18:
                numbers.append(head)
                pos += 1
                continue
            found = _uint(data, pos)
            if found is None:
                return None
            numbers.append(found[0])
            pos = found[1]
        epoch, kind, hlc = numbers
        count = data[pos] - 0x80  # fewer than 24 items: the count is in the head byte
        if count == 0x18:  # 24..MAX_DEPS items: 0x98 and a one-byte count (canonical: >= 24)
            count, pos = data[pos + 1], pos + 1
            if not 0x18 <= count <= MAX_DEPS:
                return None
        elif not 0 <= count < 0x18:
            return None
        if kind > MAX_TYPE:
            return None
        pos += 1
        end = pos + 34 * count  # each dep: 58 20 and 32 bytes; every head checked in one go
        if data[pos:end:34] != _DEP_MARKS[count] or data[pos + 1 : end : 34] != _DEP_SIZES[count]:
            return None
        deps = cast(list[EntryId], [data[at + 2 : at + 34] for at in range(pos, end, 34)])
        pos = end
        if data[pos : pos + 2] != _ID_HEAD:
            return None
        digest, pos = data[pos + 2 : pos + 34], pos + 34
        head = data[pos]
        found = (head, pos + 1) if head < 0x18 else _uint(data, pos)
        if found is None or found[1] != len(data) or len(digest) != _ID:
            return None
    except IndexError:  # ran off the end: truncated, let the strict decoder say so
        return None
    return Header(
        group=GroupId(data[4:36]),
        device=DeviceId(data[38:70]),
        seq=seq,
        prev=prev,
        epoch=epoch,
        type=kind,
        hlc=hlc,
        deps=tuple(deps),
        body_hash=digest,
        body_len=found[0],
        v=VERSION,
    )


_HEAD: Final = bytes([0x8B, VERSION])  # an array of 11 items, then the version
_ID_HEAD: Final = bytes([0x58, _ID])  # a byte string of 32 bytes follows
_DEP_MARKS: Final = [bytes([0x58]) * n for n in range(MAX_DEPS + 1)]  # n deps' first bytes
_DEP_SIZES: Final = [bytes([_ID]) * n for n in range(MAX_DEPS + 1)]  # and second bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A decoded entry. Parsing checks the encoding, not the signature (see ``validate``)."""

    header: Header
    header_bytes: bytes
    signature: bytes
    id: EntryId

    @property
    def wire(self) -> bytes:
        """The bytes that travel and are stored: ``header_bytes || signature``."""
        return self.header_bytes + self.signature

    def verify_signature(self) -> None:
        """Raise :class:`~microsync.errors.BadSignature` unless the device signed the header."""
        VerifyKey(self.header.device).verify(
            labels.ENTRY_SIGNATURE, self.header_bytes, self.signature
        )

    def __repr__(self) -> str:
        h = self.header
        return f"Entry(id={self.id[:8].hex()}, device={h.device[:8].hex()}, seq={h.seq})"


def entry_id(header_bytes: bytes, signature: bytes) -> EntryId:
    return EntryId(labelled_hash(labels.ENTRY_ID, header_bytes, signature))


def body_hash(body: bytes) -> bytes:
    """The hash a header commits to for ``body``."""
    return labelled_hash(labels.BODY_HASH, body)


def parse_entry(wire: bytes) -> Entry:
    """Split and decode an entry's wire bytes. Raises ``Oversize`` / ``DecodeError`` /
    ``UnknownVersion``; never checks the signature."""
    if len(wire) > MAX_ENTRY_SIZE + SIGNATURE_SIZE:
        raise Oversize(f"entry is {len(wire)} bytes, over {MAX_ENTRY_SIZE + SIGNATURE_SIZE}")
    if len(wire) <= SIGNATURE_SIZE:
        raise DecodeError("entry is too short")
    header_bytes, signature = bytes(wire[:-SIGNATURE_SIZE]), bytes(wire[-SIGNATURE_SIZE:])
    header = Header.from_bytes(header_bytes)
    if header.body_len > MAX_BODY_SIZE:
        raise Oversize(f"body_len {header.body_len} is over {MAX_BODY_SIZE}")
    return Entry(
        header=header,
        header_bytes=header_bytes,
        signature=signature,
        id=entry_id(header_bytes, signature),
    )


def sign_entry(key: SigningKey, header: Header) -> Entry:
    """Sign ``header`` with the device key; the header's ``device`` must be that key."""
    if header.device != bytes(key.public):
        raise ValueError("the header names another device")
    header_bytes = header.to_bytes()
    if len(header_bytes) > MAX_ENTRY_SIZE:
        raise Oversize("header is over the entry size limit")
    signature = key.sign(labels.ENTRY_SIGNATURE, header_bytes)
    return Entry(
        header=header,
        header_bytes=header_bytes,
        signature=signature,
        id=entry_id(header_bytes, signature),
    )
