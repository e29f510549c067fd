"""Chunked blob encryption: the STREAM construction, chunk ids and blob ids (sans-IO).

Theory of operation
-------------------
A blob of ``size`` bytes is cut into ``n = max(1, ceil(size / chunk_size))`` chunks (an empty
blob is ONE empty chunk, so even it authenticates). Chunk ``i`` is sealed as
``ChaCha20-Poly1305(blob key, nonce(i, last=(i == n - 1)), plaintext, AD=label)``
(:class:`~microsync.crypto.stream.ChunkCipher`): decrypting it at any other position, or with
the other last flag, fails. Its id is ``chunk_id = BLAKE3(id key, label || ciphertext)``, with the
id key derived from the group's epoch content key (:func:`id_key`): ids are unlinkable across
groups, and a member can check a chunk before storing it.

A blob's id binds WHO added it: ``blob_id = BLAKE3(id key, label || adder person id ||
key commitment || chunk_size || size || details || chunk ids)`` (:func:`blob_id`), so another
member who announces the same chunks, key or thumbnail makes a different blob, never a change
to this one. Chunks are stored and requested at an **address** scoped the same way,
``BLAKE3(id key, label || adder || key commitment || chunk id)`` (:func:`chunk_address`): what
one member's manifest names can never reach the chunks of another member's blob, whatever
chunk ids it copies.

:class:`BlobEncryptor` takes the plaintext in pieces of any size and releases each chunk once
it knows whether it is the last: memory stays below two chunks plus the piece being fed.
:class:`BlobDecryptor` opens chunks one by one against a manifest's ids and lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NewType

from microsync.crypto import derive_key
from microsync.crypto.labels import VAULT_CHUNK_ADDRESS, VAULT_KEY_COMMITMENT
from microsync.crypto.stream import (
    CHUNK_TAG_SIZE,
    STREAM_KEY_SIZE,
    VAULT_BLOB_ID,
    VAULT_CHUNK_ID,
    VAULT_ID_KEY,
    ChunkCipher,
    keyed_hash,
)
from microsync.errors import DecryptionError

__all__ = [
    "CHUNK_ID_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "BlobDecryptor",
    "BlobEncryptor",
    "BlobId",
    "ChunkId",
    "SealedChunk",
    "blob_id",
    "chunk_address",
    "chunk_count",
    "chunk_id",
    "chunk_length",
    "id_key",
    "key_commitment",
]

ChunkId = NewType("ChunkId", bytes)
BlobId = NewType("BlobId", bytes)

CHUNK_ID_SIZE: Final = 32
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
MIN_CHUNK_SIZE: Final = 16
MAX_CHUNK_SIZE: Final = 1024 * 1024
"""A sealed chunk must fit one sync record (``protocol.messages.MAX_RECORD_SIZE``)."""
MAX_CHUNKS: Final = 4096
"""So a manifest fits an entry body: 4 GiB at the default chunk size."""


def id_key(content_key: bytes) -> bytes:
    """The key chunk and blob ids are computed under, from a group epoch's content key."""
    return derive_key(VAULT_ID_KEY, content_key)


def chunk_id(key: bytes, sealed: bytes) -> ChunkId:
    """The address of a sealed chunk (``key``: :func:`id_key`)."""
    return ChunkId(keyed_hash(key, VAULT_CHUNK_ID, sealed))


def key_commitment(key: bytes) -> bytes:
    """A commitment to a blob key that reveals nothing of it (BLAKE3 keyed BY the blob key)."""
    return keyed_hash(key, VAULT_KEY_COMMITMENT)


def blob_id(
    key: bytes,
    *,
    adder: bytes,
    commitment: bytes,
    chunk_size: int,
    size: int,
    details: bytes,
    ids: Sequence[bytes],
) -> BlobId:
    """The id of a blob (``key``: :func:`id_key`). It binds the adder's 32-byte person id, the
    :func:`key_commitment` of the blob key, the chunk size, the plaintext size, a 32-byte
    digest of the ``details`` (the manifest's name, type and thumbnail) and the chunk ids in
    order: one id names one manifest announced by one person."""
    if len(adder) != 32 or len(commitment) != 32 or len(details) != 32:
        raise ValueError("adder, commitment and details are 32 bytes each")
    head = chunk_size.to_bytes(8, "big") + size.to_bytes(8, "big")
    return BlobId(keyed_hash(key, VAULT_BLOB_ID, adder, commitment, head, details, *ids))


def chunk_address(key: bytes, adder: bytes, commitment: bytes, chunk: bytes) -> ChunkId:
    """Where chunk ``chunk`` of the blob ``(adder, commitment)`` is stored and asked for
    (``key``: :func:`id_key`). Two people's blobs never share an address, even if one copies
    the other's chunk ids into his manifest."""
    return ChunkId(keyed_hash(key, VAULT_CHUNK_ADDRESS, adder, commitment, chunk))


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a blob of ``size`` bytes has (at least one)."""
    return max(1, -(-size // chunk_size))


def chunk_length(size: int, chunk_size: int, index: int) -> int:
    """The plaintext length of chunk ``index``."""
    return min(chunk_size, size - index * chunk_size)


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """One encrypted chunk, ready to store or send."""

    index: int
    id: ChunkId
    data: bytes


class BlobEncryptor:
    """Seal a blob incrementally: :meth:`update` with pieces, then :meth:`finish`."""

    def __repr__(self) -> str:
        return f"BlobEncryptor(chunk_size={self.chunk_size}, size={self.size})"

    def __init__(self, key: bytes, ids_key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        _check_chunk_size(chunk_size)
        if len(key) != STREAM_KEY_SIZE:
            raise ValueError("a blob key is 32 bytes")
        self.key = key
        self.chunk_size = chunk_size
        self.size = 0
        self.ids: list[ChunkId] = []
        self._cipher = ChunkCipher(key)
        self._ids_key = ids_key
        self._pending = bytearray()
        self._finished = False

    def update(self, data: bytes) -> list[SealedChunk]:
        """Feed plaintext; return the chunks now known not to be the last."""
        if self._finished:
            raise ValueError("the blob was already finished")
        self._pending += data
        self.size += len(data)
        out = []
        cs = self.chunk_size
        start = 0
        while len(self._pending) - start > cs:
            out.append(self._seal(bytes(self._pending[start : start + cs]), last=False))
            start += cs
        if start:
            del self._pending[:start]
        if len(self.ids) > MAX_CHUNKS:
            raise ValueError(f"a blob has at most {MAX_CHUNKS} chunks")
        return out

    def finish(self) -> SealedChunk:
        """Seal the final chunk (possibly empty)."""
        if self._finished:
            raise ValueError("the blob was already finished")
        self._finished = True
        sealed = self._seal(bytes(self._pending), last=True)
        self._pending = bytearray()
        if len(self.ids) > MAX_CHUNKS:
            raise ValueError(f"a blob has at most {MAX_CHUNKS} chunks")
        return sealed

    def _seal(self, plaintext: bytes, *, last: bool) -> SealedChunk:
        index = len(self.ids)
        data = self._cipher.encrypt(index, last, plaintext)
        cid = chunk_id(self._ids_key, data)
        self.ids.append(cid)
        return SealedChunk(index, cid, data)


class BlobDecryptor:
    """Open the chunks of one blob, each checked against its expected id and length."""

    def __init__(
        self, key: bytes, ids_key: bytes, chunk_size: int, size: int, ids: Sequence[ChunkId]
    ) -> None:
        _check_chunk_size(chunk_size)
        if len(ids) != chunk_count(size, chunk_size):
            raise ValueError("the chunk ids do not match the blob size")
        self._cipher = ChunkCipher(key)
        self._ids_key = ids_key
        self.chunk_size = chunk_size
        self.size = size
        self.ids = tuple(ids)

    def verify(self, index: int, sealed: bytes) -> bool:
        """Is ``sealed`` the chunk at ``index`` (its id and length)? Cheap: no decryption."""
        expected = chunk_length(self.size, self.chunk_size, index) + CHUNK_TAG_SIZE
        return len(sealed) == expected and chunk_id(self._ids_key, sealed) == self.ids[index]

    def matches(self, index: int, plaintext: bytes) -> bool:
        """Is ``plaintext`` chunk ``index`` of this blob? It is sealed again (the construction
        is deterministic for a given key and position) and its id compared: how a partly
        written file is checked before a fetch resumes into it."""
        if not 0 <= index < len(self.ids):
            return False
        if len(plaintext) != chunk_length(self.size, self.chunk_size, index):
            return False
        sealed = self._cipher.encrypt(index, index == len(self.ids) - 1, plaintext)
        return chunk_id(self._ids_key, sealed) == self.ids[index]

    def open(self, index: int, sealed: bytes) -> bytes:
        """The plaintext of chunk ``index``; :class:`DecryptionError` for anything else."""
        if not 0 <= index < len(self.ids) or not self.verify(index, sealed):
            raise DecryptionError()
        last = index == len(self.ids) - 1
        return self._cipher.decrypt(index, last, sealed)


def open_stream(key: bytes, sealed: Sequence[bytes]) -> bytes:
    """Decrypt a whole STREAM sequence with no manifest (known-answer tests, tools): every chunk
    at its position, the last one flagged, nothing after it. :class:`DecryptionError` if the
    sequence was truncated, reordered, spliced or extended."""
    cipher = ChunkCipher(key)
    if not sealed:
        raise DecryptionError()
    parts = [cipher.decrypt(i, i == len(sealed) - 1, c) for i, c in enumerate(sealed)]
    return b"".join(parts)
