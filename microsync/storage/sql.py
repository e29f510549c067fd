"""Every SQL statement :class:`~microsync.storage.sqlite.SqliteStore` runs, in one place.

``?1``, ``?2``: positional parameters used twice. The statements only store and find; no
business rule lives in SQL (STYLE 7).
"""

from __future__ import annotations

PUT_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
PUT_CERTIFICATE = """INSERT INTO certificates VALUES (?, ?)
    ON CONFLICT (device) DO UPDATE SET record = excluded.record"""
PUT_REVOCATION = """INSERT INTO revocations VALUES (?, ?)
    ON CONFLICT (device) DO UPDATE SET record = excluded.record"""
AUTHOR_STATUS = """SELECT EXISTS (SELECT 1 FROM revocations WHERE device = ?1),
    EXISTS (SELECT 1 FROM certificates WHERE device = ?1)"""
PENDING_COUNT = "SELECT count(*) FROM pending AS p WHERE p.group_id = ?1 AND p.device = ?2"
FEED_STATUS = f"""SELECT f.head_seq, f.head_id, f.forked_at, ({PENDING_COUNT})
    FROM (SELECT 1) LEFT JOIN feeds AS f ON f.group_id = ?1 AND f.device = ?2"""
FEEDS = """SELECT f.device, f.head_seq, f.head_id, f.forked_at,
    (SELECT count(*) FROM pending AS p WHERE p.group_id = f.group_id AND p.device = f.device)
    FROM feeds AS f WHERE f.group_id = ?"""
ENTRY_AT = "SELECT wire, body FROM entries WHERE group_id = ? AND device = ? AND seq = ?"
ENTRIES_PAGE = """SELECT seq, wire, body FROM entries
    WHERE group_id = ? AND device = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"""
INSERT_ENTRY = """INSERT INTO entries (group_id, device, seq, id, wire, body)
    VALUES (?, ?, ?, ?, ?, ?)"""
DELETE_BODY = "UPDATE entries SET body = NULL WHERE id = ?"
SET_HEAD = """INSERT INTO feeds (group_id, device, head_seq, head_id) VALUES (?, ?, ?, ?)
    ON CONFLICT (group_id, device) DO UPDATE
    SET head_seq = excluded.head_seq, head_id = excluded.head_id"""
PENDING_AT = """SELECT wire, body FROM pending WHERE group_id = ? AND device = ? AND seq = ?
    ORDER BY rowid"""
INSERT_PENDING = """INSERT INTO pending (group_id, device, seq, id, wire, body)
    VALUES (?, ?, ?, ?, ?, ?)"""
DELETE_PENDING = "DELETE FROM pending WHERE group_id = ? AND device = ? AND seq BETWEEN ? AND ?"
INSERT_FORK = "INSERT INTO forks (group_id, device, seq, first, second) VALUES (?, ?, ?, ?, ?)"
MARK_FORKED = """INSERT INTO feeds (group_id, device, head_seq, forked_at) VALUES (?, ?, 0, ?)
    ON CONFLICT (group_id, device) DO UPDATE
    SET forked_at = min(coalesce(forked_at, excluded.forked_at), excluded.forked_at)"""
FORKS = """SELECT group_id, device, seq, first, second FROM forks
    WHERE group_id = ? AND device = ? ORDER BY rowid"""
DUMP = {  # the rows of each table in canonical_dump's row shapes
    "meta": "SELECT key, value FROM meta",
    "certificates": "SELECT record FROM certificates",
    "revocations": "SELECT record FROM revocations",
    "entries": "SELECT group_id, device, seq, wire, body FROM entries",
    "feeds": "SELECT group_id, device, head_seq, head_id, forked_at FROM feeds",
    "pending": "SELECT group_id, device, seq, wire, body FROM pending",
    "forks": "SELECT group_id, device, seq, first, second FROM forks",
}
