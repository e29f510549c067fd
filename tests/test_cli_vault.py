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


async def test_vault_get_from_a_peer_over_tcp(tmp_path: Path) -> None:
    """Alice (the API, listening on 127.0.0.1) adds a file; Bob (the command line, a child
    process) joins, lists it as remote and gets it from her."""
    import asyncio
    import sys

    import microsync

    async def cli(*args: str) -> str:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "microsync",
            "--home",
            str(tmp_path / "bob"),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 0, err.decode()
        return out.decode()

    async with await microsync.Device.open(tmp_path / "alice", name="Alice") as alice:
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        data = os.urandom(2 * 1024 * 1024 + 3)
        ref = await family.vault.add(data, name="clip.mp4")
        invite = await family.invite(ttl=600)
        await cli("init", "--name", "Bob")
        await cli("join", invite.link)
        [row] = json.loads(await cli("vault", "ls", "--json"))
        assert row["id"] == ref.id.hex() and not row["here"]
        dest = tmp_path / "clip.mp4"
        got = await cli(
            "vault",
            "get",
            ref.id.hex()[:8],
            str(dest),
            "--from",
            f"127.0.0.1:{alice.port}",
            "--quiet",
        )
        assert "verified" in got and dest.read_bytes() == data
