"""Locations per viewer (issue 18 point 5): shared with some members only, each at its own
precision, sealed to each viewer device (microsync.app.viewers, microsync.app.location); a
place label; stops that reach a member who was away; kept history listed and forgotten on
every device. Real SQLite profiles; what the sync layer would move is moved by hand here
(``deliver``), and over real TCP in the last tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import pytest

import microsync
from microsync import encoding
from microsync.app.ephemeral import Announcement, AnnouncementKind
from microsync.app.ops import APP_TYPE, AppOp, LocationOp, Precision
from microsync.app.viewers import is_envelope, read_envelope, seal_for
from microsync.crypto import labels
from microsync.errors import (
    BadSignature,
    DecodeError,
    DecryptionError,
    NotAMember,
    StaleAnnouncement,
)
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.net.connection import SyncConnection
from microsync.testing import replica_of
from tests.test_app_group import family_of, linked_device, raw_profile_bytes, share
from tests.test_net_sync import eventually

OXFORD = (51.752_021, -1.257_726)


def deliver(*groups: microsync.Group) -> None:
    """What live connections would pass between every two of ``groups``, twice over (so what
    a device carries reaches its recipient through it)."""
    for _ in range(2):
        for a in groups:
            for b in groups:
                if a is not b:
                    for sealed in a.announcements(excluding=b.device.id, to=b.device.id):
                        with suppress(StaleAnnouncement):
                            b.receive_announcement(sealed)


def received(by: microsync.Group, *others: microsync.Group) -> list[bytes]:
    """Everything ``others`` would send ``by`` on a connection now."""
    return [s for o in others for s in o.announcements(excluding=by.device.id, to=by.device.id)]


# ---------------------------------------------------------------------- per viewer


async def test_each_viewer_gets_their_precision_and_the_others_nothing(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        jasmine, mum, sis, friend = await family_of(
            stack, tmp_path, "Jasmine", "Mum", "Sis", "Friend"
        )
        me = jasmine.device.person_id
        mine = await jasmine.share_location(
            *OXFORD,
            with_={mum.device.person_id: Precision.STREET, sis.device.person_id: "city"},
            label="Oxford",
        )
        assert (mine.precision, mine.label, mine.lat) == ("street", "Oxford", 51.7525)
        assert received(friend, jasmine, mum, sis) == []  # nothing, on any connection
        deliver(jasmine, mum, sis, friend)
        at_mum, at_sis = mum.locations()[me], sis.locations()[me]
        assert (at_mum.lat, at_mum.lon, at_mum.precision) == (51.7525, -1.2575, "street")
        assert (at_sis.lat, at_sis.lon, at_sis.precision) == (51.75, -1.25, "city")
        assert at_mum.label == at_sis.label == "Oxford" and at_sis.name == "Jasmine"
        assert me not in friend.locations()
        assert jasmine.announcements() == []  # nothing for the whole group
        # the city viewer never held anything finer, in any form
        for needle in [encoding.encode(v) for v in (51_752_500, 51_752_021, -1_257_500)]:
            assert needle not in raw_profile_bytes(sis.device)


async def test_a_viewer_left_out_cannot_tell_from_never_shared(tmp_path: Path) -> None:
    """What Friend receives and keeps is the same whether Jasmine shares with others or not:
    nothing. A dropped viewer gets a stop that reads like stopping altogether."""
    async with AsyncExitStack() as stack:
        jasmine, mum, friend = await family_of(stack, tmp_path, "Jasmine", "Mum", "Friend")
        me = jasmine.device.person_id
        before = received(friend, jasmine, mum)
        meta_before = raw_profile_bytes(friend.device)
        await jasmine.share_location(*OXFORD, with_=[mum.device.person_id])
        deliver(jasmine, mum, friend)
        assert me in mum.locations()
        assert received(friend, jasmine, mum) == before == []
        assert me not in friend.locations()
        envelopes = [s for s in mum.announcements(to=mum.device.id) if is_envelope(s)]
        assert envelopes
        assert all(e not in raw_profile_bytes(friend.device) for e in envelopes)
        assert len(raw_profile_bytes(friend.device)) == len(meta_before)
        # now with Friend only: Mum gets a stop, padded to the size of a location
        stream = mum.events()
        first = stream.__anext__()
        await jasmine.share_location(*OXFORD, with_={friend.device.person_id: "region"})
        sizes = {len(s) for s in jasmine.announcements(to=mum.device.id)}
        sizes |= {len(s) for s in jasmine.announcements(to=friend.device.id)}
        assert len(sizes) == 1
        deliver(jasmine, mum, friend)
        assert me not in mum.locations() and friend.locations()[me].precision == "region"
        event = await first
        assert event.kind == "location" and event.person == me
        assert isinstance(event.detail, microsync.app.events.SharingStopped)
        assert event.detail.name == "Jasmine"
        await stream.aclose()


async def test_switching_from_the_whole_group_to_some_withdraws_the_group_wide_one(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        jasmine, mum, friend = await family_of(stack, tmp_path, "Jasmine", "Mum", "Friend")
        me = jasmine.device.person_id
        await jasmine.share_location(*OXFORD, precision="region", label="home")
        deliver(jasmine, mum, friend)
        assert friend.locations()[me].label == "home" and me in mum.locations()
        await jasmine.share_location(*OXFORD, with_={mum.device.person_id: "city"})
        deliver(jasmine, mum, friend)
        assert me not in friend.locations()
        assert mum.locations()[me].precision == "city"
        await jasmine.stop_sharing_location()
        deliver(jasmine, mum, friend)
        assert me not in mum.locations() and me not in friend.locations()


async def test_a_stop_reaches_a_viewer_who_was_away_through_someone_else(
    tmp_path: Path,
) -> None:
    """Mum's laptop was off when Jasmine stopped, and Jasmine is offline since: Mum's phone
    carries the stop to the laptop. The stop outlives the location it withdraws."""
    async with AsyncExitStack() as stack:
        jasmine, mum = await family_of(stack, tmp_path, "Jasmine", "Mum")
        laptop = await linked_device(stack, tmp_path, mum)
        share(jasmine, mum)
        me = jasmine.device.person_id
        await jasmine.share_location(*OXFORD, with_=[mum.device.person_id], ttl=7 * 24 * 3600)
        deliver(jasmine, mum, laptop)
        assert me in laptop.locations() and me in mum.locations()
        await jasmine.stop_sharing_location()
        deliver(jasmine, mum)  # the laptop is away
        assert me not in mum.locations() and me in laptop.locations()
        await jasmine.device.close()  # and Jasmine goes offline
        laptop_path = laptop.device.path
        await laptop.device.close()
        async with await microsync.Device.open(laptop_path) as again:  # days later
            back = again.group(mum.id)
            assert me in back.locations()
            deliver(mum, back)
            assert me not in back.locations()
        stops = [s for s in mum.announcements(to=laptop.device.id) if is_envelope(s)]
        for sealed in stops:
            envelope = read_envelope(sealed, group=GroupId(mum.id))
            assert envelope.expires_at - envelope.issued_at >= 7 * 24 * 3600 * 1000 - 10_000


# ---------------------------------------------------------------------- adversarial


async def test_forged_moved_and_misaddressed_envelopes_are_void(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        jasmine, mum, carol = await family_of(stack, tmp_path, "Jasmine", "Mum", "Carol")
        me = jasmine.device.person_id
        await jasmine.share_location(*OXFORD, with_=[mum.device.person_id])
        (real,) = jasmine.announcements(to=mum.device.id)
        # Carol (a member) forges one in Jasmine's name, to Mum: signed by Carol
        fake = Announcement(
            AnnouncementKind.LOCATION,
            jasmine.device.id,
            carol.device.clock() + 1000,
            carol.device.clock() + 60_000,
            lat=0,
            lon=0,
            precision="exact",
        )
        forged = _seal_as(carol, fake, to=mum)
        with pytest.raises(BadSignature):
            mum.receive_announcement(forged)
        # Mum passes her copy to Carol: not Carol's to hold, and no key of Carol's opens it
        with pytest.raises(NotAMember):
            carol.receive_announcement(real)
        # a flipped byte, a cut envelope, another group's
        flipped = bytearray(real)
        flipped[-70] ^= 1
        for data, error in [(bytes(flipped), BadSignature), (real[:-1], DecodeError)]:
            with pytest.raises(error):
                mum.receive_announcement(data)
        other = await jasmine.device.create_group("Other")
        with pytest.raises(BadSignature):  # the signature covers the group
            other.receive_announcement(real)
        # Carol's own envelope to Mum, re-signed... the AEAD binds the sender: cannot open
        own = Announcement(
            AnnouncementKind.LOCATION,
            carol.device.id,
            carol.device.clock() + 1000,
            carol.device.clock() + 60_000,
            lat=0,
            lon=0,
            precision="exact",
        )
        moved = _resign(_seal_as(carol, own, to=mum), carol, sender=jasmine.device.id)
        with pytest.raises(BadSignature):
            mum.receive_announcement(moved)
        assert me not in mum.locations() and carol.device.person_id not in mum.locations()
        mum.receive_announcement(real)
        assert mum.locations()[me].precision == "city"
        # a body whose times differ from the envelope's clear fields is refused
        with pytest.raises(DecryptionError):
            mum.receive_announcement(_resign(real, jasmine, sender=jasmine.device.id, shift=1))


def _seal_as(by: microsync.Group, a: Announcement, *, to: microsync.Group) -> bytes:
    """``a`` sealed to ``to``'s device, signed with ``by``'s device key whatever it names."""
    replica, info = replica_of(by), replica_of(to).state.device(to.device.id)
    assert info is not None
    signer = replica.me.identity.device_key
    if a.device != signer.public:
        genuine = Announcement(
            a.kind, DeviceId(bytes(signer.public)), a.issued_at, a.expires_at,
            lat=a.lat, lon=a.lon, precision=a.precision,
        )  # fmt: skip
        sealed = seal_for(
            genuine, group=replica.id, recipient=to.device.id, prekey_id=info.prekey_id,
            prekey=info.prekey, signer=signer, rng=replica.me.rng,
        )  # fmt: skip
        return _resign(sealed, by, sender=a.device)
    return seal_for(
        a, group=replica.id, recipient=to.device.id, prekey_id=info.prekey_id,
        prekey=info.prekey, signer=signer, rng=replica.me.rng,
    )  # fmt: skip


def _resign(sealed: bytes, by: microsync.Group, *, sender: bytes, shift: int = 0) -> bytes:
    """``sealed`` with its sender replaced (and its issue time moved by ``shift``), signed
    again by ``by``'s device key."""
    replica = replica_of(by)
    items = list(encoding.decode(sealed, max_size=4096))  # type: ignore[arg-type]
    items[1] = bytes(sender)
    issued = items[3]
    assert isinstance(issued, int)
    items[3] = issued + shift
    signed = encoding.encode([replica.id, items[:9]])
    items[9] = replica.me.identity.device_key.sign(labels.VIEWER_LOCATION_SIGNATURE, signed)
    return encoding.encode(items)


async def test_every_envelope_has_one_size(tmp_path: Path) -> None:
    """A stop, a location, and a location with the longest label look alike on the wire."""
    async with AsyncExitStack() as stack:
        jasmine, mum = await family_of(stack, tmp_path, "Jasmine", "Mum")
        sizes = set()
        for label in (None, "x", "é" * 64):
            await jasmine.share_location(*OXFORD, with_=[mum.device.person_id], label=label)
            sizes |= {len(s) for s in jasmine.announcements(to=mum.device.id)}
        await jasmine.stop_sharing_location()
        sizes |= {len(s) for s in jasmine.announcements(to=mum.device.id)}
        assert len(sizes) == 1


async def test_sharing_with_a_non_member_or_yourself_is_refused(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        jasmine, mum = await family_of(stack, tmp_path, "Jasmine", "Mum")
        for bad in ([bytes(32)], [jasmine.device.person_id]):
            with pytest.raises(NotAMember):
                await jasmine.share_location(*OXFORD, with_=bad)
        with pytest.raises(ValueError):
            await jasmine.share_location(*OXFORD, with_=[])
        with pytest.raises(ValueError):
            await jasmine.share_location(*OXFORD, with_={mum.device.person_id: "nearby"})
        with pytest.raises(ValueError):
            await jasmine.share_location(*OXFORD, label="x" * 129)
        with pytest.raises(ValueError):
            await jasmine.share_location(*OXFORD, with_=[mum.device.person_id], keep_history=True)
        assert jasmine.announcements(to=mum.device.id) == []


# ---------------------------------------------------------------------- kept history


async def test_the_owner_lists_and_deletes_kept_history_on_every_device(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        jasmine, mum, carol = await family_of(stack, tmp_path, "Jasmine", "Mum", "Carol")
        me = jasmine.device.person_id
        await jasmine.share_location(*OXFORD, keep_history=True, label="work", ttl=60)
        await jasmine.share_location(48.8566, 2.3522, precision="region", keep_history=True)
        await mum.share_location(*OXFORD, keep_history=True)
        share(jasmine, mum)  # carol is away
        history = jasmine.location_history()
        assert [(h.lat, h.label) for h in history] == [(51.75, "work"), (48.5, None)]
        assert mum.location_history() == [mum.location_history()[0]]  # only her own
        assert await jasmine.delete_location_history() == 2
        assert jasmine.location_history() == []
        await jasmine.stop_sharing_location()  # the live one too
        share(jasmine, mum, carol)
        for group in (jasmine, mum, carol):  # carol got the entries and the forget at once
            assert me not in group.locations()
            kept = _kept_locations(group)
            assert me not in kept  # purged from every disk
            assert kept[mum.device.person_id] == 1  # Mum's own stays
        assert await jasmine.delete_location_history() == 0  # nothing left: nothing written
        assert len(mum.location_history()) == 1


async def test_a_kept_location_arriving_after_its_forget_is_purged_on_arrival(
    tmp_path: Path,
) -> None:
    """The forget covers everything of this person signed up to it, also what another of
    their devices wrote that this one never saw."""
    async with AsyncExitStack() as stack:
        jasmine, mum = await family_of(stack, tmp_path, "Jasmine", "Mum")
        laptop = await linked_device(stack, tmp_path, jasmine)
        share(jasmine, mum, laptop)
        me = jasmine.device.person_id
        await laptop.share_location(*OXFORD, keep_history=True)  # offline: not passed on yet
        await asyncio.sleep(0.01)
        await jasmine.share_location(48.8566, 2.3522, keep_history=True)
        assert await jasmine.delete_location_history() == 1  # the one known here
        share(jasmine, mum)
        assert _kept_locations(mum)[me] == 0
        assert _kept_locations(laptop)[me] == 1 and len(laptop.location_history()) == 1
        share(laptop, mum)  # the laptop's older one reaches Mum after the forget
        # (purged when Mum's device folds it: at once while its app state is loaded, as for
        # deleted posts, else at its first read)
        assert me not in mum.locations()
        assert _kept_locations(mum)[me] == 0
        share(jasmine, laptop)  # and the laptop forgets its own too
        assert _kept_locations(laptop)[me] == 0 and laptop.location_history() == []


async def test_nobody_else_can_forget_your_history(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        jasmine, mum = await family_of(stack, tmp_path, "Jasmine", "Mum")
        await jasmine.share_location(*OXFORD, keep_history=True)
        share(jasmine, mum)
        await mum.delete_location_history()  # Mum has none: nothing is written
        await mum.share_location(*OXFORD, keep_history=True)
        await mum.delete_location_history()  # forgets Mum's own only
        share(jasmine, mum)
        assert len(jasmine.location_history()) == 1 and mum.location_history() == []
        assert jasmine.device.person_id in _kept_locations(mum)


def _kept_locations(group: microsync.Group) -> Counter[bytes]:
    """Whose location entries this device can still open from its disk, counted."""
    replica = replica_of(group)
    store = replica.store
    found: Counter[bytes] = Counter()
    for device in store.feeds(replica.id):
        for stored in store.entries(replica.id, device):
            if stored.body is None or stored.entry.header.type != APP_TYPE:
                continue
            op = AppOp.from_bytes(replica.decrypt(stored))
            if isinstance(op, LocationOp):
                person = replica.state.person_of(DeviceId(device))
                found[bytes(person or b"")] += 1
    return found


# ---------------------------------------------------------------------- over TCP


async def test_over_tcp_only_the_viewer_is_sent_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: Counter[bytes] = Counter()
    original = SyncConnection.send_ephemeral

    def counting(self: SyncConnection, group: GroupId, data: bytes) -> None:
        sent[bytes(self.peer.device)] += 1
        original(self, group, data)

    monkeypatch.setattr(SyncConnection, "send_ephemeral", counting)
    async with AsyncExitStack() as stack:
        jasmine, mum, friend = await family_of(stack, tmp_path, "Jasmine", "Mum", "Friend")
        await jasmine.device.start(lan=False, port=0)
        address = f"127.0.0.1:{jasmine.device.port}"
        for other in (mum, friend):
            await other.device.start(lan=False, port=None, peers=(address,))
        await eventually(lambda: len(jasmine.device.peers()) == 2)
        await eventually(lambda: all(p.synced for p in jasmine.device.peers()))
        me = jasmine.device.person_id
        await jasmine.share_location(*OXFORD, with_={mum.device.person_id: "city"}, label="Oxford")
        await eventually(lambda: me in mum.locations())
        assert mum.locations()[me].label == "Oxford"
        await jasmine.stop_sharing_location()
        await eventually(lambda: me not in mum.locations())
        assert sent[bytes(friend.device.id)] == 0 and sent[bytes(mum.device.id)] >= 2
        assert me not in friend.locations()
        for group in (jasmine, mum, friend):
            await group.device.stop()
