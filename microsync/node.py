"""The public async API: a :class:`Device` is one profile directory on one machine.

A profile directory holds ``profile.db`` (SQLite, WAL) and ``profile.lock``. Only one
:class:`Device` may have a profile open at a time, in any process: a second open raises
:class:`~microsync.errors.ProfileInUse`.

>>> import asyncio, tempfile, microsync
>>> async def main(path: str) -> str:
...     async with await microsync.Device.open(path, name="Alice") as alice:
...         return alice.name
>>> asyncio.run(main(tempfile.mkdtemp()))
'Alice'
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from microsync.crypto import fingerprint, system_rng
from microsync.errors import ProfileNotFound, StorageError
from microsync.feed.trust import add_certificate
from microsync.identity import DeviceId, LocalIdentity, PersonId
from microsync.storage.sqlite import DATABASE_NAME, SqliteStore

__all__ = ["Device"]

_IDENTITY_KEY = "identity"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Device:
    """One device's profile: its identity, its store and (later) its groups and sync.

    Use :meth:`open` (create or load) or :meth:`restore` (recover a person on a new device);
    leave the ``async with`` block, or call :meth:`close`, to release the profile.
    """

    def __init__(self, path: Path, store: SqliteStore, identity: LocalIdentity) -> None:
        self._path = path
        self._store = store
        self._identity = identity

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, name: str | None = None) -> Device:
        """Load the profile at ``path``, or create one named ``name`` if there is none.

        Raises :class:`ProfileNotFound` when there is no profile and no ``name``, and
        :class:`~microsync.errors.ProfileInUse` when the profile is open elsewhere.
        """
        directory = Path(path)
        if name is None:
            if not (directory / DATABASE_NAME).exists():
                raise ProfileNotFound(f"no microsync profile at {directory}")
            return cls._load_or_create(directory, None)
        new_name = name
        return cls._load_or_create(
            directory, lambda: LocalIdentity.create(new_name, system_rng, _now_ms())
        )

    @classmethod
    async def restore(
        cls, path: str | os.PathLike[str], words: list[str] | str, *, name: str
    ) -> Device:
        """Recover a person from their 24 recovery words into a NEW profile at ``path``.

        The person is the same; the device key is new (a restored device is a new device).
        Refuses to touch a directory that already holds a profile.
        """
        directory = Path(path)
        if (directory / DATABASE_NAME).exists():
            raise StorageError(f"{directory} already holds a profile; restore into a new one")
        identity = LocalIdentity.restore(words, name, system_rng, _now_ms())
        return cls._load_or_create(directory, lambda: identity)

    @classmethod
    def _load_or_create(cls, directory: Path, make: Callable[[], LocalIdentity] | None) -> Device:
        store = SqliteStore.open(directory)
        try:
            bundle = store.get_meta(_IDENTITY_KEY)
            if bundle is None:
                if make is None:
                    raise ProfileNotFound(f"no microsync profile at {directory}")
                identity = make()
                with store.transaction():
                    store.put_meta(_IDENTITY_KEY, identity.to_bytes())
                    add_certificate(store, identity.certificate)
            else:
                identity = LocalIdentity.from_bytes(bundle)
        except BaseException:
            store.close()
            raise
        return cls(directory, store, identity)

    @property
    def id(self) -> DeviceId:
        """This device's public key: unique per device, never restored."""
        return self._identity.device_id

    @property
    def person_id(self) -> PersonId:
        """The person's public key: shared by all of this person's devices."""
        return self._identity.person_id

    @property
    def name(self) -> str:
        return self._identity.name

    @property
    def path(self) -> Path:
        return self._path

    def export_recovery_words(self) -> list[str]:
        """The person key as 24 BIP39 words. Whoever holds them can act as this person."""
        return self._identity.recovery_words()

    async def close(self) -> None:
        """Release the profile. Idempotent."""
        self._store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"Device(name={self.name!r}, person={fingerprint(self.person_id)}, "
            f"device={fingerprint(self.id)})"
        )
