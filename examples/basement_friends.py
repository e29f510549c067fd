"""Basement: a friends group of at most 20 sharing memes through the group's vault. Anyone
opens anyone's meme; reactions pile up; an admin takes a post down for everyone; the 21st
invite is refused by the group itself.

    python examples/basement_friends.py [DIR]

The twenty devices are real microsync Devices run by the test kit
(microsync.testing.AppKit): real profiles, real sync sessions over in-memory connections.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from microsync.app.parts import AttachmentPart, TextPart
from microsync.errors import GroupFull, NotAMember
from microsync.testing import AppKit

NAMES = [f"friend{i:02}" for i in range(20)]
MEME = b"GIF89a" + bytes(range(256)) * 120  # 30 KiB of "dancing cat"


async def main(root: Path) -> None:
    async with AppKit(root, seed=20) as kit:
        friends = await kit.group_of(20, "Basement", names=NAMES, max_members=20)
        host, poster, opener, troll = friends[0], friends[3], friends[17], friends[9]
        print(f"{host.name}: {len(host.members())} members, full")
        try:
            await host.invite()
        except GroupFull as refused:
            print("a 21st invite:", type(refused).__name__)
        else:
            raise AssertionError("the group took a 21st member")

        # a meme into the vault, posted with its reference
        ref = await poster.vault.add(MEME, name="cat.gif", mime="image/gif", thumbnail=b"cat")
        meme = await poster.post("", parts=[TextPart(text="mood"), AttachmentPart(ref=bytes(ref))])
        await kit.settle()

        # anyone opens it: the chunks come over a live connection from whoever holds them
        devices = kit.devices
        await kit.connect(devices[17], devices[3])
        (part,) = [p for p in opener.post_by_id(meme.id).parts if isinstance(p, AttachmentPart)]
        path = await opener.vault.fetch(part.ref, root / "opened-cat.gif")
        assert path.read_bytes() == MEME
        print(f"{opener.device.name} opened {opener.vault.get(part.ref).name}: {len(MEME)} bytes")
        kit.disconnect(devices[17], devices[3])

        # reactions from half the group
        for friend in friends[::2]:
            await friend.react(meme.id, "😂")
        await friends[1].react(meme.id, "🔥")
        await kit.settle()
        counts = {e: len(who) for e, who in host.post_by_id(meme.id).reactions.items()}
        print("reactions:", counts)
        assert counts == {"😂": 10, "🔥": 1}

        # a troll posts; a plain member cannot delete it, an admin can, for everyone
        bad = await troll.post("buy followers at ...")
        await kit.settle()
        try:
            await friends[5].delete(bad.id)
        except NotAMember:
            print("a plain member cannot delete someone else's post")
        await host.delete(bad.id)
        await kit.settle()
        assert all(bad.id not in {p.id for p in f.feed()} for f in friends)
        print("the admin took it down on all", len(friends), "devices")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="microsync-example-") as tmp:
            asyncio.run(main(Path(tmp)))
