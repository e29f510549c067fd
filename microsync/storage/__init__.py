"""Storage adapters (the only package besides ``net`` that touches disks)."""

from microsync.storage.base import Store
from microsync.storage.memory import MemoryStore
from microsync.storage.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "Store"]
