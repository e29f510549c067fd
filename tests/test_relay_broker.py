"""The relay's rules without sockets (microsync.protocol.relay_broker): events in, effects out,
time passed as ``now``. The WebSocket adapter is tested over loopback in test_relay.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.protocol.relay import (
    BUCKETS,
    Close,
    Closed,
    Data,
    Error,
    ErrorCode,
    Join,
    Leave,
    Message,
    Paired,
    decode,
    encode,
)
from microsync.protocol.relay_broker import (
    ClientId,
    Deadline,
    Disconnect,
    Effect,
    RelayBroker,
    RelayLimits,
    Send,
)

RID = bytes(range(32))
OTHER_RID = bytes(range(1, 33))
T0 = 1000.0


def to(effects: list[Effect], client: ClientId) -> list[Message]:
    """What ``effects`` send to ``client``, decoded, in order (ERROR last, if refused)."""
    found: list[Message] = []
    for effect in effects:
        target = effect.to if isinstance(effect, Send) else effect.client
        if target == client and not isinstance(effect, Deadline):
            found.append(decode(effect.data, from_client=False))
    return found


def refused(effects: list[Effect]) -> list[tuple[ClientId, ErrorCode]]:
    return [(e.client, e.code) for e in effects if isinstance(e, Disconnect)]


def say(broker: RelayBroker, client: ClientId, message: Message, now: float = T0) -> list[Effect]:
    return broker.receive(client, encode(message), now)


def paired_pair(broker: RelayBroker) -> tuple[ClientId, ClientId]:
    a, b = broker.connect(T0), broker.connect(T0)
    say(broker, a, Join(rid=RID))
    say(broker, b, Join(rid=RID))
    return a, b


def test_the_second_holder_of_an_id_pairs_both_earlier_first_later_initiates() -> None:
    broker = RelayBroker()
    a, b = broker.connect(T0), broker.connect(T0)
    assert to(say(broker, a, Join(rid=RID)), a) == []
    effects = say(broker, b, Join(rid=RID))
    sends = [e for e in effects if isinstance(e, Send)]
    assert [s.to for s in sends] == [a, b]  # the earlier holder hears first
    assert to(effects, a) == [Paired(rid=RID, channel=1, initiator=False)]
    assert to(effects, b) == [Paired(rid=RID, channel=1, initiator=True)]
    assert (broker.clients, broker.channels, broker.rendezvous_ids) == (2, 1, 1)


def test_data_reaches_the_other_end_under_its_own_channel_number() -> None:
    broker = RelayBroker()
    a, b = paired_pair(broker)
    c = broker.connect(T0)
    say(broker, c, Join(rid=OTHER_RID))
    say(broker, a, Join(rid=OTHER_RID))  # a's channel 2 with c (c's channel 1)
    assert to(say(broker, c, Data(channel=1, payload=b"to a")), a) == [
        Data(channel=2, payload=b"to a")
    ]
    assert to(say(broker, a, Data(channel=1, payload=b"to b")), b) == [
        Data(channel=1, payload=b"to b")
    ]
    assert broker.bytes_forwarded == 8


def test_no_pairing_with_itself_nor_twice_while_a_channel_is_open() -> None:
    broker = RelayBroker()
    a = broker.connect(T0)
    assert to(say(broker, a, Join(rid=RID)), a) == []
    assert say(broker, a, Join(rid=RID)) == []  # again: nothing
    b = broker.connect(T0)
    say(broker, b, Join(rid=RID))
    say(broker, b, Leave(rid=RID))
    assert to(say(broker, b, Join(rid=RID)), a) == []  # their channel on RID is still open
    say(broker, b, Close(channel=1))
    say(broker, b, Leave(rid=RID))
    assert to(say(broker, b, Join(rid=RID)), a) == [Paired(rid=RID, channel=2, initiator=False)]


def test_close_tells_both_ends_and_later_data_on_it_is_dropped() -> None:
    broker = RelayBroker()
    a, b = paired_pair(broker)
    effects = say(broker, a, Close(channel=1))
    assert to(effects, a) == [Closed(channel=1)] and to(effects, b) == [Closed(channel=1)]
    assert say(broker, b, Data(channel=1, payload=b"late")) == []
    assert broker.channels == 0


def test_a_client_that_goes_away_closes_its_channels_for_the_others_only() -> None:
    broker = RelayBroker()
    a, b = paired_pair(broker)
    effects = broker.disconnected(a, T0)
    assert to(effects, b) == [Closed(channel=1)] and to(effects, a) == []
    assert (broker.clients, broker.rendezvous_ids) == (1, 1)
    assert broker.disconnected(a, T0) == [] and broker.receive(a, b"", T0) == []


def test_malformed_input_and_unknown_channels_disconnect_the_sender_alone() -> None:
    for bad in (b"\x01", encode(Data(channel=7, payload=b"x")), encode(Closed(channel=1))):
        broker = RelayBroker()
        a, b = paired_pair(broker)
        effects = broker.receive(a, bad, T0)
        assert refused(effects) == [(a, ErrorCode.MALFORMED)]
        assert to(effects, a)[-1] == Error(code=ErrorCode.MALFORMED)
        assert to(effects, b) == [Closed(channel=1)]
        assert broker.clients == 1


def test_refusing_a_text_message_closes_channels_then_says_malformed() -> None:
    broker = RelayBroker()
    a, b = paired_pair(broker)
    effects = broker.refuse(b, ErrorCode.MALFORMED, T0)
    assert to(effects, a) == [Closed(channel=1)]
    assert isinstance(effects[-1], Disconnect) and effects[-1].client == b
    assert broker.refuse(b, ErrorCode.MALFORMED, T0) == []


def test_caps_rids_refuse_channels_do_not() -> None:
    broker = RelayBroker(RelayLimits(max_rids_per_client=2, max_channels_per_client=1))
    a = broker.connect(T0)
    say(broker, a, Join(rid=RID))
    say(broker, a, Join(rid=OTHER_RID))
    assert refused(say(broker, a, Join(rid=bytes(32)))) == [(a, ErrorCode.TOO_MANY_RIDS)]
    b, c = broker.connect(T0), broker.connect(T0)
    say(broker, b, Join(rid=RID))
    say(broker, c, Join(rid=RID))
    assert broker.channels == 1  # b and c may hold one channel each: no second pair
    assert refused(say(broker, c, Join(rid=OTHER_RID))) == []


def test_the_byte_rate_is_counted_per_window() -> None:
    message = encode(Join(rid=RID))
    broker = RelayBroker(RelayLimits(max_bytes_per_window=3 * len(message), window=10.0))
    a = broker.connect(T0)
    for at in (T0, T0 + 1, T0 + 2):
        assert refused(broker.receive(a, message, at)) == []
    assert refused(broker.receive(a, message, T0 + 10)) == []  # a new window
    for at in (T0 + 11, T0 + 12):
        broker.receive(a, message, at)
    assert refused(broker.receive(a, message, T0 + 13)) == [(a, ErrorCode.RATE_LIMIT)]


def test_the_timer_runs_only_without_a_channel_and_messages_never_move_it() -> None:
    limits = RelayLimits(idle_timeout=60.0, unpaired_timeout=300.0)
    broker = RelayBroker(limits)
    a = broker.connect(T0)
    assert broker.deadline(a) == T0 + 60
    assert Deadline(client=a, at=T0 + 300) in say(broker, a, Join(rid=RID), now=T0 + 50)
    assert say(broker, a, Join(rid=OTHER_RID), now=T0 + 100) == []  # no move
    b = broker.connect(T0 + 200)
    effects = say(broker, b, Join(rid=RID), now=T0 + 200)
    assert Deadline(client=a, at=None) in effects and broker.deadline(a) is None
    effects = say(broker, b, Close(channel=1), now=T0 + 250)
    assert Deadline(client=a, at=T0 + 250 + 300) in effects  # alone again: from now


def test_expiry_says_idle_or_unpaired_and_not_before_the_deadline() -> None:
    broker = RelayBroker(RelayLimits(idle_timeout=60.0, unpaired_timeout=300.0))
    idle, waiting = broker.connect(T0), broker.connect(T0)
    say(broker, waiting, Join(rid=RID))
    assert broker.expire(idle, T0 + 59) == [Deadline(client=idle, at=T0 + 60)]
    assert refused(broker.expire(idle, T0 + 60)) == [(idle, ErrorCode.IDLE)]
    assert refused(broker.expire(waiting, T0 + 299)) == []
    assert refused(broker.expire(waiting, T0 + 300)) == [(waiting, ErrorCode.UNPAIRED)]
    assert broker.clients == 0 and broker.rendezvous_ids == 0


EVENTS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["join", "leave", "data", "close", "gone", "junk"]),
        st.integers(0, 2),
        st.integers(1, 4),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_any_event_sequence_keeps_the_wire_padded_and_channels_two_sided(
    events: list[tuple[int, str, int, int]],
) -> None:
    broker = RelayBroker(RelayLimits(max_rids_per_client=2, max_channels_per_client=2))
    clients = [broker.connect(T0) for _ in range(4)]
    rids = [bytes([n]) * 32 for n in range(3)]
    channels: dict[ClientId, set[int]] = {c: set() for c in clients}
    for who, what, rid_index, number in events:
        client, rid = clients[who], rids[rid_index]
        match what:
            case "join":
                effects = say(broker, client, Join(rid=rid))
            case "leave":
                effects = say(broker, client, Leave(rid=rid))
            case "data":
                effects = say(broker, client, Data(channel=number, payload=b"p"))
            case "close":
                effects = say(broker, client, Close(channel=number))
            case "gone":
                effects = broker.disconnected(client, T0)
            case _:
                effects = broker.receive(client, b"junk", T0)
        for effect in effects:
            if isinstance(effect, Disconnect):
                assert len(effect.data) in BUCKETS
            if not isinstance(effect, Send):
                continue
            assert len(effect.data) in BUCKETS
            target = effect.to
            match decode(effect.data, from_client=False):
                case Paired(channel=n):
                    assert n not in channels[target]
                    channels[target].add(n)
                case Closed(channel=n):
                    channels[target].remove(n)
                case Data(channel=n):
                    assert n in channels[target]  # DATA only on a channel it was told of
        for gone in (e.client for e in effects if isinstance(e, Disconnect)):
            channels[gone].clear()
        if what == "gone":
            channels[client].clear()
    assert sum(map(len, channels.values())) == 2 * broker.channels
