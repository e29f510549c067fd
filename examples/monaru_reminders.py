"""Monaru: reminders to get in touch with someone you have not talked to in a while, and
upcoming birthdays, computed from shared state only (no server, no contact database).

    python examples/monaru_reminders.py [DIR]

Five friends share one group. Each sets their own birthday in the group's shared document
(`group.doc("birthdays")`, keyed by person id, so an entry's author is the person it is about);
"talked" means a post or reply between you and them. The devices are real microsync Devices
run by the test kit (microsync.testing.AppKit): real profiles, real sync sessions over
in-memory connections, and a fake clock, so "40 days later" takes no time.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import microsync
from microsync.testing import AppKit

DAY_MS = 24 * 3600 * 1000


def last_talked(group: microsync.Group, me: bytes) -> dict[bytes, datetime]:
    """When I last talked with each member: their post or reply in a thread I wrote in, or
    my reply in theirs (the app's own definition, from the shared timeline)."""
    posts = {p.id: p for p in group.feed()}
    talked: dict[bytes, datetime] = {}
    for post in posts.values():
        parent = posts.get(post.reply_to) if post.reply_to else None
        if parent is None:
            continue
        pair = {post.author, parent.author}
        if me in pair and len(pair) == 2:
            (other,) = pair - {me}
            talked[other] = max(talked.get(other, post.created_at), post.created_at)
    return talked


def not_talked_in(group: microsync.Group, me: bytes, days: int, now: datetime) -> list[str]:
    """The members I have not talked with in ``days`` days (or ever), by name."""
    talked = last_talked(group, me)
    due = []
    for member in group.members():
        if member.person_id == me:
            continue
        when = talked.get(member.person_id)
        if when is None or now - when > timedelta(days=days):
            due.append(member.name)
    return sorted(due)


def upcoming_birthdays(group: microsync.Group, today: date, days: int) -> list[tuple[int, str]]:
    """(days until, name) for the birthdays in the next ``days`` days, soonest first."""
    names = {m.person_id.hex(): m.name for m in group.members()}
    found = []
    for key, value in group.doc("birthdays").to_value().items():
        if key not in names or not isinstance(value, str):
            continue  # a stale key, or not a "MM-DD" string: the app ignores it
        month, day = (int(x) for x in value.split("-"))
        next_one = date(today.year, month, day)
        if next_one < today:
            next_one = date(today.year + 1, month, day)
        if (next_one - today).days <= days:
            found.append(((next_one - today).days, names[key]))
    return sorted(found)


async def main(root: Path) -> None:
    async with AppKit(root, seed=7) as kit:
        me, ana, ben, cy, dee = await kit.group_of(
            5, "Old friends", names=["Me", "Ana", "Ben", "Cy", "Dee"]
        )
        now = datetime.fromtimestamp(kit.clock.now / 1000, UTC).date()
        soon = now + timedelta(days=5)
        later = now + timedelta(days=60)
        for group, birthday in ((ana, soon), (ben, later), (cy, now + timedelta(days=12))):
            await group.doc("birthdays").set(
                group.device.person_id.hex(), birthday.strftime("%m-%d")
            )

        # everyone talks today
        hello = await me.post("Pizza on Friday?")
        for friend in (ana, ben, cy, dee):
            await kit.settle()
            await friend.reply(hello.id, f"I'm in ({friend.device.name})")
        await kit.settle()

        kit.clock.advance(40 * DAY_MS)  # forty days pass; only Ana and I keep talking
        news = await ana.post("Found the photos from Friday")
        await kit.settle()
        await me.reply(news.id, "Send them!")
        await kit.settle()

        me_id = me.device.person_id
        today = datetime.fromtimestamp(kit.clock.now / 1000, UTC)
        due = not_talked_in(me, me_id, 30, today)
        print("not talked to in 30 days:", ", ".join(due))
        assert due == ["Ben", "Cy", "Dee"]

        upcoming = upcoming_birthdays(me, today.date(), 30)
        for days, name in upcoming:
            print(f"{name}'s birthday in {days} days")
        # forty days on: Ana's (5 days after day one) has passed, Ben's (60) is 20 days away
        assert [name for _, name in upcoming] == ["Ben"]

        # every device computes the same reminders from its own replica
        assert not_talked_in(ana, ana.device.person_id, 30, today) == ["Ben", "Cy", "Dee"]
        assert upcoming_birthdays(dee, today.date(), 30) == upcoming


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(prefix="microsync-example-") as tmp:
            asyncio.run(main(Path(tmp)))
