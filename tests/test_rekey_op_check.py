"""``Op.to_bytes`` without decoding back a rotation it just encoded (issue 19).

``to_bytes`` refuses to return what a peer's ``Op.from_bytes`` would reject. For a REMOVE or
ROTATE whose fields are all within what decoding checks, ``ops._plain_rotation`` says so
from the typed fields instead of decoding the bytes back. It must be sound: whenever it says
yes, decoding the bytes gives the same op back (so the author's fold and every peer's agree);
a no only means "decode back", as before. Drawn here from valid and hostile field values
alike (wrong sizes, out-of-range numbers, unsorted or repeated or too many positions, fields
the kind does not carry)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.errors import DecodeError
from microsync.group.ops import DeviceGrant, EpochAnnouncement, Op, OpKind, Role, _plain_rotation
from microsync.identity import DeviceId, PersonId
from tests.group_helpers import group_of

ID = b"\1" * 32
EPOCH = EpochAnnouncement(2, b"\2" * 32, b"\3" * 32)

near_ids = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=31, max_size=33),
    st.just(bytearray(32)),
)
numbers = st.one_of(st.integers(0, 20), st.sampled_from([-1, 2**63 - 1, 2**63, 2**64 - 1]))
epochs = st.one_of(
    st.none(),
    st.builds(EpochAnnouncement, numbers, near_ids, near_ids),
    st.just(EPOCH),
)


@st.composite
def positions(draw: st.DrawFn) -> tuple[tuple[DeviceId, int], ...]:
    count = draw(st.sampled_from([0, 1, 3, 64, 65]))
    devices = draw(st.lists(near_ids, min_size=count, max_size=count))
    items = [(DeviceId(bytes(d)), draw(numbers)) for d in devices]
    if draw(st.booleans()):
        items.sort()
    return tuple(items)


extras = st.fixed_dictionaries(
    {},
    optional={
        "name": st.just("x"),
        "role": st.just(Role.MEMBER),
        "devices": st.just((DeviceGrant(b"c", b"p"),)),
        "cutoff": st.just(1),
        "invite_id": st.just(ID),
        "time": st.just(5),
        "nonce": st.just(ID),
        "recovery_key": st.just(ID),
    },
)


@st.composite
def ops(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from([OpKind.REMOVE, OpKind.ROTATE, OpKind.LEAVE]))
    person = draw(st.one_of(st.none(), near_ids))
    fields = draw(extras) if draw(st.integers(0, 3)) == 0 else {}
    return Op(
        kind=kind,
        person=None if person is None else PersonId(person),  # type: ignore[arg-type]
        epoch=draw(epochs),
        positions=draw(positions()),
        **fields,
    )


@settings(max_examples=200, deadline=None)
@given(ops())
def test_whenever_the_typed_check_passes_decoding_gives_the_op_back(op: Op) -> None:
    try:
        data = op._encode()
    except (DecodeError, ValueError, TypeError, OverflowError):
        assert not _plain_rotation(op, 0)  # what cannot be encoded is never passed either
        return
    if _plain_rotation(op, len(data)):
        assert Op.from_bytes(data) == op
        assert op.to_bytes() == data


def test_the_ops_a_removal_and_a_rotation_write_pass_and_decode_back() -> None:
    alice, bob, _ = group_of("alice", "bob", "carol")
    for entry in (alice.group.remove(PersonId(bob.person), now=100), alice.group.rotate(now=101)):
        record = alice.group.operation(entry.id)
        assert record is not None
        data = record.op.to_bytes()
        assert _plain_rotation(record.op, len(data))
        assert Op.from_bytes(data) == record.op


REMOVE = Op(kind=OpKind.REMOVE, person=PersonId(ID), epoch=EPOCH, positions=((DeviceId(ID), 3),))


@pytest.mark.parametrize(
    "op",
    [
        Op(kind=OpKind.REMOVE, person=PersonId(b"\1" * 31), epoch=EPOCH),
        Op(kind=OpKind.REMOVE, person=PersonId(ID), epoch=None),
        Op(kind=OpKind.REMOVE, person=PersonId(ID), epoch=EpochAnnouncement(-1, ID, ID)),
        Op(kind=OpKind.REMOVE, person=PersonId(ID), epoch=EpochAnnouncement(1, b"\1" * 33, ID)),
        Op(kind=OpKind.REMOVE, person=PersonId(ID), epoch=EPOCH, positions=((DeviceId(ID), -1),)),
        Op(
            kind=OpKind.REMOVE,
            person=PersonId(ID),
            epoch=EPOCH,
            positions=((DeviceId(b"\2" * 32), 1), (DeviceId(ID), 1)),  # not sorted
        ),
        Op(
            kind=OpKind.REMOVE,
            person=PersonId(ID),
            epoch=EPOCH,
            positions=((DeviceId(ID), 1), (DeviceId(ID), 2)),  # one device twice
        ),
        Op(
            kind=OpKind.REMOVE,
            person=PersonId(ID),
            epoch=EPOCH,
            positions=tuple((DeviceId(i.to_bytes(32, "big")), 1) for i in range(65)),
        ),
        Op(kind=OpKind.REMOVE, person=PersonId(ID), epoch=EPOCH, name="carried by no removal"),
        Op(kind=OpKind.ROTATE, person=PersonId(ID), epoch=EPOCH),
        Op(kind=OpKind.ROTATE, epoch=EPOCH, positions=((DeviceId(ID), 1),)),
    ],
)
def test_an_op_a_peer_would_reject_is_refused_as_before(op: Op) -> None:
    assert not _plain_rotation(op, 100)
    with pytest.raises(DecodeError):
        op.to_bytes()


def test_a_well_formed_removal_and_rotation_pass_without_decoding() -> None:
    assert _plain_rotation(REMOVE, len(REMOVE.to_bytes()))
    rotate = Op(kind=OpKind.ROTATE, epoch=EPOCH)
    assert _plain_rotation(rotate, len(rotate.to_bytes()))
    assert not _plain_rotation(REMOVE, 256 * 1024 + 1)  # over the op size limit: decode back
