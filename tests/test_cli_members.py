"""Members as a new user meets them (issue 17, items 2 and 3): the id `members` shows is the
one `remove`, `promote` and `demote` take; the only admin cannot strand a group without one
(in the library, so apps get it too, and on the command line, with `--force`); `leave`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import microsync
from microsync.errors import NotAMember
from tests.test_cli import run
from tests.test_cli_errors import one_line
from tests.test_cli_network import family_served, two_members


async def test_the_last_admin_cannot_leave_remove_or_demote_herself(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "alice", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "bob", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        await bob.join((await family.invite(addresses=[f"127.0.0.1:{alice.port}"])).link)
        for attempt in (
            family.leave(),
            family.remove(alice.person_id),
            family.demote(alice.person_id),
        ):
            with pytest.raises(NotAMember, match="only admin"):
                await attempt
        assert [(m.name, m.role) for m in family.members()] == [
            ("Alice", "admin"),
            ("Bob", "member"),
        ]
        await family.promote(bob.person_id)
        await family.demote(alice.person_id)  # Bob is still an admin
        assert [(m.name, m.role) for m in family.members()] == [
            ("Bob", "admin"),
            ("Alice", "member"),
        ]


async def test_force_strands_the_group_on_purpose_and_alone_you_may_leave(
    tmp_path: Path,
) -> None:
    async with (
        await microsync.Device.open(tmp_path / "alice", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "bob", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        alone = await alice.create_group("Alone")
        await bob.join((await family.invite(addresses=[f"127.0.0.1:{alice.port}"])).link)
        await family.leave(force=True)
        assert not family.is_member()
        await alone.leave()  # nobody is left to need an admin
        assert not alone.is_member()


def test_members_ids_are_the_ones_remove_takes_and_leave(tmp_path: Path) -> None:
    alice, _bob, _port = two_members(tmp_path)
    shown = run("--home", alice, "members", "--group", "Family").stdout.splitlines()
    ids = {line.split()[1]: line.split()[0] for line in shown}
    assert set(ids) == {"Alice", "Bob"}
    assert "1 device" in shown[0] and "device(s)" not in shown[0]
    who = run("--home", alice, "whoami").stdout
    assert ids["Alice"] in who  # whoami shows the same id form
    for argv in (("leave",), ("remove", ids["Alice"]), ("demote", "alice")):
        one_line(run("--home", alice, *argv), "only admin", "--force")
    one_line(run("--home", alice, "remove", "Carol"), "no member", ids["Bob"])
    assert run("--home", alice, "promote", ids["Bob"][:8]).returncode == 0
    assert run("--home", alice, "demote", ids["Bob"]).returncode == 0
    removed = run("--home", alice, "remove", ids["Bob"][:8])  # the shown id, shortened
    assert removed.returncode == 0, removed.stderr
    assert "Removed Bob" in removed.stdout
    left = run("--home", alice, "leave")  # alone now: nobody needs an admin
    assert left.returncode == 0, left.stderr
    [group] = json.loads(run("--home", alice, "groups", "--json").stdout)
    assert not group["member"] and group["exit"]["how"] == "left"
    assert "(you left Family)" in run("--home", alice, "groups").stdout
    one_line(run("--home", alice, "post", "still here?"), "you left Family", "stays readable")
    assert run("--home", alice, "feed").returncode == 0  # what she had stays readable


def test_a_removed_member_is_told_by_whom(tmp_path: Path) -> None:
    """Issue 17, item 11: "you were removed from Family by Alice", in ``groups`` (and its
    ``--json``) and in the error a write gives, not "(left)" or "not a member"."""
    with family_served(tmp_path) as (alice, bob, port):
        removed = run("--home", alice, "remove", "Bob")
        assert removed.returncode == 0, removed.stderr
        synced = run("--home", bob, "sync", f"127.0.0.1:{port}")
        assert synced.returncode == 0, synced.stderr
    said = "you were removed from Family by Alice"
    assert f"({said})" in run("--home", bob, "groups").stdout
    [group] = json.loads(run("--home", bob, "groups", "--json").stdout)
    assert not group["member"]
    assert (group["exit"]["how"], group["exit"]["by_name"]) == ("removed", "Alice")
    one_line(run("--home", bob, "post", "hello?"), said)
