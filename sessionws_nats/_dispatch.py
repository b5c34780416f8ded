"""One shared dispatcher for every subscription of a connection.

nats-py gives each *callback* subscription its own task and its own
``asyncio.Queue``; a node holding 100k keys holds 100k subscriptions. Measured on
this project's dev machine (nats-py 2.16, nats-server 2.15.1, CPython 3.11, one
loopback server, 100k subscriptions each followed by one ``flush()``):

=========================================  ============  ===========  ===========
way to subscribe                           per channel   100k subs    tasks
=========================================  ============  ===========  ===========
``subscribe(subject, cb=...)``             4.8 KB RSS    3.8 s        +100 000
``subscribe(subject, future=<sink>)``      3.7 KB RSS    1.8 s        +0
one wildcard ``prefix.>`` + local filter   ~0            (one SUB)    +0
=========================================  ============  ===========  ===========

Publish→receipt latency is the same either way (median ~160 µs on loopback).
Unsubscribing 100k: 0.8 s with callbacks, 0.5 s with the sink. Through
``NatsTransport`` (``subscribe`` in batches of 500, each batch confirmed), 100k
channels take 2.8 s and ~4.0 KB RSS each with the sink, 5.6 s and ~5.2 KB with
callbacks.

We use the middle row: one subscription per channel, all of them handing their
messages to one :class:`MessageSink`, which calls a plain function from nats-py's
reader. It halves the subscribe time, saves a quarter of the memory and 100k
tasks, and keeps the order of messages across channels (callback subscriptions each
run in their own task, so two channels' messages may be handled out of order). The
remaining 3.7 KB per channel is the ``asyncio.Queue`` nats-py creates for every
``Subscription`` (four deques); no public API avoids it.

The wildcard was rejected: the broker would fan every key's commands out to every
node (a close to a key held on one node costs N deliveries in an N-node cluster, and
~5 µs of parsing and filtering on each node that does not hold the key), which
breaks the design rule that a close does not cost more as nodes are added, and
``send_all`` traffic would multiply by the node count.

The sink relies on nats-py handing *every* message of a ``future=`` subscription to
``future.set_result`` (a sink never completes, so nats-py keeps calling it). That is
how nats-py 2.x behaves, but it is not a documented promise, so
:func:`sink_delivers_repeatedly` checks it on every connect and the transport falls
back to callback subscriptions (logging a warning) if a future nats-py changes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ("MessageSink", "sink_delivers_repeatedly", "subscribe_with")

logger = logging.getLogger("sessionws.nats")


class MessageSink(asyncio.Future[Msg]):
    """A never-completing future that passes each message nats-py sets on it to ``deliver``.

    ``deliver`` runs inside nats-py's reader task: it must be quick, and it must
    not raise — an exception escaping here would stop nats-py's read loop, leaving
    the connection deaf. The sink logs and swallows it instead.
    """

    def __init__(self, deliver: Callable[[Msg], None]) -> None:
        super().__init__()
        self._deliver = deliver

    def set_result(self, result: Msg, /) -> None:
        try:
            self._deliver(result)
        except Exception:
            logger.exception("a NATS message handler raised; the message is dropped")

    def cancelled(self) -> bool:
        return False


async def sink_delivers_repeatedly(client: Client, subject: str, timeout: float) -> bool:
    """Whether this nats-py hands more than one message of a ``future=`` subscription to it."""
    received: list[bytes] = []
    both = anyio.Event()

    def deliver(message: Msg) -> None:
        received.append(message.data)
        if len(received) >= 2:
            both.set()

    subscription = await client.subscribe(subject, future=MessageSink(deliver))
    try:
        await client.publish(subject, b"1")
        await client.publish(subject, b"2")
        with anyio.move_on_after(timeout):
            await both.wait()
    finally:
        await subscription.unsubscribe()
    return received == [b"1", b"2"]


async def subscribe_with(
    client: Client, subject: str, deliver: Callable[[Msg], None], *, shared: bool
) -> Subscription:
    """Subscribe ``subject`` with ``deliver`` called per message: through a sink, or a callback task."""
    if shared:
        return await client.subscribe(subject, future=MessageSink(deliver))

    async def callback(message: Msg) -> None:
        try:
            deliver(message)
        except Exception:
            logger.exception("a NATS message handler raised; the message is dropped")

    return await client.subscribe(subject, cb=callback)
