"""Every benchmark in one run, one table of ratios, and the figures section of the docs.

    python -m bench [--quick] [--only catch_up,feed_ingest] [--docs PATH | --no-docs]

Each module in :data:`BENCHMARKS` exposes ``figures(quick: bool) -> Report`` (``bench.report``)
and keeps its own ``python -m bench.NAME`` command with its full set of options. The default
(full) mode runs each at the sizes its section of ``docs/benchmarks.md`` describes, and takes
about a quarter of an hour on the 2-core machine; ``--quick`` runs small sizes, once, in a few
minutes, to check that everything still runs and to see the ratios roughly.

The table's ratio is time / floor time for the same work measured in the same run (1.00 is
the floor). A full run rewrites the part of ``docs/benchmarks.md`` between the figures markers
(``--docs`` names another file, ``--no-docs`` writes nothing; a quick run writes only to a file
named with ``--docs``). A benchmark that fails is reported, named in the docs, and makes the
exit status 1; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.report import Report, figures_section, table, write_section

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BENCHMARKS = (
    "catch_up",
    "feed_ingest",
    "feed_state",
    "group_ingest",
    "rekey",
    "sync",
    "relay",
    "vault",
    "crdt_trace",
    "cli_startup",
    "keeper",
)
Benchmark = Callable[[bool], Report]


def registry(names: Sequence[str] = BENCHMARKS) -> dict[str, Benchmark]:
    """``name -> figures`` for the named modules of this package."""
    found: dict[str, Benchmark] = {}
    for name in names:
        found[name] = importlib.import_module(f"bench.{name}").figures
    return found


def collect(
    benchmarks: Mapping[str, Benchmark], quick: bool, say: Callable[[str], None] = print
) -> tuple[dict[str, Report], list[str]]:
    """Run each benchmark in turn: the reports of those that finished, and the names of
    those that raised (their traceback goes to stderr)."""
    reports: dict[str, Report] = {}
    failed: list[str] = []
    for name, run in benchmarks.items():
        say(f"== {name}")
        start = time.perf_counter()
        try:
            reports[name] = run(quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            say(f"   {name} FAILED after {time.perf_counter() - start:.0f} s")
            continue
        say(f"   {name}: {time.perf_counter() - start:.0f} s")
    return reports, failed


def main(
    argv: Sequence[str] | None = None, benchmarks: Mapping[str, Benchmark] | None = None
) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, once: a few minutes")
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument(
        "--docs", type=Path, help=f"file to rewrite (default for a full run: {DOCS})"
    )
    parser.add_argument("--no-docs", action="store_true", help="write no file")
    args = parser.parse_args(argv)
    if benchmarks is None:
        names = args.only.split(",") if args.only else list(BENCHMARKS)
        unknown = sorted(set(names) - set(BENCHMARKS))
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
        benchmarks = registry(names)
    mode = "quick" if args.quick else "full"
    started, load = datetime.now(UTC), os.getloadavg()
    reports, failed = collect(benchmarks, args.quick)
    figures = [f for r in reports.values() for f in r.figures]
    print()
    print(table(figures))
    for name, report in reports.items():
        for note in report.notes:
            print(f"  {name}: {note}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    target = None if args.no_docs else (args.docs or (None if args.quick else DOCS))
    if target is not None:
        only = f" --only {args.only}" if args.only else ""
        command = f"python -m bench{' --quick' if args.quick else ''}{only}"
        took = (datetime.now(UTC) - started).total_seconds() / 60
        heading = (
            f"Last written by a {mode} run that started {started:%Y-%m-%d %H:%M} UTC and took "
            f"{took:.0f} min; load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} "
            f"at the end, on {os.cpu_count()} cores (time / floor time, both measured in the "
            "same run; lower is better). Reproduce with:"
        )
        write_section(
            target, figures_section(reports, heading=heading, command=command, failed=failed)
        )
        print(f"\nwrote the figures section of {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
