"""Vault chunks as files beside a profile's database (``<profile>/chunks/<group hex>/<chunk
id hex>``), for :class:`~microsync.storage.sqlite.SqliteStore`.

Why files: a 1 GiB blob written once (no WAL copy then checkpoint copy), read and purged by
plain file operations (an unlink leaves no copy in a log or a free page), and the database
stays small. Each write goes to a temporary name, is flushed and fsynced (unless the caller
says the chunk is a re-fetchable cache), then renamed into place. Every chunk is checked
against its keyed id whenever it is read (by the vault, above), so a torn one is never used.
Directories are ``0700`` and files ``0600``, like the rest of the profile.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Final

from microsync.blobs.chunks import ChunkId
from microsync.errors import StorageError
from microsync.feed.entry import GroupId
from microsync.storage.profile_dir import PRIVATE_DIR, private_opener

__all__ = ["CHUNKS_DIR", "ChunkFiles"]

CHUNKS_DIR: Final = "chunks"  # vault chunks: <profile>/chunks/<group hex>/<chunk id hex>


class ChunkFiles:
    """The chunk files under ``<directory>/chunks``; every OS failure is a StorageError."""

    def __init__(self, directory: Path) -> None:
        self.root = directory / CHUNKS_DIR

    def _path(self, group: GroupId, chunk: ChunkId) -> Path:
        if len(chunk) != 32:
            raise ValueError("a chunk id is 32 bytes")
        return self.root / bytes(group).hex() / bytes(chunk).hex()

    def put(self, group: GroupId, chunk: ChunkId, data: bytes, *, durable: bool = True) -> None:
        path = self._path(group, chunk)
        temp = path.with_name(path.name + ".tmp")
        try:
            path.parent.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
            path.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
            with open(temp, "wb", opener=private_opener) as file:
                file.write(data)
                if durable:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temp, path)
        except OSError as error:
            with suppress(OSError):
                temp.unlink()
            raise StorageError(f"cannot store a vault chunk: {error.strerror}") from error

    def get(self, group: GroupId, chunk: ChunkId) -> bytes | None:
        try:
            return self._path(group, chunk).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StorageError(f"cannot read a vault chunk: {error.strerror}") from error

    def has(self, group: GroupId, chunk: ChunkId) -> bool:
        return self._path(group, chunk).is_file()

    def delete(self, group: GroupId, chunks: Iterable[ChunkId]) -> int:
        """Delete the chunks held (of ``chunks``); how many there were."""
        deleted = 0
        for chunk in chunks:
            try:
                self._path(group, chunk).unlink()
                deleted += 1
            except FileNotFoundError:
                continue
            except OSError as error:
                raise StorageError(f"cannot delete a vault chunk: {error.strerror}") from error
        return deleted

    def usage(self, group: GroupId) -> tuple[int, int]:
        """How many chunks of ``group`` are held, and their bytes."""
        count = size = 0
        with suppress(FileNotFoundError):
            for entry in os.scandir(self.root / bytes(group).hex()):
                if len(entry.name) == 64 and entry.is_file():
                    count += 1
                    size += entry.stat().st_size
        return count, size
