"""Who can get which key, after the fact: key requests from former devices, keys of void
epochs, key responses passed on by devices that are out, and two devices of one person revoking
each other (docs/membership.md, "Key requests" and rule 4)."""

from __future__ import annotations

from typing import Any

import pytest

from microsync.errors import NotAMember
from microsync.group.keys import EpochKey, KeyGrant, Purpose, Recipient, open_bundle, seal_bundle
from microsync.group.ops import Role
from microsync.testing import SimNetwork


def test_two_devices_of_one_person_revoking_each_other_are_both_out() -> None:
    net = SimNetwork(11)
    a, b = net.add_device("a"), net.add_device("b")
    b2 = net.add_linked_device(b, "b2")
    group = net.create_group(a)
    a.replica(group).add(b.person_id, "B", [b.grant(), b2.grant()], now=net.clock.advance())
    net.settle(group)
    epochs_before = set(a.replica(group).state.epochs)
    one = b.replica(group).revoke_device(b.revoke(b2, net.clock.now), now=net.clock.advance())
    two = b2.replica(group).revoke_device(b2.revoke(b, net.clock.now), now=net.clock.advance())
    net.settle(group)
    net.check_convergence(group)
    for device in (a, b, b2):
        replica = device.replica(group)
        state = replica.state
        # both are out, the person stays with no device, and neither revocation counts
        assert set(state.revoked) == {b.device_id, b2.device_id}
        assert state.entitled_devices() == {a.device_id}
        assert state.members[b.person_id].devices == {}
        assert one.id not in replica.resolution.effective
        assert two.id not in replica.resolution.effective
        assert {one.id, two.id} <= replica.resolution.valid
        assert set(state.epochs) == epochs_before  # neither started an epoch
    assert not b.replica(group).is_member and not b2.replica(group).is_member
    with pytest.raises(NotAMember):
        b.replica(group).rotate(now=net.clock.advance())
    # the next writer rotates without them
    post = a.replica(group).append_content(100, b"after both", now=net.clock.advance())
    net.settle(group)
    [report] = [r for r in net.entitlement_report(group) if r.entry.id == post.id]
    assert report.readers == {"a"}
    # an admin brings the person back with a new device: remove, then add again
    b3 = net.add_linked_device(b, "b3")
    a.replica(group).remove(b.person_id, now=net.clock.advance())
    a.replica(group).add(b.person_id, "B", [b3.grant()], now=net.clock.advance())
    net.settle(group)
    assert b3.replica(group).is_member
    assert b3.replica(group).state.entitled_devices() == {a.device_id, b3.device_id}


def test_a_removed_member_gets_only_the_control_keys_sealing_its_removal() -> None:
    net = SimNetwork(12)
    a, b, c = net.add_device("a"), net.add_device("b"), net.add_device("c")
    group = net.create_group(a)
    admin = a.replica(group)
    admin.add(b.person_id, "B", [b.grant()], now=net.clock.advance())
    admin.add(c.person_id, "C", [c.grant()], now=net.clock.advance())
    net.settle(group)
    before = admin.rotate(now=net.clock.advance())  # b got this epoch's key
    removal = admin.remove(b.person_id, now=net.clock.advance())
    later = admin.rotate(now=net.clock.advance())  # after b's exit
    net.settle(group)
    keys = admin.epoch_keys()
    [sealing] = [k for (n, _), k in keys.items() if n == before.header.epoch + 1]
    [after] = [k for (n, _), k in keys.items() if n == later.header.epoch + 1]
    assert removal.header.epoch == sealing.number
    # b asks for the key sealing its removal (it holds it; drop it to ask again) ...
    response = admin.answer_key_request(b.device_id, [(sealing.number, sealing.commitment)])
    purpose, epoch, bundle = response
    grants = open_bundle(
        bundle,
        group=group,
        epoch=epoch,
        sender=a.device_id,
        purpose=purpose,
        me=b.device_id,
        prekeys=b.member.prekeys,
    )
    [grant] = grants
    opened = grant.open(group)
    assert opened.commitment == sealing.commitment and opened.root is None  # control only
    # ... but nothing from after its exit, and no content key at all
    with pytest.raises(NotAMember):
        admin.answer_key_request(b.device_id, [(after.number, after.commitment)])
    assert not b.replica(group).is_member
    post = admin.append_content(100, b"without b", now=net.clock.advance())
    net.settle(group)
    [report] = [r for r in net.entitlement_report(group) if r.entry.id == post.id]
    assert "b" not in report.readers and {"a", "c"} <= report.readers
    # a device no operation admitted gets nothing
    stranger = net.add_device("stranger")
    with pytest.raises(NotAMember):
        admin.answer_key_request(stranger.device_id, [(sealing.number, sealing.commitment)])


def test_a_void_epochs_key_is_handed_out_as_a_control_key_only() -> None:
    net = SimNetwork(13)
    a, c, d = net.add_device("a"), net.add_device("c"), net.add_device("d")
    group = net.create_group(a)  # history "shared": content keys would normally go out
    admin = a.replica(group)
    admin.add(c.person_id, "C", [c.grant()], role=Role.ADMIN, now=net.clock.advance())
    net.settle(group)
    void = c.replica(group).rotate(now=net.clock.advance())  # unseen by a ...
    admin.remove(c.person_id, now=net.clock.advance())  # ... so this voids it
    leave = c.replica(group).leave(now=net.clock.advance())  # sealed under the void epoch
    admin.add(d.person_id, "D", [d.grant()], now=net.clock.advance())
    net.settle(group)
    slot = next(
        (n, k.commitment)
        for (n, _), k in a.replica(group).epoch_keys().items()
        if n == void.header.epoch + 1 and (n, k.commitment) not in admin.state.epochs
    )
    assert slot in admin.resolution.void_epochs(
        {i: r for i in admin.resolution.order if (r := admin.operation(i)) is not None}
    )
    # d opened the leave through a control key of the void epoch, never its content key
    # (the leave lies past the cut-off of c's removal: opened, but it does not count)
    assert leave.id in d.replica(group).resolution.order
    assert leave.id not in d.replica(group).resolution.effective
    held = d.replica(group).epoch_keys().get(slot)
    assert held is not None and held.root is None
    response = admin.answer_key_request(d.device_id, [slot])
    assert d.replica(group).accept_key_response(a.device_id, response) == 0
    assert d.replica(group).epoch_keys()[slot].root is None
    net.check_convergence(group, strict=True)


def test_keys_passed_on_by_a_device_that_is_out_are_checked_by_commitment() -> None:
    net = SimNetwork(14)
    a, b, c = net.add_device("a"), net.add_device("b"), net.add_device("c")
    group = net.create_group(a, history="none")
    admin = a.replica(group)
    admin.add(b.person_id, "B", [b.grant()], now=net.clock.advance())
    net.settle(group)
    admin.remove(b.person_id, now=net.clock.advance())
    admin.add(c.person_id, "C", [c.grant()], now=net.clock.advance())  # control keys only
    net.settle(group)
    [(slot, real)] = [(s, k) for s, k in b.replica(group).epoch_keys().items() if s[0] == 1]
    mine = c.replica(group)
    assert mine.epoch_keys()[slot].root is None
    info = mine.state.device(c.device_id)
    assert info is not None

    def passed_on(grant: KeyGrant) -> Any:
        bundle = seal_bundle(
            b.member.rng,
            group=group,
            epoch=1,
            sender=b.device_id,
            purpose=Purpose.KEY_RESPONSE,
            recipients=[Recipient(c.device_id, info.prekey_id, info.prekey)],
            grants=[grant],
        )
        return Purpose.KEY_RESPONSE, 1, bundle

    # a rogue key from the former member is ignored ...
    rogue = EpochKey.from_root(group, 1, b"\x66" * 32)
    before = mine.epoch_keys()
    assert mine.accept_key_response(b.device_id, passed_on(KeyGrant.of(rogue, True))) == 0
    assert mine.epoch_keys() == before
    # ... the real one (its commitment was announced) is taken, whoever passed it on
    assert mine.accept_key_response(b.device_id, passed_on(KeyGrant.of(real, True))) == 1
    assert mine.epoch_keys()[slot].root == real.root
