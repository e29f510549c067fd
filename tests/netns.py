"""Network namespaces for tests, so test traffic can never reach a real interface.

Two kinds, both torn down by their owner in a ``finally`` (or a ``with`` block):

* :class:`LoopbackNamespace`: a namespace holding only ``lo`` (up), made with ``unshare -n``
  (``unshare -Urn`` when not root), kept alive by a ``sleep`` holder process; more processes join
  it with ``nsenter``. No root needed where user namespaces are allowed.
* :class:`Lan`: ``hosts`` namespaces ``PREFIXh1..`` with ``eth0`` = ``10.77.0.i/24``, each joined
  by a veth pair to a bridge inside a switch namespace ``PREFIXsw`` (NETWORK_TESTING.md). Root
  only; :func:`lan_unavailable` says why not.

Every process is started through :class:`Proc`, which reads its stdout lines on a thread and is
stopped by its own pid (SIGTERM, then SIGKILL). Names carry a random per-run prefix.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "REPO",
    "Lan",
    "LoopbackNamespace",
    "Proc",
    "lan_unavailable",
    "loopback_unavailable",
    "python",
    "unique_prefix",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[1]


def unique_prefix() -> str:
    """A short random prefix for namespace names (``ip netns`` names live machine-wide)."""
    return f"ms{secrets.token_hex(3)}"


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=check)


class Proc:
    """A subprocess whose stdout lines are collected on a thread; stopped by pid."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))

    def _pump_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line, or ``None`` after ``timeout`` seconds."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace)
        return self.popen.returncode


def loopback_unavailable() -> str | None:
    """Why :class:`LoopbackNamespace` cannot be used here, or ``None``."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = _run([*_unshare_argv(), "true"], check=False)
    return None if probe.returncode == 0 else f"unshare failed: {probe.stderr.strip()}"


def _unshare_argv() -> list[str]:
    return ["unshare", "-n", "--"] if os.geteuid() == 0 else ["unshare", "-Urn", "--"]


class LoopbackNamespace:
    """A fresh namespace with only ``lo`` up, alive while its holder process lives."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self._holder = Proc(
            [*_unshare_argv(), "sh", "-c", "ip link set lo up && echo ready && exec sleep 600"]
        )
        if self._holder.next_line(10) != "ready":
            self._holder.stop()
            raise RuntimeError(f"namespace did not start: {''.join(self._holder.stderr)}")

    def run(self, argv: Sequence[str]) -> Proc:
        """Start ``argv`` inside the namespace (stopped by :meth:`close`)."""
        join = ["nsenter", "-t", str(self._holder.popen.pid), "-n"]
        if os.geteuid() != 0:
            join += ["-U", "--preserve-credentials"]
        proc = Proc([*join, "--", *argv])
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop every process started here, then the holder (the namespace goes with it)."""
        for proc in [*self.procs, self._holder]:
            proc.stop()

    def __enter__(self) -> LoopbackNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lan_unavailable() -> str | None:
    """Why :class:`Lan` cannot be built here (not root, no ``ip netns``), or ``None``."""
    if os.geteuid() != 0:
        return "a LAN of namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    name = f"{unique_prefix()}probe"
    try:
        made = _run(["ip", "netns", "add", name], check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


class Lan:
    """``hosts`` namespaces on one bridge (in its own switch namespace); 10.77.0.i/24 each."""

    def __init__(self, hosts: int, prefix: str | None = None) -> None:
        self.prefix = prefix or unique_prefix()
        self.switch = f"{self.prefix}sw"
        self.hosts = [f"{self.prefix}h{i}" for i in range(1, hosts + 1)]
        self.addresses = [f"10.77.0.{i}" for i in range(1, hosts + 1)]
        self.procs: list[Proc] = []
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._made.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _build(self) -> None:
        self._netns(self.switch)
        sw = ["ip", "-n", self.switch]
        _run([*sw, "link", "add", "br0", "type", "bridge"])
        _run([*sw, "link", "set", "br0", "up"])
        for i, (host, address) in enumerate(zip(self.hosts, self.addresses, strict=True), 1):
            self._netns(host)
            _run([*sw, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0"])
            _run([*sw, "link", "set", "eth0", "netns", host])
            _run([*sw, "link", "set", f"v{i}", "master", "br0"])
            _run([*sw, "link", "set", f"v{i}", "up"])
            _run(["ip", "-n", host, "addr", "add", f"{address}/24", "dev", "eth0"])
            _run(["ip", "-n", host, "link", "set", "eth0", "up"])

    def run(self, host: int, argv: Sequence[str]) -> Proc:
        """Start ``argv`` on host number ``host`` (1-based; stopped by :meth:`close`)."""
        proc = Proc(["ip", "netns", "exec", self.hosts[host - 1], *argv])
        self.procs.append(proc)
        return proc

    def set_link(self, host: int, up: bool) -> None:
        """Cut (``up=False``) or heal host ``host``'s cable at the switch."""
        _run(["ip", "-n", self.switch, "link", "set", f"v{host}", "up" if up else "down"])

    def close(self) -> None:
        """Stop every process started here, then delete every namespace made here."""
        for proc in self.procs:
            proc.stop()
        for name in reversed(self._made):
            _run(["ip", "netns", "del", name], check=False)
        self._made.clear()

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def python(*args: str) -> list[str]:
    """``argv`` running this interpreter with ``args``."""
    return [sys.executable, *args]


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``check`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()
