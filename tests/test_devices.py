"""One person, several devices, over real TCP and a real relay on 127.0.0.1: ``Device.link``
(by link and by short code), ``Device.devices()``, ``Device.revoke_device`` from a linked
device, and the typed errors a pairing gives (used twice, expired, mistyped, a member
redeeming an invite)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.errors import (
    AlreadyAMember,
    InviteConsumed,
    InviteExpired,
    InviteUnknown,
    MalformedInvite,
    WrongCode,
)
from microsync.net.relay import RelayServer
from tests.test_net_sync import eventually

Texts = Callable[[microsync.Group], list[str]]


async def opened(stack: AsyncExitStack, path: Path, name: str) -> microsync.Device:
    return await stack.enter_async_context(await microsync.Device.open(path, name=name))


async def phone_online(
    stack: AsyncExitStack, tmp_path: Path
) -> tuple[microsync.Device, microsync.Group]:
    """Alice's phone with a group "Family", listening on 127.0.0.1."""
    phone = await opened(stack, tmp_path / "phone", "Alice phone")
    family = await phone.create_group("Family")
    await phone.start(lan=False, port=0, bind="127.0.0.1")
    return phone, family


def texts(group: microsync.Group) -> list[str]:
    return sorted(p.text for p in group.feed())


async def test_a_laptop_linked_by_link_is_in_every_group_and_syncs(tmp_path: Path) -> None:
    """Why a linked laptop's sync used to match no group: it held the group ids but no key
    and no welcome, so its sync greeting proved nothing. Now the link answer carries the id
    of each add, and the first sync (on the pairing connection) brings the keys."""
    async with AsyncExitStack() as stack:
        phone = await opened(stack, tmp_path / "phone", "Alice phone")
        family = await phone.create_group("Family")
        quiet = await phone.create_group("Quiet", history="none")
        await family.post("before the laptop")
        await phone.start(lan=False, port=0, bind="127.0.0.1")
        pairing = await phone.link_device(ttl=60)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "laptop", pairing.link, name="Alice laptop")
        )
        assert laptop.person_id == phone.person_id and laptop.id != phone.id
        assert {g.id for g in laptop.groups()} == {family.id, quiet.id}
        assert all(g.is_member() for g in laptop.groups())
        assert texts(laptop.group(family.id)) == ["before the laptop"]

        # from then on it syncs like any device: sync_with matches both groups
        await laptop.group(family.id).post("from the laptop")
        result = await laptop.sync_with("127.0.0.1", phone.port or 0)
        assert set(result.groups) == {family.id, quiet.id}
        assert texts(family) == ["before the laptop", "from the laptop"]
        [me] = family.members()
        assert set(me.devices) == {phone.id, laptop.id}

        # both see each other in the device list
        mine = laptop.devices()
        assert [(r.name, r.this, r.revoked) for r in mine] == [
            ("Alice laptop", True, False),
            ("Alice phone", False, False),
        ]
        assert mine[1].last_seen is not None and mine[1].id_prefix == phone.id.hex()[:8]
        assert {r.id for r in phone.devices()} == {phone.id, laptop.id}


async def test_linked_by_short_code_and_live_both_ways(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        phone, family = await phone_online(stack, tmp_path)
        pairing = await phone.link_device(ttl=60)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(
                tmp_path / "laptop",
                str(pairing.code),
                name="Alice laptop",
                at=f"127.0.0.1:{phone.port}",
            )
        )
        on_laptop = laptop.group(family.id)
        await laptop.start(lan=False, port=0, bind="127.0.0.1", peers=(f"127.0.0.1:{phone.port}",))
        await family.post("from the phone")
        await on_laptop.post("from the laptop")
        await family.doc("shopping").list("items").insert(0, "milk")
        await on_laptop.doc("shopping").list("items").insert(0, "eggs")
        both = ["from the laptop", "from the phone"]

        def items(group: microsync.Group) -> list[str]:
            return sorted(group.doc("shopping").list("items").value)

        await eventually(lambda: texts(on_laptop) == both and texts(family) == both)
        await eventually(lambda: items(on_laptop) == ["eggs", "milk"] == items(family))
        await laptop.stop()

    # after a restart: the laptop's profile holds the same, and still syncs
    async with AsyncExitStack() as stack:
        phone = await stack.enter_async_context(await microsync.Device.open(tmp_path / "phone"))
        laptop = await stack.enter_async_context(await microsync.Device.open(tmp_path / "laptop"))
        assert texts(laptop.group(family.id)) == both
        await phone.start(lan=False, port=0, bind="127.0.0.1")
        await phone.group(family.id).post("after the restart")
        result = await laptop.sync_with("127.0.0.1", phone.port or 0)
        assert result.groups == (family.id,)
        assert "after the restart" in texts(laptop.group(family.id))


async def test_linked_through_the_relay_only(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(RelayServer("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{relay.port}"
        phone = await opened(stack, tmp_path / "phone", "Alice phone")
        family = await phone.create_group("Family")
        await family.post("through the relay")
        await phone.start(lan=False, port=None, relay=url)
        pairing = await phone.link_device(ttl=60, addresses=(), relay=url)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "laptop", pairing.link, name="Alice laptop")
        )
        assert texts(laptop.group(family.id)) == ["through the relay"]
        await laptop.group(family.id).post("back through it")
        [done] = await laptop.sync_via_relay(url, timeout=20)
        assert done.groups == (family.id,)
        assert texts(family) == ["back through it", "through the relay"]


async def test_a_linked_laptop_revokes_the_lost_phone(tmp_path: Path) -> None:
    """The laptop holds the person key from the link: it revokes the phone in every group.
    The phone's copy then posts and syncs: nobody shows it, and it reads nothing new."""
    async with AsyncExitStack() as stack:
        phone = await opened(stack, tmp_path / "phone", "Alice phone")
        bob = await opened(stack, tmp_path / "bob", "Bob")
        family = await phone.create_group("Family")
        await phone.start(lan=False, port=0, bind="127.0.0.1")
        invite = await family.invite(ttl=60)
        await bob.join(invite.link)
        pairing = await phone.link_device(ttl=60)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "laptop", pairing.link, name="Alice laptop")
        )
        on_laptop = laptop.group(family.id)
        await on_laptop.post("laptop is in")
        await laptop.sync_with("127.0.0.1", phone.port or 0)
        await phone.stop()  # the phone is lost (still holding its profile)

        await bob.start(lan=False, port=0, bind="127.0.0.1")
        await laptop.sync_with("127.0.0.1", bob.port or 0)
        before = on_laptop.epoch
        with pytest.raises(ValueError, match="matches none"):
            await laptop.revoke_device("ffffffffffff")
        await laptop.revoke_device(phone.id.hex()[:10])
        assert on_laptop.epoch == before + 1
        assert [r.revoked for r in laptop.devices() if r.id == phone.id] == [True]
        with pytest.raises(ValueError, match="itself"):
            await laptop.revoke_device(laptop.id)
        await on_laptop.post("after the phone was lost")
        await laptop.sync_with("127.0.0.1", bob.port or 0)
        on_bob = bob.group(family.id)
        [alice] = [m for m in on_bob.members() if m.person_id == laptop.person_id]
        assert alice.devices == (laptop.id,)

        # the lost phone comes back online, posts and syncs with Bob
        await family.post("written by whoever has the phone")
        await phone.sync_with("127.0.0.1", bob.port or 0)
        assert "written by whoever has the phone" not in texts(on_bob)
        assert "after the phone was lost" not in texts(family)
        await laptop.sync_with("127.0.0.1", bob.port or 0)
        assert "written by whoever has the phone" not in texts(on_laptop)


async def test_pairing_errors_say_which(tmp_path: Path) -> None:
    clock = microsync.testing.FakeClock(microsync.clock.system_clock())
    async with AsyncExitStack() as stack:
        phone = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "phone", name="Alice phone", clock=clock)
        )
        family = await phone.create_group("Family")
        await phone.start(lan=False, port=0, bind="127.0.0.1")
        at = f"127.0.0.1:{phone.port}"
        used = await phone.link_device(ttl=60)
        first = await microsync.Device.link(tmp_path / "one", used.link, name="Alice laptop")
        await first.close()
        with pytest.raises(InviteConsumed, match="already used"):
            await microsync.Device.link(tmp_path / "two", used.link, name="Alice tablet")

        expired = await phone.link_device(ttl=1)
        clock.advance(10 * 60_000)
        with pytest.raises(InviteExpired, match="expired"):
            await microsync.Device.link(tmp_path / "three", expired.link, name="Alice tablet")

        coded = await phone.link_device(ttl=60)
        nameplate, *words = str(coded.code).split("-")
        typo = "abandon" if words[-1] != "abandon" else "ability"  # both BIP39 words
        wrong = "-".join([nameplate, *words[:-1], typo])
        with pytest.raises(WrongCode, match="wrong code"):
            await microsync.Device.link(tmp_path / "four", wrong, name="Alice tablet", at=at)
        with pytest.raises(InviteUnknown):  # the wrong code burned it
            await microsync.Device.link(tmp_path / "five", str(coded.code), name="X", at=at)
        with pytest.raises(MalformedInvite):
            await microsync.Device.link(tmp_path / "six", "seven ocean", name="X", at=at)

        # a device of a member redeeming an invite of that group is told to link instead
        invite = await family.invite(ttl=60)
        async with await microsync.Device.restore(
            tmp_path / "restored", phone.export_recovery_words(), name="Alice again"
        ) as again:
            with pytest.raises(AlreadyAMember, match="microsync devices add"):
                await again.join(invite.link)
        for name in ("two", "three", "four", "five", "six"):
            assert not (tmp_path / name / "profile.db").exists()


async def test_two_devices_each_link_one_at_once_and_all_converge(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        phone, family = await phone_online(stack, tmp_path)
        first = await phone.link_device(ttl=60)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "laptop", first.link, name="Alice laptop")
        )
        await laptop.start(lan=False, port=0, bind="127.0.0.1")
        by_phone, by_laptop = await phone.link_device(ttl=60), await laptop.link_device(ttl=60)
        tablet, watch = await asyncio.gather(
            microsync.Device.link(tmp_path / "tablet", by_phone.link, name="Alice tablet"),
            microsync.Device.link(tmp_path / "watch", by_laptop.link, name="Alice watch"),
        )
        stack.push_async_callback(tablet.close)
        stack.push_async_callback(watch.close)
        everyone = (phone, laptop, tablet, watch)
        for device in (tablet, watch):
            await device.start(lan=False, port=None, peers=(f"127.0.0.1:{phone.port}",))
        laptop.connect(f"127.0.0.1:{phone.port}")

        def devices_of(device: microsync.Device) -> set[bytes]:
            [me] = device.group(family.id).members()
            return set(me.devices)

        ids = {d.id for d in everyone}
        await eventually(lambda: all(devices_of(d) == ids for d in everyone), timeout=20)
        for device in everyone:
            await device.group(family.id).post(f"from {device.name}")
        names = sorted(f"from {d.name}" for d in everyone)
        await eventually(lambda: all(texts(d.group(family.id)) == names for d in everyone), 20)


async def test_a_revocation_racing_a_link_voids_the_link(tmp_path: Path) -> None:
    """The laptop revokes the phone while the phone, not synced since, links a tablet: the
    phone's add comes after its cut-off, so it is void on every device (the tablet reads
    nothing new and nobody shows its posts); all converge on the laptop alone."""
    async with AsyncExitStack() as stack:
        phone, family = await phone_online(stack, tmp_path)
        pairing = await phone.link_device(ttl=60)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "laptop", pairing.link, name="Alice laptop")
        )
        await laptop.revoke_device(phone.id)  # not synced yet: the phone does not know
        racing = await phone.link_device(ttl=60)
        tablet = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "tablet", racing.link, name="Alice tablet")
        )
        await tablet.group(family.id).post("from the tablet")
        await laptop.start(lan=False, port=0, bind="127.0.0.1")
        for device in (phone, tablet):
            await device.sync_with("127.0.0.1", laptop.port or 0)
        await laptop.group(family.id).post("after the revocation")
        for device in (phone, tablet):
            await device.sync_with("127.0.0.1", laptop.port or 0)
        for device in (laptop, phone, tablet):
            [me] = device.group(family.id).members()
            assert me.devices == (laptop.id,)
        assert texts(laptop.group(family.id)) == ["after the revocation"]
        assert "after the revocation" not in texts(tablet.group(family.id))
        assert "after the revocation" not in texts(phone.group(family.id))
