"""The keeper client's page bookkeeping and its checks of the keeper's answers
(:mod:`microsync.net.keeper_client`): how many items a pull still asks for, whether an answer
is the kind asked for, in the range asked for, and whether a keeper keeps a pull asking for
ever."""

from __future__ import annotations

from typing import Final, TypeVar

from microsync.errors import RemoteProtocolError
from microsync.protocol.keeper import MAX_PAGE, KeeperMessage, KeeperRefused, Refused

__all__ = ["Pages", "Stalls", "advance", "check_order", "expect", "refusal"]

T = TypeVar("T")

STALLS: Final = 8
"""Answers in a row that brought no item and yet left the pull asking again, past which the
keeper is refusing to make progress: an honest one does so at most twice (items deleted
between its read of a page and of their payloads; a range emptied by deletions)."""


class Pages:
    """How many items a pull still asks for (``limit``: ``None`` for no end)."""

    def __init__(self, limit: int | None) -> None:
        self._left = limit

    def left(self) -> bool:
        return self._left is None or self._left > 0

    def take(self) -> int:
        page = MAX_PAGE if self._left is None else min(MAX_PAGE, self._left)
        if self._left is not None:
            self._left -= page
        return page


class Stalls:
    """Counts a pull's answers in a row that brought nothing and did not end it: a keeper
    answering "more" with no items would otherwise keep the pull asking for ever."""

    def __init__(self) -> None:
        self._empty = 0

    def answered(self, items: int) -> None:
        """One answer ended with ``items`` items; ``RemoteProtocolError`` past :data:`STALLS`."""
        self._empty = 0 if items else self._empty + 1
        if self._empty > STALLS:
            raise RemoteProtocolError("the keeper keeps answering that there is more, with nothing")


def refusal(answer: KeeperMessage) -> KeeperMessage:
    if isinstance(answer, Refused):
        raise KeeperRefused(answer.code)
    return answer


def expect(answer: KeeperMessage, kind: type[T]) -> T:
    refusal(answer)
    if not isinstance(answer, kind):
        raise RemoteProtocolError(f"expected {kind.__name__}, got {type(answer).__name__}")
    return answer


def check_order(cursor: int, after: int, before: int) -> None:
    """A keeper must serve what was asked, in order; a stale or reordered view is caught
    here (the signed heads catch one that leaves items out)."""
    if cursor <= after or (before and cursor >= before):
        raise RemoteProtocolError("the keeper sent an item outside the range asked for")


def advance(cursor: int, after: int, before: int, newest_first: bool) -> tuple[int, int]:
    return (after, cursor) if newest_first else (cursor, before)
