"""The removal path's shortcuts (issue 19), each against the general path it stands in for:
the author folding its own membership entry without decoding it back or opening its own
wraps (``MembershipView.absorb_own``), the wrap associated data encoded once per bundle, and
the envelope decoder keeping the last bodies it decoded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.encoding import Value
from microsync.errors import DecodeError, NotAMember
from microsync.feed.trust import add_certificate
from microsync.group import envelope
from microsync.group.envelope import RECENT_ENVELOPES, decode_envelope, encode_envelope
from microsync.group.keys import Purpose, _wrap_ad, _wrap_ads
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica
from microsync.identity import PersonId
from tests.group_helpers import Peer, group_of, sync

ids = st.binary(min_size=32, max_size=32)

# ---------------------------------------------------------------------- the author's own fold


def reloaded(peer: Peer) -> GroupReplica:
    """``peer``'s group as a fresh load of its store folds it: every entry decoded, every
    wrap addressed to it opened (the general path)."""
    return GroupReplica.load(peer.store, peer.member, peer.group.id)


def assert_same_view(author: GroupReplica, general: GroupReplica) -> None:
    assert author.state == general.state
    assert author.resolution.effective == general.resolution.effective
    assert author.resolution.order == general.resolution.order
    assert author.epoch_keys() == general.epoch_keys()
    assert author.current_epoch_key() == general.current_epoch_key()
    assert author.missing_keys() == general.missing_keys()
    assert author.records() == general.records()


OPS = ["remove", "rotate", "promote", "demote", "invite", "add", "leave"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(OPS), min_size=1, max_size=6), st.sampled_from(["shared", "none"]))
def test_the_authors_own_fold_is_what_decoding_its_entries_gives(
    steps: list[str], history: str
) -> None:
    peers = group_of("alice", "bob", "carol", "dave", "erin", admins="bob", history=history)
    alice, others = peers[0], peers[1:]
    spare = group_of("frank", "grace", seed="spare")[1:]
    for n, step in enumerate(steps):
        members = [p for p in others if p.person in alice.group.state.members]
        if step == "remove" and members:
            alice.group.remove(PersonId(members[0].person), now=100)
        elif step == "rotate":
            alice.group.rotate(now=100)
        elif step in ("promote", "demote"):
            now_role = Role.MEMBER if step == "promote" else Role.ADMIN
            roles = alice.group.state.members
            targets = [p for p in members if roles[PersonId(p.person)].role is now_role]
            if targets:
                role = Role.ADMIN if step == "promote" else Role.MEMBER
                alice.group.set_role(PersonId(targets[0].person), role, now=100)
        elif step == "invite":
            alice.group.create_invite(bytes([n]) * 32, expires_at=10**6, role=Role.MEMBER, now=100)
        elif step == "add" and spare:
            new = spare.pop()
            for store in (alice.store, new.store):
                add_certificate(store, new.identity.certificate)
                add_certificate(store, alice.identity.certificate)
            alice.group.add(PersonId(new.person), "new", [new.member.grant()], now=100)
        elif step == "leave" and members:
            sync(alice, members[0])
            members[0].group.leave(now=100)
            sync(members[0], alice)
        assert_same_view(alice.group, reloaded(alice))
    # and every member who receives the entries agrees with the author
    sync(alice, *[p for p in others if p.replica is not None])
    for peer in others:
        if peer.person in alice.group.state.members:
            assert peer.group.state == alice.group.state


def test_a_refused_removal_leaves_the_view_and_the_store_as_they_were() -> None:
    _, bob, carol = group_of("alice", "bob", "carol", admins="bob")
    before = carol.group.state.copy()
    with pytest.raises(NotAMember):
        carol.group.remove(PersonId(bob.person), now=100)  # a member may not remove anyone
    assert carol.group.state == before
    assert_same_view(carol.group, reloaded(carol))


# ---------------------------------------------------------------------- wrap associated data


@given(ids, st.integers(min_value=0, max_value=2**63 - 1), ids, ids, st.sampled_from(Purpose))
def test_wrap_ads_gives_the_bytes_of_wrap_ad(
    group: bytes, epoch: int, sender: bytes, recipient: bytes, purpose: Purpose
) -> None:
    many = _wrap_ads(group, epoch, sender, purpose)  # type: ignore[arg-type]
    one = _wrap_ad(group, epoch, sender, recipient, purpose)  # type: ignore[arg-type]
    assert many(recipient) == one  # type: ignore[arg-type]


@given(ids, ids, st.binary(max_size=300), st.sampled_from(Purpose))
def test_wrap_ads_gives_the_bytes_of_wrap_ad_for_a_recipient_id_of_any_length(
    group: bytes, sender: bytes, recipient: bytes, purpose: Purpose
) -> None:
    # a 32-byte id has its CBOR head written out; any other length goes through the encoder
    many = _wrap_ads(group, 7, sender, purpose)  # type: ignore[arg-type]
    one = _wrap_ad(group, 7, sender, recipient, purpose)  # type: ignore[arg-type]
    assert many(recipient) == one  # type: ignore[arg-type]


# ---------------------------------------------------------------------- envelope decoding


def an_envelope(seed: int) -> bytes:
    bundle: Value = [bytes([seed]) * 32, [[bytes(16), 1, bytes(48)]], bytes(40)]
    return encode_envelope([(Purpose.ROTATION, seed, bundle)], bytes([seed]) * 60)


def test_a_second_decode_of_the_same_body_gives_the_same_answer_and_is_not_a_copy() -> None:
    body = an_envelope(1)
    first = decode_envelope(body)
    again = decode_envelope(bytes(body))  # equal bytes, another object
    assert first == again
    first[0].clear()  # the caller's list is its own
    assert decode_envelope(body) == again


def test_the_decoder_keeps_only_the_newest_bodies() -> None:
    bodies = [an_envelope(i) for i in range(RECENT_ENVELOPES + 3)]
    for body in bodies:
        decode_envelope(body)
    kept = list(envelope._recent)  # private reach: the bound is the property under test
    assert len(kept) == RECENT_ENVELOPES and kept == bodies[-RECENT_ENVELOPES:]


def test_a_body_that_does_not_decode_is_refused_every_time() -> None:
    body = an_envelope(2)
    broken = body[:-1] + bytes([body[-1] ^ 1])  # still CBOR, but no longer what was cached
    assert decode_envelope(broken) != decode_envelope(body)
    bad = encoding.encode([2, [], b""])  # an unknown version
    for _ in range(2):
        try:
            decode_envelope(bad)
        except DecodeError:
            continue
        raise AssertionError("an unknown envelope version was accepted")
    assert bad not in envelope._recent
