"""Hypothesis over sequences of link / restore / revoke / post / sync across 1-4 devices of
Alice and one other member (Bob), on real profiles through the public Device API (the entries are
carried by hand, as in ``tests/test_device_groups.py``; the wire is tested in
``tests/test_devices.py``). A restore is taken back by one of Alice's devices (a link) or by
Bob (a recovery by the words, revoking every other device of Alice he sees). After everyone
has synced with everyone: every device still admitted and Bob agree on the members and show
the same posts; no device shows a post written by a device that already knew it was revoked;
no device a recovery revoked is admitted, and nobody admitted shows what it posted after."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

import microsync
from microsync.errors import RecoveryRefused
from microsync.feed import GroupId
from microsync.group.invite import PairingGuest
from microsync.group.invite.payloads import JoinRequest
from microsync.group.join import DeviceCandidate
from microsync.group.recovery import RecoveryGuest
from microsync.identity import DeviceId
from microsync.node.recovery import hold_recovered, recovery_callback
from tests.sync_helpers import close_all, family, open_devices, run
from tests.test_device_groups import introduce, pair, sync

MAX_ALICE_DEVICES = 4


class Devices(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="microsync-devices-"))
        self.alice_first, self.bob = open_devices(self.root, "Alice phone", "Bob")
        self.group: GroupId = family([self.alice_first, self.bob])
        self.alice = [self.alice_first]
        self.restores = 0
        self.posts: list[tuple[str, frozenset[DeviceId]]] = []  # text, whom the writer knew revoked
        self.taken_over: set[DeviceId] = set()  # revoked by a recovery (Bob saw them then)
        self.after_takeover: list[tuple[str, DeviceId]] = []  # posts by such a device, later

    def everyone(self) -> list[microsync.Device]:
        return [*self.alice, self.bob]

    def alice_devices(self, device: microsync.Device) -> set[DeviceId]:
        """Alice's devices as ``device`` sees them."""
        members = device.group(self.group).members()
        return {d for m in members if m.person_id == self.alice_first.person_id for d in m.devices}

    @precondition(lambda self: len(self.alice) < MAX_ALICE_DEVICES)
    @rule(data=st.data())
    def link_one(self, data: st.DataObject) -> None:
        # any device links, also one revoked without knowing it (its link is void, and so is
        # a link made by the device it linked: test_a_link_by_a_void_device_is_void)
        by = data.draw(st.sampled_from(self.alice))
        if not by.group(self.group).is_member():
            return
        name = f"Alice device {len(self.alice)}"
        self.alice.append(link(by, self.root, name, self.group))

    @precondition(lambda self: len(self.alice) < MAX_ALICE_DEVICES)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        # a new device from the words asks a member's device to take it back: one of Alice's
        # own (that is a link) or Bob's (a recovery: it revokes every other device of Alice
        # Bob sees, whatever state they are in; Bob is drawn more often)
        by = data.draw(st.sampled_from([self.bob, self.bob, *self.everyone()]))
        if not by.group(self.group).is_member():
            return
        self.restores += 1
        name = f"Alice restored {self.restores}"
        words = self.alice_first.export_recovery_words()
        restored = run(microsync.Device.restore(self.root / name, words, name=name))
        by_bob = by.person_id != restored.person_id
        if by_bob:
            self.taken_over |= self.alice_devices(by)
        assert recover_by_hand(restored, by)
        event("restored by Alice's device" if not by_bob else "recovered by Bob")
        sync(by, restored, self.group)
        self.alice.append(restored)

    @precondition(lambda self: len(self.alice) >= 2)
    @rule(data=st.data())
    def revoke_each_other(self, data: st.DataObject) -> None:
        # two of Alice's devices revoke each other before either hears of the other's
        a, b = data.draw(st.permutations(self.alice).map(lambda p: p[:2]))
        if not (a.group(self.group).is_member() and b.group(self.group).is_member()):
            return
        if b.id in self.alice_devices(a) and a.id in self.alice_devices(b):
            run(a.revoke_device(b.id))
            run(b.revoke_device(a.id))
            sync(a, self.bob, self.group)  # then both reach Bob
            sync(b, self.bob, self.group)
            event("both out" if not self.alice_devices(self.bob) else "one left")

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        by = data.draw(st.sampled_from(self.alice))
        target = data.draw(st.sampled_from(self.alice))
        if target is by or target.id not in self.alice_devices(by):
            return
        if not by.group(self.group).is_member():
            return
        run(by.revoke_device(target.id))

    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        by = data.draw(st.sampled_from(self.everyone()))
        group = by.group(self.group)
        if not group.is_member():
            return
        text = f"post {len(self.posts)} by {by.name}"
        gone = {r.id for r in by.devices() if r.revoked}  # as far as the writer knows
        run(group.post(text))
        self.posts.append((text, frozenset(gone)))
        if by.id in self.taken_over:
            self.after_takeover.append((text, by.id))

    @rule(data=st.data())
    def sync_two(self, data: st.DataObject) -> None:
        a, b = data.draw(st.permutations(self.everyone()).map(lambda p: p[:2]))
        sync(a, b, self.group)

    def teardown(self) -> None:
        try:
            self.check()
        finally:
            close_all(self.everyone())
            shutil.rmtree(self.root, ignore_errors=True)

    def check(self) -> None:
        everyone = self.everyone()
        introduce(*everyone)
        for _ in range(3):
            for a in everyone:
                for b in everyone:
                    if a is not b:
                        sync(a, b, self.group)
        kept = self.alice_devices(self.bob)
        current = [d for d in self.alice if d.id in kept] + [self.bob]
        views = {
            d.name: (
                sorted(
                    (m.person_id, m.role, tuple(sorted(m.devices)))
                    for m in d.group(self.group).members()
                ),
                sorted(p.text for p in d.group(self.group).feed()),
            )
            for d in current
        }
        assert len({repr(v) for v in views.values()}) == 1, views
        assert not kept & self.taken_over  # a recovery is decisive
        for device in current:
            shown = {p.text for p in device.group(self.group).feed()}
            assert not shown & {text for text, _ in self.after_takeover}, device.name
        for device in everyone:
            shown = {p.text for p in device.group(self.group).feed()}
            for text, gone in self.posts:
                if device.id in gone:
                    assert text not in shown, (device.name, text)


def recover_by_hand(restored: microsync.Device, member: microsync.Device) -> bool:
    """One recovery of ``restored`` by ``member``, both in this process (the handshake hash
    stands in for a session's); ``False`` when the member refuses it."""
    identity = restored._identity
    assert identity.person_key is not None and identity.recovery_certificate is not None
    session = hashlib.sha256(identity.device_id + member.id).digest()
    request = JoinRequest.of(identity).to_bytes()
    certificate = identity.recovery_certificate
    guest = RecoveryGuest(request, identity.person_key, session, certificate)
    host = member.invite_host().session(
        recover=recovery_callback(member, identity.certificate, session)
    )
    try:
        reply = host.receive(guest.start(), now=member.clock())
    except RecoveryRefused:
        return False
    hold_recovered(restored, guest.receive(reply))
    return True


def link(by: microsync.Device, root: Path, name: str, group: GroupId) -> microsync.Device:
    pairing = run(by.link_device(ttl=3600))
    candidate = DeviceCandidate.generate(name, os.urandom, by.clock())
    guest = PairingGuest.for_link(pairing.link, request=candidate.request().to_bytes())
    response = pair(by.invite_host().session(), guest)
    linked = run(microsync.Device.complete_link(root / name, candidate, response))
    sync(by, linked, group)
    return linked


def test_a_link_by_a_void_device_is_void(tmp_path: Path) -> None:
    """The laptop revokes the phone; the phone, not knowing, links a tablet (void: after its
    cut-off); the tablet links a watch. The watch must be void too."""
    phone, bob = open_devices(tmp_path, "Alice phone", "Bob")
    group = family([phone, bob])
    laptop = link(phone, tmp_path, "Alice laptop", group)
    run(laptop.revoke_device(phone.id))
    tablet = link(phone, tmp_path, "Alice tablet", group)
    watch = link(tablet, tmp_path, "Alice watch", group)
    everyone = [phone, laptop, tablet, watch, bob]
    try:
        introduce(*everyone)
        for _ in range(2):
            for a in everyone:
                for b in everyone:
                    if a is not b:
                        sync(a, b, group)
        [alice] = [m for m in bob.group(group).members() if m.person_id == phone.person_id]
        assert alice.devices == (laptop.id,)
    finally:
        close_all(everyone)


TestDevices = Devices.TestCase
TestDevices.settings = settings(
    max_examples=20,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
