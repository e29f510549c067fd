"""Cost of choosing whom a member's device serves recoveries for, in a group of N members.

    PYTHONPATH=. python bench/recovery_persons.py

``group.recovery.recoverable`` walks the members once; ``node.recovery.recoverable_persons``
then keeps every member of a group of at most ``SMALL_GROUP`` and only the admins of a larger
one, so a 1,000-member group costs a few relay rendezvous ids, not one per member.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

from microsync.crypto import X25519PublicKey
from microsync.group.ops import Role
from microsync.group.recovery import recoverable
from microsync.group.state import DeviceInfo, GroupState, MemberInfo
from microsync.identity import DeviceId, PersonId
from microsync.node.recovery import SMALL_GROUP


def replica(members: int, admins: int = 3) -> Any:
    """A stand-in replica (state and own device) of a group of ``members``."""
    state = GroupState()
    me = DeviceId(os.urandom(32))
    for i in range(members):
        person, device = PersonId(os.urandom(32)), me if i == 0 else DeviceId(os.urandom(32))
        info = DeviceInfo(device, person, "m", 1, X25519PublicKey(bytes(32)), b"")
        role = Role.ADMIN if i < admins else Role.MEMBER
        key = os.urandom(32)
        state.members[person] = MemberInfo(person, f"m{i}", role, {device: info}, 0, key)
    return SimpleNamespace(state=state, me=SimpleNamespace(device=me))


def main() -> None:
    for members in (20, 1000):
        group = replica(members)
        start = time.perf_counter()
        for _ in range(100):
            found = recoverable(group)
        took = (time.perf_counter() - start) / 100
        served = (
            found
            if members <= SMALL_GROUP
            else {p for p in found if group.state.members[p].role is Role.ADMIN}
        )
        print(f"{members} members: {took * 1e3:.3f} ms, serves {len(served)} of {len(found)}")


if __name__ == "__main__":
    main()
