"""Alice founds a family group, invites Bob with a link and Carol with a short code, then
removes Bob; the group starts a new key epoch that Bob cannot read.

    python examples/family_group.py [DIR]

The devices run in this one process and the bytes between them are handed over directly: the
pairing messages of an invite (a sans-IO state machine) and the group's signed, encrypted
entries. Over a network the sync transport carries exactly these bytes.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import microsync
from microsync.group.invite import PairingGuest, PairingHost


def pair(host: PairingHost, guest: PairingGuest) -> bytes:
    """Run one invite pairing to the end: what a connection with purpose "invite" carries."""
    message: bytes | None = guest.start()
    while message is not None:
        message = guest.receive(host.receive(message, now=time.time_ns() // 1_000_000))
    return guest.response


def sync(a: microsync.Device, b: microsync.Device, group: bytes) -> None:
    """What a sync session does: exchange certificates, then the entries the other lacks."""
    a.learn_certificates(b.certificates())
    b.learn_certificates(a.certificates())
    b.receive(group, a.entries_after(group, b.frontier(group)))
    a.receive(group, b.entries_after(group, a.frontier(group)))


async def main(root: Path) -> None:
    async with (
        await microsync.Device.open(root / "alice", name="Alice") as alice,
        await microsync.Device.open(root / "bob", name="Bob") as bob,
        await microsync.Device.open(root / "carol", name="Carol") as carol,
    ):
        family = await alice.create_group("Family")
        print(f"{alice.name} created {family!r}, epoch {family.epoch}")

        link = await family.invite(ttl=3600)
        print(f"invite link for a QR code: {link.link[:40]}...")
        bob.learn_certificates(alice.certificates())
        await bob.finish_join(pair(alice.invite_host().session(), bob.join_guest(link.link)))

        code = await family.invite(ttl=600)
        print(
            f"short code to read aloud: {len(code.code.split('-'))} parts (one wrong try burns it)"
        )
        carol.learn_certificates(alice.certificates())
        await carol.finish_join(pair(alice.invite_host().session(), carol.join_guest(code.code)))

        for device in (bob, carol):
            sync(alice, device, family.id)
        print("members:", ", ".join(f"{m.name} ({m.role})" for m in family.members()))
        names = {m.person_id: m.name for m in family.members()}
        for status in family.invites():
            print(f"invite {status.state}, used by {names.get(status.joined or b'', '-')}")

        bob_view = bob.group(family.id)
        print(f"Bob sees {bob_view.name!r} with {len(bob_view.members())} members")

        await family.remove(bob.person_id)
        for device in (bob, carol):
            sync(alice, device, family.id)
        print(
            f"after removing Bob: epoch {family.epoch}; Carol agrees: "
            f"{carol.group(family.id).epoch == family.epoch}; Bob still a member: "
            f"{bob_view.is_member()}"
        )
        assert not bob_view.is_member()
        assert [m.name for m in carol.group(family.id).members()] == ["Alice", "Carol"]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="microsync-example-") as tmp:
            asyncio.run(main(Path(tmp)))
