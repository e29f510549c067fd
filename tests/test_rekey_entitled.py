"""The rotation's recipients without a copy of the state (issue 19): ``rules.entitled_after``
against the general path it stands in for (a copy of the state with the op applied), and
``GroupState.copy`` (written out with the constructors) against the state it copies."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.crypto import X25519PublicKey
from microsync.feed import EntryId
from microsync.group.membership import GroupState, OpRecord
from microsync.group.ops import EpochAnnouncement, History, Op, OpKind, Role
from microsync.group.rules import _after, entitled_after
from microsync.group.state import DeviceInfo, EpochInfo, InviteInfo, MemberInfo
from microsync.identity import DeviceId, PersonId
from tests.group_helpers import group_of

PEOPLE = [PersonId(bytes([p]) * 32) for p in range(1, 6)]
DEVICES = [DeviceId(bytes([100 + d]) * 32) for d in range(10)]
ANNOUNCEMENT = EpochAnnouncement(1, b"\1" * 32, b"\2" * 32)


def info(device: DeviceId, person: PersonId) -> DeviceInfo:
    return DeviceInfo(device, person, "d", 1, X25519PublicKey(b"\7" * 32), b"cert")


@st.composite
def states(draw: st.DrawFn) -> GroupState:
    """Members holding some of the devices, and windows (counting or cut off) for them."""
    state = GroupState(genesis=EntryId(b"\0" * 32))
    owners = draw(st.lists(st.sampled_from(PEOPLE), min_size=len(DEVICES), max_size=len(DEVICES)))
    held = draw(st.lists(st.booleans(), min_size=len(DEVICES), max_size=len(DEVICES)))
    for device, person, kept in zip(DEVICES, owners, held, strict=True):
        if kept:
            member = state.members.setdefault(person, MemberInfo(person, "p", Role.MEMBER, {}))
            member.devices[device] = info(device, person)
        start = draw(st.integers(0, 5))
        end = draw(st.one_of(st.none(), st.integers(start, start + 5)))
        if draw(st.booleans()):
            state.windows[device] = ((start, end),)
    return state


@st.composite
def records(draw: st.DrawFn) -> OpRecord:
    kind = draw(st.sampled_from([OpKind.REMOVE, OpKind.ROTATE]))
    person = draw(st.sampled_from(PEOPLE)) if kind is OpKind.REMOVE else None
    cut = draw(st.lists(st.sampled_from(DEVICES), unique=True, max_size=3))
    positions = tuple(sorted((d, draw(st.integers(0, 9))) for d in cut))
    op = Op(kind=kind, person=person, epoch=ANNOUNCEMENT, positions=positions)
    device = draw(st.sampled_from(DEVICES))
    seq = draw(st.integers(0, 12))  # 0: a draft being tried before it is appended
    return OpRecord(EntryId(b"\3" * 32), device, seq, (), op)


@settings(max_examples=200, deadline=None)
@given(states(), records())
def test_entitled_after_is_the_entitled_devices_of_the_state_after_the_op(
    state: GroupState, rec: OpRecord
) -> None:
    author = state.person_of(rec.device)
    before = state.copy()
    assert entitled_after(state, rec, author) == _after(state, rec, author).entitled_devices()
    assert state == before  # neither path touched the state it was given


def test_a_removal_by_a_device_cut_off_before_it_removes_no_one() -> None:
    state = GroupState(genesis=EntryId(b"\0" * 32))
    alice, bob = PEOPLE[:2]
    state.members[alice] = MemberInfo(alice, "a", Role.ADMIN, {DEVICES[0]: info(DEVICES[0], alice)})
    state.members[bob] = MemberInfo(bob, "b", Role.MEMBER, {DEVICES[1]: info(DEVICES[1], bob)})
    state.windows[DEVICES[0]] = ((0, 3),)  # alice's device counts up to seq 3 only
    late = OpRecord(EntryId(b"\3" * 32), DEVICES[0], 4, (), Op(kind=OpKind.REMOVE, person=bob))
    assert entitled_after(state, late, alice) == {DEVICES[0], DEVICES[1]}
    in_time = OpRecord(late.id, DEVICES[0], 3, (), late.op)
    assert entitled_after(state, in_time, alice) == {DEVICES[0]}


def test_a_real_removal_announces_the_devices_the_general_path_finds() -> None:
    alice, bob, carol = group_of("alice", "bob", "carol")
    entry = alice.group.remove(PersonId(bob.person), now=100)
    rec = alice.group.operation(entry.id)
    assert rec is not None and rec.op.epoch is not None
    assert alice.group.state.entitled_devices() == {alice.device, carol.device}
    assert entry.id in alice.group.resolution.effective


# ---------------------------------------------------------------------- GroupState.copy


def a_full_state() -> GroupState:
    """A state with every field away from its default."""
    person, device = PEOPLE[0], DEVICES[0]
    member = MemberInfo(person, "p", Role.ADMIN, {device: info(device, person)}, 2, b"\5" * 32)
    invite = InviteInfo(b"\6" * 32, 99, Role.MEMBER, person, EntryId(b"\7" * 32), True)
    invite.consumed_by = EntryId(b"\10" * 32)
    epoch = EpochInfo(1, b"\1" * 32, frozenset({device}), EntryId(b"\2" * 32), device)
    return GroupState(
        genesis=EntryId(b"\0" * 32),
        founder=device,
        name="n",
        history=History.NONE,
        members={person: member},
        revoked={DEVICES[1]: 4},
        invites={invite.invite_id: invite},
        epochs={(1, b"\1" * 32): epoch},
        windows={device: ((0, None),)},
        max_members=7,
        admin_windows={device: ((0, 5),)},
        seen={device: 3},
        keepers=("wss://k.example",),
        keeper_originals=12,
    )


def test_a_copy_is_equal_and_changes_apart() -> None:
    state = a_full_state()
    copy = state.copy()
    assert copy == state
    member, invite = copy.members[PEOPLE[0]], next(iter(copy.invites.values()))
    member.devices.clear()
    member.role, member.rank = Role.MEMBER, 9
    invite.revoked, invite.consumed_by = False, None
    copy.windows[DEVICES[1]] = ((0, 1),)
    assert state == a_full_state()


def test_the_copy_names_every_field_of_a_member_and_an_invite() -> None:
    # GroupState.copy builds MemberInfo and InviteInfo field by field: a new field must be
    # added there too (this list fails first)
    assert [f.name for f in fields(MemberInfo)] == [
        "person",
        "name",
        "role",
        "devices",
        "rank",
        "recovery_key",
    ]
    assert [f.name for f in fields(InviteInfo)] == [
        "invite_id",
        "expires_at",
        "role",
        "issuer",
        "op",
        "revoked",
        "consumed_by",
    ]
    assert [f.name for f in fields(GroupState)] == [
        "genesis",
        "founder",
        "name",
        "history",
        "members",
        "revoked",
        "invites",
        "epochs",
        "windows",
        "max_members",
        "admin_windows",
        "seen",
        "keepers",
        "keeper_originals",
    ]
