"""What a device remembers about its keepers, durably, in the profile's ``meta`` table; and
the record a keeper holds for one entry.

Per group and keeper URL, the **push frontier**: for each feed, the highest ``seq`` such that
the keeper acknowledged every entry of the feed up to it (so a restart pushes only the rest;
an entry acknowledged out of order is pushed again later, and the keeper answers ``duplicate``).
Per keeper database id and mailbox, the **pull cursor**: every item at or below it was taken in
(cursors are per keeper database, so a wiped keeper restarts from 0). Both are CBOR; a value
that does not decode is treated as absent (everything is pushed or pulled again: idempotent).

A record is ``CBOR [wire, body or null]``: an entry exactly as sync sends it, named by its
entry id (so every member's push of one entry is the same keeper item).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from microsync import encoding
from microsync.encoding import expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError
from microsync.feed import GroupId
from microsync.group.invite.payloads import Welcome
from microsync.group.member import GroupStore
from microsync.identity import DeviceId
from microsync.node.inbound import WELCOME_PREFIX

__all__ = [
    "decode_record",
    "encode_record",
    "load_cursor",
    "load_forgotten",
    "load_frontier",
    "load_hint",
    "remember_welcome",
    "save_cursor",
    "save_forgotten",
    "save_frontier",
    "save_hint",
]

_PREFIX: Final = "keeper/"
_MAX_RECORD: Final = 2 * 1024 * 1024


def _frontier_key(group: GroupId, url: str) -> str:
    return f"{_PREFIX}push/{group.hex()}/{url}"


def load_frontier(store: GroupStore, group: GroupId, url: str) -> dict[DeviceId, int]:
    """The push frontier of ``group`` at the keeper ``url`` (empty: nothing acknowledged)."""
    data = store.get_meta(_frontier_key(group, url))
    if not data:
        return {}
    try:
        items = expect_list(encoding.decode(data, max_size=1 << 20), "frontier")
        return {
            DeviceId(expect_bytes(d, "device", 32)): expect_int(s, "seq")
            for d, s in (expect_list(item, "position", 2) for item in items)
        }
    except DecodeError:
        return {}


def save_frontier(
    store: GroupStore, group: GroupId, url: str, frontier: Mapping[DeviceId, int]
) -> None:
    value: list[encoding.Value] = [[d, s] for d, s in sorted(frontier.items())]
    store.put_meta(_frontier_key(group, url), encoding.encode(value))


def _cursor_key(keeper: bytes, mailbox: bytes) -> str:
    return f"{_PREFIX}pull/{keeper.hex()}/{mailbox.hex()}"


def load_cursor(store: GroupStore, keeper: bytes, mailbox: bytes) -> int:
    """The last cursor of ``mailbox`` at the keeper database ``keeper`` taken in (0: none)."""
    data = store.get_meta(_cursor_key(keeper, mailbox))
    try:
        return expect_int(encoding.decode(data, max_size=64), "cursor") if data else 0
    except DecodeError:
        return 0


def save_cursor(store: GroupStore, keeper: bytes, mailbox: bytes, cursor: int) -> None:
    store.put_meta(_cursor_key(keeper, mailbox), encoding.encode(cursor))


def _forgotten_key(group: GroupId, url: str) -> str:
    return f"{_PREFIX}forgot/{group.hex()}/{url}"


def load_forgotten(store: GroupStore, group: GroupId, url: str) -> set[bytes]:
    """Entries whose purged bodies were deleted from the keeper ``url`` already."""
    data = store.get_meta(_forgotten_key(group, url))
    try:
        items = expect_list(encoding.decode(data, max_size=1 << 26), "forgotten") if data else []
        return {expect_bytes(i, "entry", 32) for i in items}
    except DecodeError:
        return set()


def save_forgotten(store: GroupStore, group: GroupId, url: str, ids: set[bytes]) -> None:
    value: list[encoding.Value] = list(sorted(ids))
    store.put_meta(_forgotten_key(group, url), encoding.encode(value))


def _hint_key(group: GroupId) -> str:
    return f"{_PREFIX}hint/{group.hex()}"


def save_hint(store: GroupStore, group: GroupId, urls: tuple[str, ...], secret: bytes) -> None:
    """What an invite's welcome told a joiner: the keepers and the control secret of the
    epoch its add was sealed in (enough to find that add at a keeper while nobody is online)."""
    store.put_meta(_hint_key(group), encoding.encode([list(urls), secret]))


def remember_welcome(store: GroupStore, welcome: Welcome) -> None:
    """Keep what a finished pairing's welcome says: the add that admitted this device (how it
    proves membership to a peer before it holds a key) and, for a group with keepers, the hint
    (:func:`save_hint`)."""
    store.put_meta(f"{WELCOME_PREFIX}{welcome.group.hex()}", welcome.add)
    if welcome.keepers:
        save_hint(store, welcome.group, welcome.keepers, welcome.mailbox)


def load_hint(store: GroupStore, group: GroupId) -> tuple[tuple[str, ...], bytes] | None:
    data = store.get_meta(_hint_key(group))
    if not data:
        return None
    try:
        urls, secret = expect_list(encoding.decode(data, max_size=4096), "hint", 2)
        found = tuple(encoding.expect_str(u, "url", 256) for u in expect_list(urls, "urls"))
        return found, expect_bytes(secret, "secret", 32)
    except DecodeError:
        return None


def encode_record(wire: bytes, body: bytes | None) -> bytes:
    """The record a keeper keeps for one entry."""
    return encoding.encode([wire, body])


def decode_record(data: bytes) -> tuple[bytes, bytes | None]:
    """``(wire, body)`` of a record (:class:`DecodeError` for anything else: a member may
    push garbage; what decodes still goes through every check of the receive path)."""
    wire, body = expect_list(encoding.decode(data, max_size=_MAX_RECORD), "record", 2)
    return (
        expect_bytes(wire, "wire", max_size=4096),
        None if body is None else expect_bytes(body, "body", max_size=_MAX_RECORD),
    )
