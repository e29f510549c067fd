"""How long a command takes to start, against the interpreter's own start (issue 17, item 15).

    python -m bench.cli_startup [--repeat 9]

Measured in one run, each as a fresh process, median of ``--repeat``:

* ``python -c pass``: the floor;
* ``microsync --help``;
* ``microsync feed`` handed to a running ``serve`` (on 127.0.0.1, no LAN) over its socket;
* ``microsync feed`` on a profile nobody holds (it opens the device itself).

The target: ``--help`` and a forwarded command within 3x of ``python -c pass``.

Every command runs as an installed copy runs: with its bytecode cached (pip compiles it at
install). ``PYTHONDONTWRITEBYTECODE``, which some machines set (this one does), is dropped
from the commands' environment and each runs once, untimed, before it is timed; with it, a
process that opens the device compiled the whole package from source first (0.6-0.7 s here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.report import Figure, Report

MICROSYNC = (sys.executable, "-m", "microsync")
SERVE = ("--bind", "127.0.0.1", "--port", "0", "--no-lan", "--seconds", "600")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""The commands' environment: an installed copy's, bytecode cached (module doc)."""


def timed(argv: Sequence[str], repeat: int) -> float:
    """The median wall time of ``argv`` run ``repeat`` times (it must succeed)."""
    subprocess.run(argv, check=True, capture_output=True, env=ENV)  # writes its bytecode
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=ENV)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(repeat: int) -> list[tuple[str, float]]:
    """(command, median seconds) rows; the first is ``python -c pass``, the floor."""
    with tempfile.TemporaryDirectory() as root:
        home = str(Path(root) / "alice")
        for setup in (("init", "--name", "A"), ("group", "create", "F"), ("post", "hi")):
            subprocess.run(
                [*MICROSYNC, "--home", home, *setup], check=True, capture_output=True, env=ENV
            )
        floor = timed([sys.executable, "-c", "pass"], repeat)
        rows = [("python -c pass", floor)]
        rows.append(("microsync --help", timed([*MICROSYNC, "--help"], repeat)))
        rows.append(("feed, profile not held", timed([*MICROSYNC, "--home", home, "feed"], repeat)))
        serve = subprocess.Popen(
            [*MICROSYNC, "--home", home, "serve", *SERVE],
            stdout=subprocess.PIPE,
            text=True,
            env={**ENV, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert serve.stdout is not None and "online" in serve.stdout.readline()
            rows.append(
                ("feed, handed to serve", timed([*MICROSYNC, "--home", home, "feed"], repeat))
            )
        finally:
            serve.terminate()
            serve.wait(10)
    return rows


LABELS = {
    "microsync --help": "`microsync --help`",
    "feed, profile not held": "`microsync feed`, profile not held (opens the device)",
    "feed, handed to serve": "`microsync feed`, handed to a running `serve`",
}


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: median of 3 (quick) or 15 (full) starts of each command."""
    rows = measure(3 if quick else 15)
    floor = rows[0][1]
    targets = {"microsync --help": "<= 3.00", "feed, handed to serve": "<= 3.00"}
    return Report(
        figures=[
            Figure(
                bench="cli_startup",
                measure=LABELS[name],
                value=f"{seconds * 1000:.0f} ms",
                floor=f"{floor * 1000:.0f} ms (python -c pass)",
                ratio=seconds / floor,
                target=targets.get(name, ""),
            )
            for name, seconds in rows[1:]
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    rows = measure(parser.parse_args().repeat)
    floor = rows[0][1]
    print(f"{'command':<26} {'median':>8} {'x floor':>8}")
    for name, seconds in rows:
        print(f"{name:<26} {seconds * 1000:>6.0f} ms {seconds / floor:>7.1f}x")


if __name__ == "__main__":
    main()
