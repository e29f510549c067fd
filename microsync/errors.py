"""The one error tree of microsync.

Every error microsync raises on purpose is a :class:`MicrosyncError`. Errors caused by input
that came from a peer or from disk carry a short, fixed message: they never include secret
bytes, and decryption failures never say *why* they failed.

    MicrosyncError
    ├── DecodeError                 malformed or non-canonical bytes
    ├── VerificationError           a well-formed item broke a rule (one subclass per rule)
    │   ├── UnknownVersion
    │   ├── Oversize
    │   ├── WrongGroup
    │   ├── AuthorNotCertified
    │   ├── AuthorRevoked
    │   ├── BadSignature
    │   ├── PrevMismatch
    │   ├── SequenceGap
    │   ├── BodyMismatch
    │   ├── ForkedFeed
    │   ├── BadForkEvidence
    │   ├── PendingQuotaExceeded
    │   └── AuthorNotAdmitted
    │       └── HeldQuotaExceeded
    ├── DecryptionError             deliberately opaque
    ├── ProtocolError
    │   ├── LocalProtocolError      we tried to do something the protocol forbids
    │   └── RemoteProtocolError     the peer did
    ├── HandshakeError
    ├── NotAMember
    ├── VaultQuotaExceeded          an add beyond the person's vault quota (docs/vault.md)
    ├── InviteError
    └── StorageError
        ├── ProfileInUse
        └── ProfileNotFound
"""

from __future__ import annotations

__all__ = [
    "AuthorNotCertified",
    "AuthorRevoked",
    "BadForkEvidence",
    "BadSignature",
    "BodyMismatch",
    "DecodeError",
    "DecryptionError",
    "ForkedFeed",
    "HandshakeError",
    "InviteError",
    "LocalProtocolError",
    "MicrosyncError",
    "NotAMember",
    "Oversize",
    "PendingQuotaExceeded",
    "PrevMismatch",
    "ProfileInUse",
    "ProfileNotFound",
    "ProtocolError",
    "RemoteProtocolError",
    "SequenceGap",
    "StorageError",
    "UnknownVersion",
    "VaultQuotaExceeded",
    "VerificationError",
    "WrongGroup",
]


class MicrosyncError(Exception):
    """Root of every error microsync raises deliberately."""


class DecodeError(MicrosyncError):
    """Bytes are not a well-formed, canonical encoding of the expected type."""


class VerificationError(MicrosyncError):
    """A well-formed item breaks a validation rule. Each rule has its own subclass."""


class UnknownVersion(VerificationError):
    """The item declares a format version this implementation does not speak."""


class Oversize(VerificationError):
    """The item, or a field of it, is larger than its limit."""


class WrongGroup(VerificationError):
    """The entry belongs to a different group than the feed it was offered to."""


class AuthorNotCertified(VerificationError):
    """No valid certificate binds the signing device to a person."""


class AuthorRevoked(VerificationError):
    """The signing device was revoked by its person."""


class BadSignature(VerificationError):
    """A signature does not verify."""


class PrevMismatch(VerificationError):
    """The entry's ``prev`` does not name the entry before it in its feed."""


class SequenceGap(VerificationError):
    """The entry skips sequence numbers (or starts anywhere but 1 with a ``prev``)."""


class BodyMismatch(VerificationError):
    """The body's hash or length differs from what the signed header promises."""


class ForkedFeed(VerificationError):
    """The device forked its feed; nothing at or after the fork point is accepted."""


class BadForkEvidence(VerificationError):
    """Entries offered as proof of a fork do not prove one: they are not different entries of
    one device's feed at one position (or, for a conflict, not one run of that feed)."""


class PendingQuotaExceeded(VerificationError):
    """Too many out-of-order entries are already waiting for this device's feed."""


class DecryptionError(MicrosyncError):
    """Decryption failed. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class ProtocolError(MicrosyncError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """This side attempted something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class HandshakeError(MicrosyncError):
    """The secure handshake with a peer failed."""


class NotAMember(MicrosyncError):
    """The person or device is not (or no longer) a member of the group."""


class VaultQuotaExceeded(MicrosyncError):
    """Adding this file would take the person beyond their quota in the group's vault."""


class InviteError(MicrosyncError):
    """An invite is malformed, expired, revoked, already used or the code was wrong."""


class StorageError(MicrosyncError):
    """The profile's storage failed (full disk, corruption, permissions...)."""


class ProfileInUse(StorageError):
    """The profile directory is already open, in this process or another one."""


class ProfileNotFound(StorageError):
    """There is no profile at that path (and no name was given to create one)."""


# Invites and device pairing (microsync.group.invite). Appended as a block so that concurrent
# edits elsewhere in this file merge cleanly; each is an InviteError for one broken rule.


class MalformedInvite(InviteError):
    """An invite link or short code is not in the expected format (or version)."""


class InviteUnknown(InviteError):
    """No open invite matches the presented secret or nameplate."""


class InviteExpired(InviteError):
    """The invite's expiry (plus the stated clock tolerance) has passed."""


class InviteConsumed(InviteError):
    """The invite was already redeemed: invites are single-use."""


class InviteRevoked(InviteError):
    """The issuer revoked the invite."""


class InviteBurned(InviteError):
    """A wrong short code was tried against this invite, which burned it."""


class WrongPurpose(InviteError):
    """A group invite was presented to link a device, or the other way round."""


class WrongCode(InviteError):
    """The short code did not match (the key confirmation failed). The code is now burned."""


class InviteRefused(InviteError):
    """The host's group layer refused the request."""


class AlreadyAMember(InviteRefused):
    """The person redeeming a group invite is a member already: a new device of theirs is
    linked from one of their devices (``Device.link``) or restored from their words."""


class RecoveryRefused(InviteRefused):
    """A device restored from the recovery words asked to be taken back, and no group of the
    device it asked can: the person is not a member there, or still has a device in each."""


class StillHasDevices(RecoveryRefused):
    """A recovery refused because the person still has a device in the group: link the new
    device from that one (a thief holding only the person key ends here)."""


class InviteProtocolError(InviteError):
    """An unexpected, out-of-order or unsupported pairing message, or input after the end."""


__all__ += [
    "InviteBurned",
    "InviteConsumed",
    "InviteExpired",
    "InviteProtocolError",
    "InviteRefused",
    "InviteRevoked",
    "InviteUnknown",
    "MalformedInvite",
    "RecoveryRefused",
    "StillHasDevices",
    "WrongCode",
    "WrongPurpose",
]


# Ephemeral announcements (presence, location: microsync.app.ephemeral).


class StaleAnnouncement(VerificationError):
    """An announcement that is expired, dated too far in the future, or not newer than the one
    already held from the same device (a replay)."""


__all__ += ["StaleAnnouncement"]


# Reaching peers (microsync.net, microsync.node).


class PeerUnreachable(MicrosyncError):
    """No connection could be made to the peer (refused, timed out, no route), or it hung up
    before finishing."""


__all__ += ["PeerUnreachable"]


# Who may be stored (microsync.group.replica.GroupReplica.admits; docs/membership.md).


class AuthorNotAdmitted(VerificationError):
    """The signing device is not admitted to the group by any causally valid membership
    operation this device holds, and its entry cannot wait for one. Nothing is stored; a peer
    offers the entry again at the next sync."""


class HeldQuotaExceeded(AuthorNotAdmitted):
    """Too many entries of not-yet-admitted devices already wait in memory for this group or
    from this peer (``GroupReplica.held_limits``), so this one is refused."""


__all__ += ["AuthorNotAdmitted", "HeldQuotaExceeded"]


class GroupFull(InviteRefused):
    """The group holds as many members as its cap (``create_group(max_members=...)``) allows:
    an invite to it is not issued, and a guest redeeming one is refused with this."""


__all__ += ["GroupFull"]
