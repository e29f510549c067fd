"""A location stop in the same millisecond as its share wins (issue 18, gap 4).

Every announcement or envelope a device issues is dated after everything this person's
devices issued or kept that it may replace (``PresenceState._lifetime``), so the later op by
the same author wins a tie on its own device, on its person's other devices and at every
viewer. Two devices of one person that issue in the same millisecond without having heard of
each other are ordered the same everywhere: a stop wins, then the greater device id. Real
devices (the test kit) on a frozen fake clock; Hypothesis for convergence under any order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.errors import StaleAnnouncement
from microsync.testing import AppKit


async def _connect_all(kit: AppKit) -> None:
    for a, b in itertools.combinations(kit.devices, 2):
        await kit.connect(a, b)


async def _passed(kit: AppKit) -> None:
    for _ in range(30):  # live connections push announcements on their own
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["group", "kept in history", "some members"])
def test_a_stop_in_the_same_millisecond_as_its_share_wins(how: str) -> None:
    async def scenario(root: str) -> list[int]:
        async with AppKit(root, seed=11) as kit:
            ana, ben, cy = await kit.group_of(3, "Family", names=["Ana", "Ben", "Cy"])
            await _connect_all(kit)
            frozen = kit.clock()
            options: dict[str, object] = {
                "group": {},
                "kept in history": {"keep_history": True},
                "some members": {"with_": [ben.device.person_id]},
            }[how]
            await ana.share_location(51.752, -1.2577, "city", **options)  # type: ignore[arg-type]
            await _passed(kit)
            assert ana.device.person_id in ben.locations()  # it did arrive
            await ana.stop_sharing_location()  # the same millisecond: the clock is frozen
            assert kit.clock() == frozen
            await _passed(kit)
            await kit.settle()
            return [len(g.locations()) for g in (ana, ben, cy)]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == [0, 0, 0]


@pytest.mark.parametrize("seed", [1, 12, 21, 30])
def test_a_stop_from_another_device_of_the_sharer_in_the_same_millisecond_wins(seed: int) -> None:
    async def scenario(root: str) -> list[int]:
        async with AppKit(root, seed=seed) as kit:
            ana, ben = await kit.group_of(2, "Family", names=["Ana", "Ben"])
            laptop = await kit.link(ana.device, "Ana laptop")
            await kit.settle()
            await _connect_all(kit)
            await ana.share_location(51.752, -1.2577, "street")
            await _passed(kit)
            on_laptop = laptop.group(ana.id)
            await on_laptop.stop_sharing_location()
            await _passed(kit)
            return [len(g.locations()) for g in (ana, on_laptop, ben)]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == [0, 0, 0]


def test_a_share_after_a_stop_in_the_same_millisecond_wins_too() -> None:
    async def scenario(root: str) -> list[str | None]:
        async with AppKit(root, seed=13) as kit:
            ana, ben = await kit.group_of(2, "Family", names=["Ana", "Ben"])
            await _connect_all(kit)
            await ana.share_location(51.752, -1.2577, "city", keep_history=True)
            await ana.stop_sharing_location()
            await ana.share_location(48.8566, 2.3522, "city", label="Paris")
            await _passed(kit)
            return [loc.label for g in (ana, ben) for loc in g.locations().values()]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == ["Paris", "Paris"]


step = st.tuples(st.sampled_from(["share", "stop"]), st.booleans(), st.booleans())


@settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(script=st.lists(step, min_size=1, max_size=6), orders=st.randoms(use_true_random=False))
def test_viewers_agree_whatever_order_the_announcements_reach_them(
    script: list[tuple[str, bool, bool]], orders: object
) -> None:
    """Ana's phone and laptop share and stop, unconnected, on a clock that often does not
    move; three viewers get every announcement in their own random order: they agree."""

    async def scenario(root: str) -> list[object]:
        async with AppKit(root, seed=14) as kit:
            groups = await kit.group_of(4, "Family", names=["Ana", "Ben", "Cy", "Dee"])
            laptop = await kit.link(groups[0].device, "Ana laptop")
            await kit.settle()
            senders = [groups[0], laptop.group(groups[0].id)]
            sealed: list[bytes] = []
            for verb, on_laptop, tick in script:
                sender = senders[on_laptop]
                if verb == "share":
                    await sender.share_location(51.75, -1.25, "city")
                else:
                    await sender.stop_sharing_location()
                sealed += [s for s in sender.announcements() if s not in sealed]
                if tick:
                    kit.clock.advance(1)
            views = []
            for viewer in groups[1:]:
                mine = list(sealed)
                orders.shuffle(mine)  # type: ignore[attr-defined]
                for data in mine:
                    with contextlib.suppress(StaleAnnouncement):  # a newer one came first
                        viewer.receive_announcement(data)
                views.append(_shown(viewer))
            return views

    with tempfile.TemporaryDirectory() as root:
        views = asyncio.run(scenario(root))
    assert views[0] == views[1] == views[2]


def _shown(group: microsync.Group) -> list[tuple[bytes, float, float]]:
    return sorted((bytes(p), loc.lat, loc.lon) for p, loc in group.locations().items())


@settings(
    max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(script=st.lists(step, min_size=1, max_size=6), orders=st.randoms(use_true_random=False))
def test_the_last_share_or_stop_of_a_person_wins_at_every_viewer(
    script: list[tuple[str, bool, bool]], orders: object
) -> None:
    """Ana's phone and laptop, connected, take turns sharing and stopping on a clock that
    often does not move; viewers given every announcement in any order show what her last
    action said (its place, or nothing)."""

    async def scenario(root: str) -> tuple[list[object], object]:
        async with AppKit(root, seed=15) as kit:
            groups = await kit.group_of(3, "Family", names=["Ana", "Ben", "Cy"])
            laptop = await kit.link(groups[0].device, "Ana laptop")
            await kit.settle()
            await kit.connect(groups[0].device, laptop)
            senders = [groups[0], laptop.group(groups[0].id)]
            sealed: list[bytes] = []
            want: object = []
            for i, (verb, on_laptop, tick) in enumerate(script):
                sender = senders[on_laptop]
                if verb == "share":
                    shared = await sender.share_location(10.0 + i, 20.0, "city")
                    want = [(bytes(shared.person_id), shared.lat, shared.lon)]
                else:
                    await sender.stop_sharing_location()
                    want = []
                await _passed(kit)  # the other device of Ana's holds it before she acts again
                for s in (*senders[0].announcements(), *senders[1].announcements()):
                    if s not in sealed:
                        sealed.append(s)
                if tick:
                    kit.clock.advance(1)
            views = []
            for viewer in groups[1:]:
                mine = list(sealed)
                orders.shuffle(mine)  # type: ignore[attr-defined]
                for data in mine:
                    with contextlib.suppress(StaleAnnouncement):
                        viewer.receive_announcement(data)
                views.append(_shown(viewer))
            return views, want

    with tempfile.TemporaryDirectory() as root:
        views, want = asyncio.run(scenario(root))
    assert views == [want, want]
