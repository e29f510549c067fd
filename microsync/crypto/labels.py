"""Every domain-separation label microsync signs, hashes or derives with, in one table.

A label is fed to a primitive as ``len(label) || label || message`` (see :func:`frame`), so no
label can be confused with another even when one is a prefix of the other. Changing a label's
meaning means adding a new label with a new version, never editing an old one.
"""

from __future__ import annotations

from typing import Final, NewType

__all__ = ["ALL_LABELS", "Label", "frame"]

Label = NewType("Label", bytes)

# Signatures
ENTRY_SIGNATURE = Label(b"microsync/v1/entry")
DEVICE_CERTIFICATE = Label(b"microsync/v1/device-certificate")
DEVICE_REVOCATION = Label(b"microsync/v1/device-revocation")
TRANSPORT_KEY_CERTIFICATE = Label(b"microsync/v1/transport-key-certificate")
PREKEY_CERTIFICATE = Label(b"microsync/v1/prekey-certificate")
ANNOUNCEMENT_SIGNATURE = Label(b"microsync/v1/announcement")
SNAPSHOT_SIGNATURE = Label(b"microsync/v1/snapshot")

# Hashes
ENTRY_ID = Label(b"microsync/v1/entry-id")
BODY_HASH = Label(b"microsync/v1/body-hash")
FINGERPRINT = Label(b"microsync/v1/fingerprint")
GROUP_ID = Label(b"microsync/v1/group-id")

# Groups: epoch keys, key wraps, routing values (microsync.group)
# v2: the commitment covers the control key and a hash of the root, so a control-only grant
# can be checked too (v1 hashed the root alone)
EPOCH_COMMITMENT = Label(b"microsync/v2/epoch-commitment")
EPOCH_CONTENT_CHECK = Label(b"microsync/v1/epoch-content-check")
EPOCH_RECIPIENTS = Label(b"microsync/v1/epoch-recipients")
EPOCH_CONTENT_KEY = Label(b"microsync/v1/epoch-content-key")
EPOCH_CONTROL_KEY = Label(b"microsync/v1/epoch-control-key")
KEY_WRAP = Label(b"microsync/v1/key-wrap")
KEY_WRAP_TAG = Label(b"microsync/v1/key-wrap-tag")
KEY_BUNDLE = Label(b"microsync/v1/key-bundle")
DISCOVERY_TAG = Label(b"microsync/v1/discovery-tag")
RENDEZVOUS_ID = Label(b"microsync/v1/rendezvous-id")
DISCOVERY_BLIND = Label(b"microsync/v1/discovery-blind")  # per-announcement blinding of a tag

# Sync sessions (microsync.protocol.session)
SYNC_GROUP_TAG = Label(b"microsync/v1/sync-group-tag")
SYNC_FRONTIER_DIGEST = Label(b"microsync/v1/sync-frontier-digest")

# Ephemeral announcements (presence, location: microsync.app.ephemeral)
ANNOUNCEMENT_KEY = Label(b"microsync/v1/announcement-key")
# A location for one viewer device (microsync.app.viewers)
VIEWER_LOCATION_SIGNATURE = Label(b"microsync/v1/viewer-location")  # over the whole envelope
VIEWER_LOCATION_KEY = Label(b"microsync/v1/viewer-location-key")  # DH with the viewer's prekey

# The vault (microsync.crypto.stream, microsync.blobs)
VAULT_CHUNK = Label(b"microsync/v1/vault-chunk")  # AD of every chunk
VAULT_ID_KEY = Label(b"microsync/v1/vault-id-key")  # epoch content key -> id key
VAULT_CHUNK_ID = Label(b"microsync/v1/vault-chunk-id")
VAULT_BLOB_ID = Label(b"microsync/v2/vault-blob-id")  # v2: binds the adder and the key
VAULT_KEY_COMMITMENT = Label(b"microsync/v1/vault-key-commitment")  # blob key -> commitment
VAULT_CHUNK_ADDRESS = Label(b"microsync/v1/vault-chunk-address")  # (adder, key, chunk id)
VAULT_BLOB_DETAILS = Label(b"microsync/v1/vault-blob-details")  # name, type, thumbnail
VAULT_KEEPER_MAILBOX = Label(b"microsync/v1/vault-keeper-mailbox")  # blob key -> its mailbox

# Keeper mailboxes: per-epoch capability, item sealing and naming (microsync.group.mailbox)
KEEPER_MAILBOX_SEED = Label(b"microsync/v1/keeper-mailbox-seed")  # control key -> signing seed
KEEPER_MAILBOX_ID = Label(b"microsync/v1/keeper-mailbox-id")  # public key -> mailbox id
KEEPER_PROOF = Label(b"microsync/v1/keeper-proof")  # signature over challenge || mailbox id
KEEPER_ITEM_KEY = Label(b"microsync/v1/keeper-item-key")  # control key -> item sealing key
KEEPER_ITEM_ID = Label(b"microsync/v1/keeper-item-id")  # control key -> item naming key
KEEPER_ITEM = Label(b"microsync/v1/keeper-item")  # AD of every sealed item

# Local snapshots of app state (microsync.app.snapshot)
SNAPSHOT_KEY = Label(b"microsync/v1/snapshot-key")

# Invites and device pairing (microsync.group.invite, microsync.crypto.pake)
INVITE_ID = Label(b"microsync/v1/invite-id")
INVITE_SESSION_KEY = Label(b"microsync/v1/invite-session-key")
INVITE_CONFIRM_HOST = Label(b"microsync/v1/invite-confirm-host")
INVITE_CONFIRM_GUEST = Label(b"microsync/v1/invite-confirm-guest")
INVITE_PAYLOAD = Label(b"microsync/v1/invite-payload")
INVITE_PAKE_GUEST = Label(b"microsync/v1/invite-pake-guest")
INVITE_PAKE_HOST = Label(b"microsync/v1/invite-pake-host")
INVITE_RENDEZVOUS = Label(b"microsync/v1/invite-rendezvous")
RECOVERY_PROOF = Label(b"microsync/v1/recovery-proof")  # person key over the handshake hash
RECOVERY_RENDEZVOUS = Label(b"microsync/v1/recovery-rendezvous")  # person id -> relay id
RECOVERY_DISCOVERY_TAG = Label(b"microsync/v1/recovery-discovery-tag")  # person, bucket -> tag
# The words as a paper key (microsync.identity): a 32-byte root -> the person key and the
# recovery key; the recovery key signs recovery certificates (new device of the person)
ROOT_PERSON_KEY = Label(b"microsync/v1/root-person-key")
ROOT_RECOVERY_KEY = Label(b"microsync/v1/root-recovery-key")
RECOVERY_CERTIFICATE = Label(b"microsync/v1/recovery-certificate")
RECOVERY_SERVE_ORDER = Label(b"microsync/v1/recovery-serve-order")  # person, device -> rank
# A device's transport key for one half-lifetime period (microsync.identity): device key,
# period start -> the X25519 secret (a renewal certifies a new key, never the old one again)
TRANSPORT_KEY_PERIOD = Label(b"microsync/v1/transport-key-period")

ALL_LABELS: dict[str, Label] = {
    name: Label(value)
    for name, value in globals().items()
    if name.isupper() and isinstance(value, bytes)
}


def frame(label: Label) -> bytes:
    """The prefix that binds ``label`` in front of a message: one length byte, then the label."""
    framed = _FRAMED.get(label)
    if framed is None:
        if not 0 < len(label) < 256:
            raise ValueError("a label must be 1 to 255 bytes")
        framed = bytes((len(label),)) + label
        if label in _KNOWN:  # each hash, key and signature frames one: made once, not per call
            _FRAMED[label] = framed
    return framed


_KNOWN: Final = frozenset(ALL_LABELS.values())
_FRAMED: dict[bytes, bytes] = {}
