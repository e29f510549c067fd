"""The machines of a sync session (composed by :mod:`microsync.protocol.session`).

``ports`` (what the session needs from the device), ``options`` (tunables, counters),
``table`` (one transition row), ``link`` (what the machines share), ``credit`` (flow credit
as values), ``matching`` (HELLO / MATCH), ``reconcile`` and ``stream`` (one group's digest,
frontiers, stream and DONE), ``keyfetch``, ``chunks``, ``keepalive`` (timers and the ephemeral
rate). Import names from :mod:`microsync.protocol.session`; these modules are its parts.
"""
