"""SPAKE2 wrapper: agreement, binding of password and identities, determinism under our rng,
and only DecodeError for any peer message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.crypto.pake import PAKE_KEY_SIZE, PAKE_MESSAGE_SIZE, PakeSide, Spake2
from microsync.errors import DecodeError, LocalProtocolError
from tests.conftest import make_rng

Q = 2**255 - 19


def run(
    password_a: bytes = b"7-ocean-violin",
    password_b: bytes = b"7-ocean-violin",
    ids_a: tuple[bytes, bytes] = (b"guest", b"host"),
    ids_b: tuple[bytes, bytes] = (b"guest", b"host"),
    seed: str = "pake",
) -> tuple[bytes, bytes, bytes, bytes]:
    a = Spake2(
        side=PakeSide.A, password=password_a, id_a=ids_a[0], id_b=ids_a[1], rng=make_rng(seed + "a")
    )
    b = Spake2(
        side=PakeSide.B, password=password_b, id_a=ids_b[0], id_b=ids_b[1], rng=make_rng(seed + "b")
    )
    msg_a, msg_b = a.start(), b.start()
    return msg_a, msg_b, a.finish(msg_b), b.finish(msg_a)


def test_same_password_and_identities_agree_on_a_key() -> None:
    msg_a, msg_b, key_a, key_b = run()
    assert len(msg_a) == len(msg_b) == PAKE_MESSAGE_SIZE
    assert msg_a[:1] == b"A" and msg_b[:1] == b"B"
    assert key_a == key_b and len(key_a) == PAKE_KEY_SIZE


def test_a_different_password_gives_different_keys() -> None:
    _, _, key_a, key_b = run(password_b=b"7-ocean-violet")
    assert key_a != key_b


@pytest.mark.parametrize("ids_b", [(b"guest", b"host2"), (b"guest2", b"host"), (b"host", b"guest")])
def test_identities_are_bound_into_the_key(ids_b: tuple[bytes, bytes]) -> None:
    _, _, key_a, key_b = run(ids_b=ids_b)
    assert key_a != key_b


def test_randomness_comes_only_from_our_rng() -> None:
    assert run(seed="s1") == run(seed="s1")
    assert run(seed="s1")[0] != run(seed="s2")[0]
    drawn: list[int] = []
    rng = make_rng("count")

    def counting(n: int) -> bytes:
        drawn.append(n)
        return rng(n)

    Spake2(side=PakeSide.A, password=b"pw", id_a=b"", id_b=b"", rng=counting).start()
    assert drawn and sum(drawn) >= 32


def test_each_step_runs_once() -> None:
    a = Spake2(side=PakeSide.A, password=b"pw", id_a=b"a", id_b=b"b", rng=make_rng("once"))
    with pytest.raises(LocalProtocolError):
        a.finish(b"B" + bytes(32))
    a.start()
    with pytest.raises(LocalProtocolError):
        a.start()
    with pytest.raises(DecodeError):
        a.finish(b"A" + bytes(32))
    with pytest.raises(LocalProtocolError):  # a failed finish still counts
        a.finish(b"B" + bytes(32))


def test_repr_hides_the_password() -> None:
    a = Spake2(side=PakeSide.B, password=b"secret-words", id_a=b"a", id_b=b"b", rng=make_rng("r"))
    assert "secret" not in repr(a) and repr(a) == "Spake2(side=B)"


def fresh_b() -> tuple[Spake2, bytes]:
    b = Spake2(side=PakeSide.B, password=b"pw", id_a=b"a", id_b=b"b", rng=make_rng("fresh"))
    return b, b.start()


def point(y: int) -> bytes:
    return y.to_bytes(32, "little")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"A",
        b"A" + bytes(31),
        b"A" + bytes(33),
        b"B" + point(5),  # our own side
        b"C" + point(5),  # no side at all
        b"A" + point(1),  # the identity
        b"A" + point(Q - 1),  # a point of order 2
        b"A" + bytes(32),  # a point of order 4
        b"A" + point(2),  # not on the curve
    ],
)
def test_bad_peer_messages_are_decode_errors(message: bytes) -> None:
    b, _ = fresh_b()
    with pytest.raises(DecodeError):
        b.finish(message)


def test_a_reflected_message_is_refused() -> None:
    b, ours = fresh_b()
    with pytest.raises(DecodeError):
        b.finish(b"A" + ours[1:])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=40) | st.binary(min_size=32, max_size=32).map(lambda p: b"A" + p))
def test_any_peer_message_gives_a_key_or_a_decode_error(message: bytes) -> None:
    b, _ = fresh_b()
    try:
        key = b.finish(message)
    except DecodeError:
        return
    assert len(key) == PAKE_KEY_SIZE
