"""The command line as a user runs it: a real subprocess, real profile directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import microsync


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "microsync", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"microsync {microsync.__version__}"


def test_init_then_whoami(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    created = run("--home", home, "init", "--name", "Alice")
    assert created.returncode == 0, created.stderr
    assert "Alice" in created.stdout
    who = run("--home", home, "whoami", "--json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)
    assert info["name"] == "Alice"
    assert len(bytes.fromhex(info["person_id"])) == 32
    assert len(bytes.fromhex(info["device_id"])) == 32
    assert info["person_id"] in created.stdout and info["device_id"] in created.stdout


def test_init_twice_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    before = json.loads(run("--home", home, "whoami", "--json").stdout)
    again = run("--home", home, "init", "--name", "Eve")
    assert again.returncode == 1
    assert "already holds a profile" in again.stderr
    assert json.loads(run("--home", home, "whoami", "--json").stdout) == before


def test_whoami_without_profile_says_how_to_make_one(tmp_path: Path) -> None:
    done = run("--home", str(tmp_path / "none"), "whoami")
    assert done.returncode == 1
    assert "no profile" in done.stderr and "init --name" in done.stderr
    assert "Traceback" not in done.stderr


def init_words(stdout: str) -> str:
    """The 24 words ``init`` prints once, on its ``words:`` line."""
    return next(
        line[len("words: ") :] for line in stdout.splitlines() if line.startswith("words: ")
    )


def test_restore_from_recovery_words(tmp_path: Path) -> None:
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    created = run("--home", old, "init", "--name", "Alice")
    words = init_words(created.stdout)
    assert len(words.split()) == 24 and "shown only now" in created.stderr
    later = run("--home", old, "recovery-words")  # no device keeps them: one clear line
    assert later.returncode == 1 and "shown once" in later.stderr and not later.stdout
    assert len(later.stderr.strip().splitlines()) == 1 and "Traceback" not in later.stderr
    restored = run("--home", new, "init", "--name", "Alice 2", "--restore", stdin=words + "\n")
    assert restored.returncode == 0, restored.stderr
    a = json.loads(run("--home", old, "whoami", "--json").stdout)
    b = json.loads(run("--home", new, "whoami", "--json").stdout)
    assert a["person_id"] == b["person_id"] and a["device_id"] != b["device_id"]


def test_bad_recovery_words_are_one_clear_line(tmp_path: Path) -> None:
    done = run(
        "--home", str(tmp_path / "x"), "init", "--name", "A", "--restore", stdin="not words\n"
    )
    assert done.returncode == 1
    assert "recovery phrase" in done.stderr
    assert "Traceback" not in done.stderr


def test_group_create_list_members_rotate(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    created = run("--home", home, "group", "create", "Family", "--history", "none")
    assert created.returncode == 0, created.stderr
    [group] = json.loads(run("--home", home, "groups", "--json").stdout)
    assert (group["name"], group["members"], group["epoch"], group["history"]) == (
        "Family",
        1,
        0,
        "none",
    )
    assert group["id"] in created.stdout
    [member] = json.loads(run("--home", home, "members", "Family", "--json").stdout)
    assert (member["name"], member["role"], len(member["devices"])) == ("Alice", "admin", 1)
    rotated = run("--home", home, "rotate", group["id"][:8])
    assert rotated.returncode == 0, rotated.stderr
    [group] = json.loads(run("--home", home, "groups", "--json").stdout)
    assert group["epoch"] == 1


def test_unknown_group_is_a_clear_error(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    missing = run("--home", home, "members", "Nope")
    assert missing.returncode == 1
    assert "no group matches 'Nope'" in missing.stderr
