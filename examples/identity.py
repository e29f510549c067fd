"""Create a person with their first device, then recover them onto a second device.

    python examples/identity.py [DIR]

Shows the foundation of microsync: a profile directory per device, a person key shared by
all of a person's devices, 24 recovery words (shown only while the person is being created:
no device keeps them, so a thief with a device cannot read them off it), and the rule that a
restored device gets a NEW device key (so two devices never write the same feed).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import microsync


async def main(root: Path) -> None:
    async with await microsync.Device.open(root / "alice-phone", name="Alice") as phone:
        print(f"created {phone!r}")
        words = phone.export_recovery_words()  # now or never: the profile does not keep them
        print(f"recovery words: {len(words)} (write them down, keep them offline)")

        # The profile is single-writer: a second open is refused with a typed error.
        try:
            await microsync.Device.open(root / "alice-phone")
        except microsync.ProfileInUse as error:
            print(f"second open refused: {error}")

    async with await microsync.Device.restore(root / "alice-laptop", words, name="Laptop") as lap:
        print(f"restored {lap!r}")
        assert lap.person_id == phone.person_id, "same person"
        assert lap.id != phone.id, "new device key"
        print("same person, new device: ok")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ms-"))
    asyncio.run(main(target))
