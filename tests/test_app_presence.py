"""Presence and coarse location through the public Group API on real SQLite profiles, and the
ephemeral announcement format underneath them (microsync.app.ephemeral)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microsync
from microsync import encoding
from microsync.app.ephemeral import (
    GRID,
    MAX_FUTURE_MS,
    Announcement,
    AnnouncementKind,
    Board,
    coarsen,
    open_announcement,
    seal_announcement,
)
from microsync.app.ops import APP_TYPE, AppOp
from microsync.clock import system_clock
from microsync.crypto import SymmetricKey, derive_key, labels
from microsync.errors import (
    BadSignature,
    DecodeError,
    DecryptionError,
    MicrosyncError,
    NotAMember,
    StaleAnnouncement,
)
from microsync.testing import FakeClock, app_state
from tests.test_app_group import devices_of, family_of, share

OXFORD = (51.752_021, -1.257_726)


def gossip(*groups: microsync.Group) -> None:
    """Pass every announcement each group holds to every other (what the sync layer does)."""
    for a in groups:
        for b in groups:
            if a is not b:
                for sealed in a.announcements():
                    with suppress(StaleAnnouncement):
                        b.receive_announcement(sealed)


def plaintexts(group: microsync.Group) -> list[bytes]:
    """The plaintext of every entry and announcement the group's device can open."""
    replica = group._replica
    store = replica.store
    out = []
    for device in store.feeds(replica.id):
        for stored in store.entries(replica.id, device):
            if stored.body is not None and stored.entry.header.type == APP_TYPE:
                out.append(replica.decrypt(stored))
    for sealed in group.announcements():
        out.append(_inner(group, sealed))
    return out


def _inner(group: microsync.Group, sealed: bytes) -> bytes:
    _, number, ref, nonce, ct = encoding.decode(sealed, max_size=4096)  # type: ignore[misc]
    epoch = group._replica.key_for(number, ref)  # type: ignore[arg-type]
    assert epoch is not None and epoch.content is not None
    key = SymmetricKey(derive_key(labels.ANNOUNCEMENT_KEY, epoch.content.secret_bytes()))
    return key.decrypt(nonce, ct, encoding.encode([bytes(group.id), number, ref]))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- coarsening


@settings(max_examples=300)
@given(
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.sampled_from(sorted(GRID)),
)
def test_coarsen_snaps_to_the_cell_centre(lat: float, lon: float, precision: str) -> None:
    cell = GRID[precision]
    clat, clon = coarsen(lat, lon, precision)
    assert coarsen(clat / 1e6, clon / 1e6, precision) == (clat, clon)  # idempotent
    assert abs(clat - round(lat * 1e6)) <= max(cell // 2, 0) + (cell == 1)
    assert abs(clon - round(lon * 1e6)) <= max(cell // 2, 0) + (cell == 1)
    if cell > 1:
        # every point of the cell gives the same answer: the output depends on the cell only
        corner = (round(lat * 1e6) // cell) * cell
        if corner > -90e6 and corner + cell - 1 < 90e6:
            assert coarsen(corner / 1e6, lon, precision)[0] == clat
            assert coarsen((corner + cell - 1) / 1e6, lon, precision)[0] == clat


def test_coarsen_known_values_and_bad_input() -> None:
    assert coarsen(*OXFORD, "exact") == (51_752_021, -1_257_726)
    assert coarsen(*OXFORD, "street") == (51_752_500, -1_257_500)
    assert coarsen(*OXFORD, "city") == (51_750_000, -1_250_000)
    assert coarsen(*OXFORD, "region") == (51_500_000, -1_500_000)
    assert coarsen(90, 180, "region") == (90_000_000, 180_000_000)
    for bad in [(91, 0, "city"), (0, 181, "city"), (float("nan"), 0, "city"), (0, 0, "block")]:
        with pytest.raises(ValueError):
            coarsen(*bad)  # type: ignore[arg-type]


def test_announcement_body_known_answer() -> None:
    a = Announcement(
        AnnouncementKind.LOCATION,
        microsync.identity.DeviceId(bytes(32)),
        1_700_000_000_000,
        1_700_000_060_000,
        lat=51_750_000,
        lon=-1_250_000,
        precision="city",
    )
    assert a.body().hex() == (
        "84021b0000018bcfe568001b0000018bcfe65260a3636c61741a0315a470636c6f6e3a00131"
        "2cf69707265636973696f6e6463697479"
    )


def test_a_location_finer_than_its_precision_is_refused() -> None:
    device = microsync.identity.DeviceId(bytes(32))
    bad = Announcement(
        AnnouncementKind.LOCATION, device, 1, 2, lat=51_752_021, lon=0, precision="city"
    )
    with pytest.raises(DecodeError):
        bad.body()


# ---------------------------------------------------------------------- through groups


async def test_city_location_reaches_members_and_never_carries_finer_coordinates(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        mine = await alice.share_location(*OXFORD, precision="city")
        assert (mine.lat, mine.lon, mine.precision) == (51.75, -1.25, "city")
        await alice.share_location(*OXFORD, precision="city", keep_history=True)
        share(alice, bob, carol)
        gossip(alice, bob)  # carol hears only from bob: announcements are passed on
        gossip(bob, carol)
        for group in (alice, bob, carol):
            seen = group.locations()[alice._person()]
            assert (seen.lat, seen.lon, seen.precision, seen.name) == (
                51.75,
                -1.25,
                "city",
                "Alice",
            )
            assert 0 <= seen.age < 60
        exact = [str(v).encode() for v in OXFORD] + [
            encoding.encode(v) for v in (51_752_021, -1_257_726)
        ]
        for group in (alice, bob, carol):
            texts = plaintexts(group)
            assert texts
            for text in texts:
                for needle in exact:
                    assert needle not in text
        # the location entry kept in history is coarse too
        ops = [AppOp.from_bytes(t) for t in plaintexts(bob)[: -len(bob.announcements()) or None]]
        kept = [op for op in ops if op.lat is not None]
        assert [(op.lat, op.lon) for op in kept] == [(51_750_000, -1_250_000)]


async def test_stop_sharing_and_a_newer_location_replace_the_old_everywhere(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.share_location(*OXFORD, precision="street")
        gossip(alice, bob)
        old = alice.announcements()
        await alice.share_location(48.8566, 2.3522, precision="region")
        gossip(alice, bob)
        assert bob.locations()[alice._person()].lat == 48.5
        for sealed in old:  # the older location replayed: refused, nothing changes
            with pytest.raises(StaleAnnouncement):
                bob.receive_announcement(sealed)
        assert bob.locations()[alice._person()].precision == "region"
        await alice.stop_sharing_location()
        gossip(alice, bob)
        assert alice._person() not in bob.locations()
        assert alice._person() not in alice.locations()


async def test_locations_are_ephemeral_and_expire(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        clock = FakeClock(system_clock())
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob", clock=clock)
        before = sum(1 for _ in alice._replica.store.entries(alice.id, alice._device.id))
        await alice.share_location(*OXFORD, precision="city", ttl=60)
        after = sum(1 for _ in alice._replica.store.entries(alice.id, alice._device.id))
        assert after == before  # no feed entry: nothing kept in history
        gossip(alice, bob)
        clock.advance(61_000)
        assert bob.locations() == {}
        assert bob.announcements() == []


async def test_presence_online_then_last_seen(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        clock = FakeClock(system_clock())
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob", clock=clock)
        assert bob.presence()[alice._person()].online is False
        await alice.announce_presence("away", ttl=30)
        gossip(alice, bob)
        seen = bob.presence()[alice._person()]
        assert seen.online and seen.status == "away" and seen.last_seen is not None
        clock.advance(31_000)
        later = bob.presence()[alice._person()]
        assert not later.online and later.last_seen == seen.last_seen
        with pytest.raises(ValueError):
            await alice.announce_presence("dancing")


async def test_announcements_survive_a_restart(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.share_location(*OXFORD)
        gossip(alice, bob)
        person = alice._person()
        bob_path = bob._device.path
        await bob._device.close()
    async with await microsync.Device.open(bob_path) as again:
        group = again.groups()[0]
        assert group.locations()[person].lat == 51.75


async def test_events_for_presence_and_location(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        stream = bob.events()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        await alice.share_location(*OXFORD)
        gossip(alice, bob)
        event = await asyncio.wait_for(first, 5)
        assert event.kind == "location" and event.person == alice._person()
        assert isinstance(event.detail, microsync.Location) and event.detail.lat == 51.75
        await alice.announce_presence()
        gossip(alice, bob)
        event = await asyncio.wait_for(stream.__anext__(), 5)
        assert event.kind == "presence" and event.detail.online  # type: ignore[union-attr]
        await stream.aclose()


# ---------------------------------------------------------------------- adversarial


async def test_bad_announcements_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        other = await devices_of(alice)[0].create_group("Work")
        await alice.share_location(*OXFORD)
        (good,) = alice.announcements()
        board_before = bob._replica.store.get_meta(app_state(bob).keys.board)
        flipped = bytearray(good)
        flipped[-5] ^= 1
        cases: list[tuple[bytes, type[MicrosyncError]]] = [
            (bytes(flipped), DecryptionError),
            (good[:-1], DecodeError),
            (b"\x00" * 3000, DecodeError),
            (encoding.encode([2, 0, bytes(16), bytes(24), b"x" * 40]), DecodeError),
        ]
        await other.share_location(*OXFORD)  # a valid announcement of another group
        cases.append((other.announcements()[0], DecryptionError))
        # carol (a member, holding the epoch key) forges one in Bob's name
        replica = carol._replica
        epoch = replica.current_epoch_key()
        assert epoch is not None
        forged = _forge(
            carol,
            Announcement(
                AnnouncementKind.LOCATION,
                bob._device.id,
                bob._now(),
                bob._now() + 60_000,
                lat=0,
                lon=0,
                precision="exact",
            ),
        )
        cases.append((forged, BadSignature))
        future = Announcement(
            AnnouncementKind.PRESENCE,
            carol._device.id,
            carol._now() + MAX_FUTURE_MS + 60_000,
            carol._now() + MAX_FUTURE_MS + 120_000,
            status="online",
        )
        cases.append((_seal(carol, future), StaleAnnouncement))
        for data, error in cases:
            with pytest.raises(error):
                bob.receive_announcement(data)
        assert bob._replica.store.get_meta(app_state(bob).keys.board) == board_before
        assert bob.locations() == {}


async def test_a_removed_member_cannot_announce(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await carol.share_location(*OXFORD)
        (old,) = carol.announcements()
        await alice.remove(carol._person())
        share(alice, bob)
        with pytest.raises(NotAMember):
            bob.receive_announcement(old)
        # a fresh one sealed under an epoch carol still holds: refused as well
        fresh = Announcement(
            AnnouncementKind.PRESENCE,
            carol._device.id,
            carol._now() + 5,
            carol._now() + 60_000,
            status="online",
        )
        with pytest.raises(NotAMember):
            bob.receive_announcement(_seal(carol, fresh))
        assert carol._person() not in bob.presence()


def _seal(group: microsync.Group, a: Announcement) -> bytes:
    replica = group._replica
    epoch = replica.current_epoch_key()
    assert epoch is not None
    return seal_announcement(
        a, group=replica.id, epoch=epoch, signer=replica.me.identity.device_key, rng=replica.me.rng
    )


def _forge(group: microsync.Group, a: Announcement) -> bytes:
    """``a`` (naming another device) signed with ``group``'s own device key, sealed right."""
    replica = group._replica
    epoch = replica.current_epoch_key()
    assert epoch is not None and epoch.content is not None
    body = a.body()
    sig = replica.me.identity.device_key.sign(
        labels.ANNOUNCEMENT_SIGNATURE,
        encoding.encode([bytes(replica.id), epoch.number, epoch.ref, body]),
    )
    inner = encoding.encode([a.device, body, sig, b""])
    key = SymmetricKey(derive_key(labels.ANNOUNCEMENT_KEY, epoch.content.secret_bytes()))
    nonce = bytes(24)
    ct = key.encrypt(nonce, inner, encoding.encode([bytes(replica.id), epoch.number, epoch.ref]))
    return encoding.encode([1, epoch.number, epoch.ref, nonce, ct])


def test_board_keeps_only_the_newest_and_drops_duplicates() -> None:
    device = microsync.identity.DeviceId(bytes(32))
    board = Board()
    a1 = Announcement(AnnouncementKind.PRESENCE, device, 1000, 5000, status="online")
    a2 = Announcement(AnnouncementKind.PRESENCE, device, 2000, 6000, status="away")
    assert board.accept(a1, b"1", now=1500)
    assert not board.accept(a1, b"1", now=1500)
    assert board.accept(a2, b"2", now=2500)
    with pytest.raises(StaleAnnouncement):
        board.accept(a1, b"1", now=2500)
    with pytest.raises(StaleAnnouncement):
        board.accept(
            Announcement(AnnouncementKind.PRESENCE, device, 3000, 4000, status="online"),
            b"3",
            now=4000,
        )
    assert board.sealed(2500) == [b"2"]
    assert board.sealed(6000) == []


def test_open_announcement_rejects_unknown_keys() -> None:
    with pytest.raises(DecryptionError):
        open_announcement(
            encoding.encode([1, 0, bytes(16), bytes(24), bytes(64)]),
            group=microsync.feed.entry.GroupId(bytes(32)),
            key_for=lambda n, r: None,
        )
