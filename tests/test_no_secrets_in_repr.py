"""No secret in ``repr`` or ``str`` (issue 13, item 8).

The walk imports every module of the ``microsync`` package (by file, so the namespace package
``microsync.app`` is included) and collects every class defined there. A class *holds key
material* when a field, slot or ``__init__`` parameter is named like a secret (root, secret,
key, seed, prekey, psk, password, grant, proof, ...) with a type that could carry bytes, or is
typed as a class that holds key material (the closure over field types).

Every such class whose ``repr``/``str`` is not :class:`object`'s (which prints only the class
and an address) must either have a builder below, which makes a real instance from a real
flow with known secret bytes, or an entry in :data:`PUBLIC` saying why its key-named fields are
public. A new class that is neither fails :func:`test_every_key_holding_class_is_covered`, so
this test cannot silently go stale.

A secret "appears" if its hex (either case), base64 (standard or URL-safe, padded or not),
lowercase base32 (invite links), raw ``bytes`` repr, or any 8-byte window of it in hex or
``bytes`` repr occurs in ``repr()`` or ``str()`` of the object, or of a list, tuple or dict
holding it.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import inspect
import pathlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest

import microsync
from microsync.blobs import BlobId
from microsync.blobs.chunks import BlobDecryptor, BlobEncryptor
from microsync.blobs.index import DEFAULT_QUOTA, VaultIndex
from microsync.blobs.manifest import Manifest, VaultKind, VaultOp
from microsync.crypto import X25519SecretKey, seed_from_words
from microsync.crypto.noise import BLAKE2B, ChaChaPoly
from microsync.crypto.pake import PakeSide, Spake2
from microsync.crypto.stream import ChunkCipher
from microsync.feed.entry import EntryId, GroupId
from microsync.group.authoring import Draft
from microsync.group.invite import (
    Invite,
    InvitePurpose,
    InviteRecord,
    InviteState,
    LinkHello,
    PairingGuest,
    PairingHost,
    ReadyForLink,
    parse_link,
)
from microsync.group.join import DeviceCandidate, InviteBook, LinkResponse
from microsync.group.keyring import Keyring
from microsync.group.keys import EpochKey, KeyGrant
from microsync.group.ops import Op, OpKind, Role
from microsync.group.recovery import RecoveryGuest
from microsync.group.view import _Opened
from microsync.identity import DeviceCertificate, LocalIdentity, keys_from_root
from microsync.node.host import DeviceHost
from microsync.node.vault_state import VaultFold
from microsync.protocol.handshake import Handshake, Purpose, pump
from microsync.protocol.noise import CipherState, HandshakeState, SymmetricState
from microsync.protocol.session import GroupProof
from microsync.storage.memory import MemoryStore
from microsync.testing import SimNetwork
from microsync.testing.device import SimDevice
from tests.conftest import make_identity, make_rng

NOW = 1_700_000_000_000

# ----------------------------------------------------------------------------- the walk

SECRET_NAME = re.compile(
    r"root|secret|key|seed|psk|password|passphrase|grant|proof|cipher|aead|^_?ck$|words|code"
    r"|spake",
    re.IGNORECASE,
)
"""Names of fields that may hold key material."""
TEXT_SECRET_NAME = re.compile(r"secret|password|passphrase|words|code", re.IGNORECASE)
"""A ``str`` field holds a secret only under one of these names (``key: str`` is a map key)."""
NO_BYTES = {"int", "bool", "float", "None"}
SEED_TYPES = {"SigningKey", "X25519SecretKey", "SymmetricKey", "InviteSecret", "KeyGrant"}
"""The classes every secret lives in; the closure adds every class holding one of them."""


def package_modules() -> Iterator[ModuleType]:
    root = pathlib.Path(microsync.__file__).parent
    for path in sorted(root.rglob("*.py")):
        parts = ("microsync", *path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts).removesuffix(".__init__")
        if not name.endswith("__main__"):  # running it is the CLI
            yield importlib.import_module(name)


@cache
def package_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in package_modules():
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def members(cls: type) -> list[tuple[str, str]]:
    """``(name, annotation)`` of every field, annotated attribute, slot and ``__init__``
    parameter of ``cls`` (annotations are strings: the package uses ``from __future__``)."""
    if dataclasses.is_dataclass(cls):
        return [(f.name, str(f.type)) for f in dataclasses.fields(cls)]
    found = [(name, str(kind)) for name, kind in vars(cls).get("__annotations__", {}).items()]
    found += [(name, "") for name in vars(cls).get("__slots__", ())]
    init = vars(cls).get("__init__")
    if init is not None:
        for parameter in list(inspect.signature(init).parameters.values())[1:]:
            kind = parameter.annotation
            found.append((parameter.name, "" if kind is inspect.Parameter.empty else str(kind)))
        found += [(name, kind) for name, kind in ASSIGNED.findall(inspect.getsource(init))]
    return found


ASSIGNED = re.compile(r"self\.(\w+)\s*(?::\s*([^=\n]+?))?\s*=(?!=)")
"""``self.name = ...`` or ``self.name: kind = ...`` in an ``__init__``."""


def _names_a_secret(name: str, kind: str) -> bool:
    tokens = set(re.findall(r"\w+", kind))
    if tokens and tokens <= NO_BYTES:
        return False
    if tokens == {"str"} or tokens == {"str", "None"}:
        return TEXT_SECRET_NAME.search(name) is not None
    return SECRET_NAME.search(name) is not None


def _holds_by_name(cls: type) -> bool:
    """A member named like a secret, judged by its annotation where any spelling has one."""
    kinds: dict[str, set[str]] = {}
    for name, kind in members(cls):
        kinds.setdefault(name.lstrip("_"), set()).add(kind)
    return any(
        any(_names_a_secret(name, kind) for kind in (found - {""} or {""}))
        for name, found in kinds.items()
    )


def key_material_classes(classes: dict[str, type]) -> dict[str, type]:
    """The classes that hold key material: by field name, or by a field's type (closure)."""
    candidates = {
        name: cls
        for name, cls in classes.items()
        if not issubclass(cls, enum.Enum | BaseException) and not _is_protocol(cls)
    }
    holding = {
        name
        for name, cls in candidates.items()
        if cls.__name__ in SEED_TYPES or _holds_by_name(cls)
    }
    while True:
        secret_types = {  # a secret reaches a repr only through reprs that print fields
            candidates[n].__name__
            for n in holding
            if n not in PUBLIC and prints_fields(candidates[n])
        }
        more = {
            name
            for name, cls in candidates.items()
            if name not in holding
            and any(set(re.findall(r"\w+", kind)) & secret_types for _, kind in members(cls))
        }
        if not more:
            return {name: candidates[name] for name in sorted(holding)}
        holding |= more


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


def prints_fields(cls: type) -> bool:
    """Does ``repr`` or ``str`` of ``cls`` do anything but name the class and an address?"""
    own: tuple[object, object] = (cls.__repr__, cls.__str__)
    return own != (object.__repr__, object.__str__)


# ----------------------------------------------------------------------------- leaks


def forms(secret: bytes) -> set[str]:
    """Every spelling of ``secret`` (or of a large piece of it) a repr might contain."""
    spelled = {
        secret.hex(),
        secret.hex().upper(),
        repr(secret)[2:-1],
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret[:12]).decode(),
        base64.urlsafe_b64encode(secret[:12]).decode(),
        base64.b32encode(secret).decode().rstrip("=").lower(),
        base64.b32encode(secret[:10]).decode().lower(),
    }
    for start in range(max(len(secret) - 7, 1)):
        window = secret[start : start + 8]
        spelled |= {window.hex(), window.hex().upper()}
        if len(window) == 8:
            spelled.add(repr(window)[2:-1])
    return {form for form in spelled if len(form) >= 12}


def renderings(value: object) -> dict[str, str]:
    """``repr``/``str``/format of ``value`` and of containers holding it."""
    shown = {
        "repr": repr(value),
        "str": str(value),
        "format": f"{value}",
        "list": repr([value]),
        "tuple": repr((value,)),
        "dict": repr({"held": value}),
        "str(list)": str([value]),
        "nested": repr({"held": [(value, value)]}),
    }
    return shown


def assert_no_secret(value: object, secrets: dict[str, bytes]) -> None:
    assert secrets, "a builder must name at least one secret"
    for shown_as, text in renderings(value).items():
        for what, secret in secrets.items():
            assert len(secret) >= 8, f"{what}: too short to test"
            leaked = [form for form in forms(secret) if form in text]
            assert not leaked, f"{type(value).__name__}: {shown_as} shows {what}: {text[:300]}"


# ----------------------------------------------------------------------------- real flows


@dataclass
class World:
    """A group of two on a SimNetwork, an invite and its pairing, a blob, a handshake."""

    net: SimNetwork
    alice: SimDevice
    bob: SimDevice
    group: GroupId
    epoch: EpochKey


def identity_secrets(identity: LocalIdentity, prefix: str = "") -> dict[str, bytes]:
    found = {
        f"{prefix}device key": identity.device_key.secret_bytes(),
        f"{prefix}transport key": identity.transport_key.secret_bytes(),
        f"{prefix}prekey": identity.prekey.secret_bytes(),
    }
    if identity.person_key is not None:
        found[f"{prefix}person key"] = identity.person_key.secret_bytes()
    if identity.root is not None:  # the words, in memory where the person was made
        found[f"{prefix}root"] = identity.root
        found[f"{prefix}recovery key"] = keys_from_root(identity.root)[1].secret_bytes()
    return found


def epoch_secrets(epoch: EpochKey) -> dict[str, bytes]:
    assert epoch.root is not None and epoch.content is not None
    return {
        "epoch root": epoch.root,
        "control key": epoch.control.secret_bytes(),
        "content key": epoch.content.secret_bytes(),
    }


@pytest.fixture(scope="module")
def world() -> World:
    net = SimNetwork(seed=13)
    alice, bob = net.add_device("alice"), net.add_device("bob")
    group = net.create_group(alice, "Family")
    alice.replica(group).add(bob.person_id, "Bob", [bob.grant()], now=net.clock.advance())
    net.settle(group)
    epochs = alice.replica(group).epoch_keys()
    epoch = max(epochs.values(), key=lambda key: key.number)
    assert bob.replica(group).is_member and epoch.root is not None
    return World(net=net, alice=alice, bob=bob, group=group, epoch=epoch)


Built = tuple[object, dict[str, bytes]]


def _invite(purpose: InvitePurpose = InvitePurpose.INVITE) -> Invite:
    role = Role.MEMBER if purpose is InvitePurpose.INVITE else None
    return Invite.issue(
        rng=make_rng("invite"),
        now=NOW,
        purpose=purpose,
        role=role,
        addresses=("192.168.1.20:7400",),
        relay="wss://relay.example.net/r",
    )


def invite_secrets(invite: Invite) -> dict[str, bytes]:
    return {
        "invite secret": invite.secret.secret_bytes(),
        "short code": invite.short_code.password(),
        "code words": " ".join(invite.short_code.words).encode(),
    }


def _pairing_midway() -> tuple[PairingGuest, PairingHost, Invite]:
    """A code pairing after the SPAKE2 exchange: both sides hold session keys."""
    invite = _invite()
    records = {invite.invite_id: invite.record}

    def admit(ident: bytes, request: bytes) -> bytes:
        records[invite.invite_id] = InviteRecord(
            invite_id=invite.invite_id,
            purpose=invite.purpose,
            expires_at=invite.expires_at,
            state=InviteState.CONSUMED,
        )
        return b"welcome"

    host = PairingHost(
        check=records.get,
        admit=admit,
        burn=lambda ident: None,
        rng=make_rng("host"),
        find_code={invite.short_code.nameplate: invite}.get,
    )
    guest = PairingGuest.for_code(
        invite.code, purpose=invite.purpose, request=b"bob's phone", rng=make_rng("guest")
    )
    guest.receive(host.receive(guest.start(), now=NOW))
    return guest, host, invite


def _blob() -> tuple[BlobEncryptor, Manifest, dict[str, bytes]]:
    key, ids_key = make_rng("blob")(32), make_rng("ids")(32)
    encryptor = BlobEncryptor(key, ids_key, 64 * 1024)
    encryptor.update(b"x" * 70_000)
    encryptor.finish()
    manifest = Manifest(
        key=encryptor.key,
        chunk_size=encryptor.chunk_size,
        size=encryptor.size,
        epoch=1,
        ids=tuple(encryptor.ids),
        name="photo.jpg",
        mime="image/jpeg",
    )
    return encryptor, manifest, {"blob key": key, "ids key": ids_key}


def _handshakes() -> tuple[Handshake, Handshake]:
    i = Handshake.initiator(make_identity("hs-i"), Purpose.SYNC, now=NOW, rng=make_rng("i"))
    r = Handshake.responder(make_identity("hs-r"), now=NOW, rng=make_rng("r"))
    pump(i, r)
    assert i.done and r.done
    return i, r


def build_signing_key(world: World) -> Built:
    key = world.alice.identity.device_key
    return key, {"seed": key.secret_bytes()}


def build_x25519_secret(world: World) -> Built:
    key = world.alice.identity.prekey
    return key, {"secret": key.secret_bytes()}


def build_symmetric_key(world: World) -> Built:
    return world.epoch.control, {"key": world.epoch.control.secret_bytes()}


def build_chachapoly(world: World) -> Built:
    key = make_rng("chacha")(32)
    return ChaChaPoly(key), {"key": key}


def build_chunk_cipher(world: World) -> Built:
    key = make_rng("chunk")(32)
    return ChunkCipher(key, b"context"), {"key": key}


def build_spake2(world: World) -> Built:
    password = b"7-ocean-violin-tulip"
    pake = Spake2(side=PakeSide.A, password=password, id_a=b"a", id_b=b"b", rng=make_rng("p"))
    pake.start()
    return pake, {"password": password}


def build_invite_secret(world: World) -> Built:
    invite = _invite()
    return invite.secret, invite_secrets(invite)


def build_invite_link(world: World) -> Built:
    invite = _invite()
    link = parse_link(invite.link)
    assert link.secret == invite.secret
    return link, invite_secrets(invite)


def build_link_hello(world: World) -> Built:
    invite = _invite()
    guest = PairingGuest.for_link(invite.link, request=b"a request")
    step = guest.step
    assert isinstance(step, ReadyForLink)
    hello = LinkHello(purpose=invite.purpose, secret=step.link.secret, request=b"a request")
    assert hello.to_bytes() == guest.start()
    return hello, invite_secrets(invite)


def build_recovery_guest(world: World) -> Built:
    identity = LocalIdentity.restore(
        world.alice.identity.recovery_words(), "alice restored", random.Random(7).randbytes, 1
    )
    assert identity.person_key is not None and identity.recovery_certificate is not None
    guest = RecoveryGuest(
        b"a request", identity.person_key, bytes(32), identity.recovery_certificate
    )
    return guest, identity_secrets(identity)


def build_ready_for_link(world: World) -> Built:
    invite = _invite()
    step = PairingGuest.for_link(invite.link, request=b"a request").step
    assert isinstance(step, ReadyForLink)
    return step, invite_secrets(invite)


def build_short_code(world: World) -> Built:
    invite = _invite()
    return invite.short_code, invite_secrets(invite)


def build_invite(world: World) -> Built:
    invite = _invite(InvitePurpose.LINK)
    return invite, invite_secrets(invite)


def build_book_entry(world: World) -> Built:
    invite = _invite()
    book = InviteBook(MemoryStore())
    book.add(invite, world.group)
    entry = book.get(invite.invite_id)
    assert entry is not None and entry.invite == invite
    return entry, invite_secrets(invite)


def build_pairing_host(world: World) -> Built:
    _, host, invite = _pairing_midway()
    return host, invite_secrets(invite)


def build_pairing_guest(world: World) -> Built:
    guest, _, invite = _pairing_midway()
    return guest, invite_secrets(invite)


def build_device_candidate(world: World) -> Built:
    candidate = DeviceCandidate.generate("Alice laptop", make_rng("laptop"), NOW)
    return candidate, {
        "device key": candidate.device_key.secret_bytes(),
        "transport key": candidate.transport_key.secret_bytes(),
        "prekey": candidate.prekey.secret_bytes(),
    }


def build_link_response(world: World) -> Built:
    person = world.alice.identity.person_key
    assert person is not None
    candidate = DeviceCandidate.generate("Alice laptop", make_rng("laptop"), NOW)
    certificate = DeviceCertificate.issue(person, candidate.device_key.public, "Alice laptop", NOW)
    add = EntryId(bytes([7]) * 32)
    response = LinkResponse(certificate, (world.group,), (add,), person)
    return response, {"person key": person.secret_bytes()}


def build_epoch_key(world: World) -> Built:
    return world.epoch, epoch_secrets(world.epoch)


def build_key_grant(world: World) -> Built:
    grant = KeyGrant.of(world.epoch, full=True)
    assert grant.open(world.group) == world.epoch
    return grant, epoch_secrets(world.epoch)


def build_control_grant(world: World) -> Built:
    grant = KeyGrant.of(world.epoch, full=False)
    return grant, {"control key": world.epoch.control.secret_bytes()}


def build_opened(world: World) -> Built:
    replica = world.bob.replica(world.group)
    stored = next(world.bob.store.entries(replica.id, world.alice.device_id))
    grants = [KeyGrant.of(world.epoch, full=True), KeyGrant.of(world.epoch, full=False)]
    return _Opened(stored.entry, None, [], grants), epoch_secrets(world.epoch)


def _replica_secrets(world: World) -> dict[str, bytes]:
    return identity_secrets(world.alice.identity) | epoch_secrets(world.epoch)


def build_group_replica(world: World) -> Built:
    return world.alice.replica(world.group), _replica_secrets(world)


def build_membership_view(world: World) -> Built:
    return world.alice.replica(world.group)._view, _replica_secrets(world)


def build_intake(world: World) -> Built:
    return world.alice.replica(world.group)._intake, _replica_secrets(world)


def build_draft(world: World) -> Built:
    draft = Draft(op=Op(kind=OpKind.ROTATE), seal=world.epoch, bundles=[], new_keys=(world.epoch,))
    return draft, epoch_secrets(world.epoch)


def build_keyring(world: World) -> Built:
    ring = Keyring(world.group)
    ring.keys[(world.epoch.number, world.epoch.commitment)] = world.epoch
    return ring, epoch_secrets(world.epoch)


def build_local_member(world: World) -> Built:
    member = world.alice.member
    secrets = identity_secrets(member.identity)
    secrets |= {f"prekey {n}": key.secret_bytes() for n, key in member.prekeys.items()}
    return member, secrets


def build_local_identity(world: World) -> Built:
    return world.alice.identity, identity_secrets(world.alice.identity)


def build_sim_device(world: World) -> Built:
    return world.alice, identity_secrets(world.alice.identity) | epoch_secrets(world.epoch)


def build_group_proof(world: World) -> Built:
    keys = world.alice.replica(world.group).epoch_keys().values()
    controls = tuple(key.control.secret_bytes() for key in keys)
    proof = GroupProof(group=world.group, keys=controls[-1:], older=controls[:-1])
    return proof, {f"control key {n}": key for n, key in enumerate(controls)}


def build_mailbox(world: World) -> Built:
    from microsync.group.mailbox import Mailbox

    control = world.epoch.control.secret_bytes()
    box = Mailbox.derive(control)
    return box, {"control key": control, "mailbox seed": box.signing.secret_bytes()}


def build_blob_encryptor(world: World) -> Built:
    encryptor, _, secrets = _blob()
    return encryptor, secrets


def build_blob_decryptor(world: World) -> Built:
    _, manifest, secrets = _blob()
    ids_key = secrets["ids key"]
    decryptor = BlobDecryptor(
        manifest.key, ids_key, manifest.chunk_size, manifest.size, manifest.ids
    )
    return decryptor, secrets


def build_manifest(world: World) -> Built:
    _, manifest, secrets = _blob()
    return manifest, {"blob key": secrets["blob key"]}


def build_vault_op(world: World) -> Built:
    _, manifest, secrets = _blob()
    op = VaultOp.from_bytes(VaultOp(kind=VaultKind.ADD, manifest=manifest).to_bytes())
    return op, {"blob key": secrets["blob key"]}


def build_vault_index(world: World) -> Built:
    _, manifest, secrets = _blob()
    index = VaultIndex()
    op = VaultOp(kind=VaultKind.ADD, manifest=manifest)
    entry, person = EntryId(bytes(32)), world.alice.person_id
    index.apply(entry=entry, person=person, hlc=1, op=op, ids_key=secrets["ids key"])
    assert index.manifests
    return index, {"blob key": secrets["blob key"]}


def build_vault_fold(world: World) -> Built:
    index, secrets = build_vault_index(world)
    fold = VaultFold(world.alice.replica(world.group), DEFAULT_QUOTA)
    # private: a vault fold holding key material, to check its repr
    fold._index = cast(VaultIndex, index)
    fold._id_keys[BlobId(bytes(32))] = b"\x07" * 32
    return fold, secrets | {"ids key": b"\x07" * 32} | _replica_secrets(world)


def build_cipher_state(world: World) -> Built:
    key = make_rng("cipher-state")(32)
    state = CipherState(key)
    state.encrypt_with_ad(b"", b"hello")
    return state, {"key": key}


def build_symmetric_state(world: World) -> Built:
    name = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
    material = make_rng("ikm")(32)
    state = SymmetricState(name, BLAKE2B)
    state.mix_key(material)
    chaining_key, temp_key = BLAKE2B.hkdf(name.ljust(64, b"\x00"), material, 2)
    return state, {"input": material, "ck": chaining_key, "k": temp_key[:32]}


def build_handshake_state(world: World) -> Built:
    static, ephemeral = X25519SecretKey(make_rng("s")(32)), X25519SecretKey(make_rng("e")(32))
    psk = make_rng("psk")(32)
    state = HandshakeState(
        "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
        initiator=True,
        static=static,
        psks=[psk],
        ephemeral=ephemeral,
    )
    state.write_message(b"")
    secrets = {"static": static.secret_bytes(), "ephemeral": ephemeral.secret_bytes()}
    return state, secrets | {"psk": psk}


def build_handshake(world: World) -> Built:
    initiator, _ = _handshakes()
    return initiator, identity_secrets(make_identity("hs-i"))


def build_secure_channel(world: World) -> Built:
    initiator, _ = _handshakes()
    channel = initiator.transport
    channel.encrypt_record(b"a record")
    secrets = identity_secrets(make_identity("hs-i")) | identity_secrets(make_identity("hs-r"))
    return channel, secrets


BUILDERS: dict[str, Callable[[World], Built]] = {
    "microsync.crypto.keys.SigningKey": build_signing_key,
    "microsync.crypto.keys.X25519SecretKey": build_x25519_secret,
    "microsync.crypto.keys.SymmetricKey": build_symmetric_key,
    "microsync.crypto.noise.ChaChaPoly": build_chachapoly,
    "microsync.crypto.stream.ChunkCipher": build_chunk_cipher,
    "microsync.crypto.pake.Spake2": build_spake2,
    "microsync.group.invite.link.InviteSecret": build_invite_secret,
    "microsync.group.invite.link.InviteLink": build_invite_link,
    "microsync.group.invite.shortcode.ShortCode": build_short_code,
    "microsync.group.invite.terms.Invite": build_invite,
    "microsync.group.invite.messages.LinkHello": build_link_hello,
    "microsync.group.recovery.RecoveryGuest": build_recovery_guest,
    "microsync.group.invite.host.PairingHost": build_pairing_host,
    "microsync.group.invite.guest.PairingGuest": build_pairing_guest,
    "microsync.group.invite.guest.ReadyForLink": build_ready_for_link,
    "microsync.group.invite.payloads.DeviceCandidate": build_device_candidate,
    "microsync.group.invite.payloads.LinkResponse": build_link_response,
    "microsync.group.join.BookEntry": build_book_entry,
    "microsync.group.keys.EpochKey": build_epoch_key,
    "microsync.group.keys.KeyGrant": build_key_grant,
    "microsync.group.authoring.Draft": build_draft,
    "microsync.group.intake.Intake": build_intake,
    "microsync.group.replica.GroupReplica": build_group_replica,
    "microsync.group.view.MembershipView": build_membership_view,
    "microsync.group.keyring.Keyring": build_keyring,
    "microsync.group.view._Opened": build_opened,
    "microsync.group.member.LocalMember": build_local_member,
    "microsync.identity.LocalIdentity": build_local_identity,
    "microsync.testing.device.SimDevice": build_sim_device,
    "microsync.protocol.sync.ports.GroupProof": build_group_proof,
    "microsync.group.mailbox.Mailbox": build_mailbox,
    "microsync.blobs.chunks.BlobEncryptor": build_blob_encryptor,
    "microsync.blobs.chunks.BlobDecryptor": build_blob_decryptor,
    "microsync.blobs.manifest.Manifest": build_manifest,
    "microsync.blobs.manifest.VaultOp": build_vault_op,
    "microsync.blobs.index.VaultIndex": build_vault_index,
    "microsync.node.vault_state.VaultFold": build_vault_fold,
    "microsync.protocol.noise.CipherState": build_cipher_state,
    "microsync.protocol.noise.SymmetricState": build_symmetric_state,
    "microsync.protocol.noise.HandshakeState": build_handshake_state,
    "microsync.protocol.handshake.Handshake": build_handshake,
    "microsync.protocol.framing.SecureChannel": build_secure_channel,
}
"""A real instance and the secrets it must not show, per key-holding class."""

EXTRA_BUILDS: dict[str, Callable[[World], Built]] = {
    "control-only KeyGrant": build_control_grant,
}

ASYNC_BUILT = {
    "microsync.node.Device": "test_a_device_its_group_and_its_proofs_show_no_secret",
    "microsync.node.group.Group": "test_a_device_its_group_and_its_proofs_show_no_secret",
}
"""Classes built by the async test below (a real profile on SQLite)."""

PUBLIC: dict[str, str] = {
    "microsync.net.ws_frames.Frame": "a WebSocket frame: opcode and the relayed ciphertext; "
    "its mask is the RFC 6455 client mask, sent in clear on the wire",
    "microsync.net.ws_frames._Header": "a WebSocket frame header: opcode, length and the "
    "RFC 6455 client mask, all sent in clear on the wire",
    "microsync.crypto.keys.VerifyKey": "an Ed25519 public key",
    "microsync.app.viewers.Envelope": "a sealed location copy: device ids, times, a public "
    "ephemeral key, a nonce and ciphertext (what the wire carries)",
    "microsync.node.keeper_chunks.KeeperChunks": "its __repr__ prints only how many keepers",
    "microsync.crypto.keys.X25519PublicKey": "an X25519 public key",
    "microsync.group.keys.Recipient": "a device id and its public prekey",
    "microsync.group.state.DeviceInfo": "a device's certificate and public prekey",
    "microsync.group.state.OpRecord": "grants are DeviceInfo: public prekeys",
    "microsync.group.ops.DeviceGrant": "two public certificates",
    "microsync.group.ops.Op": "an operation's plaintext; _encoded is not printed (repr=False)",
    "microsync.group.invite.payloads.LinkRequest": "a public device key and public certificates",
    "microsync.identity.TransportCertificate": "certifies a public key",
    "microsync.identity.RecoveryCertificate": "a public recovery key's signature of a device",
    "microsync.group.state.MemberInfo": "recovery_key is the public half",
    "microsync.group.invite.payloads.JoinRequest": "a device grant and a public recovery key",
    "microsync.group.invite.messages.RecoverHello": "a join request, a signature, a certificate",
    "microsync.identity.PrekeyCertificate": "certifies a public key",
    "microsync.protocol.relay.Error": "an error code (re-exported as microsync.net.relay.Error)",
    "microsync.protocol.relay_broker.Disconnect": "a client id, an error code, the encoded ERROR",
    "microsync.group.mailbox.Proof": "a mailbox's public key and a signature",
    "microsync.protocol.keeper.Prove": "carries a Proof: public key and signature",
    "microsync.protocol.keeper.Error": "an error code",
    "microsync.protocol.keeper.Refused": "a request number and a refusal code",
    "microsync.protocol.message_types.ErrorMessage": "an error code",
    "microsync.testing.checks.Readability": "key_ref is the public prefix of a commitment",
}
"""Key-named classes whose fields are public values, and why."""


def _covered() -> set[str]:
    return set(BUILDERS) | set(PUBLIC) | set(ASYNC_BUILT)


# ----------------------------------------------------------------------------- tests


def test_the_walk_sees_every_module_and_finds_the_known_key_holders() -> None:
    classes = package_classes()
    assert "microsync.app.snapshot.Snapshot" in classes  # microsync.app has no __init__.py
    holders = key_material_classes(classes)
    for name in ("microsync.group.keys.KeyGrant", "microsync.protocol.sync.ports.GroupProof"):
        assert name in holders
    assert "microsync.state.ops.RegisterSet" not in holders  # ``key: str`` is a map key


def test_the_walk_flags_a_new_class_that_holds_a_key() -> None:
    @dataclass(frozen=True)
    class NewThing:
        epoch_root: bytes

    @dataclass(frozen=True)
    class HoldsAGrant:
        what: KeyGrant

    @dataclass(frozen=True)
    class Harmless:
        key: str
        count: int

    classes = {"t.NewThing": NewThing, "t.HoldsAGrant": HoldsAGrant, "t.Harmless": Harmless}
    classes["microsync.group.keys.KeyGrant"] = KeyGrant
    assert set(key_material_classes(classes)) == {
        "t.NewThing",
        "t.HoldsAGrant",
        "microsync.group.keys.KeyGrant",
    }


def test_every_key_holding_class_is_covered() -> None:
    holders = key_material_classes(package_classes())
    printing = {name for name, cls in holders.items() if prints_fields(cls)}
    missing = sorted(printing - _covered())
    assert not missing, (
        "these classes hold key material and print their fields; add a builder to "
        f"tests/test_no_secrets_in_repr.py (or a PUBLIC entry saying why): {missing}"
    )
    stale = sorted(_covered() - set(package_classes()))
    assert not stale, f"covered classes that no longer exist: {stale}"


def test_classes_with_object_repr_show_no_field() -> None:
    """A key holder that keeps ``object``'s repr prints only its class and address."""
    holders = key_material_classes(package_classes())
    silent = [cls for cls in holders.values() if not prints_fields(cls)]
    assert silent  # e.g. BlobDecryptor, GroupReplica, NetworkMixin
    for cls in silent:
        bare: object = object.__new__(cls)
        pattern = rf"<{re.escape(cls.__module__)}\.{re.escape(cls.__qualname__)} object at 0x\w+>"
        assert re.fullmatch(pattern, repr(bare)) and str(bare) == repr(bare)


@pytest.mark.parametrize("name", sorted(BUILDERS) + sorted(EXTRA_BUILDS))
def test_no_secret_in_repr_or_str(name: str, world: World) -> None:
    build = BUILDERS.get(name) or EXTRA_BUILDS[name]
    value, secrets = build(world)
    if name in BUILDERS:
        assert type(value) is package_classes()[name]
    assert_no_secret(value, secrets)


def test_the_check_catches_a_leak() -> None:
    """The detector itself: a dataclass that prints its key is caught in every spelling."""
    secret = make_rng("leak")(32)

    @dataclass(frozen=True)
    class Leaky:
        key: bytes

    with pytest.raises(AssertionError, match="shows"):
        assert_no_secret(Leaky(secret), {"key": secret})
    for shown in (secret.hex()[6:40], base64.b64encode(secret).decode(), repr(secret[3:20])):

        class Shown:
            def __repr__(self, shown: str = shown) -> str:
                return f"Shown({shown})"

        with pytest.raises(AssertionError, match="shows"):
            assert_no_secret(Shown(), {"key": secret})


async def test_a_device_its_group_and_its_proofs_show_no_secret(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "alice", name="Alice") as alice:
        group = await alice.create_group("Family")
        await group.vault.add(b"y" * 5000, name="notes.txt")
        proofs = DeviceHost(alice).sync_groups()
        assert proofs and proofs[0].keys
        host = DeviceHost(alice)
        root = seed_from_words(alice.export_recovery_words())
        person_key, recovery_key = keys_from_root(root)
        secrets = {
            "root": root,
            "person key": person_key.secret_bytes(),
            "recovery key": recovery_key.secret_bytes(),
            "recovery words": " ".join(alice.export_recovery_words()).encode(),
        }
        secrets |= {f"proof key {n}": key for n, key in enumerate(proofs[0].keys)}
        for value in (alice, group, proofs[0], proofs, host, group.vault):
            assert_no_secret(value, secrets)
