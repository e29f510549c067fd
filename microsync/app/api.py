"""The app's public records under their historical module: :class:`Post`,
:class:`DeviceForked`, ``Event`` (here, the app layer's events; every kind, the node's too, is
:data:`microsync.Event`) and :func:`when`.

The app state itself is :class:`~microsync.app.state.AppState` (it replaced the ``AppMixin``
that :class:`microsync.Group` used to inherit): ``Group`` owns one and delegates to it.
"""

from __future__ import annotations

from microsync.app.events import AppEvent as Event
from microsync.app.events import DeviceForked, Post
from microsync.app.views import when

__all__ = ["DeviceForked", "Event", "Post", "when"]
