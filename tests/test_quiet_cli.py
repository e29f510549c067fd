"""Quiet mode and sync on demand on the command line: ``serve --quiet`` (kept in the profile)
and ``sync`` with no address (one round with every known peer, relay and keeper, one line).
Real subprocesses, real profiles, real TCP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import family_served, free_port


def served_line(home: str, *options: str) -> str:
    """The line ``serve OPTIONS`` says it is online with (it stops after half a second)."""
    port = str(free_port())
    done = run(
        "--home",
        home,
        "serve",
        "--port",
        port,
        "--bind",
        "127.0.0.1",
        "--no-lan",
        "--seconds",
        "0.5",
        *options,
    )
    assert done.returncode == 0, done.stderr
    return next(line for line in done.stdout.splitlines() if "online" in line)


def test_serve_quiet_is_kept_until_no_quiet(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    assert run("--home", home, "init", "--name", "Alice").returncode == 0
    assert "quiet" not in served_line(home)
    assert "quiet (no redials" in served_line(home, "--quiet")
    assert "quiet (no redials" in served_line(home)  # kept in the profile
    assert "quiet" not in served_line(home, "--no-quiet")
    assert "quiet" not in served_line(home)


def test_sync_alone_syncs_with_every_known_way_in_one_line(tmp_path: Path) -> None:
    with family_served(tmp_path) as (alice, bob, port):
        assert run("--home", alice, "post", "while Bob was away").returncode == 0
        done = run("--home", bob, "sync", "--timeout", "20")
        assert done.returncode == 0, done.stderr
        [line] = done.stdout.strip().splitlines()
        assert line.startswith("Synced 1 of 1") and f"127.0.0.1:{port}" in line, line
    feed = run("--home", bob, "feed")
    assert "while Bob was away" in feed.stdout
    done = run("--home", bob, "sync", "--timeout", "5")  # Alice is gone now
    assert done.returncode == 1
    assert "Synced 0 of 1" in done.stdout and "nothing is listening there" in done.stdout


def test_sync_alone_with_nothing_known_says_so(tmp_path: Path) -> None:
    home = str(tmp_path / "alone")
    run("--home", home, "init", "--name", "Alone")
    done = run("--home", home, "sync")
    assert done.returncode == 1
    assert done.stdout.strip() == "Nothing to sync with: no known peer, relay or keeper"


def test_status_says_quiet(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    assert json.loads(run("--home", home, "status", "--json").stdout)["quiet"] is False
    assert "Quiet" not in run("--home", home, "status").stdout
    served_line(home, "--quiet")
    assert json.loads(run("--home", home, "status", "--json").stdout)["quiet"] is True
    shown = run("--home", home, "status").stdout
    assert "Offline: run `microsync serve`" in shown and "Quiet (`microsync sync`" in shown
