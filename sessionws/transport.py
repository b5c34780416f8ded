"""What a transport author needs: the protocols to implement, the errors, a task helper.

A transport moves bytes and markers between the nodes of a cluster; the cluster logic
stays in :class:`~sessionws.SessionRegistry`. The Redis and NATS transports shipped with
sessionws are built on this module alone, as a third-party one is:

* implement :class:`Transport` (its docstring is the contract) and call back into the
  :class:`TransportHandler` that ``open()`` receives;
* raise :class:`TransportError` when the broker cannot be reached (the registry turns
  it into its outbox and reconcile behaviour); derive your own errors from
  :class:`~sessionws.SessionWSError`;
* run the transport's background tasks in :func:`background_tasks`, so an error of the
  caller's ``async with`` body comes out as itself;
* accept the option :data:`OPEN_TIMEOUT` (seconds) in ``from_url``: how long ``open()``
  waits for the broker at start. The ``sessionws`` command passes it to every transport;
* register a factory ``factory(url, **options) -> Transport`` under the entry-point group
  :data:`ENTRY_POINT_GROUP`, named by its URL scheme::

      [project.entry-points."sessionws.transports"]
      pigeon = "sessionws_pigeon:transport_from_url [pigeon]"

  ``[pigeon]`` names the extra that installs the broker's client: when importing the
  factory fails, :func:`~sessionws.transport_from_url` raises an :class:`ImportError`
  saying ``pip install 'sessionws-pigeon[pigeon]'``.

The test suite's transport contract (``tests/transports``) is what every transport must
pass; run it against yours the way it runs against the brokers in ``_backends.py``.
"""

from __future__ import annotations

from typing import Final

from sessionws._errors import BrokerUnavailableError, SessionWSError, TransportError
from sessionws._protocols import Marker, Transport, TransportHandler
from sessionws._tasks import background_tasks
from sessionws._urls import ENTRY_POINT_GROUP

__all__ = (
    "ENTRY_POINT_GROUP",
    "OPEN_TIMEOUT",
    "BrokerUnavailableError",
    "Marker",
    "SessionWSError",
    "Transport",
    "TransportError",
    "TransportHandler",
    "background_tasks",
)

#: The option every transport's ``from_url`` accepts: seconds ``open()`` waits for the
#: broker at start (what it does then is the transport's: fail, or carry on disconnected).
OPEN_TIMEOUT: Final = "open_timeout"

# Where the names are documented: this module, not the private one defining them.
for _value in (Marker, Transport, TransportHandler, background_tasks):
    _value.__module__ = __name__
del _value
