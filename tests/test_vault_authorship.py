"""Vault authorship cannot be taken (issue 13, item 5), and a member's announcements cost
every device a bounded amount (the per-person quota).

Bob is a member whose device is under his control (:class:`~microsync.testing.hostile.Hostile`):
he reads Alice's manifest, re-announces it with an earlier timestamp and his own thumbnail
(with her key, and with another key), and removes her blob. Everyone still shows Alice as the
adder, Alice fetches and removes her photo, Bob's removal does nothing anywhere, and his own
copy's removal never touches her chunks. Offline (``share``) and over real connections on
127.0.0.1."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

import microsync
from microsync.blobs import (
    VAULT_TYPE,
    BlobId,
    BlobRef,
    ChunkId,
    Manifest,
    Quota,
    Refusal,
    VaultKind,
    VaultOp,
)
from microsync.errors import PeerUnreachable, VaultQuotaExceeded
from microsync.feed import EntryId
from microsync.node.vault import Vault
from microsync.testing.hostile import Hostile
from tests.test_app_group import family_of, share
from tests.test_net_sync import eventually
from tests.test_vault import CHUNK, payload


def manifest_of(evil: Hostile, entry: EntryId) -> Manifest:
    """The manifest of the ADD ``entry``, as the member holding ``evil`` reads it."""
    for found, plaintext in evil.read_content(VAULT_TYPE):
        op = VaultOp.from_bytes(plaintext)
        if found.id == entry and op.manifest is not None:
            return op.manifest
    raise LookupError("no such manifest")


def announce(evil: Hostile, manifest: Manifest, *, hlc: int) -> None:
    evil.append_content(
        VAULT_TYPE, VaultOp(kind=VaultKind.ADD, manifest=manifest).to_bytes(), hlc=hlc
    )


def remove(evil: Hostile, blob: BlobRef | bytes, *, hlc: int) -> None:
    op = VaultOp(kind=VaultKind.REMOVE, blob=BlobId(bytes(blob)))
    evil.append_content(VAULT_TYPE, op.to_bytes(), hlc=hlc)


def take_over(bob: microsync.Group, ref: BlobRef) -> None:
    """Bob's attack: Alice's manifest again, earlier and with his thumbnail (once with her
    key, once with another), and a removal of her blob."""
    evil = Hostile.of_group(bob)
    theirs = manifest_of(evil, ref.entry)
    announce(evil, replace(theirs, thumbnail=b"bob's thumb"), hlc=ref.added_at - 60_000)
    other_key = replace(theirs, thumbnail=b"bob's thumb", key=os.urandom(32))
    announce(evil, other_key, hlc=ref.added_at - 120_000)
    remove(evil, ref, hlc=ref.added_at + 1)


def assert_hers(group: microsync.Group, ref: BlobRef, alice: microsync.Group) -> None:
    seen = group.vault.get(ref.id)
    assert seen.author == alice.device.person_id and seen.thumbnail == b"alice's thumb"
    assert (seen.added_at, seen.entry, seen.name) == (ref.added_at, ref.entry, ref.name)


async def test_a_reannounced_blob_stays_its_adders_and_only_she_removes_it(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        data = payload(3 * CHUNK + 5)
        ref = await alice.vault.add(
            data, name="beach.jpg", chunk_size=CHUNK, thumbnail=b"alice's thumb"
        )
        share(alice, bob, carol)
        take_over(bob, ref)
        share(alice, bob, carol)
        for group in (alice, bob, carol):
            assert_hers(group, ref, alice)
            copies = [r for r in group.vault.list() if r.id != ref.id]
            assert len(copies) == 2 and {r.author for r in copies} == {bob.device.person_id}
            assert group.vault.refused[Refusal.NOT_THE_ADDER] == 1
        assert (await alice.vault.fetch(ref, tmp_path / "beach.out")).read_bytes() == data
        await alice.vault.remove(ref)
        share(alice, bob, carol)
        for group in (alice, bob, carol):
            with pytest.raises(KeyError):
                group.vault.get(ref.id)
        assert alice.vault.usage().chunks_held == 0


async def test_over_real_connections_bobs_removals_never_touch_alices_chunks(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        data = payload(6 * CHUNK + 1)
        ref = await alice.vault.add(
            data, name="beach.jpg", chunk_size=CHUNK, thumbnail=b"alice's thumb"
        )
        share(alice, bob, carol)
        for group in (alice, bob):
            await group.device.start(lan=False, port=0)
            stack.push_async_callback(group.device.stop)
        ports = [f"127.0.0.1:{g.device.port}" for g in (alice, bob)]
        bob.device.connect(ports[0])
        await carol.device.start(lan=False, port=None, peers=tuple(ports))
        stack.push_async_callback(carol.device.stop)
        await eventually(lambda: sum(p.synced for p in carol.device.peers()) == 2)
        assert (await carol.vault.fetch(ref, tmp_path / "c.jpg")).read_bytes() == data
        assert not carol.vault.missing(ref)  # Carol holds every chunk of Alice's photo

        take_over(bob, ref)  # goes out live to Alice and Carol
        for group in (alice, carol):
            await eventually(lambda g=group: len(g.vault.list()) == 3)  # type: ignore[misc]
            await eventually(lambda g=group: g.vault.refused.get(Refusal.NOT_THE_ADDER) == 1)  # type: ignore[misc]
            assert_hers(group, ref, alice)
        [copy, _] = [r for r in carol.vault.list() if r.id != ref.id]
        with pytest.raises(PeerUnreachable):  # his copy names addresses nobody holds
            await carol.vault.fetch(copy, tmp_path / "copy.jpg", timeout=5)
        await bob.vault.remove(copy)  # his own copy: he may, and it is his chunks only
        await eventually(lambda: all(r.id != copy.id for r in carol.vault.list()))
        assert not carol.vault.missing(ref) and not alice.vault.missing(ref)
        assert (await carol.vault.fetch(ref, tmp_path / "c2.jpg")).read_bytes() == data

        await alice.vault.remove(ref)
        await eventually(lambda: carol.vault.usage().chunks_held == 0)
        with pytest.raises(KeyError):
            carol.vault.get(ref.id)


async def test_an_unfetchable_announcement_does_not_hold_up_prefetch(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        ref = await alice.vault.add(payload(2 * CHUNK), name="real", chunk_size=CHUNK)
        share(alice, bob)
        evil = Hostile.of_group(bob)
        bogus = replace(manifest_of(evil, ref.entry), key=os.urandom(32), name="bogus")
        bogus = replace(
            bogus, ids=tuple(ChunkId(os.urandom(32)) for _ in bogus.ids)
        )  # nobody has them
        announce(evil, bogus, hlc=ref.added_at + 1_000)  # newer: listed first
        share(alice, bob, carol)
        carol.vault.policy = "all"
        await alice.device.start(lan=False, port=0)
        stack.push_async_callback(alice.device.stop)
        await carol.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))
        stack.push_async_callback(carol.device.stop)
        await eventually(lambda: any(p.synced for p in carol.device.peers()))
        assert carol.vault.list()[0].name == "bogus"
        assert await carol.vault.prefetch(timeout=5) == 1
        assert not carol.vault.missing(ref)


async def test_the_quota_bounds_a_flood_on_every_device_and_refuses_a_local_add(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        mine = [await alice.vault.add(f"a{i}".encode(), name=f"a{i}") for i in range(2)]
        flood = await bob.vault.add(b"seed", name="seed")
        evil = Hostile.of_group(bob)
        template = manifest_of(evil, flood.entry)
        for i in range(10):  # his blobs, before the seed: a quota of 3 keeps the first three
            forged = replace(template, key=os.urandom(32), name=f"b{i}")
            announce(evil, forged, hlc=flood.added_at - 1_000 + i)
        share(alice, bob, carol)
        small = Vault(carol, quota=Quota(blobs=3))  # what carol's device builds from its store
        names = {r.name for r in small.list()}
        assert names == {"a0", "a1", "b0", "b1", "b2"}  # Alice's two are untouched by the flood
        assert small.refused[Refusal.OVER_QUOTA] == 8  # seven more floods and the seed
        [b1] = [r for r in small.list() if r.name == "b1"]
        remove(evil, b1, hlc=flood.added_at + 1)
        share(bob, carol)
        assert {r.name for r in small.list()} == {"a0", "a1", "b0", "b2", "b3"}  # read again

        capped = Vault(alice, quota=Quota(blobs=2))
        held = capped.usage().chunks_held
        with pytest.raises(VaultQuotaExceeded):
            await capped.add(b"one too many", name="a2")
        assert capped.usage().chunks_held == held and {r.name for r in mine} == {"a0", "a1"}


async def test_removing_a_blob_kept_out_by_the_quota_still_purges_its_chunks(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        [alice] = await family_of(stack, tmp_path, "Alice")
        first = await alice.vault.add(payload(2 * CHUNK), name="first", chunk_size=CHUNK)
        second = await alice.vault.add(payload(3 * CHUNK), name="second", chunk_size=CHUNK)
        small = Vault(alice, quota=Quota(blobs=1))  # "second" is beyond it here
        assert [r.name for r in small.list()] == ["first"]
        assert small.usage().chunks_held == 5
        remove(Hostile.of_group(alice), second, hlc=second.added_at + 1)  # her own removal
        small.refresh()  # reads the kept-out manifest again to find its chunks
        assert small.usage().chunks_held == 2 and [r.name for r in small.list()] == ["first"]
        assert not small.missing(first)
