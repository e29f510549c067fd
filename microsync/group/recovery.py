"""Recovery from the words, the group side: a device restored from the words asks a member's
device to take it back into every group of its person, revoking the person's other devices
there. Sans-IO.

Theory of operation. The restored device (the guest) holds the person key, the recovery
key's certificate of itself (:class:`~microsync.identity.RecoveryCertificate`, signed when it
was restored, while the words were in memory) and no group. On an ``invite``-purpose
connection it sends a :class:`~microsync.group.invite.RecoverHello`: a join request naming
itself (its certificate, the one the handshake just proved, and its signed prekey), a *proof*
(the person key's signature, under ``RECOVERY_PROOF``, over the handshake hash of this very
session: replayed on another connection it signs the wrong hash) and the recovery
certificate. The member's device (the host) checks all three against the handshake's peer
and, in each group where the person registered the recovery key that signed the
certificate, appends a *recovery*: an ``ADD_DEVICE`` carrying the certificate, naming the
feed head of every other device of the person (each revoked there, as by REVOKE_DEVICE) and
starting an epoch without them (:func:`microsync.group.rules.may_add_device`). It answers
with a :class:`RecoveryResponse`: the groups and the id of each add (the device's welcome
there), and the groups where the person is a member that the words cannot take it back into
(no recovery key registered there). Nothing to give back is
:class:`~microsync.errors.RecoveryRefused`.

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
)
from microsync.feed.entry import EntryId, GroupId
from microsync.group.invite.messages import Abort, RecoverAdmit, RecoverHello, decode_message
from microsync.group.invite.payloads import JoinRequest
from microsync.group.replica import GroupReplica
from microsync.group.rules import may_add_device, may_recover
from microsync.identity import DeviceCertificate, PersonId, RecoveryCertificate

__all__ = [
    "RecoveryGuest",
    "RecoveryResponse",
    "check_proof",
    "readmit",
    "recoverable",
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
    are groups where the person is a member that these words cannot take back (no recovery
    key registered there, or another one)."""

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
    hello: RecoverHello,
    now: Callable[[], int],
) -> RecoveryResponse:
    """The host side: check the proof, the request and the certificate against the
    handshake's ``peer``, then take the device back into every group of ``replicas`` where
    its person registered the certificate's recovery key."""
    check_proof(peer.person, handshake_hash, hello.proof)
    request = _request_of(hello.request, peer)
    certificate = _certificate_of(hello.certificate, peer)
    groups, adds, linked = [], [], []
    for gid, replica in sorted(replicas.items()):
        state = replica.state
        member = state.members.get(peer.person)
        mine = state.person_of(replica.me.device)
        if member is None or mine is None or peer.device in member.devices:
            continue
        by_words = None if mine == peer.person else certificate  # else a link, by its own
        if not may_add_device(state, mine, peer.person, peer.device, by_words):
            linked.append(gid)
            continue
        try:
            entry = replica.add_device(request.device, now=now(), recovery=by_words)
        except NotAMember:
            linked.append(gid)  # full, or the device was revoked here
            continue
        groups.append(gid)
        adds.append(entry.id)
    if not groups and linked:
        raise RecoveryRefused(
            "these words cannot take the person back here: no group registered their recovery "
            "key (a person made before the words were a paper key); link from a device instead"
        )
    if not groups:
        raise RecoveryRefused("the person is a member of no group here that lacks this device")
    return RecoveryResponse(tuple(groups), tuple(adds), tuple(linked))


def recoverable(replica: GroupReplica) -> set[PersonId]:
    """The persons a device could take back by the words in ``replica``'s group."""
    state = replica.state
    mine = state.person_of(replica.me.device)
    if mine is None:
        return set()
    return {p for p in state.members if may_recover(state, mine, p)}


def _certificate_of(data: bytes, peer: DeviceCertificate) -> RecoveryCertificate:
    try:
        certificate = RecoveryCertificate.from_bytes(data)
        certificate.verify()
    except MicrosyncError:
        raise InviteRefused("the recovery certificate is malformed or does not verify") from None
    if certificate.person != peer.person or certificate.device != peer.device:
        raise InviteRefused("the recovery certificate is for another device")
    return certificate


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

    def __init__(
        self,
        request: bytes,
        person_key: SigningKey,
        handshake_hash: bytes,
        certificate: RecoveryCertificate,
    ) -> None:
        self._hello = RecoverHello(
            request=request,
            proof=recovery_proof(person_key, handshake_hash),
            certificate=certificate.to_bytes(),
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
