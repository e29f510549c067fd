"""Group settings carried by the ``SETTINGS`` membership operation (kind 12). Sans-IO, pure.

An admin changes a setting by appending a ``SETTINGS`` op; it travels sealed under the epoch's
control key like every membership op, so only members read it, and it is resolved in the same
order on every replica (``group/resolver.py``), so replicas that saw the same ops agree.

The op's field ``"m"`` is a small map, one key per kind of change, each validated by its own
parser in :data:`_PARSERS` (unknown keys are a :class:`~microsync.errors.DecodeError`, so a
decoded change is always well-formed)::

    "ka": [url, ...]    keepers to add     (1..MAX_KEEPERS canonical ws:// or wss:// URLs)
    "kr": [url, ...]    keepers to remove  (same)
    "vo": uint          vault originals pushed to the keepers: files up to this many bytes
                        (0: none; thumbnails always travel, in their manifests)

Keys are short text; a new kind of setting adds a key, a field of :class:`SettingsChange`
and a branch of :func:`apply_change`. Applying a change (in the resolved order): removals,
then additions in order, each skipped when already there or when :data:`MAX_KEEPERS` are set.
Concurrent changes by two admins therefore converge, whatever order each replica saw them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from microsync.encoding import Value, expect_int, expect_list, expect_str
from microsync.errors import DecodeError

__all__ = [
    "DEFAULT_KEEPER_ORIGINALS",
    "MAX_KEEPERS",
    "MAX_KEEPER_URL",
    "SettingsChange",
    "apply_keepers",
    "keeper_url",
]

MAX_KEEPERS: Final = 4
"""At most this many keepers per group (each costs every member one connection)."""
MAX_KEEPER_URL: Final = 200
"""Longest keeper URL, in characters."""
_SCHEMES: Final = ("ws", "wss")
DEFAULT_KEEPER_ORIGINALS: Final = 16 * 1024 * 1024
"""Vault files up to this size are pushed to the keepers until an admin sets another limit."""
MAX_KEEPER_ORIGINALS: Final = 1 << 42
"""The largest limit an op may carry (4 TiB: beyond any one file; a vault file is 4 GiB)."""


def keeper_url(url: str) -> str:
    """``url`` as the canonical keeper URL every replica compares (``ws://host:port`` or
    ``wss://host[:port][/path]``, lower-case scheme and host, no trailing slash).

    The one check for hostile values, used by the API, the CLI, invite welcomes and the op
    decoder alike: :class:`DecodeError` for anything else."""
    if type(url) is not str or not 0 < len(url) <= MAX_KEEPER_URL:
        raise DecodeError(f"a keeper URL is 1 to {MAX_KEEPER_URL} characters")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise DecodeError("a keeper URL is printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DecodeError("not a keeper URL") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise DecodeError("a keeper URL starts with ws:// or wss://")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise DecodeError("a keeper URL names a host (and no user or password)")
    if parts.query or parts.fragment:
        raise DecodeError("a keeper URL has no query or fragment")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def _urls(value: Value, name: str) -> tuple[str, ...]:
    items = expect_list(value, name)
    if not 0 < len(items) <= MAX_KEEPERS:
        raise DecodeError(f"{name}: 1 to {MAX_KEEPERS} keeper URLs")
    urls = tuple(expect_str(item, name, MAX_KEEPER_URL) for item in items)
    if any(keeper_url(u) != u for u in urls):
        raise DecodeError(f"{name}: keeper URLs must be canonical")
    if len(set(urls)) != len(urls):
        raise DecodeError(f"{name}: a keeper URL twice")
    return urls


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsChange:
    """What one ``SETTINGS`` op changes (an empty change is not an op)."""

    add_keepers: tuple[str, ...] = ()
    remove_keepers: tuple[str, ...] = ()
    keeper_originals: int | None = None
    """Vault files up to this many bytes go to the keepers whole (``None``: unchanged)."""

    def to_value(self) -> Value:
        value: dict[str | int, Value] = {}
        if self.keeper_originals is not None:
            value["vo"] = self.keeper_originals
        if self.add_keepers:
            value["ka"] = list(self.add_keepers)
        if self.remove_keepers:
            value["kr"] = list(self.remove_keepers)
        return value

    @classmethod
    def from_value(cls, value: Value) -> SettingsChange:
        if type(value) is not dict or not value:
            raise DecodeError("settings: expected a non-empty map")
        fields: dict[str, object] = {}
        for key, item in value.items():
            parse = _PARSERS.get(key) if type(key) is str else None
            if parse is None:
                raise DecodeError("settings: unknown key")
            field, parsed = parse(item)
            fields[field] = parsed
        return cls(**fields)  # type: ignore[arg-type]


_PARSERS: Final[dict[str, Callable[[Value], tuple[str, object]]]] = {
    "ka": lambda v: ("add_keepers", _urls(v, "keepers to add")),
    "kr": lambda v: ("remove_keepers", _urls(v, "keepers to remove")),
    "vo": lambda v: ("keeper_originals", expect_int(v, "vault originals", 0, MAX_KEEPER_ORIGINALS)),
}


def apply_keepers(keepers: tuple[str, ...], change: SettingsChange) -> tuple[str, ...]:
    """The keeper list after ``change``: removals, then additions in order (an address
    already there, or one past :data:`MAX_KEEPERS`, is skipped)."""
    kept = [k for k in keepers if k not in change.remove_keepers]
    for url in change.add_keepers:
        if url not in kept and len(kept) < MAX_KEEPERS:
            kept.append(url)
    return tuple(kept)
