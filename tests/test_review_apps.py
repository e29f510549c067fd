"""Review of the apps-gaps change (replies with parts, nested counters, live doc handles, the
same-millisecond location stop, the kit clock, transport-certificate renewal): each test
here failed before the fix it names, against a hostile member or a hostile disk."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import tempfile

import pytest

from microsync import encoding
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.crypto import SigningKey
from microsync.encoding import Value
from microsync.errors import DecodeError, HandshakeError, MicrosyncError
from microsync.identity import TRANSPORT_KEY_LIFETIME, LocalIdentity
from microsync.protocol.handshake import Handshake, Purpose, pump
from microsync.state import CounterAdd, Document
from microsync.state.ids import OpId
from microsync.testing import AppKit
from microsync.testing.hostile import Hostile
from tests.conftest import make_identity, make_rng

YEAR_MS = 365 * 24 * 3600 * 1000


async def _passed(kit: AppKit) -> None:
    await kit.settle()
    for _ in range(30):  # live connections push announcements on their own
        await asyncio.sleep(0.005)


def test_a_stop_wins_over_a_kept_location_a_hostile_member_dated_ahead() -> None:
    """Mallory posts an entry dated a year ahead; Ana's next write answers it, so her kept
    location is dated up to ``MAX_DRIFT_MS`` (5 min) ahead. Her stop must still withdraw it
    (it was capped at 1 minute ahead, so the kept location kept showing for its lifetime)."""

    async def scenario(root: str) -> list[int]:
        async with AppKit(root, seed=41) as kit:
            ana, ben, mallory = await kit.group_of(3, "Family", names=["Ana", "Ben", "Mal"])
            evil = Hostile.of_group(mallory)
            far = AppOp(Kind.POST, text="from the future").to_bytes()
            evil.append_content(APP_TYPE, far, hlc=kit.clock() + YEAR_MS)
            await kit.settle()
            for a, b in itertools.combinations(kit.devices, 2):
                await kit.connect(a, b)  # live: announcements are pushed as they are made
            await ana.share_location(51.752, -1.2577, "city", keep_history=True)
            await kit.settle()
            assert ana.device.person_id in ben.locations()  # it did arrive
            kit.clock.advance(1000)
            await ana.stop_sharing_location()
            await _passed(kit)
            return [len(g.locations()) for g in (ana, ben, mallory)]

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(scenario(root)) == [0, 0, 0]


# --- the transport certificate renewed by LocalIdentity.current -------------------------------

T0 = 1_700_000_000_000  # when make_identity's devices were made
DAY = 24 * 3600 * 1000


class _Thief(Handshake):
    """Modified code: no "connected to itself" check (its identity reuses Ana's fields)."""

    def _check_not_self(self) -> None:
        return None


def _handshake(a: LocalIdentity, b: LocalIdentity, now_a: int, now_b: int) -> Handshake:
    """``a`` connects to ``b``, each presenting what ``handshake()`` presents at its own
    clock (``current``); ``b``'s finished side (errors propagate)."""
    ours = _Thief.initiator(a, Purpose.SYNC, now=now_a, rng=make_rng("review-a"))
    theirs = Handshake.responder(b.current(now_b), now=now_b, rng=make_rng("review-b"))
    pump(ours, theirs)
    return theirs


def test_a_stolen_transport_key_stops_passing_once_its_certificate_has_expired() -> None:
    """A thief copies Ana's transport secret on day 0 (not her device key). Every device
    hands its renewed certificate to whoever connects, so the thief has that too; once the
    30 days of the key it stole are over, it must no longer pass as Ana. (The renewal
    certified the same key forever: the stolen key never stopped working.)"""
    ana, ben = make_identity("review-ana"), make_identity("review-ben")
    stolen = ana.transport_key
    later = T0 + TRANSPORT_KEY_LIFETIME + DAY
    assert _handshake(ana.current(later), ben, later, later).peer == ana.certificate  # control
    shown = ana.current(later).transport_certificate  # what anyone who connects to Ana gets
    thief = dataclasses.replace(
        ana,
        device_key=SigningKey(make_rng("review-thief")(32)),
        transport_key=stolen,
        transport_certificate=shown,
    )
    with pytest.raises(HandshakeError, match="not the key of this session"):
        _handshake(thief, ben, later, later)


def test_a_renewed_transport_certificate_tolerates_clock_skew_and_tells_no_clock() -> None:
    """Past half its life, Ana's certificate is issued again. Dated at her clock to the
    millisecond, it told every peer her exact time at each handshake, and a clock 6 minutes
    fast made every peer refuse it ("not valid yet", past the 5-minute tolerance) where the
    original certificate passed. It is dated at the start of its 15-day period instead."""
    ana, ben = make_identity("review-ana"), make_identity("review-ben")
    day_20 = T0 + 20 * DAY
    fast = day_20 + 6 * 60 * 1000  # Ana's clock, 6 minutes ahead of Ben's
    assert _handshake(ana.current(fast), ben, fast, day_20).peer == ana.certificate
    first, second = ana.current(day_20), ana.current(day_20 + 3 * 3600 * 1000)
    assert first.transport_certificate == second.transport_certificate  # nothing moved
    assert first.transport_certificate.issued_at % (TRANSPORT_KEY_LIFETIME // 2) == 0
    assert first.transport_certificate.issued_at <= day_20
    again = LocalIdentity.from_bytes(first.to_bytes())  # a consistent bundle (key = certified)
    assert again.transport_certificate.key == again.transport_key.public
    assert "secret" not in repr(first) and first.transport_key.secret_bytes().hex() not in repr(
        first
    )


# --- nested counters: a snapshot forged on disk -----------------------------------------------


def _deleted_then_added() -> tuple[Document, list[Value]]:
    """Ana adds 5 to ``m.c``, deletes ``m``, adds 2: ``{"m": {"c": 2}}``; and its snapshot."""
    doc = Document(b"ana")
    doc.map("m").counter("c").add(5)
    doc.clear("m")
    doc.map("m").counter("c").add(2)
    top = encoding.decode(doc.snapshot_bytes(), max_size=1 << 20)
    assert isinstance(top, list) and len(top) == 9  # the field counters section is there
    return doc, top


def test_a_snapshot_bringing_back_an_add_a_delete_removed_is_refused() -> None:
    """The field counter section holds adds no delete removed; one that a kept delete mark
    covers (``cleared``) is a state no history makes: it was read back as ``c == 7``."""
    doc, top = _deleted_then_added()
    assert doc.to_value() == {"m": {"c": 2}}
    top[8][0][1][0][1].insert(0, [1, 5])  # type: ignore[index, union-attr]
    with pytest.raises(DecodeError, match="field counter"):
        Document.from_snapshot(encoding.encode(top), b"ben")


def test_a_snapshot_with_a_top_level_counter_at_a_nested_path_is_refused() -> None:
    """A counter in a nested map lives in the field counter section; one at a path in the
    top-level section was read back and shown as a junk top-level key (``"\\x00m\\x00c"``)."""
    _, top = _deleted_then_added()
    path = top[8][0][0]  # type: ignore[index]
    top[3] = [[path, [[b"ana", 99, 0]]]]
    with pytest.raises(DecodeError, match="top-level"):
        Document.from_snapshot(encoding.encode(top), b"ben")


# --- top-level counters: totals a snapshot can hold (found while reviewing; older code) --------


def test_a_member_s_huge_increments_cannot_make_a_document_unsnapshottable() -> None:
    """Each add may be ``2**53``; 2048 of them from one actor took its total past what the
    snapshot encodes (64 bits), and ``snapshot_bytes()`` failed for good on every replica.
    The add that would pass the bound is refused (a typed error, the document unchanged),
    the same on every replica: an actor's total depends on its own operations only."""
    doc = Document(b"ana")
    for counter in range(1, 2048):
        doc.apply(CounterAdd(id=OpId(counter, b"mal"), key="n", delta=2**53))
    doc.apply(CounterAdd(id=OpId(2048, b"mal"), key="n", delta=2**53 - 1))
    assert doc.counter("n").value == 2**64 - 1
    too_far = CounterAdd(id=OpId(2049, b"mal"), key="n", delta=1)
    with pytest.raises(MicrosyncError):
        doc.apply(too_far)
    assert doc.counter("n").value == 2**64 - 1
    doc.apply(CounterAdd(id=OpId(2050, b"mal"), key="n", delta=-5))  # decrements still count
    again = Document.from_snapshot(doc.snapshot_bytes(), b"ben")
    assert again.to_value() == doc.to_value() == {"n": 2**64 - 6}
    assert again.snapshot_bytes() == doc.snapshot_bytes()
