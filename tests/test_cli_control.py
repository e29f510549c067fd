"""Commands forwarded to a running ``serve`` (microsync.cli.control): every request is
answered, also when the command fails in a way the command line does not turn into a line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from microsync.cli.control import forward, serve_commands


def parse(argv: Sequence[str]) -> argparse.Namespace:
    return argparse.Namespace(command=argv[0], words=list(argv[1:]))


async def ask(home: Path, run: Any, argv: list[str]) -> int | None:
    """Forward ``argv`` to a serve socket on ``home`` whose commands are ``run``."""
    device = SimpleNamespace(path=home)  # serve_commands uses only the profile's path
    server = await serve_commands(device, parse, run)  # type: ignore[arg-type]
    try:
        return await asyncio.wait_for(asyncio.to_thread(forward, home, argv), 30)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_command_that_succeeds_answers_its_output_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run(args: argparse.Namespace, out: Any, err: Any) -> int:
        out.print(f"ran {args.command} {' '.join(args.words)}")
        return 3

    assert await ask(tmp_path, run, ["feed", "--all"]) == 3
    assert capsys.readouterr().out == "ran feed --all\n"


@pytest.mark.parametrize(
    "error", [ConnectionResetError("peer reset"), RuntimeError("a bug"), KeyError("k")]
)
async def test_a_command_that_raises_still_answers_with_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    async def run(args: argparse.Namespace, out: Any, err: Any) -> int:
        out.print("partial output")
        raise error

    assert await ask(tmp_path, run, ["sync"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "partial output\n"
    lines = captured.err.splitlines()
    assert lines == [f"microsync: error: unexpected {type(error).__name__}: {error}"]
    assert "serve stopped" not in captured.err


async def test_serve_keeps_answering_after_a_command_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run(args: argparse.Namespace, out: Any, err: Any) -> int:
        if args.command == "bad":
            raise ConnectionError("inside the command")
        return 0

    device = SimpleNamespace(path=tmp_path)
    server = await serve_commands(device, parse, run)  # type: ignore[arg-type]
    try:
        for argv, code in ((["bad"], 1), (["good"], 0), (["bad"], 1)):
            got = await asyncio.wait_for(asyncio.to_thread(forward, tmp_path, argv), 30)
            assert got == code
    finally:
        server.close()
        await server.wait_closed()
    assert capsys.readouterr().err.count("microsync: error: unexpected ConnectionError") == 2
