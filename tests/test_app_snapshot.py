"""Snapshots of app state: snapshot + tail gives exactly the state of a full replay, and a
snapshot never overrides the signed entries in the store."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.app.ops import EditOp, PostOp
from microsync.app.snapshot import Snapshot, open_snapshot, seal_snapshot
from microsync.app.timeline import Timeline
from microsync.errors import BadSignature, DecodeError, NotAMember
from microsync.testing import app_state
from tests.test_app_group import family_of, share


def now() -> int:
    return time.time_ns() // 1_000_000


def snapshot_key(group: microsync.Group) -> str:
    return app_state(group).keys.snapshot


def timeline(group: microsync.Group) -> Timeline:
    return app_state(group).timeline(now())


def reload(group: microsync.Group, snapshot: bytes | None) -> tuple[object, ...]:
    """Drop the group's in-memory state and load it again from the store, from ``snapshot``
    when given (``b""``: none, a full replay)."""
    if snapshot is not None:
        group._replica.store.put_meta(snapshot_key(group), snapshot)
    app_state(group).unload()
    return timeline(group).summary()


def full_replay(group: microsync.Group) -> tuple[object, ...]:
    return reload(group, b"")


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["post", "reply", "react", "unreact", "edit", "delete", "sync", "snap"]),
        st.integers(0, 2),  # who
        st.integers(0, 50),  # which post
    ),
    min_size=4,
    max_size=25,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=ACTIONS)
async def test_snapshot_plus_tail_equals_full_replay(tmp_path_factory, actions) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("snap")
    async with AsyncExitStack() as stack:
        groups = await family_of(stack, root, "Alice", "Bob", "Carol")
        bob = groups[1]
        snapshots = [bob._replica.store.get_meta(snapshot_key(bob)) or b""]
        for action, who, which in actions:
            group = groups[who]
            posts = [p for p in timeline(group).posts.values()]
            target = posts[which % len(posts)] if posts else None
            try:
                if action == "post":
                    await group.post(f"post {which}")
                elif action == "reply" and target is not None:
                    await group.reply(target.id, f"reply {which}")
                elif action == "react" and target is not None:
                    await group.react(target.id, "👍")
                elif action == "unreact" and target is not None:
                    await group.unreact(target.id, "👍")
                elif action == "edit" and target is not None:
                    await group.edit(target.id, f"edited {which}")
                elif action == "delete" and target is not None:
                    await group.delete(target.id)
                elif action == "sync":
                    share(*groups)
                elif action == "snap":
                    bob.snapshot()
                    snapshots.append(bob._replica.store.get_meta(snapshot_key(bob)) or b"")
            except (NotAMember, KeyError):
                pass  # someone else's post, or not delivered to this member yet
        share(*groups)
        live = timeline(bob).summary()
        replayed = full_replay(bob)
        assert replayed == live
        bob.snapshot()
        snapshots.append(bob._replica.store.get_meta(snapshot_key(bob)) or b"")
        for snapshot in snapshots:
            assert reload(bob, snapshot) == replayed
            assert timeline(bob).waiting == 0


async def test_a_snapshot_is_loaded_on_restart_and_holds_no_purged_text(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        kept = await alice.post("kept")
        gone = await alice.post("a secret to delete")
        await alice.edit(gone.id, "an edited secret")
        share(alice, bob)
        await bob.react(kept.id, "❤️")  # its deps name the edit (a head at the time)
        share(alice, bob)
        await alice.delete(gone.id)
        share(alice, bob)
        before = timeline(bob).summary()
        bob.snapshot()
        signer = bob._replica.me.identity.device_key
        data = bob._replica.store.get_meta(snapshot_key(bob))
        assert data
        opened = open_snapshot(data, group=bob.id, signer=signer)
        texts = [e.op.text for e in opened.entries if isinstance(e.op, PostOp | EditOp)]
        assert "kept" in texts
        assert not any("secret" in t for t in texts)
        path = bob._device.path
        await bob._device.close()
    async with await microsync.Device.open(path) as again:
        group = again.group(alice.id)
        assert group._replica.store.get_meta(snapshot_key(group))  # written at close
        assert timeline(group).summary() == before
        assert timeline(group).waiting == 0
        assert [p.text for p in group.feed()] == ["kept"]
        assert group.post_by_id(kept.id).reactions == {"❤️": frozenset({again.person_id})}


async def test_a_snapshot_never_overrides_the_store(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.post("one")
        share(alice, bob)
        bob.snapshot()
        alice.snapshot()
        store = bob._replica.store
        signer = bob._replica.me.identity.device_key
        good = store.get_meta(snapshot_key(bob))
        assert good
        truth = full_replay(bob)
        opened = open_snapshot(good, group=bob.id, signer=signer)

        # a snapshot claiming a post the store does not hold, over a frontier it does not match
        fake_post = opened.entries[-1]
        ahead = {d: (s + 1, i) for d, (s, i) in opened.frontier.items()}
        lying = seal_snapshot(
            Snapshot(ahead, (*opened.entries, fake_post), ()),
            group=bob.id,
            signer=signer,
            rng=bob._replica.me.rng,
        )
        assert reload(bob, lying) == truth
        # another device's snapshot, a tampered one, garbage: all ignored, full replay instead
        foreign = alice._replica.store.get_meta(snapshot_key(alice))
        assert foreign
        with pytest.raises(DecodeError):
            open_snapshot(foreign, group=bob.id, signer=signer)
        tampered = bytearray(good)
        tampered[-70] ^= 1
        with pytest.raises(BadSignature):
            open_snapshot(bytes(tampered), group=bob.id, signer=signer)
        for bad in (foreign, bytes(tampered), b"\x00garbage", good[:-10]):
            assert reload(bob, bad) == truth
        # new entries after a snapshot are the tail: folded on top
        await alice.post("two")
        share(alice, bob)
        assert reload(bob, good) == full_replay(bob)
        assert [p.text for p in bob.feed()] == ["two", "one"]
