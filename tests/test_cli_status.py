"""``microsync status`` (issue 17, item 8, in part): offline or where it listens, its relay, and
per group who is connected and whether in sync. Real subprocesses, TCP on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import MICROSYNC, free_port, invite_json, serve_options, serving


def test_status_offline_and_through_serve(tmp_path: Path) -> None:
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    a_port, b_port = free_port(), free_port()
    run("--home", alice, "init", "--name", "Alice")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", alice, "group", "create", "Family")
    offline = run("--home", alice, "status")
    assert offline.returncode == 0 and "Offline: run `microsync serve`" in offline.stdout
    assert "Family: epoch 0, no member connected" in offline.stdout
    invite = invite_json(alice, a_port)
    with serving(alice, a_port):
        assert run("--home", bob, "join", invite["link"]).returncode == 0
        keep = ("--peer", f"127.0.0.1:{a_port}")
        peer = subprocess.Popen(
            [*MICROSYNC, "--home", bob, "serve", *serve_options(b_port), *keep],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                found = json.loads(run("--home", alice, "status", "--json").stdout)
                peers = found["groups"][0]["peers"]
                if any(p["synced"] for p in peers) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            shown = run("--home", alice, "status").stdout
        finally:
            peer.send_signal(signal.SIGTERM)
            peer.wait(10)
    assert found["online"] and found["listening"] == [f"127.0.0.1:{a_port}"]
    assert [(p["name"], p["synced"]) for p in peers] == [("Bob", True)]
    assert f"Online: listening on 127.0.0.1:{a_port}" in shown
    assert "Family: epoch 0, connected to Bob (in sync)" in shown
