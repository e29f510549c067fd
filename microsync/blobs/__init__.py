"""The vault's sans-IO core: chunked STREAM encryption, keyed chunk and blob ids, manifests,
the vault fold, and the chunk storage port. The I/O side is :mod:`microsync.node.vault`;
``docs/vault.md`` has the format."""

from microsync.blobs.chunks import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MIN_CHUNK_SIZE,
    BlobDecryptor,
    BlobEncryptor,
    BlobId,
    ChunkId,
    SealedChunk,
    blob_id,
    chunk_address,
    chunk_count,
    chunk_id,
    chunk_length,
    id_key,
    key_commitment,
    open_stream,
)
from microsync.blobs.index import BlobRef, Purge, Quota, Refusal, VaultIndex
from microsync.blobs.manifest import VAULT_TYPE, Manifest, VaultKind, VaultOp
from microsync.blobs.store import ChunkStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "VAULT_TYPE",
    "BlobDecryptor",
    "BlobEncryptor",
    "BlobId",
    "BlobRef",
    "ChunkId",
    "ChunkStore",
    "Manifest",
    "Purge",
    "Quota",
    "Refusal",
    "SealedChunk",
    "VaultIndex",
    "VaultKind",
    "VaultOp",
    "blob_id",
    "chunk_address",
    "chunk_count",
    "chunk_id",
    "chunk_length",
    "id_key",
    "key_commitment",
    "open_stream",
]
