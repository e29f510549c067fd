"""The public entry point: Device.open / restore, and the single-writer rule."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mnemonic import Mnemonic

import microsync
from microsync import Device


async def test_open_creates_then_loads_the_same_identity(tmp_path: Path) -> None:
    async with await Device.open(tmp_path / "alice", name="Alice") as alice:
        first = (alice.id, alice.person_id, alice.name)
        assert len(alice.id) == 32 and len(alice.person_id) == 32 and alice.id != alice.person_id
    async with await Device.open(tmp_path / "alice") as again:
        assert (again.id, again.person_id, again.name) == first


async def test_name_is_only_used_on_creation(tmp_path: Path) -> None:
    async with await Device.open(tmp_path / "p", name="Alice"):
        pass
    async with await Device.open(tmp_path / "p", name="Somebody else") as again:
        assert again.name == "Alice"


async def test_open_without_profile_or_name_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(microsync.ProfileNotFound):
        await Device.open(tmp_path / "nobody")
    assert not (tmp_path / "nobody").exists()


async def test_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    async with await Device.open(tmp_path / "p", name="Alice"):
        with pytest.raises(microsync.ProfileInUse):
            await Device.open(tmp_path / "p")
    async with await Device.open(tmp_path / "p"):  # released on exit
        pass


async def test_second_open_in_another_process_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    script = textwrap.dedent(
        f"""
        import asyncio, sys, microsync
        async def main():
            try:
                await microsync.Device.open({str(profile)!r})
            except microsync.ProfileInUse as error:
                print("in use:", error)
                return 3
            return 0
        sys.exit(asyncio.run(main()))
        """
    )
    async with await Device.open(profile, name="Alice"):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3, done.stderr
    assert "in use" in done.stdout


async def test_restore_keeps_the_person_and_makes_a_new_device(tmp_path: Path) -> None:
    async with await Device.open(tmp_path / "old", name="Alice") as old:
        words = old.export_recovery_words()
        person, device = old.person_id, old.id
    assert len(words) == 24
    async with await Device.restore(tmp_path / "new", words, name="Alice's laptop") as new:
        assert new.person_id == person
        assert new.id != device
        assert new.export_recovery_words() == words
    async with await Device.open(tmp_path / "new") as reopened:
        assert reopened.person_id == person and reopened.name == "Alice's laptop"


async def test_restore_refuses_an_existing_profile_and_bad_words(tmp_path: Path) -> None:
    async with await Device.open(tmp_path / "old", name="Alice") as old:
        words = old.export_recovery_words()
    with pytest.raises(microsync.StorageError):
        await Device.restore(tmp_path / "old", words, name="again")
    # a last word that breaks the checksum (a random swap keeps it valid 1 time in 256)
    english = Mnemonic("english")
    wrong = next(
        w
        for w in ([*words[:-1], c] for c in english.wordlist if c != words[-1])
        if not english.check(" ".join(w))
    )
    with pytest.raises(microsync.DecodeError):
        await Device.restore(tmp_path / "bad", wrong, name="x")


async def test_repr_shows_no_secrets(tmp_path: Path) -> None:
    async with await Device.open(tmp_path / "p", name="Alice") as alice:
        text = repr(alice)
        assert "Alice" in text
        assert alice.id.hex() not in text
        for word in alice.export_recovery_words():
            assert f" {word} " not in f" {text} "
