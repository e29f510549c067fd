"""Every error a new user met (issue 17, items 5 and 7), as they met it: real subprocesses,
real profiles, real TCP on 127.0.0.1. Each is one line on stderr naming the real reason, no
traceback, a non-zero exit; and a command handed to a running ``serve`` answers with its own
error, not "in use"."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import MICROSYNC, free_port, serving


def run_all(commands: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands at once (each is a whole process start), and wait for all."""
    procs = [
        subprocess.Popen(
            [*MICROSYNC, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv in commands
    ]
    done = []
    for argv, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(list(argv), proc.returncode, out, err))
    return done


def one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit non-zero with one ``microsync: error:`` line containing ``words``, no traceback."""
    said = f"{done.args}: {done.stderr!r}"
    assert done.returncode != 0, said
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microsync: error:"), said
    assert "Traceback" not in done.stderr and "Task exception" not in done.stderr, said
    for word in words:
        assert word in lines[0], said


def test_every_error_path_is_one_line(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    assert run("--home", home, "init", "--name", "Alice").returncode == 0
    assert run("--home", home, "group", "create", "Family").returncode == 0
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = str(taken.getsockname()[1])
    nobody = f"127.0.0.1:{free_port()}"
    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (("vault", "get", "zzzz", "DEST"), ("zzzz", "vault ls")),
        (("vault", "rm", "zzzz"), ("zzzz",)),
        (("serve", "--port", "99999"), ("--port", "99999", "65535")),
        (("serve", "--port", "-1"), ("--port", "-1")),
        (("relay", "--port", "99999"), ("--port", "65535")),
        (("serve", "--relay", "notaurl"), ("--relay", "ws://HOST:PORT")),
        (("serve", "--peer", "nonsense"), ("--peer", "HOST:PORT", "port is missing")),
        (("vault", "add", "/x/nothere.jpg"), ("/x/nothere.jpg", "does not exist")),
        (("invite", "--relay", "127.0.0.1:17450"), ("ws://HOST:PORT",)),
        (("join", "12-abc", "--at", "localhost"), ("HOST:PORT", "port is missing")),
        (("join", "12-abc"), ("--at HOST:PORT",)),
        (("join", "microsync:join?v=1&s=nonsense"), ("invite",)),
        (("sync", nobody), ("reach", nobody, "nothing is listening")),
        (("join", "810-have-floor", "--at", nobody), ("serve running", "nothing is listening")),
        (("serve", "--bind", "127.0.0.1", "--port", busy, "--no-lan"), (busy, "in use", "--port")),
        (("relay", "--host", "127.0.0.1", "--port", busy), (busy, "in use", "--port")),
        (("serve", "--bind", "999.1.1.1", "--no-lan"), ("999.1.1.1", "not an address")),
        (("feed", "--limit", "-1"), ("--limit",)),
        (("members", "Nope"), ("Nope",)),
    ]
    homes = [str(tmp_path / f"copy{i}") for i in range(len(cases))]
    for copy in homes:  # one profile each: they run at once, and a profile has one writer
        shutil.copytree(home, copy)
    try:
        results = run_all(
            [("--home", copy, *argv) for copy, (argv, _) in zip(homes, cases, strict=True)]
        )
    finally:
        taken.close()
    for (_, words), done in zip(cases, results, strict=True):
        one_line(done, *words)


def test_a_command_failing_inside_serve_says_why(tmp_path: Path) -> None:
    """Forwarded to a running ``serve``, a failing command's own one-line error and status come
    back to the caller's terminal (it used to say the profile is "in use")."""
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    run("--home", home, "group", "create", "Family")
    with serving(home, free_port()) as server:
        missing, bad_limit, nothere = run_all(
            [
                ("--home", home, "vault", "rm", "zzzz"),
                ("--home", home, "feed", "--limit", "-1"),
                ("--home", home, "vault", "add", "nothere.jpg"),
            ]
        )
        warned = run("--home", home, "recovery-words")
    one_line(missing, "zzzz")
    one_line(bad_limit, "--limit")
    one_line(nothere, str(Path.cwd() / "nothere.jpg"))
    for done in (missing, bad_limit, nothere):
        assert "in use" not in done.stderr
    one_line(warned, "shown once")  # forwarded too: the words are shown only by init
    assert "shown once" not in (server.stdout.read() if server.stdout else "")


def test_forwarded_commands_resolve_paths_where_the_user_is(tmp_path: Path) -> None:
    """``vault add local.bin`` and ``vault get ID rel.bin`` typed in another directory, while
    ``serve`` (started elsewhere) holds the profile: both paths are the user's."""
    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    run("--home", home, "group", "create", "Family")
    here = tmp_path / "elsewhere"
    here.mkdir()
    data = os.urandom(300_000)
    (here / "local.bin").write_bytes(data)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MICROSYNC, "--home", home, *argv],
            capture_output=True,
            text=True,
            cwd=here,
            timeout=60,
        )

    with serving(home, free_port()):
        added = cli("vault", "add", "local.bin", "--quiet")
        assert added.returncode == 0, added.stderr
        blob = added.stdout.split()[0]
        got = cli("vault", "get", blob, "rel.bin", "--quiet")
        assert got.returncode == 0, got.stderr
        assert (here / "rel.bin").read_bytes() == data
        (here / "out").mkdir()
        assert cli("vault", "get", blob, "out", "--quiet").returncode == 0
        assert (here / "out" / "local.bin").read_bytes() == data
    assert not (Path.cwd() / "rel.bin").exists()


def test_a_burned_code_says_so_and_the_inviter_hears_of_the_wrong_guess(tmp_path: Path) -> None:
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    port = free_port()
    run("--home", alice, "init", "--name", "Alice")
    run("--home", bob, "init", "--name", "Bob")
    run("--home", alice, "group", "create", "Family")
    shown = run("--home", alice, "invite", "--at", f"127.0.0.1:{port}", "--no-qr")
    assert "give or take 120 s" in shown.stdout  # the clock tolerance is no secret
    code = next(line.split()[1] for line in shown.stdout.splitlines() if line.startswith("code:"))
    number, *words = code.split("-")
    wrong = "-".join([number, *words[:-1], "abandon" if words[-1] != "abandon" else "ability"])
    at = ("--at", f"127.0.0.1:{port}")
    with serving(alice, port) as server:
        one_line(run("--home", bob, "join", wrong, *at), "wrong code", "burned")
        again = run("--home", bob, "join", code, *at)
    one_line(again, "one wrong guess burns it", "new invite")
    log = server.stdout.read() if server.stdout else ""
    assert "'Bob' tried to redeem an invite and failed" in log


def test_a_forwarded_command_streams_its_output_and_progress(tmp_path: Path) -> None:
    """Handed to ``serve``, ``vault add`` reports progress as it goes (a bar on the caller's
    terminal) and its result line."""
    import pty

    home = str(tmp_path / "alice")
    run("--home", home, "init", "--name", "Alice")
    run("--home", home, "group", "create", "Family")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8_000_000))
    with serving(home, free_port()):
        request = {"argv": ["vault", "add", str(big)], "cwd": str(tmp_path)}
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "alice" / "serve.sock"))
            client.sendall(json.dumps(request).encode() + b"\n")
            messages = [json.loads(line) for line in client.makefile("rb")]
        progress = [m["progress"] for m in messages if "progress" in m]
        assert progress and progress[-1] == ["encrypting big.bin", 8_000_000, 8_000_000]
        assert messages[-1] == {"done": 0}
        assert "added to Family" in "".join(m.get("out", "") for m in messages)
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(
                [*MICROSYNC, "--home", home, "vault", "add", str(big), "--name", "again.bin"],
                stdout=subprocess.PIPE,
                stderr=follower,
                text=True,
            )
            out, _ = proc.communicate(timeout=60)
            os.close(follower)
            drawn = b""
            with contextlib.suppress(OSError):
                while chunk := os.read(leader, 65536):
                    drawn += chunk
        finally:
            os.close(leader)
    assert proc.returncode == 0 and "again.bin" in out
    assert b"encrypting big.bin" in drawn and b"100%" in drawn
