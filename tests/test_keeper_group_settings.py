"""The group setting that names a group's keepers: the SETTINGS op (kind 12), its values, who
may make it, and that replicas agree on it whatever order they saw concurrent changes in."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.errors import DecodeError, NotAMember
from microsync.group.ops import Op, OpKind, Role
from microsync.group.settings import MAX_KEEPERS, SettingsChange, apply_keepers, keeper_url
from microsync.identity import PersonId
from microsync.testing import Hostile
from tests.group_helpers import group_of, sync, sync_all
from tests.test_app_group import family_of, share

URLS = [f"ws://keeper{n}.example:7427" for n in range(6)]


@pytest.mark.parametrize(
    ("given_url", "canonical"),
    [
        ("ws://127.0.0.1:7427", "ws://127.0.0.1:7427"),
        ("WS://Keeper.Example:7427/", "ws://keeper.example:7427"),
        ("wss://keeper.example/family/", "wss://keeper.example/family"),
        ("ws://[::1]:7427", "ws://[::1]:7427"),
    ],
)
def test_a_keeper_url_has_one_canonical_form(given_url: str, canonical: str) -> None:
    assert keeper_url(given_url) == canonical
    assert keeper_url(canonical) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "http://keeper.example",
        "ftp://keeper.example",
        "ws://",
        "ws://user:pw@keeper.example",
        "ws://keeper.example?x=1",
        "ws://keeper.example#top",
        "ws://keeper.example:99999",
        "ws://keeper example",
        "ws://kéeper.example",
        "ws://keeper.example/\n",
        "ws://" + "k" * 200 + ".example",
        "keeper.example:7427",
    ],
)
def test_a_hostile_keeper_url_is_a_typed_error(bad: str) -> None:
    with pytest.raises(DecodeError):
        keeper_url(bad)


def test_a_settings_op_round_trips_and_its_bytes_are_pinned() -> None:
    op = Op(kind=OpKind.SETTINGS, settings=SettingsChange(add_keepers=(URLS[0],)))
    data = op.to_bytes()
    assert data.hex() == (
        "a2616b0c616da1626b6181781977733a2f2f6b6565706572302e6578616d706c653a37343237"
    )
    assert Op.from_bytes(data).settings == op.settings
    both = SettingsChange(add_keepers=(URLS[1],), remove_keepers=(URLS[0],))
    assert Op.from_bytes(Op(kind=OpKind.SETTINGS, settings=both).to_bytes()).settings == both


@pytest.mark.parametrize(
    "m",
    [
        {},
        {"zz": [URLS[0]]},
        {"ka": []},
        {"ka": URLS[:5]},
        {"ka": [URLS[0], URLS[0]]},
        {"ka": ["WS://Keeper0.example:7427"]},
        {"ka": ["http://keeper.example"]},
        {"ka": [b"ws://keeper.example"]},
        {"ka": URLS[0]},
        {1: [URLS[0]]},
        [URLS[0]],
    ],
)
def test_a_malformed_settings_op_does_not_decode(m: encoding.Value) -> None:
    with pytest.raises(DecodeError):
        Op.from_bytes(encoding.encode({"k": 12, "m": m}))


def test_a_settings_op_needs_its_map_and_nothing_else() -> None:
    with pytest.raises(DecodeError):
        Op.from_bytes(encoding.encode({"k": 12}))
    with pytest.raises(DecodeError):
        Op.from_bytes(encoding.encode({"k": 12, "m": {"ka": [URLS[0]]}, "p": b"\0" * 32}))


def test_keepers_are_applied_removals_first_then_additions_up_to_the_limit() -> None:
    full = apply_keepers((), SettingsChange(add_keepers=tuple(URLS[:4])))
    assert full == tuple(URLS[:4])
    assert apply_keepers(full, SettingsChange(add_keepers=(URLS[4],))) == full
    swapped = apply_keepers(full, SettingsChange(add_keepers=(URLS[4],), remove_keepers=(URLS[0],)))
    assert swapped == (*URLS[1:4], URLS[4])
    assert len(swapped) == MAX_KEEPERS


def test_a_members_settings_op_is_void_on_every_replica() -> None:
    alice, bob, carol = group_of("alice", "bob", "carol")
    with pytest.raises(NotAMember):
        carol.group.change_settings(SettingsChange(add_keepers=(URLS[0],)), now=10)
    assert carol.group.state.keepers == ()
    forged = Op(kind=OpKind.SETTINGS, settings=SettingsChange(add_keepers=(URLS[1],)))
    Hostile(carol.group).append_op(forged, hlc=11, deps=sorted(carol.group.resolution.order)[-1:])
    sync_all([alice, bob, carol])
    assert [p.group.state.keepers for p in (alice, bob, carol)] == [(), (), ()]


def test_an_admins_change_made_while_it_was_being_demoted_is_void_everywhere() -> None:
    alice, bob, carol = group_of("alice", "bob", "carol", admins="bob")
    alice.group.set_role(PersonId(bob.person), Role.MEMBER, now=10)  # concurrent with bob's change
    bob.group.change_settings(SettingsChange(add_keepers=(URLS[0],)), now=10)
    assert bob.group.state.keepers == (URLS[0],)
    sync_all([alice, bob, carol])
    assert [p.group.state.keepers for p in (alice, bob, carol)] == [(), (), ()]


_change = st.tuples(
    st.sampled_from(["alice", "bob"]),
    st.booleans(),
    st.sampled_from(URLS),
    st.booleans(),
)


@settings(max_examples=20, deadline=None)
@given(changes=st.lists(_change, min_size=1, max_size=10), shuffle=st.integers(0, 99))
def test_concurrent_keeper_changes_by_two_admins_converge(
    changes: list[tuple[str, bool, str, bool]], shuffle: int
) -> None:
    peers = group_of("alice", "bob", "carol", admins="bob")
    by_name = {p.identity.name: p for p in peers}
    for n, (who, add, url, then_sync) in enumerate(changes):
        change = (
            SettingsChange(add_keepers=(url,)) if add else SettingsChange(remove_keepers=(url,))
        )
        by_name[who].group.change_settings(change, now=100 + n)
        if then_sync:
            sync(by_name[who], *(p for p in peers if p.identity.name != who))
    sync(peers[0], peers[2], shuffle=shuffle)
    sync(peers[1], peers[2], shuffle=shuffle + 1)
    sync_all(peers)
    found = {p.group.state.keepers for p in peers}
    assert len(found) == 1
    (keepers,) = found
    assert len(keepers) <= MAX_KEEPERS and all(keeper_url(k) == k for k in keepers)
    signatures = [p.group.state.signature() for p in peers]
    assert signatures[0] == signatures[1] == signatures[2]


async def test_the_group_face_adds_lists_and_removes_keepers_for_admins_only(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "alice", "bob")
        assert alice.keepers() == []
        for url in URLS[:4]:
            await alice.add_keeper(url)
        assert await alice.add_keeper(URLS[0]) == URLS[0]  # once only
        with pytest.raises(DecodeError, match="at most 4"):
            await alice.add_keeper(URLS[4])
        with pytest.raises(DecodeError):
            await alice.add_keeper("http://keeper.example")
        await alice.remove_keeper(URLS[0] + "/")
        assert alice.keepers() == URLS[1:4]
        share(alice, bob)
        assert bob.keepers() == URLS[1:4]
        with pytest.raises(NotAMember, match="only admins"):
            await bob.add_keeper(URLS[5])
        with pytest.raises(NotAMember, match="only admins"):
            await bob.remove_keeper(URLS[1])
        assert [s.status for s in bob.keeper_status()] == ["offline"] * 3
