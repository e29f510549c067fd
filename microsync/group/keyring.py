"""This device's keyring for one group: the epoch keys it holds, and where they are kept.

Keys are indexed by ``(epoch number, commitment)``. A key enters only when a valid operation
announced its commitment (:meth:`Keyring.keep`); a full key (with its root, so the content key)
replaces a control-only one of the same slot, never the other way. The ring is stored as the
list of its keys, each as a :class:`~microsync.group.keys.KeyGrant` value, under the profile
metadata key ``group/<id hex>/keys`` (the stored bytes are unchanged by this module's split).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from microsync import encoding
from microsync.crypto import SymmetricKey
from microsync.encoding import expect_list
from microsync.errors import DecryptionError
from microsync.feed import GroupId
from microsync.feed.store import StoredEntry
from microsync.group.keys import EpochKey, KeyGrant, body_ref, decrypt_content

__all__ = ["Keyring", "MetaStore", "Slot"]

Slot = tuple[int, bytes]
"""An epoch key's place in the ring: its number and its commitment."""


class MetaStore(Protocol):
    """The profile metadata the keyring is kept in."""

    def get_meta(self, key: str) -> bytes | None: ...

    def put_meta(self, key: str, value: bytes) -> None: ...


class Keyring:
    """The epoch keys of one group this device holds (kept with :meth:`load`, :meth:`save`)."""

    def __init__(self, group: GroupId) -> None:
        self.group = group
        self.keys: dict[Slot, EpochKey] = {}
        self._contents: dict[Slot, tuple[EpochKey, SymmetricKey]] = {}  # derived once a key

    def __repr__(self) -> str:
        return f"Keyring({self.group.hex()[:8]}, {len(self.keys)} keys)"

    @property
    def _meta_key(self) -> str:
        return f"group/{self.group.hex()}/keys"

    def load(self, store: MetaStore) -> None:
        """Read the ring from the profile (nothing if it was never saved)."""
        data = store.get_meta(self._meta_key)
        if data is None:
            return
        for item in expect_list(encoding.decode(data, max_size=2**24), "keyring"):
            key = KeyGrant.from_value(item).open(self.group)
            self.keys[(key.number, key.commitment)] = key

    def save(self, store: MetaStore) -> None:
        """Write the ring to the profile (in the caller's transaction)."""
        grants = [KeyGrant.of(k, k.root is not None).to_value() for k in self.keys.values()]
        store.put_meta(self._meta_key, encoding.encode(grants))

    def key_for(self, number: int, ref: bytes) -> EpochKey | None:
        """The key of epoch ``number`` whose commitment starts with ``ref``, or ``None``."""
        for (n, digest), key in self.keys.items():
            if n == number and digest.startswith(ref):
                return key
        return None

    def decrypt(self, stored: StoredEntry) -> bytes:
        """The plaintext of a content entry of this group (``DecryptionError`` if no key held
        here opens it, or the body was tampered with, moved, or purged)."""
        h = stored.entry.header
        if stored.body is None or h.group != self.group:
            raise DecryptionError()
        key = self.key_for(h.epoch, body_ref(stored.body))
        content = None if key is None else self._content_of(key)
        if content is None:
            raise DecryptionError()
        return decrypt_content(
            content,
            stored.body,
            group=self.group,
            epoch=h.epoch,
            device=h.device,
            seq=h.seq,
            type=h.type,
        )

    def _content_of(self, key: EpochKey) -> SymmetricKey | None:
        """``key.content``, derived once per key held (not once per entry opened)."""
        slot = (key.number, key.commitment)
        cached = self._contents.get(slot)
        if cached is not None and cached[0] is key:
            return cached[1]
        content = key.content
        if content is not None:
            self._contents[slot] = (key, content)
        return content

    def add(self, keys: Iterable[EpochKey]) -> bool:
        """Keep keys this device made itself (a new epoch it announces); ``True`` if any was
        new (the caller saves)."""
        changed = False
        for key in keys:
            if (key.number, key.commitment) not in self.keys:
                self.keys[(key.number, key.commitment)] = key
                changed = True
        return changed

    def keep(self, grant: KeyGrant, announced: set[Slot]) -> bool:
        """Keep the key ``grant`` carries if a valid operation announced its slot and it adds
        to what is held (a new slot, or the root of a control-only key). Returns whether it
        did; the caller saves. A slot already held in full (or held at all, for a
        control-only grant) is decided before the grant is opened: nothing could change."""
        held = self.keys.get((grant.number, grant.commitment))
        if held is not None and (held.root is not None or not grant.full):
            return False
        try:
            key = grant.open(self.group)
        except DecryptionError:
            return False
        slot = (key.number, key.commitment)
        if slot not in announced:
            return False
        known = self.keys.get(slot)
        if known is not None and (known.root is not None or key.root is None):
            return False
        self.keys[slot] = key
        return True

    def candidates(self, offered: Iterable[KeyGrant]) -> dict[Slot, EpochKey]:
        """The held keys plus every key ``offered`` opens, announced or not: what may open a
        sealed operation (only an operation that then takes effect makes a key kept)."""
        keys = dict(self.keys)
        for grant in offered:
            try:
                key = grant.open(self.group)
            except DecryptionError:
                continue
            known = keys.get((key.number, key.commitment))
            if known is None or (known.root is None and key.root is not None):
                keys[(key.number, key.commitment)] = key
        return keys
