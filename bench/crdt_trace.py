"""The automerge-perf editing trace through microsync's text CRDT, pycrdt (Yjs) and a plain list.

    python -m bench.crdt_trace [--repeat 3] [--trace tests/data/editing-trace.json.gz]

Each engine runs in its own subprocess, which imports the engine's library, loads the trace,
replays it and reports its time and resident memory: RSS is the honest figure for pycrdt, which
allocates in Rust. ``peak`` is the subprocess's peak RSS (``ru_maxrss``, which includes the
interpreter, the library and the parsed trace); ``growth`` is the resident memory the replay
added (current RSS after minus before, from ``/proc/self/statm``): the engine's own state,
shown for the local replays only (a remote replica reuses memory its process freed after making
the operations, so its growth says little); ``import`` is what importing the library cost.

* **microsync local**: ``doc.text(key).insert/delete`` per edit; each call makes a real CRDT
  operation (id, origin or id ranges), which this run drops.
* **microsync local+encode**: the same, plus ``encode_op`` of every operation, as a device that
  publishes its edits would.
* **microsync remote**: the operations of a local replay (made before the clock starts, kept in
  memory) applied to a fresh replica with ``Document.apply``.
* **pycrdt local**: one transaction per edit (``with doc.transaction(): ...``).
* **pycrdt remote**: the update of each of those transactions applied to a fresh ``Doc``.
* **list**: a Python list of characters (the floor: no CRDT at all).

``--before CHECKOUT`` compares only the remote apply of another checkout (a ``git worktree`` of
an older commit) with this one's and pycrdt's, alternating subprocesses round by round.

Every engine's final text is compared with the expected text. Times are the median of
``--repeat`` runs; the machine swings between runs, so read the ratios.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Figure, Report

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "tests" / "data" / "editing-trace.json.gz"
FINAL = ROOT / "tests" / "data" / "editing-trace.final.txt.gz"
Edits = list[list[Any]]


def _open(path: Path) -> Any:
    return gzip.open(path) if path.suffix == ".gz" else path.open("rb")


def microsync_local(edits: Edits) -> Callable[[], str]:
    from microsync.state import Document

    doc = Document(b"\x01" * 32)
    text = doc.text("paper")
    for pos, deleted, inserted in edits:
        if deleted:
            text.delete(pos, deleted)
        if inserted:
            text.insert(pos, inserted)
    return lambda: text.value


def microsync_encode(edits: Edits) -> Callable[[], str]:
    from microsync.state import Document, encode_op

    doc = Document(b"\x01" * 32)
    text = doc.text("paper")
    size = 0
    for pos, deleted, inserted in edits:
        if deleted:
            size += len(encode_op(text.delete(pos, deleted)))
        if inserted:
            size += len(encode_op(text.insert(pos, inserted)))
    return lambda: text.value


def microsync_remote_setup(edits: Edits) -> Callable[[], Callable[[], str]]:
    from microsync.state import Document, Op

    doc = Document(b"\x01" * 32)
    text = doc.text("paper")
    ops: list[Op] = []
    for pos, deleted, inserted in edits:
        if deleted:
            ops.append(text.delete(pos, deleted))
        if inserted:
            ops.append(text.insert(pos, inserted))
    del doc, text

    def run() -> Callable[[], str]:
        remote = Document(b"\x02" * 32)
        for op in ops:
            remote.apply(op)
        return lambda: remote.text("paper").value

    return run


def pycrdt_local(edits: Edits) -> Callable[[], str]:
    from pycrdt import Doc, Text

    doc: Doc[Any] = Doc()
    text = doc.get("paper", type=Text)
    for pos, deleted, inserted in edits:
        with doc.transaction():
            if deleted:
                del text[pos : pos + deleted]
            if inserted:
                text.insert(pos, inserted)
    return lambda: str(text)


def pycrdt_remote_setup(edits: Edits) -> Callable[[], Callable[[], str]]:
    from pycrdt import Doc, Text

    doc: Doc[Any] = Doc()
    text = doc.get("paper", type=Text)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for pos, deleted, inserted in edits:
        with doc.transaction():
            if deleted:
                del text[pos : pos + deleted]
            if inserted:
                text.insert(pos, inserted)
    doc.unobserve(subscription)
    del doc, text

    def run() -> Callable[[], str]:
        remote: Doc[Any] = Doc()
        remote_text = remote.get("paper", type=Text)
        for update in updates:
            remote.apply_update(update)
        return lambda: str(remote_text)

    return run


def plain_list(edits: Edits) -> Callable[[], str]:
    chars: list[str] = []
    for pos, deleted, inserted in edits:
        if deleted:
            del chars[pos : pos + deleted]
        if inserted:
            chars[pos:pos] = inserted
    return lambda: "".join(chars)


ENGINES: dict[str, Callable[[Edits], Callable[[], str]]] = {
    "microsync local": microsync_local,
    "microsync local+encode": microsync_encode,
    "pycrdt local": pycrdt_local,
    "list": plain_list,
}
SETUPS: dict[str, Callable[[Edits], Callable[[], Callable[[], str]]]] = {
    "microsync remote": microsync_remote_setup,
    "pycrdt remote": pycrdt_remote_setup,
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # not Linux: fall back to the peak
        return _peak_mib()


def run_one(engine: str, trace: Path) -> dict[str, Any]:
    """Run ``engine`` once in this process; return its time, memory and whether it was right."""
    at_start = _current_mib()
    if engine != "list":
        importlib.import_module("pycrdt" if engine.startswith("pycrdt") else "microsync.state")
    imported = _current_mib() - at_start
    with _open(trace) as f:
        edits = json.load(f)
    with gzip.open(FINAL) as f:
        expected = f.read().decode()
    gc.collect()
    before = _current_mib()
    if engine in SETUPS:  # the remote replica's memory does not count the operations it reads
        run = SETUPS[engine](edits)
        gc.collect()
        before = _current_mib()
        start = time.perf_counter()
        result = run()
    else:
        start = time.perf_counter()
        result = ENGINES[engine](edits)
    elapsed = time.perf_counter() - start
    growth = _current_mib() - before
    ok = result() == expected
    return {"time": elapsed, "peak": _peak_mib(), "growth": growth, "import": imported, "ok": ok}


def in_subprocess(engine: str, trace: Path, root: Path = ROOT) -> dict[str, Any]:
    """Run ``engine`` in a fresh interpreter, with the microsync of checkout ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-m", "bench.crdt_trace", "--engine", engine, "--trace", str(trace)],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


NAMES = (
    "microsync local",
    "microsync local+encode",
    "pycrdt local",
    "list",
    "microsync remote",
    "pycrdt remote",
)


def measure(
    repeat: int, trace: Path = TRACE, names: tuple[str, ...] = NAMES
) -> dict[str, list[dict[str, Any]]]:
    """Each engine of ``names`` ``repeat`` times, each run in a fresh subprocess."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            results[name].append(in_subprocess(name, trace))
    return results


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: every engine, median of 3 (full); quick mode runs each engine
    but the slowest (pycrdt's local replay) once, so it compares remote apply only."""
    quick_names = tuple(n for n in NAMES if n not in ("pycrdt local", "microsync local+encode"))
    results = measure(1, names=quick_names) if quick else measure(3)
    wrong = [name for name, rs in results.items() if not all(r["ok"] for r in rs)]
    if wrong:
        raise AssertionError(f"wrong final text from {', '.join(wrong)}")
    medians = {n: statistics.median(r["time"] for r in rs) for n, rs in results.items()}

    def row(name: str, reference: str, target: str) -> Figure:
        return Figure(
            bench="crdt_trace",
            measure=f"automerge trace, {name}",
            value=f"{medians[name]:.2f} s",
            floor=f"{medians[reference]:.2f} s ({reference})",
            ratio=medians[name] / medians[reference],
            target=target,
        )

    rows = [] if quick else [row("microsync local", "pycrdt local", "<= 1.00")]
    rows += [
        row("microsync remote", "pycrdt remote", "<= 1.00"),
        row("microsync local", "list", ""),
    ]
    # growth, not peak: a child's ru_maxrss starts from its parent's when the parent is large
    local = [n for n in results if "remote" not in n]
    growth = {n: max(r["growth"] for r in results[n]) for n in local}
    return Report(
        figures=rows,
        notes=[
            "resident growth of the replay: "
            + ", ".join(f"{n} {g:.1f} MiB" for n, g in growth.items())
        ],
    )


def compare_remote(before: Path, repeat: int, trace: Path) -> None:
    """Remote apply of the checkout ``before`` against this one and pycrdt, alternating
    subprocesses round by round, so that the machine's swings hit all three alike."""
    times: dict[str, list[float]] = {"before": [], "after": [], "pycrdt": []}
    for _ in range(repeat):
        for name, root, engine in (
            ("before", before, "microsync remote"),
            ("after", ROOT, "microsync remote"),
            ("pycrdt", ROOT, "pycrdt remote"),
        ):
            result = in_subprocess(engine, trace, root)
            if not result["ok"]:
                raise AssertionError(f"wrong final text from {name}")
            times[name].append(result["time"])
    floor = statistics.median(times["pycrdt"])
    print(f"crdt_trace remote apply, {repeat} rounds; pycrdt remote median {floor:.2f} s")
    for name in ("before", "after"):
        median = statistics.median(times[name])
        pairs = zip(times[name], times["pycrdt"], strict=True)
        rounds = ", ".join(f"{t / p:.2f}" for t, p in pairs)
        print(f"  {name:<7}median {median:.2f} s = {median / floor:.2f}x  (rounds: {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. a git worktree of an older commit): compare its remote "
        "apply with this one's and pycrdt's, --repeat rounds",
    )
    args = parser.parse_args()
    if args.before:
        compare_remote(args.before.resolve(), args.repeat, args.trace)
        return
    if args.engine:
        print(json.dumps(run_one(args.engine, args.trace)))
        return
    results = measure(args.repeat, args.trace)
    print(f"crdt_trace: automerge-perf trace (259,778 edits), median of {args.repeat}, one core")
    head = f"  {'engine':<24}{'time s':>8}{'vs pycrdt':>11}"
    print(f"{head}{'growth MiB':>12}{'peak MiB':>10}{'import MiB':>12}")
    medians = {n: statistics.median(r["time"] for r in rs) for n, rs in results.items()}
    for name in NAMES:
        rs = results[name]
        reference = "pycrdt remote" if name.endswith("remote") else "pycrdt local"
        ratio = medians[name] / medians[reference]
        growth = f"{max(r['growth'] for r in rs):.1f}" if "remote" not in name else "-"
        peak = max(r["peak"] for r in rs)
        imported = max(r["import"] for r in rs)
        ok = "" if all(r["ok"] for r in rs) else "  WRONG RESULT"
        row = f"  {name:<24}{medians[name]:>8.2f}{ratio:>10.2f}x"
        print(f"{row}{growth:>12}{peak:>10.1f}{imported:>12.1f}{ok}")


if __name__ == "__main__":
    main()
