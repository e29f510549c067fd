"""``microsync status`` with last sync and pending outgoing (issue 17, item 8), offline and
through a running ``serve``, in words and ``--json``; ``microsync sync --relay`` through a real
``microsync relay`` (item 18). Real subprocesses and profiles, TCP on 127.0.0.1 only."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import (
    free_port,
    one_error_line,
    running,
    serve_options,
    serving,
    two_members,
)


def status_json(home: str) -> dict[str, object]:
    done = run("--home", home, "status", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def family(found: dict[str, object]) -> dict[str, object]:
    groups = found["groups"]
    assert isinstance(groups, list) and len(groups) == 1
    group: dict[str, object] = groups[0]
    return group


def test_status_shows_last_sync_and_pending_offline_and_through_serve(tmp_path: Path) -> None:
    alice, bob, port = two_members(tmp_path)
    fresh = run("--home", alice, "group", "create", "Empty")
    assert fresh.returncode == 0
    shown = run("--home", alice, "status").stdout
    assert "Empty: epoch 0, no member connected; never synced" in shown
    with serving(alice, port):
        done = run("--home", bob, "sync", f"127.0.0.1:{port}")
        assert done.returncode == 0, done.stderr
        assert run("--home", bob, "post", "--group", "Family", "waiting here").returncode == 0
        group = family(status_json(bob))  # Bob is offline: from his profile's record
        [peer] = group["peers"]  # type: ignore[misc]
        assert (peer["name"], peer["connected"], peer["pending_outgoing"]) == ("Alice", False, 1)
        assert isinstance(group["last_sync"], int) and group["pending_outgoing"] == 1
        words = run("--home", bob, "status").stdout
        assert "Family: epoch 0, no member connected; last sync " in words
        assert "with Alice; Alice lacks 1 entry" in words
        served = run("--home", alice, "status")  # handed to serve
        assert "with Bob; nothing pending" in served.stdout, served.stdout + served.stderr
        seen = status_json(alice)
        assert seen["online"] and seen["listening"] == [f"127.0.0.1:{port}"]
        by_alice = [g for g in seen["groups"] if g["name"] == "Family"]  # type: ignore[attr-defined]
        [bob_seen] = by_alice[0]["peers"]
        assert bob_seen["name"] == "Bob" and isinstance(bob_seen["last_sync"], int)
        assert run("--home", bob, "sync", f"127.0.0.1:{port}").returncode == 0
        assert family(status_json(bob))["pending_outgoing"] == 0


def test_sync_through_a_relay(tmp_path: Path) -> None:
    alice, bob, port = two_members(tmp_path)
    relay_port = free_port()
    url = f"ws://127.0.0.1:{relay_port}"
    relay_args = ("relay", "--host", "127.0.0.1", "--port", str(relay_port))
    nobody = run("--home", bob, "sync", "--relay", url, "--timeout", "5")
    one_error_line(nobody, "cannot reach the relay", url)
    with running(*relay_args, ready="relay listening"):
        alone = run("--home", bob, "sync", "--relay", url, "--timeout", "1")
        one_error_line(alone, "no member of your groups was at", "serve --relay")
        serve = ("--home", alice, "serve", *serve_options(port), "--relay", url)
        with running(*serve, ready="online"):
            assert run("--home", alice, "post", "through the relay").returncode == 0
            status = status_json(alice)
            assert status["relay"] == url
            done = run("--home", bob, "sync", "--relay", url, "--timeout", "30")
            assert done.returncode == 0, done.stderr
            assert f"Synced with Alice through {url} (Family): 1 entry in" in done.stdout
            assert "through the relay" in run("--home", bob, "feed").stdout
            assert status_json(alice)["relay_connected"] is True
    [peer] = family(status_json(bob))["peers"]  # type: ignore[misc]
    assert peer["name"] == "Alice" and peer["pending_outgoing"] == 0


def test_sync_takes_an_address_or_a_relay(tmp_path: Path) -> None:
    alice = str(tmp_path / "alice")
    run("--home", alice, "init", "--name", "Alice")
    alone = run("--home", alice, "sync")  # neither: one sync_now round (tests/test_quiet_cli.py)
    assert alone.returncode == 1 and "Nothing to sync with" in alone.stdout
    both = run("--home", alice, "sync", "127.0.0.1:1", "--relay", "ws://127.0.0.1:1")
    one_error_line(both, "one of the two")
    bad = run("--home", alice, "sync", "--relay", "127.0.0.1:7426")
    assert bad.returncode == 2 and "ws://HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr
