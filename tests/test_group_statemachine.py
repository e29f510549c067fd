"""Random group histories across 2-6 simulated devices (microsync.testing), checked after the
network settles.

A Hypothesis state machine drives 2-4 persons, some with a second device, through create, add
(sometimes with both devices), remove, leave, promote / demote, rotate, link a device, revoke a
device and write content, while messages go between random pairs in random order with drops
and duplicates, key requests run between random pairs, and the network partitions and heals.
Every operation is attempted only by a device allowed to make it *in its own current view*
(which may be stale); the group layer refusing one with ``NotAMember`` is fine.

After ``settle`` (full pairwise delivery and key requests until nothing changes):

**Convergence.** Every member device has the same membership, roles, devices, revocations and
epoch lineage, and the same set of effective operations (``check_convergence``).

**Entitlement.** For a content entry written under epoch ``e``, started by operation ``o`` with
recipients ``R`` (the devices entitled when ``e`` started, in the view of ``o``'s author):

* *must read*, with ``history="shared"``: every device that is a member at the end; with
  ``history="none"``: every device that is a member at the end and is in ``R`` or belongs to a
  person with a device in ``R`` at the end.
* *must never read*: a device removed, departed or revoked before ``e`` started (its exit is in
  the causal past of ``o``), unless it was admitted again by an operation that did not precede
  ``o``; with ``history="none"`` also every device not in ``R`` whose person had no device in
  ``R`` (it joined after ``e`` started, or concurrently with it); and any device no operation
  ever admitted.
* anything else may go either way, because it depends on timing, not on the rules: a member
  who joined with shared history and was removed later read whatever it was given or fetched
  while it was in; a device that received a history bundle of an add that was later voided keeps
  what it was sent (``EpochInfo.exposed``); a recipient of a rotation that lost to a concurrent
  removal keeps that key.

Entries written under an epoch whose operation was voided (its author was concurrently removed)
are held to the "must never read" rule of that operation's causal past.

A device that still counts itself in but that no up-to-date member lists (its own admission was
voided before it could open what voided it) is *stale* and left out of the comparison (see
``microsync.testing.check_convergence``).

The four cases after the entitlement rules are group-layer bugs this machine found (now fixed),
kept as minimal regression tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from microsync.errors import NotAMember
from microsync.feed.entry import EntryId, GroupId
from microsync.group.membership import OpRecord, resolve
from microsync.group.ops import OpKind, Role
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId, PersonId
from microsync.testing import Readability, SimDevice, SimNetwork, check_resolution

F = TypeVar("F", bound=Callable[..., None])

_ADMITTING = frozenset({OpKind.CREATE, OpKind.ADD, OpKind.ADD_DEVICE})

# --------------------------------------------------------------------------- entitlement


@dataclass(frozen=True)
class Entitlement:
    must: frozenset[DeviceId]
    never: frozenset[DeviceId]


def _ancestors(records: dict[EntryId, OpRecord], op: EntryId) -> set[EntryId]:
    seen: set[EntryId] = set()
    stack = list(records[op].deps)
    while stack:
        current = stack.pop()
        if current not in seen and current in records:
            seen.add(current)
            stack.extend(records[current].deps)
    return seen


def _admitted(records: dict[EntryId, OpRecord], ops: set[EntryId]) -> set[DeviceId]:
    return {g.device for i in ops if records[i].op.kind in _ADMITTING for g in records[i].grants}


def entitlement(
    group: GroupId,
    records: dict[EntryId, OpRecord],
    starter: EntryId,
    final: GroupReplica,
    persons: dict[DeviceId, PersonId],
    announced: bool,
) -> Entitlement:
    """Who must and who must never read content of the epoch started by ``starter`` (see the
    module docstring)."""
    past = _ancestors(records, starter)
    at_start = resolve(group, {i: records[i] for i in past | {starter}})
    recipients = at_start.state.entitled_devices()
    before = _admitted(records, past & set(at_start.effective))
    readmitted = _admitted(records, set(records) - past - {starter})
    never = (before - recipients) - readmitted
    never |= set(persons) - _admitted(records, set(records))
    state = final.state
    history = state.history
    members = state.entitled_devices()
    recipient_persons = {persons[d] for d in recipients}
    if history == "none":
        never |= {d for d in persons if d not in recipients and persons[d] not in recipient_persons}
    if not announced:
        return Entitlement(frozenset(), frozenset(never))
    if history == "shared":
        must = set(members)
    else:
        holding = {p for p, m in state.members.items() if set(m.devices) & recipients}
        must = {d for d in members if d in recipients}
        must |= {d for d in members if persons[d] in holding}
    return Entitlement(frozenset(must), frozenset(never))


def _records(replicas: list[GroupReplica]) -> dict[EntryId, OpRecord]:
    out: dict[EntryId, OpRecord] = {}
    for replica in replicas:
        for op_id in replica.resolution.order:
            record = replica.operation(op_id)
            if record is not None:
                out.setdefault(op_id, record)
    return out


def check_entitlement(net: SimNetwork, group: GroupId, reference: GroupReplica) -> None:
    """Compare ``entitlement_report`` with :func:`entitlement` for every content entry."""
    holders = net.holders(group)
    records = _records([reference] + [d.replica(group) for d in holders])
    persons = {d.device_id: d.person_id for d in net.devices}
    names = {d.device_id: d.name for d in net.devices}
    for item in net.entitlement_report(group):
        starter, announced = _starter(reference, records, item)
        assert starter is not None, f"no operation announces the epoch of {item}"
        rule = entitlement(group, records, starter, reference, persons, announced)
        must = {names[d] for d in rule.must}
        never = {names[d] for d in rule.never}
        where = f"entry {item.author}#{item.entry.header.seq} (epoch {item.epoch})"
        assert must <= item.readers, f"{where}: {sorted(must - item.readers)} cannot read it"
        assert not never & item.readers, f"{where}: {sorted(never & item.readers)} can read it"


def _starter(
    reference: GroupReplica, records: dict[EntryId, OpRecord], item: Readability
) -> tuple[EntryId | None, bool]:
    for (number, commitment), epoch in reference.state.epochs.items():
        if number == item.epoch and commitment.startswith(item.key_ref):
            return epoch.op, True
    for op_id, record in records.items():
        e = record.op.epoch
        if e is not None and e.number == item.epoch and e.commitment.startswith(item.key_ref):
            return op_id, False
    return None, False


# --------------------------------------------------------------------------- found by the machine
# Minimal cases of group-layer bugs the state machine found, fixed in microsync/group:
# content keys a device is entitled to are asked for; a device whose admission was voided gets
# the control keys that open what put it out; keys of void epochs are kept and handed out as
# control keys; two devices of one person revoking each other are both out.


def test_a_device_of_a_recipient_person_asks_for_the_content_key() -> None:
    net = SimNetwork(1)
    a, b = net.add_device("a"), net.add_device("b")
    b2 = net.add_linked_device(b, "b2")
    group = net.create_group(a, history="none")
    admin = a.replica(group)
    admin.add(b.person_id, "B", [b.grant()], now=net.clock.advance())
    post = admin.append_content(100, b"to a and b", now=net.clock.advance())  # b recipient
    net.settle(group)
    admin.remove(b.person_id, now=net.clock.advance())
    admin.add(b.person_id, "B", [b.grant(), b2.grant()], now=net.clock.advance())
    net.settle(group)
    [report] = [r for r in net.entitlement_report(group) if r.entry.id == post.id]
    assert report.readers == {"a", "b", "b2"}  # b2 holds only the control key


def test_a_device_whose_admission_was_voided_learns_it_is_out() -> None:
    net = SimNetwork(2)
    a, b = net.add_device("a"), net.add_device("b")
    b2 = net.add_linked_device(b, "b2")
    group = net.create_group(a)
    admin = a.replica(group)
    admin.add(b.person_id, "B", [b.grant()], now=net.clock.advance())
    net.settle(group)
    admin.rotate(now=net.clock.advance())  # b never sees this epoch before it is removed
    b.replica(group).add_device(b2.grant(), now=net.clock.advance())
    admin.remove(b.person_id, now=net.clock.advance())  # concurrent: voids the ADD_DEVICE
    net.settle(group)
    assert not b2.replica(group).is_member
    net.check_convergence(group, strict=True)


def test_an_op_sealed_under_a_voided_epoch_reaches_every_member() -> None:
    net = SimNetwork(3)
    a, c, d = net.add_device("a"), net.add_device("c"), net.add_device("d")
    group = net.create_group(a)
    admin = a.replica(group)
    admin.add(c.person_id, "C", [c.grant()], role=Role.ADMIN, now=net.clock.advance())
    net.settle(group)
    c.replica(group).rotate(now=net.clock.advance())  # unseen by a ...
    admin.remove(c.person_id, now=net.clock.advance())  # ... so this voids it
    c.replica(group).leave(now=net.clock.advance())  # sealed under c's voided epoch
    admin.add(d.person_id, "D", [d.grant()], now=net.clock.advance())
    net.settle(group)
    assert not d.replica(group).locked()
    net.check_convergence(group)


def test_an_op_cut_off_by_a_void_revocation_is_void_for_its_author() -> None:
    net = SimNetwork(4)
    a, b = net.add_device("a"), net.add_device("b")
    b2 = net.add_linked_device(b, "b2")
    group = net.create_group(a)
    a.replica(group).add(b.person_id, "B", [b.grant(), b2.grant()], now=net.clock.advance())
    net.settle(group)
    b.replica(group).revoke_device(b.revoke(b2, net.clock.now), now=net.clock.advance())
    b2.replica(group).revoke_device(b2.revoke(b, net.clock.now), now=net.clock.advance())
    net.settle(group)  # both revocations are void, but both cut-offs (seq 0) hold
    mine = b.replica(group)
    with contextlib.suppress(NotAMember):  # the right answer: b's later ops are void
        mine.rotate(now=net.clock.advance())
    check_resolution(mine)
    reloaded = GroupReplica.load(b.store, b.member, group)
    assert reloaded.resolution.effective == mine.resolution.effective


# --------------------------------------------------------------------------- the machine


def step(function: F) -> F:
    """Mark a rule as running, so teardown does not check a run a rule already failed."""

    def wrapper(self: GroupMachine, *args: Any, **kwargs: Any) -> None:
        self.failed = True
        function(self, *args, **kwargs)
        self.failed = False

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper  # type: ignore[return-value]


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = SimNetwork(seed=0)
        self.group = GroupId(b"")
        self.persons: dict[PersonId, list[SimDevice]] = {}
        self.texts = 0
        self.failed = False

    @initialize(
        seed=st.integers(0, 2**32),
        shape=st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=2, max_size=4),
        history=st.sampled_from(["shared", "none"]),
    )
    def start(self, seed: int, shape: list[tuple[bool, int]], history: str) -> None:
        """Persons named a, b, c, d. For person i, ``shape[i] = (two, joins)``: a second
        device if ``two`` (at most six devices in all); for persons after a (who founds the
        group on its first device), ``joins`` says how it starts: 0 outside, 1 added as a
        member, 2 as an admin, 3 as an admin with both devices. Then the network settles."""
        self.net = net = SimNetwork(seed)
        for i, (two, _) in enumerate(shape):
            first = net.add_device("abcd"[i])
            self.persons[first.person_id] = [first]
            room = 6 - len(net.devices) - (len(shape) - 1 - i)
            if two and room > 0:
                self.persons[first.person_id].append(net.add_linked_device(first, f"{first.name}2"))
        self.group = net.create_group(net.devices[0], "Sim", history=history)
        founder = net.devices[0].replica(self.group)
        for devices, (_, joins) in list(zip(self.persons.values(), shape, strict=True))[1:]:
            if joins:
                role = Role.ADMIN if joins >= 2 else Role.MEMBER
                grants = [d.grant() for d in devices[: 2 if joins == 3 else 1]]
                person = devices[0].person_id
                founder.add(person, devices[0].name, grants, role=role, now=self.now())
        net.settle(self.group)

    # ------------------------------------------------------------------ views

    def view(self, device: SimDevice) -> GroupReplica | None:
        if not device.holds(self.group):
            return None
        replica = device.replica(self.group)
        return replica if replica.is_member else None

    def actors(self, admin: bool = False) -> list[SimDevice]:
        out = []
        for device in self.net.devices:
            replica = self.view(device)
            if replica is None:
                continue
            member = replica.state.members[device.person_id]
            if not admin or member.role is Role.ADMIN:
                out.append(device)
        return out

    def pick(self, data: st.DataObject, choices: list[SimDevice], label: str) -> SimDevice:
        name = data.draw(st.sampled_from(sorted(d.name for d in choices)), label=label)
        return self.net.device(name)

    def now(self) -> int:
        return self.net.clock.advance(1)

    def attempt(self, action: Callable[[], object], *, post: GroupReplica | None = None) -> None:
        """Run ``action`` (a refusal is fine); then, with ``post``, write content there."""
        with contextlib.suppress(NotAMember):  # the layer refused it in the author's view
            action()
        if post is not None and post.is_member:
            self.post(post)

    def post(self, replica: GroupReplica) -> None:
        self.texts += 1
        text = f"post {self.texts}".encode()
        with contextlib.suppress(NotAMember):
            replica.append_content(100, text, now=self.now())

    # ------------------------------------------------------------------ membership rules

    @precondition(lambda self: self.actors(admin=True))
    @rule(
        data=st.data(),
        role=st.sampled_from([Role.MEMBER, Role.ADMIN]),
        both=st.booleans(),
        post=st.booleans(),
    )
    @step
    def add_member(self, data: st.DataObject, role: Role, both: bool, post: bool) -> None:
        actor = self.pick(data, self.actors(admin=True), "actor")
        state = actor.replica(self.group).state
        outside = [ds[0] for p, ds in self.persons.items() if p not in state.members]
        if not outside:
            return
        target = self.pick(data, outside, "target")
        devices = self.persons[target.person_id][: 2 if both else 1]
        grants = [d.grant() for d in devices if d.device_id not in state.revoked]
        if grants:
            replica = actor.replica(self.group)
            name = f"{target.name}-person"
            self.attempt(
                lambda: replica.add(target.person_id, name, grants, role=role, now=self.now()),
                post=replica if post else None,
            )

    @precondition(lambda self: self.actors(admin=True))
    @rule(data=st.data(), post=st.booleans())
    @step
    def remove_member(self, data: st.DataObject, post: bool) -> None:
        actor = self.pick(data, self.actors(admin=True), "actor")
        replica = actor.replica(self.group)
        others = [ds[0] for p, ds in self.persons.items() if p in replica.state.members]
        others = [d for d in others if d.person_id != actor.person_id]
        if others:
            target = self.pick(data, others, "target")
            self.attempt(
                lambda: replica.remove(target.person_id, now=self.now()),
                post=replica if post else None,
            )

    @precondition(lambda self: self.actors())
    @rule(data=st.data())
    @step
    def leave(self, data: st.DataObject) -> None:
        actor = self.pick(data, self.actors(), "actor")
        replica = actor.replica(self.group)
        if len(replica.state.members) > 1:
            self.attempt(lambda: replica.leave(now=self.now()))

    @precondition(lambda self: self.actors(admin=True))
    @rule(data=st.data(), post=st.booleans())
    @step
    def set_role(self, data: st.DataObject, post: bool) -> None:
        actor = self.pick(data, self.actors(admin=True), "actor")
        replica = actor.replica(self.group)
        members = [self.persons[p][0] for p in replica.state.members]
        target = self.pick(data, members, "target")
        role = replica.state.members[target.person_id].role
        flipped = Role.MEMBER if role is Role.ADMIN else Role.ADMIN
        self.attempt(
            lambda: replica.set_role(target.person_id, flipped, now=self.now()),
            post=replica if post else None,
        )

    @precondition(lambda self: self.actors())
    @rule(data=st.data(), post=st.booleans())
    @step
    def rotate(self, data: st.DataObject, post: bool) -> None:
        replica = self.pick(data, self.actors(), "actor").replica(self.group)
        self.attempt(lambda: replica.rotate(now=self.now()), post=replica if post else None)

    @precondition(lambda self: self.actors())
    @rule(data=st.data(), post=st.booleans())
    @step
    def add_device(self, data: st.DataObject, post: bool) -> None:
        actor = self.pick(data, self.actors(), "actor")
        replica = actor.replica(self.group)
        state = replica.state
        candidates = [
            d
            for d in self.persons[actor.person_id]
            if state.device(d.device_id) is None and d.device_id not in state.revoked
        ]
        if candidates:
            target = self.pick(data, candidates, "device")
            self.attempt(
                lambda: replica.add_device(target.grant(), now=self.now()),
                post=replica if post else None,
            )

    @precondition(lambda self: self.actors())
    @rule(data=st.data(), post=st.booleans())
    @step
    def revoke_device(self, data: st.DataObject, post: bool) -> None:
        actor = self.pick(data, self.actors(), "actor")
        replica = actor.replica(self.group)
        member = replica.state.members[actor.person_id]
        others = [d for d in self.persons[actor.person_id] if d is not actor]
        others = [d for d in others if d.device_id in member.devices]
        if others:
            target = self.pick(data, others, "device")
            revocation = actor.revoke(target, self.net.clock.now)
            self.attempt(
                lambda: replica.revoke_device(revocation, now=self.now()),
                post=replica if post else None,
            )

    @precondition(lambda self: self.actors())
    @rule(data=st.data())
    @step
    def write(self, data: st.DataObject) -> None:
        self.post(self.pick(data, self.actors(), "actor").replica(self.group))

    # ------------------------------------------------------------------ network rules

    @rule(
        data=st.data(),
        order=st.sampled_from(["random", "newest_first", "in_order"]),
        drop=st.sampled_from([0.0, 0.3]),
        duplicate=st.sampled_from([0.0, 0.3]),
        batch=st.sampled_from([1, 3, 100]),
    )
    @step
    def deliver(
        self, data: st.DataObject, order: Any, drop: float, duplicate: float, batch: int
    ) -> None:
        src = self.pick(data, self.net.holders(self.group), "src")
        dst = self.pick(data, [d for d in self.net.devices if d is not src], "dst")
        report = self.net.deliver(
            src, dst, self.group, order=order, drop=drop, duplicate=duplicate, batch=batch
        )
        assert not report.rejected, report.rejected

    @rule(data=st.data())
    @step
    def exchange_keys(self, data: st.DataObject) -> None:
        holders = self.net.holders(self.group)
        requester = self.pick(data, holders, "requester")
        answerer = self.pick(data, holders, "answerer")
        self.net.exchange_keys(requester, answerer, self.group)

    @rule(data=st.data())
    @step
    def partition(self, data: st.DataObject) -> None:
        sides = data.draw(st.lists(st.booleans(), min_size=6, max_size=6), label="sides")
        devices = self.net.devices
        self.net.partition(
            [
                [d for d, left in zip(devices, sides, strict=False) if left],
                [d for d, left in zip(devices, sides, strict=False) if not left],
            ]
        )

    @rule()
    @step
    def heal(self) -> None:
        self.net.heal()

    @rule()
    @step
    def settle_and_check(self) -> None:
        self.check()

    # ------------------------------------------------------------------ the invariant

    def check(self) -> None:
        self.net.settle(self.group)
        members = self.net.members(self.group)
        self.net.check_convergence(self.group)
        reference = (members or self.net.holders(self.group))[0].replica(self.group)
        check_entitlement(self.net, self.group, reference)

    def teardown(self) -> None:
        if not self.failed and self.group:
            self.check()


GroupMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_group_state_machine = GroupMachine.TestCase
