"""Options where users put them: a Redis URL's query carries sessionws's options too,
and anything unknown is refused when the transport is built, not inside ``open()``.

(The Sentinel URL has its own tests in ``test_redis_sentinel.py``.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import redis

from sessionws import SessionRegistry, transport_from_url
from sessionws_redis import RedisClusterTransport, RedisTransport
from tests._helpers import wait_for
from tests._redis_servers import RedisClusterServers, RedisServer
from tests.core.helpers import RecordingConnection

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def test_the_query_sets_the_transport_options_with_their_types() -> None:
    transport = transport_from_url(
        "rediss://h:6390/2?prefix=myapp&command_timeout=2.5&max_payload=4096&socket_timeout=3"
        "&ssl_cert_reqs=none&client_name=node-1&health_check_interval=30"
    )
    assert isinstance(transport, RedisTransport)
    options = transport._options
    assert (options.prefix, options.command_timeout, options.max_payload) == ("myapp", 2.5, 4096)
    assert options.health_check_interval == 30.0
    assert transport.max_payload == 4096
    # redis-py's own options stay redis-py's, converted by redis-py.
    kwargs = transport._client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 6390, 2)
    assert (kwargs["socket_timeout"], kwargs["client_name"]) == (3.0, "node-1")
    assert kwargs["ssl_cert_reqs"] == "none"
    assert "prefix" not in kwargs and "command_timeout" not in kwargs


def test_keywords_win_over_the_query_for_transport_options() -> None:
    transport = RedisTransport.from_url(
        "redis://h/0?prefix=from_url&command_timeout=1", prefix="from_keyword"
    )
    assert transport._options.prefix == "from_keyword"
    assert transport._options.command_timeout == 1.0


def test_the_cluster_url_takes_the_same_options() -> None:
    transport = transport_from_url("redis+cluster://h:7000?prefix=myapp&open_timeout=3&socket_timeout=2")
    assert isinstance(transport, RedisClusterTransport)
    assert (transport._options.prefix, transport._options.open_timeout) == ("myapp", 3.0)
    assert transport._client.nodes_manager.connection_kwargs["socket_timeout"] == 2.0
    tls = transport_from_url("rediss+cluster://h:7000?prefix=secure")
    assert isinstance(tls, RedisClusterTransport)
    assert tls._options.prefix == "secure"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("redis://h/0?bucket=x", {}, "unknown option 'bucket' in the redis:// URL's query"),
        ("redis://h/0?prefx=x", {}, "did you mean 'prefix'"),
        ("redis://h/0", {"bucket": "x"}, "unknown option 'bucket' for a redis:// transport"),
        ("rediss://h/0", {"subject_prefix": "x"}, "unknown option 'subject_prefix'"),
        ("redis://h/0?decode_responses=true", {}, "unknown option 'decode_responses'"),
        ("redis://h/0?ssl_cert_reqs=none", {}, "TLS options need a rediss:// URL"),
        ("redis://h/0?max_payload=big", {}, "max_payload='big'"),
        ("redis://h/0?command_timeout=-1", {}, "command_timeout must be a positive number"),
        ("redis://h/0?prefix=a&prefix=b", {}, "'prefix' appears twice"),
        ("redis://h/0?prefix", {}, "malformed"),
        ("redis://h/0?socket_timeout=1", {"socket_timeout": 2}, "both in the redis:// URL's query and as"),
        ("redis+cluster://h:1?bucket=x", {}, "unknown option 'bucket'"),
        ("redis+cluster://h:1?timeout=3", {}, "unknown option 'timeout'"),
        ("redis+cluster://h:1", {"replicas": 3}, "unknown option 'replicas'"),
        ("rediss+cluster://h:1?prefix=", {}, "prefix must be"),
    ],
)
def test_unknown_or_bad_options_are_refused_at_construction(
    url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        transport_from_url(url, **options)


def test_the_message_names_the_valid_options() -> None:
    with pytest.raises(ValueError, match="unknown option 'colour'") as error:
        RedisTransport.from_url("rediss://h/0?colour=blue")
    for name in ("prefix", "command_timeout", "max_payload", "socket_timeout", "ssl_cert_reqs"):
        assert name in str(error.value)


def test_a_registry_url_with_an_unknown_option_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown option 'bucket'"):
        SessionRegistry("redis://127.0.0.1:1/0?bucket=sessions")


async def test_a_registry_built_from_a_url_with_a_prefix_keeps_its_keys_there(
    redis_server: RedisServer,
) -> None:
    async with SessionRegistry(f"{redis_server.url}?prefix=myapp&command_timeout=5") as registry:
        connection = RecordingConnection()
        await registry.register(connection, "alice")
        await registry.revoke("alice")
        await wait_for(lambda: connection.close_code is not None)
    raw = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert raw.exists("{myapp}:sequence")
    assert raw.keys("{myapp}:marker:*")


async def test_a_cluster_registry_url_with_a_prefix(redis_cluster: RedisClusterServers) -> None:
    async with SessionRegistry(f"{redis_cluster.url}?prefix=clusterapp") as registry:
        connection = RecordingConnection()
        await registry.register(connection, "alice")
        await registry.close_all("alice")
        await wait_for(lambda: connection.close_code == 1000)
    owner = redis_cluster.server_for("{clusterapp}:sequence")
    assert redis.Redis(host=owner.host, port=owner.port).exists("{clusterapp}:sequence")


@pytest.mark.parametrize(
    "make",
    [
        lambda: RedisTransport.from_url("redis://h/0?connect_timeout=3"),
        lambda: RedisTransport.from_url("redis://h/0", connect_timeout=3),
        lambda: transport_from_url("redis+cluster://h:7000?connect_timeout=3"),
        lambda: transport_from_url("redis+sentinel://h:26379/mymaster", connect_timeout=3),
    ],
)
def test_connect_timeout_is_the_deprecated_name_of_open_timeout(make: Callable[[], Any]) -> None:
    with pytest.warns(DeprecationWarning, match="'connect_timeout' is deprecated: use 'open_timeout'"):
        transport = make()
    assert transport._options.open_timeout == 3.0


def test_open_timeout_wins_over_its_old_name_and_only_the_new_one_is_offered() -> None:
    with pytest.warns(DeprecationWarning, match="connect_timeout"):
        transport = RedisTransport.from_url("redis://h/0?connect_timeout=3", open_timeout=4)
    assert transport._options.open_timeout == 4.0
    with pytest.raises(ValueError, match="unknown option 'open_timout'") as caught:
        RedisTransport.from_url("redis://h/0", open_timout=4)
    assert "'open_timeout'" in str(caught.value)
    assert "connect_timeout" not in str(caught.value)
