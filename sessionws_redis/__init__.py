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
