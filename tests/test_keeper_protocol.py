"""The keeper's sans-IO parts: mailbox capabilities, the wire codec, the connection rules and
the client machine (no sockets, no disk)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microsync.errors import DecodeError, DecryptionError, NotAMember, RemoteProtocolError
from microsync.feed.entry import GroupId
from microsync.group.keys import EpochKey
from microsync.group.mailbox import (
    ITEM_OVERHEAD,
    ITEM_SIZES,
    MAX_RECORD,
    Mailbox,
    Proof,
    SealedItem,
    check_proof,
    mailbox_id_of,
)
from microsync.protocol.keeper import (
    BUCKETS,
    Challenge,
    Delete,
    Deleted,
    End,
    Error,
    ErrorCode,
    Items,
    KeeperError,
    Prove,
    Proved,
    Pull,
    Push,
    Refusal,
    Refused,
    Stored,
    decode,
    encode,
)
from microsync.protocol.keeper_session import (
    ClientMachine,
    ConnectionLimits,
    KeeperRules,
    Purge,
    Read,
    Store,
)
from tests.conftest import make_rng

CHALLENGE = bytes(range(32))
KEEPER = bytes(range(16))


def mailbox(seed: str = "epoch") -> Mailbox:
    return Mailbox.derive(make_rng(seed)(32))


# --- capabilities ---------------------------------------------------------------------------


def test_a_mailbox_is_a_function_of_the_epoch_control_secret_only() -> None:
    root = make_rng("root")(32)
    one, other = EpochKey.from_root(GroupId(bytes(32)), 1, root), make_rng("next")(32)
    box = Mailbox.derive(one.control.secret_bytes())
    assert box.id == Mailbox.derive(one.control.secret_bytes()).id  # every member agrees
    assert box.id == mailbox_id_of(box.signing.public)  # self-certifying
    assert box.id != Mailbox.derive(other).id  # the next epoch's cannot be guessed from it
    assert one.control.secret_bytes() not in repr(box).encode()
    assert repr(box) == f"Mailbox({box.id[:4].hex()})"


def test_two_mailboxes_share_no_derived_value() -> None:
    a, b = mailbox("a"), mailbox("b")
    values_a = {a.id, bytes(a.signing.public), a.item_id(b"same name")}
    values_b = {b.id, bytes(b.signing.public), b.item_id(b"same name")}
    assert not values_a & values_b


def test_a_proof_holds_for_its_challenge_only() -> None:
    box = mailbox()
    proof = box.prove(CHALLENGE)
    check_proof(proof, CHALLENGE)
    with pytest.raises(NotAMember):
        check_proof(proof, bytes(32))  # replayed on another connection
    forged = mailbox("outsider").prove(CHALLENGE)  # another key cannot answer for this one
    with pytest.raises(NotAMember):
        check_proof(Proof(mailbox=box.id, key=forged.key, signature=forged.signature), CHALLENGE)


@given(st.binary(max_size=5000))
def test_sealed_records_round_trip_at_padded_sizes(record: bytes) -> None:
    box = mailbox()
    sealed = box.seal(make_rng("nonce"), b"name", record)
    assert len(sealed.payload) - ITEM_OVERHEAD in ITEM_SIZES
    assert box.open(sealed) == record


def test_a_sealed_item_opens_only_where_it_was_sealed() -> None:
    box, other = mailbox(), mailbox("other")
    sealed = box.seal(make_rng("n"), b"one", b"secret words")
    moved = SealedItem(id=box.item_id(b"two"), payload=sealed.payload)
    for wrong, item in ((other, sealed), (box, moved)):
        with pytest.raises(DecryptionError):
            wrong.open(item)
    with pytest.raises(ValueError):
        box.seal(make_rng("n"), b"big", bytes(MAX_RECORD + 1))


# --- codec ----------------------------------------------------------------------------------

BOX = mailbox()
ITEM = BOX.seal(make_rng("n"), b"x", b"hello")
CLIENT_MESSAGES = [
    Prove(request=1, proof=BOX.prove(CHALLENGE)),
    Push(request=2, mailbox=BOX.id, items=(ITEM, BOX.seal(make_rng("m"), b"y", bytes(5000)))),
    Pull(request=3, mailbox=BOX.id, after=5, before=9, newest_first=True, limit=7),
    Pull(request=5, mailbox=BOX.id, after=5, wait=True),
    Delete(request=4, mailbox=BOX.id, items=(ITEM.id, BOX.item_id(b"y"))),
]
KEEPER_MESSAGES = [
    Challenge(nonce=CHALLENGE, keeper=KEEPER),
    Proved(request=1),
    Stored(request=2, cursors=(1, 7), duplicates=(True, False)),
    Items(request=3, cursors=(8, 9), items=(ITEM, ITEM)),
    End(request=3, more=False),
    Deleted(request=4, count=2),
    Refused(request=5, code=Refusal.MAILBOX_FULL),
    Error(code=ErrorCode.TOO_MANY_FAILURES),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES + KEEPER_MESSAGES, ids=repr)
def test_every_message_round_trips_at_a_bucket_size(message: object) -> None:
    wire = encode(message)  # type: ignore[arg-type]
    assert len(wire) in BUCKETS
    assert decode(wire, from_client=message in CLIENT_MESSAGES) == message


@pytest.mark.parametrize("message", CLIENT_MESSAGES + KEEPER_MESSAGES, ids=repr)
def test_a_message_from_the_wrong_side_or_altered_is_refused(message: object) -> None:
    wire = encode(message)  # type: ignore[arg-type]
    client = message in CLIENT_MESSAGES
    with pytest.raises(DecodeError):
        decode(wire, from_client=not client)
    with pytest.raises(DecodeError):
        decode(wire + b"\0", from_client=client)  # not a bucket
    with pytest.raises(DecodeError):
        decode(wire[:-1] + b"\1", from_client=client)  # padding not zero


def test_only_an_open_ended_oldest_first_pull_may_wait() -> None:
    for pull in (
        Pull(request=1, mailbox=BOX.id, newest_first=True, wait=True),
        Pull(request=1, mailbox=BOX.id, before=5, wait=True),
    ):
        with pytest.raises(DecodeError):
            decode(encode(pull), from_client=True)


@given(st.binary(max_size=900))
def test_any_bytes_decode_to_a_canonical_message_or_a_decode_error(data: bytes) -> None:
    wire = data + bytes(BUCKETS[0] - len(data)) if len(data) <= BUCKETS[0] else data
    for side in (True, False):
        try:
            message = decode(wire, from_client=side)
        except DecodeError:
            continue
        assert encode(message) == wire


# --- keeper rules ---------------------------------------------------------------------------


def rules(**limits: int) -> KeeperRules:
    return KeeperRules(CHALLENGE, KEEPER, ConnectionLimits(**limits))


def test_nothing_before_a_proof_and_everything_after() -> None:
    keeper = rules()
    assert keeper.hello() == Challenge(nonce=CHALLENGE, keeper=KEEPER)
    for request, message in enumerate(CLIENT_MESSAGES[1:], start=2):
        refused = keeper.receive(type(message)(**{**_fields(message), "request": request}))
        assert refused == Refused(request=request, code=Refusal.NOT_PROVED)
    assert keeper.receive(Prove(request=10, proof=BOX.prove(CHALLENGE))) == Proved(request=10)
    assert isinstance(keeper.receive(Push(request=11, mailbox=BOX.id, items=(ITEM,))), Store)
    assert isinstance(keeper.receive(Pull(request=12, mailbox=BOX.id)), Read)
    purge = keeper.receive(Delete(request=13, mailbox=BOX.id, items=(ITEM.id,)))
    assert purge == Purge(request=13, mailbox=BOX.id, items=(ITEM.id,))


def _fields(message: object) -> dict[str, object]:
    return {name: getattr(message, name) for name in message.__slots__}  # type: ignore[attr-defined]


def test_a_replayed_or_forged_proof_is_refused_and_too_many_end_the_connection() -> None:
    keeper = rules(max_failed_proofs=2)
    replayed = BOX.prove(bytes(32))  # recorded on another connection
    for request in (1, 2):
        answer = keeper.receive(Prove(request=request, proof=replayed))
        assert answer == Refused(request=request, code=Refusal.BAD_PROOF)
    assert keeper.receive(Prove(request=3, proof=replayed)) == Error(
        code=ErrorCode.TOO_MANY_FAILURES
    )


def test_requests_must_increase() -> None:
    keeper = rules()
    assert keeper.receive(Prove(request=5, proof=BOX.prove(CHALLENGE))) == Proved(request=5)
    assert keeper.receive(Pull(request=5, mailbox=BOX.id)) == Error(code=ErrorCode.MALFORMED)


def test_connection_quotas_refuse_with_their_reason() -> None:
    keeper = rules(max_mailboxes=1, max_bytes=len(ITEM.payload) * 2)
    assert keeper.receive(Prove(request=1, proof=BOX.prove(CHALLENGE))) == Proved(request=1)
    other = mailbox("other").prove(CHALLENGE)
    assert keeper.receive(Prove(request=2, proof=other)) == Refused(
        request=2, code=Refusal.TOO_MANY_MAILBOXES
    )
    two = Push(request=3, mailbox=BOX.id, items=(ITEM, ITEM))
    assert isinstance(keeper.receive(two), Store)
    assert keeper.receive(Push(request=5, mailbox=BOX.id, items=(ITEM,))) == Refused(
        request=5, code=Refusal.CONNECTION_FULL
    )


# --- client machine -------------------------------------------------------------------------


def test_the_client_machine_matches_answers_to_requests() -> None:
    client = ClientMachine()
    assert client.receive(Challenge(nonce=CHALLENGE, keeper=KEEPER)) is False
    pull = client.send(Pull(request=client.next_request(), mailbox=BOX.id, limit=2))
    assert client.receive(Items(request=pull.request, cursors=(1,), items=(ITEM,))) is False
    assert client.receive(Items(request=pull.request, cursors=(2,), items=(ITEM,))) is False
    with pytest.raises(RemoteProtocolError):  # more than asked for
        client.receive(Items(request=pull.request, cursors=(3,), items=(ITEM,)))


@pytest.mark.parametrize(
    "answer",
    [
        Stored(request=1, cursors=(1,), duplicates=(False,)),
        Proved(request=2),
        Challenge(nonce=CHALLENGE, keeper=KEEPER),
    ],
)
def test_the_client_machine_refuses_what_answers_nothing(answer: object) -> None:
    client = ClientMachine()
    client.receive(Challenge(nonce=CHALLENGE, keeper=KEEPER))
    client.send(Pull(request=client.next_request(), mailbox=BOX.id))
    with pytest.raises(RemoteProtocolError):
        client.receive(answer)  # type: ignore[arg-type]


def test_a_stored_must_answer_every_item_of_its_push() -> None:
    client = ClientMachine()
    client.receive(Challenge(nonce=CHALLENGE, keeper=KEEPER))
    push = client.send(Push(request=client.next_request(), mailbox=BOX.id, items=(ITEM, ITEM)))
    with pytest.raises(RemoteProtocolError):
        client.receive(Stored(request=push.request, cursors=(1,), duplicates=(False,)))


def test_an_error_from_the_keeper_is_raised_with_its_code() -> None:
    with pytest.raises(KeeperError) as raised:
        ClientMachine().receive(Error(code=ErrorCode.IDLE))
    assert raised.value.code is ErrorCode.IDLE
