"""Recovery from the words, the group side: a device restored from the person key asks a
member's device to take it back into every group where its person has no device left. Sans-IO.

Theory of operation. The restored device (the guest) holds the person key and no group. On an
``invite``-purpose connection it sends a :class:`~microsync.group.invite.RecoverHello`: a join
request naming itself (its certificate, the one the handshake just proved, and its signed
prekey) and a *proof*: the person key's signature, under ``RECOVERY_PROOF``, over the
handshake hash of this very session. A proof is good for one session only: replayed on another
connection it signs the wrong hash. The member's device (the host) checks the proof and, in
each group it is a member of, appends an ``ADD_DEVICE`` for the device where the group's rule
allows it (:func:`microsync.group.rules.may_add_device`: the person is a member with no device
left), wrapping every key it holds exactly as a link does. It answers with a
:class:`RecoveryResponse`: the groups and the id of each add (the device's welcome there),
and the groups where the person still has a device (link from that device instead). Nothing
to give back at all is :class:`~microsync.errors.RecoveryRefused`.

Invariants: the device taken back is the handshake's peer (never a device named only in the
request); the rule, not this module, decides who may be added, so a member's device that
skips these checks still cannot get a device past the group's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.crypto import SigningKey, VerifyKey, labels
from microsync.encoding import expect_bytes, expect_int, expect_list
from microsync.errors import (
    BadSignature,
    DecodeError,
    InviteProtocolError,
    InviteRefused,
    LocalProtocolError,
    MicrosyncError,
    NotAMember,
    RecoveryRefused,
    StillHasDevices,
)
from microsync.feed.entry import EntryId, GroupId
from microsync.group.invite.messages import Abort, RecoverAdmit, RecoverHello, decode_message
from microsync.group.invite.payloads import JoinRequest
from microsync.group.replica import GroupReplica
from microsync.group.rules import may_add_device
from microsync.identity import DeviceCertificate, PersonId

__all__ = [
    "RecoveryGuest",
    "RecoveryResponse",
    "check_proof",
    "readmit",
    "recovery_proof",
]

_VERSION: Final = 1
_MAX: Final = 32 * 1024


def recovery_proof(person_key: SigningKey, handshake_hash: bytes) -> bytes:
    """The person key's signature over this session's handshake hash."""
    return person_key.sign(labels.RECOVERY_PROOF, handshake_hash)


def check_proof(person: PersonId, handshake_hash: bytes, proof: bytes) -> None:
    """:class:`InviteRefused` unless ``proof`` is ``person``'s signature over this session."""
    try:
        VerifyKey(person).verify(labels.RECOVERY_PROOF, handshake_hash, proof)
    except BadSignature:
        raise InviteRefused("the recovery proof does not verify for this session") from None


@dataclass(frozen=True, slots=True)
class RecoveryResponse:
    """The member's answer: ``adds[i]`` took the device back into ``groups[i]``; ``linked``
    are groups where the person still has a device (the device is not added there)."""

    groups: tuple[GroupId, ...]
    adds: tuple[EntryId, ...]
    linked: tuple[GroupId, ...] = ()

    def to_bytes(self) -> bytes:
        return encoding.encode([_VERSION, list(self.groups), list(self.adds), list(self.linked)])

    @classmethod
    def from_bytes(cls, data: bytes) -> RecoveryResponse:
        items = expect_list(encoding.decode(data, max_size=_MAX), "recovery response", 4)
        if expect_int(items[0], "version") != _VERSION:
            raise DecodeError("recovery response: unknown version")
        groups, adds, linked = (
            tuple(expect_bytes(x, "id", 32) for x in expect_list(v, "ids")) for v in items[1:]
        )
        if len(groups) != len(adds):
            raise DecodeError("recovery response: one add per group")
        return cls(
            tuple(GroupId(g) for g in groups),
            tuple(EntryId(a) for a in adds),
            tuple(GroupId(g) for g in linked),
        )

    def welcomes(self) -> dict[GroupId, EntryId]:
        """Per group, the add that took the device back."""
        return dict(zip(self.groups, self.adds, strict=True))


def readmit(
    replicas: Mapping[GroupId, GroupReplica],
    peer: DeviceCertificate,
    handshake_hash: bytes,
    hello_request: bytes,
    proof: bytes,
    now: Callable[[], int],
) -> RecoveryResponse:
    """The host side: check the proof and the request against the handshake's ``peer``, then
    take the device back into every group of ``replicas`` whose rule allows it."""
    check_proof(peer.person, handshake_hash, proof)
    request = _request_of(hello_request, peer)
    groups, adds, linked = [], [], []
    for gid, replica in sorted(replicas.items()):
        state = replica.state
        member = state.members.get(peer.person)
        mine = state.person_of(replica.me.device)
        if member is None or mine is None or peer.device in member.devices:
            continue
        if not may_add_device(state, mine, peer.person):
            linked.append(gid)
            continue
        try:
            entry = replica.add_device(request.device, now=now())
        except NotAMember:
            linked.append(gid)  # full, or the device was revoked here
            continue
        groups.append(gid)
        adds.append(entry.id)
    if not groups and linked:
        raise StillHasDevices("the person still has a device in every group it could rejoin")
    if not groups:
        raise RecoveryRefused("the person is a member of no group here that lacks this device")
    return RecoveryResponse(tuple(groups), tuple(adds), tuple(linked))


def _request_of(data: bytes, peer: DeviceCertificate) -> JoinRequest:
    try:
        request = JoinRequest.from_bytes(data)
        certificate = DeviceCertificate.from_bytes(request.device.certificate)
    except MicrosyncError:
        raise InviteRefused("the recovery request is malformed") from None
    if certificate != peer or request.person != peer.person:
        raise InviteRefused("the recovery request names another device than the session's")
    return request


class RecoveryGuest:
    """The restored device's side: :meth:`start` gives the hello for one session,
    :meth:`receive` reads the member's answer (an ABORT raises its typed error)."""

    def __init__(self, request: bytes, person_key: SigningKey, handshake_hash: bytes) -> None:
        self._hello = RecoverHello(
            request=request, proof=recovery_proof(person_key, handshake_hash)
        )
        self._done = False

    def __repr__(self) -> str:
        return f"RecoveryGuest(done={self._done})"

    def start(self) -> bytes:
        """The one message to send."""
        return self._hello.to_bytes()

    def receive(self, data: bytes) -> RecoveryResponse:
        """The member's answer, once."""
        if self._done:
            raise LocalProtocolError("the recovery is over")
        self._done = True
        message = decode_message(data)
        if isinstance(message, Abort):
            raise message.error()
        if not isinstance(message, RecoverAdmit):
            raise InviteProtocolError(f"unexpected {message.kind.name} after a recovery request")
        return RecoveryResponse.from_bytes(message.response)
