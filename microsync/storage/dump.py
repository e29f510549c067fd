"""The canonical dump every adapter produces from its content (see ``Store.dump``)."""

from __future__ import annotations

from collections.abc import Iterable

from microsync import encoding
from microsync.encoding import Value

__all__ = ["Row", "canonical_dump"]

Row = tuple[Value, ...]

TABLES = ("meta", "certificates", "revocations", "entries", "feeds", "pending", "forks")


def canonical_dump(tables: dict[str, Iterable[Row]]) -> bytes:
    """Encode each table's rows, sorted, in a fixed table order.

    Rows: meta ``(key, value)``; certificates and revocations ``(record bytes,)``; entries
    ``(group, device, seq, wire, body)``; feeds ``(group, device, head_seq, head_id,
    forked_at)``; pending ``(group, device, seq, wire, body)``; forks ``(group, device, seq,
    first, second)``.
    """
    out: list[Value] = []
    for name in TABLES:
        rows = sorted((list(row) for row in tables.get(name, ())), key=encoding.encode)
        out.append([name, rows])  # type: ignore[list-item]
    return encoding.encode(out)
