"""What a profile keeps in its store's meta table besides the feeds: the identity bundle, the
prekey secrets still held, the list of groups held, and whether the device is quiet.

Invariants: the identity is written once, with its own certificate, in one transaction; the
current prekey is always among the prekeys loaded; a damaged prekey list is a
:class:`~microsync.errors.StorageError`, never a silent loss of keys. Quiet mode is only a
preference: a profile from before it was kept, or a damaged value, reads as not quiet (logged)
and opens as ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from microsync import encoding
from microsync.crypto import Rng, X25519SecretKey
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import ProfileNotFound, StorageError
from microsync.feed import GroupId
from microsync.feed.trust import add_certificate
from microsync.group.member import LocalMember
from microsync.identity import LocalIdentity
from microsync.node.parallel import verify_in_threads
from microsync.storage.sqlite import SqliteStore

__all__ = [
    "GROUPS_KEY",
    "IDENTITY_KEY",
    "PREKEYS_KEY",
    "QUIET_KEY",
    "group_ids",
    "load_prekeys",
    "load_quiet",
    "local_member",
    "open_profile",
    "remember_group",
    "save_identity",
    "save_quiet",
]

log = logging.getLogger("microsync.node")

IDENTITY_KEY: Final = "identity"
GROUPS_KEY: Final = "groups"
PREKEYS_KEY: Final = "prekeys"
QUIET_KEY: Final = "quiet"
_QUIET: Final = {b"1": True, b"0": False}


def open_profile(
    directory: Path, make: Callable[[], LocalIdentity] | None
) -> tuple[SqliteStore, LocalIdentity]:
    """The store at ``directory`` and its identity; a profile without one gets ``make()``'s
    (:class:`ProfileNotFound` when there is no ``make``). The store is closed on failure."""
    store = SqliteStore.open(directory)
    try:
        bundle = store.get_meta(IDENTITY_KEY)
        if bundle is not None:
            return store, LocalIdentity.from_bytes(bundle)
        if make is None:
            raise ProfileNotFound(f"no microsync profile at {directory}")
        identity = make()
        with store.transaction():
            store.put_meta(IDENTITY_KEY, identity.to_bytes())
            add_certificate(store, identity.certificate)
        return store, identity
    except BaseException:
        store.close()
        raise


def save_identity(
    store: SqliteStore, identity: LocalIdentity, prekeys: dict[int, X25519SecretKey]
) -> None:
    """Replace the stored identity bundle and prekey secrets (a prekey rotation)."""
    store.put_meta(IDENTITY_KEY, identity.to_bytes())
    store.put_meta(PREKEYS_KEY, _encode_prekeys(prekeys))


def group_ids(store: SqliteStore) -> list[GroupId]:
    """The groups this profile holds, in the order it came to hold them."""
    data = store.get_meta(GROUPS_KEY)
    if data is None:
        return []
    items = expect_list(encoding.decode(data, max_size=2**20), "groups")
    return [GroupId(expect_bytes(item, "group", 32)) for item in items]


def remember_group(store: SqliteStore, group_id: GroupId) -> None:
    """Add ``group_id`` to the list of groups held (once)."""
    ids = group_ids(store)
    if group_id not in ids:
        store.put_meta(GROUPS_KEY, encoding.encode([*ids, group_id]))


def _encode_prekeys(prekeys: dict[int, X25519SecretKey]) -> bytes:
    return encoding.encode([[n, k.secret_bytes()] for n, k in sorted(prekeys.items())])


def load_prekeys(store: SqliteStore, identity: LocalIdentity) -> dict[int, X25519SecretKey]:
    """The prekey secrets held, by number, the identity's current one among them."""
    data = store.get_meta(PREKEYS_KEY)
    current = {identity.prekey_certificate.prekey_id: identity.prekey}
    if data is None:
        return current
    found = {}
    for item in expect_list(encoding.decode(data, max_size=2**16), "prekeys"):
        number, secret = expect_list(item, "prekey", 2)
        if type(number) is not int:
            raise StorageError("the stored prekeys are damaged")
        found[number] = X25519SecretKey(expect_bytes(secret, "prekey", 32))
    return found | current


def local_member(store: SqliteStore, identity: LocalIdentity, rng: Rng) -> LocalMember:
    """This device as its groups see it: its identity, the prekey secrets held, ``rng``, and
    its received signatures checked on every core (:mod:`microsync.node.parallel`)."""
    return LocalMember(identity, load_prekeys(store, identity), rng, verify_in_threads)


def load_quiet(store: SqliteStore) -> bool:
    """Whether the device is in quiet mode (``Device.set_quiet``): not quiet when the profile
    never said (made before quiet mode was kept) or the value is damaged."""
    data = store.get_meta(QUIET_KEY)
    if data is None:
        return False
    found = _QUIET.get(data)
    if found is None:
        log.warning("the stored quiet mode is damaged: read as not quiet")
        return False
    return found


def save_quiet(store: SqliteStore, quiet: bool) -> None:
    """Keep quiet mode on (``True``) or off for the next open."""
    store.put_meta(QUIET_KEY, b"1" if quiet else b"0")
