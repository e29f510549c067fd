"""A profile holds secret keys: like ``~/.ssh`` it is its owner's only (issue 17, item 17).
Real profiles made by the command line, a running ``serve`` (so SQLite's ``-wal`` and ``-shm``
exist), a vault chunk on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import free_port, serving


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_profile_is_private_from_the_start(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    run("--home", str(home), "init", "--name", "Alice")
    run("--home", str(home), "group", "create", "Family")
    (tmp_path / "clip.bin").write_bytes(os.urandom(5000))
    added = run("--home", str(home), "vault", "add", str(tmp_path / "clip.bin"), "--quiet")
    assert added.returncode == 0, added.stderr
    with serving(str(home), free_port()):
        files = [p for p in home.rglob("*") if p.is_file()]
        names = {p.name for p in files}
        assert {"profile.db", "profile.db-wal", "profile.db-shm", "profile.lock"} <= names
        assert any(p.parent.parent.name == "chunks" for p in files)
        for path in files:
            assert mode(path) == 0o600, path
        for path in [home, *(p for p in home.rglob("*") if p.is_dir())]:
            assert mode(path) == 0o700, path


def test_a_readable_profile_is_made_private_with_a_warning(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    run("--home", str(home), "init", "--name", "Alice")
    home.chmod(0o755)
    (home / "profile.db").chmod(0o644)
    done = run("--home", str(home), "whoami")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("microsync: warning:") and "private" in line, line
    assert "profile.db" in line
    assert mode(home) == 0o700 and mode(home / "profile.db") == 0o600
    again = run("--home", str(home), "whoami")
    assert again.returncode == 0 and again.stderr == ""
