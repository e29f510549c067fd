"""Every script in examples/ runs to completion in a subprocess (they assert what they show)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


APP_KINDS = (
    "cocoon_family.py",
    "basement_friends.py",
    "life360_circle.py",
    "dex_crm.py",
    "monaru_reminders.py",
)


@pytest.mark.parametrize("name", APP_KINDS)
def test_one_example_per_app_kind_in_a_page(name: str) -> None:
    """Issue 18 point 10: each kind of micro-network has its example, under ~150 lines."""
    script = Path(__file__).parent.parent / "examples" / name
    assert script in EXAMPLES
    assert len(script.read_text().splitlines()) < 150
