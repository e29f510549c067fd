"""Life360-style family circle: location shared per member at a precision each, a stop that
reaches a member who was offline when it was sent, and kept history its owner deletes.

    python examples/life360_circle.py [DIR]

Four real microsync Devices run by the test kit (microsync.testing.AppKit), kept connected
live over in-memory connections; going "offline" is a partition the kit cuts.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from microsync import Group
from microsync.identity import PersonId
from microsync.testing import AppKit

HOME = (48.85661, 2.35222)


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for something a live connection delivers."""
    for _ in range(int(seconds * 100)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never arrived")


def seen(viewer: Group, person: PersonId) -> str:
    where = viewer.locations().get(person)
    return "nothing" if where is None else f"{where.lat}, {where.lon} ({where.precision})"


async def main(root: Path) -> None:
    async with AppKit(root, seed=360) as kit:
        kid, mum, dad, gran = await kit.group_of(4, "Circle", names=["Kid", "Mum", "Dad", "Gran"])
        k, m, d, g = kit.devices
        for other in (m, d, g):
            await kit.connect(k, other)
        await kit.connect(m, g)
        me = kid.device.person_id
        people = {x.name: x.person_id for x in kid.members()}

        # each parent at their own precision; Gran is not in the subset and gets nothing
        await kid.share_location(
            *HOME, "exact", with_={people["Mum"]: "street", people["Dad"]: "city"}
        )
        await until(lambda: me in mum.locations() and me in dad.locations())
        for name, view in (("Mum", mum), ("Dad", dad), ("Gran", gran)):
            print(f"{name} sees Kid at {seen(view, me)}")
        assert mum.locations()[me].precision == "street" and dad.locations()[me].precision == "city"
        assert me not in gran.locations()

        # then with everyone, at city level, kept in the group's history
        kit.clock.advance(60_000)  # (a newer announcement replaces an older one: time moves)
        await kid.share_location(*HOME, "city", keep_history=True, label="school")
        await until(lambda: me in gran.locations() and dad.locations()[me].label == "school")
        assert mum.locations()[me].precision == "city"  # the street-level copy was replaced

        # Gran's phone goes offline; meanwhile Kid stops sharing, then Kid goes offline too
        kit.partition([k, m, d], [g])
        kit.clock.advance(60_000)
        await kid.stop_sharing_location()
        await until(lambda: me not in mum.locations() and me not in dad.locations())
        kit.partition([k], [m, d], [g])
        print("Gran, offline, still shows:", seen(gran, me))
        assert me in gran.locations()

        # Gran comes back and meets Mum: the stop reaches her with Kid still offline
        kit.partition([k], [m, d, g])
        await kit.connect(g, m)
        await until(lambda: me not in gran.locations())
        print("Gran, back online, shows:", seen(gran, me))

        # Kid lists the kept history and deletes it; the deletion reaches every device
        history = kid.location_history()
        print("Kid's kept history:", [h.label for h in history])
        assert [h.label for h in history] == ["school"]
        forgotten = await kid.delete_location_history()
        kit.heal()
        await kit.settle()
        assert kid.location_history() == [] and forgotten == 1
        print(f"deleted {forgotten} kept location(s) on all {len(kit.devices)} devices")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="microsync-example-") as tmp:
            asyncio.run(main(Path(tmp)))
