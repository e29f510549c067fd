"""Where this device last reached each group's members: a small persistent list per group.

Theory: when a sync with a peer finishes (its ``synced`` moment), the node records how it got
there, if that way can be taken again: a ``HOST:PORT`` it dialled (an address a peer dialled
*from* is an ephemeral port, useless later, so accepted connections are not recorded) or the
relay URL it met the peer through. ``microsync vault get`` on a device that is not serving
dials these to fetch what it lacks.

Invariants: at most :data:`MAX_KNOWN` addresses per group, most recent first, each once; the
list lives in the profile's ``meta`` table under ``peers/<group id hex>`` as a canonical list
of ``[address, last_ms]``; it holds no secrets (addresses only; the profile is 0600 anyway);
a damaged list reads as empty, never as an error, since it is only a hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.errors import MicrosyncError
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.net.connection import SyncConnection
from microsync.storage.sqlite import SqliteStore

__all__ = ["MAX_KNOWN", "KnownPeer", "known_peers", "remember_peer", "remember_sync", "way_back"]

MAX_KNOWN: Final = 8
_PREFIX: Final = "peers/"
_RELAY_SCHEMES: Final = ("ws://", "wss://")
_RELAY_PEER: Final = "relay:"  # how a relay channel names its other end


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownPeer:
    """One way this device reached a member of a group: ``address`` is ``HOST:PORT`` or, when
    :attr:`is_relay`, a relay URL; ``last_ms`` when a sync through it last finished."""

    address: str
    last_ms: int

    @property
    def is_relay(self) -> bool:
        return self.address.startswith(_RELAY_SCHEMES)


def _key(group: GroupId) -> str:
    return _PREFIX + bytes(group).hex()


def known_peers(store: SqliteStore, group: GroupId) -> list[KnownPeer]:
    """The addresses remembered for ``group``, most recent first (empty if none or damaged)."""
    data = store.get_meta(_key(group))
    if data is None:
        return []
    try:
        items = encoding.expect_list(encoding.decode(data, max_size=2**14), "known peers")
        found = [_parse(item) for item in items]
    except (MicrosyncError, ValueError):
        return []
    return found[:MAX_KNOWN]


def _parse(item: encoding.Value) -> KnownPeer:
    address, last_ms = encoding.expect_list(item, "known peer", 2)
    if type(address) is not str or type(last_ms) is not int:
        raise ValueError("a known peer is [address, last_ms]")
    return KnownPeer(address=address, last_ms=last_ms)


def remember_peer(store: SqliteStore, group: GroupId, address: str, now_ms: int) -> None:
    """Record that a sync of ``group`` through ``address`` finished at ``now_ms``: it moves to
    the front; the oldest beyond :data:`MAX_KNOWN` is forgotten."""
    if not address or len(address) > 512:
        return
    kept = [p for p in known_peers(store, group) if p.address != address]
    fresh = [KnownPeer(address=address, last_ms=now_ms), *kept][:MAX_KNOWN]
    store.put_meta(_key(group), encoding.encode([[p.address, p.last_ms] for p in fresh]))


def way_back(peer_address: str, dialled: bool) -> str | None:
    """How to reach again the peer of a connection whose other end is ``peer_address``: the
    relay URL for a relay channel, the address itself if this device ``dialled`` it, else
    ``None`` (the source port of an accepted connection leads nowhere)."""
    if peer_address.startswith(_RELAY_PEER):
        url = peer_address.removeprefix(_RELAY_PEER)
        return url if url.startswith(_RELAY_SCHEMES) else None
    if not dialled:
        return None
    host, _, port = peer_address.rpartition(":")
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else peer_address


def remember_sync(
    store: SqliteStore, connection: SyncConnection, ours: DeviceId, now_ms: int
) -> None:
    """Record, for every group ``connection`` synced, the way back to its peer (if any)."""
    way = way_back(connection.peer_address, connection.initiator_device(ours) == ours)
    if way is None:
        return
    with store.transaction():
        for group in sorted(connection.session.groups):
            remember_peer(store, GroupId(bytes(group)), way, now_ms)
