"""Keeper mailboxes: what a group's members show a keeper, derived from one epoch's secret.

Theory of operation
-------------------
A keeper stores a group's items in *mailboxes* and must learn nothing else about the group.
Each epoch of a group has one mailbox, derived by pure functions from that epoch's control
secret (every member holds it, whatever the history setting; a removed member never holds the
next one)::

    seed       = KDF(KEEPER_MAILBOX_SEED, control)        an Ed25519 signing seed
    public key = Ed25519(seed).public
    mailbox id = H(KEEPER_MAILBOX_ID, public key)          self-certifying: the keeper checks it
    item key   = KDF(KEEPER_ITEM_KEY, control)             seals every item
    name key   = KDF(KEEPER_ITEM_ID, control)              names every item

A member proves its rights on a connection by signing the keeper's fresh per-connection
challenge with the mailbox key (:meth:`Mailbox.prove`); :func:`check_proof` is what the
keeper runs. A record (an entry, a vault chunk) travels as a sealed item: its id is a keyed hash
of a stable name the member chooses (an entry id), so pushing the same record twice names it
twice the same and a delete can name it; its payload is ``nonce || XChaCha20-Poly1305(item key,
padded record, AD = label || mailbox id || item id)``, padded to one of :data:`ITEM_SIZES`.

Invariants: the keeper sees mailbox ids, public keys, item ids and padded ciphertext, all
pseudorandom functions of a secret it lacks; two epochs (or groups) share no derived value;
opening an item moved to another mailbox or id fails with the one opaque ``DecryptionError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NewType

from microsync.crypto import labels
from microsync.crypto.hashing import derive_key, labelled_hash
from microsync.crypto.keys import SIGNATURE_SIZE, SigningKey, SymmetricKey, VerifyKey
from microsync.crypto.random import Rng
from microsync.errors import BadSignature, DecryptionError, NotAMember

__all__ = [
    "CHALLENGE_SIZE",
    "ID_SIZE",
    "ITEM_OVERHEAD",
    "ITEM_SIZES",
    "MAX_RECORD",
    "ItemId",
    "Mailbox",
    "MailboxId",
    "Proof",
    "SealedItem",
    "check_proof",
    "mailbox_id_of",
]

MailboxId = NewType("MailboxId", bytes)
ItemId = NewType("ItemId", bytes)

ID_SIZE: Final = 32
CHALLENGE_SIZE: Final = 32
NONCE_SIZE: Final = 24
LENGTH_SIZE: Final = 4
ITEM_SIZES: Final = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 1179648)
"""Every sealed record is padded to one of these sizes before encryption (the last one holds
a 1 MiB vault chunk with its overhead)."""
ITEM_OVERHEAD: Final = NONCE_SIZE + 16
"""A sealed item's payload is its padded size plus this (nonce and tag)."""
MAX_RECORD: Final = ITEM_SIZES[-1] - LENGTH_SIZE
"""The largest record one item carries."""


def mailbox_id_of(key: VerifyKey) -> MailboxId:
    """The id of the mailbox whose capability is ``key``."""
    return MailboxId(labelled_hash(labels.KEEPER_MAILBOX_ID, bytes(key)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Proof:
    """A member's answer to a keeper's challenge: "I hold the key of this mailbox"."""

    mailbox: MailboxId
    key: VerifyKey
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedItem:
    """What a keeper stores for one record: an opaque id and a padded ciphertext."""

    id: ItemId
    payload: bytes


def _proof_message(challenge: bytes, mailbox: MailboxId) -> bytes:
    return challenge + mailbox


def check_proof(proof: Proof, challenge: bytes) -> None:
    """Raise :class:`NotAMember` unless ``proof`` signs ``challenge`` with the key that the
    mailbox id names. The keeper runs this; it needs no secret."""
    if len(challenge) != CHALLENGE_SIZE or len(proof.signature) != SIGNATURE_SIZE:
        raise NotAMember("bad mailbox proof")
    if mailbox_id_of(proof.key) != proof.mailbox:
        raise NotAMember("the key does not name this mailbox")
    try:
        proof.key.verify(
            labels.KEEPER_PROOF, _proof_message(challenge, proof.mailbox), proof.signature
        )
    except BadSignature as error:
        raise NotAMember("bad mailbox proof") from error


def _pad(record: bytes) -> bytes:
    size = next((s for s in ITEM_SIZES if LENGTH_SIZE + len(record) <= s), None)
    if size is None:
        raise ValueError(f"a keeper record is at most {MAX_RECORD} bytes")
    header = len(record).to_bytes(LENGTH_SIZE, "big")
    return header + record + bytes(size - LENGTH_SIZE - len(record))


def _unpad(padded: bytes) -> bytes:
    length = int.from_bytes(padded[:LENGTH_SIZE], "big")
    end = LENGTH_SIZE + length
    if len(padded) not in ITEM_SIZES or end > len(padded) or any(padded[end:]):
        raise DecryptionError()
    return padded[LENGTH_SIZE:end]


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One epoch's mailbox capability. ``repr`` shows a prefix of the (public) id only."""

    id: MailboxId
    signing: SigningKey = field(repr=False)
    _items: SymmetricKey = field(repr=False)
    _names: bytes = field(repr=False)

    @classmethod
    def derive(cls, secret: bytes) -> Mailbox:
        """The mailbox of the epoch whose control secret is ``secret`` (32 bytes)."""
        signing = SigningKey(derive_key(labels.KEEPER_MAILBOX_SEED, secret))
        items = SymmetricKey(derive_key(labels.KEEPER_ITEM_KEY, secret))
        names = derive_key(labels.KEEPER_ITEM_ID, secret)
        return cls(mailbox_id_of(signing.public), signing, items, names)

    def __repr__(self) -> str:
        return f"Mailbox({self.id[:4].hex()})"

    def prove(self, challenge: bytes) -> Proof:
        """Answer a keeper's ``challenge`` (valid on that connection only)."""
        signature = self.signing.sign(labels.KEEPER_PROOF, _proof_message(challenge, self.id))
        return Proof(mailbox=self.id, key=self.signing.public, signature=signature)

    def item_id(self, name: bytes) -> ItemId:
        """The opaque id of the record named ``name`` (for example an entry id)."""
        return ItemId(derive_key(labels.KEEPER_ITEM_ID, self._names, name))

    def _ad(self, item: ItemId) -> bytes:
        return labels.frame(labels.KEEPER_ITEM) + self.id + item

    def seal(self, rng: Rng, name: bytes, record: bytes) -> SealedItem:
        """``record`` as the keeper will hold it, under the id :meth:`item_id` gives ``name``."""
        item = self.item_id(name)
        nonce = rng(NONCE_SIZE)
        payload = nonce + self._items.encrypt(nonce, _pad(record), self._ad(item))
        return SealedItem(id=item, payload=payload)

    def open(self, item: SealedItem) -> bytes:
        """The record in ``item``; :class:`DecryptionError` if it was not sealed here as it is."""
        nonce, sealed = item.payload[:NONCE_SIZE], item.payload[NONCE_SIZE:]
        return _unpad(self._items.decrypt(nonce, sealed, self._ad(item.id)))
