"""``microsync keeper add URL --group G``, ``keeper ls [--group G]``, ``keeper rm URL --group
G``: a group's keepers from the command line, and two members who are never online together
talking through one. Real subprocesses, real profiles, a real keeper on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.keeper_helpers import keeper
from tests.test_cli import run
from tests.test_cli_errors import one_line
from tests.test_cli_network import free_port, serving, two_members


def test_keeper_add_ls_rm_with_one_line_errors(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    run("--home", home, "group", "create", "Family")
    run("--home", home, "group", "create", "Work")
    assert "no keepers" in run("--home", home, "keeper", "ls").stdout
    added = run("--home", home, "keeper", "add", "WS://Keeper.Example:7427/", "--group", "fam")
    assert added.returncode == 0, added.stderr
    assert "Family now uses the keeper ws://keeper.example:7427" in added.stdout
    listed = run("--home", home, "keeper", "ls").stdout.splitlines()
    assert listed == ["Family  ws://keeper.example:7427  offline"]
    assert run("--home", home, "keeper", "ls", "--group", "work").stdout.startswith("no keepers")
    one_line(run("--home", home, "keeper", "add", "http://x", "--group", "fam"), "ws://")
    one_line(run("--home", home, "keeper", "add", "--group", "fam"), "which keeper")
    one_line(run("--home", home, "keeper", "add", "ws://k:1"), "--group", "Family", "Work")
    one_line(run("--home", home, "keeper", "rm", "ws://other:1", "--group", "fam"), "does not use")
    one_line(run("--home", home, "keeper", "frob"), "invalid choice")
    one_line(run("--home", home, "keeper"), "--data")
    removed = run("--home", home, "keeper", "rm", "ws://keeper.example:7427", "--group", "fam")
    assert removed.returncode == 0 and "no longer uses" in removed.stdout, removed.stderr
    assert run("--home", home, "keeper", "ls").stdout.startswith("no keepers")


def test_a_member_may_not_add_a_keeper(tmp_path: Path) -> None:
    _, bob, _ = two_members(tmp_path)
    one_line(run("--home", bob, "keeper", "add", "ws://k:1", "--group", "Family"), "only admins")


def test_two_members_never_online_together_post_through_a_keeper(tmp_path: Path) -> None:
    alice, bob, port = two_members(tmp_path)
    with keeper(tmp_path / "keeper") as k:
        assert run("--home", alice, "keeper", "add", k.url, "--group", "Family").returncode == 0
        with serving(alice, port):  # Bob learns the setting once, from Alice
            assert run("--home", bob, "sync", f"127.0.0.1:{port}").returncode == 0
        assert k.url in run("--home", bob, "keeper", "ls").stdout
        run("--home", alice, "post", "from the keeper, with love", "--group", "Family")
        with serving(alice, port):  # pushes, then stops; Bob is not online meanwhile
            until_pushed(alice)
        bob_port = free_port()
        with serving(bob, bob_port):
            deadline = time.monotonic() + 30
            while "from the keeper, with love" not in run("--home", bob, "feed").stdout:
                assert time.monotonic() < deadline, "Bob never got the post"
                time.sleep(0.3)
            status = json.loads(run("--home", bob, "status", "--json").stdout)
            (family,) = status["groups"]
            assert family["keepers"][0]["url"] == k.url
            assert "keeper " + k.url in run("--home", bob, "status").stdout
            assert "connected" in run("--home", bob, "keeper", "ls").stdout


def until_pushed(home: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        shown = run("--home", home, "keeper", "ls").stdout
        if "connected" in shown and "to push" not in shown:
            return
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)
