"""Devices started with ``lan=True`` find each other through real multicast DNS and sync, with no
address given; a device of another group on the same LAN is never connected to; an independent
mDNS client sees the service and nothing identifying in it.

Every packet stays inside network namespaces the tests create (NETWORK_TESTING.md): a LAN of
three hosts on a bridge (root), and a fresh loopback-only namespace (``unshare -n``; rootless
``unshare -Urn`` where allowed). The devices are processes (``tests/net_peer.py``) whose profiles
are made beforehand in this process: the group exists, but no device knows where another is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

import microsync
from microsync.node import DEFAULT_PORT
from tests.faultproxy import FaultProxy
from tests.net_peer import PeerProcess
from tests.netns import Lan, LoopbackNamespace, lan_unavailable, loopback_unavailable, python
from tests.test_app_group import family_of
from tests.test_net_sync import eventually

FIND = 30.0  # generous: zeroconf probes ~1.6 s, then backs off its queries 1 s, 2 s, 4 s...
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def wait_for(check: Callable[[], bool], timeout: float = FIND, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


async def make_profiles(root: Path) -> dict[str, str]:
    """Alice and Bob in "Canary Family", Eve alone in "Eve's Canary Club"; returns every
    identifying value (names, group ids, device and person keys, in hex) to look for on the
    wire."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, root, "Alice Canary", "Bob Canary")
        eve = await stack.enter_async_context(
            await microsync.Device.open(root / "Eve Canary", name="Eve Canary")
        )
        club = await eve.create_group("Eve's Canary Club")
        devices = [alice.device, bob.device, eve]
        ids = [alice.id, club.id] + [d.id for d in devices] + [d.person_id for d in devices]
        return {
            "family": alice.id.hex(),
            "club": club.id.hex(),
            "canaries": json.dumps(["Canary", "Family", "Club", *(bytes(i).hex() for i in ids)]),
        }


def profiles(root: Path) -> dict[str, Any]:
    made = asyncio.run(make_profiles(root))
    return {**made, "canaries": json.loads(made["canaries"])}


def names_of(peer: PeerProcess) -> list[str]:
    return sorted(p["name"] for p in peer.ask("peers")["peers"])


def discover_and_sync(
    alice: PeerProcess, bob: PeerProcess, eve: PeerProcess, made: dict[str, Any]
) -> None:
    """Alice and Bob connect on their own and a post crosses; Eve is never connected to."""
    family, club = made["family"], made["club"]
    [post] = alice.ask("post", group=family, text="found you without an address")["ids"]
    wait_for(lambda: bob.ask("has", group=family, ids=[post])["has"] == [post])
    [back] = bob.ask("post", group=family, text="and back")["ids"]
    wait_for(lambda: alice.ask("has", group=family, ids=[back])["has"] == [back])
    eve.ask("post", group=club, text="only for the club")
    time.sleep(1.0)  # Eve has seen their announcements by now (they saw each other's)
    assert names_of(alice) == ["Bob Canary"] and names_of(bob) == ["Alice Canary"]
    assert names_of(eve) == []
    assert alice.ask("frontier", group=club)["entries"] == 0
    assert eve.ask("frontier", group=family)["entries"] == 0


def check_outsider_view(services: Sequence[dict[str, Any]], made: dict[str, Any]) -> None:
    """What an mDNS client on the LAN learns: a random name and host, an address and port, and
    a TXT of exactly v, n and t; no name, group, device or person."""
    assert services
    for service in services:
        assert service["name"].endswith("._microsync._tcp.local")
        assert HEX16.match(service["name"].split(".")[0]), service
        assert HEX16.match(service["host"].removesuffix(".local")), service
        pairs = dict(entry.split("=", 1) for entry in service["txt"])
        assert set(pairs) == {"v", "n", "t"} and pairs["v"] == "1", service
    seen = json.dumps(services).lower()
    for canary in made["canaries"]:
        assert canary.lower() not in seen, canary


def raw_query(start: Callable[[list[str]], subprocess.Popen[str]], interface: str) -> Any:
    """The stdlib-only mDNS client of tests/mdns_peer.py, run inside the namespace."""
    proc = start(python("tests/mdns_peer.py", "query", interface, "0.6"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return json.loads(out)["services"]


def dig(netns: str, server: str, name: str, rtype: str) -> str:
    """``dig`` (BIND's, installed separately) asking one host's mDNS responder directly."""
    argv = ["dig", "+time=2", "+tries=2", "+noall", "+answer", "-p", "5353", f"@{server}"]
    out = subprocess.run(
        ["ip", "netns", "exec", netns, *argv, name, rtype],
        capture_output=True,
        text=True,
        timeout=15,
    )
    return out.stdout


# --- both sides dial: one connection stays ------------------------------------------------------


async def test_two_devices_that_dial_each_other_keep_one_connection(tmp_path: Path) -> None:
    """What two devices that discover each other do: both dial. Whichever connection each side
    registers first, both keep the one dialled by the smaller device id and close the other
    (here the preferred one comes first on both sides, the order that used to keep both); and
    the side whose kept connection was the duplicate does not redial while the other lives;
    a one-shot ``sync_with`` beside the live connection still completes."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        first, second = sorted((alice.device, bob.device), key=lambda d: d.id)
        for device in (first, second):
            await device.start(lan=False, port=0)
        first.connect(f"127.0.0.1:{second.port}")
        await eventually(lambda: len(first.peers()) == len(second.peers()) == 1)
        proxy = await stack.enter_async_context(FaultProxy(("127.0.0.1", first.port or 0)))
        second.connect(proxy.address)  # counts the second device's dials
        await eventually(lambda: proxy.accepted == 1)
        await asyncio.sleep(1.0)  # the second dial has long connected (and been closed)
        await eventually(lambda: len(first.peers()) == len(second.peers()) == 1)
        assert [p.address for p in first.peers()] == [f"127.0.0.1:{second.port}"]
        await asyncio.sleep(1.5)  # a redial would come within 0.75 s of the close
        assert proxy.accepted == 1 and len(first.peers()) == len(second.peers()) == 1
        post = await second.group(alice.id).post("over the one connection")
        await eventually(lambda: any(p.id == post.id for p in first.group(alice.id).feed()))
        # a one-shot sync beside the live connection is not closed as its duplicate
        await first.group(alice.id).post("fetched by a one-shot sync too")
        result = await second.sync_with("127.0.0.1", first.port or 0)
        assert result.groups == (alice.id,)
        for device in (first, second):
            await device.stop()


# --- three hosts on a bridge -------------------------------------------------------------------


def test_devices_on_a_lan_find_each_other_and_only_their_group(tmp_path: Path) -> None:
    reason = lan_unavailable()
    if reason:
        pytest.skip(reason)
    made = profiles(tmp_path)
    started: list[PeerProcess] = []
    with Lan(3) as lan:
        try:

            def start(host: int, name: str) -> PeerProcess:
                address = lan.addresses[host - 1]
                prefix = ["ip", "netns", "exec", lan.hosts[host - 1]]
                options = ["--lan", "--interface", address, "--bind", address]
                started.append(PeerProcess(tmp_path / name, name, *options, prefix=prefix, ready=0))
                return started[-1]

            alice, bob = start(1, "Alice Canary"), start(2, "Bob Canary")
            eve = start(3, "Eve Canary")
            for peer in started:
                peer.wait_ready()
            assert alice.port == bob.port == eve.port == DEFAULT_PORT
            discover_and_sync(alice, bob, eve, made)
            [peer] = alice.ask("peers")["peers"]
            assert peer["address"].startswith("10.77.0.2:")

            def in_host3(argv: list[str]) -> subprocess.Popen[str]:
                return subprocess.Popen(
                    ["ip", "netns", "exec", lan.hosts[2], *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=Path(__file__).resolve().parents[1],
                )

            services = raw_query(in_host3, lan.addresses[2])
            check_outsider_view(services, made)
            where = sorted((s["addresses"], s["port"]) for s in services)
            assert where == [([a], DEFAULT_PORT) for a in lan.addresses]
            if shutil.which("dig") is not None:
                check_with_dig(lan, made)
        finally:
            for peer in started:
                peer.stop()


def check_with_dig(lan: Lan, made: dict[str, Any]) -> None:
    """A second independent client: BIND's dig, asking Alice's host by legacy unicast."""
    ptr = dig(lan.hosts[2], lan.addresses[0], "_microsync._tcp.local", "PTR")
    instances = re.findall(r"\sPTR\s+([0-9a-f]{16}\._microsync\._tcp\.local)\.", ptr)
    assert instances, ptr
    txt = dig(lan.hosts[2], lan.addresses[0], instances[0], "TXT")
    strings = re.findall(r'"([^"]*)"', txt)
    assert sorted(s.split("=", 1)[0] for s in strings) == ["n", "t", "v"], txt
    for canary in made["canaries"]:
        assert canary.lower() not in (ptr + txt).lower(), canary


# --- a loopback-only namespace -----------------------------------------------------------------


def test_devices_in_a_loopback_namespace_find_each_other(tmp_path: Path) -> None:
    reason = loopback_unavailable()
    if reason:
        pytest.skip(reason)
    made = profiles(tmp_path)
    started: list[PeerProcess] = []
    with LoopbackNamespace() as namespace:
        # a process parked in the namespace (it says so once inside): the peers join its
        # network namespace by its pid
        anchor = namespace.run(["sh", "-c", "echo inside && exec sleep 600"])
        assert anchor.next_line(10) == "inside", "".join(anchor.stderr)
        join = ["nsenter", "-t", str(anchor.popen.pid), "-n"]
        if os.geteuid() != 0:
            join[1:1] = ["-U", "--preserve-credentials"]
        try:
            for name in ("Alice Canary", "Bob Canary", "Eve Canary"):
                options = ["--lan", "--interface", "127.0.0.1", "--bind", "127.0.0.1"]
                started.append(
                    PeerProcess(tmp_path / name, name, *options, prefix=[*join, "--"], ready=0)
                )
            alice, bob, eve = (peer.wait_ready() for peer in started)
            discover_and_sync(alice, bob, eve, made)

            def inside(argv: list[str]) -> subprocess.Popen[str]:
                return subprocess.Popen(
                    [*join, "--", *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=Path(__file__).resolve().parents[1],
                )

            services = raw_query(inside, "127.0.0.1")
            check_outsider_view(services, made)
            ports = {alice.port, bob.port, eve.port}
            assert {s["port"] for s in services} == ports and len(ports) == 3
        finally:
            for peer in started:
                peer.stop()
