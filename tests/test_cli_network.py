"""The command-line peer as a user runs it: real subprocesses, real profiles, real TCP on
127.0.0.1. ``serve`` runs in the background while another profile joins, posts and syncs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.test_cli import run

MICROSYNC = (sys.executable, "-m", "microsync")


def invite_json(home: str, port: int) -> dict[str, str]:
    done = run("--home", home, "invite", "--at", f"127.0.0.1:{port}", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout)
    return found


def serve_options(port: int) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--no-lan", "--seconds", "60"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running(*args: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    """``microsync ARGS`` in the background until its first line shows ``ready``; SIGTERM."""
    proc = subprocess.Popen(
        [*MICROSYNC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert ready in line, line + (proc.stderr.read() if proc.stderr else "")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serving(home: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """``microsync serve`` in the background on 127.0.0.1:port (no mDNS); stopped by SIGTERM."""
    with running("--home", home, "serve", *serve_options(port), ready="online") as proc:
        yield proc


@contextmanager
def family_served(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """(alice, bob, port): Alice's Family with Bob joined by invite through Alice's ``serve``
    on 127.0.0.1:port, which runs for the block."""
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    port = free_port()
    run("--home", alice, "init", "--name", "Alice")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", alice, "group", "create", "Family")
    invite = invite_json(alice, port)
    with serving(alice, port):
        assert run("--home", bob, "join", invite["link"]).returncode == 0
        yield alice, bob, port


def two_members(tmp_path: Path) -> tuple[str, str, int]:
    """The same, with Alice's ``serve`` stopped again."""
    with family_served(tmp_path) as members:
        return members


def one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microsync: error:"), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_demo_runs_in_well_under_a_minute() -> None:
    start = time.monotonic()
    done = run("demo")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 30
    out = done.stdout
    for expected in (
        "Bob sees:",
        "Landed in Oxford",
        "Welcome back!",
        "❤️×1",
        "Bob sees Alice at 51.75, -1.25 (city)",
        "epoch 0 → 1",
        "members now: Alice, Bob.",
    ):
        assert expected in out, expected
    assert "51.752021" not in out.split("Bob sees Alice")[1]


def test_invite_join_post_feed_sync_over_the_command_line(tmp_path: Path) -> None:
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    port = free_port()
    assert run("--home", alice, "init", "--name", "Alice").returncode == 0
    assert run("--home", bob, "init", "--name", "Bob").returncode == 0
    assert run("--home", alice, "group", "create", "Family").returncode == 0
    shown = run("--home", alice, "invite", "--at", f"127.0.0.1:{port}")
    assert shown.returncode == 0, shown.stderr
    assert "link: microsync:" in shown.stdout and "code: " in shown.stdout
    assert "█" in shown.stdout  # the QR code
    invite = json.loads(
        run("--home", alice, "invite", "--at", f"127.0.0.1:{port}", "--json").stdout
    )
    posted = run("--home", alice, "post", "hello from alice")
    assert posted.returncode == 0, posted.stderr
    assert run("--home", alice, "location", "set", "51.752", "-1.2577", "--city").returncode == 0

    with serving(alice, port) as server:
        joined = run("--home", bob, "join", invite["link"])
        assert joined.returncode == 0, joined.stderr
        assert "Joined Family (Alice, Bob)" in joined.stdout
        feed = json.loads(run("--home", bob, "feed", "--json").stdout)
        assert [p["text"] for p in feed] == ["hello from alice"]
        where = run("--home", bob, "location", "show")
        for _ in range(20):  # an announcement, not an entry: it may come just after the join
            if "Alice: 51.75, -1.25 (city)" in where.stdout:
                break
            run("--home", bob, "sync", f"127.0.0.1:{port}", "--quiet")
            where = run("--home", bob, "location", "show")
        assert "Alice: 51.75, -1.25 (city)" in where.stdout
        post_id = feed[0]["id"][:10]
        assert run("--home", bob, "reply", post_id, "hi Alice").returncode == 0
        assert run("--home", bob, "react", post_id, "🎉").returncode == 0
        synced = run("--home", bob, "sync", f"127.0.0.1:{port}", "--quiet")
        assert synced.returncode == 0, synced.stderr
        assert "Synced with" in synced.stdout and "(Family)" in synced.stdout
        # used invite: one clear line
        again = run("--home", str(tmp_path / "carol"), "init", "--name", "Carol")
        assert again.returncode == 0
        reused = run("--home", str(tmp_path / "carol"), "join", invite["link"])
        one_error_line(reused, "invite")
        time.sleep(0.3)
    log = server.stdout.read() if server.stdout else ""
    assert "connected to Bob" in log
    feed = json.loads(run("--home", alice, "feed", "--json").stdout)
    assert [p["text"] for p in feed] == ["hi Alice", "hello from alice"]
    assert feed[1]["reactions"] == {"🎉": 1}
    unread = run("--home", alice, "feed", "--unread")
    assert "hi Alice" in unread.stdout
    assert "Nothing new." in run("--home", alice, "feed", "--unread").stdout


def test_clear_one_line_errors(tmp_path: Path) -> None:
    bob = str(tmp_path / "bob")
    run("--home", bob, "init", "--name", "Bob")
    one_error_line(run("--home", bob, "sync", f"127.0.0.1:{free_port()}"), "reach")
    one_error_line(run("--home", bob, "join", "microsync:join?v=1&s=nonsense"), "invite")
    one_error_line(run("--home", bob, "post", "to nobody"), "group")
    bad = run("--home", bob, "sync", "nowhere")
    assert (bad.returncode == 2 and "HOST:PORT" in bad.stderr) or "host:port" in bad.stderr
    alice = str(tmp_path / "alice")
    run("--home", alice, "init", "--name", "Alice")
    run("--home", alice, "group", "create", "Family")
    port = free_port()
    invite = json.loads(
        run("--home", alice, "invite", "--at", f"127.0.0.1:{port}", "--json").stdout
    )
    with serving(alice, port):
        assert (
            run("--home", bob, "join", invite["code"], "--at", f"127.0.0.1:{port}").returncode == 0
        )
    [alice_member] = [
        m
        for m in json.loads(run("--home", bob, "members", "--json").stdout)
        if m["name"] == "Alice"
    ]
    one_error_line(run("--home", bob, "remove", "Alice"), "admin")
    assert alice_member["role"] == "admin"


def test_relay_command_serves_until_stopped(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "microsync", "relay", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"ws://127.0.0.1:{port}" in line and "stores nothing" in line
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_commands_reach_a_running_serve(tmp_path: Path) -> None:
    """While `serve` holds a profile, other commands on it run inside that process: a post
    typed in a second terminal reaches a live peer at once."""
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    a_port, b_port = free_port(), free_port()
    run("--home", alice, "init", "--name", "Alice")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", alice, "group", "create", "Family")
    invite = invite_json(alice, a_port)
    with serving(alice, a_port):
        assert run("--home", bob, "join", invite["link"]).returncode == 0
        peer_at = f"127.0.0.1:{a_port}"
        peer = subprocess.Popen(
            [*MICROSYNC, "--home", bob, "serve", *serve_options(b_port), "--peer", peer_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            posted = run("--home", alice, "post", "typed in a second terminal")
            assert posted.returncode == 0, posted.stderr
            assert "posted to Family" in posted.stdout
            deadline = time.monotonic() + 20
            texts: list[str] = []
            while time.monotonic() < deadline:
                shown = run("--home", bob, "feed", "--json")  # runs inside bob's serve
                assert shown.returncode == 0, shown.stderr
                texts = [p["text"] for p in json.loads(shown.stdout)]
                if texts:
                    break
                time.sleep(0.2)
            assert texts == ["typed in a second terminal"]
            refused = run("--home", bob, "init", "--name", "Again")
            one_error_line(refused, "in use")
        finally:
            peer.send_signal(signal.SIGTERM)
            peer.wait(10)
    assert not (tmp_path / "alice" / "serve.sock").exists()
