"""Reading a file into the vault: slices, checked limits, a guessed media type."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from pathlib import Path

from microsync.blobs import MAX_CHUNK_SIZE, MAX_CHUNKS, MIN_CHUNK_SIZE, chunk_count
from microsync.blobs.manifest import MAX_MIME, MAX_NAME, MAX_THUMBNAIL

__all__ = ["check_limits", "guess_mime", "read_pieces", "slices"]


def slices(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes."""
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def read_pieces(path: Path, size: int) -> Iterator[bytes]:
    """The file at ``path``, read ``size`` bytes at a time (streamed)."""
    with open(path, "rb") as file:
        while piece := file.read(size):
            yield piece


def check_limits(name: str, mime: str, thumbnail: bytes | None, size: int, chunk_size: int) -> None:
    """``ValueError`` unless such a file fits a manifest (checked before any chunk is made)."""
    if len(name) > MAX_NAME or len(mime) > MAX_MIME:
        raise ValueError(f"a name or media type is at most {MAX_NAME} characters")
    if thumbnail is not None and len(thumbnail) > MAX_THUMBNAIL:
        raise ValueError(f"a thumbnail is at most {MAX_THUMBNAIL} bytes")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
    if chunk_count(size, chunk_size) > MAX_CHUNKS:
        raise ValueError(f"a file is at most {MAX_CHUNKS} chunks ({MAX_CHUNKS * chunk_size} bytes)")


def guess_mime(name: str) -> str:
    """The media type a file name suggests (``application/octet-stream`` if none)."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
