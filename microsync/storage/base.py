"""The storage port: everything a device profile keeps, behind one small interface.

Two adapters implement it, :class:`~microsync.storage.memory.MemoryStore` (tests, simulations)
and :class:`~microsync.storage.sqlite.SqliteStore` (real profiles); both must pass the contract
suite in ``tests/test_storage_contract.py``. Adapters store and find; every rule lives above them.
"""

from __future__ import annotations

from typing import Protocol

from microsync.feed.store import FeedStore
from microsync.feed.trust import TrustStore
from microsync.identity import DeviceId, DeviceRevocation

__all__ = ["Store"]


class Store(FeedStore, TrustStore, Protocol):
    """A device profile's storage."""

    def get_meta(self, key: str) -> bytes | None:
        """A profile value (identity bundle, settings) or ``None``."""
        ...

    def put_meta(self, key: str, value: bytes) -> None: ...

    def revocation(self, device: DeviceId) -> DeviceRevocation | None: ...

    def dump(self) -> bytes:
        """A canonical serialisation of the whole content, identical for two stores that hold
        the same data whatever their adapter (used to prove that bad input changed nothing)."""
        ...

    def close(self) -> None: ...
