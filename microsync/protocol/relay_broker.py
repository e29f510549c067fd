"""The blind relay's rules, sans-IO: pairing by rendezvous id, caps, and the unpaired timeout.

Theory of operation
-------------------
A device opens one connection to the relay and JOINs the rotating rendezvous ids of its groups
(``microsync.group.keys.rendezvous_id(epoch, bucket)``: 32 opaque bytes). Whenever a second
client presents an id that another client holds, the broker makes a *channel* for that pair and
tells both with PAIRED (the earlier holder first; the later joiner is the initiator). Every pair
of clients on one id gets its own channel, multiplexed over each client's single connection; a
client never pairs with itself, and one id never pairs the same two clients twice while their
channel is open. The end-to-end Noise session runs inside the channel, so the relay forwards
opaque DATA and learns no group id, device key or name.

:class:`RelayBroker` holds no socket, task or clock. The adapter (:mod:`microsync.net.relay`)
reports what happens, each call with ``now`` (seconds, any monotonic clock) -- ``connect``,
``receive(client, bytes)``, ``expire`` when a client's deadline passed, ``refuse`` for a
message the codec never sees (text), ``disconnected`` -- and carries out the effects each call
returns, in order:

* :class:`Send` -- one encoded message for one client. Effects of one call are in the order
  each client must receive them, so DATA never overtakes the PAIRED of its channel.
* :class:`Deadline` -- a client's timer is now ``at`` (``None``: stopped). It runs only while
  the client has no channel: ``idle_timeout`` from when it was left alone if it holds no rid,
  else ``unpaired_timeout``. Messages never move it (a client cannot stay by sending JOINs).
* :class:`Disconnect` -- send the client ``data`` (an ERROR) and close its connection. The
  broker has already forgotten it and told the other end of each of its channels (CLOSED).

Invariants: a client that breaks any rule (a malformed message, an unknown channel) or exceeds
a per-client cap (:class:`RelayLimits`) is disconnected and nobody else notices; the broker
keeps no payload and no buffer beyond the message in hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType, assert_never

from microsync.errors import DecodeError, RemoteProtocolError
from microsync.protocol.relay import (
    CHANNEL_SIZE,
    HEADER_SIZE,
    Close,
    Closed,
    Data,
    Error,
    ErrorCode,
    Join,
    Leave,
    Message,
    Paired,
    data_channel,
    decode,
    encode,
    rechannel,
)

__all__ = [
    "ClientId",
    "Deadline",
    "Disconnect",
    "Effect",
    "RelayBroker",
    "RelayLimits",
    "RelayStats",
    "Send",
]

ClientId = NewType("ClientId", int)
"""A connected client, as the broker names it (never reused)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLimits:
    """The relay's caps. A client over a per-client cap gets ERROR and is disconnected."""

    max_clients: int = 1000
    max_clients_per_address: int = 16
    """Clients at once from one IP (an IPv6 address: from its /64); the next is answered 429."""
    max_rids_per_client: int = 64
    max_channels_per_client: int = 256
    """Pairs beyond this (on either side) are not made; nobody is disconnected for it."""
    max_bytes_per_window: int = 256 * 1024 * 1024
    """Bytes (padded) a client may send per ``window`` seconds: ~25 MB/s sustained."""
    window: float = 10.0
    idle_timeout: float = 60.0
    """Seconds a client may stay connected holding no rendezvous id and no channel."""
    unpaired_timeout: float = 300.0
    """Seconds a client may hold rendezvous ids with no open channel; then it is closed
    (ERROR 7) and a device reconnects. Both clocks start when the client connects or its last
    channel closes, and nothing the client sends moves them."""
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    """WebSocket keepalive: a dead TCP connection (or a client that stops reading) is dropped
    after ``ping_interval + ping_timeout`` seconds at most."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStats:
    clients: int
    channels: int
    rendezvous_ids: int
    bytes_received: int
    bytes_sent: int
    bytes_forwarded: int
    """DATA payload bytes forwarded (unpadded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Send ``data`` (one encoded relay message) to ``to``."""

    to: ClientId
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadline:
    """``client``'s timer now fires at ``at`` (``None``: it does not run)."""

    client: ClientId
    at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnect:
    """Send ``data`` (an encoded ERROR ``code``) to ``client``, then close its connection."""

    client: ClientId
    code: ErrorCode
    data: bytes


Effect = Send | Deadline | Disconnect


class _Refused(Exception):
    """A client broke a rule or a cap; carries the code the client is told."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


@dataclass(eq=False, slots=True)
class _Client:
    id: ClientId
    alone_since: float  # when it last had no channel (connected, or its last one closed)
    window_start: float
    window_bytes: int = 0
    rids: dict[bytes, None] = field(default_factory=dict)
    channels: dict[int, _Channel] = field(default_factory=dict)
    last_channel: int = 0
    timer: float | None = None  # the deadline the adapter was last told


@dataclass(eq=False, slots=True)
class _Channel:
    """One pair's channel: each end's client and the number that end knows it by."""

    rid: bytes
    ends: dict[_Client, int]

    def other(self, client: _Client) -> tuple[_Client, int]:
        ((peer, number),) = ((c, i) for c, i in self.ends.items() if c is not client)
        return peer, number


class RelayBroker:
    """Pairing, forwarding and caps for every client of one relay (see the module docs)."""

    def __init__(self, limits: RelayLimits = RelayLimits()) -> None:
        self.limits = limits
        self._clients: dict[ClientId, _Client] = {}
        self._rids: dict[bytes, dict[_Client, None]] = {}
        self._next_id = 0
        self.bytes_forwarded = 0
        """DATA payload bytes forwarded (unpadded)."""

    # --- what the adapter asks ---------------------------------------------------------------

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def channels(self) -> int:
        return len({id(ch) for c in self._clients.values() for ch in c.channels.values()})

    @property
    def rendezvous_ids(self) -> int:
        return len(self._rids)

    def deadline(self, client: ClientId) -> float | None:
        """When ``client``'s timer fires (``None``: it has a channel, or is gone)."""
        found = self._clients.get(client)
        return None if found is None else self._deadline(found)

    # --- events ------------------------------------------------------------------------------

    def connect(self, now: float) -> ClientId:
        """A new client; its timer starts now (read it with :meth:`deadline`)."""
        self._next_id += 1
        client = ClientId(self._next_id)
        found = _Client(client, alone_since=now, window_start=now)
        found.timer = self._deadline(found)
        self._clients[client] = found
        return client

    def receive(self, client: ClientId, data: bytes, now: float) -> list[Effect]:
        """One binary message from ``client``."""
        found = self._clients.get(client)
        if found is None:
            return []
        out: list[Effect] = []
        try:
            self._count_in(found, len(data), now)
            number = data_channel(data)  # the bulk of the traffic: forwarded without a decode
            if number is not None:
                self._forward(found, number, data, out, raw=True)
                self._rearm(found, out)
                return out
            self._dispatch(found, decode(data, from_client=True), now, out)
        except _Refused as refused:
            return out + self.refuse(client, refused.code, now)
        except (DecodeError, RemoteProtocolError):
            return out + self.refuse(client, ErrorCode.MALFORMED, now)
        return out

    def expire(self, client: ClientId, now: float) -> list[Effect]:
        """``client``'s deadline may have passed: disconnect it if so (IDLE, or UNPAIRED when
        it holds rendezvous ids)."""
        found = self._clients.get(client)
        if found is None:
            return []
        at = self._deadline(found)
        if at is None or now < at:
            return [Deadline(client=client, at=at)]
        return self.refuse(client, ErrorCode.UNPAIRED if found.rids else ErrorCode.IDLE, now)

    def refuse(self, client: ClientId, code: ErrorCode, now: float) -> list[Effect]:
        """Disconnect ``client`` with ERROR ``code`` (its channels close)."""
        if client not in self._clients:
            return []
        out = self.disconnected(client, now)
        out.append(Disconnect(client=client, code=code, data=encode(Error(code=code))))
        return out

    def disconnected(self, client: ClientId, now: float) -> list[Effect]:
        """``client`` is gone: leave its rids, close its channels (CLOSED to the other ends)."""
        found = self._clients.pop(client, None)
        if found is None:
            return []
        for rid in list(found.rids):
            self._leave(found, rid)
        out: list[Effect] = []
        for channel in list(found.channels.values()):
            self._close_channel(channel, now, out)
        return out

    # --- one message -------------------------------------------------------------------------

    def _count_in(self, client: _Client, size: int, now: float) -> None:
        if now - client.window_start >= self.limits.window:
            client.window_start, client.window_bytes = now, 0
        client.window_bytes += size
        if client.window_bytes > self.limits.max_bytes_per_window:
            raise _Refused(ErrorCode.RATE_LIMIT)

    def _dispatch(self, client: _Client, message: Message, now: float, out: list[Effect]) -> None:
        match message:
            case Join(rid=rid):
                self._join(client, rid, out)
            case Leave(rid=rid):
                self._leave(client, rid)
            case Data(channel=number, payload=payload):
                self._forward(client, number, payload, out)
            case Close(channel=number):
                found = self._lookup(client, number)
                if found is not None:
                    self._close_channel(found, now, out)
            case Paired() | Closed() | Error():  # pragma: no cover (decode refuses them)
                raise RemoteProtocolError("relay-only message from a client")
            case _:
                assert_never(message)
        self._rearm(client, out)

    def _deadline(self, client: _Client) -> float | None:
        if client.channels:
            return None
        wait = self.limits.unpaired_timeout if client.rids else self.limits.idle_timeout
        return client.alone_since + wait

    def _rearm(self, client: _Client, out: list[Effect]) -> None:
        """Tell the adapter when ``client``'s deadline changed."""
        at = self._deadline(client)
        if client.id in self._clients and at != client.timer:
            client.timer = at
            out.append(Deadline(client=client.id, at=at))

    # --- pairing -----------------------------------------------------------------------------

    def _join(self, client: _Client, rid: bytes, out: list[Effect]) -> None:
        if rid in client.rids:
            return
        if len(client.rids) >= self.limits.max_rids_per_client:
            raise _Refused(ErrorCode.TOO_MANY_RIDS)
        holders = self._rids.setdefault(rid, {})
        earlier = list(holders)
        holders[client] = client.rids[rid] = None
        for member in earlier:
            if self._may_pair(client, member, rid):
                self._open_channel(rid, member, client, out)

    def _may_pair(self, client: _Client, member: _Client, rid: bytes) -> bool:
        """Both have room, and they share no open channel on ``rid``."""
        cap = self.limits.max_channels_per_client
        if member is client or len(client.channels) >= cap or len(member.channels) >= cap:
            return False
        return not any(ch.rid == rid and member in ch.ends for ch in client.channels.values())

    def _open_channel(self, rid: bytes, first: _Client, later: _Client, out: list[Effect]) -> None:
        channel = _Channel(rid, {})
        for party in (first, later):
            party.last_channel += 1
            channel.ends[party] = party.last_channel
            party.channels[party.last_channel] = channel
            self._rearm(party, out)
        for party in (first, later):
            paired = Paired(rid=rid, channel=channel.ends[party], initiator=party is later)
            out.append(Send(to=party.id, data=encode(paired)))

    def _leave(self, client: _Client, rid: bytes) -> None:
        if rid not in client.rids:
            return
        del client.rids[rid]
        holders = self._rids[rid]
        del holders[client]
        if not holders:
            del self._rids[rid]

    # --- channels ----------------------------------------------------------------------------

    def _lookup(self, client: _Client, number: int) -> _Channel | None:
        """The open channel ``number`` of ``client``; None if it closed; error if never made."""
        if number > client.last_channel:
            raise RemoteProtocolError("unknown channel")
        return client.channels.get(number)

    def _forward(
        self,
        client: _Client,
        number: int,
        payload: bytes | memoryview,
        out: list[Effect],
        *,
        raw: bool = False,
    ) -> None:
        """Send ``payload`` on to the other end (with ``raw``: it is the whole DATA message)."""
        channel = self._lookup(client, number)
        if channel is None:
            return  # closed meanwhile: the CLOSED is on its way to the sender
        peer, peer_number = channel.other(client)
        if raw:
            self.bytes_forwarded += int.from_bytes(payload[1:HEADER_SIZE], "big") - CHANNEL_SIZE
            out.append(Send(to=peer.id, data=rechannel(bytes(payload), peer_number)))
            return
        self.bytes_forwarded += len(payload)
        out.append(Send(to=peer.id, data=encode(Data(channel=peer_number, payload=payload))))

    def _close_channel(self, channel: _Channel, now: float, out: list[Effect]) -> None:
        for party, number in channel.ends.items():
            party.channels.pop(number, None)
            if not party.channels:
                party.alone_since = now
            self._rearm(party, out)
        for party, number in channel.ends.items():
            if party.id in self._clients:
                out.append(Send(to=party.id, data=encode(Closed(channel=number))))
