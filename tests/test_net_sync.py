"""Devices syncing over real TCP on 127.0.0.1: one-shot sync, live push, invites redeemed over
the wire, and peers that are absent, foreign or hostile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.errors import InviteError, PeerUnreachable
from microsync.testing import store_of
from tests.test_app_group import family_of, share


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def opened(stack: AsyncExitStack, path: Path, name: str) -> microsync.Device:
    return await stack.enter_async_context(await microsync.Device.open(path, name=name))


async def test_one_shot_sync_over_tcp(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.device.start(lan=False, port=0)
        for i in range(30):
            await alice.post(f"post {i}")
        port = alice.device.port
        assert port
        result = await bob.device.sync_with("127.0.0.1", port)
        assert result.groups == (alice.id,) and result.entries_received >= 30
        assert [p.text for p in bob.feed()][:3] == ["post 29", "post 28", "post 27"]
        again = await bob.device.sync_with("127.0.0.1", port)
        assert again.entries_received == 0 and again.entries_sent == 0


async def test_a_first_sync_counts_every_entry_it_stored(tmp_path: Path) -> None:
    """``entries_received`` is what joined this device's feeds: entries that first waited for
    their author's admission (held) or for a gap (pending) count once, when stored, and
    duplicates never (it once reported about half of a newcomer's first sync)."""
    from tests.test_device_groups import introduce, pair

    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        for i in range(600):
            await bob.post(f"bob {i}")
        for i in range(10):
            await alice.post(f"alice {i}")
        share(alice, bob)
        await alice.device.start(lan=False, port=0)
        dave = await opened(stack, tmp_path / "dave", "Dave")
        introduce(alice.device, dave)
        invite = await alice.invite(ttl=3600)
        await dave.finish_join(
            pair(alice.device.invite_host().session(), dave.join_guest(invite.link))
        )
        before = sum(dave.frontier(alice.id).values())
        port = alice.device.port
        assert port
        result = await dave.sync_with("127.0.0.1", port)
        stored = sum(dave.frontier(alice.id).values()) - before
        assert stored >= 50 and result.entries_received == stored
        assert dave.frontier(alice.id) == alice.device.frontier(alice.id)
        again = await dave.sync_with("127.0.0.1", port)
        assert again.entries_received == 0


async def test_live_push_both_ways_and_presence(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        alice.set_presence_sharing(True)  # presence is opt-in per group
        await alice.device.start(lan=False, port=0)
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        [peer] = bob.device.peers()
        assert peer.device_id == alice.device.id and peer.name == "Alice"
        post = await alice.post("live from Oxford")
        await eventually(lambda: any(p.id == post.id for p in bob.feed()))
        await bob.react(post.id, "❤️")
        await eventually(lambda: bool(alice.post_by_id(post.id).reactions))
        await alice.share_location(51.752, -1.2577, precision="city")
        await eventually(lambda: alice.device.person_id in bob.locations())
        await eventually(lambda: bob.presence()[alice.device.person_id].online)


async def test_join_by_link_and_by_code_over_tcp(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice = await opened(stack, tmp_path / "alice", "Alice")
        bob = await opened(stack, tmp_path / "bob", "Bob")
        carol = await opened(stack, tmp_path / "carol", "Carol")
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        await family.post("welcome, everyone")
        invite = await family.invite(ttl=600)
        assert f"127.0.0.1:{alice.port}" in invite.link
        group = await bob.join(invite.link)
        assert group.id == family.id and group.is_member()
        assert [p.text for p in group.feed()] == ["welcome, everyone"]
        with pytest.raises(InviteError):
            await carol.join(invite.link)  # single use
        second = await family.invite(ttl=600)
        group = await carol.join(second.code, at=f"127.0.0.1:{alice.port}")
        assert {m.name for m in group.members()} == {"Alice", "Bob", "Carol"}


async def test_absent_foreign_and_hostile_peers(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        outsider = await opened(stack, tmp_path / "eve", "Eve")
        await outsider.create_group("Eve's own")
        await alice.device.start(lan=False, port=0)
        port = alice.device.port
        assert port
        # nobody listening
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        free = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(PeerUnreachable):
            await bob.device.sync_with("127.0.0.1", free)
        # a device of no shared group completes the handshake and learns nothing
        result = await outsider.sync_with("127.0.0.1", port)
        assert result.groups == () and result.entries_received == 0
        assert [g.name for g in outsider.groups()] == ["Eve's own"]
        # garbage and a hang-up mid-handshake: alice keeps serving
        for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\x00\x05MSYN", b""):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk)
            await writer.drain()
            writer.close()
        await alice.post("still here")
        result = await bob.device.sync_with("127.0.0.1", port)
        assert result.entries_received >= 1
        assert bob.feed()[0].text == "still here"


async def test_stop_closes_everything(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.device.start(lan=False, port=0)
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))
        await eventually(lambda: bool(alice.device.peers()))
        before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        assert before
        await bob.device.stop()
        await alice.device.stop()
        await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == [], left


async def test_a_new_device_shows_the_newest_posts_before_the_history(tmp_path: Path) -> None:
    from bench.feed_state import build, membership_items
    from bench.sync import welcome
    from microsync.protocol.session import SyncOptions

    async with AsyncExitStack() as stack:
        home = await opened(stack, tmp_path / "home", "Home")
        newcomer = await opened(stack, tmp_path / "new", "New")
        _net, people, group, made = build(1500, 3, [home, newcomer], seed=3)
        certificates = [p.identity.certificate.to_bytes() for p in people]
        home.learn_certificates([*certificates, newcomer.certificates()[0]])
        home.receive(group, membership_items(people, group))
        home.receive(group, [(e.wire, b) for e, b in made])
        # the newest 20 posts (replies to posts not yet here wait for them: causal order)
        newest = [p.id for p in home.group(group).feed() if p.reply_to is None][:20]
        await home.start(lan=False, port=0)
        await welcome(newcomer, people, group)
        options = SyncOptions(newest_first=True, batch_entries=32, window_batches=1)
        await newcomer.start(
            lan=False, port=None, peers=(f"127.0.0.1:{home.port}",), options=options
        )

        def stored() -> int:
            return sum(s.head_seq for s in store_of(newcomer).feeds(group).values())

        def shows_newest() -> bool:
            held = newcomer.group(group)
            return held.is_member() and {p.id for p in held.feed()} >= set(newest)

        await eventually(shows_newest, timeout=60)
        assert stored() < len(made) // 2  # most of the history is still to come
        await eventually(lambda: stored() >= len(made) + len(membership_items(people, group)))
        mine = [p.id for p in newcomer.group(group).feed()]
        assert mine == [p.id for p in home.group(group).feed()]


async def test_the_inviter_sees_who_joined_as_an_event(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice = await opened(stack, tmp_path / "alice", "Alice")
        bob = await opened(stack, tmp_path / "bob", "Bob")
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        stream = family.events()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        await bob.join((await family.invite(ttl=60)).link)
        event = await asyncio.wait_for(first, 10)
        assert event.kind == "member_joined" and event.person == bob.person_id
        await stream.aclose()


async def test_a_removed_member_is_told_it_is_out_and_nothing_more(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await alice.post("before")
        share(alice, bob, carol)
        await alice.remove(carol.device.person_id)
        removal_seq = store_of(alice.device).feed_status(alice.id, alice.device.id).head_seq
        await alice.post("after: planning the party")
        dave = await opened(stack, tmp_path / "dave", "Dave")
        await alice.device.start(lan=False, port=0)
        await dave.join((await alice.invite(ttl=60)).link)
        assert carol.is_member()  # it has not heard yet
        result = await carol.device.sync_with("127.0.0.1", alice.device.port or 0)
        assert result.groups == (alice.id,)
        assert not carol.is_member()  # now it knows
        held = store_of(carol.device).feed_status(alice.id, alice.device.id).head_seq
        assert held == removal_seq  # the removal, and nothing written after it
        assert store_of(carol.device).certificate(dave.id) is None  # nor who joined since
        assert [p.text for p in carol.feed()] == ["before"]
