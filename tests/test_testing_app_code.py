"""The test kit runs app code (microsync.testing.AppKit): real Devices and Groups, joined
through invites, synced by real sessions over faulty in-memory pipes; an app's own functions
written against ``Group`` are property-tested unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.errors import PeerUnreachable
from microsync.node.inbound import Inbound
from microsync.testing import AppKit
from microsync.testing.pipe import PipeFaults, memory_pipe

# ---------------------------------------------------------------- the app under test


async def post_and_react(group: microsync.Group, text: str, emoji: str) -> None:
    """App code, written against Group only: post, then react to every post seen so far."""
    await group.post(text)
    for post in group.feed():
        await group.react(post.id, emoji)


async def answer_latest(group: microsync.Group, text: str) -> None:
    """App code: reply to the newest post, if there is one."""
    posts = group.feed()
    if posts:
        await group.reply(posts[0].id, text)


def view(group: microsync.Group) -> list[tuple[str, object, object]]:
    """What the app shows: every post and reply, with its reactions (order-free)."""
    shown = []
    for item in group.feed():
        reactions = sorted((e, sorted(who)) for e, who in item.reactions.items())
        shown.append((str(item.text), item.author_name, reactions))
    return sorted(shown, key=repr)


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


# ---------------------------------------------------------------- property: convergence

action = st.tuples(
    st.sampled_from(["post", "reply", "sync", "split", "heal", "tick"]),
    st.integers(0, 2),
    st.integers(0, 2),
    st.sampled_from(["❤️", "👍"]),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    seed=st.integers(0, 2**16),
    drop=st.sampled_from([0.0, 0.3]),
    script=st.lists(action, max_size=7),
    blocked=st.none() | st.integers(0, 2),
)
def test_app_code_converges_under_drops_partitions_and_any_order(
    seed: int, drop: float, script: list[tuple[str, int, int, str]], blocked: int | None
) -> None:
    async def scenario(root: str) -> None:
        async with AppKit(root, seed=seed, drop=drop) as kit:
            groups = await kit.group_of(3, "Family", names=["Ana", "Ben", "Cy"])
            devices = kit.devices
            for i, (verb, who, other, emoji) in enumerate(script):
                if verb == "post":
                    await post_and_react(groups[who], f"post {i}", emoji)
                elif verb == "reply":
                    await answer_latest(groups[who], f"reply {i}")
                elif verb == "sync" and who != other:
                    with contextlib.suppress(PeerUnreachable):
                        await kit.sync(devices[who], devices[other])
                elif verb == "split":
                    kit.partition([devices[who]], [d for d in devices if d is not devices[who]])
                elif verb == "heal":
                    kit.heal()
                else:
                    kit.clock.advance(60_000)
            kit.heal()
            if blocked is not None:  # the last settle goes round a missing link: relayed
                kit.block(devices[blocked], devices[(blocked + 1) % 3])
            await kit.settle()
            views = [view(g) for g in groups]
            assert views[0] == views[1] == views[2]
            posts = sum(1 for verb, *_ in script if verb == "post")
            assert sum(p.reply_to is None for p in groups[0].feed()) == posts

    with tempfile.TemporaryDirectory() as root:
        run(scenario(root))


def test_the_check_catches_a_network_that_never_delivers(tmp_path: Path) -> None:
    """The property above would fail if sync broke: a partition that never heals leaves the
    views apart, and the same comparison says so."""

    async def scenario() -> None:
        async with AppKit(tmp_path, seed=3) as kit:
            ana, ben = await kit.group_of(2, "Family")
            kit.partition(kit.devices[:1], kit.devices[1:])
            await post_and_react(ana, "only here", "❤️")
            await kit.settle()
            assert view(ana) != view(ben)
            kit.heal()
            await kit.settle()
            assert view(ana) == view(ben)

    run(scenario())


# ---------------------------------------------------------------- the kit itself


def test_dropped_connections_are_cut_and_the_next_sync_resumes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AppKit(tmp_path, seed=5, drop=0.6) as kit:
            groups = await kit.group_of(3, "Family")
            for i in range(5):
                await groups[i % 3].post(f"note {i}" + "x" * 4000)
            await kit.settle()
            assert kit.cuts > 0
            assert all(len(g.feed()) == 5 for g in groups)

    run(scenario())


def test_the_same_seed_gives_the_same_faults(tmp_path: Path) -> None:
    async def cuts(root: Path) -> tuple[int, list[str]]:
        async with AppKit(root, seed=11, drop=0.5) as kit:
            groups = await kit.group_of(2, "Family")
            await groups[1].post("hi")
            await kit.settle()
            return kit.cuts, [p.text or "" for p in groups[0].feed()]

    assert run(cuts(tmp_path / "one")) == run(cuts(tmp_path / "two"))


def test_nothing_crosses_a_partition(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AppKit(tmp_path, seed=2) as kit:
            ana, _ = await kit.group_of(2, "Family")
            a, b = kit.devices
            kit.partition([a], [b])
            assert not kit.reachable(a, b)
            with pytest.raises(PeerUnreachable):
                await kit.sync(a, b)
            late = await kit.device("late")
            invite = await ana.invite()
            with pytest.raises(PeerUnreachable):
                await kit.join(late, invite.link, a)
            kit.heal()
            joined = await kit.join(late, invite.link, a)
            await kit.settle()
            assert sorted(m.name for m in joined.members()) == ["late", "p0", "p1"]

    run(scenario())


def test_a_linked_device_is_the_same_person_and_gets_the_groups(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AppKit(tmp_path, seed=4) as kit:
            (notes,) = await kit.group_of(1, "Notes", names=["phone"])
            await notes.post("from the phone")
            laptop = await kit.link(kit.devices[0], "laptop")
            await kit.settle()
            assert laptop.person_id == kit.devices[0].person_id
            assert [p.text for p in laptop.group(notes.id).feed()] == ["from the phone"]

    run(scenario())


def test_the_kit_uses_the_fake_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AppKit(tmp_path, seed=1) as kit:
            ana, ben = await kit.group_of(2, "Family")
            post = await ana.post("now")
            assert post.created_at.timestamp() == pytest.approx(kit.clock.now / 1000, abs=1)
            kit.clock.advance(3_600_000)
            later = await ana.post("an hour later")
            gap = (later.created_at - post.created_at).total_seconds()
            assert gap == pytest.approx(3600, abs=1)
            await kit.settle()
            assert [p.text for p in ben.feed()] == ["an hour later", "now"]

    run(scenario())


# ---------------------------------------------------------------- the pipe


def test_a_pipe_carries_bytes_in_order_and_closes() -> None:
    async def scenario() -> None:
        a, b = memory_pipe("a", "b")
        await a.write(b"one")
        await a.write(b"two")
        assert await b.read() + await b.read() == b"onetwo"
        await b.close()
        assert await a.read() == b""
        with pytest.raises(ConnectionResetError):
            await a.write(b"late")

    run(scenario())


def test_a_cut_pipe_delivers_a_prefix_then_resets_both_ends() -> None:
    async def scenario() -> None:
        a, b = memory_pipe("a", "b", PipeFaults(cut_after=5))
        await a.write(b"abc")
        with pytest.raises(ConnectionResetError):
            await a.write(b"defg")
        assert await b.read() == b"abc"
        assert await b.read() == b"de"
        assert await b.read() == b""
        assert a.was_cut and b.was_cut
        with pytest.raises(ConnectionResetError):
            await b.write(b"x")

    run(scenario())


def test_the_example_in_the_kit_docs_runs() -> None:
    import doctest

    from microsync.testing import kit

    assert doctest.testmod(kit, raise_on_error=True).failed == 0


async def until(check: object, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_live_connection_pushes_writes_and_serves_the_vault(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AppKit(tmp_path, seed=6) as kit:
            ana, ben = await kit.group_of(2, "Family")
            a, b = kit.devices
            await kit.connect(a, b)
            await ana.post("live")
            await until(lambda: [p.text for p in ben.feed()] == ["live"])
            ref = await ana.vault.add(b"photo bytes" * 1000, name="photo.jpg")
            await until(lambda: len(ben.vault.list()) == 1)
            path = await ben.vault.fetch(bytes(ref), tmp_path / "got.jpg")
            assert path.read_bytes() == b"photo bytes" * 1000
            kit.partition([a], [b])  # the live connection is cut at once
            await until(lambda: not a.peers() and not b.peers())
            await ana.post("after the cut")
            await asyncio.sleep(0.05)
            assert [p.text for p in ben.feed()] == ["live"]
            kit.heal()
            await kit.connect(b, a)
            await until(lambda: len(ben.feed()) == 2)

    run(scenario())


def test_slow_connections_still_settle(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AppKit(tmp_path, seed=8, delay_ms=3.0) as kit:
            ana, ben, cy = await kit.group_of(3, "Family")
            await post_and_react(ben, "slow", "👍")
            await kit.settle()
            await answer_latest(cy, "still here")
            await kit.settle()
            assert view(ana) == view(ben) == view(cy) and len(view(ana)) == 2

    run(scenario())


def test_a_stalled_session_fails_the_test_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync bug (here: devices that silently drop what peers send) is an AssertionError
    within the kit's timeout and rounds, not a hang."""

    async def scenario() -> None:
        async with AppKit(tmp_path, seed=9, timeout=1.0) as kit:
            ana, _ = await kit.group_of(2, "Family")
            await ana.post("unheard")
            monkeypatch.setattr(Inbound, "receive", lambda self, group, items, peer: 0)
            with pytest.raises(
                AssertionError, match=r"not in sync|did not settle|settled holding different"
            ):
                await kit.settle(max_rounds=3)

    run(scenario())


def test_the_property_test_in_docs_testing_md_runs() -> None:
    import re

    page = (Path(__file__).parent.parent / "docs" / "testing.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    scope: dict[str, object] = {}
    exec(compile(code, "docs/testing.md", "exec"), scope)
    scope["test_my_app_converges"]()  # type: ignore[operator]
