"""The keeper end to end: a real ``microsync keeper`` subprocess on 127.0.0.1, its real SQLite
database, and the async client. Canary scans feed it real encrypted entries from the test kit."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import socket
import subprocess
import time
from collections.abc import Awaitable
from itertools import pairwise
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from microsync import encoding
from microsync.cli.keeper import byte_size
from microsync.group.mailbox import Mailbox
from microsync.net.keeper import KeeperServer
from microsync.net.keeper_client import KeeperClient, Pulled, Record
from microsync.net.relay import Flow
from microsync.protocol.keeper import (
    Challenge,
    KeeperRefused,
    Prove,
    Push,
    Refusal,
    Refused,
    Stored,
    decode,
    encode,
)
from microsync.storage.keeper_store import KeeperStore, MailboxFull, Usage
from microsync.testing import AppOp, Hostile, Kind, SimNetwork, write_app_op
from tests.conftest import make_rng
from tests.keeper_helpers import MICROSYNC, Keeper, everything_under, keeper, pieces, start_keeper


def box(seed: str = "family epoch 1") -> Mailbox:
    return Mailbox.derive(make_rng(seed)(32))


def records(count: int, prefix: str = "r", size: int = 100) -> list[Record]:
    return [Record(name=f"{prefix}{i}".encode(), data=os.urandom(size)) for i in range(count)]


async def pull_all(client: KeeperClient, mailbox: Mailbox, after: int = 0) -> list[Pulled]:
    return [p async for p in client.pull(mailbox, after=after)]


# --- the round trip -------------------------------------------------------------------------


async def test_push_then_pull_both_ways_and_resume(tmp_path: Path) -> None:
    family, sent = box(), records(300)
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            stored: list[int] = []
            cursors = await client.push(family, sent, on_stored=lambda r, c: stored.append(c))
            assert cursors == stored == list(range(1, 301))
            again = await client.push(family, sent[:5])  # a retry duplicates nothing
            assert again == [1, 2, 3, 4, 5]
        async with await KeeperClient.connect(running.url) as client:  # a new connection
            oldest = await pull_all(client, family)
            assert [p.data for p in oldest] == [r.data for r in sent]  # across two pages
            assert [p.item for p in oldest] == [family.item_id(r.name) for r in sent]
            newest = [p async for p in client.pull_newest(family)]
            assert newest == oldest[::-1]
            resumed = await pull_all(client, family, after=oldest[199].cursor)
            assert resumed == oldest[200:]
            below = [p async for p in client.pull_newest(family, before=oldest[10].cursor)]
            assert below == oldest[:10][::-1]


async def test_the_keeper_id_survives_restarts_and_changes_with_the_database(
    tmp_path: Path,
) -> None:
    ids = []
    for data in ("k", "k", "other"):
        with keeper(tmp_path / data) as running:
            async with await KeeperClient.connect(running.url) as client:
                ids.append(client.keeper_id)
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 16


async def test_a_watcher_gets_each_new_item_live(tmp_path: Path) -> None:
    family = box()
    with keeper(tmp_path / "k") as running:
        async with (
            await KeeperClient.connect(running.url) as watcher,
            await KeeperClient.connect(running.url) as writer,
        ):
            await writer.push(family, records(2, "old"))
            live = watcher.watch(family)
            assert [(await anext(live)).cursor for _ in range(2)] == [1, 2]  # what was there
            latencies = []
            for n in range(5):
                pending = asyncio.ensure_future(anext(live))
                await asyncio.sleep(0.05)  # the watcher's PULL is held at the keeper
                assert not pending.done()
                started = asyncio.get_running_loop().time()
                await writer.push(family, [Record(name=b"new %d" % n, data=b"post %d" % n)])
                arrived = await asyncio.wait_for(pending, 5)
                latencies.append(asyncio.get_running_loop().time() - started)
                assert (arrived.cursor, arrived.data) == (3 + n, b"post %d" % n)
            await live.aclose()
            assert max(latencies) < 1.0, latencies
        async with await KeeperClient.connect(running.url) as client:  # nothing was lost
            assert len(await pull_all(client, family)) == 7


async def test_stopping_the_keeper_ends_a_waiting_pull_at_once(tmp_path: Path) -> None:
    family = box()
    server = KeeperServer(tmp_path / "k")
    await server.start()
    client = await KeeperClient.connect(f"ws://127.0.0.1:{server.port}")
    live = client.watch(family)
    pending = asyncio.ensure_future(anext(live))
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(server.stop(), 5)
    with pytest.raises(LOST_CONNECTION):
        await asyncio.wait_for(pending, 5)
    assert asyncio.get_running_loop().time() - started < 3
    await live.aclose()
    await client.close()


async def test_an_abandoned_pull_leaves_the_connection_usable(tmp_path: Path) -> None:
    family = box()
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, records(40))
            pulls = client.pull(family)
            first = await anext(pulls)
            await pulls.aclose()  # stopped after one item: the rest of the page is dropped
            assert first.cursor == 1
            assert len(await pull_all(client, family)) == 40
            assert await client.push(family, records(1, "more")) == [41]


# --- who may read and write -----------------------------------------------------------------


async def test_a_non_member_can_neither_read_nor_write_a_mailbox(tmp_path: Path) -> None:
    family, outsider = box(), box("an outsider's guess")
    claimed = dataclasses.replace(outsider, id=family.id)  # its own key, the family's id
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, records(3))
        async with await KeeperClient.connect(running.url) as client:
            with pytest.raises(KeeperRefused) as refused:
                await client.push(claimed, records(1, "spam"))
            assert refused.value.code is Refusal.BAD_PROOF
            with pytest.raises(KeeperRefused):
                await pull_all(client, claimed)
            assert await pull_all(client, outsider) == []  # its own mailbox: empty
        async with await KeeperClient.connect(running.url) as client:
            assert len(await pull_all(client, family)) == 3  # nothing was added


def mailboxes_of(kit: Hostile) -> list[Mailbox]:
    """Every mailbox a device can compute: one per epoch key it holds."""
    epochs = kit.keys()
    return [Mailbox.derive(key.control.secret_bytes()) for key in epochs]


async def test_a_removed_member_cannot_find_read_or_write_the_next_mailbox(
    tmp_path: Path,
) -> None:
    net = SimNetwork(seed=7)
    alice, bob, carol = (net.add_device(n) for n in ("alice", "bob", "carol"))
    group = net.create_group(alice, "Family")
    for member in (bob, carol):
        alice.replica(group).add(
            member.person_id, member.name, [member.grant()], now=net.clock.advance()
        )
    net.settle(group)
    before = {m.id for m in mailboxes_of(Hostile.of_sim(bob, group))}
    alice.replica(group).remove(bob.person_id, now=net.clock.advance())
    net.settle(group)
    newest = Hostile.of_sim(alice, group).keys()[-1]
    assert newest.commitment == Hostile.of_sim(carol, group).keys()[-1].commitment
    current = Mailbox.derive(newest.control.secret_bytes())
    bobs = mailboxes_of(Hostile.of_sim(bob, group))
    assert {m.id for m in bobs} == before and current.id not in before  # he cannot find it
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(current, records(3, "after bob left"))
        async with await KeeperClient.connect(running.url) as client:
            for old in bobs:  # his best tries: his own keys, under the new mailbox's id
                forged = dataclasses.replace(old, id=current.id)
                with pytest.raises(KeeperRefused):
                    await pull_all(client, forged)
                with pytest.raises(KeeperRefused):
                    await client.push(forged, records(1, "bob's spam"))
        async with await KeeperClient.connect(running.url) as client:
            assert len(await pull_all(client, current)) == 3


async def test_a_replayed_proof_is_refused(tmp_path: Path) -> None:
    family = box()
    with keeper(tmp_path / "k") as running:
        async with connect(running.url, compression=None) as first:
            challenge = decode(bytes(await first.recv()), from_client=False)
            assert isinstance(challenge, Challenge)
            recorded = encode(Prove(request=1, proof=family.prove(challenge.nonce)))
            await first.send(recorded)
            assert not isinstance(decode(bytes(await first.recv()), from_client=False), Refused)
        async with connect(running.url, compression=None) as second:
            fresh = decode(bytes(await second.recv()), from_client=False)
            assert isinstance(fresh, Challenge) and fresh.nonce != challenge.nonce
            await second.send(recorded)  # the eavesdropper's replay on a new connection
            answer = decode(bytes(await second.recv()), from_client=False)
            assert answer == Refused(request=1, code=Refusal.BAD_PROOF)


async def test_an_item_that_does_not_open_is_skipped_and_counted(tmp_path: Path) -> None:
    family, other = box(), box("another epoch")
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, records(2, "good"))
        async with connect(running.url, compression=None) as raw:  # a member gone bad
            challenge = decode(bytes(await raw.recv()), from_client=False)
            assert isinstance(challenge, Challenge)
            await raw.send(encode(Prove(request=1, proof=family.prove(challenge.nonce))))
            await raw.recv()
            junk = other.seal(os.urandom, b"junk", b"not sealed for this mailbox")
            await raw.send(encode(Push(request=2, mailbox=family.id, items=(junk,))))
            assert isinstance(decode(bytes(await raw.recv()), from_client=False), Stored)
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, records(1, "after"))
            pulled = await pull_all(client, family)
            assert [p.cursor for p in pulled] == [1, 2, 4] and client.unreadable == 1


# --- quotas, disk full, retention -----------------------------------------------------------


async def test_a_full_mailbox_is_refused_with_its_reason_and_others_go_on(tmp_path: Path) -> None:
    family, friends = box(), box("friends")
    with keeper(tmp_path / "k", "--quota", "64K") as running:
        async with await KeeperClient.connect(running.url) as client:
            acked: list[Record] = []
            with pytest.raises(KeeperRefused) as refused:
                for start in range(0, 80, 8):  # a batch is all or nothing: 8 at a time
                    batch = records(8, f"b{start}-", 900)
                    await client.push(family, batch, on_stored=lambda r, c: acked.append(r))
            assert refused.value.code is Refusal.MAILBOX_FULL
            assert 0 < len(acked) < 80
            pulled = await pull_all(client, family)
            assert [p.data for p in pulled] == [r.data for r in acked]
            assert await client.push(friends, records(3)) == [1, 2, 3]  # another mailbox
            assert await client.delete(family, [r.name for r in acked[:10]]) == 10
            assert len(await client.push(family, records(5, "after delete", 900))) == 5


async def test_a_full_disk_is_a_typed_refusal_and_keeps_what_was_stored(tmp_path: Path) -> None:
    family = box()
    with keeper(tmp_path / "k", "--max-disk", "2M") as running:
        async with await KeeperClient.connect(running.url) as client:
            acked: list[Record] = []
            with pytest.raises(KeeperRefused) as refused:
                await client.push(
                    family, records(40, size=200_000), on_stored=lambda r, c: acked.append(r)
                )
            assert refused.value.code is Refusal.KEEPER_FULL
            assert acked and [p.data for p in await pull_all(client, family)] == [
                r.data for r in acked
            ]


async def test_what_a_full_keeper_refused_is_pushed_again_later_and_lands_once(
    tmp_path: Path,
) -> None:
    """The client keeps what was refused (it learns exactly which records were stored) and
    retries once the keeper has room: everything lands, nothing twice."""
    family, data = box(), tmp_path / "k"
    sent = records(32, size=200_000)  # 8 PUSH batches of 4 (each 1 MiB), all or nothing
    acked: list[Record] = []
    with keeper(data, "--max-disk", "2M") as running:
        async with await KeeperClient.connect(running.url) as client:
            with pytest.raises(KeeperRefused) as refused:
                await client.push(family, sent, on_stored=lambda r, c: acked.append(r))
            assert refused.value.code is Refusal.KEEPER_FULL
            assert 0 < len(acked) < len(sent)
            kept = [r for r in sent if r not in acked]  # what the client still has to place
            with pytest.raises(KeeperRefused):  # still full: refused again, nothing changes
                await client.push(family, kept, on_stored=lambda r, c: acked.append(r))
            assert [p.data for p in await pull_all(client, family)] == [r.data for r in acked]
    with keeper(data, "--max-disk", "64M") as running:  # later, with room
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, kept)
            await client.push(family, sent)  # and everything again: the stored ones dedupe
            pulled = await pull_all(client, family)
    assert sorted(p.data for p in pulled) == sorted(r.data for r in sent)  # each once


async def test_retention_purges_old_items(tmp_path: Path) -> None:
    family = box()
    sent = records(3, size=3000)
    with keeper(tmp_path / "k", "--retention", str(1.5 / 86400)) as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, sent)
            assert len(await pull_all(client, family)) == 3
            stored = everything_under(running.data)
            assert any(p in stored for p in pieces(family.item_id(sent[0].name)))
            await asyncio.sleep(2.0)
            assert await pull_all(client, family) == []  # never served once expired
            await asyncio.sleep(0.5)  # and the sweep (every retention / 8) purged them
    leftover = everything_under(tmp_path / "k")
    for record in sent:
        assert not any(p in leftover for p in pieces(family.item_id(record.name)))


# --- delete purges --------------------------------------------------------------------------


async def test_delete_purges_every_byte_from_the_data_directory(tmp_path: Path) -> None:
    family = box()
    doomed, kept = records(20, "doomed", 5000), records(20, "kept", 5000)
    replay = make_rng("seal")  # the client's nonces, so the stored bytes are known
    canaries = {r.name: family.seal(replay, r.name, r.data) for r in doomed}
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url, rng=make_rng("seal")) as client:
            await client.push(family, doomed)
            await client.push(family, kept)
            stored = everything_under(running.data)
            for sealed in canaries.values():
                assert all(p in stored for p in pieces(sealed.payload[-64:]))  # the scan works
            assert await client.delete(family, [r.name for r in doomed]) == 20
            assert [p.data for p in await pull_all(client, family)] == [r.data for r in kept]
            after = everything_under(running.data)  # while the keeper still runs
    stopped = everything_under(tmp_path / "k")  # and after it stopped (checkpointed)
    for sealed in canaries.values():
        for piece in [*pieces(sealed.payload, 32, 256), *pieces(sealed.id)]:
            assert piece not in after
            assert piece not in stopped


# --- what the keeper learns -----------------------------------------------------------------


def family_with_posts(
    net: SimNetwork, name: str, texts: list[str]
) -> tuple[Hostile, list[Record], dict[str, bytes]]:
    """A two-member group with ``texts`` posted: its newest epoch's kit, its entries as keeper
    records (``[wire, body]`` named by entry id), and every identifying value."""
    alice, bob = net.add_device(f"{name}-alice"), net.add_device(f"{name}-bob")
    group = net.create_group(alice, f"{name} group")
    alice.replica(group).add(bob.person_id, f"{name} Bob", [bob.grant()], now=net.clock.advance())
    net.settle(group)
    for text in texts:
        write_app_op(net, alice, group, AppOp(Kind.POST, text=text))
    net.settle(group)
    kit = Hostile.of_sim(alice, group)
    found: list[Record] = []
    for device in (alice, bob):
        for stored in alice.store.entries(group, device.device_id):
            wire = [stored.entry.wire, stored.body if stored.body is not None else b""]
            found.append(Record(name=bytes(stored.entry.id), data=encoding.encode(wire)))
    secrets = {"group id": bytes(group)}
    for device in (alice, bob):
        secrets |= {
            f"{device.name} device": bytes(device.device_id),
            f"{device.name} person": bytes(device.person_id),
            f"{device.name} name": device.name.encode(),
        }
    for text in texts:
        secrets[f"post {text[:10]}"] = text.encode()
    for record in found:
        secrets[f"entry {record.name[:4].hex()}"] = record.name
        secrets[f"wire {record.name[:4].hex()}"] = record.data
    epochs = kit.keys()  # a list, oldest first
    for key in epochs:
        secrets[f"control {key.number}"] = key.control.secret_bytes()
        secrets[f"commitment {key.number}"] = key.commitment
    return kit, found, secrets


async def test_the_keeper_sees_no_group_key_name_or_text_and_groups_share_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    net = SimNetwork(seed=16)
    texts = ["Landed in Oxford, the canary is singing", "Seattle says hello back, canary two"]
    kits, wire = {}, []
    secrets: dict[str, bytes] = {}
    tapped: list[tuple[Flow, bytes]] = []
    data = tmp_path / "k"
    async with KeeperServer(data, tap=lambda flow, raw: tapped.append((flow, raw))) as server:
        url = f"ws://127.0.0.1:{server.port}"
        for name in ("family", "friends"):
            kit, found, named = family_with_posts(net, name, texts)
            secrets |= {f"{name} {k}": v for k, v in named.items()}
            mailbox = Mailbox.derive(kit.keys()[-1].control.secret_bytes())
            kits[name] = mailbox
            async with await KeeperClient.connect(url) as client:
                await client.push(mailbox, found)
                back = await pull_all(client, mailbox)
                assert {p.data for p in back} == {r.data for r in found}
                wire.append([p.item for p in back])
        stored_ids = {m: server.store.usage(m.id).items for m in kits.values()}
    assert all(stored_ids.values())
    everything = b"".join(raw for _, raw in tapped) + everything_under(data)
    assert {flow for flow, _ in tapped} == {Flow.RECEIVED, Flow.SENT}
    for name, secret in secrets.items():
        for piece in pieces(secret):
            assert piece not in everything, name
            assert piece.hex() not in caplog.text, name
    family, friends = kits["family"], kits["friends"]
    assert family.id != friends.id and not set(wire[0]) & set(wire[1])


# --- crash safety ---------------------------------------------------------------------------

LOST_CONNECTION = (ConnectionClosed, InvalidHandshake, OSError, TimeoutError)
"""What a client sees of a keeper killed under it (during the opening handshake too)."""


async def cut_off(work: Awaitable[None]) -> bool:
    """Await ``work``; whether a killed keeper cut it off."""
    try:
        await work
    except LOST_CONNECTION:
        return True
    return False


async def until_killed(running: Keeper, delay: float, *work: Awaitable[None]) -> bool:
    """Run ``work`` against ``running``, SIGKILL the keeper ``delay`` seconds in; whether the
    kill cut any of it off (rather than landing after it finished)."""

    async def kill_later() -> None:
        await asyncio.sleep(delay)
        running.kill()

    killer = asyncio.create_task(kill_later())
    try:
        return any(await asyncio.gather(*(cut_off(one) for one in work)))
    finally:
        await killer


async def check_invariants(
    client: KeeperClient, mailbox: Mailbox, attempted: dict[bytes, bytes], acked: set[bytes]
) -> list[Pulled]:
    """Everything acknowledged is there, once, and nothing else is."""
    pulled = await pull_all(client, mailbox)
    items = [p.item for p in pulled]
    assert len(items) == len(set(items)), "an item is duplicated"
    pushed = {mailbox.item_id(name): data for name, data in attempted.items()}
    assert all(pushed[p.item] == p.data for p in pulled)
    lost = {mailbox.item_id(name) for name in acked} - set(items)
    assert not lost, f"{len(lost)} acknowledged items lost"
    return pulled


async def push_trial(
    running: Keeper, mailbox: Mailbox, batch: list[Record], acked: set[bytes]
) -> None:
    async with await KeeperClient.connect(running.url) as client:
        await client.push(mailbox, batch, on_stored=lambda record, _: acked.add(record.name))


async def pull_trial(
    running: Keeper, mailbox: Mailbox, got: list[Pulled], kill_after: int | None = None
) -> None:
    """Pull on from the last cursor ``got`` holds (0 at first), appending what arrives;
    SIGKILL the keeper once ``kill_after`` items have arrived (a random moment mid-stream)."""
    arrived = 0
    async with await KeeperClient.connect(running.url) as client:
        async for pulled in client.pull(mailbox, after=got[-1].cursor if got else 0):
            got.append(pulled)
            arrived += 1
            if arrived == kill_after:
                running.kill()


def resumed_in_order(got: list[Pulled]) -> bool:
    """Every resumed pull went on exactly after the last cursor: nothing repeated."""
    return all(a.cursor < b.cursor for a, b in pairwise(got))


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_acknowledged_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    """24 trials, each a fresh keeper process on the same data, SIGKILLed at a random moment:
    10 during a push (a random time in), 10 during a pull that resumes from its last cursor
    (after a random number of items arrived), 4 during a push and a resumed pull at once (a
    random time in). After each restart everything acknowledged is there once; at the
    end the resumed pulls hold every item exactly once, in cursor order, and pushing again
    what was never acknowledged completes the set without duplicating anything."""
    data, family = tmp_path / "k", box()
    chance = random.Random(os.urandom(8))
    attempted: dict[bytes, bytes] = {}
    acked: set[bytes] = set()
    by_id: dict[bytes, bytes] = {}  # item id -> data of everything pushed
    got: list[Pulled] = []  # one reader's pulls, each resuming after the last cursor it holds
    cut = {"push": 0, "pull": 0, "both": 0}
    with keeper(tmp_path / "calibrate") as running:  # how long one trial's push takes here
        began = time.monotonic()
        await push_trial(running, box(), records(2000, "c", 1000), set())
        push_time = time.monotonic() - began
    for trial, kind in enumerate(["push"] * 10 + ["pull"] * 10 + ["both"] * 4):
        running = start_keeper(data)
        async with await KeeperClient.connect(running.url) as client:
            await check_invariants(client, family, attempted, acked)
        if kind == "pull":
            kill_after = chance.randrange(1, 400)
            killed = await cut_off(pull_trial(running, family, got, kill_after))
            running.kill()  # if the mailbox ran out first
        else:
            batch = records(2000, f"t{trial}-", 1000)
            attempted |= {r.name: r.data for r in batch}
            by_id |= {family.item_id(r.name): r.data for r in batch}
            work = [push_trial(running, family, batch, acked)]
            work += [pull_trial(running, family, got)] if kind == "both" else []
            killed = await until_killed(running, chance.uniform(0.0, 0.9) * push_time, *work)
        cut[kind] += killed
        assert resumed_in_order(got), "a resumed pull repeated or reordered an item"
        assert all(by_id[p.item] == p.data for p in got)
    assert cut["push"] >= 3 and cut["pull"] >= 3, f"too few kills landed mid-transfer: {cut}"
    with keeper(data) as running:
        async with await KeeperClient.connect(running.url) as client:
            got += await pull_all(client, family, after=got[-1].cursor if got else 0)
            assert got == await check_invariants(client, family, attempted, acked)  # none missed
            retry = [Record(name=n, data=d) for n, d in attempted.items() if n not in acked]
            await client.push(family, retry)  # what was never acknowledged, pushed again
            final = await check_invariants(client, family, attempted, set(attempted))
    assert len(final) == len(attempted)  # everything, exactly once


# --- bounded memory -------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_mailbox_far_larger_than_any_buffer_streams_in_bounded_memory(
    tmp_path: Path,
) -> None:
    family, size, count = box(), 1 << 20, 96  # 96 MiB in one mailbox
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            baseline = running.peak_memory()
            for start in range(0, count, 8):
                batch = [
                    Record(name=f"big{i}".encode(), data=bytes([i]) * size)
                    for i in range(start, start + 8)
                ]
                await client.push(family, batch)
            seen = 0
            async for pulled in client.pull(family):
                assert pulled.data == bytes([seen]) * size
                seen += 1
            assert seen == count
            grown = running.peak_memory() - baseline
    assert grown < 24 * (1 << 20), f"the keeper grew by {grown >> 20} MiB for a 96 MiB mailbox"


# --- the command and the store --------------------------------------------------------------


def test_bad_keeper_arguments_are_one_line_and_status_2(tmp_path: Path) -> None:
    for bad in (["--quota", "lots"], ["--retention", "-1"], ["--max-disk", "0"], []):
        done = subprocess.run(
            [*MICROSYNC, "keeper", *(["--data", str(tmp_path)] if bad else []), *bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("microsync: error:") and done.stderr.count("\n") == 1


def test_a_taken_port_is_one_line_that_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [*MICROSYNC, "keeper", "--data", str(tmp_path), "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "port is in use" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "size"), [("4096", 4096), ("64K", 65536), ("500M", 500 << 20), ("1.5GiB", 3 << 29)]
)
def test_sizes_read_as_people_write_them(text: str, size: int) -> None:
    assert byte_size(text) == size


def test_the_store_dedupes_within_a_batch_and_counts_what_it_holds(tmp_path: Path) -> None:
    store = KeeperStore(tmp_path, mailbox_quota=10_000)
    try:
        one, two = b"\1" * 32, b"\2" * 32
        assert store.put(b"m" * 32, [(one, b"a" * 100), (two, b"b" * 100), (one, b"c")], 5) == [
            (1, False),
            (2, False),
            (1, True),
        ]
        assert store.usage(b"m" * 32) == Usage(mailboxes=1, items=2, bytes=200)
        with pytest.raises(MailboxFull):  # all or nothing: the first would fit, not the second
            store.put(b"m" * 32, [(b"\3" * 32, b"x" * 5000), (b"\4" * 32, b"y" * 5000)], 6)
        assert store.usage(b"m" * 32).items == 2
        assert store.expire(older_than_ms=6) == 2
        assert store.usage() == Usage(mailboxes=0, items=0, bytes=0)
        assert store.put(b"m" * 32, [(one, b"again")], 7) == [(3, False)]  # never reused
    finally:
        store.close()
