"""Sync over a bad network still completes and converges.

* On loopback (no root), through :class:`tests.faultproxy.FaultProxy`: connections cut again and
  again in the middle of a large sync (the device's ``connect()`` reconnects with backoff and the
  session resumes instead of starting over), cut on demand while both sides keep posting, and a
  50 ms one-way delay.
* Inside network namespaces (root): three hosts on a bridge, devices as processes
  (``tests/net_peer.py``) on their 10.77.0.x addresses, with ~10% of every host's outgoing
  packets dropped by nftables, then a partition that heals while both sides post.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import pytest

import microsync
from microsync.errors import RemoteProtocolError
from tests.faultproxy import FaultProxy
from tests.net_peer import PeerProcess
from tests.netns import Lan, lan_unavailable
from tests.test_app_group import family_of
from tests.test_net_sync import eventually

# --- on loopback, through the proxy -------------------------------------------------------------


CUT = 300_000


def heads(group: microsync.Group) -> dict[bytes, int]:
    return {bytes(d): s for d, s in group.device.frontier(group.id).items()}


def same(*groups: microsync.Group) -> Callable[[], bool]:
    """True once every device holds the same frontier and shows the same posts."""

    def check() -> bool:
        views = [(heads(g), sorted((p.id, p.text or "") for p in g.feed())) for g in groups]
        return all(view == views[0] for view in views)

    return check


def shows(group: microsync.Group, post: bytes) -> bool:
    return any(p.id == post for p in group.feed())


async def bulk(group: microsync.Group, n: int, text: str) -> None:
    for i in range(n):
        await group.post(f"{text} {i} " + "·" * 40)


async def test_sync_completes_across_repeated_cuts_and_resumes(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await bulk(alice, 2000, "history")
        await alice.device.start(lan=False, port=0)
        target = ("127.0.0.1", alice.device.port or 0)
        # Carol syncs through a clean proxy: what a whole sync costs on the wire
        clean = await stack.enter_async_context(FaultProxy(target))
        await carol.device.sync_with("127.0.0.1", clean.port)
        assert same(alice, carol)() and clean.cuts == 0
        # Bob's connections end after 300 kB (inside a record), twice in a row
        proxy = await stack.enter_async_context(FaultProxy(target, cut_after=CUT, cuts=2))
        await bob.device.start(lan=False, port=None)
        bob.device.connect(proxy.address)
        await eventually(same(alice, bob), timeout=30)
        assert proxy.cuts == 2 and proxy.accepted >= 3
        # resumed, not restarted: a cut wastes at most the batch in flight (~100 kB), where
        # starting over would waste all 300 kB
        wasted = proxy.forwarded - clean.forwarded
        assert wasted < proxy.cuts * CUT / 2, (proxy.forwarded, clean.forwarded)

        # cut on demand while both sides keep writing: all of it arrives after the reconnect
        await eventually(lambda: bool(bob.device.peers()))
        assert proxy.cut_all() == 1
        await alice.post("written while the line was down")
        await bob.post("also written while the line was down")
        await eventually(same(alice, bob), timeout=30)
        assert proxy.cuts == 3 and proxy.accepted >= 4
        await bob.device.stop()
        await alice.device.stop()


async def test_a_cut_one_shot_sync_fails_with_a_remote_error(tmp_path: Path) -> None:
    """A stream cut after a whole batch: the batch is kept and ``sync_with`` blames the peer's
    stream (a cut record), not this side's channel, which the reader closed while the writer
    still had the batch's acknowledgement to send. The delay makes the batch, the cut record
    and the end of the stream arrive together, every time."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await bulk(alice, 600, "history")
        await alice.device.start(lan=False, port=0)
        target = ("127.0.0.1", alice.device.port or 0)
        async with FaultProxy(target, delay=0.1, cut_after=150_000) as proxy:
            with pytest.raises(RemoteProtocolError):
                await bob.device.sync_with("127.0.0.1", proxy.port)
        assert 256 <= sum(heads(bob).values()) < sum(heads(alice).values())
        await alice.device.stop()


async def test_sync_and_live_posts_with_a_50ms_one_way_delay(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await bulk(alice, 300, "history")
        await alice.device.start(lan=False, port=0)
        proxy = await stack.enter_async_context(
            FaultProxy(("127.0.0.1", alice.device.port or 0), delay=0.05)
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await bob.device.sync_with("127.0.0.1", proxy.port)
        assert result.entries_received >= 300 and same(alice, bob)()
        assert loop.time() - started >= 0.2  # handshake and sync: several delayed round trips
        await bob.device.start(lan=False, port=None)
        bob.device.connect(proxy.address)
        await eventually(lambda: any(p.synced for p in bob.device.peers()), timeout=20)
        for _ in range(3):
            sent = loop.time()
            post = await alice.post("live, late")
            await eventually(partial(shows, bob, post.id), timeout=10)
            assert loop.time() - sent >= 0.05
        await bob.post("and back")
        await eventually(same(alice, bob), timeout=20)
        assert proxy.cuts == 0
        await bob.device.stop()
        await alice.device.stop()


# --- inside network namespaces -------------------------------------------------------------------

LOSS_PERCENT = 10


def nft_unavailable() -> str | None:
    reason = lan_unavailable()
    if reason is not None:
        return reason
    if shutil.which("nft") is None:
        return "nft (nftables) is not installed: packet loss needs it (tc netem is not available)"
    return None


def drop_outgoing(lan: Lan, host: int, percent: int) -> None:
    """Drop ``percent``% of ``host``'s outgoing packets on eth0 (NETWORK_TESTING.md)."""
    nft = ["ip", "netns", "exec", lan.hosts[host - 1], "nft"]
    chain = "{ type filter hook output priority 0; policy accept; }"
    rule = ["oifname", "eth0", "numgen", "random", "mod", "100", "<", str(percent)]
    for args in (
        ["add", "table", "inet", "fault"],
        ["add", "chain", "inet", "fault", "out", chain],
        ["add", "rule", "inet", "fault", "out", *rule, "counter", "drop"],
    ):
        subprocess.run([*nft, *args], check=True, capture_output=True, timeout=10)


def dropped(lan: Lan, host: int) -> int:
    """Packets the loss rule of ``host`` dropped so far."""
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lan.hosts[host - 1],
            "nft",
            "list",
            "chain",
            "inet",
            "fault",
            "out",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return int(out.split("counter packets ")[1].split()[0])


@pytest.fixture
def lan() -> Iterator[Lan]:
    reason = nft_unavailable()
    if reason:
        pytest.skip(reason)
    with Lan(3) as built:
        yield built


def wait_for(check: Callable[[], bool], timeout: float = 30.0, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


def converged(group: str, *peers: PeerProcess) -> Callable[[], bool]:
    def check() -> bool:
        states = [p.ask("state", group=group) for p in peers]
        return all(
            (s["digest"], s["frontier"]) == (states[0]["digest"], states[0]["frontier"])
            for s in states
        )

    return check


def test_packet_loss_and_a_healed_partition_on_a_lan(lan: Lan, tmp_path: Path) -> None:
    started: list[PeerProcess] = []

    def start(host: int, name: str) -> PeerProcess:
        prefix = ["ip", "netns", "exec", lan.hosts[host - 1]]
        bind = ["--bind", lan.addresses[host - 1]]
        started.append(PeerProcess(tmp_path / name, name, *bind, prefix=prefix))
        return started[-1]

    try:
        alice, bob, carol = start(1, "Alice"), start(2, "Bob"), start(3, "Carol")
        at = f"{lan.addresses[0]}:{alice.port}"
        family = alice.ask("create", name="Family")["group"]
        for peer in (bob, carol):
            link = alice.ask("invite", group=family, addresses=[at])["link"]
            assert peer.ask("join", link=link)["group"] == family
        bob.ask("connect", address=at)
        carol.ask("connect", address=at)
        carol.ask("connect", address=f"{lan.addresses[1]}:{bob.port}")

        # ~10% of every host's packets lost: a few hundred posts still arrive everywhere
        for host in (1, 2, 3):
            drop_outgoing(lan, host, LOSS_PERCENT)
        alice.ask("post", group=family, n=300, text="through loss", timeout=60)
        [live] = carol.ask("post", group=family, text="live through loss")["ids"]
        wait_for(converged(family, alice, bob, carol), timeout=45)
        assert alice.ask("has", group=family, ids=[live])["has"] == [live]
        assert sum(dropped(lan, host) for host in (1, 2, 3)) > 0

        # Carol's cable is pulled; both sides write; the cable goes back; all converge
        lan.set_link(3, up=False)
        [inside] = alice.ask("post", group=family, text="while Carol was away")["ids"]
        [outside] = carol.ask("post", group=family, text="Carol, cut off")["ids"]
        time.sleep(1.0)
        assert carol.ask("has", group=family, ids=[inside])["has"] == []
        assert alice.ask("has", group=family, ids=[outside])["has"] == []
        lan.set_link(3, up=True)
        wait_for(converged(family, alice, bob, carol), timeout=45)
        assert carol.ask("has", group=family, ids=[inside])["has"] == [inside]
        assert bob.ask("has", group=family, ids=[outside])["has"] == [outside]
        assert alice.ask("state", group=family)["count"] == 303
    finally:
        for peer in started:
            peer.stop()
