"""Encrypted groups: membership, epoch keyring, key wraps and invites.

``docs/membership.md`` has the rules and how concurrent changes resolve; ``docs/security.md``
the keys, the threat model and which test covers each claim.
"""

from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    Recipient,
    decrypt_content,
    discovery_tag,
    encrypt_content,
    open_bundle,
    rendezvous_id,
    seal_bundle,
)
from microsync.group.membership import (
    INVITE_CLOCK_TOLERANCE_MS,
    GroupState,
    OpRecord,
    Resolution,
    group_id_for,
    resolve,
)
from microsync.group.ops import MEMBERSHIP_TYPE, DeviceGrant, History, Op, OpKind, Role
from microsync.group.replica import GroupReplica, GroupStore, LocalMember

__all__ = [
    "INVITE_CLOCK_TOLERANCE_MS",
    "MEMBERSHIP_TYPE",
    "DeviceGrant",
    "EpochKey",
    "GroupReplica",
    "GroupState",
    "GroupStore",
    "History",
    "KeyGrant",
    "LocalMember",
    "Op",
    "OpKind",
    "OpRecord",
    "Purpose",
    "Recipient",
    "Resolution",
    "Role",
    "decrypt_content",
    "discovery_tag",
    "encrypt_content",
    "group_id_for",
    "open_bundle",
    "rendezvous_id",
    "resolve",
    "seal_bundle",
]
