"""The membership-operation codec (microsync.group.ops): exact round trips for every kind, and
strict decoding where anything malformed is a DecodeError and nothing else."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.errors import DecodeError
from microsync.group.ops import (
    MAX_OP_SIZE,
    DeviceGrant,
    EpochAnnouncement,
    Op,
    OpKind,
    Role,
    recipients_digest,
)
from microsync.group.settings import SettingsChange
from microsync.identity import DeviceId, PersonId

ids32 = st.binary(min_size=32, max_size=32)
uint = st.integers(0, 2**63 - 1)
names = st.text(min_size=1, max_size=64)
grants = st.builds(
    DeviceGrant, st.binary(min_size=0, max_size=200), st.binary(min_size=0, max_size=200)
)
announcements = st.builds(EpochAnnouncement, uint, ids32, ids32)
keeper_urls = st.builds(
    "ws://{}.example:{}".format,
    st.text("abcxyz019-", min_size=1, max_size=20),
    st.integers(1, 65535),
)

# every field each kind needs, as an Op keyword -> strategy
REQUIRED: dict[OpKind, dict[str, st.SearchStrategy[Any]]] = {
    OpKind.CREATE: {
        "group_name": st.text(min_size=1, max_size=128),
        "history": st.sampled_from(["shared", "none"]),
        "nonce": ids32,
        "name": names,
        "devices": st.lists(grants, min_size=1, max_size=3).map(tuple),
        "epoch": announcements,
    },
    OpKind.ADD: {
        "person": ids32,
        "name": names,
        "role": st.sampled_from(Role),
        "devices": st.lists(grants, min_size=1, max_size=3).map(tuple),
    },
    OpKind.REMOVE: {"person": ids32, "epoch": announcements},
    OpKind.LEAVE: {},
    OpKind.SET_ROLE: {"person": ids32, "role": st.sampled_from(Role)},
    OpKind.ADD_DEVICE: {"devices": st.lists(grants, min_size=1, max_size=1).map(tuple)},
    OpKind.REVOKE_DEVICE: {
        "revocation": st.binary(max_size=300),
        "cutoff": uint,
        "epoch": announcements,
    },
    OpKind.PREKEY: {"devices": st.lists(grants, min_size=1, max_size=1).map(tuple)},
    OpKind.ROTATE: {"epoch": announcements},
    OpKind.INVITE: {"invite_id": ids32, "time": uint, "role": st.sampled_from(Role)},
    OpKind.REVOKE_INVITE: {"invite_id": ids32},
    OpKind.SETTINGS: {
        "settings": st.builds(
            SettingsChange,
            add_keepers=st.lists(keeper_urls, min_size=1, max_size=4, unique=True).map(tuple),
            remove_keepers=st.lists(keeper_urls, max_size=4, unique=True).map(tuple),
        )
    },
}


@st.composite
def ops(draw: st.DrawFn, kind: OpKind | None = None) -> Op:
    kind = kind if kind is not None else draw(st.sampled_from(OpKind))
    fields = {name: draw(strategy) for name, strategy in REQUIRED[kind].items()}
    if kind is OpKind.ADD:
        if draw(st.booleans()):
            fields["invite_id"], fields["time"] = draw(ids32), draw(uint)
        if draw(st.booleans()):
            fields["epoch"] = draw(announcements)
    if kind in (OpKind.CREATE, OpKind.ADD) and draw(st.booleans()):
        fields["recovery_key"] = draw(ids32)
    if kind is OpKind.ADD_DEVICE and draw(st.booleans()):  # a recovery
        fields["recovery"], fields["epoch"] = draw(st.binary(max_size=300)), draw(announcements)
    return Op(kind=kind, **fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops())
def test_every_op_round_trips_exactly(op: Op) -> None:
    data = op.to_bytes()
    decoded = Op.from_bytes(data)
    assert decoded == op
    assert decoded.to_bytes() == data
    assert len(data) <= MAX_OP_SIZE


def one(kind: OpKind) -> Op:
    """A fixed, valid op of ``kind``."""
    grant = DeviceGrant(b"cert", b"prekey")
    announcement = EpochAnnouncement(1, b"c" * 32, recipients_digest([DeviceId(b"d" * 32)]))
    values: dict[str, Any] = {
        "group_name": "Family",
        "history": "shared",
        "nonce": b"n" * 32,
        "name": "Ann",
        "devices": (grant,),
        "epoch": announcement,
        "person": PersonId(b"p" * 32),
        "role": Role.ADMIN,
        "revocation": b"revocation",
        "cutoff": 4,
        "invite_id": b"i" * 32,
        "time": 1_000,
        "settings": SettingsChange(add_keepers=("ws://keeper.example:7427",)),
    }
    return Op(kind=kind, **{name: values[name] for name in REQUIRED[kind]})


def as_map(op: Op) -> dict[str, Any]:
    value = encoding.decode(op.to_bytes(), max_size=MAX_OP_SIZE)
    assert isinstance(value, dict)
    return dict(value)  # type: ignore[arg-type]


def encode(value: Any) -> bytes:
    return encoding.encode(value)


@pytest.mark.parametrize("kind", list(OpKind), ids=lambda k: k.name)
def test_a_fixed_op_of_every_kind_round_trips(kind: OpKind) -> None:
    op = one(kind)
    assert Op.from_bytes(op.to_bytes()) == op
    assert as_map(op)["k"] == int(kind)


@pytest.mark.parametrize("kind_value", [0, 13, 255, 2**40, "1", None, True, b"\x01", 1.0])
def test_an_unknown_or_mistyped_kind_is_refused(kind_value: Any) -> None:
    value = as_map(one(OpKind.LEAVE))
    value["k"] = kind_value
    with pytest.raises(DecodeError):
        Op.from_bytes(encode(value))


def test_a_missing_kind_is_refused() -> None:
    with pytest.raises(DecodeError):
        Op.from_bytes(encode({"p": b"p" * 32}))


KINDS_WITH_FIELDS = [k for k in OpKind if REQUIRED[k]]
ALL_FIELDS = ["p", "n", "r", "d", "x", "c", "i", "t", "h", "o", "g", "e", "m"]


@pytest.mark.parametrize("kind", KINDS_WITH_FIELDS, ids=lambda k: k.name)
def test_each_missing_field_is_refused(kind: OpKind) -> None:
    full = as_map(one(kind))
    for key in full:
        if key == "k":
            continue
        value = {k: v for k, v in full.items() if k != key}
        with pytest.raises(DecodeError):
            Op.from_bytes(encode(value))


@pytest.mark.parametrize("kind", list(OpKind), ids=lambda k: k.name)
def test_each_extra_field_is_refused(kind: OpKind) -> None:
    base = as_map(one(kind))
    donor = {k: v for other in OpKind for k, v in as_map(one(other)).items() if k != "k"}
    optional = {"i", "t", "e"} if kind is OpKind.ADD else set()
    for key in ALL_FIELDS:
        if key in base or key in optional:
            continue
        with pytest.raises(DecodeError):
            Op.from_bytes(encode({**base, key: donor[key]}))
    for key, junk in (("zz", 1), ("", b""), ("K", 1)):
        with pytest.raises(DecodeError):
            Op.from_bytes(encode({**base, key: junk}))
    with pytest.raises(DecodeError):
        Op.from_bytes(encode({**base, 7: 1}))  # integer keys are not op fields


def test_add_with_an_invite_needs_its_time_and_vice_versa() -> None:
    base = as_map(one(OpKind.ADD))
    assert Op.from_bytes(encode({**base, "i": b"i" * 32, "t": 5})).invite_id == b"i" * 32
    for partial in ({"i": b"i" * 32}, {"t": 5}):
        with pytest.raises(DecodeError):
            Op.from_bytes(encode({**base, **partial}))


WRONG_VALUES: dict[str, list[Any]] = {
    "p": [b"p" * 31, b"p" * 33, "p" * 32, 5, None, [b"p" * 32]],
    "n": ["", "x" * 65, b"Ann", 1, None],
    "g": ["", "x" * 129, b"Family", 0],
    "r": [0, 3, -1, "admin", True, 2.0],
    "d": [[], [[b"c", b"p"]] * 65, [[b"c"]], [[b"c", b"p", b"x"]], [["c", b"p"]], b"", {}],
    "x": ["rev", b"x" * 1025, 1],
    "c": [-1, 2**64, "4", 4.0, None, False],
    "i": [b"i" * 31, "i" * 32, 1],
    "t": [-1, "1000", 1.5, None],
    "h": ["open", "", "Shared", b"shared", 1],
    "o": [b"n" * 31, b"n" * 64, "n" * 32],
    "e": [[1, b"c" * 32], [1, b"c" * 31, b"r" * 32], [-1, b"c" * 32, b"r" * 32], [b"", 1, 2], 1],
    "m": [{}, {"ka": []}, {"zz": ["ws://k:1"]}, {"ka": ["http://k"]}, ["ws://k:1"], 1],
}


@pytest.mark.parametrize("kind", KINDS_WITH_FIELDS, ids=lambda k: k.name)
def test_each_field_with_a_wrong_type_or_size_is_refused(kind: OpKind) -> None:
    base = as_map(one(kind))
    if kind is OpKind.ADD:
        base.update({"i": b"i" * 32, "t": 5, "e": as_map(one(OpKind.ROTATE))["e"]})
    for key in base:
        for wrong in WRONG_VALUES.get(key, []):
            with pytest.raises(DecodeError):
                Op.from_bytes(encode({**base, key: wrong}))


@pytest.mark.parametrize(
    "value",
    [[2, b"x"], 2, "op", b"", None, [], {"k": [2]}],
    ids=["array", "int", "text", "bytes", "null", "empty-array", "nested"],
)
def test_a_non_map_is_refused(value: Any) -> None:
    with pytest.raises(DecodeError):
        Op.from_bytes(encode(value))


def test_non_canonical_encodings_are_refused() -> None:
    value = as_map(one(OpKind.SET_ROLE))
    unsorted = cbor2.dumps(dict(sorted(value.items(), reverse=True)))
    assert Op.from_bytes(cbor2.dumps(value, canonical=True)) == one(OpKind.SET_ROLE)
    assert unsorted != cbor2.dumps(value, canonical=True)
    with pytest.raises(DecodeError):
        Op.from_bytes(unsorted)
    # the kind as a needlessly long integer
    canonical = cbor2.dumps({"k": 4}, canonical=True)
    assert Op.from_bytes(canonical).kind is OpKind.LEAVE
    with pytest.raises(DecodeError):
        Op.from_bytes(bytes.fromhex("a1616b1804"))
    with pytest.raises(DecodeError):  # duplicate key
        Op.from_bytes(bytes.fromhex("a2616b04616b04"))
    with pytest.raises(DecodeError):  # indefinite-length map
        Op.from_bytes(bytes.fromhex("bf616b04ff"))
    with pytest.raises(DecodeError):  # a tag
        Op.from_bytes(bytes.fromhex("a1616bc104"))
    with pytest.raises(DecodeError):  # trailing bytes
        Op.from_bytes(canonical + b"\x00")


def test_an_oversize_op_is_refused() -> None:
    value = as_map(one(OpKind.REVOKE_DEVICE))
    value["x"] = b"x" * (MAX_OP_SIZE + 1)
    with pytest.raises(DecodeError):
        Op.from_bytes(cbor2.dumps(value, canonical=True))


def test_to_bytes_refuses_to_write_what_a_peer_would_reject() -> None:
    for bad in (
        Op(
            kind=OpKind.ADD,
            person=PersonId(b"p" * 32),
            name="",
            role=Role.MEMBER,
            devices=(DeviceGrant(b"c", b"p"),),
        ),
        Op(kind=OpKind.LEAVE, person=PersonId(b"p" * 32)),
        Op(kind=OpKind.REMOVE, person=PersonId(b"p" * 32)),  # no epoch
        Op(kind=OpKind.ROTATE),
    ):
        with pytest.raises(DecodeError):
            bad.to_bytes()


def test_role_parse() -> None:
    assert Role.parse("admin") is Role.ADMIN and Role.parse("MEMBER") is Role.MEMBER
    assert Role.parse(Role.ADMIN) is Role.ADMIN and str(Role.ADMIN) == "admin"
    with pytest.raises(ValueError):
        Role.parse("owner")


def test_recipients_digest_is_a_function_of_the_set() -> None:
    a, b = DeviceId(b"a" * 32), DeviceId(b"b" * 32)
    assert recipients_digest([a, b]) == recipients_digest([b, a, b])
    assert recipients_digest([a]) != recipients_digest([a, b]) != recipients_digest([])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_only_decode_error(data: bytes) -> None:
    try:
        op = Op.from_bytes(data)
    except DecodeError:
        return
    assert op.to_bytes() == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops(), st.data())
def test_mutated_ops_decode_or_raise_only_decode_error(op: Op, data: st.DataObject) -> None:
    wire = bytearray(op.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(wire) - 1))
        wire[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        wire = wire[: data.draw(st.integers(0, len(wire)))]
    try:
        decoded = Op.from_bytes(bytes(wire))
    except DecodeError:
        return
    assert decoded.to_bytes() == bytes(wire)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["k", *ALL_FIELDS]),
        st.one_of(
            st.integers(-5, 2**64),
            st.binary(max_size=40),
            st.text(max_size=10),
            st.none(),
            st.booleans(),
            st.lists(st.binary(max_size=40), max_size=3),
        ),
        max_size=8,
    )
)
def test_arbitrary_maps_decode_or_raise_only_decode_error(value: dict[str, Any]) -> None:
    try:
        data = cbor2.dumps(value, canonical=True)
        op = Op.from_bytes(data)
    except DecodeError:
        return
    assert op.to_bytes() == data


def test_roles_and_history_are_the_strings_apps_compare_and_the_same_bytes() -> None:
    from microsync.group.ops import History

    assert Role.ADMIN == "admin" and str(Role.MEMBER) == "member"
    assert (int(Role.MEMBER), int(Role.ADMIN)) == (1, 2) and Role(2) is Role.ADMIN
    assert Role.from_code(1) is Role.MEMBER and Role.parse("Admin") is Role.ADMIN
    with pytest.raises(ValueError):
        Role(3)
    assert History.NONE == "none" and History("shared") is History.SHARED
    op = Op(kind=OpKind.SET_ROLE, person=PersonId(b"p" * 32), role=Role.ADMIN)
    assert op.to_bytes() == encoding.encode({"k": int(OpKind.SET_ROLE), "p": b"p" * 32, "r": 2})
    plain = one(OpKind.CREATE)
    typed = dataclasses.replace(plain, history=History(plain.history))
    assert typed.to_bytes() == plain.to_bytes()  # the same string on the wire
    assert Op.from_bytes(plain.to_bytes()).history is History(plain.history)


def test_the_recovery_fields_have_the_known_bytes() -> None:
    """CREATE and ADD carry the member's recovery key as "q"; a recovery (an ADD_DEVICE of
    another member's device) carries its certificate as "y" and always an epoch."""
    create = replace(one(OpKind.CREATE), recovery_key=b"q" * 32)
    assert as_map(create)["q"] == b"q" * 32
    assert Op.from_bytes(create.to_bytes()) == create
    assert Op.from_bytes(one(OpKind.CREATE).to_bytes()).recovery_key is None  # old: as before
    announcement = EpochAnnouncement(1, b"c" * 32, b"r" * 32)
    recovery = replace(one(OpKind.ADD_DEVICE), recovery=b"cert", epoch=announcement)
    assert recovery.to_bytes() == bytes.fromhex(
        "a4616481824463657274467072656b6579616583015820"  # d: the grant; e: the epoch
        + "63" * 32
        + "5820"
        + "72" * 32
        + "616b06"  # k: ADD_DEVICE
        + "61794463657274"  # y: the certificate
    )


@pytest.mark.parametrize("field", ["y", "e"])
def test_a_recovery_needs_its_epoch_and_only_a_recovery_starts_one(field: str) -> None:
    value = as_map(one(OpKind.ADD_DEVICE))
    value[field] = b"cert" if field == "y" else [1, b"c" * 32, b"r" * 32]
    with pytest.raises(DecodeError, match="recovery"):
        Op.from_bytes(encode(value))
