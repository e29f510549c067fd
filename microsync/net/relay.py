"""The blind relay: pairs devices that present the same rendezvous id and forwards ciphertext.

Theory of operation
-------------------
A device opens one WebSocket to the relay and JOINs the rotating rendezvous ids of its groups
(``microsync.group.keys.rendezvous_id(epoch, bucket)``: 32 opaque bytes). Whenever a second
client presents an id that another client holds, the relay makes a *channel* for that pair and
tells both with PAIRED (the later joiner is the initiator). Every pair of clients on one id gets
its own channel, multiplexed over each client's single WebSocket; a client never pairs with
itself, and one id never pairs the same two clients twice while their channel is open. The
end-to-end Noise session runs inside the channel, so the relay forwards opaque DATA and learns
no group id, device key or name.

Wire (one binary WebSocket message each; :func:`encode` / :func:`decode`)::

    message = u8 kind || u24 body length || body || zero padding up to a bucket in BUCKETS

    JOIN   1  rid[32]                  client -> relay
    LEAVE  2  rid[32]                  client -> relay   (no new pairings; channels stay)
    DATA   3  channel u32 || payload   both ways          (1 <= len(payload) <= MAX_PAYLOAD)
    CLOSE  4  channel u32              client -> relay
    PAIRED 5  rid[32] || channel u32 || initiator u8
    CLOSED 6  channel u32              relay -> client    (the other end closed or left)
    ERROR  7  code u16                 relay -> client    (then the relay disconnects)

Channel ids are per client (1, 2, 3...), so the two ends of one channel see different numbers.
No client keeps a slot for free: at most ``max_clients_per_address`` come from one IP, and one
with no open channel is closed after ``idle_timeout`` (no rid) or ``unpaired_timeout`` (rids
that never pair), counted from when it connected or its last channel closed.
Decoding is strict: a bucket length, a known kind for the direction, an exact body layout, an
all-zero padding. A client that breaks any rule or exceeds a cap (:class:`RelayLimits`) gets
ERROR and is disconnected; its channels close (CLOSED to the other ends); nobody else notices.

Invariants: nothing is written to disk and no payload or id is logged; every buffer is bounded
(websockets' ``max_queue``/``write_limit`` per connection, one message in hand per handler);
forwarding awaits the receiver's send buffer, so a slow reader slows its sender (back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from http import HTTPStatus
from typing import Final, assert_never

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from microsync.errors import DecodeError, RemoteProtocolError
from microsync.net.limits import ConnectionQuota, Refusal, address_key

__all__ = [
    "BUCKETS",
    "MAX_MESSAGE",
    "MAX_PAYLOAD",
    "RID_SIZE",
    "ClientMessage",
    "Close",
    "Closed",
    "Data",
    "Error",
    "ErrorCode",
    "Flow",
    "Join",
    "Leave",
    "Paired",
    "RelayLimits",
    "RelayMessage",
    "RelayServer",
    "RelayStats",
    "bucket_for",
    "data_sizes",
    "decode",
    "encode",
    "run_relay",
]

log = logging.getLogger(__name__)

# --- wire ------------------------------------------------------------------------------------

BUCKETS: Final = (256, 1024, 4096, 16384, 65536, 73728)
"""Every message the relay sends or accepts is exactly one of these lengths."""
MAX_MESSAGE: Final = BUCKETS[-1]
HEADER_SIZE: Final = 4
RID_SIZE: Final = 32
CHANNEL_SIZE: Final = 4
DATA_OVERHEAD: Final = HEADER_SIZE + CHANNEL_SIZE
MAX_PAYLOAD: Final = MAX_MESSAGE - DATA_OVERHEAD
"""The most bytes one DATA message carries."""


class Kind(IntEnum):
    JOIN = 1
    LEAVE = 2
    DATA = 3
    CLOSE = 4
    PAIRED = 5
    CLOSED = 6
    ERROR = 7


class ErrorCode(IntEnum):
    """Why the relay is about to disconnect a client."""

    MALFORMED = 1
    RELAY_FULL = 2
    TOO_MANY_RIDS = 3
    RATE_LIMIT = 4
    IDLE = 5
    ADDRESS_FULL = 6
    UNPAIRED = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    rid: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    rid: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    channel: int
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    channel: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Paired:
    rid: bytes
    channel: int
    initiator: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    channel: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    code: ErrorCode


ClientMessage = Join | Leave | Data | Close
RelayMessage = Paired | Data | Closed | Error
Message = ClientMessage | RelayMessage
CLIENT_KINDS: Final = frozenset({Kind.JOIN, Kind.LEAVE, Kind.DATA, Kind.CLOSE})
RELAY_KINDS: Final = frozenset({Kind.PAIRED, Kind.DATA, Kind.CLOSED, Kind.ERROR})


def bucket_for(length: int) -> int:
    """The smallest bucket that holds ``length`` bytes."""
    for size in BUCKETS:
        if length <= size:
            return size
    raise ValueError("message larger than the largest bucket")


def data_sizes(length: int) -> list[int]:
    """How to cut ``length`` bytes into DATA payloads with little padding.

    The cheaper on the wire of two cuts: into full 72 KiB messages, or into full 64 KiB ones
    (neither pads); in both the tail goes whole or, when cheaper, as one more full 64 KiB
    message plus a small one: a 65,537-byte Noise frame costs 65,536 + 256 bytes on the wire
    instead of 73,728.

    >>> data_sizes(65_537), data_sizes(73_000), data_sizes(200_000)
    ([65528, 9], [73000], [65528, 65528, 65528, 3416])
    """
    cuts = [_cut(length, MAX_PAYLOAD), _cut(length, BUCKETS[-2] - DATA_OVERHEAD)]
    return min(cuts, key=lambda sizes: (sum(map(_padded, sizes)), len(sizes)))


def _cut(length: int, chunk: int) -> list[int]:
    full = BUCKETS[-2] - DATA_OVERHEAD
    sizes = [chunk] * ((length - 1) // chunk) if length > MAX_PAYLOAD else []
    tail = length - chunk * len(sizes)
    if tail > full and _padded(tail) > _padded(full) + _padded(tail - full):
        return [*sizes, full, tail - full]
    return [*sizes, tail] if tail else sizes


def _padded(payload: int) -> int:
    return bucket_for(DATA_OVERHEAD + payload)


def _u32(value: int) -> bytes:
    if not 0 < value < 2**32:
        raise ValueError("channel ids are 1 to 2**32 - 1")
    return value.to_bytes(CHANNEL_SIZE, "big")


def _body(message: Message) -> tuple[Kind, list[bytes | memoryview]]:
    match message:
        case Join(rid=rid) | Leave(rid=rid) if len(rid) != RID_SIZE:
            raise ValueError("a rendezvous id is 32 bytes")
        case Join(rid=rid):
            return Kind.JOIN, [rid]
        case Leave(rid=rid):
            return Kind.LEAVE, [rid]
        case Data(channel=channel, payload=payload):
            if not 0 < len(payload) <= MAX_PAYLOAD:
                raise ValueError(f"a DATA payload is 1 to {MAX_PAYLOAD} bytes")
            return Kind.DATA, [_u32(channel), payload]
        case Close(channel=channel):
            return Kind.CLOSE, [_u32(channel)]
        case Paired(rid=rid, channel=channel, initiator=initiator):
            return Kind.PAIRED, [rid, _u32(channel), bytes((initiator,))]
        case Closed(channel=channel):
            return Kind.CLOSED, [_u32(channel)]
        case Error(code=code):
            return Kind.ERROR, [code.to_bytes(2, "big")]
        case _:
            assert_never(message)


def encode(message: Message) -> bytes:
    """The padded wire form of ``message`` (its length is one of :data:`BUCKETS`)."""
    kind, parts = _body(message)
    length = sum(len(part) for part in parts)
    size = bucket_for(HEADER_SIZE + length)
    header = bytes((kind,)) + length.to_bytes(3, "big")
    return b"".join([header, *parts, bytes(size - HEADER_SIZE - length)])


def decode(data: bytes, *, from_client: bool) -> Message:
    """Strictly decode one wire message sent by a client (or, if not, by the relay)."""
    if len(data) not in BUCKETS:
        raise DecodeError("a relay message length is not a bucket")
    length = int.from_bytes(data[1:HEADER_SIZE], "big")
    end = HEADER_SIZE + length
    if end > len(data) or data.count(0, end) != len(data) - end:
        raise DecodeError("bad relay message length or padding")
    try:
        kind = Kind(data[0])
    except ValueError:
        raise DecodeError("unknown relay message kind") from None
    if kind not in (CLIENT_KINDS if from_client else RELAY_KINDS):
        raise DecodeError("relay message kind not allowed in this direction")
    return _parse(kind, memoryview(data)[HEADER_SIZE:end])


def _channel(body: memoryview) -> int:
    channel = int.from_bytes(body[:CHANNEL_SIZE], "big")
    if channel == 0:
        raise DecodeError("channel id 0")
    return channel


def _parse(kind: Kind, body: memoryview) -> Message:
    sizes = {
        Kind.JOIN: RID_SIZE,
        Kind.LEAVE: RID_SIZE,
        Kind.CLOSE: CHANNEL_SIZE,
        Kind.CLOSED: CHANNEL_SIZE,
        Kind.PAIRED: RID_SIZE + CHANNEL_SIZE + 1,
        Kind.ERROR: 2,
    }
    if kind is Kind.DATA:
        if len(body) <= CHANNEL_SIZE:
            raise DecodeError("empty DATA message")
        return Data(channel=_channel(body), payload=bytes(body[CHANNEL_SIZE:]))
    if len(body) != sizes[kind]:
        raise DecodeError("bad relay message body length")
    match kind:
        case Kind.JOIN:
            return Join(rid=bytes(body))
        case Kind.LEAVE:
            return Leave(rid=bytes(body))
        case Kind.CLOSE:
            return Close(channel=_channel(body))
        case Kind.CLOSED:
            return Closed(channel=_channel(body))
        case Kind.PAIRED:
            if body[-1] > 1:
                raise DecodeError("bad initiator flag")
            rid, channel = bytes(body[:RID_SIZE]), _channel(body[RID_SIZE:])
            return Paired(rid=rid, channel=channel, initiator=body[-1] == 1)
        case Kind.ERROR:
            try:
                return Error(code=ErrorCode(int.from_bytes(body, "big")))
            except ValueError:
                raise DecodeError("unknown relay error code") from None
    raise AssertionError("unreachable")  # pragma: no cover


# --- server ----------------------------------------------------------------------------------


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


class Flow(Enum):
    RECEIVED = "received"
    SENT = "sent"


Tap = Callable[[Flow, bytes], None]


class _Refused(Exception):
    """A client broke a rule or a cap; carries the code the client is told."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


@dataclass(eq=False, slots=True)
class _Client:
    conn: ServerConnection
    address: str = ""  # the quota key of its IP
    admitted: bool = False  # holds a quota slot
    alone_since: float = 0.0  # when it last had no channel (connected, or its last one closed)
    rids: dict[bytes, None] = field(default_factory=dict)
    channels: dict[int, _Channel] = field(default_factory=dict)
    last_channel: int = 0
    deadline: asyncio.Timeout | None = None
    window_start: float = 0.0
    window_bytes: int = 0
    alive: bool = True


@dataclass(eq=False, slots=True)
class _Channel:
    """One pair's channel. ``announced``: the ends already sent PAIRED (only they get CLOSED);
    ``ready`` is set once both were told (or the channel died), so DATA never overtakes PAIRED."""

    rid: bytes
    ends: dict[_Client, int]
    announced: set[_Client] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    open: bool = True

    def other(self, client: _Client) -> tuple[_Client, int]:
        ((peer, channel),) = ((c, i) for c, i in self.ends.items() if c is not client)
        return peer, channel


class RelayServer:
    """The relay: ``async with RelayServer() as relay: ... relay.port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: RelayLimits = RelayLimits(),
        tap: Tap | None = None,
    ) -> None:
        """``tap(flow, message)`` sees every WebSocket message received and sent (for audits)."""
        self._host, self._port, self.limits, self._tap = host, port, limits, tap
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self._quota = ConnectionQuota(
            total=limits.max_clients, per_address=limits.max_clients_per_address
        )
        self._rids: dict[bytes, dict[_Client, None]] = {}
        self._received = self._sent = self._forwarded = 0
        self.port = 0

    async def start(self) -> int:
        """Listen; return the bound port."""
        if self._server is not None:
            raise RuntimeError("the relay is already started")
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            compression=None,
            max_size=MAX_MESSAGE,
            max_queue=16,
            write_limit=128 * 1024,
            ping_interval=self.limits.ping_interval,
            ping_timeout=self.limits.ping_timeout,
            close_timeout=2,
            server_header=None,
            process_request=self._admit,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close every client and stop listening. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def stats(self) -> RelayStats:
        channels = {id(ch) for client in self._clients for ch in client.channels.values()}
        return RelayStats(
            clients=len(self._clients),
            channels=len(channels),
            rendezvous_ids=len(self._rids),
            bytes_received=self._received,
            bytes_sent=self._sent,
            bytes_forwarded=self._forwarded,
        )

    # --- one connection ----------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the opening handshake with HTTP 503 once ``max_clients`` are connected, and
        with 429 once ``max_clients_per_address`` are connected from the client's address."""
        if self._quota.held >= self._quota.total:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "relay full\n")
        if self._quota.held_by(_address(connection)) >= self._quota.per_address:
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        client = _Client(conn, _address(conn))
        refusal = self._quota.admit(client.address)  # again: a rush passes _admit together
        if refusal is not None:
            full = ErrorCode.RELAY_FULL if refusal is Refusal.TOTAL else ErrorCode.ADDRESS_FULL
            await self._refuse(client, full)
            return
        client.admitted = True
        self._clients.add(client)
        log.debug("relay client connected (%d)", len(self._clients))
        try:
            await self._serve_client(client)
        except _Refused as refused:
            await self._refuse(client, refused.code)
        except TimeoutError:
            await self._refuse(client, ErrorCode.UNPAIRED if client.rids else ErrorCode.IDLE)
        except (DecodeError, RemoteProtocolError):
            await self._refuse(client, ErrorCode.MALFORMED)
        except ConnectionClosed:
            pass
        finally:
            await self._drop(client)
            log.debug("relay client gone (%d)", len(self._clients))

    async def _serve_client(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        client.window_start = client.alone_since = loop.time()
        async with asyncio.timeout(self.limits.idle_timeout) as deadline:
            client.deadline = deadline
            while True:
                raw = await client.conn.recv()
                if isinstance(raw, str):
                    raise RemoteProtocolError("text message")
                self._count_in(client, raw, loop.time())
                await self._dispatch(client, decode(raw, from_client=True))
                self._rearm(client)

    def _count_in(self, client: _Client, raw: bytes, now: float) -> None:
        if self._tap is not None:
            self._tap(Flow.RECEIVED, raw)
        self._received += len(raw)
        if now - client.window_start >= self.limits.window:
            client.window_start, client.window_bytes = now, 0
        client.window_bytes += len(raw)
        if client.window_bytes > self.limits.max_bytes_per_window:
            raise _Refused(ErrorCode.RATE_LIMIT)

    def _rearm(self, client: _Client) -> None:
        """Run the timer only while ``client`` has no channel: ``idle_timeout`` from when it
        was left alone if it holds no rid, else ``unpaired_timeout``. Messages never move it
        (a client cannot stay by sending JOINs or LEAVEs, as it could not by pings)."""
        if client.deadline is None or not client.alive:
            return
        wait = self.limits.unpaired_timeout if client.rids else self.limits.idle_timeout
        client.deadline.reschedule(None if client.channels else client.alone_since + wait)

    async def _dispatch(self, client: _Client, message: Message) -> None:
        match message:
            case Join(rid=rid):
                await self._join(client, rid)
            case Leave(rid=rid):
                self._leave(client, rid)
            case Data(channel=channel, payload=payload):
                await self._forward(client, channel, payload)
            case Close(channel=channel):
                found = self._lookup(client, channel)
                if found is not None:
                    await self._close_channel(found)
            case Paired() | Closed() | Error():  # pragma: no cover (decode refuses them)
                raise RemoteProtocolError("relay-only message from a client")
            case _:
                assert_never(message)

    # --- pairing -----------------------------------------------------------------------------

    async def _join(self, client: _Client, rid: bytes) -> None:
        if rid in client.rids:
            return
        if len(client.rids) >= self.limits.max_rids_per_client:
            raise _Refused(ErrorCode.TOO_MANY_RIDS)
        holders = self._rids.setdefault(rid, {})
        earlier = list(holders)
        holders[client] = client.rids[rid] = None
        for member in earlier:
            if self._may_pair(client, member, rid):
                await self._announce(self._open_channel(rid, member, client), (member, client))

    def _may_pair(self, client: _Client, member: _Client, rid: bytes) -> bool:
        """Both still hold ``rid``, both have room, and they share no open channel on it."""
        holders = self._rids.get(rid, {})
        if member is client or member not in holders or client not in holders:
            return False
        cap = self.limits.max_channels_per_client
        if len(client.channels) >= cap or len(member.channels) >= cap:
            return False
        return not any(ch.rid == rid and member in ch.ends for ch in client.channels.values())

    def _open_channel(self, rid: bytes, first: _Client, later: _Client) -> _Channel:
        ends: dict[_Client, int] = {}
        for party in (first, later):
            party.last_channel += 1
            ends[party] = party.last_channel
        channel = _Channel(rid, ends)
        for party, number in ends.items():
            party.channels[number] = channel
            self._rearm(party)
        return channel

    async def _announce(self, channel: _Channel, order: tuple[_Client, _Client]) -> None:
        try:
            for party in order:
                if not channel.open:
                    return
                channel.announced.add(party)
                initiator = party is order[1]
                message = Paired(rid=channel.rid, channel=channel.ends[party], initiator=initiator)
                await self._send(party, message)
        finally:
            channel.ready.set()

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

    async def _forward(self, client: _Client, number: int, payload: bytes | memoryview) -> None:
        channel = self._lookup(client, number)
        if channel is None:
            return  # closed meanwhile: the CLOSED is on its way to the sender
        await channel.ready.wait()
        peer, peer_number = channel.other(client)
        if channel.open:
            self._forwarded += len(payload)
            await self._send(peer, Data(channel=peer_number, payload=payload))

    async def _close_channel(self, channel: _Channel) -> None:
        channel.open = False
        channel.ready.set()
        for party, number in channel.ends.items():
            party.channels.pop(number, None)
            if not party.channels:
                party.alone_since = asyncio.get_running_loop().time()
            self._rearm(party)
        for party, number in channel.ends.items():
            if party in channel.announced and party.alive:
                await self._send(party, Closed(channel=number))

    async def _send(self, client: _Client, message: RelayMessage) -> None:
        raw = encode(message)
        self._record_out(raw)
        with contextlib.suppress(ConnectionClosed):
            await client.conn.send(raw)

    def _record_out(self, raw: bytes) -> None:
        if self._tap is not None:
            self._tap(Flow.SENT, raw)
        self._sent += len(raw)

    async def _refuse(self, client: _Client, code: ErrorCode) -> None:
        log.info("relay client refused: %s", code.name)
        await self._drop(client)
        raw = encode(Error(code=code))
        self._record_out(raw)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(client.conn.send(raw), 1.0)
            await asyncio.wait_for(client.conn.close(1008, code.name.lower()), 2.0)

    async def _drop(self, client: _Client) -> None:
        """Forget ``client``: leave every rid, close every channel (CLOSED to the other ends)."""
        if not client.alive:
            return
        client.alive = False
        self._clients.discard(client)
        if client.admitted:
            self._quota.release(client.address)
        for rid in list(client.rids):
            self._leave(client, rid)
        for channel in list(client.channels.values()):
            await self._close_channel(channel)


def _address(connection: ServerConnection) -> str:
    """The quota key of a connection's remote IP."""
    remote = connection.remote_address
    return address_key(str(remote[0]) if isinstance(remote, tuple) else str(remote))


async def run_relay(
    host: str,
    port: int,
    *,
    limits: RelayLimits = RelayLimits(),
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run a relay on ``host:port`` until cancelled; ``ready(bound_port)`` once listening."""
    async with RelayServer(host, port, limits=limits) as relay:
        if ready is not None:
            ready(relay.port)
        await asyncio.Event().wait()
