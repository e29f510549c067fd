"""Recovery from the words over the network: a restored device finds a member's device, proves
its person, is taken back into that person's groups, and syncs them on the same connection.

Theory of operation. :meth:`~microsync.node.Device.restore` marks the new profile as
*recovering*. While it is recovering and holds no group, its first :meth:`sync_with`,
:meth:`sync_via_relay` or :meth:`start` (with peers or a relay) first runs a recovery: an
``invite``-purpose connection on which it sends a
:class:`~microsync.group.invite.RecoverHello` (:mod:`microsync.group.recovery` has the
proof and the rule), stores the id of each add as its welcome in that group (its proof of
membership before it holds a key, as for a linked device), and goes on with a sync session on
the same connection. :meth:`Device.recover` runs one on demand (to pick up groups a second
member's device is in).

How a restored device finds a member's device: by address (``at="host:port"``), or at a relay
under a rendezvous id derived from the *person id* (``RECOVERY_RENDEZVOUS``): the words give
the person id and nothing else, and every member's device knows the person ids in its groups.
A member's device meets there only for persons with no device left in one of its groups (the
only ones it may take back), so normally it joins no such id at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from microsync.crypto import derive_key, labels
from microsync.errors import (
    InviteError,
    InviteRefused,
    MicrosyncError,
    NotAMember,
    PeerUnreachable,
)
from microsync.group.invite.payloads import JoinRequest
from microsync.group.recovery import RecoveryGuest, RecoveryResponse, readmit
from microsync.group.rules import may_add_device
from microsync.identity import DeviceCertificate, PersonId
from microsync.net.connection import SecureStream, handshake
from microsync.net.relay_client import RelayClient
from microsync.net.stream import open_tcp
from microsync.node.addresses import split_address, why_unreachable
from microsync.node.inbound import WELCOME_PREFIX
from microsync.node.pairing import RELAY_INVITE_WAIT, OwnedChannel
from microsync.protocol.handshake import Purpose

if TYPE_CHECKING:
    from microsync.node import Device, Group

__all__ = [
    "RECOVERING_KEY",
    "hold_recovered",
    "mark_recovering",
    "member_recovery",
    "recover",
    "recover_groups",
    "recovering",
    "recovery_callback",
    "recovery_rendezvous",
    "recovery_rendezvous_ids",
    "recovery_tag",
    "recovery_tags",
]

log = logging.getLogger("microsync.node")

RECOVERING_KEY: Final = "recovering"
"""Profile meta key: ``b"1"`` from :meth:`Device.restore` until a recovery gave groups back."""


def recovery_rendezvous(person: PersonId) -> bytes:
    """The relay rendezvous id where a restored device of ``person`` meets members."""
    return derive_key(labels.RECOVERY_RENDEZVOUS, person)


def recovery_tag(person: PersonId, bucket: int) -> bytes:
    """The 8-byte LAN discovery tag under which restored devices of ``person`` find a member's
    device in time bucket ``bucket`` (:mod:`microsync.net.discovery`)."""
    return derive_key(labels.RECOVERY_DISCOVERY_TAG, person, bucket.to_bytes(8, "big"))[:8]


def recovery_tags(device: Device, bucket: int, *, looking: bool) -> list[bytes]:
    """Besides its groups' tags, what ``device`` announces on the LAN (one tag per person it
    may take back) or, ``looking``, looks for (its own person's, while it is recovering: it
    never announces that one)."""
    if looking:
        return [recovery_tag(device.person_id, bucket)] if recovering(device) else []
    return sorted(recovery_tag(person, bucket) for person in _recoverable(device))


def recovering(device: Device) -> bool:
    """Restored from the words and in no group yet: its syncs start with a recovery."""
    return bool(device._store.get_meta(RECOVERING_KEY)) and not device.groups()


def recovery_rendezvous_ids(device: Device) -> set[bytes]:
    """Where ``device`` meets restored devices at its relay: one id per person it may take
    back (a member with no device left in one of its groups)."""
    return {recovery_rendezvous(person) for person in _recoverable(device)}


def _recoverable(device: Device) -> set[PersonId]:
    """The persons ``device`` may take back: members with no device left in its groups."""
    found = set()
    for group in device.groups():
        state = group._replica.state
        mine = state.person_of(device.id)
        for person, member in state.members.items():
            if mine is not None and not member.devices and may_add_device(state, mine, person):
                found.add(person)
    return found


def member_recovery(device: Device, secure: SecureStream) -> Callable[[bytes, bytes], bytes]:
    """The ``recover`` callback of a pairing host on ``secure``: bound to its peer and its
    handshake hash, so a proof from another session never verifies."""
    return recovery_callback(device, secure.peer, secure.channel.handshake_hash)


def recovery_callback(
    device: Device, peer: DeviceCertificate, handshake_hash: bytes
) -> Callable[[bytes, bytes], bytes]:
    """The ``recover`` callback for a session with ``peer`` whose handshake hash is given."""

    def recover(request: bytes, proof: bytes) -> bytes:
        replicas = {gid: g._replica for gid, g in device._groups.items()}
        try:
            with device._store.transaction():
                answer = readmit(replicas, peer, handshake_hash, request, proof, device.clock)
        except InviteError:
            raise
        except MicrosyncError as error:
            raise InviteRefused(f"the recovery was refused: {error}") from None
        return answer.to_bytes()

    return recover


async def recover(
    device: Device, *, at: str | None, relay: str | None, timeout: float = RELAY_INVITE_WAIT
) -> RecoveryResponse:
    """Run one recovery with the member's device at ``at`` or met at ``relay``, then sync on
    the same connection (at most 30 s). :class:`RecoveryRefused` when it takes this device
    back into nothing; :class:`PeerUnreachable` when nobody answers."""
    person_key = device._identity.person_key
    if person_key is None:
        raise NotAMember("only a device holding the person key can recover the person")
    secure = await _reach(device, at, relay, timeout)
    try:
        guest = RecoveryGuest(
            JoinRequest.of(device._identity).to_bytes(), person_key, secure.channel.handshake_hash
        )
        await secure.send(guest.start())
        reply = await asyncio.wait_for(secure.receive(), 30)
        if reply is None:
            raise InviteError("the member's device closed the connection")
        answer = guest.receive(reply)
        hold_recovered(device, answer)
    except BaseException:
        await secure.close()
        raise
    await device._network.sync_after_pairing(secure)
    return answer


def hold_recovered(device: Device, answer: RecoveryResponse) -> None:
    """Hold every group ``answer`` took ``device`` back into (its welcome: the add's id);
    from then on its syncs are plain syncs (:meth:`Device.recover` still runs one)."""
    welcomes = answer.welcomes()
    with device._store.transaction():
        device._store.put_meta(RECOVERING_KEY, b"")  # done (the store keeps no deletes)
        for group_id in answer.groups:
            if device._held(group_id) is None:
                device._store.put_meta(f"{WELCOME_PREFIX}{group_id.hex()}", welcomes[group_id])
                device._adopt(group_id)


async def _reach(device: Device, at: str | None, relay: str | None, wait: float) -> SecureStream:
    identity, rng = device._identity, device.rng
    if at is not None:
        host, port = split_address(at)
        try:
            stream = await open_tcp(host, port, timeout=5)
        except (OSError, TimeoutError) as exc:
            raise PeerUnreachable(f"cannot reach {at}: {why_unreachable(exc)}") from None
        return await handshake(stream, identity, initiator=True, purpose=Purpose.INVITE, rng=rng)
    if relay is None:
        raise ValueError("a recovery needs at='host:port' or relay=URL")
    client = RelayClient(relay)
    try:
        await client.connect()
        await client.join(recovery_rendezvous(device.person_id))
        channel = await asyncio.wait_for(client.accept(), wait)
    except (OSError, ConnectionError, TimeoutError, MicrosyncError) as exc:
        await client.close()
        raise PeerUnreachable(
            f"no member's device met this person at {relay}: {why_unreachable(exc)}"
        ) from None
    return await handshake(
        OwnedChannel(channel, client),
        identity,
        initiator=channel.initiator,
        purpose=Purpose.INVITE,
        accept_purposes=(Purpose.INVITE,),
        rng=rng,
    )


def mark_recovering(device: Device) -> Device:
    """Mark a just-restored profile: its first syncs start with a recovery."""
    with device._store.transaction():
        device._store.put_meta(RECOVERING_KEY, b"1")
    return device


async def recover_groups(device: Device, *, at: str | None, relay: str | None) -> list[Group]:
    """:meth:`~microsync.node.Device.recover`: one recovery, then the groups it gave back."""
    answer = await recover(device, at=at, relay=relay)
    return [device.group(g) for g in answer.groups]


async def recover_on_start(device: Device, peers: tuple[str, ...], relay: str | None) -> None:
    """A started device that is recovering tries each kept peer, then the relay, until one
    takes it back; a refusal or an absent peer is logged (it stays recovering)."""
    tries: list[tuple[str | None, str | None]] = [(p, None) for p in peers]
    for at, via in [*tries, (None, relay)] if relay is not None else tries:
        if not recovering(device):
            return
        try:
            await recover(device, at=at, relay=via)
        except (MicrosyncError, OSError, ValueError) as exc:
            log.info("recovery through %s: %s", at or via, exc)
