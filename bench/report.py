"""What every benchmark hands back, one table of ratios, and the figures section of the docs.

Each ``bench.X`` module exposes ``figures(quick: bool) -> Report``: its measured rows, each
against the floor measured in the same run, plus free-form notes (a profile summary, a
parameter). ``python -m bench`` collects them, prints :func:`table`, and rewrites the part of
``docs/benchmarks.md`` between :data:`BEGIN` and :data:`END` with :func:`figures_section`;
everything outside the markers (the prose) is kept byte for byte.

One convention for every row: ``ratio`` is **time / floor time** for the same work (1.00 is
the floor; 1.40 means 40% slower than it; below 1 is faster, as when the floor is another
library), so one column reads the same way for every benchmark. A benchmark that reports a
rate converts: ``ratio = floor rate / rate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["BEGIN", "END", "Figure", "Report", "figures_section", "replace_section", "table"]

BEGIN: Final = "<!-- figures:begin (written by `python -m bench`; edit the prose outside) -->"
END: Final = "<!-- figures:end -->"


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One measured path against its floor, both measured in the same run.

    ``value`` and ``floor`` are already formatted (``"4,769 entries/s"``, ``"1.96 s"``); the
    ``ratio`` is time / floor time; ``target`` is in the same unit (``"<= 1.40"``) or empty."""

    bench: str
    measure: str
    value: str
    floor: str
    ratio: float | None
    target: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What one benchmark module measured: its rows and the notes to print under the table."""

    figures: list[Figure]
    notes: list[str] = field(default_factory=list)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    return [(f.bench, f.measure, f.value, f.floor, _ratio(f.ratio), f.target) for f in figures]


HEAD: Final = ("benchmark", "path", "measured", "floor (same run)", "time / floor", "target")


def table(figures: Sequence[Figure]) -> str:
    """A plain-text table (for the terminal), columns padded to their widest cell."""
    rows = [HEAD, *_rows(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    right = {2, 3, 4}
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(figures: Sequence[Figure]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(HEAD) + " |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in _rows(figures):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def figures_section(
    reports: dict[str, Report], *, heading: str, command: str, failed: Sequence[str] = ()
) -> str:
    """The generated part of the docs: when and how, the table, then each benchmark's notes."""
    figures = [f for r in reports.values() for f in r.figures]
    parts = [heading, "", f"    {command}", "", markdown_table(figures)]
    if failed:
        parts += ["", "Did not finish in this run: " + ", ".join(failed) + "."]
    for name, report in reports.items():
        if report.notes:
            parts += ["", f"`{name}`:", ""]
            parts += [f"* {note}" for note in report.notes]
    return "\n".join(parts)


def replace_section(text: str, section: str) -> str:
    """``text`` with what lies between the markers replaced by ``section``. Without markers,
    the section (with its markers) goes before the first second-level heading, or at the end."""
    block = f"{BEGIN}\n{section}\n{END}"
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(END) :]
    if start != -1 or end != -1:
        raise ValueError("the figures markers are broken: fix them by hand first")
    at = text.find("\n## ")
    if at == -1:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[: at + 1] + block + "\n\n" + text[at + 1 :]


def write_section(path: Path, section: str) -> None:
    """Rewrite ``path`` in place with ``section`` between the markers."""
    path.write_text(replace_section(path.read_text(encoding="utf-8"), section), encoding="utf-8")
