"""Lookups the live path no longer repeats per entry (issue 19), each against what it stands
in for: a content fold asks for a device's person once (a certificate binds a device to its
person for good), and a signed record decoded once is not decoded again."""

from __future__ import annotations

import pytest

from microsync.crypto import signed_record
from microsync.errors import BadSignature, DecodeError
from microsync.feed.entry import Entry
from microsync.group.fold import ContentFold
from microsync.identity import DeviceCertificate, DeviceId, PersonId, PrekeyCertificate
from tests.conftest import make_identity
from tests.group_helpers import group_of

TEXT = 0x10

# ---------------------------------------------------------------------- a fold's authors


def test_a_fold_asks_for_each_devices_person_once_and_again_while_it_has_none() -> None:
    alice, bob, carol = group_of("alice", "bob", "carol")
    entries: list[Entry] = []
    for peer in (alice, bob, alice, bob):
        entries.append(peer.group.append_content(TEXT, b"hi", now=10))
    asked: list[DeviceId] = []
    known: dict[bytes, bytes | None] = {
        alice.device: alice.person,
        bob.device: None,
    }  # bob's certificate not here yet

    def person_of(device: DeviceId) -> PersonId | None:
        asked.append(device)
        found = known.get(device)
        return None if found is None else PersonId(found)

    fold: ContentFold[bytes] = ContentFold(lambda entry, body: body, person_of=person_of)
    bodies = {e.id: b"hi" for e in entries}
    first = fold.fold(entries[:2], bodies)
    assert [f.person for f in first] == [alice.person]  # bob's entry: no person, dropped
    again = fold.fold(entries[2:], bodies)
    assert [f.person for f in again] == [alice.person]
    assert asked.count(DeviceId(alice.device)) == 1  # kept once known
    assert asked.count(DeviceId(bob.device)) == 2  # asked again: its certificate may still arrive
    known[bob.device] = bob.person
    [late] = fold.fold(entries[1:2], bodies)
    assert late.person == bob.person
    assert fold.accept(entries[3], b"hi", b"hi").person == bob.person
    assert asked.count(DeviceId(bob.device)) == 3 and DeviceId(carol.device) not in asked


# ---------------------------------------------------------------------- signed records


def test_a_record_decoded_again_is_the_same_value() -> None:
    identity = make_identity("dora", "dora")
    data = identity.certificate.to_bytes()
    first = DeviceCertificate.from_bytes(data)
    assert first == identity.certificate
    assert DeviceCertificate.from_bytes(bytes(data)) is first  # equal bytes, another object
    assert DeviceCertificate.from_bytes(memoryview(data)) is first  # type: ignore[arg-type]


def test_what_does_not_decode_is_refused_every_time_and_never_kept() -> None:
    data = make_identity("erin", "erin").certificate.to_bytes()
    broken = data[:-3]
    for _ in range(2):
        with pytest.raises(DecodeError):
            DeviceCertificate.from_bytes(broken)
    assert all(key[1] != broken for key in signed_record._recent)  # private: the property
    # the same bytes read as another record type are that type's answer, not the cached one
    with pytest.raises(DecodeError):
        PrekeyCertificate.from_bytes(data)


def test_a_forged_record_still_fails_its_signature_check_every_time() -> None:
    certificate = make_identity("fred", "fred").certificate
    forged = DeviceCertificate(
        person=certificate.person,
        device=certificate.device,
        device_name="mallory",
        issued_at=certificate.issued_at,
        signature=certificate.signature,
    ).to_bytes()
    for _ in range(3):
        with pytest.raises(BadSignature):
            DeviceCertificate.from_bytes(forged).verify()
    DeviceCertificate.from_bytes(certificate.to_bytes()).verify()


def test_only_the_newest_records_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signed_record, "RECENT_RECORDS", 4)
    people = [make_identity(f"p{i}", f"p{i}") for i in range(8)]
    for identity in people:
        DeviceCertificate.from_bytes(identity.certificate.to_bytes())
    kept = list(signed_record._recent)
    assert len(kept) == 4
    assert kept == [(DeviceCertificate, p.certificate.to_bytes()) for p in people[-4:]]
