"""Review of the apps-gaps change (replies with parts, nested counters, live doc handles, the
same-millisecond location stop, the kit clock, transport-certificate renewal): each test
here failed before the fix it names, against a hostile member or a hostile disk."""

from __future__ import annotations

import asyncio
import itertools
import tempfile

from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.testing import AppKit
from microsync.testing.hostile import Hostile

YEAR_MS = 365 * 24 * 3600 * 1000


async def _passed(kit: AppKit) -> None:
    await kit.settle()
    for _ in range(30):  # live connections push announcements on their own
        await asyncio.sleep(0.005)


def test_a_stop_wins_over_a_kept_location_a_hostile_member_dated_ahead() -> None:
    """Mallory posts an entry dated a year ahead; Ana's next write answers it, so her kept
    location is dated up to ``MAX_DRIFT_MS`` (5 min) ahead. Her stop must still withdraw it
    (it was capped at 1 minute ahead, so the kept location kept showing for its lifetime)."""

    async def scenario(root: str) -> list[int]:
        async with AppKit(root, seed=41) as kit:
            ana, ben, mallory = await kit.group_of(3, "Family", names=["Ana", "Ben", "Mal"])
            evil = Hostile.of_group(mallory)
            far = AppOp(Kind.POST, text="from the future").to_bytes()
            evil.append_content(APP_TYPE, far, hlc=kit.clock() + YEAR_MS)
            await kit.settle()
            for a, b in itertools.combinations(kit.devices, 2):
                await kit.connect(a, b)  # live: announcements are pushed as they are made
            await ana.share_location(51.752, -1.2577, "city", keep_history=True)
            await kit.settle()
            assert ana.device.person_id in ben.locations()  # it did arrive
            kit.clock.advance(1000)
            await ana.stop_sharing_location()
            await _passed(kit)
            return [len(g.locations()) for g in (ana, ben, mallory)]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == [0, 0, 0]
