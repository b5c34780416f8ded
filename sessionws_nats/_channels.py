"""The channels a transport wants, and their nats-py subscriptions.

The wanted set changes first (so a channel wanted while the broker is down is
subscribed on reconnect); subscriptions follow it whenever the broker is reachable.
Every subscription hands its messages to one function (see
:mod:`sessionws_nats._dispatch`), which maps the subject back to the channel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sessionws_nats._dispatch import MessageSink
from sessionws_nats._names import encode_name

__all__ = ("ChannelSubscriptions",)

logger = logging.getLogger("sessionws.nats")


class ChannelSubscriptions:
    """channel ↔ subject, and the subscription of each wanted channel."""

    def __init__(self, subject_prefix: str, deliver: Callable[[str, bytes], None]) -> None:
        self._prefix = subject_prefix + "."
        self._deliver = deliver
        self._sink: MessageSink | None = None
        self._wanted: dict[str, str] = {}  # channel -> subject
        self._channels: dict[str, str] = {}  # subject -> channel
        self._subscriptions: dict[str, Subscription] = {}  # channel -> nats-py subscription
        self._stale: list[Subscription] = []  # failed to unsubscribe; retried on reconnect

    def use_shared_dispatch(self, shared: bool) -> None:
        """Subscribe through one shared sink (``True``) or a callback task each."""
        self._sink = MessageSink(self._on_message) if shared else None

    @property
    def shared_dispatch(self) -> bool:
        return self._sink is not None

    def subject(self, channel: str) -> str:
        return self._wanted.get(channel) or self._prefix + encode_name(channel)

    def want(self, channels: Iterable[str]) -> list[str]:
        """Add to the wanted set; return the channels, deduplicated, in order."""
        wanted = list(dict.fromkeys(channels))
        for channel in wanted:
            if channel not in self._wanted:
                subject = self._prefix + encode_name(channel)
                self._wanted[channel] = subject
                self._channels[subject] = channel
        return wanted

    def forget(self, channels: Iterable[str]) -> list[Subscription]:
        """Remove from the wanted set; return the subscriptions to unsubscribe."""
        removed = []
        for channel in channels:
            subject = self._wanted.pop(channel, None)
            if subject is not None:
                self._channels.pop(subject, None)
            subscription = self._subscriptions.pop(channel, None)
            if subscription is not None:
                removed.append(subscription)
        return removed

    def keep_for_later(self, subscriptions: Iterable[Subscription]) -> None:
        """Subscriptions whose UNSUB failed: they are removed on the next (re)connect."""
        self._stale.extend(subscriptions)

    @property
    def complete(self) -> bool:
        """Whether every wanted channel has a subscription."""
        return all(channel in self._subscriptions for channel in self._wanted)

    def missing(self) -> list[str]:
        return [channel for channel in self._wanted if channel not in self._subscriptions]

    async def subscribe(self, client: Client, channels: Sequence[str]) -> None:
        """Subscribe those of ``channels`` that are wanted and not subscribed yet."""
        for channel in channels:
            subject = self._wanted.get(channel)
            if subject is None or channel in self._subscriptions:
                continue
            if self._sink is not None:
                subscription = await client.subscribe(subject, future=self._sink)
            else:
                subscription = await client.subscribe(subject, cb=self._on_message_in_task)
            if self._wanted.get(channel) != subject or channel in self._subscriptions:
                # Unsubscribed (or subscribed by a concurrent call) while we waited.
                await subscription.unsubscribe()
            else:
                self._subscriptions[channel] = subscription

    async def drop_stale(self) -> None:
        stale, self._stale = self._stale, []
        for subscription in stale:
            await subscription.unsubscribe()

    def take_all(self) -> list[Subscription]:
        """Every subscription (for shutdown); the transport wants nothing afterwards."""
        subscriptions = [*self._subscriptions.values(), *self._stale]
        self.clear()
        return subscriptions

    def clear(self) -> None:
        self._wanted.clear()
        self._channels.clear()
        self._subscriptions.clear()
        self._stale.clear()

    def _on_message(self, message: Msg) -> None:
        channel = self._channels.get(message.subject)
        if channel is not None:
            self._deliver(channel, message.data)

    async def _on_message_in_task(self, message: Msg) -> None:
        try:
            self._on_message(message)
        except Exception:
            logger.exception("a NATS message handler raised; the message is dropped")
