"""Feed entries: a signed header plus a separately stored body (DESIGN 3).

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
from typing import Final, NewType

from microsync import encoding
from microsync.crypto import SIGNATURE_SIZE, SigningKey, VerifyKey, labelled_hash, labels
from microsync.encoding import expect_bytes, expect_int, expect_list, expect_optional_bytes
from microsync.errors import DecodeError, Oversize, UnknownVersion
from microsync.identity import DeviceId

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_DEPS",
    "MAX_ENTRY_SIZE",
    "Entry",
    "EntryId",
    "GroupId",
    "Header",
    "body_hash",
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
        """Decode strictly; :class:`DecodeError` / :class:`UnknownVersion` on bad input."""
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
