"""One pub/sub connection with its reader and reconnect loop: :class:`PubSubLink`.

How it keeps its promises:

* **One pub/sub connection, one reader.** Subscriptions live on a dedicated
  connection (not redis-py's ``PubSub``, which reconnects and resubscribes behind our
  back, so nobody could tell the registry that messages were missed). A reader task
  owns all reads; ``subscribe`` writes ``SUBSCRIBE`` for all its channels plus a
  ``PING`` in one write and returns when the reader sees that ``PING``'s ``PONG``:
  Redis answers in order, so the subscription is active on the server by then.
* **Survives the broker.** When the connection drops (or a health-check ``PING``
  goes unanswered) the link reports ``connection_lost`` once, reconnects with capped
  exponential backoff, reads the namespace's epoch (see below), resubscribes
  every wanted channel in one pipelined batch, confirms it, and only then reports
  ``connection_restored``.
* **Knows whether the data survived.** The link that reaches the transport's keys
  reads the namespace's *epoch* on every (re)connect (:mod:`sessionws_redis._epoch`).

The standalone transport runs one link; the cluster transport one per primary.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisError, ResponseError

from sessionws.transport import TransportError
from sessionws_redis._epoch import handshake
from sessionws_redis._errors import UNREACHABLE_ERRORS
from sessionws_redis._options import TransportOptions, chunks

__all__ = ("LinkOwner", "PubSubLink", "notify", "run_link")

logger = logging.getLogger("sessionws.redis")


class LinkOwner(Protocol):
    """What a :class:`PubSubLink` reports to: the transport that owns it."""

    def channels_for(self, link: PubSubLink) -> Iterable[str]:
        """Every channel this link should hold now (read on each reconnect)."""
        ...

    def wants(self, link: PubSubLink, channel: str) -> bool:
        """Whether ``channel`` should be subscribed on ``link`` now."""
        ...

    def link_up(self, link: PubSubLink) -> None: ...

    def link_down(self, link: PubSubLink) -> None: ...

    def reconnect_failed(self, link: PubSubLink) -> None:
        """Another reconnect attempt failed (``link.failed_attempts`` counts them)."""
        ...

    def message_received(self, channel: str, payload: bytes) -> None: ...

    def redirected(self, link: PubSubLink, error: ResponseError) -> None:
        """The server said a channel lives elsewhere (a cluster's slot moved)."""
        ...


@dataclass
class _Confirmation:
    done: anyio.Event
    lost: bool = False
    errors: tuple[ResponseError, ...] = ()


class PubSubLink:
    """One pub/sub connection with its reader, kept alive across broker restarts.

    The standalone transport has one; the cluster transport has one per primary
    (with ``sharded=True``: ``SSUBSCRIBE``, one command per hash slot).
    """

    def __init__(
        self,
        name: str,
        make_connection: Callable[[], AbstractConnection],
        owner: LinkOwner,
        options: TransportOptions,
        *,
        sharded: bool = False,
        epoch_key: str | None = None,
    ) -> None:
        self.name = name
        #: The namespace's epoch, read at the last (re)connect (``""`` for a link that
        #: does not hold the transport's keys).
        self.epoch = ""
        #: The server's ``run_id`` at the last (re)connect: new after every restart.
        self.run_id = ""
        self._epoch_key = epoch_key
        self.connected = False
        self._make_connection = make_connection
        self._owner = owner
        self._options = options
        self._sharded = sharded
        self._subscribe_command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe_command = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        # Channels subscribed (or being subscribed) on the current connection.
        self._subscribed: set[str] = set()
        self._live: AbstractConnection | None = None
        self._scope: anyio.CancelScope | None = None
        self._pending: dict[bytes, _Confirmation] = {}
        self._errors: list[ResponseError] = []
        self._tokens = itertools.count()
        #: Consecutive failed attempts to (re)connect, reset once the link is up.
        self.failed_attempts = 0
        self.connected_once = False

    # --- the connection's life ----------------------------------------------------
    async def run(
        self,
        *,
        open_timeout: float | None = None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, and reconnect forever; ``task_status.started()`` on the first success.

        With ``open_timeout``, the first connection must succeed within it or
        :class:`TransportError` is raised (so a wrong URL fails ``open()``).
        """
        deadline = None if open_timeout is None else anyio.current_time() + open_timeout
        delay = self._options.reconnect_min_delay
        started = False
        while True:
            failure = await self._connect_and_serve(task_status if not started else None)
            if self.connected_once:
                started = True
            if failure is None:
                # The connection was up and dropped: try again at once, then back off.
                delay = self._options.reconnect_min_delay
                continue
            self.failed_attempts += 1
            self._owner.reconnect_failed(self)
            if deadline is not None and not started and anyio.current_time() >= deadline:
                raise TransportError(f"cannot connect to Redis at {self.name}: {failure}") from failure
            logger.debug(
                "connecting to Redis at %s failed (%s); retrying in %.2f s", self.name, failure, delay
            )
            await anyio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self._options.reconnect_max_delay)

    async def _connect_and_serve(self, task_status: TaskStatus[None] | None) -> Exception | None:
        """One connection's life: the error if it never came up, else ``None`` once it is lost."""
        connection = self._make_connection()
        failure: Exception | None = None
        try:
            epoch, run_id = await handshake(
                connection, self.name, epoch_key=self._epoch_key, timeout=self._options.command_timeout
            )
            async with anyio.create_task_group() as tasks:
                self._live, self._scope = connection, tasks.cancel_scope
                self._subscribed = set()
                tasks.start_soon(self._read, connection)
                try:
                    await self._resubscribe()
                except TransportError as exc:
                    # The connection dropped or the server refused the resubscription
                    # (say, a cluster node still joining): back off and try again.
                    failure = exc
                    self._drop(f"resubscribing failed: {exc}")
                else:
                    self.epoch, self.run_id = epoch, run_id
                    self.connected = self.connected_once = True
                    self.failed_attempts = 0
                    if task_status is not None:
                        task_status.started()
                    self._owner.link_up(self)
                    await self._keep_alive()
        except (RedisError, OSError, TransportError) as exc:
            failure = exc  # from the handshake
        finally:
            self._fail_pending()
            self._live = self._scope = None
            self.connected = False
            with anyio.CancelScope(shield=True):
                await _close(connection)
        return failure

    async def _resubscribe(self) -> None:
        # Loop until the wanted set stops moving: a subscribe() that ran while we were
        # not yet connected changed it after we took our snapshot.
        await self._exchange(list(self._owner.channels_for(self)), [])
        while True:
            wanted = set(self._owner.channels_for(self))
            if wanted == self._subscribed:
                return
            await self._exchange(sorted(wanted - self._subscribed), sorted(self._subscribed - wanted))

    async def _keep_alive(self) -> None:
        while True:
            await anyio.sleep(self._options.health_check_interval)
            try:
                await self._exchange([], [])
            except TransportError as exc:
                self._drop(f"health check failed: {exc}")
                return

    def reconnect(self, reason: str) -> None:
        """Drop the current connection now (the run loop connects again, as after a loss):
        for an owner that learnt the server is no longer the right one."""
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        """Give up on the current connection (the run loop reconnects)."""
        if self._scope is None:
            return
        self._scope.cancel()
        self._scope = self._live = None
        self._fail_pending()
        if self.connected:
            self.connected = False
            logger.warning("lost the Redis pub/sub connection to %s: %s", self.name, reason)
            self._owner.link_down(self)

    def _fail_pending(self) -> None:
        for confirmation in self._pending.values():
            confirmation.lost = True
            confirmation.done.set()
        self._pending.clear()

    # --- reading ------------------------------------------------------------------
    async def _read(self, connection: AbstractConnection) -> None:
        try:
            while True:
                try:
                    reply = await connection.read_response(disable_decoding=True, timeout=math.inf)
                except ResponseError as error:
                    self._refused(error)
                    continue
                self._dispatch(reply)
        except UNREACHABLE_ERRORS as exc:
            self._drop(str(exc) or type(exc).__name__)
        except Exception as exc:
            # Anything else is a bug or a protocol surprise: log it loudly and
            # reconnect rather than leave the node deaf.
            logger.exception("the Redis pub/sub reader for %s failed; reconnecting", self.name)
            self._drop(f"reader error: {exc!r}")

    def _dispatch(self, reply: Any) -> None:
        if isinstance(reply, bytes):
            # A PING outside subscribed mode (no channel held) answers a bulk string.
            self._confirm(reply)
            return
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes):
            logger.warning("ignoring an unexpected reply on the Redis pub/sub connection to %s", self.name)
            return
        kind = reply[0]
        if kind in (b"message", b"smessage") and len(reply) == 3:
            try:
                self._owner.message_received(reply[1].decode(), reply[2])
            except Exception:
                logger.exception("the transport handler failed on a message; the message is dropped")
        elif kind == b"pong" and len(reply) == 2:
            self._confirm(reply[1])
        elif kind == b"sunsubscribe" and len(reply) == 3:
            channel = reply[1].decode()
            if channel in self._subscribed:
                # We did not ask: the server moved the channel's slot elsewhere.
                self._subscribed.discard(channel)
                self._owner.redirected(self, ResponseError(f"the server unsubscribed {channel}"))
        elif kind not in (b"subscribe", b"ssubscribe", b"unsubscribe"):
            logger.warning("ignoring a %r reply on the Redis pub/sub connection to %s", kind, self.name)

    def _refused(self, error: ResponseError) -> None:
        logger.warning("Redis at %s refused a pub/sub command: %s", self.name, error)
        self._errors.append(error)

    def _confirm(self, token: bytes) -> None:
        errors, self._errors = tuple(self._errors), []
        confirmation = self._pending.pop(token, None)
        if confirmation is not None:
            confirmation.errors = errors
            confirmation.done.set()

    # --- writing ------------------------------------------------------------------
    async def update(self, channels: Iterable[str]) -> None:
        """Bring ``channels`` on this connection in line with the owner's wanted set.

        Returns once the broker confirmed; raises :class:`TransportError` while the
        link is down (the run loop resubscribes what is wanted on reconnect).
        """
        if not self.connected:
            raise TransportError(f"the Redis pub/sub connection to {self.name} is down; it is reconnecting")
        subscribe = [c for c in channels if c not in self._subscribed and self._owner.wants(self, c)]
        unsubscribe = [c for c in channels if c in self._subscribed and not self._owner.wants(self, c)]
        await self._exchange(subscribe, unsubscribe)

    def _commands(self, command: str, channels: Sequence[str]) -> Iterator[tuple[str, ...]]:
        if not self._sharded:
            for chunk in chunks(channels):
                yield (command, *chunk)
            return
        # SSUBSCRIBE takes channels of one hash slot per command.
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
        for slot_channels in by_slot.values():
            for chunk in chunks(slot_channels):
                yield (command, *chunk)

    async def _exchange(self, subscribe: Sequence[str], unsubscribe: Sequence[str]) -> None:
        connection = self._live
        if connection is None or not connection.is_connected:
            # Checked synchronously right before the write: redis-py would otherwise
            # silently open a fresh connection that nobody reads.
            raise TransportError(f"the Redis pub/sub connection to {self.name} is down; it is reconnecting")
        token = str(next(self._tokens)).encode()
        commands = [
            *self._commands(self._unsubscribe_command, unsubscribe),
            *self._commands(self._subscribe_command, subscribe),
            ("PING", token),
        ]
        self._subscribed.difference_update(unsubscribe)
        self._subscribed.update(subscribe)
        confirmation = _Confirmation(anyio.Event())
        self._pending[token] = confirmation
        try:
            with anyio.fail_after(self._options.command_timeout):
                # No socket timeout on this connection, so the write happens before
                # the first await: commands hit the wire in the order of the calls.
                await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
                await confirmation.done.wait()
        except TimeoutError:
            self._drop(f"no reply within {self._options.command_timeout} s")
            raise TransportError(
                f"Redis at {self.name} did not answer within {self._options.command_timeout} s"
            ) from None
        except UNREACHABLE_ERRORS as exc:
            self._drop(str(exc))
            raise TransportError(f"the Redis pub/sub connection to {self.name} dropped: {exc}") from exc
        finally:
            self._pending.pop(token, None)
        if confirmation.lost:
            raise TransportError(f"the Redis pub/sub connection to {self.name} dropped before confirming")
        for error in confirmation.errors:
            if isinstance(error, MovedError | AskError):
                self._owner.redirected(self, error)
        if confirmation.errors:
            raise TransportError(f"Redis at {self.name} refused a subscription: {confirmation.errors[0]}")


async def _close(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.disconnect(nowait=True)


async def run_link(
    link: PubSubLink,
    open_timeout: float | None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``link`` in a task group (``TaskGroup.start`` passes ``task_status``)."""
    await link.run(open_timeout=open_timeout, task_status=task_status)


def notify(callback: Callable[[], None]) -> None:
    """Call a handler's connection callback; its failure is logged, never propagated."""
    try:
        callback()
    except Exception:
        logger.exception("the transport handler failed on a connection event")
