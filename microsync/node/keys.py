"""A device's own key maintenance across all its groups: a new signed prekey (healing after a
compromise: every group it is in starts an epoch wrapped to the new prekey), and the
revocation of another device of this person (every group it was in starts an epoch without
it). Each is one transaction over the identity and every group's replica."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from microsync.crypto import X25519SecretKey
from microsync.errors import NotAMember
from microsync.identity import DeviceId, DeviceRevocation, PrekeyCertificate
from microsync.node.profile import save_identity

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["revoke_device", "rotate_prekey"]


def rotate_prekey(device: Device) -> None:
    """Replace ``device``'s signed prekey, forget the old secret, and rotate every group it
    is a member of."""
    now = device.clock()
    identity = device._identity
    secret = X25519SecretKey.generate(device.rng)
    number = identity.prekey_certificate.prekey_id + 1
    certificate = PrekeyCertificate.issue(identity.device_key, number, secret.public, now)
    with device._store.transaction():
        device._identity = replace(identity, prekey=secret, prekey_certificate=certificate)
        device._member.identity = device._identity
        device._member.prekeys = {number: secret}
        save_identity(device._store, device._identity, device._member.prekeys)
        for group in device._groups.values():
            if group._replica.is_member:
                group._replica.update_prekey(certificate, now=now)
                group._replica.rotate(now=now)


def revoke_device(device: Device, revoked: DeviceId) -> None:
    """Revoke ``revoked`` (another device of ``device``'s person) in every group it is in."""
    person_key = device._identity.person_key
    if person_key is None:
        raise NotAMember("only a device holding the person key may revoke devices")
    now = device.clock()
    revocation = DeviceRevocation.issue(person_key, revoked, now)
    with device._store.transaction():
        for group in device._groups.values():
            if group._replica.state.device(revocation.device) is not None:
                group._replica.revoke_device(revocation, now=now)
