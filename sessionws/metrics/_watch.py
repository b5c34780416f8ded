"""What both exporters share: the registry they read and the events they listen to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sessionws._registry import SessionRegistry
from sessionws._reports import Event

__all__ = ("RegistryWatch",)

logger = logging.getLogger(__name__)


def wants_socket_events(callback: Callable[[Event], object] | None) -> bool:
    return callback is not None and bool(getattr(callback, "socket_events", True))


class _EventSink:
    """A callable ``on_event`` that says whether it wants per-socket events."""

    __slots__ = ("_handle", "socket_events")

    def __init__(self, handle: Callable[[Event], None], socket_events: bool) -> None:
        self._handle = handle
        self.socket_events = socket_events

    def __call__(self, event: Event) -> None:
        self._handle(event)


class RegistryWatch:
    """Reads one registry's ``stats()`` and hears its ``closed`` events.

    ``registry`` may be given here or later to :meth:`watch`; ``on_event`` (yours) gets
    every event after the exporter has seen it, so the registry's single callback
    serves both.
    """

    def __init__(
        self,
        registry: SessionRegistry | None = None,
        *,
        on_event: Callable[[Event], object] | None = None,
    ) -> None:
        self._registry: SessionRegistry | None = None
        self._forward = on_event
        #: The registry's ``on_event``: records close durations, then calls yours. It
        #: asks for the per-socket events only when your callback wants them, so that
        #: registrations keep the registry's fast path.
        self.on_event = _EventSink(self._on_event, wants_socket_events(on_event))
        if registry is not None:
            self.watch(registry)

    @property
    def registry(self) -> SessionRegistry | None:
        """The registry whose ``stats()`` are exported (``None`` until :meth:`watch`)."""
        return self._registry

    def watch(self, registry: SessionRegistry) -> SessionRegistry:
        """Export ``registry``'s stats; returns it, to wrap its construction::

        registry = metrics.watch(SessionRegistry(url, on_event=metrics.on_event))
        """
        if not isinstance(registry, SessionRegistry):
            raise TypeError(f"watch() takes a sessionws.SessionRegistry, not {type(registry).__name__}")
        if self._registry is not None and self._registry is not registry:
            raise ValueError(
                "this exporter already watches a registry; make one exporter per registry "
                "(each with its own Prometheus registry or meter)"
            )
        self._registry = registry
        return registry

    def _on_event(self, event: Event) -> None:
        if event.name == "closed":
            seconds = event.detail.get("seconds")
            if isinstance(seconds, float):
                self._close_observed(seconds)
        if self._forward is not None:
            self._forward(event)

    def _close_observed(self, seconds: float) -> None:
        raise NotImplementedError

    def _stats(self) -> dict[str, Any] | None:
        """The registry's stats, or ``None`` before :meth:`watch`.

        Read in the event loop's thread (a ``/metrics`` route of the app) the registry
        never changes under ``stats()``; from another thread (an exporter's own HTTP
        server or reader thread) it may, so a read that raced a change is retried.
        """
        registry = self._registry
        if registry is None:
            return None
        for _ in range(5):
            try:
                return registry.stats()
            except RuntimeError:  # "changed size during iteration": another thread's read
                continue
        logger.warning("could not read the registry's stats: it kept changing under another thread")
        return None
