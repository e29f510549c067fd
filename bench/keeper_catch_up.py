"""A new device's catch-up of N posts from a keeper vs from a directly connected peer.

    python -m bench.keeper_catch_up [--posts 3000,20000] [--repeat 3] [--profile-posts N]

Part of ``python -m bench.keeper`` (its ``figures`` calls :func:`measure`). Setup, not timed:
two host devices (``microsync.Device``, profiles on ``/dev/shm`` where there is one) each
create a group and write the same N posts through ``Group.post`` (the same texts, 30-210
bytes). The *kept* host adds a real ``microsync keeper`` subprocess to its group
(``Group.add_keeper``); the *plain* one does not. Each host admits one new device per
catch-up through an invite: the same redemption ``Device.join`` runs over the network
(``Group.invite``, ``Device.join_guest`` against ``Device.invite_host``, ``finish_join``),
its messages carried in memory, so the new device holds the group's welcome and nothing else.
Then the kept host comes online with no listener, its keeper link pushes everything to the
keeper, and it goes offline for good; the plain host is served by a separate process on
127.0.0.1.

* **keeper** (timed): the new device starts with no listener and no LAN
  (``Device.start(lan=False, port=None)``): the keeper its welcome names is its only way out.
  Its keeper link pulls the group's mailboxes and takes the items in through the same receive
  path as a peer sync, until every feed of the host is stored up to its head and
  ``Group.feed()`` shows all N posts. The inviter is offline the whole time.
* **peer** (timed): a new device of the plain group starts the same way with the plain host as
  its one peer (``peers=("127.0.0.1:PORT",)``): Noise handshake, then a sync session, until the
  same check holds.

The ratio is keeper / peer, the median over ``--repeat`` of each repeat's ratio (target: no
more than 1.2). Then one more catch-up of each kind of ``--profile-posts`` runs under cProfile
(the device's keeper link and its sync sessions run in this process; the keeper and the host
do not), its own time summed by layer as in ``bench/catch_up.py`` (``websockets`` counts as
``net`` here).
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import microsync
from bench import catch_up as catch_up_bench
from bench.keeper_rig import Running, _process, _scratch, keeper


@dataclass(frozen=True, slots=True)
class Built:
    """A host's profile, the new devices it admitted, and what the host holds."""

    host: Path
    newcomers: list[Path]
    group: bytes
    posts: int
    frontier: dict[bytes, int]


async def admit(host: microsync.Device, group: microsync.Group, path: Path) -> None:
    """A new device at ``path`` redeems an invite of ``group``, the messages carried in
    memory instead of over a connection: it holds the group's welcome and nothing else."""
    invite = await group.invite(ttl=3600)
    async with await microsync.Device.open(path, name="Newcomer") as newcomer:
        newcomer.learn_certificates(host.certificates())
        host.learn_certificates(newcomer.certificates())
        guest, session = newcomer.join_guest(invite.link), host.invite_host().session()
        message: bytes | None = guest.start()
        while message is not None:
            message = guest.receive(session.receive(message, now=time.time_ns() // 1_000_000))
        await newcomer.finish_join(guest.response)


async def build(
    path: Path, newcomers: Sequence[Path], posts: int, seed: int, keeper_url: str | None
) -> Built:
    """A host that wrote ``posts`` posts and admitted ``newcomers``; with ``keeper_url``, its
    group uses that keeper and everything is pushed there before this returns."""
    rng = random.Random(seed)
    async with await microsync.Device.open(path, name="Host") as host:
        group = await host.create_group("Family")
        if keeper_url is not None:
            await group.add_keeper(keeper_url)
        for i in range(posts):
            await group.post(f"post {i}: " + "x" * rng.randrange(20, 200))
        for newcomer in newcomers:
            await admit(host, group, newcomer)
        if keeper_url is not None:
            await host.start(lan=False, port=None)
            while not all(s.connected and s.unpushed == 0 for s in group.keeper_status()):
                await asyncio.sleep(0.5)  # keeper_status() costs ~1 s at 20,000 entries
            await host.stop()
        frontier = {bytes(d): s for d, s in host.frontier(group.id).items()}
    return Built(path, list(newcomers), bytes(group.id), posts, frontier)


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


# ---------------------------------------------------------------- the catch-up


def _complete(device: microsync.Device, built: Built) -> bool:
    group = next((g for g in device.groups() if bytes(g.id) == built.group), None)
    if group is None:
        return False
    held = {bytes(d): seq for d, seq in device.frontier(group.id).items()}
    if any(held.get(d, 0) < seq for d, seq in built.frontier.items()):
        return False
    return len(group.feed()) == built.posts


async def catch_up(
    path: Path, built: Built, peers: tuple[str, ...] = (), profile: cProfile.Profile | None = None
) -> float:
    """Seconds from ``start`` (no listener, no LAN, ``peers``) to a complete feed."""
    async with await microsync.Device.open(path) as device:
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        await device.start(lan=False, port=None, peers=peers)
        while not _complete(device, built):
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        await device.stop()
    return elapsed


# ---------------------------------------------------------------- the runs


@dataclass(frozen=True, slots=True)
class Measured:
    posts: int
    entries: int
    keeper: float  # median seconds
    peer: float
    ratio: float  # median of each repeat's keeper / peer
    runs: tuple[tuple[float, float], ...] = ()  # each repeat's (keeper, peer) seconds

    @property
    def best(self) -> float:
        """The lowest of the repeats' keeper / peer ratios."""
        return min((k / p for k, p in self.runs), default=self.ratio)


Spent = dict[str, dict[str, float]]
"""``"keeper"`` and ``"peer"``: each catch-up's own time by layer, in seconds."""


def measure(
    sizes: Sequence[int], repeat: int, profile_posts: int | None, seed: int = 1
) -> tuple[list[Measured], Spent]:
    """Both catch-ups for each size, and both profiled by layer at ``profile_posts``."""
    results: list[Measured] = []
    spent: Spent = {}
    for posts in sorted({*sizes, *([profile_posts] if profile_posts else [])}):
        runs = repeat if posts in sizes else 0
        profiled = posts == profile_posts
        times: list[tuple[float, float]] = []
        scratch = _scratch("microsync-bench-keeper-host-")
        try:
            with tempfile.TemporaryDirectory(prefix="microsync-bench-keeper-") as disk:
                here, hosts = Path(disk), Path(scratch)
                via_keeper = [here / f"keeper-{i}" for i in range(runs + profiled)]
                via_peer = [here / f"peer-{i}" for i in range(runs + profiled)]
                with keeper(here / "keeper") as kept:
                    built = asyncio.run(build(hosts / "kept", via_keeper, posts, seed, kept.url))
                    plain = asyncio.run(build(hosts / "plain", via_peer, posts, seed, None))
                    with hosted(plain.host) as host:
                        for run in range(runs):
                            os.sync()  # neither catch-up pays for writing back what came before
                            t_keeper = asyncio.run(catch_up(via_keeper[run], built))
                            os.sync()
                            t_peer = asyncio.run(catch_up(via_peer[run], plain, (host.url,)))
                            times.append((t_keeper, t_peer))
                        if profiled:
                            profiles = {"keeper": cProfile.Profile(), "peer": cProfile.Profile()}
                            asyncio.run(catch_up(via_keeper[-1], built, (), profiles["keeper"]))
                            peer = (host.url,)
                            asyncio.run(catch_up(via_peer[-1], plain, peer, profiles["peer"]))
                            spent = {name: by_layer(p) for name, p in profiles.items()}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if times:
            results.append(
                Measured(
                    posts,
                    sum(built.frontier.values()),
                    statistics.median(k for k, _ in times),
                    statistics.median(p for _, p in times),
                    statistics.median(k / p for k, p in times),
                    tuple(times),
                )
            )
    return results, spent


def by_layer(profile: cProfile.Profile) -> dict[str, float]:
    """:func:`bench.catch_up.by_layer`, with ``websockets`` counted as ``net``."""
    original = catch_up_bench.layer_of

    def layer_of(filename: str, function: str) -> str | None:
        if "/websockets/" in filename.replace("\\", "/"):
            return "net"
        return original(filename, function)

    catch_up_bench.layer_of = layer_of
    try:
        return catch_up_bench.by_layer(profile)
    finally:
        catch_up_bench.layer_of = original


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
        for k, p in m.runs:
            print(f"    run: keeper {k:6.2f} s, peer {p:6.2f} s -> {k / p:.2f}x")
        print(
            f"  {m.posts:>7,} posts ({m.entries:,} entries): keeper {m.keeper:6.2f} s, "
            f"peer {m.peer:6.2f} s -> {m.ratio:.2f}x median, {m.best:.2f}x best "
            "(target <= 1.20)"
        )
    for name, layers in spent.items():
        print(f"  {name} catch-up by layer: {catch_up_bench.layer_summary(layers)}")


if __name__ == "__main__":
    main()
