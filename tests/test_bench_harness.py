"""``python -m bench`` cannot silently break: one real (tiny) benchmark goes through the
collector, the table and the docs regeneration on a temporary copy of ``docs/benchmarks.md``,
and every registered module exposes the ``figures(quick)`` the collector calls."""

from __future__ import annotations

import functools
import importlib
import inspect
import shutil
from pathlib import Path

import pytest

from bench import __main__ as harness
from bench import feed_ingest
from bench.report import BEGIN, END, Figure, Report, replace_section, table

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def outside(text: str) -> tuple[str, str]:
    """The prose before and after the figures markers."""
    return text[: text.index(BEGIN)], text[text.index(END) + len(END) :]


def test_every_benchmark_module_exposes_figures() -> None:
    for name in harness.BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        assert "quick" in inspect.signature(module.figures).parameters, name
        assert callable(module.main), name  # its own `python -m bench.NAME` is kept


def test_a_tiny_run_goes_through_the_table_and_the_docs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "benchmarks.md"
    shutil.copy(DOCS, docs)
    before = docs.read_text()
    tiny = functools.partial(feed_ingest.figures, entries=300, repeat=1)

    def broken(quick: bool) -> Report:
        raise RuntimeError("this benchmark broke")

    status = harness.main(["--quick", "--docs", str(docs)], {"feed_ingest": tiny, "broken": broken})
    assert status == 1  # one benchmark failed: the run says so, the other still reported
    out = capsys.readouterr().out
    assert "FAILED: broken" in out
    assert "ingest 300 entries (validate + store)" in out
    after = docs.read_text()
    assert outside(after) == outside(before)  # the prose is kept byte for byte
    section = after[after.index(BEGIN) : after.index(END)]
    assert "python -m bench --quick" in section and "Did not finish in this run: broken" in section
    row = next(line for line in section.splitlines() if "ingest 300 entries" in line)
    ratio = float(row.split("|")[5])
    assert ratio > 0  # ingest time / floor time, measured
    assert after.count(BEGIN) == 1 and after.count(END) == 1


def test_the_section_is_replaced_not_added_and_placed_before_the_first_section() -> None:
    text = "# Benchmarks\n\nIntro.\n\n## One\n\nProse.\n"
    once = replace_section(text, "first")
    assert once == f"# Benchmarks\n\nIntro.\n\n{BEGIN}\nfirst\n{END}\n\n## One\n\nProse.\n"
    assert replace_section(once, "second") == once.replace("first", "second")
    with pytest.raises(ValueError):
        replace_section(text + BEGIN, "x")


def test_the_table_lines_up_and_keeps_every_cell() -> None:
    rows = [
        Figure(bench="a", measure="m", value="1.00 s", floor="0.50 s", ratio=2.0, target="<= 1"),
        Figure(bench="bb", measure="longer", value="10 ms", floor="5 ms", ratio=None),
    ]
    lines = table(rows).splitlines()
    assert len(lines) == 3 and "2.00" in lines[1] and "<= 1" in lines[1]
    assert lines[1].index("1.00 s") + len("1.00 s") == lines[2].index("10 ms") + len("10 ms")


def test_the_keeper_benchmark_runs_end_to_end_at_tiny_sizes() -> None:
    from bench import keeper

    done = keeper.figures(quick=True, posts=240, groups=2, per_member=3, repeat=1, catch_up=150)
    rows = {f.measure: f for f in done.figures}
    assert len(done.figures) == 6
    catch_up = rows["new device's catch-up of 150 posts from a keeper"]
    pushes = [f for f in done.figures if f.measure.startswith("241 pushes into one keeper")]
    disk = rows["keeper disk, 2 groups x 12 members x 3 items"]
    for figure in [catch_up, *pushes, disk]:
        assert figure.ratio is not None and figure.ratio > 0, figure
    assert {p.floor.split("(")[1] for p in pushes} == {
        "durable SQLite, same batches, 48 per commit)",
        "durable SQLite, a commit per PUSH)",
        "raw loopback WebSocket)",
    }
    assert disk.ratio is not None and disk.ratio >= 1  # the store holds at least the bytes
    assert any("72 items" in note and "24 connections" in note for note in done.notes)
    assert any("keeper catch-up of 150 posts" in note for note in done.notes)
    assert any("peer catch-up of 150 posts" in note for note in done.notes)
