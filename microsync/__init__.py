"""microsync: private micro-networks with encrypted group feeds and direct device sync.

The device API (``Device``, ``Group`` ...) is imported on first use, so importing a lower layer
alone (``microsync.state``, ``microsync.encoding``) does not load the network stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from microsync.errors import (
    AlreadyAMember,
    AuthorNotAdmitted,
    AuthorNotCertified,
    AuthorRevoked,
    BadForkEvidence,
    BadSignature,
    BodyMismatch,
    DecodeError,
    DecryptionError,
    ForkedFeed,
    GroupFull,
    HandshakeError,
    HeldQuotaExceeded,
    InviteBurned,
    InviteConsumed,
    InviteError,
    InviteExpired,
    InviteProtocolError,
    InviteRefused,
    InviteRevoked,
    InviteUnknown,
    LocalProtocolError,
    MalformedInvite,
    MicrosyncError,
    NotAMember,
    Oversize,
    PeerUnreachable,
    PendingQuotaExceeded,
    PrevMismatch,
    ProfileInUse,
    ProfileNotFound,
    ProtocolError,
    RecoveryRefused,
    RemoteProtocolError,
    SequenceGap,
    StaleAnnouncement,
    StillHasDevices,
    StorageError,
    UnknownVersion,
    VaultQuotaExceeded,
    VerificationError,
    WrongCode,
    WrongGroup,
    WrongPurpose,
)

if TYPE_CHECKING:
    from microsync.app.docs import SharedMap
    from microsync.app.events import Location, Moderated, Post, Presence, Reaction, SharingStopped
    from microsync.app.ops import Precision
    from microsync.app.parts import AttachmentPart, LinkPart, PlacePart, TextPart
    from microsync.blobs.index import BlobRef
    from microsync.node import Device, Group, Member
    from microsync.node.devices import DeviceRecord
    from microsync.node.events import Event
    from microsync.node.exits import GroupExit
    from microsync.node.keeper_link import KeeperStatus
    from microsync.node.news import Cursor, WhatsNew
    from microsync.node.status import DeviceStatus, GroupStatus, PeerStatus, RelayStatus
    from microsync.node.vault import Vault, VaultUsage

_LAZY = {
    "Device": "microsync.node",
    "Group": "microsync.node",
    "Member": "microsync.node",
    "Event": "microsync.node.events",
    "Post": "microsync.app.events",
    "Location": "microsync.app.events",
    "Presence": "microsync.app.events",
    "BlobRef": "microsync.blobs.index",
    "Vault": "microsync.node.vault",
    "VaultUsage": "microsync.node.vault",
    "DeviceStatus": "microsync.node.status",
    "GroupExit": "microsync.node.exits",
    "GroupStatus": "microsync.node.status",
    "PeerStatus": "microsync.node.status",
    "RelayStatus": "microsync.node.status",
    "Cursor": "microsync.node.news",
    "WhatsNew": "microsync.node.news",
    "TextPart": "microsync.app.parts",
    "LinkPart": "microsync.app.parts",
    "PlacePart": "microsync.app.parts",
    "AttachmentPart": "microsync.app.parts",
    "Reaction": "microsync.app.events",
    "SharingStopped": "microsync.app.events",
    "Moderated": "microsync.app.events",
    "Precision": "microsync.app.ops",
    "SharedMap": "microsync.app.docs",
    "DeviceRecord": "microsync.node.devices",
    "KeeperStatus": "microsync.node.keeper_link",
}


def __dir__() -> list[str]:
    """The public names only (not this module's helpers), lazy ones included."""
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'microsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AlreadyAMember",
    "AttachmentPart",
    "AuthorNotAdmitted",
    "AuthorNotCertified",
    "AuthorRevoked",
    "BadForkEvidence",
    "BadSignature",
    "BlobRef",
    "BodyMismatch",
    "Cursor",
    "DecodeError",
    "DecryptionError",
    "Device",
    "DeviceRecord",
    "DeviceStatus",
    "Event",
    "ForkedFeed",
    "Group",
    "GroupExit",
    "GroupFull",
    "GroupStatus",
    "HandshakeError",
    "HeldQuotaExceeded",
    "InviteBurned",
    "InviteConsumed",
    "InviteError",
    "InviteExpired",
    "InviteProtocolError",
    "InviteRefused",
    "InviteRevoked",
    "InviteUnknown",
    "KeeperStatus",
    "LinkPart",
    "LocalProtocolError",
    "Location",
    "MalformedInvite",
    "Member",
    "MicrosyncError",
    "Moderated",
    "NotAMember",
    "Oversize",
    "PeerStatus",
    "PeerUnreachable",
    "PendingQuotaExceeded",
    "PlacePart",
    "Post",
    "Precision",
    "Presence",
    "PrevMismatch",
    "ProfileInUse",
    "ProfileNotFound",
    "ProtocolError",
    "Reaction",
    "RecoveryRefused",
    "RelayStatus",
    "RemoteProtocolError",
    "SequenceGap",
    "SharedMap",
    "SharingStopped",
    "StaleAnnouncement",
    "StillHasDevices",
    "StorageError",
    "TextPart",
    "UnknownVersion",
    "Vault",
    "VaultQuotaExceeded",
    "VaultUsage",
    "VerificationError",
    "WhatsNew",
    "WrongCode",
    "WrongGroup",
    "WrongPurpose",
    "__version__",
]
