"""``Group.exit()`` (issue 17, item 11): a device out of a group is told how, by whom and when:
removed by an admin, left (from this or another of the person's devices), or revoked. Read-only
over the membership resolution; an ``"exit"`` event when it happens. Real profiles."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from pathlib import Path

import microsync
from microsync.cli.servelog import GroupLog
from microsync.group.invite import PairingGuest
from microsync.group.join import DeviceCandidate
from microsync.node import Group, GroupExit
from tests.test_device_groups import introduce, pair, sync


async def _family(founder: microsync.Device, *others: microsync.Device) -> Group:
    group = await founder.create_group("Family")
    introduce(founder, *others)
    for device in others:
        invite = await group.invite(ttl=3600)
        response = pair(founder.invite_host().session(), device.join_guest(invite.link))
        await device.finish_join(response)
        sync(founder, device, group.id)
    for device in others:
        sync(founder, device, group.id)
    return group


async def test_removed_by_an_admin_says_who_and_emits_an_event(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "a", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "b", name="Bob") as bob,
    ):
        family = await _family(alice, bob)
        mine = bob.group(family.id)
        assert mine.is_member() and mine.exit() is None
        events = mine.events()
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        before = datetime.now().astimezone()
        await family.remove(bob.person_id)
        sync(alice, bob, family.id)
        gone = mine.exit()
        assert gone is not None and not mine.is_member()
        assert (gone.how, gone.by, gone.by_name) == ("removed", alice.person_id, "Alice")
        assert gone.at is not None and abs(gone.at - before) < timedelta(seconds=30)
        assert gone.sentence("Family") == "you were removed from Family by Alice"
        kinds = [await asyncio.wait_for(first, 5)]
        while kinds[-1].kind != "exit":
            kinds.append(await asyncio.wait_for(anext(events), 5))
        assert kinds[-1].detail == gone and kinds[-1].person == alice.person_id
        line = GroupLog(mine, show_text=False).line(kinds[-1])  # what `serve` prints
        assert line == "[Family] you were removed from Family by Alice"
        await events.aclose()
        assert family.exit() is None  # Alice is still in


async def test_left_and_revoked(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "a", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "b", name="Bob") as bob,
    ):
        family = await _family(alice, bob)
        await bob.group(family.id).leave()
        left = bob.group(family.id).exit()
        assert isinstance(left, GroupExit)
        assert (left.how, left.by, left.by_name) == ("left", bob.person_id, "Bob")
        assert left.sentence("Family") == "you left Family"
        sync(alice, bob, family.id)
        assert family.exit() is None and [m.name for m in family.members()] == ["Alice"]


async def test_a_revoked_device_is_told_it_was_revoked(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "a", name="Alice") as phone:
        family = await phone.create_group("Family")
        pairing = await phone.link_device(ttl=60)
        candidate = DeviceCandidate.generate("Alice laptop", os.urandom, 0)
        guest = PairingGuest.for_link(pairing.link, request=candidate.request().to_bytes())
        response = pair(phone.invite_host().session(), guest)
        async with await microsync.Device.complete_link(
            tmp_path / "l", candidate, response
        ) as laptop:
            sync(phone, laptop, family.id)
            await phone.revoke_device(laptop.id)
            sync(phone, laptop, family.id)
            out = laptop.group(family.id).exit()
            assert out is not None and (out.how, out.by, out.by_name) == (
                "revoked",
                phone.person_id,
                "Alice",
            )
            assert out.sentence("Family") == "this device was revoked from Family (by Alice)"
