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
_MAX_WIRE: Final = 4096


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
    push garbage; what decodes still goes through every check of the receive path).

    A record in its one canonical form is read directly (two byte-string heads: no CBOR
    decode and re-encode per pulled item); anything else goes to the generic strict decoder,
    which alone decides every error, so both accept exactly the same bytes and give the same
    answer (``tests/test_keeper_pull.py``)."""
    found = _record_fast(data)
    return found if found is not None else _record_strict(data)


def _record_strict(data: bytes) -> tuple[bytes, bytes | None]:
    wire, body = expect_list(encoding.decode(data, max_size=_MAX_RECORD), "record", 2)
    return (
        expect_bytes(wire, "wire", max_size=_MAX_WIRE),
        None if body is None else expect_bytes(body, "body", max_size=_MAX_RECORD),
    )


def _record_fast(data: bytes) -> tuple[bytes, bytes | None] | None:
    """``[wire, body or null]`` in canonical CBOR within the limits, else ``None``."""
    if type(data) is not bytes or not 3 <= len(data) <= _MAX_RECORD or data[0] != 0x82:
        return None
    wire = _bstr(data, 1)
    if wire is None or wire[1] - wire[0] > _MAX_WIRE:
        return None
    start, end = wire
    if end + 1 == len(data) and data[end] == 0xF6:  # null: a purged body
        return data[start:end], None
    body = _bstr(data, end)
    if body is None or body[1] != len(data):
        return None
    return data[start:end], data[body[0] : body[1]]


def _bstr(data: bytes, pos: int) -> tuple[int, int] | None:
    """Where the content of the canonical byte string whose head is at ``pos`` lies."""
    if pos >= len(data):
        return None
    head = data[pos]
    if 0x40 <= head < 0x58:
        start, length = pos + 1, head - 0x40
    elif head in _BSTR_SIZES:
        start = pos + 1 + _BSTR_SIZES[head]
        length = int.from_bytes(data[pos + 1 : start], "big")
        if start > len(data) or length < _BSTR_SHORTEST[head]:
            return None  # cut short, or a longer head than the length needs: not canonical
    else:
        return None
    end = start + length
    return (start, end) if end <= len(data) else None


# a byte string's head -> how many length bytes follow it, and the least length that needs it
_BSTR_SIZES: Final = {0x58: 1, 0x59: 2, 0x5A: 4}
_BSTR_SHORTEST: Final = {0x58: 24, 0x59: 256, 0x5A: 65536}
