"""A real keeper in a subprocess (``microsync keeper``) on 127.0.0.1, and file scans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

MICROSYNC = [sys.executable, "-m", "microsync"]
_LISTENING = re.compile(r"keeper listening on (ws://127\.0\.0\.1:\d+)")


@dataclass
class Keeper:
    proc: subprocess.Popen[str]
    url: str
    data: Path

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a power cut."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def peak_memory(self) -> int:
        """The process's peak resident set (VmHWM), in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        (kilobytes,) = re.findall(r"VmHWM:\s+(\d+) kB", status)
        return int(kilobytes) * 1024


def start_keeper(data: Path, *options: str) -> Keeper:
    """``microsync keeper --data DATA --port 0 OPTIONS``, once it listens."""
    proc = subprocess.Popen(
        [*MICROSYNC, "keeper", "--data", str(data), "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = _LISTENING.search(line)
    if found is None:
        proc.kill()
        proc.wait()
        raise AssertionError(line + (proc.stderr.read() if proc.stderr else ""))
    return Keeper(proc, found[1], data)


@contextmanager
def keeper(data: Path, *options: str) -> Iterator[Keeper]:
    """A keeper for the block; SIGTERM (then SIGKILL) at the end."""
    running = start_keeper(data, *options)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                running.proc.wait(10)
        running.kill()


def everything_under(directory: Path) -> bytes:
    """The bytes of every file under ``directory`` (database, WAL, shared memory...)."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def pieces(secret: bytes, size: int = 16, stride: int = 16) -> list[bytes]:
    """``size``-byte slices of ``secret`` every ``stride`` bytes: a canary is found if any
    slice is (a short secret is one slice)."""
    return [secret[i : i + size] for i in range(0, max(len(secret) - size, 0) + 1, stride)]
