"""The recovery rule (``group/rules.py``, ``group/recovery_rule.py``) on simulated devices:
the words beat a thief holding the lost phone.

Alice's phone is her only device and the group's only admin. A device restored from her words
is taken back by Bob (a member): the recovery carries the recovery key's certificate of that
device, revokes the phone (its cut-off is the phone's feed head as Bob saw it) and starts an
epoch without it. Whatever the phone does after that line counts for nothing, in every
delivery order. A thief holding the phone (the person key, no words) cannot make a
certificate, so no member can get its device in; a member's crafted ADD_DEVICE without a
valid certificate is void everywhere."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.app.ops import APP_TYPE
from microsync.crypto import SigningKey
from microsync.errors import NotAMember
from microsync.feed.entry import GroupId
from microsync.group.ops import EpochAnnouncement, Op, OpKind, Role, recipients_digest
from microsync.identity import RecoveryCertificate
from microsync.testing import AppOp, Hostile, Kind, SimDevice, SimNetwork, app_view

SEEDS = st.integers(0, 2**32)


def family(
    net: SimNetwork, *names: str, history: str = "shared", register: bool = True
) -> tuple[GroupId, list[SimDevice]]:
    """``names[0]`` founds the group (its only admin) and adds the others, each with its
    recovery key registered (``register``) or not (a member from before the paper key)."""
    devices = [net.add_device(n) for n in names]
    group = net.create_group(devices[0], "Family", history=history)
    for device in devices[1:]:
        devices[0].replica(group).add(
            device.person_id,
            device.name,
            [device.grant()],
            role=Role.MEMBER,
            now=net.clock.advance(),
            recovery_key=device.identity.recovery_key if register else None,
        )
    net.settle(group)
    return group, devices


def restore(net: SimNetwork, phone: SimDevice, name: str) -> SimDevice:
    words = phone.identity.recovery_words()  # the root is in memory where it was created
    return net.add_restored_device(words, name)


def recover(net: SimNetwork, by: SimDevice, restored: SimDevice, group: GroupId) -> None:
    certificate = restored.identity.recovery_certificate
    assert certificate is not None
    by.replica(group).add_device(restored.grant(), now=net.clock.advance(), recovery=certificate)


def post(net: SimNetwork, device: SimDevice, group: GroupId, text: str) -> int:
    """``device`` posts ``text``; returns the entry's seq."""
    body = AppOp(Kind.POST, text=text).to_bytes()
    return device.replica(group).append_content(APP_TYPE, body, now=net.clock.advance()).header.seq


def texts(device: SimDevice, group: GroupId) -> list[str]:
    return sorted(p.text or "" for p in app_view(device, group).timeline.visible())


def alice_devices(device: SimDevice, group: GroupId, alice: SimDevice) -> set[bytes]:
    member = device.replica(group).state.members.get(alice.person_id)
    return set() if member is None else set(member.devices)


def test_a_recovery_takes_the_person_back_and_revokes_the_phone() -> None:
    net = SimNetwork(seed=1)
    group, (phone, bob, carol) = family(net, "alice phone", "bob", "carol")
    post(net, phone, group, "before the loss")
    net.settle(group)
    restored = restore(net, phone, "alice restored")
    recover(net, bob, restored, group)
    net.settle(group)
    for device in (bob, carol, restored, phone):
        state = device.replica(group).state
        alice = state.members[phone.person_id]
        assert set(alice.devices) == {restored.device_id}
        assert alice.role is Role.ADMIN and alice.rank == 0  # her entry, so her role
        assert phone.device_id in state.revoked
    assert not phone.replica(group).is_member  # the phone's own replica draws the same line
    assert texts(restored, group) == ["before the loss"]  # shared history
    restored.replica(group).remove(carol.person_id, now=net.clock.advance())  # an admin
    net.settle(group)
    assert carol.person_id not in bob.replica(group).state.members
    net.check_convergence(group)


def test_with_history_none_the_restored_device_reads_only_from_its_recovery() -> None:
    net = SimNetwork(seed=2)
    group, (phone, bob) = family(net, "alice phone", "bob", history="none")
    post(net, phone, group, "before the loss")
    net.settle(group)
    restored = restore(net, phone, "alice restored")
    recover(net, bob, restored, group)
    net.settle(group)
    post(net, bob, group, "after")
    net.settle(group)
    assert texts(restored, group) == ["after"]
    assert texts(bob, group) == ["after", "before the loss"]


def test_the_phone_cannot_revoke_the_restored_device_nor_post_after_its_cut_off() -> None:
    net = SimNetwork(seed=3)
    group, (phone, bob) = family(net, "alice phone", "bob")
    restored = restore(net, phone, "alice restored")
    recover(net, bob, restored, group)
    net.settle(group)
    with pytest.raises(NotAMember):  # honest API: the phone knows it is out
        phone.replica(group).revoke_device(phone.revoke(restored, 1), now=net.clock.advance())
    # a hostile phone writes the revocation anyway, after the recovery and "before" it
    evil = Hostile.of_sim(phone, group)
    seen = bob.replica(group).resolution.order
    revocation = phone.revoke(restored, 1).to_bytes()
    announcement = EpochAnnouncement(99, os.urandom(32), recipients_digest([phone.device_id]))
    for deps in (seen, seen[:-1]):
        op = Op(kind=OpKind.REVOKE_DEVICE, revocation=revocation, cutoff=9, epoch=announcement)
        evil.append_op(op, deps=deps)
    seq = evil.append_content(APP_TYPE, AppOp(Kind.POST, text="thief").to_bytes(), hlc=1).header
    net.settle(group)
    for device in (bob, restored):
        assert alice_devices(device, group, phone) == {restored.device_id}
        assert "thief" not in texts(device, group)
        assert not device.replica(group).state.counts(phone.device_id, seq.seq)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, steps=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=12))
def test_the_phone_racing_the_recovery_loses_in_every_delivery_order(
    seed: int, steps: list[tuple[int, int]]
) -> None:
    """Before either hears of the other: Bob takes Alice's restored device back, while the
    phone posts, links a tablet (which posts too) and rotates. Delivered in any order and then
    settled: every replica agrees; Alice's devices are the restored one only; nothing the phone
    or its tablet wrote after the phone's cut-off shows; the tablet can never be re-admitted."""
    net = SimNetwork(seed=seed)
    group, (phone, bob, carol) = family(net, "alice phone", "bob", "carol")
    restored = restore(net, phone, "alice restored")
    tablet = net.add_linked_device(phone, "alice tablet")
    recover(net, bob, restored, group)
    post(net, phone, group, "phone after")
    phone.replica(group).add_device(tablet.grant(), now=net.clock.advance())
    net.deliver(phone, tablet, group, order="in_order", batch=1000)
    post(net, tablet, group, "tablet after")
    phone.replica(group).rotate(now=net.clock.advance())
    post(net, carol, group, "carol")
    everyone = [phone, bob, carol, restored, tablet]
    for a, b in steps:
        if a != b:
            net.deliver(everyone[a], everyone[b], group)
    net.settle(group)
    for device in (bob, carol, restored):
        assert alice_devices(device, group, phone) == {restored.device_id}
        shown = texts(device, group)
        assert "phone after" not in shown and "tablet after" not in shown
        assert "carol" in shown
        assert tablet.device_id not in device.replica(group).state.entitled_devices()
    net.check_convergence(group)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS, steps=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=10))
def test_two_recoveries_at_once_converge_on_one_device(
    seed: int, steps: list[tuple[int, int]]
) -> None:
    """Bob and Carol each take back a different device restored from Alice's words, neither
    knowing of the other: every replica keeps the same one, and the phone is out."""
    net = SimNetwork(seed=seed)
    group, (phone, bob, carol) = family(net, "alice phone", "bob", "carol")
    one, two = restore(net, phone, "alice one"), restore(net, phone, "alice two")
    recover(net, bob, one, group)
    recover(net, carol, two, group)
    everyone = [phone, bob, carol, one, two]
    for a, b in steps:
        if a != b:
            net.deliver(everyone[a], everyone[b], group)
    net.settle(group)
    seen = [alice_devices(d, group, phone) for d in (bob, carol)]
    assert seen[0] == seen[1] and len(seen[0]) == 1
    assert seen[0] <= {one.device_id, two.device_id}
    assert phone.device_id not in seen[0]
    net.check_convergence(group)


@pytest.mark.parametrize("removal_first", [True, False])
def test_a_recovery_racing_a_removal_of_the_person_ends_alike(removal_first: bool) -> None:
    """Bob (the founder) removes Alice while Carol takes her restored device back: in either
    order Alice is out everywhere and nothing of the restored device counts."""
    net = SimNetwork(seed=4)
    group, (bob, phone, carol) = family(net, "bob", "alice phone", "carol")
    restored = restore(net, phone, "alice restored")
    bob.replica(group).remove(phone.person_id, now=net.clock.advance())
    recover(net, carol, restored, group)
    net.deliver(carol, restored, group, order="in_order", batch=1000)
    post(net, restored, group, "back, I think")
    first, second = (bob, carol) if removal_first else (carol, bob)
    net.deliver(first, second, group, order="in_order", batch=1000)
    net.settle(group)
    for device in (bob, carol):
        assert phone.person_id not in device.replica(group).state.members
        assert "back, I think" not in texts(device, group)
    net.check_convergence(group)


# ----------------------------------------------------------------------------- adversarial


def crafted(by: SimDevice, group: GroupId, grant: SimDevice, certificate: bytes | None) -> Op:
    """An ADD_DEVICE of ``grant``'s device by ``by``, right in every field the rule checks
    (positions of Alice's devices as ``by`` sees them, the next epoch for the devices that
    would stay) except what ``certificate`` is."""
    state = by.replica(group).state
    alice = state.members[grant.person_id]
    heads = {d: f.head_seq for d, f in by.store.feeds(group).items()}
    named = {grant.device_id} | set(alice.devices)
    stay = (state.entitled_devices() - set(alice.devices)) | {grant.device_id}
    epoch = EpochAnnouncement(state.max_epoch + 1, os.urandom(32), recipients_digest(stay))
    return Op(
        kind=OpKind.ADD_DEVICE,
        devices=(grant.grant(),),
        positions=tuple((d, heads.get(d, 0)) for d in sorted(named)),
        recovery=certificate,
        epoch=epoch if certificate is not None else None,
    )


def forge(device: SimDevice, key: SigningKey | None = None) -> bytes:
    """A recovery certificate of ``device`` by ``key`` (default: a key of the thief's)."""
    key = key or SigningKey(os.urandom(32))
    return RecoveryCertificate.issue(key, device.person_id, device.device_id, 1).to_bytes()


def void_everywhere(net: SimNetwork, group: GroupId, phone: SimDevice, *honest: SimDevice) -> None:
    net.settle(group)
    for device in honest:
        assert alice_devices(device, group, phone) == {phone.device_id}
        assert phone.device_id not in device.replica(group).state.revoked


def test_a_thief_with_the_person_key_gets_no_device_in_by_any_member() -> None:
    """The thief holds the phone's person key, not the words: its device is certified by the
    person key, but its recovery certificate is by a key of its own. Bob's honest device
    refuses it; Bob's device, colluding, writes it anyway: void on everyone's replica. The
    same op with a real certificate (the control) counts, so the certificate is what fails."""
    net = SimNetwork(seed=5)
    group, (phone, bob, carol) = family(net, "alice phone", "bob", "carol")
    thief = net.add_linked_device(phone, "alice thief")
    forged = RecoveryCertificate.from_bytes(forge(thief))
    with pytest.raises(NotAMember, match="recovery certificate"):
        bob.replica(group).add_device(thief.grant(), now=net.clock.advance(), recovery=forged)
    evil = Hostile.of_sim(bob, group)
    evil.append_op(
        crafted(bob, group, thief, forge(thief)), deps=bob.replica(group).resolution.order
    )
    void_everywhere(net, group, phone, bob, carol, phone)
    restored = restore(net, phone, "alice restored")
    real = restored.identity.recovery_certificate
    assert real is not None
    op = crafted(bob, group, restored, real.to_bytes())
    evil.append_op(op, deps=bob.replica(group).resolution.order)
    net.settle(group)
    assert alice_devices(carol, group, phone) == {restored.device_id}


def test_a_certificate_for_one_device_admits_no_other() -> None:
    net = SimNetwork(seed=6)
    group, (phone, bob, carol) = family(net, "alice phone", "bob", "carol")
    x, y = restore(net, phone, "alice x"), restore(net, phone, "alice y")
    certificate = x.identity.recovery_certificate
    assert certificate is not None
    with pytest.raises(NotAMember):
        bob.replica(group).add_device(y.grant(), now=net.clock.advance(), recovery=certificate)
    evil = Hostile.of_sim(bob, group)
    op = crafted(bob, group, y, certificate.to_bytes())
    evil.append_op(op, deps=bob.replica(group).resolution.order)
    void_everywhere(net, group, phone, bob, carol)


def test_a_members_add_device_without_a_certificate_is_void() -> None:
    """Bob's crafted ADD_DEVICE of a device certified by Alice's person key, with no recovery
    certificate (the rule on main before the paper key let this through when Alice had no
    device left): void. His honest device refuses to write it."""
    net = SimNetwork(seed=7)
    group, (phone, bob, carol) = family(net, "alice phone", "bob", "carol")
    thief = net.add_linked_device(phone, "alice thief")
    with pytest.raises(NotAMember):
        bob.replica(group).add_device(thief.grant(), now=net.clock.advance())
    op = crafted(bob, group, thief, None)
    Hostile.of_sim(bob, group).append_op(op, deps=bob.replica(group).resolution.order)
    void_everywhere(net, group, phone, bob, carol)


def test_a_member_without_a_registered_recovery_key_cannot_be_recovered() -> None:
    """Alice joined without a recovery key (an invite from before the paper key): the words
    take her back nowhere, by the honest API or a crafted op."""
    net = SimNetwork(seed=8)
    group, (bob, phone, carol) = family(net, "bob", "alice phone", "carol", register=False)
    assert bob.replica(group).state.members[phone.person_id].recovery_key is None
    restored = restore(net, phone, "alice restored")
    with pytest.raises(NotAMember):
        recover(net, carol, restored, group)
    certificate = restored.identity.recovery_certificate
    assert certificate is not None
    op = crafted(carol, group, restored, certificate.to_bytes())
    Hostile.of_sim(carol, group).append_op(op, deps=carol.replica(group).resolution.order)
    void_everywhere(net, group, phone, bob, carol)


def test_the_registered_key_is_the_first_and_stays() -> None:
    """The founder's CREATE registers its key; a joiner's ADD registers the joiner's. A
    second ADD of a member (with the thief's key) is refused: the key never changes."""
    net = SimNetwork(seed=9)
    group, (phone, bob) = family(net, "alice phone", "bob")
    state = bob.replica(group).state
    assert state.members[phone.person_id].recovery_key == phone.identity.recovery_key
    assert state.members[bob.person_id].recovery_key == bob.identity.recovery_key
    thief_key = SigningKey(os.urandom(32))
    again = Op(
        kind=OpKind.ADD,
        person=bob.person_id,
        name="bob",
        role=Role.MEMBER,
        devices=(bob.grant(),),
        recovery_key=bytes(thief_key.public),
    )
    Hostile.of_sim(phone, group).append_op(again, deps=phone.replica(group).resolution.order)
    net.settle(group)
    assert bob.replica(group).state.members[bob.person_id].recovery_key == (
        bob.identity.recovery_key
    )


def test_a_crafted_recovery_of_someone_who_is_no_member_is_void() -> None:
    """Eve is in no group: a colluding member writes a recovery of Eve's restored device
    (her own words, a real certificate). It is void and breaks nothing."""
    net = SimNetwork(seed=10)
    group, (phone, bob) = family(net, "alice phone", "bob")
    eve = net.add_device("eve")
    again = restore(net, eve, "eve again")
    certificate = again.identity.recovery_certificate
    assert certificate is not None
    state = bob.replica(group).state
    stay = state.entitled_devices() | {again.device_id}
    op = Op(
        kind=OpKind.ADD_DEVICE,
        devices=(again.grant(),),
        positions=((again.device_id, 0),),
        recovery=certificate.to_bytes(),
        epoch=EpochAnnouncement(state.max_epoch + 1, os.urandom(32), recipients_digest(stay)),
    )
    Hostile.of_sim(bob, group).append_op(op, deps=bob.replica(group).resolution.order)
    net.settle(group)
    for device in (phone, bob):
        assert eve.person_id not in device.replica(group).state.members
        assert again.device_id not in device.replica(group).state.entitled_devices()
