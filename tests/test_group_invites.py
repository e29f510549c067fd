"""Invites end to end: the pairing state machines driven between in-memory devices, the admit
appending the admin-signed add, and every member enforcing single use, expiry and revocation."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace

import pytest

from microsync.crypto import system_rng
from microsync.errors import (
    InviteBurned,
    InviteConsumed,
    InviteError,
    InviteExpired,
    InviteRevoked,
    WrongCode,
)
from microsync.feed.entry import GroupId
from microsync.feed.trust import add_certificate
from microsync.group.invite import Invite, InvitePurpose, InviteState, PairingGuest, ShortCode
from microsync.group.join import (
    BookEntry,
    InviteBook,
    InviteHost,
    JoinRequest,
    Welcome,
    accept_welcome,
    group_invite_state,
    issue_invite,
)
from microsync.group.membership import INVITE_CLOCK_TOLERANCE_MS, InviteInfo
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import LocalIdentity
from microsync.storage.memory import MemoryStore

HOUR = 3600 * 1000


@dataclass
class Node:
    identity: LocalIdentity
    store: MemoryStore = field(default_factory=MemoryStore)

    def __post_init__(self) -> None:
        self.member = LocalMember.of(self.identity, system_rng)
        self.book = InviteBook(self.store)
        self.now = 1_000
        self.replicas: dict[GroupId, GroupReplica] = {}

    def host(self) -> InviteHost:
        return InviteHost(self.replicas, self.book, rng=os.urandom, now=lambda: self.now)


def nodes(*names: str) -> list[Node]:
    made = [Node(LocalIdentity.create(n, os.urandom, 0)) for n in names]
    for node in made:
        for other in made:
            add_certificate(node.store, other.identity.certificate)
    return made


def deliver(src: GroupReplica, dst: GroupReplica) -> None:
    items = [
        (s.entry.wire, s.body)
        for device in src.store.feeds(src.id)
        for s in src.store.entries(src.id, device)
    ]
    random.Random(7).shuffle(items)
    dst.receive(items)


def redeem(host: InviteHost, guest: PairingGuest, now: int) -> bytes:
    """Run one pairing to the end, raising what either side raises."""
    session = host.session()
    message: bytes | None = guest.start()
    while message is not None:
        try:
            reply = session.receive(message, now=now)
        except InviteError:
            if session.abort_message is not None:
                with pytest.raises(InviteError):
                    guest.receive(session.abort_message)
            raise
        message = guest.receive(reply)
    return guest.response


def found(alice: Node) -> GroupReplica:
    replica = GroupReplica.create(alice.store, alice.member, "Family", now=alice.now)
    alice.replicas[replica.id] = replica
    return replica


def test_link_invite_admits_and_the_inviter_sees_who_joined() -> None:
    alice, bob = nodes("Alice", "Bob")
    group = found(alice)
    invite = issue_invite(
        group, alice.book, rng=os.urandom, now=alice.now, ttl_ms=HOUR, addresses=("10.0.0.2:7425",)
    )
    request = JoinRequest.of(bob.identity).to_bytes()
    response = redeem(alice.host(), PairingGuest.for_link(invite.link, request=request), alice.now)
    welcome = Welcome.from_bytes(response)
    assert welcome.group == group.id
    joined = group.state.invites[invite.invite_id].consumed_by
    assert joined == welcome.add
    assert group.resolution.authors[group.resolution.order[0]] == alice.identity.person_id
    # the inviter sees who joined: the consuming add names Bob
    assert bob.identity.person_id in group.state.members
    # Bob's side fills in as entries arrive
    replica = accept_welcome(bob.store, bob.member, response)
    deliver(group, replica)
    assert replica.is_member
    assert replica.state.signature() == group.state.signature()
    assert replica.state.members[bob.identity.person_id].role is Role.MEMBER


def test_short_code_admits_and_a_wrong_code_burns_it() -> None:
    alice, bob, mallory = nodes("Alice", "Bob", "Mallory")
    group = found(alice)
    host = alice.host()
    invite = issue_invite(
        group, alice.book, rng=os.urandom, now=alice.now, ttl_ms=HOUR, addresses=("h:1",)
    )
    wrong_words = ("zoo", "zoo") if invite.short_code.words != ("zoo", "zoo") else ("abandon",) * 2
    wrong = ShortCode(invite.short_code.nameplate, wrong_words)
    guess = PairingGuest.for_code(
        wrong,
        purpose=InvitePurpose.INVITE,
        request=JoinRequest.of(mallory.identity).to_bytes(),
        rng=os.urandom,
    )
    with pytest.raises(WrongCode):
        redeem(host, guess, alice.now)
    # one wrong guess burned it: the right code now fails too, and the group revoked it
    right = PairingGuest.for_code(
        invite.code,
        purpose=InvitePurpose.INVITE,
        request=JoinRequest.of(bob.identity).to_bytes(),
        rng=os.urandom,
    )
    with pytest.raises(InviteError):
        redeem(host, right, alice.now)
    assert group.state.invites[invite.invite_id].revoked
    link = PairingGuest.for_link(invite.link, request=JoinRequest.of(bob.identity).to_bytes())
    with pytest.raises(InviteBurned):
        redeem(host, link, alice.now)
    assert set(group.state.members) == {alice.identity.person_id}


def test_right_short_code_admits() -> None:
    alice, bob = nodes("Alice", "Bob")
    group = found(alice)
    invite = issue_invite(
        group,
        alice.book,
        rng=os.urandom,
        now=alice.now,
        ttl_ms=HOUR,
        role=Role.ADMIN,
        addresses=("h:1",),
    )
    guest = PairingGuest.for_code(
        invite.code,
        purpose=InvitePurpose.INVITE,
        request=JoinRequest.of(bob.identity).to_bytes(),
        rng=os.urandom,
    )
    redeem(alice.host(), guest, alice.now)
    assert group.state.members[bob.identity.person_id].role is Role.ADMIN


def test_reuse_is_refused() -> None:
    alice, bob, carol = nodes("Alice", "Bob", "Carol")
    group = found(alice)
    invite = issue_invite(
        group, alice.book, rng=os.urandom, now=1_000, ttl_ms=HOUR, relay="ws://r:1"
    )
    redeem(
        alice.host(),
        PairingGuest.for_link(invite.link, request=JoinRequest.of(bob.identity).to_bytes()),
        1_000,
    )
    with pytest.raises(InviteConsumed):
        redeem(
            alice.host(),
            PairingGuest.for_link(invite.link, request=JoinRequest.of(carol.identity).to_bytes()),
            1_000,
        )
    assert carol.identity.person_id not in group.state.members


def test_concurrent_reuse_at_two_admins_fails_everywhere_once_spread() -> None:
    alice, dave, bob, carol = nodes("Alice", "Dave", "Bob", "Carol")
    group = found(alice)
    group.add(dave.identity.person_id, "Dave", [dave.member.grant()], role=Role.ADMIN, now=2_000)
    invite = issue_invite(
        group, alice.book, rng=os.urandom, now=2_000, ttl_ms=HOUR, addresses=("a:1",)
    )
    dave_group = GroupReplica(dave.store, dave.member, group.id)
    dave.replicas[group.id] = dave_group
    deliver(group, dave_group)
    assert dave_group.state.invites[invite.invite_id].consumed_by is None
    # the same link redeemed at both admins' devices before either hears of the other
    to_bob = PairingGuest.for_link(invite.link, request=JoinRequest.of(bob.identity).to_bytes())
    to_carol = PairingGuest.for_link(invite.link, request=JoinRequest.of(carol.identity).to_bytes())
    redeem(alice.host(), to_bob, 3_000)
    redeem(dave.host(), to_carol, 3_000)
    deliver(group, dave_group)
    deliver(dave_group, group)
    assert group.state.signature() == dave_group.state.signature()
    joined = {bob.identity.person_id, carol.identity.person_id} & set(group.state.members)
    assert len(joined) == 1, "exactly one redemption takes effect"
    consumer = group.state.invites[invite.invite_id].consumed_by
    assert consumer is not None and consumer in group.resolution.effective


def test_expiry_by_the_issuers_clock_with_tolerance() -> None:
    alice, bob, carol = nodes("Alice", "Bob", "Carol")
    group = found(alice)
    invite = issue_invite(group, alice.book, rng=os.urandom, now=0, ttl_ms=HOUR, addresses=("a:1",))
    late = invite.expires_at + INVITE_CLOCK_TOLERANCE_MS + 1
    with pytest.raises(InviteExpired):
        redeem(
            alice.host(),
            PairingGuest.for_link(invite.link, request=JoinRequest.of(bob.identity).to_bytes()),
            late,
        )
    alice.now = invite.expires_at + INVITE_CLOCK_TOLERANCE_MS  # still within tolerance
    redeem(
        alice.host(),
        PairingGuest.for_link(invite.link, request=JoinRequest.of(carol.identity).to_bytes()),
        alice.now,
    )
    assert carol.identity.person_id in group.state.members


def test_an_add_claiming_a_redemption_after_expiry_is_rejected_by_every_member() -> None:
    alice, bob = nodes("Alice", "Bob")
    group = found(alice)
    invite = issue_invite(group, alice.book, rng=os.urandom, now=0, ttl_ms=HOUR, addresses=("a:1",))
    from microsync.errors import NotAMember

    with pytest.raises(NotAMember):
        group.add(
            bob.identity.person_id,
            "Bob",
            [bob.member.grant()],
            invite_id=invite.invite_id,
            now=invite.expires_at + INVITE_CLOCK_TOLERANCE_MS + 1,
        )
    assert bob.identity.person_id not in group.state.members


def test_revoked_invite_is_refused() -> None:
    alice, bob = nodes("Alice", "Bob")
    group = found(alice)
    invite = issue_invite(group, alice.book, rng=os.urandom, now=0, ttl_ms=HOUR, addresses=("a:1",))
    group.revoke_invite(invite.invite_id, now=10)
    with pytest.raises(InviteRevoked):
        redeem(
            alice.host(),
            PairingGuest.for_link(invite.link, request=JoinRequest.of(bob.identity).to_bytes()),
            20,
        )


def test_tampered_join_request_is_refused_and_changes_nothing() -> None:
    alice, bob, eve = nodes("Alice", "Bob", "Eve")
    group = found(alice)
    invite = issue_invite(group, alice.book, rng=os.urandom, now=0, ttl_ms=HOUR, addresses=("a:1",))
    before = group.state.signature()
    # Bob's certificate with Eve's person id: the add would admit a device Eve does not own
    forged = JoinRequest(eve.identity.person_id, "Bob", JoinRequest.of(bob.identity).device)
    with pytest.raises(InviteError):
        redeem(alice.host(), PairingGuest.for_link(invite.link, request=forged.to_bytes()), 10)
    assert group.state.signature() == before
    # garbage instead of a request
    with pytest.raises(InviteError):
        redeem(alice.host(), PairingGuest.for_link(invite.link, request=b"\x00junk"), 10)
    assert group.state.signature() == before


def test_invite_book_survives_a_reload() -> None:
    alice, _ = nodes("Alice", "Bob")
    group = found(alice)
    invite = issue_invite(group, alice.book, rng=os.urandom, now=0, ttl_ms=HOUR, addresses=("a:1",))
    again = InviteBook(alice.store)
    stored = again.get(invite.invite_id)
    assert stored is not None
    assert stored[0].link == invite.link and stored[0].code == invite.code
    assert again.find_code(invite.short_code.nameplate) is not None


def test_a_group_invites_state_is_the_groups_unless_this_device_burned_it() -> None:
    info = InviteInfo(
        invite_id=bytes(32), expires_at=1, role=Role.MEMBER, issuer=bytes(32), op=bytes(32)
    )
    invite = Invite.issue(
        rng=os.urandom, now=0, purpose=InvitePurpose.INVITE, addresses=("10.0.0.1:7400",)
    )
    burned = BookEntry(invite, None, InviteState.BURNED)
    assert group_invite_state(info, None) is InviteState.OPEN
    assert group_invite_state(replace(info, revoked=True), None) is InviteState.REVOKED
    consumed = replace(info, consumed_by=bytes(32))
    assert group_invite_state(consumed, None) is InviteState.CONSUMED
    assert group_invite_state(consumed, burned._replace(state=InviteState.OPEN)) == "consumed"
    for state in (info, consumed, replace(info, revoked=True)):
        assert group_invite_state(state, burned) is InviteState.BURNED
