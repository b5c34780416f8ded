"""The keys a node holds: their channels, batched subscribes, and the unsubscribe linger.

A key's channel is subscribed on the node's first socket of the key and unsubscribed
``linger`` seconds after its last one left (page navigation does not churn the broker).
Keys registering at the same moment share one subscribe, one sequence read and one
marker read: a connection storm costs a few broker round trips, not one per socket.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from sessionws._errors import TransportError
from sessionws._handles import KeyState
from sessionws._markers import KeyMarkers, MarkerCheck, read_key_markers
from sessionws._protocols import Transport
from sessionws._wire import Names

__all__ = ("Batch", "KeyTable")

logger = logging.getLogger("sessionws")


@dataclass(slots=True)
class Batch:
    """Keys waiting to be subscribed together.

    ``sequence`` is the namespace sequence read while subscribing: registrations
    waiting on the batch take effect at it. ``failed`` means the broker was away;
    the channels stay wanted and the transport subscribes them on reconnect.
    """

    states: list[KeyState] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    sequence: int = 0
    failed: bool = False


def _broker_error(error: BaseException) -> bool:
    """A :class:`TransportError`, or a group of nothing else (from a task group)."""
    if isinstance(error, BaseExceptionGroup):
        return all(_broker_error(inner) for inner in error.exceptions)
    return isinstance(error, TransportError)


class KeyTable:
    """Key states by key, channel and hash, and the tasks that (un)subscribe them."""

    def __init__(
        self,
        transport: Transport,
        names: Names,
        *,
        linger: float,
        apply_markers: Callable[[KeyState, KeyMarkers], None],
        note_sequence: Callable[[int], None],
        after_subscribe: Callable[[list[KeyState]], None],
        check_marker: MarkerCheck | None = None,
    ) -> None:
        self.transport = transport
        self.names = names
        self.linger = linger
        self.by_key: dict[str, KeyState] = {}
        self.by_channel: dict[str, KeyState] = {}
        self.by_hash: dict[str, KeyState] = {}
        self._apply_markers = apply_markers
        self._note_sequence = note_sequence
        self._after_subscribe = after_subscribe
        self._check_marker = check_marker
        self._batch: Batch | None = None
        self._batch_wanted = anyio.Event()
        self._linger_wake = anyio.Event()
        self._lingering: OrderedDict[KeyState, None] = OrderedDict()

    @property
    def subscribing(self) -> bool:
        """A batch is waiting or under way."""
        return self._batch is not None or any(state.subscribing is not None for state in self.by_key.values())

    def create(self, key: str) -> KeyState:
        key_hash = self.names.key_hash(key)
        state = KeyState(key, key_hash, self.names.channel(key_hash))
        self.by_key[key] = state
        self.by_channel[state.channel] = state
        self.by_hash[key_hash] = state
        return state

    def keep(self, state: KeyState) -> None:
        """A socket (re)joined the key: stop its linger."""
        state.linger_until = None
        self._lingering.pop(state, None)

    def start_linger(self, state: KeyState) -> None:
        # The linger is one constant, so deadlines are appended in order: the
        # oldest is always first, and the sweeper never scans the whole table.
        if self.by_key.get(state.key) is not state:
            return  # the table was cleared (shutdown): nothing to release
        state.linger_until = time.monotonic() + self.linger
        self._lingering.pop(state, None)
        self._lingering[state] = None
        if len(self._lingering) == 1:
            self._linger_wake.set()

    def clear(self) -> None:
        self._lingering.clear()
        self.by_key.clear()
        self.by_channel.clear()
        self.by_hash.clear()

    # ---------------------------------------------------------------- subscribing
    def join_batch(self, states: list[KeyState]) -> Batch:
        batch = self._batch
        if batch is None:
            batch = self._batch = Batch()
            self._batch_wanted.set()
        batch.states.extend(states)
        for state in states:
            state.subscribing = batch
        return batch

    async def run_batches(self) -> None:
        """Subscribe waiting keys, a batch at a time (a task of the registry)."""
        while True:
            await self._batch_wanted.wait()
            self._batch_wanted = anyio.Event()
            batch, self._batch = self._batch, None
            if batch is None:
                continue
            try:
                await self._subscribe(batch)
            except Exception as error:
                if _broker_error(error):  # the registry reports the outage itself
                    logger.debug("subscribing a batch of keys failed: broker unreachable")
                else:
                    logger.exception("subscribing a batch of keys failed")
                batch.failed = True
                for state in batch.states:
                    state.subscribing = None
                    state.subscribed = True  # wanted: the transport subscribes it on reconnect
            finally:
                batch.done.set()
            # Waiters read only ``failed`` and ``sequence``: do not keep the batch's
            # states alive (their keys may be released long before the next batch).
            batch.states.clear()
            del batch

    async def _subscribe(self, batch: Batch) -> None:
        states = [state for state in batch.states if state.subscribing is batch]
        sequence = 0

        async def read_sequence() -> None:
            nonlocal sequence
            sequence = await self.transport.current_sequence()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_sequence)
            await self.transport.subscribe([state.channel for state in states])
        hashes = [state.hash for state in states]
        markers = await read_key_markers(self.transport, self.names, hashes, self._check_marker)
        self._note_sequence(sequence)
        batch.sequence = sequence
        for state in states:
            state.subscribing = None
            state.subscribed = True
            self._apply_markers(state, markers[state.hash])
            if not state.handles and state.linger_until is None:
                self.start_linger(state)
        self._after_subscribe(states)

    # ---------------------------------------------------------------- lingering
    async def run_linger(self) -> None:
        """Unsubscribe keys whose last socket left over ``linger`` seconds ago (a task)."""
        while True:
            expired: list[KeyState] = []
            lingering = self._lingering
            now = time.monotonic()
            wait = math.inf
            while lingering:
                state = next(iter(lingering))
                if state.handles or state.linger_until is None:
                    del lingering[state]
                elif state.subscribing is not None:
                    lingering.move_to_end(state)  # looked at again when the batch is done
                    wait = self.linger
                    break
                elif state.linger_until <= now:
                    del lingering[state]
                    expired.append(state)
                else:
                    wait = state.linger_until - now
                    break
            for state in expired:
                del self.by_key[state.key]
                self.by_channel.pop(state.channel, None)
                self.by_hash.pop(state.hash, None)
            channels = [state.channel for state in expired if state.subscribed]
            if channels:
                try:
                    await self.transport.unsubscribe(channels)
                except TransportError:
                    pass  # no longer wanted: the transport will not resubscribe it
                except Exception:
                    logger.exception("unsubscribing %d channels failed", len(channels))
            if expired:
                continue
            self._linger_wake = anyio.Event()
            with anyio.move_on_after(wait):
                await self._linger_wake.wait()
