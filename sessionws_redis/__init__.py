"""Redis transports for sessionws: standalone Redis, Redis Sentinel and Redis Cluster.

``pip install sessionws[redis]``, then pass a ``redis://``, ``rediss://``,
``redis+sentinel://`` or ``redis+cluster://`` URL to the registry, or build a
transport yourself.
"""

from __future__ import annotations

from sessionws_redis._cluster import RedisClusterTransport
from sessionws_redis._sentinel import RedisSentinelTransport
from sessionws_redis._transport import RedisTransport, transport_from_url

__all__ = ("RedisClusterTransport", "RedisSentinelTransport", "RedisTransport", "transport_from_url")

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
