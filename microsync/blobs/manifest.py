"""The manifest of a vault blob and the vault's feed operations, with a strict codec.

A vault operation is the plaintext of a feed entry of type :data:`VAULT_TYPE`, encrypted under
the group's epoch key like any content. It is canonical CBOR ``[version, kind, payload]``:

* ``ADD``: ``payload = [key, chunk_size, size, epoch, ids, name, mime, thumbnail]`` where
  ``ids`` is the concatenation of the 32-byte chunk ids and ``thumbnail`` is ``null`` or a
  small image (at most :data:`MAX_THUMBNAIL` bytes);
* ``REMOVE``: ``payload = blob id`` (delete for everyone: every device purges its chunks).

Decoding checks every size and count (:class:`~microsync.errors.DecodeError`), that the chunk
count matches the size, and that the bytes are canonical: ``decode(encode(x)) == x`` and a
decoded op re-encodes to the same bytes. ``epoch`` names the group epoch whose content key
the ids are computed under.

A manifest does not carry its blob id: every reader computes it (:meth:`Manifest.blob_id`)
from the manifest and the person whose signed entry announced it, so no announcement can name
another person's blob.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.blobs.chunks import (
    CHUNK_ID_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MIN_CHUNK_SIZE,
    BlobId,
    ChunkId,
    blob_id,
    chunk_address,
    chunk_count,
    key_commitment,
)
from microsync.crypto.labels import VAULT_BLOB_DETAILS
from microsync.crypto.stream import keyed_hash
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError

__all__ = [
    "MAX_MIME",
    "MAX_NAME",
    "MAX_THUMBNAIL",
    "VAULT_TYPE",
    "Manifest",
    "VaultKind",
    "VaultOp",
]

VAULT_TYPE: Final = 3
"""Feed entry type of vault operations (membership is 1, app operations 2)."""

VERSION: Final = 1
MAX_NAME: Final = 255
MAX_MIME: Final = 255
MAX_THUMBNAIL: Final = 48 * 1024
MAX_SIZE: Final = MAX_CHUNKS * MAX_CHUNK_SIZE
_MAX_OP: Final = MAX_CHUNKS * CHUNK_ID_SIZE + MAX_THUMBNAIL + 4096


class VaultKind(enum.IntEnum):
    ADD = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a member needs to fetch and open a blob. ``key`` is secret: never printed."""

    key: bytes
    chunk_size: int
    size: int
    epoch: int
    ids: tuple[ChunkId, ...]
    name: str
    mime: str
    thumbnail: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"Manifest(name={self.name!r}, mime={self.mime!r}, size={self.size}, "
            f"chunks={len(self.ids)}, epoch={self.epoch})"
        )

    @property
    def commitment(self) -> bytes:
        """The commitment to :attr:`key` the blob id binds."""
        return key_commitment(self.key)

    def details(self, ids_key: bytes) -> bytes:
        """A digest of the name, media type and thumbnail (bound into the blob id)."""
        return keyed_hash(
            ids_key, VAULT_BLOB_DETAILS, encoding.encode([self.name, self.mime, self.thumbnail])
        )

    def blob_id(self, ids_key: bytes, adder: bytes) -> BlobId:
        """The id of this blob as announced by the person ``adder`` (``ids_key``: the id key
        of :attr:`epoch`)."""
        return blob_id(
            ids_key,
            adder=adder,
            commitment=self.commitment,
            chunk_size=self.chunk_size,
            size=self.size,
            details=self.details(ids_key),
            ids=self.ids,
        )

    def addresses(self, ids_key: bytes, adder: bytes) -> tuple[ChunkId, ...]:
        """Where this blob's chunks are stored and asked for, in order."""
        commitment = self.commitment
        return tuple(chunk_address(ids_key, adder, commitment, c) for c in self.ids)

    def to_value(self) -> list[Value]:
        return [
            self.key,
            self.chunk_size,
            self.size,
            self.epoch,
            b"".join(self.ids),
            self.name,
            self.mime,
            self.thumbnail,
        ]

    @classmethod
    def from_value(cls, value: Value) -> Manifest:
        key, cs, size, epoch, ids, name, mime, thumb = expect_list(value, "manifest", 8)
        chunk_size = expect_int(cs, "chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        total = expect_int(size, "size", 0, MAX_SIZE)
        raw = expect_bytes(ids, "ids", max_size=MAX_CHUNKS * CHUNK_ID_SIZE)
        if len(raw) != chunk_count(total, chunk_size) * CHUNK_ID_SIZE:
            raise DecodeError("manifest: chunk ids do not match the size")
        return cls(
            key=expect_bytes(key, "key", 32),
            chunk_size=chunk_size,
            size=total,
            epoch=expect_int(epoch, "epoch"),
            ids=tuple(ChunkId(raw[i : i + CHUNK_ID_SIZE]) for i in range(0, len(raw), 32)),
            name=expect_str(name, "name", MAX_NAME),
            mime=expect_str(mime, "mime", MAX_MIME),
            thumbnail=None
            if thumb is None
            else expect_bytes(thumb, "thumbnail", None, MAX_THUMBNAIL),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultOp:
    """One vault operation: ``manifest`` for ADD, ``blob`` for REMOVE."""

    kind: VaultKind
    manifest: Manifest | None = None
    blob: BlobId | None = None

    def to_bytes(self) -> bytes:
        payload: Value
        if self.kind is VaultKind.ADD:
            if self.manifest is None or self.blob is not None:
                raise ValueError("an ADD carries a manifest only")
            payload = self.manifest.to_value()
        else:
            if self.blob is None or len(self.blob) != 32 or self.manifest is not None:
                raise ValueError("a REMOVE carries a 32-byte blob id only")
            payload = self.blob
        return encoding.encode([VERSION, int(self.kind), payload])

    @classmethod
    def from_bytes(cls, data: bytes) -> VaultOp:
        version, kind, payload = expect_list(encoding.decode(data, max_size=_MAX_OP), "op", 3)
        if expect_int(version, "version") != VERSION:
            raise DecodeError("vault op: unknown version")
        try:
            parsed = VaultKind(expect_int(kind, "kind"))
        except ValueError:
            raise DecodeError("vault op: unknown kind") from None
        if parsed is VaultKind.ADD:
            return cls(kind=parsed, manifest=Manifest.from_value(payload))
        return cls(kind=parsed, blob=BlobId(expect_bytes(payload, "blob", 32)))
