"""``microsync --help`` and a command handed to a running ``serve`` start fast (issue 17, item
15): the command line's grammar loads without the device stack, asyncio or rich (they load
once a command runs). ``python -m bench.cli_startup`` measures the times."""

from __future__ import annotations

import json
import subprocess
import sys

from microsync.cli import args, network
from microsync.net.limits import ServeLimits
from microsync.node import DEFAULT_PORT

HEAVY = ("asyncio", "rich", "segno", "microsync.node", "microsync.net", "microsync.group")


def test_the_grammar_loads_without_the_device_stack() -> None:
    probe = (
        "import sys, json, microsync.cli.main as m; m.build_parser(); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_the_light_copies_of_defaults_match_the_library() -> None:
    assert args.DEFAULT_PORT == DEFAULT_PORT
    assert ServeLimits().max_connections == network.MAX_CONNECTIONS
    assert ServeLimits().max_per_address == network.MAX_PER_ADDRESS
