"""A running device's link to its relay: stay connected (with backoff), meet members under the
current rendezvous ids, and hand every channel the relay opens to the runtime.

Theory of operation: the ids change every :data:`RELAY_BUCKET_SECONDS` of the device's clock
and with every key rotation, and only members can compute them (one per group, from its current
epoch key); the link reconnects when the bucket changes, so the relay cannot link a connection
across buckets, and joins a new id at once after a rotation. Each channel is one child task of
the device's task group; the accept loop is a child of the connection it accepts on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from microsync.errors import HandshakeError, MicrosyncError
from microsync.group.invite import invite_rendezvous
from microsync.group.keys import rendezvous_id
from microsync.net.connection import handshake
from microsync.net.relay_client import RelayChannel, RelayClient
from microsync.node.recovery import recovery_rendezvous_ids
from microsync.protocol.handshake import Purpose

if TYPE_CHECKING:
    from microsync.node.runtime import Runtime

__all__ = ["RELAY_BUCKET_SECONDS", "RELAY_RECHECK", "RelayLink"]

log = logging.getLogger("microsync.node")

RELAY_BUCKET_SECONDS: Final = 3600
"""Rendezvous ids at the relay change every hour (and with every key rotation)."""
RELAY_RECHECK: Final = 5.0
BACKOFF_START: Final = 0.5
BACKOFF_MAX: Final = 30.0
RELAY_ERRORS: Final = (OSError, ConnectionError, MicrosyncError, TimeoutError)
"""What a relay connection may fail with: it is retried after a backoff."""


class RelayLink:
    """The link of ``runtime``'s device to the relay at ``url``."""

    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.url = url
        self.connected = False  # the WebSocket to the relay is up now

    def _bucket(self) -> int:
        return self.runtime.clock() // 1000 // RELAY_BUCKET_SECONDS

    def rendezvous_ids(self) -> set[bytes]:
        """One id per group: derived from its current epoch key and the time bucket."""
        bucket = self._bucket()
        found = set()
        for group in self.runtime.device.groups():
            key = group._replica.current_epoch_key()
            if key is not None:
                found.add(rendezvous_id(key, bucket))
        return found

    def invite_ids(self) -> set[bytes]:
        """Rendezvous ids of this device's open invites that name a relay, and those where
        restored devices of persons it may take back meet it (:mod:`microsync.node.recovery`)."""
        book = self.runtime.device._book
        found = {invite_rendezvous(i.secret) for i in book.relay_invites(self.runtime.clock())}
        return found | recovery_rendezvous_ids(self.runtime.device)

    async def run(self) -> None:
        """Stay connected until the runtime stops (backoff on failure)."""
        delay = BACKOFF_START
        while not self.runtime.stopping:
            try:
                await self._connected_once()
                delay = BACKOFF_START
                continue
            except RELAY_ERRORS as exc:
                log.info("relay %s: %s", self.url, exc)
            if self.runtime.stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connected_once(self) -> None:
        """One connection to the relay, until it drops, the bucket changes or the runtime
        stops."""
        bucket = self._bucket()
        async with RelayClient(self.url) as client, self._up():
            joined = self.rendezvous_ids() | self.invite_ids()
            for rid in sorted(joined):
                await client.join(rid)
            async with asyncio.TaskGroup() as tasks:
                accepting = tasks.create_task(self._accept(client), name=f"accept at {self.url}")
                while not self.runtime.stopping and not accepting.done():
                    await asyncio.wait({accepting}, timeout=RELAY_RECHECK)
                    if self._bucket() != bucket:
                        break  # a new bucket: reconnect with the new ids
                    fresh = (self.rendezvous_ids() | self.invite_ids()) - joined
                    for rid in sorted(fresh):  # a rotation: meet under the new id too
                        await client.join(rid)
                    joined |= fresh
                accepting.cancel()

    @contextlib.asynccontextmanager
    async def _up(self) -> AsyncIterator[None]:
        """While inside, :attr:`connected` is true."""
        self.connected = True
        try:
            yield
        finally:
            self.connected = False

    async def _accept(self, client: RelayClient) -> None:
        """Hand every channel to the runtime until the relay connection ends."""
        while True:
            try:
                channel = await client.accept()
            except RELAY_ERRORS as exc:
                log.info("relay %s: %s", self.url, exc)
                return
            self.runtime.spawn(self._session(channel), "relay channel")

    async def _session(self, channel: RelayChannel) -> None:
        """A member met through the relay: a sync session; or, under the rendezvous id of one
        of this device's invites, a guest redeeming it (whichever side the relay made
        initiator)."""
        runtime = self.runtime
        invite = channel.rid in self.invite_ids()
        try:
            secure = await handshake(
                channel,
                runtime.device._identity,
                initiator=channel.initiator,
                purpose=Purpose.INVITE if invite else Purpose.SYNC,
                accept_purposes=(Purpose.INVITE,) if invite else (Purpose.SYNC,),
                rng=runtime.rng,
                clock=runtime.clock,
            )
        except HandshakeError as exc:
            log.info("handshake through the relay failed: %s", exc)
            return
        if secure.purpose is Purpose.INVITE:
            await runtime.serve_invite(secure)
            return
        connection = runtime.open_connection(secure, initiator=channel.initiator)
        await connection.wait()
