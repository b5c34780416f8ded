"""The exceptions sessionws raises: one base class, a few specific ones."""

from __future__ import annotations

__all__ = (
    "BrokerUnavailableError",
    "KeyRevokedError",
    "NotConfiguredError",
    "SessionWSError",
    "TransportError",
)


class SessionWSError(Exception):
    """Base class of every error sessionws raises on purpose."""


class BrokerUnavailableError(SessionWSError):
    """The broker cannot be reached right now.

    Raised by ``close_all(..., strict=True)`` (and the other cluster verbs in strict
    mode) while the node is cut off from its broker, and when the outbox of commands
    waiting for the broker is full.
    """


class TransportError(BrokerUnavailableError):
    """A transport operation failed because the broker connection is down.

    Transports raise it from ``subscribe``, ``publish`` and the marker calls; the
    registry turns it into its outbox / reconcile behaviour.
    """


class NotConfiguredError(SessionWSError):
    """The registry was used before it was set up (adapters say how to set it up)."""


class KeyRevokedError(SessionWSError):
    """A key that is revoked was given where it cannot be used (``add_keys``)."""
