"""The feed and what it accepts, as a new user meets them (issue 17, items 12 and 18): replies
nest under their parent, multi-line posts keep their indent, and input with nothing in it (an
empty post, a reaction that is not one emoji, withdrawing a reaction never made, stopping a
location never shared) is refused with one line. Real subprocesses, real profiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_errors import one_line, run_all


def test_replies_nest_and_lines_keep_their_indent(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    h = ("--home", home)
    run(*h, "init", "--name", "Alice")
    run(*h, "group", "create", "Family")
    first = run(*h, "post", "Shopping:\n  milk\n  bread").stdout.split()[0]
    reply = run(*h, "reply", first, "and eggs").stdout.split()[0]
    run(*h, "reply", reply, "free range")
    run(*h, "post", "Landed")
    lines = run(*h, "feed").stdout.splitlines()
    column = lines[1].index("Shopping:")
    texts = [line.split("Alice: ", 1)[1] if "Alice: " in line else line for line in lines]
    assert texts[:2] == ["Landed", "Shopping:"] and texts[4:] == ["and eggs", "free range"]
    for line, kept in ((lines[2], "  milk"), (lines[3], "  bread")):  # under the text's start
        assert line[:column].strip() == "" and line[column:] == kept
    assert "↳" not in lines[1] and lines[4].index("↳") < lines[5].index("↳")  # one deeper
    assert len(json.loads(run(*h, "feed", "--limit", "1", "--json").stdout)) == 1


def test_empty_input_is_refused_with_one_line(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    run("--home", str(home), "init", "--name", "Alice")
    run("--home", str(home), "group", "create", "Family")
    post = run("--home", str(home), "post", "hello").stdout.split()[0]
    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (("post", ""), ("needs some text",)),
        (("post", "   \n "), ("needs some text",)),
        (("reply", post, " "), ("needs some text",)),
        (("react", post, "ok"), ("one emoji",)),
        (("react", post, "🎉🎉"), ("one emoji",)),
        (("react", post, "👍", "--remove"), ("you have not reacted",)),
        (("location", "stop"), ("not sharing",)),
        (("feed", "--limit", "-1"), ("--limit",)),
        (("feed", "--limit", "0"), ("--limit",)),
    ]
    homes = [tmp_path / f"copy{i}" for i in range(len(cases))]
    for copy in homes:
        shutil.copytree(home, copy)
    done = run_all(
        [("--home", str(copy), *argv) for copy, (argv, _) in zip(homes, cases, strict=True)]
    )
    for (_, words), result in zip(cases, done, strict=True):
        one_line(result, *words)
    feed = json.loads(run("--home", str(homes[0]), "feed", "--json").stdout)
    assert [p["text"] for p in feed] == ["hello"]  # nothing was posted
    assert run("--home", str(home), "react", post, "👍🏽").returncode == 0
    assert run("--home", str(home), "react", post, "👍🏽", "--remove").returncode == 0


def test_edit_and_delete_for_everyone(tmp_path: Path) -> None:
    home = str(tmp_path / "alice")
    h = ("--home", home)
    run(*h, "init", "--name", "Alice")
    run(*h, "group", "create", "Family")
    post = run(*h, "post", "Landed in Oxfrod").stdout.split()[0]
    edited = run(*h, "edit", post, "Landed in Oxford")
    assert edited.returncode == 0 and "edited in Family" in edited.stdout, edited.stderr
    [shown] = json.loads(run(*h, "feed", "--json").stdout)
    assert (shown["text"], shown["edited"]) == ("Landed in Oxford", True)
    deleted = run(*h, "delete", post)
    assert deleted.returncode == 0 and "deleted for everyone" in deleted.stdout, deleted.stderr
    assert "Oxford" not in run(*h, "feed").stdout
    one_line(run(*h, "edit", "ffffffff", "x"), "no post starts with 'ffffffff'")
