"""Shared fixtures: deterministic randomness, identities and a store of each kind."""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from microsync.identity import LocalIdentity
from microsync.storage.base import Store
from microsync.storage.memory import MemoryStore

# Test processes and every command-line peer a test starts run as an installed copy does,
# with the package's bytecode cached (pip writes it at install). Where the machine sets
# PYTHONDONTWRITEBYTECODE (this one does), each subprocess compiled the whole package from
# source first, 0.6-0.7 s per command, most of the command-line tests' time.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def make_rng(seed: bytes | str = b"microsync-tests") -> Callable[[int], bytes]:
    """A deterministic byte source: BLAKE2b in counter mode over ``seed``."""
    seed_bytes = seed.encode() if isinstance(seed, str) else seed
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.blake2b(seed_bytes + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def make_identity(name: str, seed: bytes | str | None = None) -> LocalIdentity:
    return LocalIdentity.create(
        name, make_rng(seed if seed is not None else name), 1_700_000_000_000
    )


def open_store(kind: str, path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    from microsync.storage.sqlite import SqliteStore

    return SqliteStore.open(path)


STORE_KINDS = ["memory", "sqlite"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(store_kind, tmp_path / "profile")
    try:
        yield opened
    finally:
        opened.close()
