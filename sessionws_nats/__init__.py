"""sessionws over NATS: core pub/sub for commands, a JetStream key-value bucket for markers."""

from __future__ import annotations

from sessionws_nats._errors import UnsupportedNatsServerError
from sessionws_nats._transport import NatsTransport, transport_from_url

__all__ = ("NatsTransport", "UnsupportedNatsServerError", "transport_from_url")

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
