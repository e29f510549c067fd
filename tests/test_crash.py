"""Crash safety: a writer process is killed with SIGKILL at random moments, again and again.

After every kill the profile must reopen, its feed must verify from the first entry to the
head, and every entry whose ``append`` had returned (the child prints it only then) must be
there with the same id.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from microsync.feed import GroupId
from microsync.feed.audit import audit_feed
from microsync.identity import LocalIdentity
from microsync.storage.sqlite import SqliteStore

KILLS = 24
GROUP = GroupId(b"C" * 32)

WRITER = textwrap.dedent(
    """
    import os, sys
    from microsync.crypto import system_rng
    from microsync.feed import GroupId, append
    from microsync.feed.trust import add_certificate
    from microsync.identity import LocalIdentity
    from microsync.storage.sqlite import SqliteStore

    store = SqliteStore.open(sys.argv[1])
    bundle = store.get_meta("identity")
    if bundle is None:
        identity = LocalIdentity.create("crash", system_rng, 0)
        with store.transaction():
            store.put_meta("identity", identity.to_bytes())
            add_certificate(store, identity.certificate)
    else:
        identity = LocalIdentity.from_bytes(bundle)
    group = GroupId(b"C" * 32)
    print("ready", flush=True)
    while True:
        entry = append(store, identity.device_key, group=group, type=1,
                       body=os.urandom(200), epoch=0, hlc=0)
        print(entry.header.seq, entry.id.hex(), flush=True)
    """
)


def _run_and_kill(profile: Path, rng: random.Random) -> list[tuple[int, str]]:
    """Start the writer, let it append for a random while, SIGKILL it, return what it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(profile)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        output = child.stdout.read()
    finally:
        child.kill()
        child.wait(timeout=10)
    reported = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is not a report
            reported.append((int(parts[0]), parts[1]))
    return reported


def test_sigkill_at_random_moments_never_loses_or_corrupts(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    rng = random.Random(20261122)
    promised: dict[int, str] = {}
    for _ in range(KILLS):
        promised.update(_run_and_kill(profile, rng))
        store = SqliteStore.open(profile)
        try:
            bundle = store.get_meta("identity")
            assert bundle is not None
            device = LocalIdentity.from_bytes(bundle).device_id
            length = audit_feed(store, GROUP, device)
            assert length >= max(promised, default=0)
            for seq, entry_id in promised.items():
                stored = store.entry_at(GROUP, device, seq)
                assert stored is not None and stored.entry.id.hex() == entry_id
        finally:
            store.close()
    assert len(promised) > KILLS  # the writer really made progress between kills
