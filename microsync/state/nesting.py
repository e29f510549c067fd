"""Nested documents: deleting a field of a map as its deleter saw it, and the nested shape of
:meth:`Document.to_value`.

The rule for a delete concurrent with an edit below it (the same on every replica, whatever the
order): a :class:`~microsync.state.ops.MapDelete` of key ``k`` removes, at ``k`` and below it,
exactly what its author had seen (``seen``, the author's version vector: an element, tag or
write ``(counter, actor)`` is seen when ``counter <= seen[actor]``). What was written there
concurrently survives, and the record shows again holding only that. Per kind:

* texts and lists: the seen characters and elements are deleted (as a delete of them would);
* sets: the seen add tags are withdrawn (as a remove would);
* counters: the seen adds are dropped (:class:`~microsync.state.counter.FieldCounter`), the
  concurrent ones still count: the field shows again holding their sum;
* registers: the register is hidden while its winning write (by ``(ts, id)``, the usual
  last-writer-wins) is seen by a delete of it or of a key above it. A concurrent write that
  wins shows; one that loses to a write the deleter saw stays lost, as it would without the
  delete.

Under causal delivery every seen operation is applied before the delete (an operation naming
an unapplied counter raises :class:`MissingDependency`) and every later one is not seen, so
the eager removals and the lazy register rule give the same state in any order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from microsync.encoding import Value
from microsync.state.handles import text_value
from microsync.state.ids import MissingDependency, OpId
from microsync.state.ops import (
    Change,
    CounterChanged,
    MapCleared,
    MapDelete,
    SetChanged,
    TextDeleted,
)
from microsync.state.paths import is_path, split
from microsync.state.runs import MoveSlot

if TYPE_CHECKING:
    from microsync.state.document import Document
    from microsync.state.listcrdt import ListCRDT

__all__ = ["clear", "map_value", "prefixes", "register_visible", "render"]

Seen = dict[bytes, int]


def prefixes(key: str) -> list[str]:
    """``key`` and every stored key above it, outermost first."""
    if not is_path(key):
        return [key]
    parts = key[1:].split("\x00")
    return [parts[0], *("\x00" + "\x00".join(parts[:i]) for i in range(2, len(parts) + 1))]


def _covered(seen: Seen, op_id: OpId) -> bool:
    return op_id.counter <= seen.get(op_id.actor, 0)


def register_visible(doc: Document, key: str, op_id: OpId) -> bool:
    """Whether the register ``key`` whose winning write is ``op_id`` shows."""
    if not doc.cleared:
        return True
    return not any(_covered(doc.cleared.get(p, {}), op_id) for p in prefixes(key))


def clear(doc: Document, op: MapDelete) -> list[Change]:
    """Fold a :class:`MapDelete` (the module docstring's rule); return what it changed."""
    for actor, counter in op.seen:
        if doc.versions.get(actor, 0) < counter:
            raise MissingDependency(OpId(counter, actor))
    seen: Seen = dict(op.seen)
    mark = doc.cleared.setdefault(op.key, {})
    for actor, counter in op.seen:
        mark[actor] = max(mark.get(actor, 0), counter)
    changes: list[Change] = [MapCleared(key=op.key)]
    for key in [k for k in doc.texts if _under(k, op.key)]:
        text = doc.texts[key]
        spans = [
            (r.counter, r.actor, min(r.length, seen.get(r.actor, 0) - r.counter + 1))
            for r in text.runs()
            if r.visible and r.counter <= seen.get(r.actor, 0)
        ]
        for counter, actor, n in spans:
            for index, length in text.hide(counter, actor, n):
                changes.append(TextDeleted(key=key, index=index, length=length))
    for key in [k for k in doc.lists if _under(k, op.key)]:
        lst = doc.lists[key]
        for element in [e for e, _ in _elements(lst) if _covered(seen, e)]:
            lst.delete(element)
    for key in [k for k in doc.sets if _under(k, op.key)]:
        s = doc.sets[key]
        for value, tags in list(s.elements.values()):
            covered = tuple(t for t in tags if _covered(seen, t))
            if covered and s.remove(value, covered):
                changes.append(SetChanged(key=key, element=value, present=False))
    for key in [k for k in doc.field_counters if _under(k, op.key)]:
        field = doc.field_counters[key]
        if field.clear(seen):
            changes.append(CounterChanged(key=key, value=field.value))
    return changes


def _under(key: str, prefix: str) -> bool:
    return key == prefix or prefix in prefixes(key)


def _elements(lst: ListCRDT) -> list[tuple[OpId, Value]]:
    out: list[tuple[OpId, Value]] = []
    for run in lst.seq.runs():
        if not run.visible:
            continue
        if isinstance(run, MoveSlot):
            out.append((run.elem, run.content[0]))
        else:
            out.extend((OpId(run.counter + i, run.actor), v) for i, v in enumerate(run.content))
    return out


def _base(key: str) -> str:
    """The stored prefix of everything below ``key``."""
    return key if is_path(key) else "\x00" + key


def _parent(key: str) -> str:
    parent = key[: key.rindex("\x00")]
    return parent[1:] if parent.count("\x00") == 1 else parent


def _tree(doc: Document, within: str | None) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The nested keys (all, or those below ``within``): each key's children, and the
    visible register values. Stored keys were checked when they entered the document."""
    below = None if within is None else _base(within) + "\x00"
    leaves: dict[str, Any] = {}
    for key, reg in doc.registers.entries.items():
        inside = is_path(key) and (below is None or key.startswith(below))
        if inside and not reg.deleted and register_visible(doc, key, reg.id):
            leaves[key] = reg.value
    for kind in (doc.sets, doc.lists, doc.texts, doc.field_counters):
        for key in kind:
            if is_path(key) and (below is None or key.startswith(below)):
                leaves.setdefault(key, None)
    children: dict[str, set[str]] = {}
    for key in leaves:
        while is_path(key):
            parent = _parent(key)
            known = parent in children
            children.setdefault(parent, set()).add(key)
            if known:
                break
            key = parent
    return {k: sorted(v) for k, v in children.items()}, leaves


def render(doc: Document, flat: dict[str, Value]) -> dict[str, Value]:
    """``flat`` (the top-level values, as before nesting) with every nested map folded in: a
    map shows as a dict of its fields, a list element holding a dict shows merged with the map
    below it; empty fields (a cleared text, set or list) and empty maps are left out."""
    children, leaves = _tree(doc, None)
    if not children:
        return flat
    out = dict(flat)
    for top in sorted(k for k in children if not is_path(k)):
        value = _value(doc, top, children, leaves, out.get(top))
        if value is not None:
            out[top] = value
    return out


def map_value(doc: Document, key: str) -> dict[str, Value]:
    """The map at ``key`` as :func:`render` shows it (only what lies below ``key`` is read):
    a list element's map merged over the dict the element holds, as in the list's value."""
    children, leaves = _tree(doc, key)
    value = _value(doc, key, children, leaves, _own(doc, key)) if key not in doc.lists else None
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _own(doc: Document, key: str) -> Value:
    """What ``key`` holds itself: its register, or for a list element's map the element."""
    found = split(key) if is_path(key) else None
    if found is None:
        return doc.get(key)
    parent, element = found
    if not isinstance(element, OpId) or parent not in doc.lists:
        return doc.get(key)
    held = dict(_elements(doc.lists[parent])).get(element)
    return held if held is not None else doc.get(key)


def _value(
    doc: Document, key: str, children: dict[str, list[str]], leaves: dict[str, Any], base: Any
) -> Any:
    if key in doc.lists:
        items: list[Value] = []
        for element, value in _elements(doc.lists[key]):
            if isinstance(value, dict):
                merged: dict[str | int, Value] = dict(value)
                merged.update(_map(doc, _element_key(key, element), children, leaves))
                value = merged
            items.append(value)
        return items or None
    if key in doc.texts:
        return text_value(doc.texts[key]) or None
    if key in doc.sets:
        return doc.sets[key].values() or None
    if key in doc.field_counters:
        counter = doc.field_counters[key]
        return counter.value if counter else None
    below = _map(doc, key, children, leaves)
    if below:
        return {**(base if isinstance(base, dict) else {}), **below}
    return base


def _element_key(key: str, element: OpId) -> str:
    return f"{_base(key)}\x00\x01{element.counter}.{element.actor.hex()}"


def _map(
    doc: Document, key: str, children: dict[str, list[str]], leaves: dict[str, Any]
) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for child in children.get(key, ()):
        name = child[child.rindex("\x00") + 1 :]
        if name.startswith("\x01"):
            continue  # a list element's map: shown inside the list
        value = _value(doc, child, children, leaves, leaves.get(child))
        if value is not None and not (isinstance(value, dict) and not value):
            out[name] = value
    return out
