"""The hybrid logical clock: monotonic, the receive rules, and the far-future rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.state import HLC, MAX_DRIFT_MS, Document, Timestamp, is_far_future

N = b"n"


def test_send_follows_the_wall_clock_and_never_goes_back() -> None:
    clock = HLC(N)
    assert clock.send(100) == Timestamp(100, 0, N)
    assert clock.send(100) == Timestamp(100, 1, N)
    assert clock.send(90) == Timestamp(100, 2, N)  # the wall clock stepped back
    assert clock.send(101) == Timestamp(101, 0, N)


def test_receive_rules() -> None:
    clock = HLC(N, Timestamp(100, 5, N))
    assert clock.receive(Timestamp(200, 7, b"r"), 150) == Timestamp(200, 8, N)  # remote ahead
    assert clock.receive(Timestamp(200, 9, b"r"), 150) == Timestamp(200, 10, N)  # same wall
    assert clock.receive(Timestamp(100, 50, b"r"), 150) == Timestamp(200, 11, N)  # local ahead
    assert clock.receive(Timestamp(100, 50, b"r"), 300) == Timestamp(300, 0, N)  # now ahead


def test_a_far_future_timestamp_is_flagged_and_not_adopted() -> None:
    now = 1_000_000
    future = Timestamp(now + MAX_DRIFT_MS + 1, 0, b"r")
    assert is_far_future(future, now)
    assert not is_far_future(Timestamp(now + MAX_DRIFT_MS, 0, b"r"), now)
    clock = HLC(N)
    assert clock.receive(future, now) == Timestamp(now, 0, N)
    assert clock.send(now) == Timestamp(now, 1, N)


def test_a_far_future_write_applies_everywhere_but_a_later_local_write_beats_it() -> None:
    now = 1_000_000
    liar, honest = Document(b"L"), Document(b"H")
    op = liar.set("k", "from the future", now=now + 10 * MAX_DRIFT_MS)
    assert is_far_future(op.ts, now)
    honest.apply(op, now=now)
    assert honest.get("k") == "from the future"  # applied, as on every replica
    assert honest.hlc.last.wall == now  # not adopted: the clock stays at now
    overwrite = honest.set("k", "fixed", now=now)
    assert overwrite.ts > op.ts  # observed overwrite
    liar.apply(overwrite)
    assert liar.get("k") == honest.get("k") == "fixed"


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 3)),
        max_size=40,
    )
)
def test_timestamps_issued_are_strictly_increasing(
    events: list[tuple[bool, int, int, int]],
) -> None:
    clock = HLC(N)
    last = clock.last
    for is_send, now, wall, counter in events:
        ts = clock.send(now) if is_send else clock.receive(Timestamp(wall, counter, b"r"), now)
        assert ts > last
        assert ts.wall >= now
        if not is_send and not is_far_future(Timestamp(wall, counter, b"r"), now):
            assert ts > Timestamp(wall, counter, b"r")
        last = ts
