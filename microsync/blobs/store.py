"""The chunk storage port: where a device keeps the sealed chunks it holds.

Chunks are keyed by ``(group, chunk id)`` and hold ciphertext only. Writes are atomic per chunk
(a chunk is wholly there or absent) but not part of the profile's entry transactions: a chunk
is a cache of bytes that its manifest entry authenticates, so losing one costs a re-fetch and
never consistency. Adapters: ``MemoryStore`` (a dict) and ``SqliteStore`` (one file per chunk
under the profile directory, written to a temporary name and renamed into place).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from microsync.blobs.chunks import ChunkId
from microsync.feed.entry import GroupId

__all__ = ["ChunkStore"]


@runtime_checkable
class ChunkStore(Protocol):
    def put_chunk(
        self, group: GroupId, chunk: ChunkId, data: bytes, *, durable: bool = True
    ) -> None:
        """Keep ``data`` as chunk ``chunk`` of ``group`` (replacing any copy atomically).
        ``durable=False`` skips the flush to disk: for a fetched chunk, which is verified
        whenever it is read and fetched again if a crash lost it."""
        ...

    def get_chunk(self, group: GroupId, chunk: ChunkId) -> bytes | None:
        """The chunk's bytes, or ``None`` if this device does not hold it."""
        ...

    def has_chunk(self, group: GroupId, chunk: ChunkId) -> bool: ...

    def delete_chunks(self, group: GroupId, chunks: Iterable[ChunkId]) -> int:
        """Forget these chunks (absent ones are skipped); return how many were deleted."""
        ...

    def chunk_usage(self, group: GroupId) -> tuple[int, int]:
        """(chunks held, bytes held) for ``group``."""
        ...
