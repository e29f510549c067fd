"""Laws of per-viewer locations and forgotten history under random delivery (Hypothesis).

1. The timeline fold of kept locations and ``ForgetOp``s: replicas that got the same entries,
   in any order with duplicates, agree on who is shown where and on what is forgotten; every
   forgotten location is reported for purging wherever it arrives, before or after the forget;
   and nobody forgets someone else's.
2. Per-viewer envelopes between real devices (SQLite profiles; one person with two devices):
   after any interleaving of shares, stops and partial deliveries, once everything has been
   passed on, every device shows exactly what the sharer's last action gave its person, and
   a person never chosen was never sent anything at all.
"""

from __future__ import annotations

import random
import tempfile
from contextlib import AsyncExitStack, suppress
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.app.ephemeral import Announcement, AnnouncementKind
from microsync.app.forget import kept_locations
from microsync.app.ops import AppOp, ForgetOp, Kind, LocationOp
from microsync.app.timeline import Timeline
from microsync.app.viewers import open_envelope, read_envelope, seal_for
from microsync.crypto import SigningKey, X25519SecretKey
from microsync.errors import MicrosyncError, StaleAnnouncement
from microsync.feed.entry import EntryId, GroupId
from microsync.identity import DeviceId
from tests.test_app_group import family_of, linked_device, share
from tests.test_app_location import deliver, received
from tests.test_app_timeline import Writer, _all

OXFORD = (51.752_021, -1.257_726)
PRECISIONS = ["exact", "street", "city", "region"]

history_steps = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["kept", "forget", "sync"]), st.integers(0, 3)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=history_steps, seed=st.integers(0, 2**32))
def test_forgotten_history_converges_and_is_purged_wherever_it_arrives(
    steps: list[tuple[int, str, int]], seed: int
) -> None:
    writers = [Writer(i) for i in range(4)]
    writers[1].person = writers[0].person  # one person's phone and laptop
    clock = 0
    for who, action, other in steps:
        w, clock = writers[who], clock + 1
        if action == "kept":
            w.write(AppOp(Kind.LOCATION, lat=clock, lon=0, precision="exact"), clock)
        elif action == "forget":
            w.write(AppOp(Kind.FORGET, up_to=clock), clock)
        else:
            w.timeline.add(writers[other].mine)
    everything = _all(writers)
    horizon: dict[bytes, int] = {}
    for e in everything:
        if isinstance(e.op, ForgetOp):
            horizon[e.person] = max(horizon.get(e.person, -1), e.op.up_to)
    forgotten = {
        e.id
        for e in everything
        if isinstance(e.op, LocationOp) and e.hlc <= horizon.get(e.person, -1)
    }
    rng = random.Random(seed)
    fresh = Timeline()
    fresh.add(everything)
    late = [Writer(9), Writer(9)]  # replicas that start empty
    for w in [*writers, *late]:
        batch = everything + rng.sample(everything, len(everything) // 3)
        rng.shuffle(batch)
        purged: set[EntryId] = set()
        for start in range(0, len(batch), 5):
            for change in w.timeline.add(batch[start : start + 5]):
                purged.update(change.purge)
        assert w.timeline.summary() == fresh.summary()
        assert w.timeline.forgotten == fresh.forgotten
        if w in late:  # it got everything here: each forgotten one reported, nothing else
            assert purged == forgotten
        for person, entry in w.timeline.locations.items():
            assert entry.id not in forgotten and entry.person == person
        for person in {e.person for e in everything}:
            assert all(e.id not in forgotten for e in kept_locations(w.timeline, person))


def test_a_forget_by_someone_else_changes_nothing() -> None:
    jasmine, mum = Writer(0), Writer(1)
    kept = jasmine.write(AppOp(Kind.LOCATION, lat=1, lon=2, precision="exact"), 10)
    mum.timeline.add([kept])
    forget = mum.write(AppOp(Kind.FORGET, up_to=10**12), 11)
    jasmine.timeline.add([forget])
    for t in (jasmine.timeline, mum.timeline):
        assert t.locations[jasmine.person].id == kept.id
        assert kept_locations(t, jasmine.person) == [kept]


# ---------------------------------------------------------------------- per viewer, real devices

people = ["mum", "sis", "friend"]
viewer_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("share"),
            st.dictionaries(st.sampled_from(people), st.sampled_from(PRECISIONS), min_size=1),
        ),
        st.tuples(st.just("group"), st.sampled_from(PRECISIONS)),
        st.tuples(st.just("stop"), st.just(None)),
        st.tuples(st.just("deliver"), st.tuples(st.integers(0, 4), st.integers(0, 4))),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=viewer_steps)
async def test_per_viewer_locations_converge_under_random_delivery(
    steps: list[tuple[str, object]],
) -> None:
    with tempfile.TemporaryDirectory() as root:
        async with AsyncExitStack() as stack:
            jasmine, mum, sis, friend = await family_of(
                stack, Path(root), "Jasmine", "Mum", "Sis", "Friend"
            )
            laptop = await linked_device(stack, Path(root), mum)
            everyone = [jasmine, mum, laptop, sis, friend]
            share(*everyone)  # everyone knows the laptop
            person = {"mum": mum, "sis": sis, "friend": friend}
            me = jasmine.device.person_id
            last: tuple[str, object] | None = None
            chosen: set[str] = set()
            for action, arg in steps:
                if action == "share":
                    assert isinstance(arg, dict)
                    with_ = {person[p].device.person_id: v for p, v in arg.items()}
                    await jasmine.share_location(*OXFORD, with_=with_)
                    chosen |= set(arg)
                    last = (action, arg)
                elif action == "group":
                    await jasmine.share_location(*OXFORD, precision=str(arg))
                    chosen |= set(people)
                    last = (action, arg)
                elif action == "stop":
                    await jasmine.stop_sharing_location()
                    last = (action, arg) if last is not None else None
                else:
                    assert isinstance(arg, tuple)
                    src, dst = everyone[arg[0]], everyone[arg[1]]
                    if src is not dst:
                        for sealed in src.announcements(excluding=dst.device.id, to=dst.device.id):
                            with suppress(StaleAnnouncement):
                                dst.receive_announcement(sealed)
                for name in set(people) - chosen:  # never chosen: never sent anything
                    assert received(person[name], *everyone) == []
                    assert me not in person[name].locations()
            deliver(*everyone)
            deliver(*everyone)
            for name, group in [("mum", mum), ("mum", laptop), ("sis", sis), ("friend", friend)]:
                shown = group.locations().get(me)
                expected = _expected(last, name)
                assert (None if shown is None else str(shown.precision)) == expected, (
                    name,
                    steps,
                )


def _expected(last: tuple[str, object] | None, name: str) -> str | None:
    if last is None or last[0] == "stop":
        return None
    if last[0] == "group":
        return str(last[1])
    shared = last[1]
    assert isinstance(shared, dict)
    return shared.get(name)


def test_law_helpers_are_consistent() -> None:
    assert _expected(("share", {"mum": "city"}), "mum") == "city"
    assert _expected(("share", {"mum": "city"}), "sis") is None
    assert _expected(("group", "region"), "sis") == "region"
    assert _expected(None, "mum") is None
    assert microsync.Location is not None


# ---------------------------------------------------------------------- fuzz: the envelope codec

_SIGNER = SigningKey.generate(random.Random(1).randbytes)
_PREKEY = X25519SecretKey.generate(random.Random(2).randbytes)
_GROUP = GroupId(bytes(range(32)))
_VALID = seal_for(
    Announcement(
        AnnouncementKind.LOCATION,
        DeviceId(bytes(_SIGNER.public)),
        1_000,
        60_000,
        lat=51_750_000,
        lon=-1_250_000,
        precision="city",
        label="Oxford",
    ),
    group=_GROUP,
    recipient=DeviceId(bytes(32)),
    prekey_id=1,
    prekey=_PREKEY.public,
    signer=_SIGNER,
    rng=random.Random(3).randbytes,
)

mutated = st.builds(
    lambda cuts, flips: _mutate(_VALID, cuts, flips),
    st.integers(0, len(_VALID)),
    st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(1, 255)), max_size=4),
)


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[:cut] if cut < len(data) else data)
    for at, mask in flips:
        if at < len(out):
            out[at] ^= mask
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(mutated, st.binary(max_size=3000)))
def test_any_bytes_as_an_envelope_are_a_typed_error_or_the_original(data: bytes) -> None:
    try:
        envelope = read_envelope(data, group=_GROUP)
        opened = open_envelope(envelope, group=_GROUP, prekeys={1: _PREKEY})
    except MicrosyncError:
        return
    original = open_envelope(
        read_envelope(_VALID, group=_GROUP), group=_GROUP, prekeys={1: _PREKEY}
    )
    assert opened == original  # only a re-encoding of the very same envelope can pass
