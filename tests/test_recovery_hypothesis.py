"""Hypothesis for the recovery rule (``group/rules.py: may_add_device``), on real profiles
through the public Device API with entries carried by hand (as in
``tests/test_devices_hypothesis.py``; the wire is in ``tests/test_recovery.py``).

The rule is evaluated twice: in the add's causal past (the person had no device left) and in
the fold order of the resolution (a recovery whose person got a device back first is void).
So every replica agrees on who is back, whatever order the entries reach it in."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.errors import DecodeError
from microsync.feed import EntryId, GroupId
from microsync.group.recovery import RecoveryResponse
from microsync.identity import DeviceId
from tests.net_peer import PeerFailed, PeerProcess
from tests.netns import LoopbackNamespace, loopback_unavailable
from tests.sync_helpers import close_all, family, open_devices, run
from tests.test_device_groups import introduce, sync
from tests.test_devices import texts
from tests.test_devices_hypothesis import link, recover_by_hand
from tests.test_net_lan import wait_for


def alice_devices(device: microsync.Device, group: GroupId, person: bytes) -> set[DeviceId]:
    members = device.group(group).members()
    return {d for m in members if m.person_id == person for d in m.devices}


def both_out(root: Path) -> tuple[list[microsync.Device], GroupId, list[str]]:
    """Alice (phone, laptop), Bob and Carol in one group; the phone and the laptop revoke each
    other at once, and Bob and Carol each hear of both: Alice has no device left."""
    phone, bob, carol = open_devices(root, "Alice phone", "Bob", "Carol")
    group = family([phone, bob, carol])
    laptop = link(phone, root, "Alice laptop", group)
    for other in (bob, carol):
        sync(phone, other, group)
    run(phone.revoke_device(laptop.id))
    run(laptop.revoke_device(phone.id))
    for other in (bob, carol):
        sync(phone, other, group)
        sync(laptop, other, group)
    assert alice_devices(bob, group, phone.person_id) == set()
    return [phone, laptop, bob, carol], group, phone.export_recovery_words()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(6)), by_carol=st.booleans())
def test_racing_recoveries_end_alike_in_every_delivery_order(
    order: list[int], by_carol: bool
) -> None:
    """Two devices restored from the words at once, one taken back by Bob and the other by
    Bob or Carol, before either hears of the other. Delivered in any order: every replica
    keeps the same one (the first in the fold order), and the other is void everywhere."""
    root = Path(tempfile.mkdtemp(prefix="microsync-recovery-"))
    devices, group, words = both_out(root)
    _, _, bob, carol = devices
    one = run(microsync.Device.restore(root / "one", words, name="Alice one"))
    two = run(microsync.Device.restore(root / "two", words, name="Alice two"))
    everyone = [*devices, one, two]
    try:
        assert recover_by_hand(one, bob)
        assert recover_by_hand(two, carol if by_carol else bob) is by_carol
        live = [bob, carol, one] + ([two] if by_carol else [])
        pairs = [(a, b) for a in live for b in live if a is not b]
        introduce(*everyone)
        for i in order:
            a, b = pairs[i % len(pairs)]
            sync(a, b, group)
        for _ in range(2):
            for a, b in pairs:
                sync(a, b, group)
        seen = [alice_devices(d, group, one.person_id) for d in live]
        assert all(s == seen[0] for s in seen), seen
        assert len(seen[0]) == 1 and seen[0] <= {one.id, two.id}
        views = {
            d.name: sorted((m.person_id, m.role, m.devices) for m in d.group(group).members())
            for d in live
        }
        assert len({repr(v) for v in views.values()}) == 1, views
    finally:
        close_all(everyone)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("removal_first", [True, False])
def test_a_removal_racing_a_recovery_ends_alike(tmp_path: Path, removal_first: bool) -> None:
    """Bob (the admin) removes Alice, who has no device left, while Carol takes her restored
    device back, neither knowing of the other. In either delivery order, every replica ends
    with Alice out and nothing of the restored device counting."""
    bob, phone, carol = open_devices(tmp_path, "Bob", "Alice phone", "Carol")
    group = family([bob, phone, carol])
    laptop = link(phone, tmp_path, "Alice laptop", group)
    restored: microsync.Device | None = None
    everyone = [bob, phone, carol, laptop]
    try:
        for other in (bob, carol):
            sync(phone, other, group)
        run(phone.revoke_device(laptop.id))
        run(laptop.revoke_device(phone.id))
        for other in (bob, carol):
            sync(phone, other, group)
            sync(laptop, other, group)
        words = phone.export_recovery_words()
        restored = run(microsync.Device.restore(tmp_path / "restored", words, name="Alice"))
        everyone.append(restored)
        run(bob.group(group).remove(phone.person_id))
        assert recover_by_hand(restored, carol)
        sync(carol, restored, group)
        run(restored.group(group).post("back, I think"))
        sync(carol, restored, group)
        introduce(*everyone)
        first, second = (bob, carol) if removal_first else (carol, bob)
        sync(first, second, group)
        for a, b in [(bob, carol), (carol, restored), (bob, restored)]:
            sync(a, b, group)
        for device in (bob, carol):
            members = {m.person_id for m in device.group(group).members()}
            assert phone.person_id not in members
            assert "back, I think" not in texts(device.group(group))
    finally:
        close_all(everyone)


IDS = st.lists(st.binary(min_size=32, max_size=32), max_size=5)


@given(groups=IDS, linked=IDS)
def test_a_recovery_response_round_trips_and_decodes_strictly(
    groups: list[bytes], linked: list[bytes]
) -> None:
    response = RecoveryResponse(
        tuple(GroupId(g) for g in groups),
        tuple(EntryId(bytes(reversed(g))) for g in groups),
        tuple(GroupId(g) for g in linked),
    )
    data = response.to_bytes()
    assert RecoveryResponse.from_bytes(data) == response
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            RecoveryResponse.from_bytes(data[:cut])
    uneven = RecoveryResponse(response.groups, (*response.adds, EntryId(bytes(32))), ())
    with pytest.raises(DecodeError, match="one add per group"):
        RecoveryResponse.from_bytes(uneven.to_bytes())


def test_restored_on_a_lan_finds_a_member_and_is_taken_back(tmp_path: Path) -> None:
    """Real multicast DNS in a loopback-only namespace, each device a process
    (``tests/net_peer.py``), no address given: Bob announces a tag for Alice (she has no device
    left in Family), the device restored from her words looks for it, reaches Bob, and is back
    in Family. (Bob and Carol are prepared in this process beforehand.)"""
    reason = loopback_unavailable()
    if reason:
        pytest.skip(reason)
    devices, group, words = both_out(tmp_path)
    restored = run(microsync.Device.restore(tmp_path / "restored", words, name="Alice again"))
    close_all([*devices, restored])
    started: list[PeerProcess] = []
    with LoopbackNamespace() as namespace:
        anchor = namespace.run(["sh", "-c", "echo inside && exec sleep 600"])
        assert anchor.next_line(10) == "inside", "".join(anchor.stderr)
        join = ["nsenter", "-t", str(anchor.popen.pid), "-n"]
        if os.geteuid() != 0:
            join[1:1] = ["-U", "--preserve-credentials"]
        try:
            for name in ("Bob", "restored"):
                options = ["--lan", "--interface", "127.0.0.1", "--bind", "127.0.0.1"]
                started.append(
                    PeerProcess(tmp_path / name, name, *options, prefix=[*join, "--"], ready=0)
                )
            _, alice = (peer.wait_ready() for peer in started)

            def back() -> bool:
                try:
                    state = alice.ask("state", group=group.hex())
                except PeerFailed:
                    return False  # not in the group yet
                return state["entries"] > 0 and "Alice phone" in state["members"]

            wait_for(back)
        finally:
            for peer in started:
                peer.stop()
