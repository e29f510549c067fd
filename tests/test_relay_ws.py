"""The relay's WebSocket layer over real loopback TCP (microsync.net.ws_conn), against hostile
clients that speak raw bytes: framing errors get their close code and drop only their sender,
a ping flood from a client that does not read is throttled (nothing grows without bound), the
keepalive drops a silent client, and the closing handshake runs both ways. The client side is
checked against a hostile server the same way."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from microsync.net.relay import (
    Data,
    Error,
    ErrorCode,
    Join,
    Paired,
    RelayLimits,
    RelayServer,
    decode,
    encode,
)
from microsync.net.relay_client import RelayClient
from microsync.net.ws_conn import WsConnection, WsSettings
from microsync.net.ws_frames import CloseCode, FrameReader, Opcode, frame, parse_close

T = TypeVar("T")
RID = bytes(range(32))
DEFAULT = RelayLimits()
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def within(awaitable: Awaitable[T], seconds: float = 5.0) -> T:
    return await asyncio.wait_for(awaitable, seconds)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


async def relay_with(stack: AsyncExitStack, limits: RelayLimits = DEFAULT) -> RelayServer:
    return await stack.enter_async_context(RelayServer(limits=limits))


@dataclass(frozen=True)
class Sent:
    """A frame the relay sent (its payload as bytes)."""

    opcode: Opcode
    payload: bytes


class Raw:
    """A client that speaks bytes: a correct opening handshake, then whatever it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader(masked=False, max_size=1 << 20)

    @classmethod
    async def open(cls, stack: AsyncExitStack, relay: RelayServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        stack.callback(writer.transport.abort)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await within(reader.readuntil(b"\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 101")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert f"Sec-WebSocket-Accept: {accept}".encode() in head
        return cls(reader, writer)

    def send(self, opcode: Opcode, payload: bytes) -> None:
        self.writer.write(frame(opcode, payload, mask=os.urandom(4)))

    async def next(self) -> Sent | None:
        """The relay's next frame; ``None`` once it closed the connection."""
        while (got := self.frames.next()) is None:
            data = await within(self.reader.read(65536))
            if not data:
                return None
            self.frames.feed(data)
        return Sent(got.opcode, bytes(got.payload))

    async def closed_with(self) -> int | None:
        """Read until the relay closes: the code of its close frame (None if it sent none)."""
        code = None
        while (got := await self.next()) is not None:
            if got.opcode is Opcode.CLOSE and code is None:
                code = parse_close(got.payload)[0]
                self.send(Opcode.CLOSE, got.payload)  # the closing handshake: echo it
        return code


async def no_clients(relay: RelayServer) -> None:
    for _ in range(100):
        if relay.stats.clients == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{relay.stats.clients} clients left")


# --- framing errors from a client ---------------------------------------------------------------

HOSTILE = {
    "unmasked": frame(Opcode.BINARY, encode(Join(rid=RID))),
    "bad opcode": bytes((0x83, 0x80)) + os.urandom(4),
    "reserved bit": bytes((0xC2, 0x81)) + os.urandom(4) + b"x",
    "long ping": bytes((0x89, 0xFE, 0, 200)) + os.urandom(4) + bytes(200),
    "lone continuation": bytes((0x80, 0x81)) + os.urandom(4) + b"x",
}


@pytest.mark.parametrize("wire", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_framing_error_is_answered_1002_and_drops_only_its_sender(
    stack: AsyncExitStack, wire: bytes
) -> None:
    relay = await relay_with(stack)
    a, b = RelayClient(f"ws://127.0.0.1:{relay.port}"), RelayClient(f"ws://127.0.0.1:{relay.port}")
    for client in (a, b):
        await client.connect()
        stack.push_async_callback(client.close)
        await client.join(RID)
    a_end, b_end = await within(a.accept()), await within(b.accept())
    rogue = await Raw.open(stack, relay)
    rogue.writer.write(wire)
    assert await rogue.closed_with() == CloseCode.PROTOCOL_ERROR
    await a_end.write(b"unaffected")
    assert await within(b_end.read()) == b"unaffected"
    assert relay.stats.clients == 2


async def test_an_announced_huge_frame_is_answered_1009_at_once(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack)
    rogue = await Raw.open(stack, relay)
    rogue.writer.write(bytes((0x82, 0xFF)) + (2**62).to_bytes(8, "big") + os.urandom(4))
    assert await within(rogue.closed_with(), 2.0) == CloseCode.MESSAGE_TOO_BIG
    await no_clients(relay)


async def test_a_truncated_frame_then_eof_leaves_nothing(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack)
    rogue = await Raw.open(stack, relay)
    rogue.writer.write(frame(Opcode.BINARY, encode(Join(rid=RID)), mask=os.urandom(4))[:20])
    rogue.writer.write_eof()
    assert await rogue.closed_with() is None
    await no_clients(relay)


async def test_a_fragmented_message_with_a_ping_inside_is_one_message(
    stack: AsyncExitStack,
) -> None:
    relay = await relay_with(stack)
    first, rogue = await Raw.open(stack, relay), await Raw.open(stack, relay)
    first.send(Opcode.BINARY, encode(Join(rid=RID)))
    join = encode(Join(rid=RID))
    mask = os.urandom(4)
    rogue.writer.write(bytes((frame(Opcode.BINARY, join[:100], mask=mask)[0] & 0x7F,)))
    rogue.writer.write(frame(Opcode.BINARY, join[:100], mask=mask)[1:])
    rogue.send(Opcode.PING, b"inside")
    rogue.writer.write(frame(Opcode.CONTINUATION, join[100:], mask=mask))
    assert await rogue.next() == Sent(Opcode.PONG, b"inside")
    got = await rogue.next()
    assert got is not None and isinstance(decode(got.payload, from_client=False), Paired)


async def test_text_is_malformed(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack)
    rogue = await Raw.open(stack, relay)
    rogue.send(Opcode.TEXT, b"hello")
    got = await rogue.next()
    assert got is not None and decode(got.payload, from_client=False) == Error(
        code=ErrorCode.MALFORMED
    )
    assert await rogue.closed_with() == CloseCode.POLICY_VIOLATION


# --- pings, keepalive, closing --------------------------------------------------------------------


async def test_a_ping_flood_from_a_client_that_does_not_read_is_throttled(
    stack: AsyncExitStack,
) -> None:
    """The relay answers pings only as fast as the client takes the pongs: once its buffer
    to the client is full it stops reading that client, so the flood stalls in TCP."""
    relay = await relay_with(stack)
    rogue = await Raw.open(stack, relay)
    ping = frame(Opcode.PING, bytes(125), mask=os.urandom(4))
    burst, written = ping * 1000, 0
    while written < 200_000_000:
        rogue.writer.write(burst)
        try:
            await asyncio.wait_for(rogue.writer.drain(), 0.5)
        except TimeoutError:
            break
        written += len(burst)
    assert written < 64_000_000, "the relay kept reading a client that does not read"
    a, b = RelayClient(f"ws://127.0.0.1:{relay.port}"), RelayClient(f"ws://127.0.0.1:{relay.port}")
    for client in (a, b):  # everybody else is served meanwhile
        await client.connect()
        stack.push_async_callback(client.close)
        await client.join(RID)
    a_end, b_end = await within(a.accept()), await within(b.accept())
    await a_end.write(b"still served")
    assert await within(b_end.read()) == b"still served"
    pong = await rogue.next()  # and the flooder, once it reads, gets its pongs
    assert pong == Sent(Opcode.PONG, bytes(125))


async def test_the_keepalive_drops_a_client_that_never_answers(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack, RelayLimits(ping_interval=0.1, ping_timeout=0.2))
    answering, silent = await Raw.open(stack, relay), await Raw.open(stack, relay)
    silent.writer.write(b"")  # it reads nothing and sends nothing

    async def answer() -> None:
        while (got := await answering.next()) is not None:
            if got.opcode is Opcode.PING:
                answering.send(Opcode.PONG, got.payload)

    answers = asyncio.ensure_future(answer())
    try:
        await asyncio.sleep(0.8)
        assert relay.stats.clients == 1  # the silent one is gone, the answering one stays
    finally:
        answers.cancel()
    got = await silent.next()
    assert got is not None and got.opcode is Opcode.PING


async def test_the_closing_handshake_both_ways(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack)
    rogue = await Raw.open(stack, relay)
    rogue.send(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"done")
    assert await rogue.closed_with() == 1000  # echoed, then the relay closed TCP
    other = await Raw.open(stack, relay)
    other.send(Opcode.CLOSE, (3001).to_bytes(2, "big"))  # an application's own code
    assert await other.closed_with() == 3001
    client = RelayClient(f"ws://127.0.0.1:{relay.port}")
    await client.connect()
    await within(client.close())  # the relay answered our close frame
    await no_clients(relay)


async def test_not_a_websocket_request_is_refused(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    stack.callback(writer.transport.abort)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await within(reader.read())
    assert answer.startswith(b"HTTP/1.1 4")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    stack.callback(writer.transport.abort)
    writer.write(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20_000)  # a head that never ends
    assert await within(reader.read()) == b""
    await no_clients(relay)


# --- the client against a hostile relay -----------------------------------------------------------

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fake_relay(stack: AsyncExitStack, then: bytes, tls: ssl.SSLContext | None = None) -> str:
    """A server that accepts the opening handshake and then sends ``then``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            + then
        )
        await reader.read(1)  # the client's close frame (or its end)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    stack.push_async_callback(server.wait_closed)
    stack.callback(server.close)
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


BAD_RELAY = {
    "masked": frame(Opcode.BINARY, encode(Error(code=ErrorCode.IDLE)), mask=os.urandom(4)),
    "text": frame(Opcode.TEXT, b"hi"),
    "huge": bytes((0x82, 0x7F)) + (2**40).to_bytes(8, "big"),
    "not a relay message": frame(Opcode.BINARY, b"garbage"),
    "a client's message": frame(Opcode.BINARY, encode(Join(rid=RID))),
}


@pytest.mark.parametrize("then", BAD_RELAY.values(), ids=BAD_RELAY.keys())
async def test_the_client_drops_a_relay_that_breaks_the_rules(
    stack: AsyncExitStack, then: bytes
) -> None:
    client = RelayClient(await fake_relay(stack, then))
    await within(client.connect())
    with pytest.raises(ConnectionResetError):
        await within(client.accept(), 4.0)
    await within(client.close())


async def test_the_client_reads_data_sent_with_the_handshake_answer(
    stack: AsyncExitStack,
) -> None:
    paired = encode(Paired(rid=RID, channel=1, initiator=True))
    data = encode(Data(channel=1, payload=b"early"))
    client = RelayClient(
        await fake_relay(stack, frame(Opcode.BINARY, paired) + frame(Opcode.BINARY, data))
    )
    await within(client.connect())
    stack.push_async_callback(client.close)
    channel = await within(client.accept())
    assert channel.initiator and await within(channel.read()) == b"early"


# --- the connection on its own: timers and a handler's bug ----------------------------------------


class Buggy:
    """A handler with a bug in its message path."""

    closed = False

    def ws_message(self, data: bytes | memoryview) -> None:
        raise KeyError("a bug")

    def ws_text(self) -> None:
        pass

    def ws_closed(self) -> None:
        self.closed = True


async def ws_server(
    stack: AsyncExitStack, settings: WsSettings, conns: list[WsConnection], handler: Buggy
) -> int:
    def admit(conn: WsConnection, request: object) -> Buggy:
        return handler

    def make() -> WsConnection:
        conns.append(WsConnection(settings, on_request=admit))
        return conns[-1]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    stack.push_async_callback(server.wait_closed)
    stack.callback(server.close)
    return int(server.sockets[0].getsockname()[1])


async def test_a_handler_bug_drops_its_connection_and_is_kept_for_the_owner(
    stack: AsyncExitStack,
) -> None:
    conns: list[WsConnection] = []
    handler = Buggy()
    port = await ws_server(stack, WsSettings(max_size=1024), conns, handler)
    client = RelayClient(f"ws://127.0.0.1:{port}")
    await within(client.connect())
    await client.join(RID)  # a binary message: the handler raises
    with pytest.raises(ConnectionResetError):
        await within(client.accept())
    await within(client.close())
    await within(conns[0].wait_closed())
    assert isinstance(conns[0].failure, KeyError) and handler.closed


async def test_a_client_that_never_opens_is_dropped_after_the_open_timeout(
    stack: AsyncExitStack,
) -> None:
    conns: list[WsConnection] = []
    port = await ws_server(stack, WsSettings(max_size=1024, open_timeout=0.2), conns, Buggy())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stack.callback(writer.transport.abort)
    writer.write(b"GET / HTTP/1.1\r\n")  # and nothing more
    assert await within(reader.read(), 2.0) == b""


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test relay")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_a_wss_relay_is_reached_over_verified_tls(
    stack: AsyncExitStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the client's default context trusts it
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    paired = encode(Paired(rid=RID, channel=1, initiator=False))
    data = encode(Data(channel=1, payload=b"over tls"))
    url = await fake_relay(
        stack, frame(Opcode.BINARY, paired) + frame(Opcode.BINARY, data), tls=server_tls
    )
    client = RelayClient(url.replace("ws://", "wss://"))
    await within(client.connect())
    stack.push_async_callback(client.close)
    channel = await within(client.accept())
    assert await within(channel.read()) == b"over tls"
    monkeypatch.delenv("SSL_CERT_FILE")  # a certificate nobody vouches for is refused
    stranger = RelayClient(url.replace("ws://", "wss://"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await within(stranger.connect())


async def test_stop_drops_a_handshake_in_progress(stack: AsyncExitStack) -> None:
    relay = RelayServer()
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    stack.callback(writer.transport.abort)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head not finished yet
    await asyncio.sleep(0.05)
    await within(relay.stop())
    assert await within(reader.read(), 1.0) == b""  # dropped at once, not after 10 s
    assert relay.stats.clients == 0
