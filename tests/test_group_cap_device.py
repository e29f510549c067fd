"""The member cap on real devices over TCP on 127.0.0.1 (``create_group(max_members=...)``):
shown on the group and in ``microsync members``, an invite to a full group refused with
:class:`GroupFull`, and a guest redeeming an invite into a group that filled meanwhile told
so with the same typed error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import microsync
from microsync.errors import GroupFull
from tests.test_cli import run


async def test_a_full_group_refuses_invites_and_the_late_guest_sees_why(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "ana", name="Ana") as ana,
        await microsync.Device.open(tmp_path / "ben", name="Ben") as ben,
        await microsync.Device.open(tmp_path / "cai", name="Cai") as cai,
    ):
        await ana.start(lan=False, port=0, bind="127.0.0.1")
        at = [f"127.0.0.1:{ana.port}"]
        pair = await ana.create_group("Pair", max_members=2)
        assert pair.max_members == 2
        first, second = await pair.invite(addresses=at), await pair.invite(addresses=at)
        joined = await ben.join(first.link)
        assert joined.max_members == 2  # the joiner holds the cap from the CREATE
        with pytest.raises(GroupFull, match="cap of 2"):
            await pair.invite(addresses=at)
        with pytest.raises(GroupFull, match="the group is full"):
            await cai.join(second.link)  # issued while there was room
        assert [m.name for m in pair.members()] == ["Ana", "Ben"]
        assert not cai.groups()


async def test_create_group_refuses_a_cap_out_of_range(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "ana", name="Ana") as ana:
        for cap in (0, -3, 4001):
            with pytest.raises(ValueError, match="max_members"):
                await ana.create_group("Bad", max_members=cap)
        assert ana.groups() == []
        roomy = await ana.create_group("Roomy")
        assert roomy.max_members is None


def test_the_command_line_sets_and_shows_the_cap(tmp_path: Path) -> None:
    home = str(tmp_path / "ana")
    run("init", "--name", "Ana", "--home", home)
    made = run("group", "create", "Family", "--max-members", "12", "--home", home)
    assert made.returncode == 0, made.stderr
    assert run("group", "create", "Open", "--home", home).returncode == 0
    shown = run("members", "Family", "--home", home)
    assert shown.returncode == 0 and "1 member (cap 12)" in shown.stdout, shown.stderr
    assert "cap" not in run("members", "Open", "--home", home).stdout
    listed = json.loads(run("groups", "--json", "--home", home).stdout)
    assert {g["name"]: g["max_members"] for g in listed} == {"Family": 12, "Open": None}
    [member] = json.loads(run("members", "Family", "--json", "--home", home).stdout)
    assert member["name"] == "Ana"  # the JSON list is unchanged
