"""How long a command takes to start, against the interpreter's own start (issue 17, item 15).

    python -m bench.cli_startup [--repeat 9]

Measured in one run, each as a fresh process, median of ``--repeat``:

* ``python -c pass``: the floor;
* ``microsync --help``;
* ``microsync feed`` handed to a running ``serve`` (on 127.0.0.1, no LAN) over its socket;
* ``microsync feed`` on a profile nobody holds (it opens the device itself).

The target: ``--help`` and a forwarded command within 3x of ``python -c pass``.
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

MICROSYNC = (sys.executable, "-m", "microsync")
SERVE = ("--bind", "127.0.0.1", "--port", "0", "--no-lan", "--seconds", "600")


def timed(argv: Sequence[str], repeat: int) -> float:
    """The median wall time of ``argv`` run ``repeat`` times (it must succeed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    repeat = parser.parse_args().repeat
    with tempfile.TemporaryDirectory() as root:
        home = str(Path(root) / "alice")
        subprocess.run([*MICROSYNC, "--home", home, "init", "--name", "A"], check=True)
        subprocess.run([*MICROSYNC, "--home", home, "group", "create", "F"], check=True)
        subprocess.run([*MICROSYNC, "--home", home, "post", "hi"], check=True, capture_output=True)
        floor = timed([sys.executable, "-c", "pass"], repeat)
        rows = [("python -c pass", floor)]
        rows.append(("microsync --help", timed([*MICROSYNC, "--help"], repeat)))
        rows.append(("feed, profile not held", timed([*MICROSYNC, "--home", home, "feed"], repeat)))
        serve = subprocess.Popen(
            [*MICROSYNC, "--home", home, "serve", *SERVE],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert serve.stdout is not None and "online" in serve.stdout.readline()
            rows.append(
                ("feed, handed to serve", timed([*MICROSYNC, "--home", home, "feed"], repeat))
            )
        finally:
            serve.terminate()
            serve.wait(10)
    print(f"{'command':<26} {'median':>8} {'x floor':>8}")
    for name, seconds in rows:
        print(f"{name:<26} {seconds * 1000:>6.0f} ms {seconds / floor:>7.1f}x")


if __name__ == "__main__":
    main()
