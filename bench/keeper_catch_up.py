"""A member device's catch-up of N posts from a keeper vs from a directly connected peer.

    python -m bench.keeper_catch_up [--posts 3000,20000] [--repeat 3] [--profile-posts N]

Part of ``python -m bench.keeper`` (its ``figures`` calls :func:`measure`). Setup, not timed:
a host device (``microsync.Device``, profile on ``/dev/shm`` where there is one) creates a
group and, while listening on 127.0.0.1, admits one newcomer per catch-up through
``Group.invite`` + ``Device.join`` (fresh profiles on disk; each waits until it holds the
group's membership, then closes). Then the host writes N posts through ``Group.post`` and
closes. Every entry the host holds is pushed to a real ``microsync keeper`` subprocess
(``KeeperClient.push``, records ``CBOR [wire, body]`` named by entry id, as a device pushes
its writes), and a separate process serves the host's profile on 127.0.0.1. So both paths
start from the same state: a member that has the group's membership and none of its posts.

* **peer** (timed): the newcomer opens its profile and calls ``Device.sync_with`` the host
  (Noise handshake, then a sync session) until its feed is complete: every feed of the host
  stored up to its head and ``Group.feed()`` showing all N posts.
* **keeper** (timed): the newcomer opens its profile, connects to the keeper, proves the
  mailbox and pulls every item (``KeeperClient.pull_newest``: newest first, the order a
  device that just came online wants), opening each (XChaCha20-Poly1305) and decoding its
  ``[wire, body]``; what it pulled goes through the device's public receive path,
  ``Device.receive``, in batches of 1,000 in feed order, until the same completeness check
  holds. The public receive path holds at most 4,096 out-of-order entries per feed and
  16,384 per group, so newest-first items cannot be handed to it page by page for 20,000
  posts: they are kept (about 0.5 KiB each) and received oldest first once all have
  arrived. This measures what the keeper and the client can do with the public API until
  the device's own keeper link exists; the link is what should overlap pulling and storing.

The ratio is keeper / peer, the median over ``--repeat`` of each repeat's ratio (target: no
more than 1.2). Then one keeper catch-up of ``--profile-posts`` runs under cProfile, summed by
layer as in ``bench/catch_up.py`` (``websockets`` counts as ``net`` here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import microsync
from bench import catch_up
from bench.keeper_rig import Running, _process, _scratch, keeper
from microsync import encoding
from microsync.errors import DecodeError
from microsync.feed import parse_entry
from microsync.group.mailbox import Mailbox
from microsync.net.keeper_client import KeeperClient, Record

BATCH = 1_000
Item = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class Built:
    """The host's profile, the newcomers' profiles, and what the host holds."""

    host: Path
    newcomers: list[Path]
    group: bytes
    posts: int
    items: list[Item]
    frontier: dict[bytes, int]


async def build(host_path: Path, newcomers: Sequence[Path], posts: int, seed: int) -> Built:
    rng = random.Random(seed)
    async with await microsync.Device.open(host_path, name="Host") as host:
        group = await host.create_group("Family")
        await host.start(lan=False, port=0, bind="127.0.0.1")
        for path in newcomers:
            link = (await group.invite(ttl=600)).link
            async with await microsync.Device.open(path, name="Newcomer") as newcomer:
                await newcomer.start(lan=False, port=None)
                joined = await newcomer.join(link)
                while not _holds(newcomer, joined, host.frontier(group.id)):
                    await asyncio.sleep(0.01)
                await newcomer.stop()
        await host.stop()
        for i in range(posts):
            await group.post(f"post {i}: " + "x" * rng.randrange(20, 200))
        items = host.entries_after(group.id)
        frontier = {bytes(d): s for d, s in host.frontier(group.id).items()}
    return Built(host_path, list(newcomers), bytes(group.id), posts, items, frontier)


def records(items: Sequence[Item]) -> list[Record]:
    """What a device gives a keeper for each entry."""
    return [
        Record(name=bytes(parse_entry(wire).id), data=encoding.encode([wire, body or b""]))
        for wire, body in items
    ]


# ---------------------------------------------------------------- the serving host


async def serve(path: Path) -> None:
    """Serve the host profile on 127.0.0.1 (print its port) until stdin closes."""
    loop = asyncio.get_running_loop()
    async with await microsync.Device.open(path) as device:
        (group,) = device.groups()
        group.feed()  # fold before going online, as `microsync serve` does
        await device.start(lan=False, port=0, bind="127.0.0.1")
        print(f"host listening on 127.0.0.1:{device.port}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)


def hosted(path: Path) -> contextlib.AbstractContextManager[Running]:
    command = [sys.executable, "-m", "bench.keeper_catch_up", "--serve", str(path)]
    return _process(command, re.compile(r"host listening on (127\.0\.0\.1:\d+)"), stdin=True)


# ---------------------------------------------------------------- the two catch-ups


def _holds(device: microsync.Device, group: microsync.Group, frontier: Mapping[Any, int]) -> bool:
    held = {bytes(d): seq for d, seq in device.frontier(group.id).items()}
    return all(held.get(bytes(d), 0) >= seq for d, seq in frontier.items())


def _complete(device: microsync.Device, group: microsync.Group, built: Built) -> bool:
    return _holds(device, group, built.frontier) and len(group.feed()) == built.posts


def _group(device: microsync.Device, built: Built) -> microsync.Group:
    return next(g for g in device.groups() if bytes(g.id) == built.group)


async def from_peer(path: Path, address: str, built: Built) -> float:
    """Seconds for ``sync_with`` the host until the feed is complete."""
    host, port = address.rsplit(":", 1)
    async with await microsync.Device.open(path) as device:
        group = _group(device, built)
        start = time.perf_counter()
        await device.sync_with(host, int(port), timeout=600)
        if not _complete(device, group, built):
            raise RuntimeError("the peer sync ended before the feed was complete")
        return time.perf_counter() - start


async def from_keeper(
    path: Path, url: str, mailbox: Mailbox, built: Built, profile: cProfile.Profile | None = None
) -> float:
    """Seconds to pull everything newest first and receive it until the feed is complete."""
    async with await microsync.Device.open(path) as device:
        group = _group(device, built)
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        async with await KeeperClient.connect(url) as client:
            pulled = [p.data async for p in client.pull_newest(mailbox)]
        items = [item for data in reversed(pulled) if (item := _entry(data)) is not None]
        for first in range(0, len(items), BATCH):
            device.receive(group.id, items[first : first + BATCH])
        done = _complete(device, group, built)
        elapsed = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        if not done:
            raise RuntimeError(f"the keeper catch-up is incomplete: {device.refused}")
        return elapsed


def _entry(data: bytes) -> Item | None:
    """A pulled record's ``(wire, body)``; ``None`` for anything else (a member's item is
    hostile until the receive path has checked it)."""
    try:
        value = encoding.decode(data, max_size=len(data))
    except DecodeError:
        return None
    match value:
        case [bytes() as wire, bytes() as body]:
            return wire, body or None
        case _:
            return None


# ---------------------------------------------------------------- the runs


@dataclass(frozen=True, slots=True)
class Measured:
    posts: int
    entries: int
    keeper: float  # median seconds
    peer: float
    ratio: float  # median of each repeat's keeper / peer


def _copy(newcomer: Path, into: Path) -> Path:
    shutil.copytree(newcomer, into)
    return into


def measure(
    sizes: Sequence[int], repeat: int, profile_posts: int | None, seed: int = 1
) -> tuple[list[Measured], dict[str, float] | None]:
    """Both catch-ups for each size, and the keeper catch-up's profile by layer."""
    results, spent = [], None
    for posts in sorted({*sizes, *([profile_posts] if profile_posts else [])}):
        runs = repeat if posts in sizes else 0
        scratch = _scratch("microsync-bench-keeper-host-")
        try:
            with tempfile.TemporaryDirectory(prefix="microsync-bench-keeper-") as disk:
                here = Path(disk)
                newcomers = [here / f"newcomer-{i}" for i in range(2 * runs + 1)]
                built = asyncio.run(build(Path(scratch) / "host", newcomers, posts, seed))
                mailbox = Mailbox.derive(os.urandom(32))
                with keeper(here / "keeper") as kept, hosted(built.host) as host:
                    asyncio.run(_push(kept.url, mailbox, records(built.items)))
                    times = []
                    for run in range(runs):
                        peer_path, keeper_path = newcomers[2 * run], newcomers[2 * run + 1]
                        t_keeper = asyncio.run(from_keeper(keeper_path, kept.url, mailbox, built))
                        t_peer = asyncio.run(from_peer(peer_path, host.url, built))
                        times.append((t_keeper, t_peer))
                    if posts == profile_posts:
                        profile = cProfile.Profile()
                        asyncio.run(from_keeper(newcomers[-1], kept.url, mailbox, built, profile))
                        spent = by_layer(profile)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if times:
            results.append(
                Measured(
                    posts,
                    len(built.items),
                    statistics.median(k for k, _ in times),
                    statistics.median(p for _, p in times),
                    statistics.median(k / p for k, p in times),
                )
            )
    return results, spent


async def _push(url: str, mailbox: Mailbox, records: Sequence[Record]) -> None:
    async with await KeeperClient.connect(url) as client:
        await client.push(mailbox, records)


def by_layer(profile: cProfile.Profile) -> dict[str, float]:
    """:func:`bench.catch_up.by_layer`, with ``websockets`` counted as ``net``."""
    original = catch_up.layer_of

    def layer_of(filename: str, function: str) -> str | None:
        if "/websockets/" in filename.replace("\\", "/"):
            return "net"
        return original(filename, function)

    catch_up.layer_of = layer_of
    try:
        return catch_up.by_layer(profile)
    finally:
        catch_up.layer_of = original


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", default="3000,20000", help="sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile-posts", type=int, default=None, help="default: the smallest")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the host process
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return
    sizes = [int(s) for s in args.posts.split(",")]
    results, spent = measure(sizes, args.repeat, args.profile_posts or min(sizes))
    for m in results:
        print(
            f"  {m.posts:>7,} posts ({m.entries:,} entries): keeper {m.keeper:6.2f} s, "
            f"peer {m.peer:6.2f} s -> {m.ratio:.2f}x (target <= 1.20)"
        )
    if spent is not None:
        print(f"  keeper catch-up by layer: {catch_up.layer_summary(spent)}")


if __name__ == "__main__":
    main()
