"""The vault-chunk methods of :class:`~microsync.storage.sqlite.SqliteStore`
(:class:`~microsync.blobs.store.ChunkStore`): files beside the database, kept by
:mod:`microsync.storage.chunk_files`. A mixin, split out to keep ``sqlite.py`` within size."""

from __future__ import annotations

from collections.abc import Iterable

from microsync.blobs.chunks import ChunkId
from microsync.feed.entry import GroupId
from microsync.storage.chunk_files import ChunkFiles

__all__ = ["ChunkMethods"]


class ChunkMethods:
    """Delegates to ``self._chunks``, each after ``self._check_usable()``."""

    _chunks: ChunkFiles

    def _check_usable(self) -> None:
        raise NotImplementedError

    def put_chunk(
        self, group: GroupId, chunk: ChunkId, data: bytes, *, durable: bool = True
    ) -> None:
        self._check_usable()
        self._chunks.put(group, chunk, data, durable=durable)

    def get_chunk(self, group: GroupId, chunk: ChunkId) -> bytes | None:
        self._check_usable()
        return self._chunks.get(group, chunk)

    def has_chunk(self, group: GroupId, chunk: ChunkId) -> bool:
        self._check_usable()
        return self._chunks.has(group, chunk)

    def delete_chunks(self, group: GroupId, chunks: Iterable[ChunkId]) -> int:
        self._check_usable()
        return self._chunks.delete(group, chunks)

    def chunk_usage(self, group: GroupId) -> tuple[int, int]:
        self._check_usable()
        return self._chunks.usage(group)
