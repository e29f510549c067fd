"""Vault chunks through a keeper (``microsync.node.keeper_chunks``): real devices in this process,
a real keeper subprocess on 127.0.0.1. Alice and Bob are never online at the same time."""

from __future__ import annotations

import os
import sqlite3
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

import microsync
from microsync.errors import DecodeError, NotAMember, PeerUnreachable
from microsync.group.mailbox import Mailbox
from microsync.group.settings import DEFAULT_KEEPER_ORIGINALS, SettingsChange
from microsync.net.keeper_client import KeeperClient, Record
from microsync.node.keeper_chunks import blob_mailbox
from microsync.testing import replica_of
from tests.keeper_helpers import everything_under, keeper, pieces, start_keeper
from tests.test_app_group import family_of, share
from tests.test_keeper_group import kept_family, online, pushed_all, until

MB = 1_000_000


def photo(size: int, seed: int) -> bytes:
    return (seed.to_bytes(4, "big") + os.urandom(60)) * (size // 64) + b"p" * (size % 64)


def items_by_mailbox(data: Path) -> dict[bytes, list[bytes]]:
    """Every item payload the keeper stores, by mailbox (its database, read-only)."""
    uri = f"file:{data / 'keeper.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute(  # schema 2: an item's key is its mailbox's number << 32 | cursor
            "SELECT m.id, i.payload FROM items AS i JOIN mailboxes AS m ON i.key >> 32 = m.n"
        ).fetchall()
    found: dict[bytes, list[bytes]] = {}
    for mailbox, payload in rows:
        found.setdefault(bytes(mailbox), []).append(bytes(payload))
    return found


def pushed(group: microsync.Group, ref: microsync.BlobRef, url: str) -> bool:
    return pushed_all(group) and group.vault.at_keeper(ref, url) == ref.chunks


async def test_a_5mb_photo_goes_both_ways_through_a_keeper_and_removal_purges_it(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, k.url, "alice", "bob")
            assert bob.vault.keeper_originals == DEFAULT_KEEPER_ORIGINALS

            await online(alice)
            mine = photo(5 * MB, 1)
            ref = await alice.vault.add(mine, name="oxford.jpg", thumbnail=b"small")
            await alice.post("Oxford!", attachments=[ref])
            await until(lambda: pushed(alice, ref, k.url), timeout=60)
            await alice.device.stop()

            await online(bob)
            await until(lambda: any(p.attachments for p in bob.feed()), timeout=30)
            got = await bob.vault.fetch(ref, tmp_path / "from-alice.jpg", timeout=30)
            assert got.read_bytes() == mine
            theirs = photo(5 * MB, 2)
            back = await bob.vault.add(theirs, name="seattle.jpg")
            await bob.post("Seattle!", attachments=[back])
            await until(lambda: pushed(bob, back, k.url), timeout=60)
            await bob.device.stop()

            await online(alice)
            await until(lambda: any(r.id == back.id for r in alice.vault.list()), timeout=30)
            got = await alice.vault.fetch(back, tmp_path / "from-bob.jpg", timeout=30)
            assert got.read_bytes() == theirs

            # what the keeper holds: opaque ids and padded ciphertext only
            held = everything_under(k.data)
            sealed = replica_of(alice).store
            canaries = [bytes(ref.id), bytes(back.id), *pieces(mine[:4096]), *pieces(theirs[:4096])]
            for address in alice.vault.chunks(ref):
                chunk = sealed.get_chunk(alice.id, address)  # type: ignore[attr-defined]
                canaries += [bytes(address), *pieces(chunk[:512], 16, 64)]
            assert not [c for c in canaries if c in held]

            # removal purges the blob's items at the keeper
            before = items_by_mailbox(k.data)
            await alice.vault.remove(ref)
            await until(lambda: len(items_by_mailbox(k.data)) == len(before) - 1, timeout=30)
            after = items_by_mailbox(k.data)
            [gone] = [m for m in before if m not in after]
            assert len(before[gone]) == ref.chunks

            def purged() -> bool:  # the keeper checkpoints the WAL just after the delete commits
                held = everything_under(k.data)
                return not [
                    p for item in before[gone] for p in pieces(item[:2048], 16, 256) if p in held
                ]

            await until(purged, timeout=10)
            await alice.device.stop()


async def test_the_admins_policy_decides_what_goes_and_hostile_values_are_refused(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await family_of(stack, tmp_path, "alice", "bob")
            await alice.add_keeper(k.url)
            await alice.vault.set_keeper_originals(MB)
            share(alice, bob)
            assert bob.vault.keeper_originals == MB
            with pytest.raises(NotAMember):
                await bob.vault.set_keeper_originals(0)
            with pytest.raises(ValueError):
                await alice.vault.set_keeper_originals(-1)
            for hostile in ({"vo": -1}, {"vo": 1 << 50}, {"vo": "big"}, {"vo": None}):
                with pytest.raises(DecodeError):
                    SettingsChange.from_value(hostile)  # type: ignore[arg-type]
            assert SettingsChange.from_value({"vo": 5}) == SettingsChange(keeper_originals=5)

            await online(alice)
            small = await alice.vault.add(photo(MB // 2, 3), name="small.jpg")
            large = await alice.vault.add(photo(2 * MB, 4), name="large.mov", thumbnail=b"t")
            await until(lambda: pushed(alice, small, k.url), timeout=30)
            assert alice.vault.at_keeper(large, k.url) == 0  # over the limit: kept off
            await alice.device.stop()
            await online(bob)
            await until(lambda: len(bob.vault.list()) == 2, timeout=30)
            assert bob.vault.get(large.id).thumbnail == b"t"  # the manifest still went
            out = await bob.vault.fetch(small, tmp_path / "s.jpg", timeout=10)
            assert out.stat().st_size == MB // 2
            with pytest.raises(PeerUnreachable, match="keeper"):
                await bob.vault.fetch(large, tmp_path / "l.mov", timeout=2)
            await bob.device.stop()


async def test_an_interrupted_upload_and_download_resume(tmp_path: Path) -> None:
    data = tmp_path / "keeper"
    first = start_keeper(data, "--quota", "3M")  # holds two 1 MiB chunks of one blob
    port = first.url.rsplit(":", 1)[1]
    try:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, first.url, "alice", "bob")
            await online(alice)
            mine = photo(16 * MB, 5)  # 16 chunks: more than the client buffers at once
            ref = await alice.vault.add(mine, name="big.mov")
            await until(lambda: pushed_all(alice) and alice.vault.at_keeper(ref, first.url) == 2)
            await alice.device.stop()
            first.kill()

            second = start_keeper(data, "--port", port)  # the same data, no quota
            await online(alice)
            await until(lambda: pushed(alice, ref, second.url), timeout=60)
            await alice.device.stop()
            [box] = [v for v in items_by_mailbox(data).values() if len(v[0]) > MB]  # chunks
            assert len(box) == ref.chunks  # resumed at the third chunk: nothing duplicated

            await online(bob)
            await until(lambda: bob.vault.list() != [], timeout=30)
            dest = tmp_path / "big.mov"
            seen: list[int] = []

            def cut(done: int, total: int) -> None:
                seen.append(done)
                if len(seen) == 1:
                    second.kill()  # the keeper dies mid-download

            with pytest.raises(PeerUnreachable):
                await bob.vault.fetch(ref, dest, cut, timeout=5)
            assert not dest.exists() and 0 < len(bob.vault.missing(ref)) < ref.chunks
            third = start_keeper(data, "--port", port)
            resumed: list[int] = []
            out = await bob.vault.fetch(ref, dest, lambda d, t: resumed.append(d), timeout=30)
            assert out.read_bytes() == mine
            assert resumed[0] > 1024 * 1024  # what the first fetch kept did not come again
            await bob.device.stop()
            third.kill()
    finally:
        first.kill()


async def test_junk_a_member_planted_at_the_keeper_is_refused_by_every_fetch(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob, mallory = await family_of(stack, tmp_path, "alice", "bob", "mallory")
            await alice.add_keeper(k.url)
            data = photo(3 * MB, 9)
            ref = await alice.vault.add(data, name="plan.pdf")  # Alice is offline
            share(alice, bob, mallory)
            # Mallory reads the manifest, derives the blob's mailbox and squats its first
            # chunk's name with junk before Alice's device pushes (private: the blob key)
            key = mallory.vault._index.manifests[ref.id].key
            first = mallory.vault.chunks(ref)[0]
            async with await KeeperClient.connect(k.url) as client:
                junk = Record(name=bytes(first), data=os.urandom(1024 * 1024 + 16))
                await client.push(blob_mailbox(key), [junk])
            await online(alice)
            await until(lambda: pushed(alice, ref, k.url), timeout=30)  # "already held"
            await alice.device.stop()
            await online(bob)
            dest = tmp_path / "plan.pdf"
            with pytest.raises(PeerUnreachable):
                await bob.vault.fetch(ref, dest, timeout=2)
            assert not dest.exists()
            assert bob.vault.missing(ref) == [first]  # the junk refused, the rest kept
            await bob.device.stop()


async def test_a_member_who_fetched_a_file_from_a_peer_pushes_what_the_keeper_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's device never reaches the keeper: Bob fetched her photo directly and pushes it;
    Carol gets it from the keeper alone and pushes nothing back; Dave, who fetched it from a
    peer after Bob pushed, finds the keeper holds it and pushes nothing either."""
    blob_pushes: list[tuple[str, int]] = []  # (device, chunks) pushed into a blob's mailbox
    push = KeeperClient.push

    async def recorded(self: KeeperClient, mailbox: Mailbox, records: Any, **kw: Any) -> Any:
        sent = list(records)
        if sent and len(sent[0].data) > 4096:  # chunks, not entries
            blob_pushes.append((who, len(sent)))
        return await push(self, mailbox, sent, **kw)

    monkeypatch.setattr(KeeperClient, "push", recorded)
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob, carol, dave = await family_of(
                stack, tmp_path, "alice", "bob", "carol", "dave"
            )
            mine = photo(3 * MB, 7)
            ref = await alice.vault.add(mine, name="beach.jpg")  # no keeper: nothing pushed
            share(alice, bob, carol, dave)
            who = "bob"
            await alice.device.start(lan=False, port=0)
            peer = (f"127.0.0.1:{alice.device.port}",)
            await bob.device.start(lan=False, port=None, peers=peer)
            await until(lambda: any(p.synced for p in bob.device.peers()))
            assert (await bob.vault.fetch(ref, tmp_path / "b.jpg")).read_bytes() == mine
            await bob.device.stop()
            await alice.add_keeper(k.url)  # then Alice's device is gone for good
            share(alice, bob, carol, dave)
            await dave.device.start(lan=False, port=None, peers=peer)
            await until(lambda: any(p.synced for p in dave.device.peers()))
            assert (await dave.vault.fetch(ref, tmp_path / "d.jpg")).read_bytes() == mine
            await dave.device.stop()
            await alice.device.stop()

            await online(bob)  # Bob holds every chunk: the keeper gets them from him
            await until(lambda: pushed(bob, ref, k.url), timeout=30)
            await bob.device.stop()
            assert sum(n for w, n in blob_pushes if w == "bob") == ref.chunks

            who = "carol"
            await online(carol)  # only the keeper: Alice and Bob are offline
            got = await carol.vault.fetch(ref, tmp_path / "c.jpg", timeout=30)
            assert got.read_bytes() == mine
            assert carol.vault.at_keeper(ref, k.url) == ref.chunks  # known held there
            await until(lambda: pushed_all(carol))
            await carol.device.stop()

            who = "dave"
            await online(dave)  # held whole, from a peer: asks the keeper, which has it
            await until(lambda: pushed(dave, ref, k.url), timeout=30)
            await dave.device.stop()
            assert [w for w, _ in blob_pushes] == ["bob"]  # nobody else uploaded a chunk
            [box] = [v for v in items_by_mailbox(k.data).values() if len(v[0]) > MB]
            assert len(box) == ref.chunks  # stored once
