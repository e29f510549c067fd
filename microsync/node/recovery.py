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
the person id, and every member's device knows the person ids in its groups. A member's device
meets there for the persons it may take back (another member who registered a recovery key),
bounded: :func:`recoverable_persons` (groups of up to :data:`SMALL_GROUP` members, the admins
of larger ones, :data:`MAX_RECOVERY_PERSONS` at most; on the LAN :data:`MAX_RECOVERY_TAGS` a
time bucket, in turns).
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
from microsync.group.invite.messages import RecoverHello
from microsync.group.invite.payloads import JoinRequest
from microsync.group.ops import Role
from microsync.group.recovery import RecoveryGuest, RecoveryResponse, readmit, recoverable
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
    "recoverable_persons",
    "recovering",
    "recovery_callback",
    "recovery_rendezvous",
    "recovery_rendezvous_ids",
    "recovery_tag",
    "recovery_tags",
    "rotate",
]

log = logging.getLogger("microsync.node")

RECOVERING_KEY: Final = "recovering"
"""Profile meta key: ``b"1"`` from :meth:`Device.restore` until a recovery gave groups back."""


SMALL_GROUP: Final = 32
"""In a group of at most this many members every member's device serves recoveries of every
other member; in a larger one, of its admins only."""
MAX_RECOVERY_PERSONS: Final = 16
"""At most this many persons' rendezvous ids a device joins at its relay (a relay admits 64
ids per client by default, its groups' and invites' included). Which ones: an order of its
own per device (``RECOVERY_SERVE_ORDER``), so the members of a group serve different ones."""
MAX_RECOVERY_TAGS: Final = 8
"""At most this many recovery tags a device announces on the LAN in one time bucket (its
groups' tags come first: an announcement holds 16)."""


def recovery_rendezvous(person: PersonId) -> bytes:
    """The relay rendezvous id where a restored device of ``person`` meets members."""
    return derive_key(labels.RECOVERY_RENDEZVOUS, person)


def recovery_tag(person: PersonId, bucket: int) -> bytes:
    """The 8-byte LAN discovery tag under which restored devices of ``person`` find a member's
    device in time bucket ``bucket`` (:mod:`microsync.net.discovery`)."""
    return derive_key(labels.RECOVERY_DISCOVERY_TAG, person, bucket.to_bytes(8, "big"))[:8]


def recovery_tags(
    device: Device, bucket: int, *, looking: bool, room: int = MAX_RECOVERY_TAGS
) -> list[bytes]:
    """Besides its groups' tags, what ``device`` announces on the LAN (``room`` tags at most,
    of the persons it may take back: a different slice each time bucket, so each is announced
    in turn) or, ``looking``, looks for (its own person's, while it is recovering: it never
    announces that one)."""
    if looking:
        return [recovery_tag(device.person_id, bucket)] if recovering(device) else []
    persons = rotate(sorted(recoverable_persons(device)), bucket, min(room, MAX_RECOVERY_TAGS))
    return [recovery_tag(person, bucket) for person in persons]


def rotate(persons: list[PersonId], bucket: int, room: int) -> list[PersonId]:
    """``room`` of ``persons`` for time bucket ``bucket``: consecutive slices in turn."""
    if room <= 0 or not persons:
        return []
    start = bucket * room % len(persons)
    return (persons[start:] + persons[:start])[:room]


def recovering(device: Device) -> bool:
    """Restored from the words and in no group yet: its syncs start with a recovery."""
    return bool(device._store.get_meta(RECOVERING_KEY)) and not device.groups()


def recovery_rendezvous_ids(device: Device) -> set[bytes]:
    """Where ``device`` meets restored devices at its relay: one id per person it may take
    back (:func:`recoverable_persons`)."""
    return {recovery_rendezvous(person) for person in recoverable_persons(device)}


def recoverable_persons(device: Device) -> set[PersonId]:
    """The persons ``device`` serves recoveries for at a relay or on the LAN: the other
    members with a registered recovery key of its groups of at most
    :data:`SMALL_GROUP` members, and the admins of its larger groups, at most
    :data:`MAX_RECOVERY_PERSONS` of them (the first in this device's own order, so that
    another member serves others). A person left out recovers by address (``at=``)."""
    small, admins = set(), set()
    for group in device.groups():
        state = group._replica.state
        found = recoverable(group._replica)
        if len(state.members) <= SMALL_GROUP:
            small |= found
        else:
            admins |= {p for p in found if state.members[p].role is Role.ADMIN}
    mine = device.id
    ranked = sorted(small | admins, key=lambda p: derive_key(labels.RECOVERY_SERVE_ORDER, p, mine))
    return set(ranked[:MAX_RECOVERY_PERSONS])


def member_recovery(device: Device, secure: SecureStream) -> Callable[[RecoverHello], bytes]:
    """The ``recover`` callback of a pairing host on ``secure``: bound to its peer and its
    handshake hash, so a proof from another session never verifies."""
    return recovery_callback(device, secure.peer, secure.channel.handshake_hash)


def recovery_callback(
    device: Device, peer: DeviceCertificate, handshake_hash: bytes
) -> Callable[[RecoverHello], bytes]:
    """The ``recover`` callback for a session with ``peer`` whose handshake hash is given."""

    def recover(hello: RecoverHello) -> bytes:
        replicas = {gid: g._replica for gid, g in device._groups.items()}
        try:
            with device._store.transaction():
                answer = readmit(replicas, peer, handshake_hash, hello, device.clock)
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
    certificate = device._identity.recovery_certificate
    if person_key is None or certificate is None:
        raise NotAMember("only a device restored from the words can recover the person")
    secure = await _reach(device, at, relay, timeout)
    try:
        request = JoinRequest.of(device._identity).to_bytes()
        guest = RecoveryGuest(request, person_key, secure.channel.handshake_hash, certificate)
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
        return await handshake(
            stream, identity, initiator=True, purpose=Purpose.INVITE, rng=rng, clock=device.clock
        )
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
        clock=device.clock,
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
