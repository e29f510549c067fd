"""``group.doc(name)`` on the Group face (a method of :class:`~microsync.node.Group`, defined
here): a live handle on one of the group's shared documents.

The handle (:meth:`SharedDoc.live <microsync.app.docs.SharedDoc.live>`) resolves the folded
document through the group's app state at every read and write. The app state drops its
folded documents when it folds again (a member removed, a cut-off or an admin moved), and the
next use of any handle, however old, refolds and uses the state as it is now; a write goes
into the group's feed like every app entry. A change that fails to land closes the folded
document, so the next use rebuilds it from the feed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microsync.app.docs import SharedDoc
from microsync.app.ops import DocOp
from microsync.state import Op, encode_op

if TYPE_CHECKING:
    from microsync.node.group import Group

__all__ = ["MAX_DOC_NAME", "doc"]

MAX_DOC_NAME = 256
"""Longest document name, in UTF-8 bytes."""


def doc(group: Group, name: str) -> SharedDoc:
    """The group's shared document ``name`` (created on first write): registers, counters,
    sets, lists, texts and nested maps every member can read and change, merged without
    conflicts (``docs/state.md``). The handle stays live: keep it as long as you like."""
    if not isinstance(name, str) or not 0 < len(name.encode()) <= MAX_DOC_NAME:
        raise ValueError(f"a document name is 1 to {MAX_DOC_NAME} bytes of text")
    app_state = group._app_state

    async def publish(op: Op) -> None:
        try:
            await group._write(DocOp(doc=name, payload=encode_op(op)))
        except BaseException:
            app_state.close_doc(name)  # the change did not land: rebuild from the feed
            raise

    def resolve() -> SharedDoc:
        return app_state.doc(name, publish, group._now)

    resolve()  # fold it now: a bad state shows here, not at the first read
    return SharedDoc.live(name, resolve, publish, group._now)
