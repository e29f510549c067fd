"""One connection to a peer: the Noise handshake, then a record channel (sync session or
invite exchange), over any :class:`~microsync.net.stream.Stream`.

The sans-IO machines (:class:`~microsync.protocol.handshake.Handshake`,
:class:`~microsync.protocol.session.SyncSession`) decide everything; this module only moves
bytes, keeps time and turns failures into a closed connection with a typed error. A peer that
sends garbage, stalls, or drops the connection never takes the process down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from microsync.clock import Clock, now_ms
from microsync.crypto.random import Rng
from microsync.errors import HandshakeError, MicrosyncError, RemoteProtocolError
from microsync.feed.entry import GroupId
from microsync.identity import DeviceCertificate, DeviceId, LocalIdentity
from microsync.net.stream import Stream
from microsync.protocol.framing import SecureChannel
from microsync.protocol.handshake import Handshake, Purpose
from microsync.protocol.messages import Item
from microsync.protocol.session import SyncHost, SyncOptions, SyncSession

__all__ = ["HANDSHAKE_TIMEOUT", "SecureStream", "SyncConnection", "handshake"]

log = logging.getLogger("microsync.net")

HANDSHAKE_TIMEOUT: Final = 10.0
"""Seconds a peer gets to complete the handshake."""
MAX_OUTBOX_BYTES: Final = 128 * 1024 * 1024
"""Answers (bytes) allowed to wait for a peer that does not read them; then it is dropped."""


class SecureStream:
    """Records over a finished handshake: ``send(record)``, ``await receive()``."""

    def __init__(
        self,
        stream: Stream,
        channel: SecureChannel,
        peer: DeviceCertificate,
        purpose: Purpose,
        early: list[bytes],
    ) -> None:
        self.stream = stream
        self.channel = channel
        self.peer = peer
        self.purpose = purpose
        self._records = list(early)
        self._unsent = b""  # the end of the handshake, sent with the first record

    @property
    def peer_device(self) -> DeviceId:
        return self.peer.device

    def push_back(self, record: bytes) -> None:
        """Put a received record back, to be received again first (a handover)."""
        self._records.insert(0, record)

    async def send(self, record: bytes) -> None:
        data = self.channel.encrypt_record(record)
        if self._unsent:  # the end of the handshake goes first, in the same write
            data, self._unsent = self._unsent + data, b""
        await self.stream.write(data)

    async def _flush_handshake(self) -> None:
        if self._unsent:
            data, self._unsent = self._unsent, b""
            await self.stream.write(data)

    async def receive(self) -> bytes | None:
        """The next record, or ``None`` when the peer closed the stream cleanly.
        :class:`RemoteProtocolError` for a stream cut inside a record, a tampered frame..."""
        await self._flush_handshake()  # the peer waits for it before it sends anything
        while not self._records:
            data = await self.stream.read()
            if not data:
                self.channel.receive_eof()
                return None
            self._records.extend(self.channel.feed(data))
        return self._records.pop(0)

    async def close(self) -> None:
        self.channel.close()
        await self.stream.close()


async def handshake(
    stream: Stream,
    identity: LocalIdentity,
    *,
    initiator: bool,
    purpose: Purpose = Purpose.SYNC,
    accept_purposes: tuple[Purpose, ...] = (Purpose.SYNC,),
    rng: Rng,
    accept: Callable[[DeviceCertificate], bool] | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    coalesce: bool = False,
    clock: Clock = now_ms,
) -> SecureStream:
    """Run the microsync handshake over ``stream`` (closing it on failure).

    With ``coalesce``, a responder keeps its last handshake message (its certificate chain)
    and sends it with the first record, or before its first receive: one write fewer, and the
    peer gets the chain and the first record together (saving it a round trip). The caller
    must then send or receive right away. ``clock`` is the time the peer's certificates are
    checked against (the device's clock; a test's fake one).

    Raises :class:`HandshakeError` for a peer that fails it (bad or foreign certificates, a
    downgrade, tampering, itself), that stalls past ``timeout`` or that hangs up.
    """
    identity = identity.current(clock())  # a certificate past half its life: issued again
    if initiator:
        hs = Handshake.initiator(identity, purpose, now=clock(), rng=rng, accept=accept)
    else:
        hs = Handshake.responder(identity, accept_purposes, now=clock(), rng=rng, accept=accept)

    last = b""

    async def run() -> None:
        nonlocal last
        await stream.write(hs.bytes_to_send())
        while not hs.done:
            data = await stream.read()
            if not data:
                raise HandshakeError("the peer closed the connection during the handshake")
            hs.receive(data)
            out = hs.bytes_to_send()
            if out and hs.done and coalesce:
                last = out  # the responder's chain: it leaves with the first record
            elif out:
                await stream.write(out)

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        await stream.close()
        raise HandshakeError("the peer did not complete the handshake in time") from None
    except (MicrosyncError, ConnectionError, OSError) as exc:
        await stream.close()
        if isinstance(exc, HandshakeError):
            raise
        raise HandshakeError(f"handshake failed: {type(exc).__name__}") from None
    channel = hs.transport
    assert hs.peer is not None and hs.purpose is not None
    secure = SecureStream(stream, channel, hs.peer, hs.purpose, channel.feed(b""))
    secure._unsent = last
    return secure


class SyncConnection:
    """A sync session with one peer, kept running (live) until closed.

    ``notify(group)`` when the device has new entries of a group; ``send_ephemeral`` for
    presence and location; ``synced`` is set once every shared group is up to date. Its
    timers (keepalive, idle timeout, rate limits) run on this machine's clock: they measure
    the connection, not the content (a test's fake clock may jump hours).
    """

    def __init__(
        self,
        secure: SecureStream,
        host: SyncHost,
        *,
        our_device: DeviceId,
        initiator: bool,
        rng: Rng,
        options: SyncOptions | None = None,
        on_synced: Callable[[SyncConnection], None] | None = None,
    ) -> None:
        self.secure = secure
        self.session = SyncSession(
            host,
            our_device=our_device,
            peer_device=secure.peer_device,
            channel_binding=secure.channel.handshake_hash,
            initiator=initiator,
            rng=rng,
            options=options,
        )
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.error: BaseException | None = None
        self._on_synced = on_synced
        self._initiator = initiator
        self._outbox: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self._queued = 0  # bytes waiting in the outbox
        self._task: asyncio.Task[None] | None = None

    def initiator_device(self, ours: DeviceId) -> DeviceId:
        """The device that dialled this connection."""
        return ours if self._initiator else self.secure.peer_device

    @property
    def peer(self) -> DeviceCertificate:
        return self.secure.peer

    @property
    def peer_address(self) -> str:
        return self.secure.stream.peer

    def start(self) -> asyncio.Task[None]:
        """Run the connection in a new task (see :meth:`run`), kept here for :meth:`close`."""
        self._task = asyncio.create_task(self.run(), name=f"sync {self.peer_address}")
        return self._task

    async def wait(self) -> None:
        await self.closed.wait()

    def notify(self, group: GroupId, fresh: Sequence[Item] = ()) -> None:
        """New entries of ``group`` here: push what the peer lacks (``fresh``: see
        :meth:`SyncSession.local_update`)."""
        if not self.session.closed:
            self._outbox.put_nowait(self.session.local_update(group, now_ms(), fresh))

    def send_ephemeral(self, group: GroupId, data: bytes) -> None:
        """Presence or location for the peer; dropped (a lost heartbeat) when the session
        refuses it (the peer does not share ``group``, or its rate limit is reached)."""
        if self.session.closed:
            return
        try:
            records = self.session.send_ephemeral(group, data, now_ms())
        except MicrosyncError as exc:
            log.debug("ephemeral message not sent: %s", type(exc).__name__)
            return
        self._outbox.put_nowait(records)

    async def close(self) -> None:
        """Say goodbye and close (idempotent): the goodbye gets 2 seconds to leave, then the
        connection's task is cancelled (and waited for)."""
        if not self.session.closed:
            self._outbox.put_nowait(self.session.close(now_ms()))
        task = self._task
        if task is not None and not task.done():
            try:
                _, pending = await asyncio.wait({task}, timeout=2.0)
            finally:
                if not task.done():
                    task.cancel()
            if pending:
                await asyncio.wait({task})
        await self.secure.close()
        self.closed.set()

    async def run(self) -> None:
        """Run the session until it ends: one task group, a reader and a writer; the first to
        fail stops the other. A peer that misbehaves or goes away ends it with ``error`` set
        (a typed :class:`MicrosyncError`, :class:`ConnectionError` or :class:`OSError`); any
        other exception is a bug and propagates (in an :class:`ExceptionGroup`, as the task group
        raised it). ``closed`` is set either way."""
        try:
            await self._send(self.session.start(now_ms()))
            await self._run_tasks()
        except (MicrosyncError, ConnectionError, OSError) as exc:
            self.error = exc
            log.info("sync with %s ended: %s", self.peer_address, type(exc).__name__)
        finally:
            if self.session.error is not None and self.error is None:
                self.error = self.session.error
            await self.secure.close()
            self.closed.set()

    async def _run_tasks(self) -> None:
        """The reader and the writer in one task group; an error of theirs is re-raised as is
        (the reader's first: a cut record closes the channel under the writer too)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(self._read_loop(), name="sync reader")
                writer = tasks.create_task(self._write_loop(), name="sync writer")
                # the writer ends the session (Bye or error sent): the reader has no more to do
                writer.add_done_callback(lambda _: reader.cancel())
        except BaseExceptionGroup as group:
            expected, unexpected = group.split(_PEER_ERRORS)
            if unexpected is not None or expected is None:
                raise
            failed = reader.exception() if reader.done() and not reader.cancelled() else None
            raise (failed or _first(expected)) from None

    async def _send(self, records: list[bytes]) -> None:
        for record in records:
            await self.secure.send(record)
            self._queued = max(0, self._queued - len(record))
        self._check_synced()

    def _check_synced(self) -> None:
        if self.session.synced and not self.synced.is_set():
            self.synced.set()
            if self._on_synced is not None:
                self._on_synced(self)

    async def _read_loop(self) -> None:
        while not self.session.closed:
            record = await self.secure.receive()
            if record is None:
                raise ConnectionResetError("the peer closed the connection")
            answers = self.session.receive(record, now_ms())
            self._queued += sum(len(a) for a in answers)
            self._outbox.put_nowait(answers)
            if self._queued > MAX_OUTBOX_BYTES:
                # an honest peer reads what it asked for: its windows (entry credit, chunk
                # requests in flight) keep what waits here far below this
                raise RemoteProtocolError("the peer asks for more than it reads")

    async def _write_loop(self) -> None:
        """Send what the reader and the device queue, and the session's timeouts, until the
        session is closed (its Bye or error sent)."""
        while True:
            deadline = self.session.next_deadline(now_ms())
            if deadline is None:  # closed: by the reader, or below (Bye or error sent)
                while not self._outbox.empty():
                    await self._send(self._outbox.get_nowait())
                return
            try:
                async with asyncio.timeout(max(0.0, (deadline - now_ms()) / 1000)):
                    records = await self._outbox.get()
            except TimeoutError:
                records = self.session.handle_timeout(now_ms())
            await self._send(records)
            if self.session.closed:
                while not self._outbox.empty():
                    await self._send(self._outbox.get_nowait())
                if self.session.error is not None:
                    raise RemoteProtocolError(str(self.session.error))
                return


_PEER_ERRORS: Final = (MicrosyncError, ConnectionError, OSError)
"""What a peer (or the network) can make a connection's task raise; anything else is a bug."""


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error in ``group`` (groups inside it opened)."""
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error
