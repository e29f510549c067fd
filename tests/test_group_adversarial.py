"""Attacks on the group layer: what a removed member, a rogue member, a relay or a replayer can
do with entries, wraps and bodies. Feed-level rejections leave the store byte-for-byte as it
was; group-level rejections leave the membership and the keyring as they were."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from microsync import encoding
from microsync.crypto import labels
from microsync.errors import (
    BadSignature,
    DecodeError,
    DecryptionError,
    NotAMember,
    StorageError,
    VerificationError,
    WrongGroup,
)
from microsync.feed import append
from microsync.feed.entry import Entry, EntryId, Header, body_hash, parse_entry
from microsync.feed.ingest import Ingested
from microsync.group.authoring import Draft
from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    Recipient,
    decrypt_content,
    encrypt_content,
    open_bundle,
    seal_bundle,
)
from microsync.group.ops import MEMBERSHIP_TYPE, EpochAnnouncement, Op, OpKind, Role
from microsync.group.ops import recipients_digest as digest_of
from microsync.group.replica import _decode_envelope, _encode_envelope
from microsync.storage.memory import MemoryStore
from tests.conftest import make_rng
from tests.group_helpers import (
    Item,
    Peer,
    found,
    group_of,
    item,
    items_of,
    make_peers,
    outsider,
    stored_entry,
    sync,
    sync_all,
)


def snapshot(peer: Peer) -> tuple[object, ...]:
    """What a group-level rejection must not change."""
    g = peer.group
    return (g.state.signature(), g.resolution.effective, g.epoch_keys(), g.current_epoch_key())


def forge(
    attacker: Peer,
    op: Op,
    *,
    seal: EpochKey,
    bundles: Sequence[tuple[Purpose, int, encoding.Value]] = (),
    deps: Sequence[EntryId] | None = None,
) -> Item:
    """Append an op entry to ``attacker``'s own feed WITHOUT its replica's checks: what a
    modified client could send. Returns it as an item to deliver."""
    store = attacker.store
    group = attacker.group.id
    seq = store.feed_status(group, attacker.device).head_seq + 1
    sealed = encrypt_content(
        make_rng(f"forge-{seq}"),
        seal.control,
        seal.ref,
        op.to_bytes(),
        group=group,
        epoch=seal.number,
        device=attacker.device,
        seq=seq,
        type=MEMBERSHIP_TYPE,
    )
    body = _encode_envelope(list(bundles), sealed)
    heads = deps if deps is not None else sorted(attacker.group._heads)
    entry = append(
        store,
        attacker.identity.device_key,
        group=group,
        type=MEMBERSHIP_TYPE,
        body=body,
        epoch=seal.number,
        hlc=99,
        deps=heads,
    )
    return entry.wire, body


def held_key(peer: Peer) -> EpochKey:
    key = peer.group.current_epoch_key()
    assert key is not None
    return key


def bundle_for(
    sender: Peer,
    recipients: Sequence[Peer],
    grants: list[KeyGrant],
    *,
    epoch: int,
    purpose: Purpose = Purpose.ROTATION,
    group: bytes | None = None,
) -> tuple[Purpose, int, encoding.Value]:
    value = seal_bundle(
        make_rng("forged-bundle"),
        group=group or sender.group.id,  # type: ignore[arg-type]
        epoch=epoch,
        sender=sender.device,
        purpose=purpose,
        recipients=[
            Recipient(p.device, p.identity.prekey_certificate.prekey_id, p.identity.prekey.public)
            for p in recipients
        ],
        grants=grants,
    )
    return purpose, epoch, value


def everything_held(peer: Peer) -> list[EpochKey]:
    """Every key ``peer`` holds, plus every key any bundle in its store opens for it."""
    keys = list(peer.group.epoch_keys().values())
    for wire, body in items_of(peer.store, peer.group.id):
        entry = parse_entry(wire)
        if entry.header.type != MEMBERSHIP_TYPE or body is None:
            continue
        bundles, _ = _decode_envelope(body)
        for purpose, epoch, bundle in bundles:
            try:
                grants = open_bundle(
                    bundle,
                    group=peer.group.id,
                    epoch=epoch,
                    sender=entry.header.device,
                    purpose=purpose,
                    me=peer.device,
                    prekeys=peer.member.prekeys,
                )
            except (DecryptionError, DecodeError):
                continue
            keys += [g.open(peer.group.id) for g in grants or []]
    return keys


def opens_with_any(keys: list[EpochKey], stored_body: bytes, entry: Entry) -> bool:
    h = entry.header
    body = stored_body
    if h.type == MEMBERSHIP_TYPE:
        body = _decode_envelope(stored_body)[1]
    for key in keys:
        for symmetric in (key.control, key.content):
            if symmetric is None:
                continue
            try:
                decrypt_content(
                    symmetric,
                    body,
                    group=h.group,
                    epoch=h.epoch,
                    device=h.device,
                    seq=h.seq,
                    type=h.type,
                )
            except DecryptionError:
                continue
            return True
    return False


# --------------------------------------------------------------------------- removal


def test_a_removed_member_cannot_open_anything_of_the_new_epoch() -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="A")
    old = a.group.append_content(100, b"before", now=5)
    sync(a, b, c)
    removal = a.group.remove(b.person, now=10)
    sync_all(peers)  # B hears of its own removal
    assert not b.group.is_member
    new_epoch = a.group.state.max_epoch
    written = [
        a.group.append_content(100, b"one", now=11),
        c.group.append_content(100, b"two", now=12),
        a.group.create_invite(b"i" * 32, expires_at=10**12, role=Role.MEMBER, now=13),
        c.group.rotate(now=14),
        a.group.append_content(100, b"three", now=15),
    ]
    sync_all(peers)
    held = everything_held(b)
    assert any(k.number == 0 and k.root is not None for k in held)  # B kept the old key
    assert opens_with_any(held, stored_entry(b.store, old).body or b"", old)
    for entry in written:
        assert entry.header.epoch >= new_epoch
        body = stored_entry(b.store, entry).body
        assert body is not None
        assert not opens_with_any(held, body, entry), entry
        with pytest.raises(DecryptionError):
            b.group.decrypt(stored_entry(b.store, entry))
    # the removal's own rotation bundle holds no wrap for B
    bundles, _ = _decode_envelope(stored_entry(b.store, removal).body or b"")
    [(purpose, epoch, bundle)] = bundles
    assert (
        open_bundle(
            bundle,
            group=a.group.id,
            epoch=epoch,
            sender=a.device,
            purpose=purpose,
            me=b.device,
            prekeys=b.member.prekeys,
        )
        is None
    )
    # and no member answers its key requests
    for peer in (a, c):
        with pytest.raises(NotAMember):
            peer.group.answer_key_request(b.device, b.group.missing_keys())


def test_a_removed_member_cannot_rotate_or_write() -> None:
    a, b = peers = group_of("A", "B")
    a.group.remove(b.person, now=10)
    sync_all(peers)
    dump = b.store.dump()
    for attempt in (
        lambda: b.group.rotate(now=11),
        lambda: b.group.append_content(100, b"x", now=11),
        lambda: b.group.leave(now=11),
    ):
        with pytest.raises(NotAMember):
            attempt()
    assert b.store.dump() == dump


# --------------------------------------------------------------------------- impersonation


def test_a_member_cannot_author_as_another_member() -> None:
    a, b, c = peers = group_of("A", "B", "C")
    sync_all(peers)
    key = held_key(c)
    assert key.content is not None
    seq = c.store.feed_status(c.group.id, a.device).head_seq + 1
    prev = c.store.feed_status(c.group.id, a.device).head_id
    body = encrypt_content(
        make_rng("imp"), key.content, key.ref, b"I am A", group=c.group.id, epoch=key.number,
        device=a.device, seq=seq, type=100,
    )  # fmt: skip
    header = Header(
        group=c.group.id, device=a.device, seq=seq, prev=prev, epoch=key.number, type=100,
        hlc=5, deps=(), body_hash=body_hash(body), body_len=len(body),
    )  # fmt: skip
    header_bytes = header.to_bytes()
    wire = header_bytes + c.identity.device_key.sign(labels.ENTRY_SIGNATURE, header_bytes)
    for victim in (a, b):
        dump, before = victim.store.dump(), snapshot(victim)
        [result] = victim.group.receive([(wire, body)])
        assert isinstance(result, BadSignature)
        assert victim.store.dump() == dump and snapshot(victim) == before


def test_a_membership_op_signed_by_one_member_as_another_is_refused() -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="A")
    sync_all(peers)
    # C (not an admin) forges "A removes B"
    key = held_key(c)
    op = Op(
        kind=OpKind.REMOVE,
        person=b.person,  # type: ignore[arg-type]
        epoch=EpochAnnouncement(1, b"\0" * 32, digest_of([a.device, c.device])),
    )
    seq = c.store.feed_status(c.group.id, a.device).head_seq + 1
    sealed = encrypt_content(
        make_rng("imp-op"), key.control, key.ref, op.to_bytes(), group=c.group.id,
        epoch=key.number, device=a.device, seq=seq, type=MEMBERSHIP_TYPE,
    )  # fmt: skip
    body = _encode_envelope([], sealed)
    header = Header(
        group=c.group.id, device=a.device, seq=seq,
        prev=c.store.feed_status(c.group.id, a.device).head_id, epoch=key.number,
        type=MEMBERSHIP_TYPE, hlc=5, deps=tuple(sorted(c.group._heads)),
        body_hash=body_hash(body), body_len=len(body),
    )  # fmt: skip
    wire = header.to_bytes() + c.identity.device_key.sign(labels.ENTRY_SIGNATURE, header.to_bytes())
    for victim in (a, b):
        dump, before = victim.store.dump(), snapshot(victim)
        [result] = victim.group.receive([(wire, body)])
        assert isinstance(result, BadSignature)
        assert victim.store.dump() == dump and snapshot(victim) == before


# --------------------------------------------------------------------------- unauthorised changes


def unauthorised_ops(attacker: Peer, target: Peer, newcomer: Peer) -> dict[str, Op]:
    remaining = [d for d in attacker.group.state.entitled_devices() if d != target.device]
    return {
        "add": Op(
            kind=OpKind.ADD,
            person=newcomer.person,  # type: ignore[arg-type]
            name="N",
            role=Role.ADMIN,
            devices=(newcomer.member.grant(),),
        ),
        "remove": Op(
            kind=OpKind.REMOVE,
            person=target.person,  # type: ignore[arg-type]
            epoch=EpochAnnouncement(
                attacker.group.state.max_epoch + 1, b"\1" * 32, digest_of(remaining)
            ),
        ),
        "promote": Op(kind=OpKind.SET_ROLE, person=attacker.person, role=Role.ADMIN),  # type: ignore[arg-type]
        "invite": Op(kind=OpKind.INVITE, invite_id=b"i" * 32, time=10**12, role=Role.ADMIN),
    }


@pytest.mark.parametrize("kind", ["add", "remove", "promote", "invite"])
def test_a_non_admins_admin_ops_are_void_for_every_member(kind: str) -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="A")
    n = outsider(peers, "N")
    op = unauthorised_ops(c, a, n)[kind]
    with pytest.raises(NotAMember):  # the honest client refuses ...
        c.group._author(Draft(op=op, seal=held_key(c), bundles=[]), 20)
    forged = forge(c, op, seal=held_key(c))  # ... a modified one sends it anyway
    for peer in (a, b):
        before = snapshot(peer)
        [result] = peer.group.receive([forged])
        assert isinstance(result, Ingested)
        assert snapshot(peer) == before
        assert parse_entry(forged[0]).id not in peer.group.resolution.effective
        assert peer.group.operation(parse_entry(forged[0]).id) is not None  # opened, then void


def test_a_removed_admins_later_add_is_void() -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="AB")
    n = outsider(peers, "N")
    removal = a.group.remove(b.person, now=10)
    sync_all(peers)
    add = Op(
        kind=OpKind.ADD,
        person=n.person,  # type: ignore[arg-type]
        name="N",
        role=Role.MEMBER,
        devices=(n.member.grant(),),
    )
    old_key = max(b.group.epoch_keys().values(), key=lambda k: k.number)
    history = bundle_for(b, [n], [KeyGrant.of(old_key, True)], epoch=old_key.number,
                         purpose=Purpose.HISTORY)  # fmt: skip
    after = forge(b, add, seal=old_key, bundles=[history])  # having seen its removal
    concurrent = forge(b, add, seal=old_key, bundles=[history], deps=removal.header.deps)
    for peer in (a, c):
        before = snapshot(peer)
        peer.group.receive([after, concurrent])
        assert snapshot(peer) == before
        assert n.person not in peer.group.state.members


def test_a_key_whose_commitment_was_never_announced_is_never_kept() -> None:
    a, b, c = peers = group_of("A", "B", "C")
    rogue = EpochKey.from_root(a.group.id, 1, b"\x66" * 32)
    real = EpochKey.from_root(a.group.id, 1, b"\x77" * 32)
    swapped = KeyGrant(real.number, real.commitment, rogue.root or b"", True)  # mismatched
    op = Op(
        kind=OpKind.ROTATE,
        epoch=EpochAnnouncement(1, real.commitment, digest_of(c.group.state.entitled_devices())),
    )
    bundle = bundle_for(c, peers, [KeyGrant.of(rogue, True), swapped], epoch=1)
    forged = forge(c, op, seal=held_key(c), bundles=[bundle])
    for peer in (a, b):
        peer.group.receive([forged])
        held = peer.group.epoch_keys()
        assert (1, rogue.commitment) not in held
        assert all(k.root != rogue.root for k in held.values())
        assert (1, real.commitment) in peer.group.state.epochs  # announced, but no key for it
        assert (1, real.commitment) not in held
    # nor through a key response
    for peer in (a, b):
        before = snapshot(peer)
        response = bundle_for(c, [peer], [KeyGrant.of(rogue, True)], epoch=1,
                              purpose=Purpose.KEY_RESPONSE)  # fmt: skip
        assert peer.group.accept_key_response(c.device, response) == 0
        assert snapshot(peer) == before


def test_a_key_response_for_another_device_or_group_gives_nothing() -> None:
    a, b, c = group_of("A", "B", "C")
    c.group.rotate(now=10)
    sync(c, a)  # A holds the new key; B does not yet
    wanted = [(1, held_key(a).commitment)]
    to_c = a.group.answer_key_request(c.device, wanted)
    before = snapshot(b)
    assert b.group.accept_key_response(a.device, to_c) == 0  # no wrap for B in it
    assert snapshot(b) == before
    other_group = bundle_for(a, [b], [KeyGrant.of(held_key(a), True)], epoch=1,
                             purpose=Purpose.KEY_RESPONSE, group=b"\x42" * 32)  # fmt: skip
    with pytest.raises(DecryptionError):
        b.group.accept_key_response(a.device, other_group)
    with pytest.raises(DecryptionError):  # a rotation bundle replayed as a response
        b.group.accept_key_response(a.device, (Purpose.ROTATION, *other_group[1:]))
    assert snapshot(b) == before
    # the real answer, addressed to B, works
    sync(c, b)
    assert snapshot(b) != before


def test_a_wrap_smuggled_in_a_content_entry_is_not_a_key() -> None:
    a, b, c = peers = group_of("A", "B", "C")
    rogue = EpochKey.from_root(a.group.id, 1, b"\x66" * 32)
    bundle = bundle_for(c, peers, [KeyGrant.of(rogue, True)], epoch=1)
    op = Op(kind=OpKind.ROTATE, epoch=EpochAnnouncement(1, rogue.commitment, b"\0" * 32))
    key = held_key(c)
    sealed = encrypt_content(
        make_rng("s"), key.control, key.ref, op.to_bytes(), group=c.group.id, epoch=0,
        device=c.device, seq=1, type=MEMBERSHIP_TYPE,
    )  # fmt: skip
    for plaintext in (encoding.encode(bundle[2]), _encode_envelope([bundle], sealed)):
        entry = c.group.append_content(100, plaintext, now=20)
        for peer in (a, b):
            before = snapshot(peer)
            sync(c, peer)
            assert peer.group.decrypt(stored_entry(peer.store, entry)) == plaintext
            assert snapshot(peer) == before


def test_a_malformed_envelope_from_a_member_never_takes_effect() -> None:
    a, b = group_of("A", "B")
    for junk in (b"", b"\xff", encoding.encode([1, [], b""]), encoding.encode([2, [], b"x" * 60])):
        entry = append(
            b.store, b.identity.device_key, group=b.group.id, type=MEMBERSHIP_TYPE, body=junk,
            epoch=0, hlc=1, deps=sorted(b.group._heads),
        )  # fmt: skip
        before = snapshot(a)
        [result] = a.group.receive([item(b.store, entry)])
        assert isinstance(result, Ingested)
        assert snapshot(a) == before


# --------------------------------------------------------------------------- replay


def test_an_entry_replayed_into_another_group_is_refused_by_the_feed() -> None:
    a, b = group_of("A", "B")
    [other_founder] = make_peers("A", seed="other")
    found(other_founder)
    entry = a.group.append_content(100, b"for the family", now=10)
    for victim in (b, other_founder):
        if victim is other_founder:
            wire, body = item(a.store, entry)
        else:
            wire, body = items_of(other_founder.store, other_founder.group.id)[0]
        dump, before = victim.store.dump(), snapshot(victim)
        [result] = victim.group.receive([(wire, body)])
        assert isinstance(result, WrongGroup)
        assert victim.store.dump() == dump and snapshot(victim) == before


def test_a_body_replayed_under_another_seq_or_epoch_does_not_decrypt() -> None:
    a, b = group_of("A", "B")
    first = a.group.append_content(100, b"once", now=10)
    body = stored_entry(a.store, first).body
    assert body is not None
    replays = [
        append(a.store, a.identity.device_key, group=a.group.id, type=100, body=body, epoch=0,
               hlc=11),  # same epoch, next seq
        append(a.store, a.identity.device_key, group=a.group.id, type=101, body=body, epoch=0,
               hlc=12),  # another type
    ]  # fmt: skip
    a.group.rotate(now=13)
    replays.append(
        append(a.store, a.identity.device_key, group=a.group.id, type=100, body=body, epoch=1,
               hlc=14)  # under the next epoch
    )  # fmt: skip
    sync(a, b)
    assert b.group.decrypt(stored_entry(b.store, first)) == b"once"
    for replay in replays:
        with pytest.raises(DecryptionError):
            b.group.decrypt(stored_entry(b.store, replay))


def test_a_membership_body_replayed_at_another_seq_stays_locked() -> None:
    a, b, c = group_of("A", "B", "C", admins="AB")
    removal = a.group.remove(c.person, now=10)
    body = stored_entry(a.store, removal).body
    assert body is not None
    replay = append(
        a.store, a.identity.device_key, group=a.group.id, type=MEMBERSHIP_TYPE, body=body,
        epoch=removal.header.epoch, hlc=11, deps=[removal.id],
    )  # fmt: skip
    sync(a, b)
    assert b.group.operation(removal.id) is not None
    assert b.group.operation(replay.id) is None and replay.id in b.group.locked()
    assert b.group.state.signature() == a.group.state.signature()


def test_garbage_on_the_wire_leaves_the_store_unchanged() -> None:
    a, b = group_of("A", "B")
    entry = a.group.append_content(100, b"x", now=10)
    wire, body = item(a.store, entry)
    assert body is not None
    dump, before = b.store.dump(), snapshot(b)
    bad: list[Item] = [
        (b"", None),
        (b"\x00" * 10, None),
        (wire[:-1], body),
        (wire[:40] + bytes([wire[40] ^ 1]) + wire[41:], body),
        (wire, body + b"\0"),
        (wire, body[:-1]),
        (b"\x9f" + wire, body),
    ]
    for result in b.group.receive(bad):
        assert isinstance(result, DecodeError | VerificationError), result
    assert b.store.dump() == dump and snapshot(b) == before


# --------------------------------------------------------------------------- history setting


@pytest.mark.parametrize("history", ["shared", "none"])
def test_a_late_joiner_reads_old_content_only_with_shared_history(history: str) -> None:
    a, b = group_of("A", "B", history=history)
    old = [
        a.group.append_content(100, b"old news", now=5),
        b.group.append_content(100, b"hi", now=6),
    ]
    a.group.rotate(now=7)
    older = a.group.append_content(100, b"after rotation", now=8)
    sync_all([a, b])
    late = outsider([a, b], "L")
    a.group.add(late.person, "L", [late.member.grant()], now=20)
    sync(a, late)
    sync(b, late)
    assert late.group.is_member
    assert late.group.state.signature() == a.group.state.signature()
    assert not late.group.locked()
    for entry in [*old, older]:
        stored = stored_entry(late.store, entry)
        if history == "shared":
            assert late.group.decrypt(stored) in (b"old news", b"hi", b"after rotation")
        else:
            with pytest.raises(DecryptionError):
                late.group.decrypt(stored)
    if history == "none":  # only control keys of the past
        assert not opens_with_any(everything_held(late), stored_entry(late.store, old[0]).body
                                  or b"", old[0])  # fmt: skip
    new = a.group.append_content(100, b"welcome", now=21)
    sync(a, late)
    assert late.group.decrypt(stored_entry(late.store, new)) == b"welcome"


def test_history_none_refuses_content_keys_for_old_epochs_on_request() -> None:
    a, b = group_of("A", "B", history="none")
    late = outsider([a, b], "L")
    a.group.add(late.person, "L", [late.member.grant()], now=20)
    sync(a, late)
    old = [(n, c) for (n, c) in a.group.state.epochs if n < a.group.state.max_epoch]
    response = a.group.answer_key_request(late.device, old)
    late.group.accept_key_response(a.device, response)
    for slot in old:
        assert late.group.epoch_keys()[slot].root is None


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("race", ["demoted-admin", "invite-redeemed-twice"])
def test_a_voided_joiner_cannot_read_what_is_written_after(race: str) -> None:
    a, b, _c = peers = group_of("A", "B", "C", admins="AB")
    d = outsider(peers, "D")
    if race == "demoted-admin":
        a.group.set_role(b.person, Role.MEMBER, now=10)
        adds = [b.group.add(d.person, "D", [d.member.grant()], now=10)]
    else:
        e = outsider(peers, "E")
        a.group.create_invite(b"i" * 32, expires_at=10**12, role=Role.MEMBER, now=10)
        sync(a, b)
        adds = [
            a.group.add(e.person, "E", [e.member.grant()], invite_id=b"i" * 32, now=11),
            b.group.add(d.person, "D", [d.member.grant()], invite_id=b"i" * 32, now=11),
        ]
    sync_all(peers)
    void = [x for x in adds if x.id not in a.group.resolution.effective]
    assert len(void) == 1
    loser = d if void[0].id == adds[-1].id else e
    entry = a.group.append_content(100, b"members only", now=12)
    sync(a, loser)
    sync(b, loser)
    assert not loser.group.is_member
    body = stored_entry(loser.store, entry).body or b""
    assert not opens_with_any(everything_held(loser), body, entry)


class FailingMetaStore(MemoryStore):
    fail = False

    def put_meta(self, key: str, value: bytes) -> None:
        if self.fail:
            raise StorageError("disk full")
        super().put_meta(key, value)


def test_a_storage_failure_while_receiving_leaves_memory_as_it_was() -> None:
    a, b = group_of("A", "B")
    store = FailingMetaStore()
    for record in ("_t",):
        setattr(store, record, getattr(b.store, record))
    b.store = store
    b.group.store = store
    a.group.rotate(now=10)
    dump, before = store.dump(), snapshot(b)
    store.fail = True
    with pytest.raises(StorageError):
        b.group.receive(items_of(a.store, a.group.id)[-1:])
    assert store.dump() == dump
    assert snapshot(b) == before
