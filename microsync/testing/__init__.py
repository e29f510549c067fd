"""The public test kit: simulated devices on memory stores, a fake clock and a lossy,
partitionable network, with checks for convergence and for who can read what.

To test *app code* (functions written against ``Device`` and ``Group``), use
:class:`AppKit` (``microsync/testing/kit.py``, ``docs/testing.md``): real devices, invites
and sync sessions over faulty in-memory connections. What follows is the replica simulator.

>>> from microsync.testing import SimNetwork
>>> net = SimNetwork(seed=1)
>>> alice, bob = net.add_device("alice"), net.add_device("bob")
>>> group = net.create_group(alice, "Family")
>>> _ = alice.replica(group).add(bob.person_id, "Bob", [bob.grant()], now=net.clock.now)
>>> _ = net.deliver(alice, bob, group, order="newest_first", duplicate=0.5)
>>> _ = net.settle(group)
>>> net.check_convergence(group)

See ``microsync/testing/network.py`` for how delivery, partitions and settling work.
"""

from microsync.testing.app import (
    AppOp,
    AppView,
    Kind,
    app_state,
    app_view,
    check_app_convergence,
    connections_of,
    doc_op,
    replica_of,
    store_of,
    write_app_op,
)
from microsync.testing.checks import (
    Readability,
    check_convergence,
    check_resolution,
    entitlement_report,
    forget_key,
    member_devices,
    render_view,
)
from microsync.testing.clock import FakeClock
from microsync.testing.device import SimDevice, device_rng
from microsync.testing.hostile import Hostile
from microsync.testing.kit import AppKit
from microsync.testing.network import Delivery, KeyExchange, Order, SimNetwork

__all__ = [
    "AppKit",
    "AppOp",
    "AppView",
    "Delivery",
    "FakeClock",
    "Hostile",
    "KeyExchange",
    "Kind",
    "Order",
    "Readability",
    "SimDevice",
    "SimNetwork",
    "app_state",
    "app_view",
    "check_app_convergence",
    "check_convergence",
    "check_resolution",
    "connections_of",
    "device_rng",
    "doc_op",
    "entitlement_report",
    "forget_key",
    "member_devices",
    "render_view",
    "replica_of",
    "store_of",
    "write_app_op",
]
