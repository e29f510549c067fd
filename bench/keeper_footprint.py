"""A keeper's memory and disk per group: many groups of 12 members each pushing some items.

Part of ``python -m bench.keeper`` (see its docstring, "footprint").
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.keeper_rig import keeper, sealed_size
from microsync.group.mailbox import Mailbox
from microsync.net.keeper_client import KeeperClient, Record

CLIENTS = 12


@dataclass(frozen=True, slots=True)
class Footprint:
    groups: int
    members: int
    per_member: int
    items: int
    kept: int  # sealed payload + item id bytes: what must be on disk
    rss: int  # growth of VmRSS above the idle keeper, connections closed
    peak: int  # growth of VmHWM above the idle keeper
    disk_running: int  # data directory while it runs
    disk_stopped: int  # after it stopped on SIGINT (its store closed: the WAL folded in)
    seconds: float


def _disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _pick(pool: Sequence[Record], group: int, who: int, i: int) -> Record:
    """The record whose sizes member ``who`` of ``group`` pushes as its ``i``-th."""
    return pool[(group * 7 + who * 131 + i) % len(pool)]


async def _fill(
    url: str, groups: int, members: int, per_member: int, pool: Sequence[Record]
) -> None:
    async def member(mailbox: Mailbox, group: int, who: int) -> None:
        mine = [
            Record(
                name=f"{group}/{who}/{i}".encode(),
                data=_pick(pool, group, who, i).data,
            )
            for i in range(per_member)
        ]
        async with await KeeperClient.connect(url) as client:
            await client.push(mailbox, mine)

    async def group_of(g: int) -> None:
        mailbox = Mailbox.derive(os.urandom(32))
        await asyncio.gather(*(member(mailbox, g, m) for m in range(members)))

    for first in range(0, groups, 2):  # two groups at a time: 24 connections
        await asyncio.gather(*(group_of(g) for g in range(first, min(first + 2, groups))))


def measure_footprint(
    groups: int, per_member: int, pool: Sequence[Record], members: int = CLIENTS
) -> Footprint:
    """One keeper filled with ``groups`` groups' items; what it holds in memory and on disk."""
    kept = 0
    for g in range(groups):
        for who in range(members):
            for i in range(per_member):
                kept += sealed_size(_pick(pool, g, who, i)) + 32
    with tempfile.TemporaryDirectory(prefix="microsync-bench-keeper-") as disk:
        data = Path(disk) / "keeper"
        with keeper(data) as running:
            idle_rss, idle_peak = running.memory()
            start = time.perf_counter()
            asyncio.run(_fill(running.url, groups, members, per_member, pool))
            seconds = time.perf_counter() - start
            rss, peak = running.memory()
            disk_running = _disk(data)
        disk_stopped = _disk(data)
    return Footprint(
        groups=groups,
        members=members,
        per_member=per_member,
        items=groups * members * per_member,
        kept=kept,
        rss=rss - idle_rss,
        peak=peak - idle_peak,
        disk_running=disk_running,
        disk_stopped=disk_stopped,
        seconds=seconds,
    )
