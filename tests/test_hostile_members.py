"""A member's own device, modified to write whatever it likes (``microsync.testing.Hostile``),
after its person was removed or demoted: nothing it writes past the cut-off counts anywhere,
for any entry type, whatever deps or timestamps it declares (issue 13, items 1 and 2;
``docs/membership.md`` rule 4 and the ranks)."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync.group.intake as intake_module
import microsync.group.replica as replica_module
from microsync import Device, Group
from microsync.app.ops import APP_TYPE
from microsync.errors import NotAMember
from microsync.feed.entry import GroupId
from microsync.group.ops import OpKind, Role
from microsync.testing import AppOp, Hostile, Kind, SimDevice, SimNetwork, app_view
from tests.test_app_group import family_of, share

SCAM = "send money to IBAN XX00"


def family(net: SimNetwork, *names: str, admins: str = "") -> tuple[GroupId, list[SimDevice]]:
    devices = [net.add_device(n) for n in names]
    group = net.create_group(devices[0], "Family")
    for device in devices[1:]:
        role = Role.ADMIN if device.name in admins else Role.MEMBER
        net.device(names[0]).replica(group).add(
            device.person_id, device.name, [device.grant()], role=role, now=net.clock.advance()
        )
    net.settle(group)
    return group, devices


def texts(device: SimDevice, group: GroupId) -> list[str]:
    return [p.text for p in app_view(device, group).timeline.visible()]


@pytest.mark.parametrize(
    "op",
    [
        AppOp(Kind.POST, text=SCAM),
        AppOp(Kind.POST, text=SCAM, ttl_ms=10**9),
        AppOp(Kind.DOC, doc="contacts", payload=b"\x00"),
    ],
    ids=["post", "disappearing-post", "document"],
)
def test_a_removed_members_entries_count_nowhere(op: AppOp) -> None:
    net = SimNetwork(seed=13)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    alice.replica(group).remove(bob.person_id, now=net.clock.advance())
    net.settle(group)
    assert not bob.replica(group).is_member  # bob's device knows it is out
    evil = Hostile.of_sim(bob, group)
    entry = evil.append_content(APP_TYPE, op.to_bytes(), hlc=1, deps=())  # "long before"
    for _ in range(5):
        alice.replica(group).rotate(now=net.clock.advance())
    net.settle(group)
    for honest in (alice, carol, bob):  # bob's own device draws the same line
        assert SCAM not in texts(honest, group)
        assert not app_view(honest, group).docs
        assert not honest.replica(group).state.counts(bob.device_id, entry.header.seq)


def test_what_bob_wrote_before_his_removal_still_counts() -> None:
    net = SimNetwork(seed=14)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    bob.replica(group).append_content(APP_TYPE, AppOp(Kind.POST, text="hi").to_bytes(), now=5)
    net.settle(group)
    alice.replica(group).remove(bob.person_id, now=net.clock.advance())
    net.settle(group)
    assert texts(carol, group) == ["hi"] == texts(alice, group)


def test_a_cut_off_that_arrives_late_reaches_back() -> None:
    """Carol shows Bob's concurrent post until she hears of the removal that came before it
    in Bob's feed; then she shows exactly what Alice shows."""
    net = SimNetwork(seed=15)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    alice.replica(group).remove(bob.person_id, now=net.clock.advance())  # not yet delivered
    bob.replica(group).append_content(APP_TYPE, AppOp(Kind.POST, text="late").to_bytes(), now=9)
    net.deliver(bob, carol, group)
    assert texts(carol, group) == ["late"]
    net.settle(group)
    assert texts(carol, group) == [] == texts(alice, group)


def test_a_removed_admin_cannot_empty_the_group() -> None:
    """Bob, an admin, is removed by Alice, the founder. His device then writes removals of
    everyone, each made as it would have been before his removal (deps naming only what came
    before, announcements and wraps computed there): none of them counts."""
    net = SimNetwork(seed=16)
    group, (alice, bob, carol, dave) = family(net, "alice", "bob", "carol", "dave", admins="bob")
    before = alice.replica(group).resolution.order
    alice.replica(group).remove(bob.person_id, now=net.clock.advance())
    net.settle(group)
    baseline = alice.replica(group).state.signature()
    evil = Hostile.of_sim(bob, group)
    for victim in (alice, carol, dave):
        evil.backdated_op(OpKind.REMOVE, deps=before, person=victim.person_id, hlc=1)
    evil.backdated_op(OpKind.ROTATE, deps=before)
    net.settle(group)
    for honest in (alice, carol, dave):
        replica = honest.replica(group)
        assert replica.state.signature() == baseline
        assert {m.name for m in replica.state.members.values()} == {"alice", "carol", "dave"}


def test_a_demoted_admin_cannot_remove_the_admin_who_demoted_it() -> None:
    net = SimNetwork(seed=17)
    group, (alice, bob, carol, dave) = family(net, "alice", "bob", "carol", "dave", admins="bob")
    bob.replica(group).set_role(carol.person_id, Role.ADMIN, now=net.clock.advance())
    net.settle(group)
    before = bob.replica(group).resolution.order
    bob.replica(group).set_role(carol.person_id, Role.MEMBER, now=net.clock.advance())
    net.settle(group)
    baseline = alice.replica(group).state.signature()
    evil = Hostile.of_sim(carol, group)
    evil.backdated_op(OpKind.REMOVE, deps=before, person=bob.person_id)
    evil.backdated_op(OpKind.REMOVE, deps=before, person=dave.person_id)
    evil.backdated_op(OpKind.SET_ROLE, deps=before, person=dave.person_id, role=Role.ADMIN)
    net.settle(group)
    for honest in (alice, bob, dave):
        assert honest.replica(group).state.signature() == baseline
        roles = {m.name: m.role for m in honest.replica(group).state.members.values()}
        assert roles == {
            "alice": Role.ADMIN,
            "bob": Role.ADMIN,
            "carol": Role.MEMBER,
            "dave": Role.MEMBER,
        }


# ----------------------------------------------------------------------------- property

_HONEST_ACTIONS = ("post", "rotate", "promote", "demote", "add")
_ATTACKS = (OpKind.REMOVE, OpKind.SET_ROLE, OpKind.ROTATE, OpKind.LEAVE)


def _honest_history(net: SimNetwork, rnd: random.Random, n: int) -> tuple[GroupId, SimDevice, bool]:
    """A founder, ``n - 1`` others (some admins), random honest activity, and then the
    adversary ``x`` (an admin) is removed or demoted by an admin who outranks it."""
    names = [f"d{i}" for i in range(n - 1)] + ["x"]
    group, devices = family(net, *names, admins="x" + "".join(rnd.sample(names[1:-1], 1)))
    honest = devices[:-1]
    spare = [net.add_device(f"late{i}") for i in range(3)]
    for _ in range(rnd.randint(2, 8)):
        actor = rnd.choice(honest)
        replica = actor.replica(group)
        action = rnd.choice(_HONEST_ACTIONS)
        target = rnd.choice(devices[1:])
        try:
            if action == "post":
                replica.append_content(APP_TYPE, b"\xa0", now=net.clock.advance())
            elif action == "rotate":
                replica.rotate(now=net.clock.advance())
            elif action in ("promote", "demote") and target is not devices[-1]:
                role = Role.ADMIN if action == "promote" else Role.MEMBER
                replica.set_role(target.person_id, role, now=net.clock.advance())
            elif action == "add" and spare:
                new = spare.pop()
                replica.add(new.person_id, new.name, [new.grant()], now=net.clock.advance())
                honest.append(new)
        except NotAMember:
            pass  # not this actor's right: an honest device refuses to write it
        net.settle(group)
    x = devices[-1]
    founder = devices[0].replica(group)
    removed = rnd.random() < 0.5
    if removed:
        founder.remove(x.person_id, now=net.clock.advance())
    else:
        founder.set_role(x.person_id, Role.MEMBER, now=net.clock.advance())
    net.settle(group)
    return group, x, removed


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(3, 6),
    attacks=st.lists(
        st.tuples(st.sampled_from(_ATTACKS), st.integers(0, 10**6), st.integers(0, 2**63 - 1)),
        min_size=1,
        max_size=6,
    ),
)
def test_nothing_an_adversary_writes_after_losing_its_rights_changes_membership(
    seed: int, n: int, attacks: list[tuple[OpKind, int, int]]
) -> None:
    """Random histories of 3-6 devices; the adversary, after being removed (or demoted: then
    admin operations), appends validly signed operations with arbitrary deps (any causal past
    it holds) and timestamps;
    after full delivery, every honest device's membership, roles, epochs, invites and counted
    feed stretches equal those of the same history without them."""
    net = SimNetwork(seed=seed % 1000)
    rnd = random.Random(seed)
    group, x, removed = _honest_history(net, rnd, n)
    honest = [d for d in net.holders(group) if d is not x and d.replica(group).is_member]
    baseline = {d.name: d.replica(group).state.signature() for d in honest}
    assert len(set(map(repr, baseline.values()))) == 1
    evil = Hostile.of_sim(x, group)
    known = evil.membership_ops()
    people = [d.person_id for d in net.devices if d is not x]
    for kind, pick, hlc in attacks:
        if not removed and kind not in (OpKind.REMOVE, OpKind.SET_ROLE):
            continue  # a demoted member keeps a member's rights: rotating, leaving
        deps = random.Random(pick).sample(known, k=min(len(known), 1 + pick % 3))
        person = people[pick % len(people)]
        role = Role.MEMBER if pick % 2 else Role.ADMIN
        try:
            evil.backdated_op(kind, deps=deps, person=person, role=role, hlc=hlc)
        except (NotAMember, KeyError, LookupError, ValueError):
            continue  # no such op could be made even in that past
    net.settle(group)
    for device in honest:
        assert device.replica(group).state.signature() == baseline[device.name]


# -------------------------------------------------------------------- over real devices


async def test_a_removed_members_post_is_refused_over_tcp(tmp_path: Path) -> None:
    """The reviewer's case, end to end over 127.0.0.1: Bob learns from Alice that he is out,
    then his modified client posts (deps naming only what came long before) and syncs with
    Carol, who has not heard of the removal yet. Once Alice and Carol meet, neither shows it."""
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await alice._device.start(lan=False, port=0)
        await carol._device.start(lan=False, port=0)
        await alice.remove(bob._device.person_id)
        await bob._device.sync_with("127.0.0.1", alice._device.port or 0)
        assert not bob.is_member()
        evil = Hostile.of_group(bob)
        evil.append_content(APP_TYPE, AppOp(Kind.POST, text=SCAM).to_bytes(), hlc=1, deps=())
        await bob._device.sync_with("127.0.0.1", carol._device.port or 0)
        # a modified client also pushes its feed at whoever takes it (what the sync layer hands
        # a device is exactly this call)
        carol._device.receive(carol.id, bob._device.entries_after(carol.id))
        share(alice, carol)
        for group in (alice, carol):
            assert SCAM not in [p.text for p in group.feed()]


def test_a_forked_devices_operations_from_its_fork_on_stop_counting() -> None:
    """Mallory signs two entries at one position: a rotation for Alice, a post for Carol. When
    Alice learns the fork, the rotation she had applied stops counting."""
    net = SimNetwork(seed=18)
    group, (alice, mallory, _carol) = family(net, "alice", "mallory", "carol")
    evil = Hostile.of_sim(mallory, group)
    seq = evil.head()[0] + 1
    epoch, body = evil.seal_content(APP_TYPE, AppOp(Kind.POST, text="other").to_bytes(), seq=seq)
    other = evil.craft(type=APP_TYPE, body=body, epoch=epoch, hlc=5, seq=seq)
    rotation = evil.backdated_op(OpKind.ROTATE, deps=evil.membership_ops()[-1:])
    net.deliver(mallory, alice, group)
    replica = alice.replica(group)
    assert rotation.id in replica.resolution.effective
    replica.receive([(other.wire, body)])  # the second version: a fork
    assert alice.store.feed_status(group, mallory.device_id).forked_at == seq
    replica.forget_forked()
    assert rotation.id not in replica.resolution.effective
    assert rotation.id not in replica.resolution.order


async def test_posts_that_arrive_before_their_authors_add_show_once_it_does(tmp_path: Path) -> None:
    """An entry whose device is not admitted *yet* here is not lost: it waits, like an entry
    with no key, and counts as soon as the add that admits it is open."""
    from tests.test_device_groups import introduce, pair, sync

    async with AsyncExitStack() as stack:
        alice, carol = await family_of(stack, tmp_path, "Alice", "Carol")
        assert carol.feed() == []  # Carol's timeline is folded before anything of Dave's
        device = await stack.enter_async_context(await Device.open(tmp_path / "Dave", name="Dave"))
        introduce(alice._device, carol._device, device)
        invite = await alice.invite(ttl=3600)
        response = pair(alice._device.invite_host().session(), device.join_guest(invite.link))
        dave = await device.finish_join(response)
        sync(alice._device, device, alice.id)
        await dave.post("hello from the new one")
        mine = {d: s for d, s in carol._device.frontier(alice.id).items()}
        carol._device.receive(
            alice.id,
            [it for it in device.entries_after(alice.id, mine) if it[0] in _feed(device, alice)],
        )
        assert carol.feed() == []  # Dave's add has not reached Carol: not shown yet
        share(alice, carol)
        assert [p.text for p in carol.feed()] == ["hello from the new one"]


def _feed(device: Device, group: Group) -> set[bytes]:
    """The wire forms of ``device``'s own entries in ``group``."""
    own = device._store.entries(group.id, device.id)
    return {stored.entry.wire for stored in own}


def test_entries_waiting_ahead_of_gaps_are_bounded_per_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two members' feeds, delivered without their first entries: past the group's bound the
    rest is refused with a typed error (and offered again at the next sync), nothing else
    changes, and once the gaps fill everything is stored."""
    from microsync.errors import PendingQuotaExceeded

    monkeypatch.setattr(intake_module, "GROUP_PENDING_QUOTA", 5)
    net = SimNetwork(seed=19)
    group, (_alice, bob, carol, dave) = family(net, "alice", "bob", "carol", "dave")
    body = AppOp(Kind.POST, text="x").to_bytes()
    for writer in (bob, carol):
        for _ in range(4):
            writer.replica(group).append_content(APP_TYPE, body, now=net.clock.advance())
    items = [
        (s.entry.wire, s.body)
        for writer in (bob, carol)
        for s in list(writer.store.entries(group, writer.device_id))[1:]
    ]
    results = dave.replica(group).receive(items)
    refused = [r for r in results if isinstance(r, PendingQuotaExceeded)]
    assert len(refused) == len(items) - 5
    net.settle(group)
    for writer in (bob, carol):
        assert dave.store.feed_status(group, writer.device_id).head_seq == 4


def test_a_removed_member_cannot_make_members_store_an_endless_feed() -> None:
    net = SimNetwork(seed=20)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    alice.replica(group).remove(bob.person_id, now=net.clock.advance())
    net.settle(group)
    cut = alice.replica(group).state.windows[bob.device_id][-1][1]
    assert cut is not None
    evil = Hostile.of_sim(bob, group)
    for _ in range(300):
        evil.append_content(APP_TYPE, AppOp(Kind.POST, text="junk").to_bytes())
    net.settle(group)
    for honest in (alice, carol):
        stored = honest.store.feed_status(group, bob.device_id).head_seq
        assert stored <= cut + replica_module.CUT_OFF_SLACK
        assert "junk" not in texts(honest, group)


async def test_a_late_cut_off_also_reaches_into_open_documents(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await alice.remove(bob._device.person_id)  # Carol has not heard yet
        await bob.doc("plans").set("who", "bob was here")  # Bob has not either
        share(bob, carol)
        assert carol.doc("plans").to_value() == {"who": "bob was here"}
        share(alice, carol)
        assert carol.doc("plans").to_value() == alice.doc("plans").to_value() == {}
