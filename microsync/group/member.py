"""This device as the group layer sees it (:class:`LocalMember`), and what a replica needs of
a profile's store (:class:`GroupStore`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from microsync.crypto import X25519SecretKey
from microsync.crypto.batch import BatchVerify, verify_many
from microsync.crypto.random import Rng
from microsync.feed.store import FeedStore
from microsync.feed.trust import TrustStore
from microsync.group.ops import DeviceGrant
from microsync.identity import DeviceId, LocalIdentity, PersonId

__all__ = ["GroupStore", "LocalMember"]


class GroupStore(FeedStore, TrustStore, Protocol):
    """What a replica needs from a profile's store."""

    def get_meta(self, key: str) -> bytes | None: ...

    def put_meta(self, key: str, value: bytes) -> None: ...


@dataclass(slots=True)
class LocalMember:
    """This device as the group layer sees it: its identity and the prekey secrets it holds."""

    identity: LocalIdentity
    prekeys: dict[int, X25519SecretKey]
    rng: Rng
    """Where every random byte this device's group layer draws comes from: the caller's (a
    device passes ``microsync.crypto.system_rng``; tests pass a seeded one)."""
    verify: BatchVerify = verify_many
    """How a received batch's signatures are checked: in this thread by default; a device
    passes ``microsync.node.parallel.verify_in_threads`` to use every core."""

    @classmethod
    def of(cls, identity: LocalIdentity, rng: Rng) -> LocalMember:
        return cls(identity, {identity.prekey_certificate.prekey_id: identity.prekey}, rng)

    @property
    def device(self) -> DeviceId:
        return self.identity.device_id

    @property
    def person(self) -> PersonId:
        return self.identity.person_id

    def grant(self) -> DeviceGrant:
        return DeviceGrant(
            self.identity.certificate.to_bytes(), self.identity.prekey_certificate.to_bytes()
        )
