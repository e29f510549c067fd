"""The public group API on real profiles, and post-compromise healing by prekey rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import microsync
from microsync.crypto import X25519SecretKey, system_rng
from microsync.errors import DecryptionError, NotAMember
from microsync.feed.trust import add_certificate
from microsync.group.keys import Purpose, open_bundle
from microsync.group.replica import GroupReplica, LocalMember, _decode_envelope
from microsync.identity import LocalIdentity, PrekeyCertificate
from microsync.storage.memory import MemoryStore


async def test_create_group_persists_across_reopen(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path, name="Alice") as alice:
        family = await alice.create_group("Family")
        await family.rotate_keys()
        group_id, epoch = family.id, family.epoch
        assert epoch == 1
        [me] = family.members()
        assert (me.person_id, me.name, me.role, me.devices) == (
            alice.person_id,
            "Alice",
            "admin",
            (alice.id,),
        )
    async with await microsync.Device.open(tmp_path) as alice:
        [family] = alice.groups()
        assert (family.id, family.name, family.epoch, family.history) == (
            group_id,
            "Family",
            1,
            "shared",
        )
        assert alice.group(group_id) is family


async def test_group_name_is_not_stored_in_the_clear(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path, name="Alice") as alice:
        await alice.create_group("Zanzibar-holiday-club")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"Zanzibar-holiday-club" not in raw


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path, name="Alice") as alice:
        with pytest.raises(ValueError):
            await alice.create_group("x", history="sometimes")
        with pytest.raises(ValueError):
            await alice.create_group("")
        with pytest.raises(NotAMember):
            alice.group(b"\0" * 32)
        assert alice.groups() == []


async def test_leaving_makes_the_group_read_only_for_this_device(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path, name="Alice") as alice:
        family = await alice.create_group("Family")
        await family.leave()
        assert not family.is_member()
        assert family.members() == []
        with pytest.raises(NotAMember):
            await family.rotate_keys()


async def test_prekey_rotation_rotates_every_group(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path, name="Alice") as alice:
        one = await alice.create_group("One")
        two = await alice.create_group("Two", history="none")
        await alice.rotate_prekey()
        assert (one.epoch, two.epoch) == (1, 1)
    async with await microsync.Device.open(tmp_path) as alice:
        assert [g.epoch for g in alice.groups()] == [1, 1]


def _deliver(src: GroupReplica, dst: GroupReplica) -> None:
    items = [
        (s.entry.wire, s.body)
        for device in src.store.feeds(src.id)
        for s in src.store.entries(src.id, device)
    ]
    dst.receive(items)


def test_prekey_rotation_heals_a_compromised_device() -> None:
    """An attacker who copied Bob's prekey secrets and every epoch key he held reads nothing
    written after Bob rotates his prekey and the group rotates."""
    alice_id = LocalIdentity.create("Alice", os.urandom, 0)
    bob_id = LocalIdentity.create("Bob", os.urandom, 0)
    stores = [MemoryStore(), MemoryStore()]
    for store in stores:
        add_certificate(store, alice_id.certificate)
        add_certificate(store, bob_id.certificate)
    alice = GroupReplica.create(stores[0], LocalMember.of(alice_id, system_rng), "Family", now=1)
    bob_member = LocalMember.of(bob_id, system_rng)
    alice.add(bob_id.person_id, "Bob", [bob_member.grant()], now=2)
    bob = GroupReplica(stores[1], bob_member, alice.id)
    _deliver(alice, bob)
    assert bob.is_member
    stolen_prekeys = dict(bob_member.prekeys)
    stolen_keys = bob.epoch_keys()

    # Bob heals: a new prekey, published, then a rotation wrapped to it
    fresh = X25519SecretKey.generate(os.urandom)
    certificate = PrekeyCertificate.issue(bob_id.device_key, 2, fresh.public, 3)
    bob_member.prekeys = {2: fresh}
    bob.update_prekey(certificate, now=3)
    rotation = bob.rotate(now=4)
    _deliver(bob, alice)
    secret = alice.append_content(100, b"after healing", now=5)
    _deliver(alice, bob)

    stored = stores[1].entry_at(alice.id, secret.header.device, secret.header.seq)
    assert stored is not None
    assert bob.decrypt(stored) == b"after healing"
    # the attacker's old epoch keys do not match the new epoch
    new_epoch = secret.header.epoch
    assert all(number < new_epoch for number, _ in stolen_keys)
    # and the rotation's wrap does not open with the stolen prekey
    body = stores[1].entry_at(alice.id, rotation.header.device, rotation.header.seq)
    assert body is not None and body.body is not None
    bundles, _ = _decode_envelope(body.body)
    [(purpose, epoch, bundle)] = bundles
    assert purpose is Purpose.ROTATION
    with pytest.raises(DecryptionError):
        open_bundle(
            bundle,
            group=alice.id,
            epoch=epoch,
            sender=bob_id.device_id,
            purpose=purpose,
            me=bob_id.device_id,
            prekeys=stolen_prekeys,
        )


def test_a_group_refuses_devices_beyond_what_one_rotation_can_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from microsync.group import rules

    monkeypatch.setattr(rules, "MAX_GROUP_DEVICES", 2)  # where the rule reads it
    people = [LocalIdentity.create(n, os.urandom, 0) for n in ("Alice", "Bob", "Carol")]
    store = MemoryStore()
    for person in people:
        add_certificate(store, person.certificate)
    alice = GroupReplica.create(store, LocalMember.of(people[0], system_rng), "Family", now=1)
    alice.add(people[1].person_id, "Bob", [LocalMember.of(people[1], system_rng).grant()], now=2)
    with pytest.raises(NotAMember):
        alice.add(
            people[2].person_id, "Carol", [LocalMember.of(people[2], system_rng).grant()], now=3
        )
    assert set(alice.state.members) == {people[0].person_id, people[1].person_id}
    alice.remove(people[1].person_id, now=4)  # a removal still fits
