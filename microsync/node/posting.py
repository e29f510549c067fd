"""Writing posts and replies on the Group face: ``group.post(...)`` and ``group.reply(...)``
(methods of :class:`~microsync.node.Group`, defined here).

A reply is a post with ``reply_to`` set (one :class:`~microsync.app.ops.PostOp` either way),
so it carries exactly what a post carries: text, vault attachments, typed ``parts``
(:mod:`microsync.app.parts`: the same encoder, decoder and bounds) and a ``ttl``; every
device shows its parts in ``thread()``, ``feed()``, ``post_by_id()``, ``events()`` and
``whats_new()`` as it shows a post's. The op checks its parts as it encodes, before anything
is written: a bad part is a :class:`~microsync.errors.DecodeError` and nothing is appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from microsync.app.events import Post
from microsync.app.ops import PostOp
from microsync.app.parts import Part
from microsync.blobs import BlobRef

if TYPE_CHECKING:
    from microsync.node.group import Group

__all__ = ["post", "reply"]


def _op(
    text: str,
    attachments: Sequence[bytes | BlobRef],
    ttl: float | None,
    parts: Sequence[Part],
    reply_to: bytes | None,
) -> PostOp:
    ttl_ms = None if ttl is None else int(ttl * 1000)
    refs = tuple(bytes(a) for a in attachments)
    return PostOp(text=text, reply_to=reply_to, attachments=refs, ttl_ms=ttl_ms, parts=tuple(parts))


async def post(
    group: Group,
    text: str,
    attachments: Sequence[bytes | BlobRef] = (),
    *,
    ttl: float | None = None,
    parts: Sequence[Part] = (),
) -> Post:
    """Post ``text`` and typed ``parts`` (:mod:`microsync.app.parts`); ``attachments`` may be
    vault :class:`~microsync.blobs.BlobRef`s (a post carries ``bytes(ref)``, the blob id:
    receivers resolve it with ``vault.get``). With ``ttl`` (seconds) the post disappears:
    every device purges it from its disk once that time has passed."""
    entry = await group._write(_op(text, attachments, ttl, parts, None))
    return group._app_state.post(entry.id, group._now())


async def reply(
    group: Group,
    post_id: bytes,
    text: str,
    attachments: Sequence[bytes | BlobRef] = (),
    *,
    ttl: float | None = None,
    parts: Sequence[Part] = (),
) -> Post:
    """Reply to a post (or to a reply) with ``text``, ``attachments`` and typed ``parts``,
    exactly as :meth:`post` takes them (``KeyError`` if this device has no such post)."""
    group._app_state.require(post_id, group._now())
    entry = await group._write(_op(text, attachments, ttl, parts, bytes(post_id)))
    return group._app_state.post(entry.id, group._now())
