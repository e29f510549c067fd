"""What ``serve`` logs, in words (issue 17, item 10): who was removed (by name, though they
are gone from ``members``), which emoji, the vault by file name, groups created while serve
runs, and no post text unless ``--show-text``. Real subprocesses, TCP on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import free_port, invite_json, serving


def test_the_serve_log_says_what_happened_in_words(tmp_path: Path) -> None:
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    port = free_port()
    run("--home", alice, "init", "--name", "Alice")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", alice, "group", "create", "Family")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8" + bytes(2000))
    invite = invite_json(alice, port)
    with serving(alice, port) as server:
        assert run("--home", bob, "join", invite["link"]).returncode == 0
        post = run("--home", alice, "post", "a private thought").stdout.split()[0]
        assert run("--home", bob, "sync", f"127.0.0.1:{port}", "--quiet").returncode == 0
        assert run("--home", bob, "react", post, "🎉").returncode == 0
        assert run("--home", bob, "reply", post, "bob's secret reply").returncode == 0
        assert run("--home", bob, "sync", f"127.0.0.1:{port}", "--quiet").returncode == 0
        added = run("--home", alice, "vault", "add", str(tmp_path / "photo.jpg"), "--quiet")
        assert added.returncode == 0, added.stderr
        assert run("--home", alice, "group", "create", "Work").returncode == 0
        time.sleep(1.2)  # serve looks for new groups twice a second
        assert run("--home", alice, "post", "in Work", "--group", "Work").returncode == 0
        [bob_id] = [
            m["person_id"]
            for m in json.loads(
                run("--home", alice, "members", "--group", "Family", "--json").stdout
            )
            if m["name"] == "Bob"
        ]
        assert run("--home", alice, "remove", bob_id[:8], "--group", "Family").returncode == 0
        time.sleep(0.5)
    log = server.stdout.read() if server.stdout else ""
    for expected in (
        "[Family] Bob joined",
        "[Family] Bob reacted 🎉",
        "[Family] Bob replied",
        "[Family] Alice added photo.jpg to the vault",
        "[Work] Alice posted",
        "[Family] Bob is no longer a member",
    ):
        assert expected in log, (expected, log)
    assert "private thought" not in log and "secret reply" not in log
    assert "vault_added" not in log
