"""Vault chunks from a peer's peers (``microsync.node.chunk_relay``): the star layout, where
everyone joined through one inviter and is connected to it alone, over real loopback TCP; a
hostile member serving wrong bytes through the relay; a chunk nobody holds answered promptly.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.errors import PeerUnreachable
from microsync.testing import connections_of, replica_of
from tests.test_app_group import family_of, share
from tests.test_net_sync import eventually
from tests.test_vault import payload

CHUNK = 64 * 1024


async def star(hub: microsync.Group, *spokes: microsync.Group) -> None:
    """``hub`` listens; every spoke connects to it alone and syncs."""
    await hub.device.start(lan=False, port=0)
    for spoke in spokes:
        address = f"127.0.0.1:{hub.device.port}"
        await spoke.device.start(lan=False, port=None, peers=(address,))
    for spoke in spokes:
        await eventually(lambda s=spoke: any(p.synced for p in s.device.peers()), timeout=30)  # type: ignore[misc]


def peers_of(group: microsync.Group) -> set[str]:
    return {c.peer.device_name for c in connections_of(group.device)}


async def test_twelve_members_through_one_inviter_a_photo_opens_without_the_inviter_fetching(
    tmp_path: Path,
) -> None:
    names = ["Inviter", *(f"M{i}" for i in range(1, 12))]
    async with AsyncExitStack() as stack:
        hub, poster, *rest = await family_of(stack, tmp_path, *names)
        await star(hub, poster, *rest)
        viewer = rest[-1]
        assert peers_of(viewer) == {"Inviter"} and peers_of(poster) == {"Inviter"}
        photo = payload(20 * CHUNK + 123, seed=7)
        ref = await poster.vault.add(photo, name="beach.jpg", chunk_size=CHUNK, thumbnail=b"th")
        await poster.post("the beach", attachments=[ref])
        await eventually(lambda: any(p.attachments for p in viewer.feed()), timeout=30)
        [post] = [p for p in viewer.feed() if p.attachments]
        seen = viewer.vault.get(post.attachments[0])
        assert len(hub.vault.missing(seen)) == seen.chunks  # the inviter never fetched it
        out = await viewer.vault.fetch(seen, tmp_path / "beach.jpg", timeout=30)
        assert out.read_bytes() == photo
        assert hub.vault.missing(seen) == []  # relayed, and kept under its "thumbnails" policy
        # a second member's fetch is served by the inviter from what it kept
        other = rest[0]
        asked = sum(c.session.stats.chunks_received for c in connections_of(hub.device))
        assert (await other.vault.fetch(seen, tmp_path / "b2.jpg")).read_bytes() == photo
        after = sum(c.session.stats.chunks_received for c in connections_of(hub.device))
        assert after == asked


async def test_a_hostile_member_serving_wrong_bytes_is_caught_by_the_relay(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        hub, bob, carol, mallory = await family_of(
            stack, tmp_path, "Inviter", "Bob", "Carol", "Mallory"
        )
        data = payload(6 * CHUNK + 5, seed=3)
        ref = await bob.vault.add(data, name="doc.pdf", chunk_size=CHUNK)
        share(hub, bob, carol, mallory)
        good = replica_of(bob).store
        bad = replica_of(mallory).store
        for address in bob.vault.chunks(ref):  # Mallory holds a flipped copy of every chunk
            sealed = bytearray(good.get_chunk(bob.id, address))  # type: ignore[attr-defined]
            sealed[3] ^= 0x40
            bad.put_chunk(mallory.id, address, bytes(sealed))  # type: ignore[attr-defined]
        await star(hub, carol, mallory)  # Bob, the only honest holder, is offline
        dest = tmp_path / "doc.pdf"
        with pytest.raises(PeerUnreachable):
            await carol.vault.fetch(ref, dest, timeout=30)
        assert not dest.exists()
        assert len(hub.vault.missing(ref)) == ref.chunks  # no bad copy kept by the relay
        assert len(carol.vault.missing(ref)) == ref.chunks
        sent = {
            c.peer.device_name: c.session.stats.chunks_received for c in connections_of(hub.device)
        }
        assert sent["Mallory"] > 0  # the relay asked her, and refused every copy
        await bob.device.start(lan=False, port=None, peers=(f"127.0.0.1:{hub.device.port}",))
        await eventually(lambda: any(p.synced for p in bob.device.peers()), timeout=30)
        assert (await carol.vault.fetch(ref, dest, timeout=30)).read_bytes() == data
        assert hub.vault.missing(ref) == []
        assert (await hub.vault.fetch(ref, tmp_path / "hub.pdf")).read_bytes() == data


async def test_a_chunk_nobody_holds_is_answered_missing_promptly(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        hub, bob, carol, dave = await family_of(stack, tmp_path, "Inviter", "Bob", "Carol", "Dave")
        ref = await bob.vault.add(payload(3 * CHUNK), name="gone.bin", chunk_size=CHUNK)
        share(hub, bob, carol, dave)
        await star(hub, carol, dave)  # Bob, the only holder, never comes online
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(PeerUnreachable):
            await carol.vault.fetch(ref, tmp_path / "x", timeout=30)
        assert loop.time() - start < 3  # the relay asked Dave, heard "missing" and said so
