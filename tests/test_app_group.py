"""The app primitives through the public Group API on real SQLite profiles: posts, replies,
reactions, edits, delete-for-everyone, disappearing posts, read cursors, events. Entries are
passed between devices by hand (the sync issue carries them over Noise)."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
import microsync.app.events
from microsync.app.events import DocChanged, EventKind, Posted, Replied
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.app.timeline import deps_for
from microsync.clock import Clock, system_clock
from microsync.errors import NotAMember
from microsync.feed.entry import EntryId
from microsync.group.invite import PairingGuest
from microsync.group.join import DeviceCandidate
from microsync.testing import FakeClock, app_state, replica_of, store_of
from tests.test_device_groups import introduce, pair, sync


async def linked_device(
    stack: AsyncExitStack, root: Path, group: microsync.Group, *others: microsync.Group
) -> microsync.Group:
    """A second device of ``group``'s person ("<name> laptop", under ``root``), linked in this
    process, introduced to ``others``' devices and synced with the first: its ``group``."""
    phone = group.device
    pairing = await phone.link_device(ttl=60)
    candidate = DeviceCandidate.generate(f"{phone.name} laptop", os.urandom, 0)
    guest = PairingGuest.for_link(pairing.link, request=candidate.request().to_bytes())
    response = pair(phone.invite_host().session(), guest)
    laptop = await stack.enter_async_context(
        await microsync.Device.complete_link(root / f"{phone.name}-laptop", candidate, response)
    )
    introduce(phone, laptop, *(o.device for o in others))
    sync(phone, laptop, group.id)
    return laptop.group(group.id)


async def family_of(
    stack: AsyncExitStack, root: Path, *names: str, clock: Clock | None = None
) -> list[microsync.Group]:
    """Devices named ``names`` in one group founded by the first; returns each one's Group.
    All of them read the time from ``clock`` when one is given."""
    devices = [
        await stack.enter_async_context(await microsync.Device.open(root / n, name=n, clock=clock))
        for n in names
    ]
    founder = devices[0]
    family = await founder.create_group("Family")
    groups = [family]
    for device in devices[1:]:
        introduce(*devices)
        invite = await family.invite(ttl=3600)
        response = pair(founder.invite_host().session(), device.join_guest(invite.link))
        groups.append(await device.finish_join(response))
        sync(founder, device, family.id)
    for device in devices[1:]:
        sync(founder, device, family.id)
    return groups


def devices_of(*groups: microsync.Group) -> list[microsync.Device]:
    return [g.device for g in groups]


def share(*groups: microsync.Group) -> None:
    devices = devices_of(*groups)
    for a in devices:
        for b in devices:
            if a is not b:
                sync(a, b, groups[0].id)


def raw_profile_bytes(device: microsync.Device) -> bytes:
    directory = device.path
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


async def test_posts_replies_reactions_and_edits_reach_every_member(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        post = await alice.post("Landed in Oxford")
        share(alice, bob, carol)
        reply = await bob.reply(post.id, "Welcome back!")
        await carol.react(post.id, "❤️")
        await bob.react(post.id, "❤️")
        share(alice, bob, carol)
        nested = await alice.reply(reply.id, "Thanks!")
        await alice.edit(post.id, "Landed in Oxford, finally")
        share(alice, bob, carol)
        for group in (alice, bob, carol):
            seen = group.post_by_id(post.id)
            assert seen.text == "Landed in Oxford, finally" and seen.edited
            assert seen.author_name == "Alice"
            assert seen.reactions == {
                "❤️": frozenset({bob.device.person_id, carol.device.person_id})
            }
            assert [p.id for p in group.thread(post.id)] == [reply.id, nested.id]
            assert group.feed()[0].id == nested.id  # newest first
        await bob.unreact(post.id, "❤️")
        share(alice, bob, carol)
        assert alice.post_by_id(post.id).reactions == {"❤️": frozenset({carol.device.person_id})}


async def test_nobody_edits_deletes_or_unreacts_for_someone_else(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        post = await alice.post("mine")
        await alice.react(post.id, "👍")
        share(alice, bob)
        with pytest.raises(NotAMember):
            await bob.edit(post.id, "hijacked")
        with pytest.raises(NotAMember):
            await bob.delete(post.id)
        # a hand-crafted withdrawal of Alice's reaction, signed by Bob, bypassing the API
        tags = tuple(
            app_state(bob)
            .timeline(bob.device.clock())
            .posts[EntryId(post.id)]
            .reactions["👍"][alice.device.person_id]
        )
        op = AppOp(Kind.UNREACT, post=post.id, emoji="👍", removes=tags)
        replica_of(bob).append_content(
            APP_TYPE,
            op.to_bytes(),
            now=bob.device.clock(),
            deps=deps_for(op, app_state(bob).timeline(bob.device.clock()).heads),
        )
        share(alice, bob)
        for group in (alice, bob):
            seen = group.post_by_id(post.id)
            assert seen.text == "mine" and not seen.deleted
            assert seen.reactions == {"👍": frozenset({alice.device.person_id})}


async def test_delete_for_everyone_purges_the_body_from_every_disk(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        secret = "the door code is 4711-SECRET"
        post = await alice.post(secret)
        await alice.edit(post.id, secret + " (edited)")
        share(alice, bob)
        bodies = [
            s.body
            for d in devices_of(alice)
            for s in store_of(d).entries(alice.id, d.id)
            if s.entry.header.type == APP_TYPE and s.body is not None
        ]
        assert len(bodies) == 2
        for device in devices_of(alice, bob):
            assert all(b in raw_profile_bytes(device) for b in bodies)  # stored, encrypted
        await alice.delete(post.id)
        share(alice, bob)
        for group in (alice, bob):
            seen = group.post_by_id(post.id)
            assert seen.deleted and seen.text is None
            assert post.id not in [p.id for p in group.feed()]
            raw = raw_profile_bytes(group.device)
            assert secret.encode() not in raw
            for body in bodies:
                assert body not in raw and body[-32:] not in raw  # not even a fragment
        # and it stays deleted after a restart
        path = bob.device.path
        await bob.device.close()
        async with await microsync.Device.open(path) as again:
            seen = again.group(alice.id).post_by_id(post.id)
            assert seen.deleted and seen.text is None


async def test_disappearing_posts_are_purged_after_their_time(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        clock = FakeClock(system_clock())
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob", clock=clock)
        post = await alice.post("gone in a minute", ttl=60)
        share(alice, bob)
        assert bob.post_by_id(post.id).text == "gone in a minute"
        clock.advance(61_000)
        for group in (alice, bob):
            assert post.id not in [p.id for p in group.feed()]
            assert group.post_by_id(post.id).text is None
            assert b"gone in a minute" not in raw_profile_bytes(group.device)
            stored = store_of(group.device).entry_at(
                group.id, alice.device.id, 0 + _seq(alice, post.id)
            )
            assert stored is not None and stored.body is None


def _seq(group: microsync.Group, post_id: bytes) -> int:
    return app_state(group).timeline(group.device.clock()).posts[EntryId(post_id)].seq


async def test_read_cursors_give_exactly_the_unseen_posts_across_restarts(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        first = await alice.post("one")
        second = await alice.post("two")
        await bob.post("my own post is never unread")
        share(alice, bob)
        assert bob.unread_count() == 2
        assert [p.id for p in bob.feed(since="last_opened")] == [second.id, first.id]
        assert bob.unread_count() == 0 and bob.feed(since="last_opened") == []
        third = await alice.post("three")
        share(alice, bob)
        path = bob.device.path
        await bob.device.close()
        async with await microsync.Device.open(path) as again:
            group = again.group(alice.id)
            assert group.unread_count() == 1
            assert [p.id for p in group.feed(since="last_opened")] == [third.id]
            assert group.unread_count() == 0


async def test_events_arrive_as_entries_are_applied(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        stream = bob.events()
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        post = await alice.post("ping")
        share(alice, bob)
        event = await asyncio.wait_for(waiting, 5)
        assert event.kind == "post" and event.post is not None and event.post.id == post.id
        await alice.react(post.id, "🎉")
        share(alice, bob)
        event = await asyncio.wait_for(anext(stream), 5)
        assert event.kind == "reaction" and event.post is not None
        assert event.post.reactions == {"🎉": frozenset({alice.device.person_id})}
        assert isinstance(event, microsync.app.events.Reacted)
        await stream.aclose()


async def test_each_event_kind_is_its_own_class(tmp_path: Path) -> None:
    """Events match on their classes; ``kind``, ``post``, ``person`` and ``detail`` read as
    they did when ``Event`` was one class with a string ``kind``."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        stream = bob.events()
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        post = await alice.post("ping")
        await alice.reply(post.id, "pong")
        await alice.doc("calendar").set("monday", "swim")
        share(alice, bob)
        seen = [await asyncio.wait_for(waiting, 5)]
        seen += [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
        await stream.aclose()
        described = []
        for event in seen:
            assert isinstance(event, microsync.Event)  # the union of every kind
            match event:
                case Posted(post=shown) | Replied(post=shown):
                    assert shown is not None and event.detail is None
                    described.append((event.kind, shown.text))
                case DocChanged(doc=name):
                    assert event.post is None and event.detail == name
                    described.append((event.kind, name))
                case _:
                    raise AssertionError(f"unexpected {event!r}")
            assert event.person == alice.device.person_id
        # (in one batch, document events come before the posts')
        assert sorted(described) == [("doc", "calendar"), ("post", "ping"), ("reply", "pong")]
        assert {e.kind for e in seen} == {EventKind.POST, EventKind.REPLY, EventKind.DOC}


async def test_read_cursors_sync_across_a_persons_own_devices(tmp_path: Path) -> None:
    """Reading on the phone marks the posts read on the laptop too (the cursor is an entry of
    the person's feed); someone else's cursor never counts for this person."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        phone = alice.device
        laptop = await linked_device(stack, tmp_path, alice, bob)
        laptop_device = laptop.device
        first = await bob.post("one")
        second = await bob.post("two")
        share(alice, bob)
        sync(phone, laptop_device, alice.id)
        assert laptop.unread_count() == 2 and alice.unread_count() == 2
        assert [p.id for p in alice.feed(since="last_opened")] == [second.id, first.id]
        assert bob.unread_count() == 0  # bob's own posts
        sync(phone, laptop_device, alice.id)
        assert laptop.unread_count() == 0
        assert laptop.feed(since="last_opened") == []
        third = await bob.post("three")
        share(alice, bob)
        sync(phone, laptop_device, alice.id)
        assert [p.id for p in laptop.feed(since="last_opened")] == [third.id]
        sync(phone, laptop_device, alice.id)
        assert alice.unread_count() == 0
        # bob reading alice's posts does not mark anything read for alice
        await alice.post("from alice")
        share(alice, bob)
        bob.feed(since="last_opened")
        share(alice, bob)
        assert alice.unread_count() == 0 and bob.unread_count() == 0
        await bob.post("four")
        share(alice, bob)
        bob.feed(since="last_opened")
        share(alice, bob)
        assert alice.unread_count() == 1
