"""Moderation through the public Group API on real SQLite profiles: an admin deletes anyone's
post, reply or blob for everyone (purged from every disk), hides a removed member's posts;
a plain member's moderation is refused; apps hear of it through a ``Moderated`` event."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from microsync.app.events import EventKind, Moderated
from microsync.errors import NotAMember
from microsync.feed.entry import parse_entry
from microsync.testing import replica_of
from tests.test_app_group import family_of, raw_profile_bytes, share
from tests.test_device_groups import entries, sync


async def test_an_admin_deletes_a_members_post_and_reply_for_everyone(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        post = await bob.post("buy cheap watches zq7")
        share(alice, bob, carol)
        reply = await carol.reply(post.id, "reported xk4")
        share(alice, bob, carol)
        stream = bob.events()
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        await alice.delete(post.id)  # Alice founded the group: an admin
        await alice.delete(reply.id)
        share(alice, bob, carol)
        event = await asyncio.wait_for(waiting, 5)
        await stream.aclose()
        assert isinstance(event, Moderated) and event.kind is EventKind.MODERATED
        assert event.person == alice.device.person_id
        assert event.post is not None and event.post.author == bob.device.person_id
        assert event.post.deleted and event.post.text is None
        for group in (alice, bob, carol):
            assert group.feed() == []
            assert group.post_by_id(post.id).deleted
        for group in (alice, bob, carol):  # purged from every disk
            data = raw_profile_bytes(group.device)
            assert b"zq7" not in data and b"xk4" not in data


async def test_a_members_delete_of_someone_elses_post_is_refused(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        post = await alice.post("house rules")
        share(alice, bob)
        with pytest.raises(NotAMember, match="refuses this delete"):
            await bob.delete(post.id)
        share(alice, bob)
        assert [p.text for p in alice.feed()] == ["house rules"] == [p.text for p in bob.feed()]


async def test_an_admin_removes_a_members_blob_a_member_cannot(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        meme = await bob.vault.add(b"a meme", name="meme.png")
        rules = await alice.vault.add(b"be kind", name="rules.txt")
        share(alice, bob, carol)
        with pytest.raises(NotAMember, match="or an admin"):
            await carol.vault.remove(rules)
        await alice.vault.remove(meme)
        share(alice, bob, carol)
        for group in (alice, bob, carol):
            assert [r.name for r in group.vault.list()] == ["rules.txt"]


async def test_a_forged_vault_removal_by_a_member_is_void(tmp_path: Path) -> None:
    """Carol's device, modified, appends a removal of Alice's blob anyway: nobody applies it."""
    from microsync.blobs import VAULT_TYPE, Refusal, VaultKind, VaultOp
    from microsync.testing.hostile import Hostile

    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        rules = await alice.vault.add(b"be kind", name="rules.txt")
        share(alice, bob, carol)
        op = VaultOp(kind=VaultKind.REMOVE, blob=rules.id)
        Hostile.of_group(carol).append_content(VAULT_TYPE, op.to_bytes(), hlc=5)
        share(alice, bob, carol)
        for group in (alice, bob):
            assert [r.name for r in group.vault.list()] == ["rules.txt"]
            assert group.vault.refused.get(Refusal.NOT_THE_ADDER) == 1


async def test_removing_with_hide_posts_hides_them_everywhere(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await bob.post("troll one")
        await bob.post("troll two")
        await carol.post("hello")
        share(alice, bob, carol)
        await alice.remove(bob.device.person_id, hide_posts=True)
        share(alice, bob, carol)
        for group in (alice, carol):
            assert [p.text for p in group.feed()] == ["hello"]
        assert b"troll" not in raw_profile_bytes(carol.device)


async def test_hide_posts_of_a_member_and_only_admins_may(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await bob.post("noise")
        await alice.post("signal")
        share(alice, bob, carol)
        with pytest.raises(NotAMember):
            await carol.hide_posts_of(alice.device.person_id)
        await alice.hide_posts_of(bob.device.person_id)
        share(alice, bob, carol)
        for group in (alice, bob, carol):
            assert [p.text for p in group.feed()] == ["signal"]
        later = await bob.post("after the hide")  # what Bob writes from now on is shown
        share(alice, bob, carol)
        assert {p.id for p in carol.feed()} == {later.id, alice.feed()[-1].id}


async def test_a_moderation_that_arrives_before_the_promotion_counts_once_it_does(
    tmp_path: Path,
) -> None:
    """Carol gets Bob's feed (his delete and his blob removal) before Alice's promotion of
    him: she refuses both at first, and applies both once the promotion arrives."""
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        post = await carol.post("spam")
        meme = await carol.vault.add(b"meme", name="meme.png")
        share(alice, bob, carol)
        assert [r.name for r in carol.vault.list()] == ["meme.png"]  # folded here already
        await alice.promote(bob.device.person_id)
        sync(alice.device, bob.device, alice.id)  # Bob hears of it, Carol not yet
        await bob.delete(post.id)
        await bob.vault.remove(meme)
        only_bob = [
            item
            for item in entries(bob.device, bob.id)
            if parse_entry(item[0]).header.device == replica_of(bob).me.device
        ]
        carol.device.receive(carol.id, only_bob)
        assert [p.text for p in carol.feed()] == ["spam"]
        assert [r.name for r in carol.vault.list()] == ["meme.png"]
        share(alice, bob, carol)
        assert carol.feed() == [] and carol.vault.list() == []
        assert alice.feed() == [] and alice.vault.list() == []


async def test_moderation_holds_after_a_restart_with_a_snapshot(tmp_path: Path) -> None:
    """Carol's timeline folded again from the store alone, and after a restart (snapshot
    written at close): what the admin deleted and hid stays gone, tombstones in place."""
    import microsync
    from microsync.testing import app_state

    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        spam = await bob.post("spam")
        await bob.post("more spam")
        kept = await carol.post("kept")
        share(alice, bob, carol)
        await alice.delete(spam.id)
        await alice.hide_posts_of(bob.device.person_id)
        share(alice, bob, carol)
        before = app_state(carol).timeline(0).summary()
        state = app_state(carol)
        replica_of(carol).store.put_meta(state.keys.snapshot, b"")  # a full replay instead
        state.unload()
        assert state.timeline(0).summary() == before  # the purges were recorded as deletes
        path = carol.device.path
        await carol.device.close()
    async with await microsync.Device.open(path) as again:
        group = again.group(alice.id)
        assert [p.id for p in group.feed()] == [kept.id]
        assert app_state(group).timeline(0).summary() == before
