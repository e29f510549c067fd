"""Run inside a test network namespace: LanDiscovery peers, or an independent raw mDNS query.

``python tests/mdns_peer.py peers SPEC_JSON`` starts one :class:`LanDiscovery` per entry of the
JSON list ``SPEC_JSON`` (keys: ``id``, ``port``, ``groups`` (names), ``interface``, and optional
``bucket_seconds``, ``skew`` (seconds added to the clock), ``match_groups`` (the groups
looked for in others' announcements; default ``groups``), ``on_peer`` (``"sync"``, ``"async"`` or
``"raise"``)) and prints one JSON object per line: ``{"event": "announced", "id", "name",
"bucket"}``, ``{"event": "peer", "id", "address", "port"}`` (on_peer was called) and
``{"event": "seen", "id", "name", "address", "port", "matched"}``. It stops its peers cleanly on
SIGTERM.

``python tests/mdns_peer.py query INTERFACE_IP [SECONDS]`` asks for ``_microsync._tcp.local``
with hand-built DNS packets over a plain UDP socket (legacy unicast: an ephemeral source port,
multicast to 224.0.0.251:5353 out of INTERFACE_IP), follows up with SRV/TXT and A questions,
and prints ``{"services": [{"name", "host", "port", "txt", "addresses"}]}``. Stdlib only: a
check that does not trust zeroconf.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
import time
from typing import Any

SERVICE = "_microsync._tcp.local"
PTR, A, TXT, SRV = 12, 1, 16, 33


# --- the test's groups ---------------------------------------------------------------------------


def raw_tag(group: str, bucket: int) -> bytes:
    """The raw discovery tag of the test group called ``group`` (epoch 1) in ``bucket``."""
    from microsync.crypto import labelled_hash, labels
    from microsync.feed.entry import GroupId
    from microsync.group.keys import EpochKey, discovery_tag

    seed = group.encode()
    group_id = GroupId(labelled_hash(labels.GROUP_ID, b"test-group:" + seed))
    root = labelled_hash(labels.GROUP_ID, b"test-root:" + seed)
    return discovery_tag(EpochKey.from_root(group_id, 1, root), bucket)


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def run_peers(spec: list[dict[str, Any]]) -> None:
    from microsync.net.discovery import LanDiscovery

    peers: list[tuple[str, LanDiscovery]] = []
    for entry in spec:
        peers.append((entry["id"], make_peer(LanDiscovery, entry)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.gather(*(peer.start() for _, peer in peers))
        await watch(peers, stop)
    finally:
        await asyncio.gather(*(peer.stop() for _, peer in peers))


def make_peer(cls: Any, entry: dict[str, Any]) -> Any:
    name, groups, mode = entry["id"], entry["groups"], entry.get("on_peer", "sync")
    skew = float(entry.get("skew", 0.0))
    matching = entry.get("match_groups", groups)

    def on_peer(address: str, port: int) -> object:
        emit(event="peer", id=name, address=address, port=port)
        if mode == "raise":
            raise RuntimeError("on_peer failed on purpose")
        if mode == "async":
            return asyncio.sleep(0.01)
        return None

    return cls(
        port=entry["port"],
        tags=lambda bucket: [raw_tag(group, bucket) for group in groups],
        match_tags=lambda bucket: [raw_tag(group, bucket) for group in matching],
        on_peer=on_peer,
        interfaces=[entry["interface"]],
        bucket_seconds=int(entry.get("bucket_seconds", 600)),
        clock=lambda: time.time() + skew,
    )


async def watch(peers: list[tuple[str, Any]], stop: asyncio.Event) -> None:
    announced: dict[str, Any] = {}
    seen: set[tuple[str, str, bool]] = set()
    while not stop.is_set():
        for name, peer in peers:
            if peer.announced is not None and peer.announced != announced.get(name):
                announced[name] = peer.announced
                emit(event="announced", id=name, name=peer.announced[0], bucket=peer.announced[1])
            for service, sighting in peer.peers.items():
                if (name, service, sighting.matched) not in seen:
                    seen.add((name, service, sighting.matched))
                    emit(
                        event="seen",
                        id=name,
                        name=service,
                        address=sighting.address,
                        port=sighting.port,
                        matched=sighting.matched,
                    )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


# --- an independent mDNS client --------------------------------------------------------------


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes((len(label.encode()),)) + label.encode()
    return out + b"\0"


def question_packet(ident: int, questions: list[tuple[str, int]]) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0, len(questions), 0, 0, 0)
    return header + b"".join(encode_name(n) + struct.pack("!HH", t, 1) for n, t in questions)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounds compression loops
        length = data[offset]
        if length & 0xC0 == 0xC0:
            end = end if end is not None else offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
        elif length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        else:
            labels.append(data[offset + 1 : offset + 1 + length].decode())
            offset += 1 + length
    raise ValueError("name compression loop")


def parse_packet(data: bytes) -> list[tuple[str, int, Any]]:
    """Every resource record (answer, authority, additional) as ``(name, type, value)``."""
    _, _, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
    offset = 12
    for _ in range(qd):
        _, offset = read_name(data, offset)
        offset += 4
    records = []
    for _ in range(an + ns + ar):
        name, offset = read_name(data, offset)
        rtype, _, _, length = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + length]
        records.append((name.lower(), rtype, decode_rdata(data, offset, rtype, rdata)))
        offset += length
    return records


def decode_rdata(data: bytes, offset: int, rtype: int, rdata: bytes) -> Any:
    if rtype == PTR:
        return read_name(data, offset)[0]
    if rtype == SRV:
        _, _, port = struct.unpack("!HHH", rdata[:6])
        return (port, read_name(data, offset + 6)[0])
    if rtype == TXT:
        strings, i = [], 0
        while i < len(rdata):
            strings.append(rdata[i + 1 : i + 1 + rdata[i]].decode("latin-1"))
            i += 1 + rdata[i]
        return strings
    if rtype == A:
        return socket.inet_ntoa(rdata)
    return rdata.hex()


def ask(sock: socket.socket, questions: list[tuple[str, int]], seconds: float) -> list[Any]:
    ident = int.from_bytes(struct.pack("!H", int(time.monotonic() * 1000) % 65536 or 1), "big")
    sock.sendto(question_packet(ident, questions), ("224.0.0.251", 5353))
    records: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(9000)
        except TimeoutError:
            break
        if data[2] & 0x80:  # responses only
            records.extend(parse_packet(data))
    return records


def query(interface: str, seconds: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.bind((interface, 0))
        records = ask(sock, [(SERVICE, PTR)], seconds)
        names = sorted({v for n, t, v in records if t == PTR and n == SERVICE.lower()})
        records += ask(sock, [(n, t) for n in names for t in (SRV, TXT)], seconds) if names else []
        hosts = sorted({v[1] for _, t, v in records if t == SRV})
        records += ask(sock, [(h, A) for h in hosts], seconds) if hosts else []
    finally:
        sock.close()
    return {"services": [describe(name, records) for name in names]}


def describe(name: str, records: list[Any]) -> dict[str, Any]:
    srv = next((v for n, t, v in records if n == name.lower() and t == SRV), (None, None))
    txt = next((v for n, t, v in records if n == name.lower() and t == TXT), [])
    addresses = sorted({v for n, t, v in records if t == A and srv[1] and n == srv[1].lower()})
    return {"name": name, "port": srv[0], "host": srv[1], "txt": txt, "addresses": addresses}


def main(argv: list[str]) -> None:
    if argv[:1] == ["peers"]:
        asyncio.run(run_peers(json.loads(argv[1])))
    elif argv[:1] == ["query"]:
        print(json.dumps(query(argv[1], float(argv[2]) if len(argv) > 2 else 1.0)), flush=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
