"""Redis transports for sessionws: standalone Redis and Redis Cluster (sharded pub/sub).

``pip install sessionws[redis]``, then pass a ``redis://``, ``rediss://`` or
``redis+cluster://`` URL to the registry, or build a transport yourself.
"""

from __future__ import annotations

from sessionws_redis._cluster import RedisClusterTransport
from sessionws_redis._transport import RedisTransport, transport_from_url

__all__ = ("RedisClusterTransport", "RedisTransport", "transport_from_url")
