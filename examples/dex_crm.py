"""Dex: a personal CRM of the people you care about (birthdays, quirks, passions, notes) on
your own devices: a phone and a laptop linked over the network, edited on both while apart.

    python examples/dex_crm.py [DIR]

The "group" has one person in it (you) and two devices. The phone links the laptop with a
one-time pairing over TCP on 127.0.0.1 (`Device.link`); later each edits the contacts
offline, and one `sync_with` merges both sets of edits, field by field.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import microsync
from microsync.app.docs import SharedMap
from microsync.encoding import Value

FIELDS = ("birthday", "passions", "notes")


class Contacts:
    """The app's model: one nested document, ``contacts -> {id: {name, birthday, quirks
    (a set), calls (a counter), passions, notes}}``; every field merges on its own, so edits
    of two fields of one contact on two devices while apart both survive."""

    def __init__(self, group: microsync.Group) -> None:
        self.group = group

    def _people(self) -> SharedMap:
        return self.group.doc("dex").map("contacts")  # a live handle on the shared state

    async def add(self, cid: str, name: str, **fields: str) -> None:
        await self._people().map(cid).set("name", name)
        for key, value in fields.items():
            await self.edit(cid, key, value)

    async def edit(self, cid: str, field: str, value: str) -> None:
        if field not in FIELDS:
            raise ValueError(f"unknown field {field!r}")
        await self._people().map(cid).set(field, value)

    async def quirk(self, cid: str, quirk: str) -> None:
        await self._people().map(cid).orset("quirks").add(quirk)

    async def called(self, cid: str) -> None:
        await self._people().map(cid).counter("calls").add(1)  # calls on both devices add up

    async def forget(self, cid: str) -> None:
        await self._people().delete(cid)

    def all(self) -> dict[str, Value]:
        return dict(sorted(self._people().value.items()))


async def main(root: Path) -> None:
    phone = await microsync.Device.open(root / "phone", name="Jo's phone")
    try:
        dex = await phone.create_group("Dex", max_members=1)  # only me, on all my devices
        contacts = Contacts(dex)
        await contacts.add("ana", "Ana", birthday="03-14", passions="climbing")
        await contacts.add("ben", "Ben", birthday="11-02")
        await contacts.quirk("ben", "hates cilantro")

        await phone.start(lan=False, port=0)  # listens on 127.0.0.1 only
        pairing = await phone.link_device(ttl=120)
        laptop = await microsync.Device.link(root / "laptop", pairing.link, name="Jo's laptop")
        try:
            on_laptop = Contacts(laptop.group(dex.id))
            print("linked:", ", ".join(d.name for d in phone.devices()))
            assert on_laptop.all() == contacts.all()
            await phone.stop()  # apart from here on: each edits offline

            await contacts.edit("ana", "notes", "new job in Lyon")  # on the phone
            await contacts.called("ana")
            await contacts.add("cy", "Cy", birthday="07-30")
            await contacts.edit("ben", "notes", "owes me a call")
            await on_laptop.quirk("ana", "always 10 min early")  # on the laptop
            await on_laptop.called("ana")
            await on_laptop.edit("ben", "passions", "jazz, sourdough")
            await on_laptop.forget("ben")  # and drops Ben (the phone never saw this)
            assert "cy" not in on_laptop.all() and "notes" not in str(on_laptop.all()["ana"])

            await phone.start(lan=False, port=0)
            assert phone.port is not None
            result = await laptop.sync_with("127.0.0.1", phone.port)
            print(f"synced: {result.entries_received} in, {result.entries_sent} out")
            await phone.stop()

            merged = contacts.all()
            assert merged == on_laptop.all()
            for card in merged.values():
                assert isinstance(card, dict)
                name = card.get("name", "(forgotten)")
                rest = ", ".join(f"{k}: {v!r}" for k, v in card.items() if k != "name")
                print(f"{name!r:<13} {rest}")
            assert merged["ana"] == {
                "name": "Ana",
                "birthday": "03-14",
                "quirks": ["always 10 min early"],
                "passions": "climbing",
                "notes": "new job in Lyon",
                "calls": 2,
            }
            assert sorted(merged) == ["ana", "ben", "cy"]  # Cy added on one, Ben forgotten
            assert merged["ben"] == {"notes": "owes me a call"}  # on the other: the note written
            # concurrently survives the delete, the rest of Ben's record is gone
        finally:
            await laptop.close()
    finally:
        await phone.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="microsync-example-") as tmp:
            asyncio.run(main(Path(tmp)))
