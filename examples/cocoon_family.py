"""Cocoon: a calm family space for up to 12. A home feed of what is new since you last looked
(peeked at without marking it read), a thread, reactions, a photo with its thumbnail in the
shared vault, a city-level location shared with Mum only, presence opted into per person,
and a wave that disappears.

    python examples/cocoon_family.py [DIR]

The four devices are real microsync Devices run by the test kit (microsync.testing.AppKit):
real profiles, real sync sessions over in-memory connections, one fake clock.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from microsync import Group
from microsync.app.parts import AttachmentPart, TextPart
from microsync.identity import PersonId
from microsync.node.news import NewPost, NewReaction, NewReply
from microsync.testing import AppKit

PHOTO = bytes(range(256)) * 400  # 100 KiB standing in for a JPEG
THUMB = b"\xff\xd8 a tiny preview"


async def until(check: object, seconds: float = 10.0) -> None:
    """Wait for something a live connection delivers."""
    for _ in range(int(seconds * 100)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never arrived")


async def main(root: Path) -> None:
    async with AppKit(root, seed=12) as kit:
        jas, mum, dad, sis = await kit.group_of(
            4, "Cocoon", names=["Jasmine", "Mum", "Dad", "Sis"], max_members=12
        )
        people = {m.name: m.person_id for m in jas.members()}
        print("family:", ", ".join(sorted(people)), "(room for 12)")

        # a thread: Mum's news, Dad answers, Jasmine answers Dad
        landed = await mum.post("Landed in Lisbon!")
        await kit.settle()
        taxi = await dad.reply(landed.id, "Taxi or bus?")
        await kit.settle()
        await jas.reply(taxi.id, "Bus, it is right outside")
        await kit.settle()
        print("thread:", " / ".join(str(p.text) for p in mum.thread(landed.id)))

        # a photo with its thumbnail: the post carries the vault reference
        ref = await jas.vault.add(PHOTO, name="beach.jpg", mime="image/jpeg", thumbnail=THUMB)
        photo = await jas.post(
            "", parts=[TextPart(text="Beach day"), AttachmentPart(ref=bytes(ref))]
        )
        await kit.settle()
        (part,) = [p for p in mum.post_by_id(photo.id).parts if isinstance(p, AttachmentPart)]
        assert mum.vault.get(part.ref).thumbnail == THUMB  # shown at once; bytes on demand
        await mum.react(photo.id, "❤️")
        await kit.settle()

        # Jasmine's home feed: what happened since she last looked, without marking it read
        news = jas.whats_new()
        for item in news.items:
            if isinstance(item, NewReaction):
                print(f"  {kit_name(jas, item.person)} {item.emoji} your photo")
            elif isinstance(item, NewPost | NewReply):
                print(f"  {item.post.author_name}: {item.post.text}")
        assert any(isinstance(i, NewReaction) and i.emoji == "❤️" for i in news.items)
        assert jas.whats_new().items == news.items  # peeking twice: still new
        opened = jas.feed(since="last_opened")  # opening the feed marks it read
        assert opened and jas.unread_count() == 0

        # location by city, for Mum only: the others are sent nothing at all
        jas_dev, mum_dev, _, sis_dev = kit.devices
        await kit.connect(jas_dev, mum_dev)
        await kit.connect(jas_dev, sis_dev)
        await jas.share_location(38.7223, -9.1393, "city", with_={people["Mum"]: "city"})
        await until(lambda: people["Jasmine"] in mum.locations())
        where = mum.locations()[people["Jasmine"]]
        print(f"Mum sees Jasmine near {where.lat:.2f}, {where.lon:.2f} ({where.precision})")
        assert (where.lat, where.precision) == (38.75, "city")
        assert people["Jasmine"] not in sis.locations()

        # presence: nobody shows online until they opt in
        assert not jas.presence()[people["Mum"]].online
        mum.set_presence_sharing(True)  # started (connected) devices announce at once
        await until(lambda: jas.presence()[people["Mum"]].online)
        assert not mum.presence()[people["Sis"]].online
        print("online:", [n for n, p in people.items() if jas.presence()[p].online])

        # a disappearing wave: gone for everyone a minute later
        wave = await dad.post("👋", ttl=60)
        await kit.settle()
        assert sis.post_by_id(wave.id).text == "👋"
        kit.clock.advance(61_000)
        assert all(wave.id not in {p.id for p in g.feed()} for g in (jas, mum, dad, sis))
        print("the wave is gone for everyone")


def kit_name(group: Group, person: PersonId | None) -> str:
    names = {m.person_id: m.name for m in group.members()}
    return names.get(person, "someone") if person is not None else "someone"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="microsync-example-") as tmp:
            asyncio.run(main(Path(tmp)))
