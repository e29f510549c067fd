"""Invite defaults come from the running device (issue 17, item 4): its real listener address
and port, its relay, nothing it does not listen on; in Python and through ``serve``. Each
invite is then redeemed, so "reachable" is tested, not just printed."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.errors import InviteError
from microsync.group.invite import parse_link
from microsync.net.relay import RelayServer
from tests.test_cli import run
from tests.test_cli_network import free_port, serving


async def test_a_listener_on_a_chosen_port_is_what_the_invite_names(tmp_path: Path) -> None:
    port = free_port()
    async with (
        await microsync.Device.open(tmp_path / "alice", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "bob", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=port, bind="127.0.0.1")
        family = await alice.create_group("Family")
        invite = await family.invite(ttl=60)
        link = parse_link(invite.link)
        assert (link.addresses, link.relay) == ((f"127.0.0.1:{port}",), None)
        assert alice.listen_addresses() == (f"127.0.0.1:{port}",)
        joined = await bob.join(invite.link)
        assert {m.name for m in joined.members()} == {"Alice", "Bob"}


async def test_a_device_with_only_a_relay_invites_through_it(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(RelayServer("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{relay.port}"
        alice = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "alice", name="Alice")
        )
        bob = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "bob", name="Bob")
        )
        await alice.start(lan=False, port=None, relay=url)
        family = await alice.create_group("Family")
        invite = await family.invite(ttl=60)
        link = parse_link(invite.link)
        assert (link.addresses, link.relay) == ((), url)  # no 127.0.0.1:7425, the relay
        joined = await bob.join(invite.link)
        assert {m.name for m in joined.members()} == {"Alice", "Bob"}
        await alice.stop()


async def test_a_device_nobody_can_reach_refuses_to_invite(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "alice", name="Alice") as alice:
        await alice.start(lan=False, port=None)
        family = await alice.create_group("Family")
        with pytest.raises(InviteError, match="no port and uses no relay"):
            await family.invite()
        named = await family.invite(addresses=["127.0.0.1:9"])  # what the caller says goes
        assert parse_link(named.link).addresses == ("127.0.0.1:9",)


def test_invite_through_serve_names_serves_real_port(tmp_path: Path) -> None:
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    port = free_port()
    run("--home", alice, "init", "--name", "Alice")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", alice, "group", "create", "Family")
    with serving(alice, port):  # --bind 127.0.0.1 --port PORT
        shown = run("--home", alice, "invite", "--json")
        assert shown.returncode == 0, shown.stderr
        link = parse_link(json.loads(shown.stdout)["link"])
        assert (link.addresses, link.relay) == ((f"127.0.0.1:{port}",), None)
        plain = run("--home", alice, "invite", "--no-qr")
        assert "they can join now" in plain.stdout
        joined = run("--home", bob, "join", json.loads(shown.stdout)["link"])
        assert joined.returncode == 0, joined.stderr


async def test_a_relay_that_is_not_a_url_is_refused_at_start(tmp_path: Path) -> None:
    """It used to start, log 'Task exception was never retrieved' and run on with no relay."""
    async with await microsync.Device.open(tmp_path / "alice", name="Alice") as alice:
        with pytest.raises(ValueError, match="ws://HOST:PORT"):
            await alice.start(lan=False, port=None, relay="notaurl")
        assert alice.relay is None and alice.port is None
