"""Recovery by the words, the parts that are not the rule (``tests/test_recovery_rule.py``
has the rule in every delivery order; ``tests/test_recovery.py`` the wire): whom a device
serves recoveries for (bounded), the response codec, and the LAN in separate processes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import microsync
from microsync.errors import DecodeError
from microsync.feed import EntryId, GroupId
from microsync.group.recovery import RecoveryResponse
from microsync.identity import PersonId
from microsync.node.recovery import (
    MAX_RECOVERY_PERSONS,
    recoverable_persons,
    recovery_rendezvous,
    recovery_rendezvous_ids,
    recovery_tag,
    recovery_tags,
    rotate,
)
from microsync.testing import SimNetwork
from tests.net_peer import PeerFailed, PeerProcess
from tests.netns import LoopbackNamespace, loopback_unavailable
from tests.sync_helpers import close_all, family, open_devices, run
from tests.test_net_lan import wait_for


def phone_lost(root: Path) -> tuple[list[microsync.Device], GroupId, list[str]]:
    """Alice's phone (her only device, the only admin) and Bob in one group; returns the
    devices, the group and Alice's words (the phone is then simply not started again)."""
    phone, bob = open_devices(root, "Alice phone", "Bob")
    group = family([phone, bob])
    return [phone, bob], group, phone.export_recovery_words()


def test_recovery_is_served_for_a_bounded_set_of_persons(tmp_path: Path) -> None:
    """Bob serves recoveries (relay rendezvous ids, LAN tags) for the other members of his
    small groups; on the LAN at most MAX_RECOVERY_TAGS a time bucket, a different slice each
    bucket, so everyone is announced in turn."""
    devices, _, _ = phone_lost(tmp_path)
    phone, bob = devices
    try:
        assert recoverable_persons(bob) == {phone.person_id}
        assert recovery_rendezvous_ids(bob) == {recovery_rendezvous(phone.person_id)}
        assert recovery_tags(bob, 7, looking=False) == [recovery_tag(phone.person_id, 7)]
        assert recovery_tags(bob, 7, looking=False, room=0) == []
        assert recovery_tags(bob, 7, looking=True) == []  # not recovering: looks for nothing
    finally:
        close_all(devices)


def test_in_a_group_of_21_the_members_together_serve_everyone() -> None:
    """Each device serves at most MAX_RECOVERY_PERSONS (16) of its 20 co-members at a relay,
    a different choice per device, so every member is served by someone."""
    net = SimNetwork(seed=21)
    devices = [net.add_device(f"m{i}") for i in range(21)]
    group = net.create_group(devices[0], "Big family")
    for device in devices[1:]:
        devices[0].replica(group).add(
            device.person_id,
            device.name,
            [device.grant()],
            now=net.clock.advance(),
            recovery_key=device.identity.recovery_key,
        )
    net.settle(group)
    served: list[set[PersonId]] = []
    for device in devices:
        face = SimpleNamespace(
            id=device.device_id,
            groups=lambda d=device: [SimpleNamespace(_replica=d.replica(group))],
        )
        served.append(recoverable_persons(face))  # type: ignore[arg-type]
    assert all(len(s) == MAX_RECOVERY_PERSONS for s in served)
    assert len({frozenset(s) for s in served}) > 1
    assert set().union(*served) == {d.person_id for d in devices}


@given(count=st.integers(1, 40), room=st.integers(1, 8))
def test_lan_tags_take_turns(count: int, room: int) -> None:
    """The slice rotation alone: over enough buckets every person is announced."""
    persons = [PersonId(bytes([i]) * 32) for i in range(count)]
    seen: set[bytes] = set()
    for bucket in range(count):
        seen |= set(rotate(persons, bucket, room))
    assert len(rotate(persons, 3, room)) == min(room, count)
    assert seen == set(persons)


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
    (``tests/net_peer.py``), no address given: Bob announces a tag for Alice (a member of his
    small group with a registered recovery key), the device restored from her words looks for
    it, reaches Bob, and is back in Family, her lost phone revoked. (Prepared in this
    process beforehand.)"""
    reason = loopback_unavailable()
    if reason:
        pytest.skip(reason)
    devices, group, words = phone_lost(tmp_path)
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
                return state["entries"] > 0 and "Alice phone" in state["members"]  # her name

            wait_for(back)
        finally:
            for peer in started:
                peer.stop()
