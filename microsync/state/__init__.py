"""Shared state: operation-based CRDTs folded in causal order. Sans-IO.

:class:`Document` is the entry point: local edits return an operation to publish
(:func:`encode_op` makes its bytes), :meth:`Document.apply` folds in a remote one
(:func:`decode_op` reads it) and returns the :data:`Change` events. ``docs/state.md`` describes
every CRDT, the op ids, the causal-delivery contract, the clock rule and the snapshots.
"""

from __future__ import annotations

from microsync.state.clock import HLC, MAX_DRIFT_MS, Timestamp, is_far_future
from microsync.state.codec import OpTooLarge, UnknownOpVersion, decode_op, encode_op
from microsync.state.document import (
    CounterHandle,
    Document,
    ListHandle,
    MapHandle,
    SetHandle,
    TextHandle,
)
from microsync.state.ids import MissingDependency, OpId
from microsync.state.ops import (
    Change,
    CounterAdd,
    CounterChanged,
    IdRange,
    ListDelete,
    ListDeleted,
    ListInsert,
    ListInserted,
    ListMove,
    MapCleared,
    MapDelete,
    Op,
    RegisterChanged,
    RegisterDelete,
    RegisterSet,
    SetAdd,
    SetChanged,
    SetRemove,
    TextDelete,
    TextDeleted,
    TextInsert,
    TextInserted,
    references,
)

__all__ = [
    "HLC",
    "MAX_DRIFT_MS",
    "Change",
    "CounterAdd",
    "CounterChanged",
    "CounterHandle",
    "Document",
    "IdRange",
    "ListDelete",
    "ListDeleted",
    "ListHandle",
    "ListInsert",
    "ListInserted",
    "ListMove",
    "MapCleared",
    "MapDelete",
    "MapHandle",
    "MissingDependency",
    "Op",
    "OpId",
    "OpTooLarge",
    "RegisterChanged",
    "RegisterDelete",
    "RegisterSet",
    "SetAdd",
    "SetChanged",
    "SetHandle",
    "SetRemove",
    "TextDelete",
    "TextDeleted",
    "TextHandle",
    "TextInsert",
    "TextInserted",
    "Timestamp",
    "UnknownOpVersion",
    "decode_op",
    "encode_op",
    "is_far_future",
    "references",
]
