"""LAN discovery (microsync.net.discovery): the announcement format in memory, then real zeroconf
peers in network namespaces the tests create (loopback in a fresh namespace; a LAN of three
namespaces on a bridge when root), checked by a stdlib-only mDNS client that does not use
zeroconf. No test sends a packet outside a namespace it made (NETWORK_TESTING.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from microsync.net.discovery import (
    MAX_TAGS,
    SERVICE_TYPE,
    Announcement,
    LanDiscovery,
    blind,
)
from tests.conftest import make_rng
from tests.mdns_peer import raw_tag
from tests.netns import Lan, LoopbackNamespace, Proc, lan_unavailable, loopback_unavailable, python

BUCKET = 4  # seconds per bucket for the loopback peers, so the test sees a rotation
FIND = 15.0  # generous: zeroconf backs off its queries 1 s, 2 s, 4 s...
HEX16 = re.compile(r"^[0-9a-f]{16}$")

# --- the announcement, in memory --------------------------------------------------------------


def test_members_of_one_group_publish_unequal_tags_that_both_match() -> None:
    rng = make_rng("blind")
    ours, theirs = raw_tag("x", 7), raw_tag("y", 7)
    first = Announcement.create([ours], rng)
    second = Announcement.create([ours], rng)
    assert not set(first.tags) & set(second.tags)
    assert blind(ours, first.nonce) in first.tags and ours not in first.tags
    assert first.matches([theirs, ours]) and second.matches([ours])
    assert not first.matches([theirs, raw_tag("x", 8)])


def test_the_txt_record_holds_only_version_nonce_and_a_fixed_number_of_tags() -> None:
    rng = make_rng("txt")
    for groups in (0, 1, 5, MAX_TAGS, 3 * MAX_TAGS):
        raw = [raw_tag(f"g{i}", 1) for i in range(groups)]
        announcement = Announcement.create(raw, rng)
        properties = announcement.properties()
        assert set(properties) == {b"v", b"n", b"t"} and properties[b"v"] == b"1"
        assert all(len(key) + 1 + len(value) <= 255 for key, value in properties.items())
        assert len(announcement.tags) == MAX_TAGS
        parsed = Announcement.parse(dict(properties))
        assert parsed == announcement
        assert announcement.matches(raw) == bool(raw)


def test_more_groups_than_fit_are_sampled_afresh_in_every_announcement() -> None:
    rng = make_rng("sample")
    raw = [raw_tag(f"g{i}", 1) for i in range(2 * MAX_TAGS)]
    announced: set[bytes] = set()
    for _ in range(30):
        announcement = Announcement.create(raw, rng)
        announced |= {t for t in raw if announcement.matches([t])}
    assert announced == set(raw)


@pytest.mark.parametrize(
    "change",
    [
        {b"v": b"2"},
        {b"v": None},
        {b"n": b"zz"},
        {b"n": b"00" * 15},
        {b"t": None},
        {b"t": b"!!"},
        {b"t": b""},
        {b"t": b"aaaaaaa"},  # 4 bytes: not a whole tag
        {b"t": b"a" * 256},
    ],
)
def test_malformed_announcements_are_ignored(change: dict[bytes, bytes | None]) -> None:
    properties: dict[bytes, bytes | None] = {
        **Announcement.create([raw_tag("x", 1)], make_rng()).properties()
    }
    properties.update(change)
    assert Announcement.parse(properties) is None


def test_buckets_follow_the_injected_clock() -> None:
    discovery = LanDiscovery(
        port=1, tags=lambda b: [], on_peer=lambda a, p: None, bucket_seconds=600, clock=lambda: 1250
    )
    assert discovery.bucket() == 2 and discovery.bucket(1800.0) == 3
    assert discovery.peers == {} and discovery.announced is None
    with pytest.raises(ValueError):
        LanDiscovery(port=1, tags=lambda b: [], on_peer=lambda a, p: None, bucket_seconds=0)


# --- real peers in namespaces -----------------------------------------------------------------


class Events:
    """The JSON lines of some peer processes, gathered as they arrive."""

    def __init__(self, *procs: Proc) -> None:
        self.procs, self.items = procs, list[dict[str, Any]]()

    def pump(self) -> None:
        for proc in self.procs:
            while (line := proc.next_line(0)) is not None:
                self.items.append(json.loads(line))

    def of(self, event: str, **match: object) -> list[dict[str, Any]]:
        self.pump()
        return [
            e
            for e in self.items
            if e["event"] == event and all(e[k] == v for k, v in match.items())
        ]

    def wait(self, check: Callable[[], bool], timeout: float = FIND) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def current_names(self) -> dict[str, tuple[str, int]]:
        """Each peer's latest announced (name, bucket)."""
        return {e["id"]: (e["name"], e["bucket"]) for e in self.of("announced")}


def peers_argv(*spec: dict[str, Any]) -> list[str]:
    return python("tests/mdns_peer.py", "peers", json.dumps(list(spec)))


def raw_query(run: Callable[[list[str]], Proc], interface: str) -> list[dict[str, Any]]:
    """What the stdlib mDNS client (run inside the namespace) found."""
    proc = run(python("tests/mdns_peer.py", "query", interface, "0.7"))
    line = proc.next_line(15)
    assert line is not None, "".join(proc.stderr)
    services: list[dict[str, Any]] = json.loads(line)["services"]
    return services


def txt_of(service: dict[str, Any]) -> dict[str, str]:
    pairs = [entry.split("=", 1) for entry in service["txt"]]
    assert all(len(pair) == 2 for pair in pairs) and len(pairs) == len({k for k, _ in pairs})
    return dict((k, v) for k, v in pairs)


def published_tags(service: dict[str, Any]) -> set[bytes]:
    txt = txt_of(service)
    parsed = Announcement.parse({k.encode(): v.encode() for k, v in txt.items()})
    assert parsed is not None
    return set(parsed.tags)


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[LoopbackNamespace, Events]]:
    """A fresh namespace with peers in two processes: A (group x), C (y) and D (epoch 1 of w,
    not yet rotated) in one; B (x, z) and E (epoch 2 of w, still matching epoch 1) in the other."""
    reason = loopback_unavailable()
    if reason:
        pytest.skip(reason)
    common = {"interface": "127.0.0.1", "bucket_seconds": BUCKET}
    namespace = LoopbackNamespace()
    try:
        one = namespace.run(
            peers_argv(
                {"id": "A", "port": 7001, "groups": ["x"], "on_peer": "async", **common},
                {"id": "C", "port": 7003, "groups": ["y"], **common},
                {"id": "D", "port": 7004, "groups": ["w1"], **common},
            )
        )
        two = namespace.run(
            peers_argv(
                {"id": "B", "port": 7002, "groups": ["x", "z"], "on_peer": "raise", **common},
                {"id": "E", "port": 7005, "groups": ["w2"], "match_groups": ["w2", "w1"], **common},
            )
        )
        yield namespace, Events(one, two)
        assert one.stop() == 0 and two.stop() == 0, "a peer did not stop cleanly"
    finally:
        namespace.close()


def test_members_of_one_group_find_each_other_on_loopback(
    loopback: tuple[LoopbackNamespace, Events],
) -> None:
    _, events = loopback
    assert events.wait(lambda: bool(events.of("peer", id="A", port=7002)))
    assert events.wait(lambda: bool(events.of("peer", id="B", port=7001)))
    assert {e["address"] for e in events.of("peer")} == {"127.0.0.1"}


def test_a_device_of_another_group_is_never_reported(
    loopback: tuple[LoopbackNamespace, Events],
) -> None:
    _, events = loopback
    assert events.wait(lambda: len({e["port"] for e in events.of("seen", id="C")}) == 4)
    assert events.wait(lambda: bool(events.of("seen", id="A", port=7003)))
    assert events.wait(lambda: bool(events.of("seen", id="B", port=7003)))
    assert not events.of("seen", matched=True, port=7003)
    assert not events.of("peer", id="C") and not events.of("peer", port=7003)


def test_an_outsider_sees_only_version_nonce_and_blinded_tags(
    loopback: tuple[LoopbackNamespace, Events],
) -> None:
    namespace, events = loopback
    assert events.wait(lambda: len(events.current_names()) == 5)
    services = raw_query(namespace.run, "127.0.0.1")
    assert {s["port"] for s in services} == {7001, 7002, 7003, 7004, 7005}
    for service in services:
        assert service["name"].endswith(SERVICE_TYPE.rstrip("."))
        assert HEX16.match(service["name"].split(".")[0])
        assert HEX16.match(service["host"].removesuffix(".local"))
        assert service["addresses"] == ["127.0.0.1"]
        txt = txt_of(service)
        assert set(txt) == {"v", "n", "t"} and txt["v"] == "1"
        assert len(published_tags(service)) == MAX_TAGS
    raw = {
        raw_tag(g, b)
        for g in ("x", "y", "z", "w1", "w2")
        for b in range(time_bucket() - 2, time_bucket() + 3)
    }
    tags = {s["port"]: published_tags(s) for s in services}
    assert not set().union(*tags.values()) & raw
    assert not tags[7001] & tags[7002], "two members of x must not publish a common tag"
    assert len({s["name"] for s in services}) == len({s["host"] for s in services})


def test_names_hosts_and_tags_change_with_every_bucket(
    loopback: tuple[LoopbackNamespace, Events],
) -> None:
    namespace, events = loopback
    assert events.wait(lambda: len(events.current_names()) == 5)
    before = {name for name, _ in events.current_names().values()}
    first = raw_query(namespace.run, "127.0.0.1")
    bucket = max(b for _, b in events.current_names().values())
    assert events.wait(
        lambda: all(b > bucket for _, b in events.current_names().values()), 3 * BUCKET
    )
    after = {name for name, _ in events.current_names().values()}
    time.sleep(0.3)  # the goodbyes for the old names
    second = raw_query(namespace.run, "127.0.0.1")
    found = {s["name"] + "." for s in second}
    assert after <= found and not before & found
    assert not {s["host"] for s in first} & {s["host"] for s in second}
    assert not {txt_of(s)["n"] for s in first} & {txt_of(s)["n"] for s in second}
    assert not set().union(*map(published_tags, first)) & set().union(*map(published_tags, second))


def test_wider_match_tags_find_a_member_who_has_not_rotated_yet(
    loopback: tuple[LoopbackNamespace, Events],
) -> None:
    _, events = loopback
    assert events.wait(lambda: bool(events.of("peer", id="E", port=7004)))
    assert events.wait(lambda: bool(events.of("seen", id="D", port=7005)))
    assert not events.of("peer", id="D") and not events.of("seen", id="D", matched=True)


def test_failing_or_async_callbacks_do_not_stop_discovery(
    loopback: tuple[LoopbackNamespace, Events],
) -> None:
    _, events = loopback
    assert events.wait(lambda: bool(events.of("peer", id="B")))  # B's on_peer raised
    bucket = max(b for _, b in events.current_names().values())
    assert events.wait(
        lambda: any(b > bucket for _, b in events.current_names().values()), 3 * BUCKET
    )
    a_now = events.current_names()["A"][0]
    assert events.wait(lambda: bool(events.of("seen", id="B", name=a_now, matched=True)))
    assert all(proc.popen.poll() is None for proc in events.procs)


def time_bucket() -> int:
    return int(time.time() // BUCKET)


# --- a LAN of three hosts ---------------------------------------------------------------------


def test_three_hosts_on_a_bridge_find_exactly_their_group_despite_clock_skew() -> None:
    reason = lan_unavailable()
    if reason:
        pytest.skip(reason)
    with Lan(3) as lan:
        spec = [
            {"id": "A", "port": 7001, "groups": ["x"], "skew": 0},
            {"id": "B", "port": 7002, "groups": ["x"], "skew": 600},  # one bucket ahead
            {"id": "C", "port": 7003, "groups": ["y"], "skew": 0},
        ]
        procs = [
            lan.run(i, peers_argv({**entry, "interface": lan.addresses[i - 1]}))
            for i, entry in enumerate(spec, 1)
        ]
        events = Events(*procs)
        assert events.wait(lambda: bool(events.of("peer", id="A")))
        assert events.wait(lambda: bool(events.of("peer", id="B")))
        assert events.wait(lambda: len(events.of("seen", id="C")) == 2)
        assert [(e["address"], e["port"]) for e in events.of("peer", id="A")] == [
            ("10.77.0.2", 7002)
        ]
        assert [(e["address"], e["port"]) for e in events.of("peer", id="B")] == [
            ("10.77.0.1", 7001)
        ]
        assert not events.of("peer", id="C") and not events.of("seen", id="C", matched=True)
        services = raw_query(lambda argv: lan.run(3, argv), "10.77.0.3")
        where = {s["port"]: s["addresses"] for s in services}
        assert where == {7001: ["10.77.0.1"], 7002: ["10.77.0.2"], 7003: ["10.77.0.3"]}
        assert all(set(txt_of(s)) == {"v", "n", "t"} for s in services)
        check_with_installed_tools(lan)


def check_with_installed_tools(lan: Lan) -> None:
    """If ``dig`` is installed, ask it too (inside the LAN only); absent tools are not failures."""
    if shutil.which("dig") is None:
        return
    ask = ["dig", "+time=2", "+tries=1", "-p", "5353", "@10.77.0.1", "_microsync._tcp.local", "PTR"]
    out = subprocess.run(
        ["ip", "netns", "exec", lan.hosts[2], *ask], capture_output=True, text=True, timeout=10
    ).stdout
    assert "_microsync._tcp.local" in out
