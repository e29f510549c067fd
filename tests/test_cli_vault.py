"""``microsync vault``: add, ls, get (local), policy and rm through the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from microsync.cli.main import main


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> str:
    assert main(["--home", str(home), *args]) == 0
    return capsys.readouterr().out


def test_vault_add_ls_get_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "alice"
    run(capsys, home, "init", "--name", "Alice")
    run(capsys, home, "group", "create", "Family")
    source = tmp_path / "photo.jpg"
    data = os.urandom(3 * 1024 * 1024 + 5)
    source.write_bytes(data)
    added = run(capsys, home, "vault", "add", str(source), "--quiet")
    blob = added.split()[0]
    assert "photo.jpg" in added and "added to Family" in added
    listed = run(capsys, home, "vault", "ls", "--json")
    [row] = json.loads(listed)
    assert row["id"].startswith(blob) and row["size"] == len(data) and row["here"]
    assert row["mime"] == "image/jpeg"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    got = run(capsys, home, "vault", "get", blob, str(out_dir), "--quiet")
    assert "verified" in got and (out_dir / "photo.jpg").read_bytes() == data
    assert "on_demand" in run(capsys, home, "vault", "policy", "on_demand")
    assert "removed for everyone" in run(capsys, home, "vault", "rm", blob)
    assert "0 files" in run(capsys, home, "vault", "ls")
