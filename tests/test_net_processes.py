"""Devices as separate processes on 127.0.0.1 (``tests/net_peer.py``): a group formed through
invites redeemed over the wire, a full sync, live posts, a new device SIGKILLed while thousands of
entries stream to it and a member SIGKILLed right after it posted, both restarted on the same
profile; in the end every device shows the same feed and holds the same frontier. No root."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.net_peer import PeerProcess

HISTORY = 3000  # posts already in the group when the new device joins
TIMEOUT = 30.0


def wait_for(check: Callable[[], bool], timeout: float = TIMEOUT, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


class Peers:
    """Every peer process a test starts, stopped by pid at the end (``finally``)."""

    def __init__(self, root: Path) -> None:
        self.root, self.all = root, list[PeerProcess]()

    def start(self, name: str, *options: str) -> PeerProcess:
        peer = PeerProcess(self.root / name, name, "--bind", "127.0.0.1", "--port", "0", *options)
        self.all.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.all:
            peer.stop()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    started = Peers(tmp_path)
    try:
        yield started
    finally:
        started.close()


def address(peer: PeerProcess) -> str:
    return f"127.0.0.1:{peer.port}"


def converged(group: str, *peers: PeerProcess) -> Callable[[], bool]:
    """True once every peer shows the same posts and holds the same frontier."""

    def check() -> bool:
        states = [p.ask("state", group=group) for p in peers]
        return all(
            (s["digest"], s["frontier"]) == (states[0]["digest"], states[0]["frontier"])
            for s in states
        )

    return check


def kill_mid_sync(peer: PeerProcess, group: str, total: int) -> dict[str, Any]:
    """Poll ``peer`` until some but not all of ``total`` entries arrived, then SIGKILL it;
    returns the last frontier it acknowledged."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        heads = peer.ask("frontier", group=group)
        if 0 < heads["entries"] < total:
            peer.kill()
            return heads
        assert heads["entries"] < total, "the sync finished before the peer could be killed"
        time.sleep(0.005)
    raise AssertionError("no entries arrived")


def test_processes_form_a_group_sync_live_survive_kills_and_converge(peers: Peers) -> None:
    alice = peers.start("Alice")
    family = alice.ask("create", name="Family")["group"]
    alice.ask("post", group=family, n=HISTORY, text="history", timeout=60)
    bob, carol = peers.start("Bob"), peers.start("Carol")
    # invites redeemed over the wire: a link (it carries Alice's address) and a short code
    link = alice.ask("invite", group=family)["link"]
    assert address(alice) in link
    assert bob.ask("join", link=link)["group"] == family
    code = alice.ask("invite", group=family)["code"]
    assert carol.ask("join", link=code, at=address(alice))["group"] == family
    for peer in (bob, carol):
        state = peer.ask("state", group=family, texts=1)
        assert state["count"] == HISTORY and state["texts"] == [f"history {HISTORY - 1}"]
    wait_for(lambda: alice.ask("state", group=family)["members"] == ["Alice", "Bob", "Carol"])

    # live: kept connections (reconnecting) between all three; a post on one shows on all
    bob.ask("connect", address=address(alice))
    carol.ask("connect", address=address(alice))
    carol.ask("connect", address=address(bob))
    for author in (alice, bob, carol):
        [post] = author.ask("post", group=family, text=f"live from {author.name}")["ids"]
        for reader in (alice, bob, carol):
            wait_for(partial(shows, reader, family, post))

    # Carol posts, acknowledges, and is killed at once: the acknowledged post survives
    [kept] = carol.ask("post", group=family, text="acknowledged, then killed")["ids"]
    carol.kill()
    carol = peers.start("Carol", "--peer", address(alice))
    assert shows(carol, family, kept)
    wait_for(lambda: shows(alice, family, kept))

    # a new device joins the big group and is killed while the entries stream
    dave = peers.start("Dave")
    total = alice.ask("frontier", group=family)["entries"]
    link = alice.ask("invite", group=family)["link"]
    dave.send("join", link=link)
    acked = kill_mid_sync(dave, family, total)
    dave = peers.start("Dave")  # the same profile: it opens cleanly and kept what it acked
    reopened = dave.ask("frontier", group=family)["frontier"]
    assert all(reopened.get(device, 0) >= seq for device, seq in acked["frontier"].items())
    dave.ask("connect", address=address(alice))
    everyone = (alice, bob, carol, dave)
    wait_for(converged(family, *everyone), timeout=60, step=0.3)
    state = dave.ask("state", group=family, texts=1)
    assert state["count"] == HISTORY + 4
    assert state["members"] == ["Alice", "Bob", "Carol", "Dave"]
    for peer in everyone:
        assert peer.stop() == 0, f"{peer.name} did not stop cleanly: {''.join(peer.stderr)}"


def shows(peer: PeerProcess, group: str, post: str) -> bool:
    return bool(peer.ask("has", group=group, ids=[post])["has"] == [post])
