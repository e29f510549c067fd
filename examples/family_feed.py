"""A small family feed: three devices on this machine share posts, replies, reactions, a coarse
location and a shopping list over real loopback TCP, then each reads what is new.

    python examples/family_feed.py [DIR]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import microsync


async def until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the family did not sync in time")


async def main(root: Path) -> None:
    async with (
        await microsync.Device.open(root / "mum", name="Mum") as mum,
        await microsync.Device.open(root / "dad", name="Dad") as dad,
        await microsync.Device.open(root / "kid", name="Sam") as kid,
    ):
        # Mum's phone hosts; the others join with an invite and stay connected
        await mum.start(lan=False, port=0)
        family = await mum.create_group("Family")
        for device in (dad, kid):
            await device.join((await family.invite(ttl=600)).link)
            await device.start(lan=False, port=None, peers=(f"127.0.0.1:{mum.port}",))
        dads, sams = dad.group(family.id), kid.group(family.id)

        photo_day = await family.post("School photos are on Thursday 📸")
        await until(lambda: any(p.id == photo_day.id for p in sams.feed()))
        await sams.reply(photo_day.id, "Can I wear the blue jumper?")
        await dads.react(photo_day.id, "👍")
        await dads.share_location(51.5007, -0.1246, precision="city")  # at work, roughly

        shopping = dads.doc("shopping")
        await shopping.list("items").insert(0, "milk", "bread")
        await until(lambda: len(family.doc("shopping").list("items")) == 2)
        await family.doc("shopping").list("items").insert(2, "apples")
        await until(lambda: len(family.feed()) == 2 and dad.person_id in family.locations())

        new = family.feed(since="last_opened")  # marks them read on all of Mum's devices
        print(f"Mum's feed ({len(new)} new since she last looked):")
        for post in reversed(family.feed()):
            reactions = " ".join(f"{e}{len(who)}" for e, who in post.reactions.items())
            indent = "    ↳ " if post.reply_to else "  "
            print(f"{indent}{post.author_name}: {post.text} {reactions}".rstrip())
        print(f"Unread now: {family.unread_count()}")
        where = family.locations()[dad.person_id]
        print(f"Dad is around {where.lat}, {where.lon} ({where.precision})")
        await until(lambda: len(shopping.list("items")) == 3)
        print("Shopping list:", ", ".join(str(i) for i in shopping.list("items").value))
        assert family.unread_count() == 0 and where.precision == "city"


if __name__ == "__main__":
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    asyncio.run(main(directory))
