"""Invites, joining, linking and revoking devices through the public Device API on real SQLite
profiles. The bytes between devices are passed by hand here; the sync issue carries them over
Noise."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import microsync
from microsync.errors import DecryptionError, InviteConsumed, NotAMember
from microsync.feed.trust import add_certificate
from microsync.group.invite import PairingGuest, PairingHost
from microsync.group.join import DeviceCandidate
from microsync.identity import DeviceCertificate
from microsync.testing import replica_of, store_of


def pair(host: PairingHost, guest: PairingGuest) -> bytes:
    message: bytes | None = guest.start()
    while message is not None:
        message = guest.receive(host.receive(message, now=time.time_ns() // 1_000_000))
    return guest.response


def entries(device: microsync.Device, group_id: bytes) -> list[tuple[bytes, bytes | None]]:
    store = store_of(device)
    return [
        (s.entry.wire, s.body)
        for feed in store.feeds(microsync.feed.GroupId(group_id))
        for s in store.entries(microsync.feed.GroupId(group_id), feed)
    ]


def introduce(*devices: microsync.Device) -> None:
    """What a sync session's handshake does: exchange device certificates."""
    for device in devices:
        for other in devices:
            with store_of(device).transaction():
                mine = DeviceCertificate.from_bytes(other.certificates()[0])  # its own comes first
                add_certificate(store_of(device), mine)


def sync(a: microsync.Device, b: microsync.Device, group_id: bytes) -> None:
    introduce(a, b)
    b.receive(group_id, entries(a, group_id))
    a.receive(group_id, entries(b, group_id))


async def test_invite_join_and_who_joined(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "a", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "b", name="Bob") as bob,
    ):
        family = await alice.create_group("Family")
        invite = await family.invite(ttl=3600, addresses=["192.0.2.1:7425"])
        assert "192.0.2.1:7425" in invite.link
        assert invite.code.split("-")[0].isdigit()
        introduce(alice, bob)
        response = pair(alice.invite_host().session(), bob.join_guest(invite.link))
        joined = await bob.finish_join(response)
        assert joined.id == family.id and not joined.is_member()
        sync(alice, bob, family.id)
        assert joined.is_member() and joined.name == "Family"
        assert [m.name for m in joined.members()] == ["Alice", "Bob"]
        [status] = family.invites()
        assert (status.state, status.joined) == ("consumed", bob.person_id)
        # a second redemption of the same invite fails
        with pytest.raises(InviteConsumed):
            pair(alice.invite_host().session(), bob.join_guest(invite.link))


async def test_join_by_short_code(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "a", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "b", name="Bob") as bob,
    ):
        family = await alice.create_group("Family", history="none")
        invite = await family.invite(role="admin")
        introduce(alice, bob)
        response = pair(alice.invite_host().session(), bob.join_guest(invite.code.upper()))
        group = await bob.finish_join(response)
        sync(alice, bob, family.id)
        me = next(m for m in group.members() if m.person_id == bob.person_id)
        assert me.role == "admin"
        assert family.epoch == 1  # history "none": the add started a new epoch


async def test_link_device_then_revoke_it(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "a", name="Alice phone") as phone:
        family = await phone.create_group("Family")
        pairing = await phone.link_device(ttl=60)
        candidate = DeviceCandidate.generate("Alice laptop", os.urandom, 0)
        guest = PairingGuest.for_link(pairing.link, request=candidate.request().to_bytes())
        response = pair(phone.invite_host().session(), guest)
        laptop = await microsync.Device.complete_link(tmp_path / "l", candidate, response)
        async with laptop:
            assert laptop.person_id == phone.person_id and laptop.id != phone.id
            # a linked device holds the person key (it may link and revoke devices too) and
            # the recovery PUBLIC key, never the words
            assert laptop._identity.person_key is not None
            assert laptop._identity.recovery_key == phone._identity.recovery_key is not None
            with pytest.raises(ValueError, match="shown once"):
                laptop.export_recovery_words()
            sync(phone, laptop, family.id)
            [group] = laptop.groups()
            assert group.is_member()
            [me] = family.members()
            assert set(me.devices) == {phone.id, laptop.id}

            # the laptop is lost: revoke it, every group it was in rotates
            before = family.epoch
            await phone.revoke_device(laptop.id)
            assert family.epoch == before + 1
            [me] = family.members()
            assert me.devices == (phone.id,)
            secret = replica_of(family).append_content(100, b"after the laptop was lost", now=1)
            sync(phone, laptop, family.id)
            stored = store_of(laptop).entry_at(family.id, secret.header.device, secret.header.seq)
            assert stored is not None
            with pytest.raises(DecryptionError):
                replica_of(group).decrypt(stored)
            assert not group.is_member()


async def test_only_admins_invite(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "a", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "b", name="Bob") as bob,
    ):
        family = await alice.create_group("Family")
        invite = await family.invite()
        introduce(alice, bob)
        group = await bob.finish_join(
            pair(alice.invite_host().session(), bob.join_guest(invite.link))
        )
        sync(alice, bob, family.id)
        with pytest.raises(NotAMember):
            await group.invite()
        with pytest.raises(NotAMember):
            await group.remove(alice.person_id)
