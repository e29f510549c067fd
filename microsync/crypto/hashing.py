"""Labelled hashing and key derivation (BLAKE2b through hashlib: ~0.5 µs for small inputs)."""

from __future__ import annotations

import hashlib

from microsync.crypto.labels import Label, frame

__all__ = ["HASH_SIZE", "derive_key", "labelled_hash"]

HASH_SIZE = 32


def labelled_hash(label: Label, *parts: bytes) -> bytes:
    """BLAKE2b-256 of ``frame(label) || parts...``.

    Parts are concatenated as given: callers that hash several variable-length parts must make
    the split unambiguous themselves (for example by hashing one canonical encoding).
    """
    digest = hashlib.blake2b(frame(label), digest_size=HASH_SIZE)
    for part in parts:
        digest.update(part)
    return digest.digest()


def derive_key(label: Label, key: bytes, context: bytes = b"") -> bytes:
    """A 32-byte key derived from ``key`` for one purpose: keyed BLAKE2b (a PRF) over the label."""
    if not 16 <= len(key) <= 64:
        raise ValueError("derive_key needs a key of 16 to 64 bytes")
    return hashlib.blake2b(frame(label) + context, key=key, digest_size=HASH_SIZE).digest()
