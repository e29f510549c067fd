"""The guest side of redeeming an invite over the network: reach the inviter (its addresses in
turn, else its relay), run the pairing, and probe a relay before a one-shot sync through it.

The pairing itself is the sans-IO :class:`~microsync.group.invite.PairingGuest`; this module
only carries its messages."""

from __future__ import annotations

import asyncio
from typing import Final

from microsync.clock import Clock, system_clock
from microsync.crypto import Rng
from microsync.errors import InviteError, MicrosyncError, PeerUnreachable
from microsync.group.invite import InviteSecret, PairingGuest, invite_rendezvous, parse_link
from microsync.identity import LocalIdentity
from microsync.net.connection import SecureStream, handshake
from microsync.net.relay_client import RelayChannel, RelayClient
from microsync.net.stream import Stream, open_tcp
from microsync.node.addresses import split_address, why_unreachable
from microsync.protocol.handshake import Purpose

__all__ = ["RELAY_INVITE_WAIT", "OwnedChannel", "probe_relay", "reach_inviter", "run_guest"]

RELAY_INVITE_WAIT: Final = 20.0
"""Seconds a guest waits at the relay for the inviter."""


async def reach_inviter(
    link_or_code: str,
    at: str | None,
    identity: LocalIdentity,
    rng: Rng,
    relay: str | None = None,
    clock: Clock = system_clock,
) -> SecureStream:
    """A finished ``invite`` handshake with the inviter: at ``at``, at the link's addresses in
    turn, else through ``relay`` or the link's relay (under the invite's rendezvous id), its
    certificates checked at ``clock``'s time."""
    addresses: list[str] = [at] if at is not None else []
    secret: InviteSecret | None = None
    if link_or_code.startswith("microsync:"):
        link = parse_link(link_or_code)
        secret = link.secret
        if at is None:
            addresses, relay = list(link.addresses), relay or link.relay
    if not addresses and (relay is None or secret is None):
        raise ValueError("a short code needs at='host:port' (where the inviter serves)")
    errors = []
    for address in addresses:
        try:
            host, port = split_address(address)
            stream: Stream = await open_tcp(host, port, timeout=5)
        except (OSError, TimeoutError, ValueError) as exc:
            errors.append(f"{address}: {why_unreachable(exc)}")
            continue
        return await handshake(
            stream, identity, initiator=True, purpose=Purpose.INVITE, rng=rng, clock=clock
        )
    if relay is not None and secret is not None:
        client = RelayClient(relay)
        try:
            await client.connect()
            await client.join(invite_rendezvous(secret))
            channel = await asyncio.wait_for(client.accept(), RELAY_INVITE_WAIT)
        except (OSError, ConnectionError, TimeoutError) as exc:
            await client.close()
            errors.append(f"{relay}: {why_unreachable(exc)}")
        else:
            return await handshake(
                OwnedChannel(channel, client),
                identity,
                initiator=channel.initiator,
                purpose=Purpose.INVITE,
                accept_purposes=(Purpose.INVITE,),
                rng=rng,
                clock=clock,
            )
    raise PeerUnreachable(
        "could not reach the inviter (is their serve running?): "
        + ("; ".join(errors) or "no address")
    )


async def probe_relay(url: str, timeout: float) -> None:
    """:class:`PeerUnreachable` unless the relay at ``url`` accepts a connection."""
    client = RelayClient(url)
    try:
        await asyncio.wait_for(client.connect(), timeout)
    except (OSError, ConnectionError, TimeoutError, MicrosyncError) as exc:
        raise PeerUnreachable(f"cannot reach the relay {url}: {why_unreachable(exc)}") from None
    finally:
        await client.close()


class OwnedChannel:
    """A relay channel that closes its own relay connection when it is closed (a guest's
    one-off connection to the relay)."""

    def __init__(self, channel: RelayChannel, client: RelayClient) -> None:
        self._channel, self._client = channel, client

    @property
    def peer(self) -> str:
        return self._channel.peer

    async def read(self) -> bytes:
        return await self._channel.read()

    async def write(self, data: bytes) -> None:
        await self._channel.write(data)

    async def close(self) -> None:
        await self._channel.close()
        await self._client.close()


async def run_guest(secure: SecureStream, guest: PairingGuest) -> bytes:
    """Run the guest side of a pairing over ``secure``; the inviter's final response."""
    message: bytes | None = guest.start()
    while message is not None:
        await secure.send(message)
        reply = await asyncio.wait_for(secure.receive(), 30)
        if reply is None:
            raise InviteError("the inviter closed the connection")
        message = guest.receive(reply)
    return guest.response
