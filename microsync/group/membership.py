"""Membership as a deterministic function of the SET of operations. Sans-IO, pure.

The rules are written out, with the concurrent cases, in ``docs/membership.md``. In short:

1. Operations form a DAG through ``deps`` (an operation names the membership heads its author
   had seen). They are ordered topologically, ties broken by entry id: a total order that
   depends only on the set.
2. An operation is **causally valid** when its author was allowed to make it in the state
   resolved from exactly its causal past (its ancestors).
3. **Least privilege wins under concurrency.** A *reduction* (remove, leave, demote, revoke an
   invite or a device) that is causally valid and not cut off always takes effect. Any other
   operation is void when such a reduction concurrent with it (neither is an ancestor of the
   other) takes the authority it needed: its author removed / left / demoted (for admin
   operations), its target removed (an add racing a remove), its invite revoked, or its target
   demoted (a promote racing a demote).
4. **Cut-offs.** A removal, leave, revocation or demotion names, in the op itself, the feed
   positions of the devices it ends (:func:`cuts_of`); every operation of those devices past
   them is void whatever deps or timestamp it declares, and :meth:`GroupState.counts` tells
   every layer above which entries count at all. Lines in force are decided outwards from the
   ops nothing cuts (:meth:`_Resolver.acting_cutters`).
5. **Ranks.** An admin may remove or demote only members and admins of a higher rank (the
   founder is rank 0; whoever rank ``r`` makes admin gets ``r + 1``), so no two admins can take
   each other's rights and a removed admin's backdated ops can reach nobody who removed it.
6. The state is the fold of the effective operations in the total order. An invite admits
   once: the first consuming add in the order wins, later ones are void.
"""

from __future__ import annotations

from microsync.group.resolver import _bits as _bits
from microsync.group.resolver import _expose as _expose
from microsync.group.resolver import _Fold as _Fold
from microsync.group.resolver import _force as _force
from microsync.group.resolver import _Resolver as _Resolver
from microsync.group.resolver import note_seen as note_seen
from microsync.group.resolver import resolve as resolve
from microsync.group.resolver import topological_order as topological_order
from microsync.group.rules import _EPOCH_KINDS as _EPOCH_KINDS
from microsync.group.rules import _EXITS as _EXITS
from microsync.group.rules import _HISTORY_KINDS as _HISTORY_KINDS
from microsync.group.rules import _MEMBER_REDUCTIONS as _MEMBER_REDUCTIONS
from microsync.group.rules import ADMIN_KINDS as ADMIN_KINDS
from microsync.group.rules import Cut as Cut
from microsync.group.rules import Verdict as Verdict
from microsync.group.rules import _after as _after
from microsync.group.rules import _apply as _apply
from microsync.group.rules import _authorized_create as _authorized_create
from microsync.group.rules import _covers as _covers
from microsync.group.rules import _epoch_recipients as _epoch_recipients
from microsync.group.rules import _exit as _exit
from microsync.group.rules import _is_reduction as _is_reduction
from microsync.group.rules import _kind_rule as _kind_rule
from microsync.group.rules import _outranks as _outranks
from microsync.group.rules import _rank_after as _rank_after
from microsync.group.rules import _voids as _voids
from microsync.group.rules import authorize as authorize
from microsync.group.rules import cuts_of as cuts_of
from microsync.group.rules import joiners as joiners
from microsync.group.rules import note_appended as note_appended
from microsync.group.rules import opens_of as opens_of
from microsync.group.state import INVITE_CLOCK_TOLERANCE_MS as INVITE_CLOCK_TOLERANCE_MS

# The names every module and test imported from here, now kept in three modules: the state
# (:mod:`microsync.group.state`), the rules (:mod:`microsync.group.rules`) and the resolution
# (:mod:`microsync.group.resolver`).
from microsync.group.state import MAX_GROUP_DEVICES as MAX_GROUP_DEVICES
from microsync.group.state import DeviceInfo as DeviceInfo
from microsync.group.state import EpochInfo as EpochInfo
from microsync.group.state import GroupState as GroupState
from microsync.group.state import InviteInfo as InviteInfo
from microsync.group.state import MemberInfo as MemberInfo
from microsync.group.state import OpRecord as OpRecord
from microsync.group.state import Resolution as Resolution
from microsync.group.state import Window as Window
from microsync.group.state import group_id_for as group_id_for
from microsync.group.state import parse_grant as parse_grant

__all__ = [
    "INVITE_CLOCK_TOLERANCE_MS",
    "MAX_GROUP_DEVICES",
    "DeviceInfo",
    "EpochInfo",
    "GroupState",
    "InviteInfo",
    "MemberInfo",
    "OpRecord",
    "Resolution",
    "group_id_for",
    "parse_grant",
    "resolve",
]
