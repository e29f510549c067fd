"""Group.vault end to end: add, list, fetch (local and from peers over 127.0.0.1), resume after
the serving peer stops, several peers at once, removal for everyone, policies, attachments,
unlinkable ids across groups, and a removed member locked out of later blobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.blobs import BlobRef
from microsync.errors import DecryptionError, NotAMember, PeerUnreachable
from microsync.feed import StoredEntry
from microsync.identity import DeviceId
from microsync.testing import connections_of, replica_of
from tests.test_app_group import family_of, share, sync
from tests.test_net_sync import eventually

CHUNK = 64 * 1024


def payload(size: int, seed: int = 1) -> bytes:
    return (seed.to_bytes(4, "big") + os.urandom(60)) * (size // 64) + b"z" * (size % 64)


async def test_add_list_fetch_locally_and_progress(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        [alice] = await family_of(stack, tmp_path, "Alice")
        source = tmp_path / "photo.jpg"
        data = payload(5 * CHUNK + 7)
        source.write_bytes(data)
        seen: list[tuple[int, int]] = []
        ref = await alice.vault.add(
            source, progress=lambda d, t: seen.append((d, t)), chunk_size=CHUNK, thumbnail=b"T"
        )
        assert ref.name == "photo.jpg" and ref.mime == "image/jpeg" and ref.size == len(data)
        assert ref.chunks == 6 and ref.thumbnail == b"T"
        assert seen[-1] == (len(data), len(data)) and len(seen) >= 6
        assert alice.vault.list() == [ref] and alice.vault.get(ref.id.hex()[:8]) == ref
        out = await alice.vault.fetch(ref, tmp_path / "out.jpg")
        assert out.read_bytes() == data
        usage = alice.vault.usage()
        assert (usage.blobs, usage.complete, usage.chunks_held) == (1, 1, 6)
        assert usage.bytes_held == len(data) + 6 * 16
        empty = await alice.vault.add(b"", name="empty.txt")
        assert empty.chunks == 1 and empty.mime == "text/plain"
        assert (await alice.vault.fetch(empty, tmp_path / "e")).read_bytes() == b""
        assert "secret" not in repr(ref) and "T" not in repr(ref).split("thumbnail")[0][-3:]


async def test_post_carries_a_blob_ref_and_the_receiver_sees_it_before_fetching(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        ref = await alice.vault.add(b"a picture", name="p.png", thumbnail=b"thumb")
        post = await alice.post("look", attachments=[ref])
        assert post.attachments == (bytes(ref),)
        share(alice, bob)
        [seen] = bob.feed()
        theirs = bob.vault.get(seen.attachments[0])
        assert isinstance(theirs, BlobRef) and theirs.thumbnail == b"thumb"
        assert theirs.id == ref.id and bob.vault.missing(theirs)  # shown, not fetched yet


async def test_tampered_chunk_is_detected_and_nothing_is_written(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        [alice] = await family_of(stack, tmp_path, "Alice")
        ref = await alice.vault.add(payload(3 * CHUNK), name="f", chunk_size=CHUNK)
        store = replica_of(alice).store
        chunk = alice.vault.chunks(ref)[1]
        sealed = bytearray(store.get_chunk(alice.id, chunk))  # type: ignore[attr-defined]
        sealed[5] ^= 1
        store.put_chunk(alice.id, chunk, bytes(sealed))  # type: ignore[attr-defined]
        dest = tmp_path / "out"
        with pytest.raises(DecryptionError):
            await alice.vault.fetch(ref, dest)
        assert not dest.exists() and not list(tmp_path.glob(".out*"))
        assert chunk in alice.vault.missing(ref)  # the bad copy was dropped, fetched again later


async def test_remove_purges_chunks_everywhere_and_only_the_author_removes(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        ref = await alice.vault.add(payload(2 * CHUNK), name="f", chunk_size=CHUNK)
        share(alice, bob)
        with pytest.raises(NotAMember):
            await bob.vault.remove(ref.id)
        bob.vault.policy = "all"
        await alice.device.start(lan=False, port=0)
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        assert await bob.vault.prefetch() == 1 and not bob.vault.missing(ref.id)
        await alice.vault.remove(ref)
        assert alice.vault.list() == [] and alice.vault.usage().chunks_held == 0
        await eventually(lambda: bob.vault.usage().chunks_held == 0)
        assert bob.vault.list() == []


async def test_fetch_from_a_peer_then_from_two_peers_at_once(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        data = payload(40 * CHUNK + 3)
        ref = await alice.vault.add(data, name="video.mp4", chunk_size=CHUNK)
        share(alice, bob, carol)
        for g in (alice, bob):
            await g.device.start(lan=False, port=0)
        await carol.device.start(
            lan=False,
            port=None,
            peers=(f"127.0.0.1:{alice.device.port}",),
        )
        await eventually(lambda: any(p.synced for p in carol.device.peers()))
        # bob fetches from alice (one peer)
        await bob.device.sync_with("127.0.0.1", alice.device.port)  # type: ignore[arg-type]
        bob.device.connect(f"127.0.0.1:{alice.device.port}")
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        assert (await bob.vault.fetch(ref, tmp_path / "b.mp4")).read_bytes() == data
        # carol connects to bob too: now two peers hold every chunk
        carol.device.connect(f"127.0.0.1:{bob.device.port}")
        await eventually(lambda: sum(p.synced for p in carol.device.peers()) == 2)
        out = await carol.vault.fetch(ref, tmp_path / "c.mp4")
        assert out.read_bytes() == data
        served = {
            c.peer.device_name: c.session.stats.chunks_received
            for c in connections_of(carol.device)
        }
        assert served["Alice"] > 0 and served["Bob"] > 0, served


async def test_resume_after_the_serving_peer_stops_mid_transfer(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        data = payload(60 * CHUNK)
        ref = await alice.vault.add(data, name="big", chunk_size=CHUNK)
        share(alice, bob)
        await alice.device.start(lan=False, port=0)
        port = alice.device.port
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{port}",))
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        stopping: list[asyncio.Task[None]] = []
        arrived = [0]

        def stop_alice(done: int, total: int) -> None:
            arrived[0] = done // CHUNK
            if done >= 10 * CHUNK and not stopping:
                stopping.append(asyncio.ensure_future(alice.device.stop()))

        dest = tmp_path / "big.out"
        with pytest.raises(PeerUnreachable):
            await bob.vault.fetch(ref, dest, progress=stop_alice, timeout=1.0)
        await stopping[0]
        assert not dest.exists()
        assert 10 <= arrived[0] < 60
        kept = 60 - len(bob.vault.missing(ref))
        assert kept == arrived[0]  # "thumbnails" (the default) keeps the chunks it fetched
        await alice.device.start(lan=False, port=port)
        await eventually(lambda: any(p.synced for p in bob.device.peers()), timeout=20)
        assert (await bob.vault.fetch(ref, dest)).read_bytes() == data
        received = sum(c.session.stats.chunks_received for c in connections_of(bob.device))
        assert received == 60 - arrived[0]  # only the missing chunks came again


async def test_on_demand_keeps_no_chunk_and_resumes_from_the_part_file(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        data = payload(30 * CHUNK + 1)
        ref = await alice.vault.add(data, name="clip", chunk_size=CHUNK)
        share(alice, bob)
        bob.vault.policy = "on_demand"
        await alice.device.start(lan=False, port=0)
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        dest = tmp_path / "clip.out"
        # a .part file left by an interrupted fetch: the first 12 chunks right, one damaged
        part = tmp_path / ".clip.out.part"
        part.write_bytes(data[: 12 * CHUNK])
        with open(part, "r+b") as file:
            file.seek(5 * CHUNK + 3)
            file.write(b"\xff")
        assert (await bob.vault.fetch(ref, dest)).read_bytes() == data
        assert not part.exists() and bob.vault.usage().chunks_held == 0
        received = sum(c.session.stats.chunks_received for c in connections_of(bob.device))
        assert received == 31 - 11  # the 11 good chunks of the .part file were not fetched


async def test_same_file_in_two_groups_gets_unlinkable_ids(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        [family] = await family_of(stack, tmp_path, "Alice")
        friends = await family.device.create_group("Friends")
        data = payload(3 * CHUNK)
        a = await family.vault.add(data, name="same.jpg", chunk_size=CHUNK)
        b = await friends.vault.add(data, name="same.jpg", chunk_size=CHUNK)
        assert a.id != b.id
        # private: the vault index, to compare the chunk ids of two groups
        ids_a = set(family.vault._index.manifests[a.id].ids)
        ids_b = set(friends.vault._index.manifests[b.id].ids)
        assert ids_a.isdisjoint(ids_b)


async def test_a_removed_member_cannot_read_blobs_added_after(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        before = await alice.vault.add(b"old news", name="old")
        share(alice, bob, carol)
        assert bob.vault.get(before.id).name == "old"
        await alice.remove(bob.device.person_id)
        after = await alice.vault.add(b"family only", name="new")
        share(alice, carol)
        sync(alice.device, bob.device, alice.id)  # bob still gets the (encrypted) entries
        assert carol.vault.get(after.id).name == "new"
        with pytest.raises(KeyError):
            bob.vault.get(after.id)  # the manifest is under an epoch key bob never gets
        assert all(r.id != after.id for r in bob.vault.list())


async def test_fetch_through_the_relay_and_the_relay_sees_no_plaintext(tmp_path: Path) -> None:
    from microsync.net.relay import RelayServer

    seen: list[bytes] = []
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            RelayServer("127.0.0.1", 0, tap=lambda flow, message: seen.append(message))
        )
        url = f"ws://127.0.0.1:{relay.port}"
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        data = b"through the relay " * 20_000
        ref = await alice.vault.add(data, name="r.txt", chunk_size=CHUNK)
        share(alice, bob)
        await alice.device.start(lan=False, port=None, relay=url)
        await bob.device.start(lan=False, port=None, relay=url)
        await eventually(lambda: any(p.synced for p in bob.device.peers()), timeout=20)
        out = await bob.vault.fetch(ref, tmp_path / "r.out", timeout=20)
        assert out.read_bytes() == data
        await bob.device.stop()
        await alice.device.stop()
    wire = b"".join(seen)
    assert b"through the relay" not in wire and b"r.txt" not in wire


async def test_policy_all_fetches_new_blobs_in_the_background_and_events(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        bob.vault.list()  # read once: later changes come as events
        seen: list[microsync.Event] = []

        async def collect() -> None:
            async for event in bob.events():
                seen.append(event)

        collector = asyncio.ensure_future(collect())
        await alice.device.start(lan=False, port=0)
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        bob.vault.policy = "all"
        ref = await alice.vault.add(payload(5 * CHUNK), name="auto", chunk_size=CHUNK)
        await eventually(lambda: any(e.kind == "vault_added" for e in seen))
        [added] = [e for e in seen if e.kind == "vault_added"]
        assert added.detail == bob.vault.get(ref.id) and added.person == alice.device.person_id
        await eventually(lambda: not bob.vault.missing(ref.id))  # fetched in the background
        await alice.vault.remove(ref)
        await eventually(lambda: any(e.kind == "vault_removed" for e in seen))
        assert bob.vault.usage().chunks_held == 0
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


async def test_a_device_never_evicts_what_it_added_even_after_a_restart(tmp_path: Path) -> None:
    from microsync.node.vault import Vault

    async with AsyncExitStack() as stack:
        [alice] = await family_of(stack, tmp_path, "Alice")
        ref = await alice.vault.add(payload(2 * CHUNK), name="mine", chunk_size=CHUNK)
        fresh = Vault(alice)  # what a new process builds from the store
        fresh.policy = "on_demand"
        assert fresh.evict(ref.id) == 0 and not fresh.missing(ref.id)
        assert (await fresh.fetch(ref.id, tmp_path / "o")).stat().st_size == 2 * CHUNK
        assert not fresh.missing(ref.id)


async def test_bad_limits_are_refused_before_any_chunk_is_written(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        [alice] = await family_of(stack, tmp_path, "Alice")
        for kwargs in (
            {"name": "n" * 256},
            {"mime": "m" * 256},
            {"thumbnail": b"t" * (48 * 1024 + 1)},
            {"chunk_size": 8},
        ):
            with pytest.raises(ValueError):
                await alice.vault.add(payload(CHUNK), **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await alice.vault.add(payload(5000), chunk_size=1)
        assert alice.vault.usage().chunks_held == 0 and alice.vault.list() == []


async def test_an_offline_fetch_of_missing_chunks_fails_at_once(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        ref = await alice.vault.add(b"remote", name="r")
        share(alice, bob)
        start = asyncio.get_running_loop().time()
        with pytest.raises(PeerUnreachable, match="offline"):
            await bob.vault.fetch(ref.id, tmp_path / "r", timeout=30)
        assert asyncio.get_running_loop().time() - start < 5


async def test_a_sync_batch_is_folded_from_what_it_accepted_without_reading_the_feeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from microsync.node.vault_state import VaultFold

    scans: list[tuple[VaultFold, bytes]] = []
    scan = VaultFold._scan

    def counted(fold: VaultFold, device: DeviceId) -> list[StoredEntry]:
        scans.append((fold, device))
        return scan(fold, device)

    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        share(alice, bob)
        assert bob.vault.list() == []  # read once: the history is folded
        monkeypatch.setattr(VaultFold, "_scan", counted)
        ref = await alice.vault.add(payload(CHUNK), name="f", chunk_size=CHUNK)
        share(alice, bob)
        # private: the vault's fold and index, to check what was folded on arrival
        mine = bob.vault._state
        assert ref.id in bob.vault._index.refs  # folded as it arrived, before any read
        await alice.vault.remove(ref)
        share(alice, bob)
        assert ref.id not in bob.vault._index.refs
        assert [d for f, d in scans if f is mine] == []  # no feed was read back
