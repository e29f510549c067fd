"""What a keeper learns from groups that use it, what a deletion leaves there, and what a
hostile member's pushes do to the others (nothing): real devices, a real keeper on 127.0.0.1
(in this process where every byte it receives and sends is tapped)."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.group.mailbox import Mailbox
from microsync.net.keeper import KeeperServer
from microsync.net.keeper_client import KeeperClient, Record
from microsync.testing import replica_of, store_of
from tests.keeper_helpers import everything_under, pieces
from tests.test_app_group import family_of
from tests.test_keeper_group import kept_family, online, pushed_all, texts, until


async def test_the_keeper_sees_no_group_id_key_name_or_text_and_deletes_purge_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tapped: list[bytes] = []
    data = tmp_path / "keeper"
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            KeeperServer(data, tap=lambda flow, raw: tapped.append(raw))
        )
        url = f"ws://127.0.0.1:{server.port}"
        family = await kept_family(stack, tmp_path / "f", url, "alice", "bob")
        friends = await kept_family(stack, tmp_path / "g", url, "carol", "dave")
        alice, bob = family
        carol, dave = friends
        await online(alice)
        await online(carol)
        kept = await alice.post("the canary sings in Oxford tonight")
        await carol.post("a second canary calls from Seattle")
        doomed = await alice.post("delete me, doomed canary")
        await until(lambda: pushed_all(alice) and pushed_all(carol))
        doomed_payload = held_payload(server, alice, doomed.id)
        assert doomed_payload is not None and doomed_payload in everything_under(data)
        await alice.delete(doomed.id)
        await until(lambda: (held_payload(server, alice, doomed.id) or b"") != doomed_payload)
        await until(lambda: pushed_all(alice))
        await alice.device.stop()
        await carol.device.stop()
        await online(bob)
        await until(lambda: "the canary sings in Oxford tonight" in texts(bob))
        assert "delete me, doomed canary" not in texts(bob)
        await bob.device.stop()

        secrets: dict[str, bytes] = {}
        for g in (alice, bob, carol, dave):
            replica = replica_of(g)
            secrets[f"group {g.name}"] = bytes(g.id)
            secrets[f"device {g.device.name}"] = bytes(g.device.id)
            secrets[f"person {g.device.name}"] = bytes(g.device.person_id)
            secrets[f"name {g.device.name}"] = g.device.name.encode() + b"\x00"
            for key in replica.epoch_keys().values():
                secrets[f"control {g.name} {key.number}"] = key.control.secret_bytes()
                secrets[f"commitment {key.number}"] = key.commitment
        for text in ("the canary sings in Oxford", "a second canary calls", "doomed canary"):
            secrets[text] = text.encode()
        secrets["doomed entry"] = bytes(doomed.id)
        secrets["kept entry"] = bytes(kept.id)
        wire = store_of(alice.device).entry_at(alice.id, alice.device.id, 1)
        assert wire is not None
        secrets["an entry's wire"] = wire.entry.wire
        assert server.store is not None
    on_disk = everything_under(data)
    assert doomed_payload not in on_disk  # purged: only its wire was pushed again
    everything = b"".join(tapped) + on_disk
    for name, secret in secrets.items():
        for piece in pieces(secret):
            assert piece not in everything, name
            assert piece.hex() not in caplog.text, name


def held_payload(server: KeeperServer, group: microsync.Group, name: bytes) -> bytes | None:
    """The sealed payload the keeper holds under record ``name`` in ``group``'s current
    mailbox, if any."""
    key = replica_of(group).current_epoch_key()
    assert key is not None and server.store is not None
    mailbox = Mailbox.derive(key.control.secret_bytes())
    item = mailbox.item_id(name)
    refs = [r for r in server.store.page(mailbox.id, limit=10_000) if r.item == item]
    if not refs:
        return None
    return server.store.payloads(mailbox.id, [refs[0].cursor]).get(refs[0].cursor)


async def test_a_members_garbage_and_another_groups_items_are_skipped_by_every_puller(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(KeeperServer(tmp_path / "keeper"))
        url = f"ws://127.0.0.1:{server.port}"
        alice, bob = await kept_family(stack, tmp_path / "f", url, "alice", "bob")
        carol, _ = await family_of(stack, tmp_path / "g", "carol", "dave")
        await carol.post("from another group")
        await online(alice)
        await alice.post("genuine")
        await until(lambda: pushed_all(alice))
        await alice.device.stop()

        # Bob, a member, fills the mailbox with junk: garbage, wrong shapes, a forged entry,
        # and another group's real entries (sealed for this mailbox: it holds the key)
        key = replica_of(bob).current_epoch_key()
        assert key is not None
        mailbox = Mailbox.derive(key.control.secret_bytes())
        other = store_of(carol.device)
        foreign = [
            Record(name=s.entry.id, data=microsync.encoding.encode([s.entry.wire, s.body]))
            for d in other.feeds(carol.id)
            for s in other.entries(carol.id, d)
        ]
        junk = [
            Record(name=b"garbage", data=b"\xff" * 300),
            Record(name=b"shape", data=microsync.encoding.encode([1, 2, 3])),
            Record(name=b"forged", data=microsync.encoding.encode([b"\x00" * 200, b"body"])),
            *foreign,
        ]
        async with await KeeperClient.connect(url) as client:
            await client.push(mailbox, junk)
        before = store_of(bob.device).dump()

        await online(bob)
        await until(lambda: "genuine" in texts(bob))
        await until(lambda: bob.keeper_status()[0].skipped >= 1)
        await bob.post("still fine")
        await until(lambda: pushed_all(bob))
        await bob.device.stop()
        assert "from another group" not in texts(bob)
        assert bob.device.refused  # counted, by error type
        assert before != store_of(bob.device).dump()  # it did take in Alice's post

        await online(alice)
        await until(lambda: "still fine" in texts(alice))
        await alice.device.stop()
        assert {p.text for p in alice.feed()} == {"genuine", "still fine"}
