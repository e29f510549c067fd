"""What a new member's catch-up (``bench/catch_up.py``'s, over real loopback TCP) reads back
from its own store: its vault does not fold the history again when the admin stretches
resolve late (the joiner's add is the last entry the host sends), since it folded no vault
entry; a 20,000-post catch-up once parsed every entry a second time there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.catch_up import build_host, catch_up, hosted, invite
from microsync.node.vault_state import VaultFold


def test_a_catch_up_does_not_fold_the_vault_again_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restarts: list[VaultFold] = []
    restart = VaultFold._restart_if_admins_moved

    def counted(fold: VaultFold) -> object:
        shown = restart(fold)
        if shown is not None or (fold._loaded and fold._seen == {}):
            restarts.append(fold)  # it starts again: every feed read from its first entry
        return shown

    host = asyncio.run(build_host(tmp_path / "host", 600, seed=3))
    monkeypatch.setattr(VaultFold, "_restart_if_admins_moved", counted)
    with hosted(host.path) as process:
        elapsed = asyncio.run(catch_up(invite(process), tmp_path / "newcomer", host))
    assert elapsed > 0
    assert restarts == []
