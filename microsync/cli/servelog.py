"""What ``microsync serve`` prints about a group: one line per change, in words.

A :class:`GroupLog` follows one group's :meth:`~microsync.node.Group.events`. It remembers
members' names (a removed member's event comes after their name left ``members()``) and each
post's reactions (an event says a reaction changed, not which), so it can say "Bob is no
longer a member" and "Bob reacted 👍". Post text is private, and a log file keeps what
delete-for-everyone purges everywhere else, so it is shown only when asked (``--show-text``).
:func:`follow_groups` starts a log for every group, including those created or joined while
``serve`` runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from microsync.app.api import Post
    from microsync.feed import GroupId
    from microsync.node import Device, Group
    from microsync.node.events import Event

__all__ = ["GroupLog", "follow_groups"]

Say = Callable[[str], None]

_PLAIN = {
    "post": "posted",
    "reply": "replied",
    "edit": "edited a post",
    "delete": "deleted a post for everyone",
    "member_joined": "joined",
    "member_left": "is no longer a member (left or removed)",
}


class GroupLog:
    """Turns one group's events into log lines."""

    def __init__(self, group: Group, *, show_text: bool) -> None:
        self._group = group
        self._show_text = show_text
        self._names = {m.person_id: m.name for m in group.members()}
        self._reactions = {p.id: _counts(p) for p in group.feed()}

    def line(self, event: Event) -> str | None:
        """The line for ``event`` (``None`` for what the log leaves out: presence)."""
        self._names.update((m.person_id, m.name) for m in self._group.members())
        if event.kind == "presence":
            return None
        if event.kind == "exit":  # about this device: "you were removed from Family by Alice"
            return f"[{self._group.name}] {self._exit(event)}"
        who = self._who(event)
        return f"[{self._group.name}] {who} {self._what(event)}"

    def _who(self, event: Event) -> str:
        if event.person is None:
            return "someone"
        return self._names.get(event.person, f"a former member ({event.person.hex()[:8]})")

    def _what(self, event: Event) -> str:
        kind, post = event.kind, event.post
        if kind in ("post", "reply") and post is not None and self._show_text and post.text:
            return f"{_PLAIN[kind]}: {post.text}"
        if kind in _PLAIN:
            return _PLAIN[kind]
        if kind == "reaction" and post is not None:
            return self._reaction(post)
        if kind == "expire":
            return "had a post disappear (its time ran out)"
        if kind == "location":
            where = event.detail
            return "stopped sharing a location" if where is None else "shared a location"
        if kind == "vault_added":
            return f"added {getattr(event.detail, 'name', 'a file')} to the vault"
        if kind == "vault_removed":
            return f"removed {getattr(event.detail, 'name', 'a file')} from the vault"
        if kind == "doc":
            return f"changed the shared document {event.detail!r}"
        if kind == "device_forked":
            return "has a device that signed two histories (a cloned key?): its posts are hidden"
        return f"did something this version cannot describe ({kind})"

    def _exit(self, event: Event) -> str:
        from microsync.node.exits import GroupExit

        gone = event.detail
        if isinstance(gone, GroupExit):
            return gone.sentence(self._group.name)
        return f"you are no longer a member of {self._group.name}"

    def _reaction(self, post: Post) -> str:
        before, now = self._reactions.get(post.id, {}), _counts(post)
        self._reactions[post.id] = now
        added = [e for e in now if now[e] > before.get(e, 0)]
        taken = [e for e in before if before[e] > now.get(e, 0)]
        if added:
            return f"reacted {' '.join(added)}"
        if taken:
            return f"withdrew a {' '.join(taken)} reaction"
        return "changed a reaction"


def _counts(post: Post) -> dict[str, int]:
    return {emoji: len(who) for emoji, who in post.reactions.items()}


async def _follow(group: Group, say: Say, show_text: bool) -> None:
    log = GroupLog(group, show_text=show_text)
    async for event in group.events():
        line = log.line(event)
        if line is not None:
            say(line)


async def follow_groups(device: Device, say: Say, *, show_text: bool) -> None:
    """Log every group of ``device``, and each group it gains while this runs (until
    cancelled: then every group's log stops too). One task per group, in one task group: an
    error in one reaches the caller."""
    following: set[GroupId] = set()
    async with asyncio.TaskGroup() as tasks:
        while True:
            for group in device.groups():
                if group.id not in following:
                    following.add(group.id)
                    tasks.create_task(_follow(group, say, show_text), name="serve log")
            await asyncio.sleep(0.5)
