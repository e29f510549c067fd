"""Choosing a group, and the smaller things a new user tripped on (issue 17, items 14 and 18):
``--group`` takes a case-insensitive unique prefix of the name or id and lists the candidates
otherwise, the same on every command; ``--home`` after the command; a QR code for light
terminals, checked module for module; ``sync`` with no group in common fails; counts read
as English. Real subprocesses, real profiles, TCP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import segno

from microsync.cli.social import qr_text
from tests.test_cli import run
from tests.test_cli_errors import one_line
from tests.test_cli_network import free_port, serving


def test_group_by_prefix_any_case_and_home_after_the_command(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("init", "--name", "Alice", "--home", home)
    for name in ("Garden", "Games", "Work"):  # no name starts like a hex id
        assert run("group", "create", name, "--home", home).returncode == 0
    groups = {
        g["name"]: g["id"] for g in json.loads(run("groups", "--json", "--home", home).stdout)
    }
    posted = run("post", "hi", "--group", "wo", "--home", home)
    assert posted.returncode == 0 and "posted to Work" in posted.stdout, posted.stderr
    assert "posted to Garden" in run("--home", home, "post", "x", "--group", "GARDEN").stdout
    shown = run("members", "--group", groups["Games"][:6], "--home", home)
    assert shown.returncode == 0 and "Alice  admin  1 device" in shown.stdout, shown.stderr
    assert run("rotate", "--group", "games", "--home", home).returncode == 0
    ambiguous = run("feed", "--group", "ga", "--home", home)
    one_line(ambiguous, "several groups", "Garden", "Games")
    assert "Work" not in ambiguous.stderr
    one_line(run("feed", "--home", home), "--group", "Garden", "Games", "Work")
    one_line(run("vault", "ls", "--group", "nope", "--home", home), "no group", "Work")
    assert "1 member" in run("groups", "--home", home).stdout.splitlines()[0]
    assert "1 members" not in run("groups", "--home", home).stdout


def test_the_light_terminal_qr_code_is_the_link_module_for_module(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    run("--home", home, "group", "create", "Family")
    shown = run("--home", home, "invite", "--at", "127.0.0.1:7425", "--qr-light")
    assert shown.returncode == 0, shown.stderr
    link = next(line[6:] for line in shown.stdout.splitlines() if line.startswith("link: "))
    drawn = shown.stdout.split("link: ")[0].splitlines()[1:]
    matrix = [list(map(bool, row)) for row in segno.make(link, error="m").matrix]
    assert drawn == qr_text(link, light=True).splitlines()
    top = {"█": True, "▀": True, "▄": False, " ": False}
    bottom = {"█": True, "▀": False, "▄": True, " ": False}
    modules = []
    for line in drawn:
        modules.append([top[c] for c in line])
        modules.append([bottom[c] for c in line])
    inner = [row[2 : 2 + len(matrix)] for row in modules[2 : 2 + len(matrix)]]
    assert inner == matrix  # ink is a dark module: right on a light background
    assert not any(modules[0]) and not any(modules[1])  # a quiet zone around it


def test_sync_with_no_group_in_common_fails(tmp_path: Path) -> None:
    bob, carol = str(tmp_path / "bob"), str(tmp_path / "carol")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", carol, "init", "--name", "Carol")
    run("--home", bob, "group", "create", "Bobs")
    port = free_port()
    with serving(carol, port):
        done = run("--home", bob, "sync", f"127.0.0.1:{port}", "--quiet")
    one_line(done, "no group in common")


def test_no_stray_blank_line_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    run("--home", home, "group", "create", "Family")
    (tmp_path / "note.txt").write_text("hello")
    added = run("--home", home, "vault", "add", str(tmp_path / "note.txt"))  # no --quiet
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[0].endswith("added to Family")
    nobody = run("--home", home, "sync", f"127.0.0.1:{free_port()}")
    assert nobody.stdout == "" and nobody.stderr.startswith("microsync: error:")
