"""A raw broker subscriber in its own process, for the floor of ``bench.cluster``.

    python -m bench._subscriber redis|nats URL CHANNEL

Prints ``ready`` once subscribed, then the monotonic time (``time.monotonic()``, the
same clock in every process of one machine) at which each message arrived, one a line.
"""

from __future__ import annotations

import asyncio
import sys
import time

import nats
import redis.asyncio


def _report(value: str) -> None:
    sys.stdout.write(value + "\n")
    sys.stdout.flush()


async def redis_subscriber(url: str, channel: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=5)  # the confirmation
    _report("ready")
    async for message in pubsub.listen():
        if message["type"] == "message":
            _report(repr(time.monotonic()))


async def nats_subscriber(url: str, channel: str) -> None:
    connection = await nats.connect(url)

    async def received(message: object) -> None:
        _report(repr(time.monotonic()))

    await connection.subscribe(channel, cb=received)
    await connection.flush()
    _report("ready")
    await asyncio.Event().wait()


def main() -> None:
    kind, url, channel = sys.argv[1:4]
    subscriber = redis_subscriber if kind == "redis" else nats_subscriber
    asyncio.run(subscriber(url, channel))


if __name__ == "__main__":
    main()
