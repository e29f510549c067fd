"""LAN discovery over mDNS/DNS-SD (zeroconf): find devices that share a group, and nothing more.

Theory of operation
-------------------
Every device registers one service of type ``_microsync._tcp.local.`` whose instance name and
hostname are 16 random hex characters, drawn afresh for every time bucket
(``floor(now / bucket_seconds)``). Its TXT record holds exactly three keys:

* ``v=1`` (the format version),
* ``n=`` a random 16-byte nonce (hex), also fresh for every announcement,
* ``t=`` :data:`MAX_TAGS` blinded 8-byte tags (lowercase base32, no padding).

The ``tags`` callback gives the raw per-group tags for a bucket
(:func:`microsync.group.keys.discovery_tag`). Each is published blinded,
``blind(raw, nonce) = H(DISCOVERY_BLIND, nonce || raw)[:8]``, so two members of one group publish
unequal tags; random decoys pad the list to :data:`MAX_TAGS` and the order is shuffled, so the
count of groups leaks nothing either. A device that resolves another's service blinds its own raw
tags for the current and both adjacent buckets (clock skew) with the other's nonce and looks for
a common value; on a match it calls ``on_peer(address, port)``.

Invariants: nothing in an announcement is derived from a name, a device id or a group id except
through keyed, nonce-blinded hashes; announcements of different buckets share no value; our own
services are never reported; ``on_peer`` failures are logged and never stop discovery; every task
started here is owned by the :class:`LanDiscovery` and ended by :meth:`LanDiscovery.stop`.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import ipaddress
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ifaddr
from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from microsync.crypto import Rng, labelled_hash, labels, system_rng

__all__ = [
    "DISCOVERY_BLIND",
    "MAX_TAGS",
    "SERVICE_TYPE",
    "Announcement",
    "LanDiscovery",
    "Sighting",
    "blind",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_microsync._tcp.local."
VERSION = b"1"
TAG_SIZE = 8
NONCE_SIZE = 16
MAX_TAGS = 16  # 16 * 8 bytes in base32 = 205 characters: one TXT string holds at most 255
NAME_BYTES = 8  # 16 hex characters of instance name and of hostname
RESOLVE_TIMEOUT_MS = 3000
DEBOUNCE_SECONDS = 30.0
TICK_SECONDS = 1.0  # the rotation task looks at the clock at least this often

DISCOVERY_BLIND = labels.DISCOVERY_BLIND


def blind(raw_tag: bytes, nonce: bytes) -> bytes:
    """The 8-byte published form of ``raw_tag`` under ``nonce`` (both of fixed size)."""
    if len(raw_tag) != TAG_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("a raw tag is 8 bytes and a nonce 16")
    return labelled_hash(DISCOVERY_BLIND, nonce, raw_tag)[:TAG_SIZE]


def _random_order(items: Iterable[bytes], rng: Rng) -> list[bytes]:
    keyed = [(rng(8), item) for item in items]
    return [item for _, item in sorted(keyed)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    """What one device publishes in its TXT record for one bucket."""

    nonce: bytes
    tags: tuple[bytes, ...]  # blinded, shuffled, padded with decoys

    @classmethod
    def create(cls, raw_tags: Collection[bytes], rng: Rng) -> Announcement:
        """Blind up to :data:`MAX_TAGS` of ``raw_tags`` (a random choice if more), pad, shuffle."""
        chosen = _random_order(set(raw_tags), rng)[:MAX_TAGS]
        nonce = rng(NONCE_SIZE)
        real = [blind(tag, nonce) for tag in chosen]
        decoys = [rng(TAG_SIZE) for _ in range(MAX_TAGS - len(real))]
        return cls(nonce=nonce, tags=tuple(_random_order(real + decoys, rng)))

    def properties(self) -> dict[bytes, bytes]:
        """The TXT record: ``v``, ``n`` and ``t`` only."""
        text = base64.b32encode(b"".join(self.tags)).decode().rstrip("=").lower()
        return {b"v": VERSION, b"n": self.nonce.hex().encode(), b"t": text.encode()}

    @classmethod
    def parse(cls, properties: dict[bytes, bytes | None]) -> Announcement | None:
        """Read a TXT record; ``None`` if it is not a well-formed version-1 announcement."""
        version, nonce, text = (properties.get(key) for key in (b"v", b"n", b"t"))
        if version != VERSION or nonce is None or text is None or len(text) > 255:
            return None
        try:
            nonce_bytes = bytes.fromhex(nonce.decode("ascii"))
            padded = text.upper() + b"=" * (-len(text) % 8)
            joined = base64.b32decode(padded)
        except (ValueError, UnicodeDecodeError):
            return None
        if len(nonce_bytes) != NONCE_SIZE or not joined or len(joined) % TAG_SIZE:
            return None
        tags = tuple(joined[i : i + TAG_SIZE] for i in range(0, len(joined), TAG_SIZE))
        return cls(nonce=nonce_bytes, tags=tags) if len(tags) <= MAX_TAGS else None

    def matches(self, raw_tags: Iterable[bytes]) -> bool:
        """Whether any of ``raw_tags`` (ours) is among the published ones."""
        published = set(self.tags)
        return any(len(t) == TAG_SIZE and blind(t, self.nonce) in published for t in raw_tags)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """One resolved foreign service, for debugging and tests."""

    address: str
    port: int
    matched: bool
    seen: float  # by the discovery clock


def _own_addresses(interfaces: Sequence[str] | None) -> list[str]:
    """The IPv4 addresses to publish: the chosen interfaces, or every non-loopback one."""
    if interfaces is not None:
        return [i for i in interfaces if _is_ipv4(i)]
    found = [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and _is_ipv4(ip.ip)
    ]
    return [a for a in found if not a.startswith("127.")] or found


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


class LanDiscovery:
    """Announce this device on the LAN and report devices that share one of its groups.

    ``tags(bucket)`` returns the raw 8-byte discovery tags of this device's groups for ``bucket``;
    ``on_peer(address, port)`` is called for each matching device (debounced per address and
    port); if it returns an awaitable, that is awaited in a task owned by this object (cancelled
    by :meth:`stop`), so it should hand long work to the caller's own task group.
    ``interfaces`` are IPv4 addresses for zeroconf; ``None`` means zeroconf's default, the real
    LAN: tests must always pass explicit interfaces inside a network namespace.
    ``match_tags(bucket)`` (default: ``tags``) gives the raw tags looked for in others'
    announcements; it may be wider than what we announce, e.g. also the previous epoch's tag,
    so a member who has not received the newest key yet is still found, while announcing only
    the current epoch keeps a removed member from recognising current members.
    """

    def __init__(
        self,
        *,
        port: int,
        tags: Callable[[int], Collection[bytes]],
        on_peer: Callable[[str, int], object],
        interfaces: Sequence[str] | None = None,
        bucket_seconds: int = 600,
        clock: Callable[[], float] = time.time,
        match_tags: Callable[[int], Collection[bytes]] | None = None,
    ) -> None:
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        self._port, self._tags, self._on_peer = port, tags, on_peer
        self._match_tags = tags if match_tags is None else match_tags
        self._interfaces = None if interfaces is None else list(interfaces)
        self._bucket_seconds, self._clock = bucket_seconds, clock
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._announced_bucket: int | None = None
        self._own_names: list[str] = []
        self._services: dict[str, Sighting] = {}
        self._reported: dict[tuple[str, int], float] = {}
        self._resolving: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def bucket(self, now: float | None = None) -> int:
        """The time bucket of ``now`` (default: the clock's now)."""
        return int((self._clock() if now is None else now) // self._bucket_seconds)

    @property
    def peers(self) -> dict[str, Sighting]:
        """Every foreign service resolved so far, by instance name (matched or not)."""
        return dict(self._services)

    @property
    def announced(self) -> tuple[str, int] | None:
        """Our current instance name and its bucket (``None`` before :meth:`start`)."""
        if self._info is None or self._announced_bucket is None:
            return None
        return self._info.name, self._announced_bucket

    async def start(self) -> None:
        """Open zeroconf on the chosen interfaces, browse, and register our service."""
        if self._zc is not None or self._stopped:
            raise RuntimeError("LanDiscovery can be started once")
        if self._interfaces is None:
            self._zc = AsyncZeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
        else:
            self._zc = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        try:
            self._browser = AsyncServiceBrowser(
                self._zc.zeroconf,
                SERVICE_TYPE,
                handlers=[self._on_change],
                question_type=DNSQuestionType.QM,
            )
            await self._announce()
            self._spawn(self._rotate())
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Cancel our tasks, say goodbye and close zeroconf. Idempotent."""
        self._stopped = True
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        browser, self._browser = self._browser, None
        zc, self._zc = self._zc, None
        if browser is not None:
            await browser.async_cancel()
        if zc is not None:
            await zc.async_close()

    # --- announcing ---------------------------------------------------------------------------

    async def _announce(self) -> None:
        """Register a fresh service for the current bucket, then withdraw the previous one."""
        assert self._zc is not None
        bucket = self.bucket()
        announcement = Announcement.create(self._tags(bucket), system_rng)
        name = f"{system_rng(NAME_BYTES).hex()}.{SERVICE_TYPE}"
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            name,
            port=self._port,
            properties=announcement.properties(),
            server=f"{system_rng(NAME_BYTES).hex()}.local.",
            parsed_addresses=_own_addresses(self._interfaces),
        )
        self._own_names = [*self._own_names[-3:], name.lower()]
        await (await self._zc.async_register_service(info))
        previous, self._info, self._announced_bucket = self._info, info, bucket
        log.debug("announced %s for bucket %d", name, bucket)
        if previous is not None:
            await (await self._zc.async_unregister_service(previous))

    async def _rotate(self) -> None:
        """Re-announce whenever the bucket changes (checked at least every tick)."""
        while True:
            now = self._clock()
            remaining = (self.bucket(now) + 1) * self._bucket_seconds - now
            await asyncio.sleep(min(max(remaining, 0.0) + 0.01, TICK_SECONDS))
            if self.bucket() != self._announced_bucket:
                try:
                    await self._announce()
                except Exception:  # zeroconf, the network or the tags callback: retry next tick
                    log.exception("re-announcing failed, will retry")

    # --- browsing -----------------------------------------------------------------------------

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if self._stopped:
            return
        if state_change is ServiceStateChange.Removed:
            self._services.pop(name, None)
        elif name.lower() not in self._own_names and name not in self._resolving:
            self._resolving.add(name)
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        try:
            assert self._zc is not None
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            zc = self._zc.zeroconf
            if not await info.async_request(zc, RESOLVE_TIMEOUT_MS, DNSQuestionType.QM):
                return
            await self._consider(name, info)
        finally:
            self._resolving.discard(name)

    async def _consider(self, name: str, info: AsyncServiceInfo) -> None:
        addresses = info.parsed_addresses(IPVersion.V4Only)
        announcement = Announcement.parse(info.properties)
        if announcement is None or not addresses or not info.port:
            return
        bucket = self.bucket()
        ours = [tag for b in (bucket - 1, bucket, bucket + 1) for tag in self._match_tags(b)]
        matched = announcement.matches(ours)
        self._services[name] = Sighting(
            address=addresses[0], port=info.port, matched=matched, seen=self._clock()
        )
        if matched:
            await self._report(addresses[0], info.port)

    async def _report(self, address: str, port: int) -> None:
        now = time.monotonic()
        self._reported = {k: t for k, t in self._reported.items() if now - t < DEBOUNCE_SECONDS}
        if (address, port) in self._reported:
            return
        self._reported[(address, port)] = now
        try:
            result = self._on_peer(address, port)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the caller's callback: log it, keep discovering
            log.exception("on_peer(%s, %d) failed", address, port)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("discovery task failed", exc_info=error)
