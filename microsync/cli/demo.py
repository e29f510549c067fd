"""``microsync demo``: three devices on this machine form a family group over real loopback TCP,
post, reply, react, share a coarse location and remove a member, printing each step and what
each device sees. Temporary profiles; no set-up; well under a minute."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from rich.console import Console

from microsync.errors import MicrosyncError
from microsync.node import Device, Group

__all__ = ["cmd_demo", "run_demo"]

OXFORD = (51.752_021, -1.257_726)


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait until ``check()`` holds (live sync runs in the background meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise MicrosyncError(f"demo: timed out waiting until {what}")
        await asyncio.sleep(0.02)


def _feed(group: Group) -> list[str]:
    lines = []
    for post in reversed(group.feed()):
        reactions = " ".join(f"{e}×{len(who)}" for e, who in post.reactions.items())
        indent = "    ↳ " if post.reply_to else "  "
        lines.append(f"{indent}{post.author_name}: {post.text} {reactions}".rstrip())
    return lines


async def run_demo(root: Path, out: Console) -> float:
    """Run the demo in ``root``; returns the seconds it took."""
    start = time.monotonic()
    step = 0

    def say(text: str) -> None:
        nonlocal step
        step += 1
        out.print(f"\n[bold cyan]{step}. {text}[/]  [dim]({time.monotonic() - start:.1f} s)[/]")

    def show(name: str, lines: list[str]) -> None:
        out.print(f"   [bold]{name}[/] sees:")
        for line in lines or ["  (nothing)"]:
            out.print(f"   {line}")

    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(await Device.open(root / "alice", name="Alice"))
        bob = await stack.enter_async_context(await Device.open(root / "bob", name="Bob"))
        carol = await stack.enter_async_context(await Device.open(root / "carol", name="Carol"))

        say("Alice creates the group [i]Family[/] and goes online on 127.0.0.1")
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        out.print(f"   listening on 127.0.0.1:{alice.port}; group id {family.id.hex()[:16]}")

        say("Alice invites Bob with a link (what a QR code carries) and Carol with a short code")
        link_invite = await family.invite(ttl=600)
        code_invite = await family.invite(ttl=600)
        out.print(f"   link: {link_invite.link[:60]}…")
        out.print(f"   code: {code_invite.code}")
        bob_family = await bob.join(link_invite.link)
        carol_family = await carol.join(code_invite.code, at=f"127.0.0.1:{alice.port}")
        out.print("   members: " + ", ".join(f"{m.name} ({m.role})" for m in family.members()))

        say("Bob and Carol go online and keep a live connection to Alice")
        peer = (f"127.0.0.1:{alice.port}",)
        await bob.start(lan=False, port=None, peers=peer)
        await carol.start(lan=False, port=None, peers=peer)
        await until(lambda: len([p for p in alice.peers() if p.synced]) == 2, "all are in sync")
        out.print("   Alice's peers: " + ", ".join(p.name for p in alice.peers()))

        say("Alice posts; Bob replies; Carol reacts")
        post = await family.post("Landed in Oxford ✈️")
        await until(lambda: any(p.id == post.id for p in bob_family.feed()), "Bob has the post")
        await bob_family.reply(post.id, "Welcome back! Dinner on Sunday?")
        await until(lambda: any(p.id == post.id for p in carol_family.feed()), "Carol has it")
        await carol_family.react(post.id, "❤️")
        await until(
            lambda: len(family.feed()) == 2 and bool(family.post_by_id(post.id).reactions),
            "the reply and the reaction reach Alice",
        )
        await until(lambda: len(carol_family.feed()) == 2, "Carol has the reply")
        for name, group in (("Alice", family), ("Bob", bob_family), ("Carol", carol_family)):
            show(name, _feed(group))

        say("Alice shares her location at city precision")
        await family.share_location(*OXFORD, precision="city")
        out.print(f"   Alice's phone knows {OXFORD[0]}, {OXFORD[1]}; it sends only the city cell")
        await until(lambda: family._person() in bob_family.locations(), "Bob sees it")
        where = bob_family.locations()[family._person()]
        out.print(f"   Bob sees Alice at {where.lat}, {where.lon} ({where.precision})")

        say("Alice removes Carol: a new key epoch that Carol's device never receives")
        before = family.epoch
        await family.remove(carol.person_id)
        out.print(f"   epoch {before} → {family.epoch}")
        secret = await family.post("Planning Carol's surprise party 🎉")
        await until(lambda: any(p.id == secret.id for p in bob_family.feed()), "Bob has it")
        await until(lambda: not carol_family.is_member(), "Carol's device learns she is out")
        await asyncio.sleep(0.3)  # give the live push every chance to (wrongly) reach Carol
        show("Bob", _feed(bob_family)[-1:])
        show("Carol", [line for line in _feed(carol_family) if "surprise" in line])
        if any(p.id == secret.id for p in carol_family.feed()):
            raise MicrosyncError("demo: a removed member read a new post")
        members = ", ".join(m.name for m in family.members())
        out.print(f"   members now: {members}. Carol's device was told of the removal and")
        out.print("   nothing after it; it holds no key of the new epoch anyway.")

        say("Everyone goes offline")
        for device in (carol, bob, alice):
            await device.stop()
    return time.monotonic() - start


async def cmd_demo(args: argparse.Namespace, out: Console) -> int:
    out.print(
        "[bold]microsync demo[/]: three devices (Alice, Bob, Carol) in temporary profiles, "
        "syncing over real TCP on 127.0.0.1."
    )
    with tempfile.TemporaryDirectory(prefix="microsync-demo-") as tmp:
        took = await run_demo(Path(tmp), out)
    out.print(f"\n[bold green]Done in {took:.1f} s.[/] The temporary profiles are deleted.")
    return 0
