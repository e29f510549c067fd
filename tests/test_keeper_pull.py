"""The pull side of the keeper: the client's pipelined pages, and a device's catch-up through
them (``microsync/net/keeper_client.py``, ``microsync/node/keeper_pull.py``). Real keeper
subprocesses on 127.0.0.1, and for the hostile cases a keeper of the test's own on a real
loopback WebSocket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

import microsync
from microsync.app import unfolded
from microsync.errors import DecodeError, RemoteProtocolError
from microsync.group.mailbox import Mailbox
from microsync.net.keeper_client import PULL_AHEAD, KeeperClient, Pulled, Record
from microsync.net.keeper_pages import STALLS
from microsync.node import keeper_pull, keeper_state
from microsync.protocol.keeper import (
    MAX_MESSAGE,
    MAX_PAGE,
    Challenge,
    End,
    Items,
    Prove,
    Proved,
    Pull,
    decode,
    encode,
)
from tests.conftest import make_rng
from tests.keeper_helpers import keeper
from tests.test_device_groups import introduce, pair
from tests.test_keeper_group import kept_family, online, pushed_all, texts, until


def box(seed: str = "pull epoch 1") -> Mailbox:
    return Mailbox.derive(make_rng(seed)(32))


def records(count: int, prefix: str = "r") -> list[Record]:
    return [Record(name=f"{prefix}{i}".encode(), data=os.urandom(100)) for i in range(count)]


def sent_pulls(client: KeeperClient) -> list[Pull]:
    """Record every PULL ``client`` sends from now on (the list fills as it sends)."""
    found: list[Pull] = []
    conn: Any = client._conn
    send = conn.send

    async def recorded(message: bytes) -> None:
        decoded = decode(message, from_client=True)
        if isinstance(decoded, Pull):
            found.append(decoded)
        await send(message)

    conn.send = recorded
    return found


# --- the record: one canonical form read directly, everything else by the strict decoder ----


def _either(data: bytes) -> object:
    try:
        return keeper_state._record_strict(data)
    except DecodeError as error:
        return type(error)


def _fast_or_error(data: bytes) -> object:
    try:
        return keeper_state.decode_record(data)
    except DecodeError as error:
        return type(error)


_sizes = st.sampled_from([0, 1, 23, 24, 255, 256, 4096, 4097, 65535, 65536, 70_000])


@settings(max_examples=300, deadline=None)
@given(
    wire=st.one_of(st.binary(max_size=300), _sizes.map(bytes)),
    body=st.one_of(st.none(), st.binary(max_size=300), _sizes.map(bytes)),
    cut=st.integers(0, 8),
    flip=st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)),
)
def test_a_record_reads_the_same_as_the_strict_decoder_reads_it(
    wire: bytes, body: bytes | None, cut: int, flip: tuple[int, int]
) -> None:
    record = keeper_state.encode_record(wire, body)
    assert _fast_or_error(record) == _either(record)
    assert _either(record) == ((wire, body) if len(wire) <= 4096 else DecodeError)
    at, xor = flip
    hostile = [
        record[: len(record) - cut],
        record + bytes(cut),
        bytes([record[0] ^ (xor if at % 3 == 0 else 0)]) + record[1:],
        record[: at % len(record)]
        + bytes([record[at % len(record)] ^ xor])
        + record[at % len(record) + 1 :],
    ]
    for data in hostile:  # cut, padded, re-headed, one byte flipped: the same answer
        assert _fast_or_error(data) == _either(data)


def test_a_record_with_a_longer_head_than_it_needs_is_not_canonical() -> None:
    wire, body = b"w" * 5, b"b" * 30
    longer = b"\x82" + b"\x58\x05" + wire + b"\x58\x1e" + body  # 5 fits in the head byte
    with pytest.raises(DecodeError):
        keeper_state.decode_record(longer)
    assert keeper_state.decode_record(b"\x82\x45" + wire + b"\x58\x1e" + body) == (wire, body)


# --- the client: pipelined pages ------------------------------------------------------------


async def test_the_next_pages_are_asked_for_before_the_current_one_is_handed_on(
    tmp_path: Path,
) -> None:
    family, sent = box(), records(5 * MAX_PAGE + 10)
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, sent)
            pulls = sent_pulls(client)
            asked_when: list[int] = []  # PULLs sent by the time each item was handed on
            got: list[Pulled] = []
            async for item in client.pull(family):
                asked_when.append(len(pulls))
                got.append(item)
            assert [g.data for g in got] == [r.data for r in sent]  # all, once, in order
            assert [g.cursor for g in got] == list(range(1, len(sent) + 1))
            # by the last item of the first page, PULL_AHEAD more pages were asked for
            assert asked_when[MAX_PAGE - 1] == 1 + PULL_AHEAD
            for page in range(1, 4):  # and as each page ends, one more
                assert asked_when[(page + 1) * MAX_PAGE - 1] >= 1 + PULL_AHEAD + page
            ranges = [(p.after, p.before) for p in pulls if p.before]
            assert ranges[:3] == [(MAX_PAGE * k, MAX_PAGE * (k + 1) + 1) for k in (1, 2, 3)]
            assert pulls[0].before == 0 and pulls[-1].before == 0  # open-ended at both ends
            assert len(pulls) <= 6 + PULL_AHEAD + 1


async def test_a_pull_across_deleted_stretches_gets_everything_left_once(tmp_path: Path) -> None:
    family, sent = box(), records(6 * MAX_PAGE)
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, sent)
            gone = {*range(300, 300 + 2 * MAX_PAGE + 20), *range(1200, 1210), 1535}
            await client.delete(family, [sent[i].name for i in sorted(gone)])
            left = [r.data for i, r in enumerate(sent) if i not in gone]
            assert [p.data async for p in client.pull(family)] == left
            for after in (0, 299, 300, 1000):  # from anywhere, across every gap
                want = [r.data for i, r in enumerate(sent) if i not in gone and i >= after]
                assert [p.data async for p in client.pull(family, after=after)] == want
            more = records(3, "late")
            await client.push(family, more)  # past the end and the gaps: found too
            tail = [p.data async for p in client.pull(family, after=1500)]
            assert tail == [r.data for i, r in enumerate(sent) if i >= 1500 and i not in gone] + [
                r.data for r in more
            ]


async def test_a_pull_stopped_with_a_page_asked_ahead_leaves_the_connection_usable(
    tmp_path: Path,
) -> None:
    family, sent = box(), records(2 * MAX_PAGE + 5)
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, sent)
            pulls = sent_pulls(client)
            items = client.pull(family)
            for _ in range(MAX_PAGE):  # the whole first page: the next ones are asked for
                last = await anext(items)
            assert len(pulls) == 1 + PULL_AHEAD and last.cursor == MAX_PAGE
            await items.aclose()  # both pages' answers still to come are dropped
            assert [p.cursor for p in [p async for p in client.pull(family, after=10)]] == list(
                range(11, len(sent) + 1)
            )
            assert await client.push(family, records(1, "more")) == [len(sent) + 1]


async def test_a_limited_newest_first_pull_asks_for_no_more_than_its_limit(
    tmp_path: Path,
) -> None:
    family, sent = box(), records(2 * MAX_PAGE + 50)
    with keeper(tmp_path / "k") as running:
        async with await KeeperClient.connect(running.url) as client:
            await client.push(family, sent)
            pulls = sent_pulls(client)
            newest = [p async for p in client.pull_newest(family, limit=MAX_PAGE + 44)]
            assert [p.cursor for p in newest] == list(range(len(sent), len(sent) - 300, -1))
            assert [p.limit for p in pulls] == [MAX_PAGE, 44]
            assert [p async for p in client.pull_newest(family, limit=3)] == newest[:3]
            with pytest.raises(ValueError, match="at least 1"):
                client.pull_newest(family, limit=0)


# --- a hostile keeper -----------------------------------------------------------------------


@asynccontextmanager
async def fake_keeper(
    pages: Callable[[Pull], list[int]], more: Callable[[Pull], bool] = lambda _: True
) -> AsyncIterator[str]:
    """A keeper of the test's own: proves anything, and answers each PULL with items at the
    cursors ``pages(pull)`` names (garbage payloads), then END (``more(pull)``)."""

    async def handle(conn: ServerConnection) -> None:
        await conn.send(encode(Challenge(nonce=bytes(32), keeper=bytes(16))))
        async for raw in conn:
            assert isinstance(raw, bytes)
            message = decode(raw, from_client=True)
            if isinstance(message, Pull):
                cursors = pages(message)
                for start in range(0, len(cursors), 64):
                    batch = tuple(cursors[start : start + 64])
                    sealed = tuple(box().seal(os.urandom, b"%d" % c, b"x") for c in batch)
                    await conn.send(
                        encode(Items(request=message.request, cursors=batch, items=sealed))
                    )
                await conn.send(encode(End(request=message.request, more=more(message))))
            elif isinstance(message, Prove):
                await conn.send(encode(Proved(request=message.request)))

    async with serve(handle, "127.0.0.1", 0, compression=None, max_size=MAX_MESSAGE) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def test_a_keeper_that_answers_the_page_asked_ahead_out_of_range_is_caught() -> None:
    def pages(pull: Pull) -> list[int]:
        if pull.after == 0:
            return list(range(1, MAX_PAGE + 1))
        return [MAX_PAGE - 5]  # the page after 256 must start above it

    async with fake_keeper(pages) as url, await KeeperClient.connect(url) as client:
        got: list[int] = []
        with pytest.raises(RemoteProtocolError, match="outside the range"):
            async for item in client.pull(box()):
                got.append(item.cursor)
        assert got == list(range(1, MAX_PAGE + 1))


async def test_a_keeper_whose_full_page_goes_backwards_is_caught_before_anything_is_asked() -> None:
    def pages(pull: Pull) -> list[int]:
        return [*range(1, MAX_PAGE), 100] if pull.after == 0 else []  # back below 192

    async with fake_keeper(pages) as url, await KeeperClient.connect(url) as client:
        pulls = sent_pulls(client)
        with pytest.raises(RemoteProtocolError, match="outside the range"):
            async for _ in client.pull(box()):
                pass
        assert len(pulls) == 1  # nothing asked ahead from a cursor the keeper made up


async def test_a_keeper_that_answers_more_with_nothing_for_ever_is_caught() -> None:
    """A keeper that ends every page with "more" and sends no item would keep a pull asking for
    ever; past STALLS such answers in a row the pull fails, either way round. A live wait
    that ends with nothing is not a stall: a watch keeps waiting."""
    async with fake_keeper(lambda pull: []) as url, await KeeperClient.connect(url) as client:
        pulls = sent_pulls(client)
        for pull in (client.pull(box()), client.pull_newest(box())):
            with pytest.raises(RemoteProtocolError, match="more, with nothing"):
                async with asyncio.timeout(10):  # without the check: asking for ever
                    async for _ in pull:
                        pass
            assert len(pulls) == STALLS + 1
            pulls.clear()
        watch = client.watch(box())
        waiting = asyncio.ensure_future(anext(watch))
        await until(lambda: len(pulls) > 3 * STALLS, timeout=10)  # still asking, no error
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await watch.aclose()


class _Growing:
    """A mailbox that gains items between the keeper's answers: each PULL is answered from
    what it holds then (cursors 1..``count`` but those ``gone``), as one read of a real keeper
    is, and ``growth`` more items land after each answer."""

    def __init__(self, count: int, growth: list[int], gone: set[int]) -> None:
        self.count, self.growth, self.gone = count, list(growth), gone
        self.read_at: list[int] = []  # ``count`` when each PULL was answered

    def held(self, pull: Pull) -> list[int]:
        top = pull.before - 1 if pull.before else self.count
        return [c for c in range(pull.after + 1, min(top, self.count) + 1) if c not in self.gone]

    def page(self, pull: Pull) -> list[int]:
        self.read_at.append(self.count)
        return self.held(pull)[: pull.limit]

    def more(self, pull: Pull) -> bool:  # asked for just after ``page``, before growing
        more = len(self.held(pull)) > pull.limit
        self.count += self.growth.pop(0) if self.growth else 0
        return more


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(0, 3 * MAX_PAGE),
    growth=st.lists(st.integers(0, 2 * MAX_PAGE), max_size=10),
    gone=st.sets(st.integers(1, 4000), max_size=300),
)
def test_a_pull_while_items_land_between_its_pages_skips_nothing(
    count: int, growth: list[int], gone: set[int]
) -> None:
    """The CI failure of 2026-12-02: a range asked ahead was answered after more items landed,
    above a range that had come back short at the top of what the keeper then held; the items
    between were never asked for. Now everything the last read held is pulled, once, in order."""
    mailbox = _Growing(count, growth, gone)

    async def run() -> list[int]:
        async with (
            fake_keeper(mailbox.page, mailbox.more) as url,
            await KeeperClient.connect(url) as client,
        ):
            return [p.cursor async for p in client.pull(box())]

    got = asyncio.run(run())
    assert got == [c for c in range(1, mailbox.read_at[-1] + 1) if c not in gone]


# --- a device's catch-up --------------------------------------------------------------------


async def test_a_catch_up_hands_the_app_every_body_and_pushes_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small pages and a small newest-first window: the window's entries wait behind their
    gap and join their feed in a later page than the one they came in. The app still gets
    each one's body (its first read reads nothing of that feed back from the store), and
    nothing pulled is pushed back to the keeper."""
    monkeypatch.setattr(keeper_pull, "PAGE", 8)
    monkeypatch.setattr(keeper_pull, "NEWEST_FIRST", 10)
    read_back: list[tuple[bytes, int, int]] = []
    stored = unfolded._stored

    def recorded(replica: Any, device: Any, after: int, last: int) -> Any:
        if last > after:
            read_back.append((bytes(device), after, last))
        return stored(replica, device, after, last)

    monkeypatch.setattr(unfolded, "_stored", recorded)
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, k.url, "alice", "bob")
            await online(bob)
            for n in range(40):
                await bob.post(f"post {n}")
            await until(lambda: pushed_all(bob))
            await bob.device.stop()
            head = bob.device.frontier(bob.id)[bob.device.id]

            carol_device = await stack.enter_async_context(
                await microsync.Device.open(tmp_path / "carol", name="carol")
            )
            introduce(alice.device, carol_device)
            invite = await alice.invite(ttl=3600)
            await online(alice)
            response = pair(
                alice.device.invite_host().session(), carol_device.join_guest(invite.link)
            )
            await until(lambda: pushed_all(alice))
            await alice.device.stop()

            carol = await carol_device.finish_join(response)
            await online(carol)
            await until(lambda: carol.device.frontier(carol.id).get(bob.device.id, 0) >= head)
            read_back.clear()
            assert {f"post {n}" for n in range(40)} <= texts(carol)  # the first read
            assert not [r for r in read_back if r[0] == bytes(bob.device.id)]
            await until(lambda: pushed_all(carol))
            (status,) = carol.keeper_status()
            assert status.pulled >= 40 and status.pushed <= 2  # her own add and first entry
            await carol.device.stop()
