"""The test kit's clock starts at any instant (issue 18, gap 5): ``AppKit(start=...)``, by
default a fixed epoch, never this machine's time. Every handshake the kit runs or serves
checks certificates against the kit's clock (``handshake(..., clock=)``), so a scenario set
in 2001 or in 2030 runs whole: invites, joins, a linked device, syncs, a live connection."""

from __future__ import annotations

import asyncio
import random
import tempfile
from datetime import UTC, datetime

import pytest

import microsync
from microsync.testing import AppKit, FakeClock
from microsync.testing.kit import KIT_EPOCH

IN_2001 = datetime(2001, 9, 9, 12, 0, tzinfo=UTC)
IN_2030 = datetime(2030, 6, 1, 8, 30, tzinfo=UTC)


async def family_day(kit: AppKit) -> dict[str, object]:
    """App code over the public API only: a family posts, replies with a link, reacts,
    edits a shared document, shares a location with one member, links a laptop and syncs
    live. Returns what the last member's device shows."""
    ana, ben, cy = await kit.group_of(3, "Family", names=["Ana", "Ben", "Cy"])
    post = await ana.post("landed")
    kit.clock.advance(1000)
    await kit.settle()
    link = microsync.LinkPart(url="https://example.org/flight", title="flight")
    await ben.reply(post.id, "welcome back", parts=[link])
    await cy.react(post.id, "❤️")
    await ana.doc("lists").list("shopping").insert(0, "milk")
    await ana.share_location(51.752, -1.2577, "city", with_={cy.device.person_id: "city"})
    laptop = await kit.link(ana.device, "Ana laptop")
    await kit.connect(laptop, cy.device)
    await laptop.group(ana.id).post("from the laptop")
    await kit.settle()
    for _ in range(50):  # the live push and the envelope travel on their own
        if len(cy.feed()) == 3 and cy.locations():
            break
        await asyncio.sleep(0.01)
    return {
        "feed": sorted(str(p.text) for p in cy.feed()),
        "reply parts": cy.thread(post.id)[0].parts,
        "hearts": len(cy.post_by_id(post.id).reactions["❤️"]),
        "doc": cy.doc("lists").to_value(),
        "located": sorted(loc.name for loc in cy.locations().values()),
        "now": kit.clock(),
    }


@pytest.mark.parametrize("start", [IN_2001, IN_2030], ids=["2001", "2030"])
def test_a_kit_set_in_another_year_runs_an_app_scenario(start: datetime) -> None:
    async def scenario(root: str) -> dict[str, object]:
        async with AppKit(root, seed=3, start=start) as kit:
            assert kit.clock() == round(start.timestamp() * 1000)
            return await family_day(kit)

    with tempfile.TemporaryDirectory() as root:
        shown = asyncio.run(scenario(root))
    assert shown["feed"] == ["from the laptop", "landed", "welcome back"]
    assert shown["reply parts"] == (
        microsync.LinkPart(url="https://example.org/flight", title="flight"),
    )
    assert shown["hearts"] == 1
    assert shown["doc"] == {"shopping": ["milk"]}
    assert shown["located"] == ["Ana"]
    now = shown["now"]
    assert isinstance(now, int)
    assert abs(now - start.timestamp() * 1000) < 3_600_000  # the kit's time, not the machine's


def test_the_posts_are_dated_by_the_kit_clock() -> None:
    async def scenario(root: str) -> list[int]:
        async with AppKit(root, seed=1, start=IN_2001) as kit:
            ana, ben = await kit.group_of(2, "Family")
            await ana.post("hello")
            await kit.settle()
            return [p.created_at.year for p in ben.feed()]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == [2001]


def test_the_default_start_is_a_fixed_epoch_not_the_wall_clock() -> None:
    with tempfile.TemporaryDirectory() as root:
        assert AppKit(root).clock() == KIT_EPOCH
        assert AppKit(root, start=42_000).clock() == 42_000
        clock = FakeClock(7)
        assert AppKit(root, clock=clock).clock is clock


@pytest.mark.parametrize(
    "bad", [datetime(2030, 1, 1), -1, 1.5, "2030"], ids=["naive", "negative", "float", "text"]
)
def test_a_bad_start_is_refused(bad: object) -> None:
    with tempfile.TemporaryDirectory() as root, pytest.raises(ValueError):
        AppKit(root, start=bad)  # type: ignore[arg-type]


def test_a_clock_and_a_start_together_are_refused() -> None:
    with tempfile.TemporaryDirectory() as root, pytest.raises(ValueError, match="not both"):
        AppKit(root, clock=FakeClock(1), start=2)


def test_devices_older_than_a_transport_certificate_still_connect() -> None:
    """A handshake at the kit's time found the transport certificate's 30-day lifetime: a
    device past half of it has its certificate (of the same key) issued again as it
    connects, so a family that meets again after 40 days syncs."""

    async def scenario(root: str) -> list[str]:
        async with AppKit(root, seed=4) as kit:
            ana, ben = await kit.group_of(2, "Family")
            kit.clock.advance(40 * 24 * 3600 * 1000)
            await ana.post("forty days later")
            await kit.settle()
            return [str(p.text) for p in ben.feed()]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == ["forty days later"]


def test_an_identity_renews_its_transport_certificate_past_half_its_life() -> None:
    from microsync.identity import TRANSPORT_KEY_LIFETIME, LocalIdentity

    rng = random.Random(5).randbytes
    identity = LocalIdentity.create("Ana", rng, 1_000)
    assert identity.current(1_000 + TRANSPORT_KEY_LIFETIME // 2 - 1) is identity
    for later in (1_000 + TRANSPORT_KEY_LIFETIME // 2, 1_000 + 3 * TRANSPORT_KEY_LIFETIME):
        renewed = identity.current(later)
        cert = renewed.transport_certificate
        assert cert.issued_at == later and cert.expires_at == later + TRANSPORT_KEY_LIFETIME
        assert cert.key == identity.transport_key.public
        cert.verify()
        assert renewed.device_key is identity.device_key
