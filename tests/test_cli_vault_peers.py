"""``microsync vault get`` on a device that is not serving (issue 17, item 9): it fetches from
the addresses it last synced the group's members at, with no ``--from``; when none answers, one
line naming what it tried and what to run. Real profiles, a ``serve`` subprocess, 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_errors import one_line
from tests.test_cli_network import family_served


def test_vault_get_fetches_from_the_known_peer_with_no_from(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    data = os.urandom(2 * 1024 * 1024 + 7)
    source.write_bytes(data)
    with family_served(tmp_path) as (alice, bob, port):
        added = run("--home", alice, "vault", "add", str(source), "--quiet")  # through serve
        assert added.returncode == 0, added.stderr
        blob = added.stdout.split()[0]
        synced = run("--home", bob, "sync", f"127.0.0.1:{port}")
        assert synced.returncode == 0, synced.stderr
        [row] = json.loads(run("--home", bob, "vault", "ls", "--json").stdout)
        assert not row["here"]
        dest = tmp_path / "got.mp4"
        got = run("--home", bob, "vault", "get", blob, str(dest), "--quiet")  # no --from
        assert got.returncode == 0, got.stderr
        assert "verified" in got.stdout and dest.read_bytes() == data


def test_vault_get_with_no_known_peer_says_what_to_run(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(os.urandom(300_000))
    with family_served(tmp_path) as (alice, bob, port):
        added = run("--home", alice, "vault", "add", str(source), "--quiet")
        assert added.returncode == 0, added.stderr
        blob = added.stdout.split()[0]
        assert run("--home", bob, "sync", f"127.0.0.1:{port}").returncode == 0
    dead = run("--home", bob, "vault", "get", blob, str(tmp_path / "x"), "--timeout", "2")
    one_line(dead, "no member answered", f"127.0.0.1:{port}", "microsync serve")
    assert not (tmp_path / "x").exists()
