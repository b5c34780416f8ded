"""Who else is in the cluster (heartbeats), and which commands were already applied."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Literal

import anyio

from sessionws._errors import TransportError
from sessionws._queries import Query
from sessionws._wire import Command

if TYPE_CHECKING:
    from sessionws._node import Node

__all__ = ("Membership", "Presence", "ReplayGuard", "decode_silent", "encode_silent")

logger = logging.getLogger(__name__)

#: A node that fell silent without a goodbye is expected to answer confirmed
#: commands (reported missing) for this many heartbeat intervals.
SILENCE_HEARTBEATS = 30
#: How long a node that just (re)joined listens before it trusts its membership: the
#: others answer its hello at once, so a fraction of a second is plenty.
SETTLE_MAX = 0.5
#: At most this many silent nodes travel in one answer to a hello.
MAX_SILENT = 1_000


class Membership:
    """Live nodes, learnt from heartbeats on the namespace's control channel.

    A node is live until ``misses`` of its announced heartbeat intervals pass without
    a beat, or until it says it leaves. A node that fell silent without a goodbye
    may only be paused or cut off, still holding sockets: it stays *silent* for
    ``silence`` seconds, and confirmed commands keep expecting its answer (it is
    reported missing) until it beats again or that window has passed.
    """

    def __init__(self, misses: float = 3.0, silence: float = 60.0) -> None:
        self._misses = misses
        self._silence = silence
        self._deadlines: dict[str, float] = {}
        self._silent: dict[str, float] = {}

    def beat(self, node: str, interval: float) -> bool:
        """Record a heartbeat; true when the node was not known as live."""
        is_new = node not in self._deadlines
        self._silent.pop(node, None)
        self._deadlines[node] = time.monotonic() + max(interval, 0.05) * self._misses
        return is_new

    def leave(self, node: str) -> bool:
        """The node said goodbye; true when it was live."""
        self._silent.pop(node, None)
        return self._deadlines.pop(node, None) is not None

    def expire(self) -> tuple[list[str], list[str]]:
        """Move nodes whose heartbeats stopped to the silent ones, and forget silent
        nodes whose window passed. Returns both lists: (fell silent, forgotten)."""
        now = time.monotonic()
        silent = [node for node, deadline in self._deadlines.items() if deadline <= now]
        for node in silent:
            del self._deadlines[node]
            self._silent[node] = now + self._silence
        forgotten = [node for node, until in self._silent.items() if until <= now]
        for node in forgotten:
            del self._silent[node]
        return silent, forgotten

    def live(self) -> frozenset[str]:
        """Nodes heard from recently."""
        now = time.monotonic()
        return frozenset(node for node, deadline in self._deadlines.items() if deadline > now)

    def expected(self) -> frozenset[str]:
        """Nodes a confirmed command must hear from: the live ones, and those that fell
        silent without a goodbye less than ``silence`` seconds ago."""
        now = time.monotonic()
        expected = {node for node, deadline in self._deadlines.items() if deadline + self._silence > now}
        return frozenset(expected | {node for node, until in self._silent.items() if until > now})

    def shift(self, seconds: float) -> None:
        """This node could not hear anyone for ``seconds`` (its broker connection was
        down, or the process was paused): that time is no evidence that the others fell
        silent, so every deadline and window moves on by as much."""
        if seconds > 0:
            for node in self._deadlines:
                self._deadlines[node] += seconds
            for node in self._silent:
                self._silent[node] += seconds

    def windows(self) -> dict[str, float]:
        """Every node a confirmed command expects, with the seconds until it would be
        forgotten if it beat no more: what a node answering a newcomer's hello tells it
        (:meth:`learn_silent`), so that the newcomer also expects the nodes that fell
        silent, or are just falling silent, before it could hear them."""
        now = time.monotonic()
        windows = {node: until - now for node, until in self._silent.items() if until > now}
        for node, deadline in self._deadlines.items():
            if deadline + self._silence > now:
                windows[node] = deadline + self._silence - now
        return windows

    def learn_silent(self, node: str, left: float) -> bool:
        """Another node expects ``node`` for ``left`` more seconds. This node was away
        (starting, cut off) and may never have heard it; it may be silent and still hold
        sockets: expect it for that long (never longer than this node's own window),
        until it beats. True when that is news."""
        if node in self._deadlines or not left > 0:
            return False
        until = time.monotonic() + min(left, self._silence)
        if self._silent.get(node, 0.0) >= until:
            return False
        self._silent[node] = until
        return True

    def clear(self) -> None:
        self._deadlines.clear()
        self._silent.clear()


class _Window:
    """Sequences seen from one origin: the newest, and the recent ones below it."""

    __slots__ = ("seen", "top")

    def __init__(self) -> None:
        self.top = 0
        self.seen: set[int] = set()


class ReplayGuard:
    """Reject effectful commands seen before, by their namespace sequence.

    Each origin node gets a sliding window (commands of one node may arrive out of
    sequence order when it publishes concurrently). A command from an origin this
    node has not heard from is accepted only if its sequence is newer than
    ``floor``: the sequence current when this node started, raised to the newest
    sequence of every origin forgotten since. So a recorded command replayed later
    is dropped whether or not its origin is still around.
    """

    WINDOW = 4096

    def __init__(self, floor: int = 0, max_origins: int = 10_000, epoch: str = "") -> None:
        self.floor = floor
        self.epoch = epoch
        self._max_origins = max_origins
        self._origins: OrderedDict[str, _Window] = OrderedDict()

    def accept(self, origin: str, sequence: int, epoch: str | None = None) -> bool:
        """Whether ``sequence`` from ``origin`` is new. Sequences compare only within one
        broker epoch: the first command of a new ``epoch`` starts the guard afresh."""
        if epoch is not None and epoch != self.epoch:
            self.reset(0, epoch)
        window = self._origins.get(origin)
        if window is None:
            if sequence <= self.floor:
                return False
            window = self._origins[origin] = _Window()
            if len(self._origins) > self._max_origins:
                self.forget(next(iter(self._origins)))
        else:
            self._origins.move_to_end(origin)
        if sequence > window.top:
            window.top = sequence
            window.seen.add(sequence)
            if len(window.seen) > 2 * self.WINDOW:
                low = sequence - self.WINDOW
                window.seen = {seen for seen in window.seen if seen > low}
            return True
        if sequence <= window.top - self.WINDOW or sequence in window.seen:
            return False
        window.seen.add(sequence)
        return True

    def forget(self, origin: str) -> None:
        window = self._origins.pop(origin, None)
        if window is not None:
            self.floor = max(self.floor, window.top)

    def reset(self, floor: int, epoch: str | None = None) -> None:
        """The broker's sequence restarted (it lost its data), or the node (re)started."""
        self._origins.clear()
        self.floor = floor
        if epoch is not None:
            self.epoch = epoch


def encode_silent(silent: dict[str, float]) -> str | None:
    """The expected nodes an answer to a hello carries (in its ``data``), or ``None``."""
    if not silent:
        return None
    newest = sorted(silent.items(), key=lambda item: -item[1])[:MAX_SILENT]
    return json.dumps({node: round(left, 3) for node, left in newest}, separators=(",", ":"))


def decode_silent(data: object) -> dict[str, float] | None:
    """The silent nodes in an answer's ``data``; ``None`` when it is not a well-formed list
    (the beat itself still counts)."""
    if not isinstance(data, str) or not data:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or len(parsed) > MAX_SILENT:
        return None
    silent: dict[str, float] = {}
    for node, left in parsed.items():
        if (
            not isinstance(left, int | float)
            or isinstance(left, bool)
            or not math.isfinite(left)
            or not node
            or "." in node
            or not node.isprintable()
        ):
            return None
        silent[node] = float(left)
    return silent


class Presence:
    """This node's part in the membership: it says hello and beats on the control
    channel, answers newcomers and roll calls at once, hears the others' beats and
    goodbyes, and knows when the membership has been heard (``settled``) since it
    started or since the broker lost its data."""

    def __init__(self, node: Node, publish: Callable[[str, Command], Awaitable[int | None]]) -> None:
        self._node = node
        self._replay = node.replay
        self._publish = publish
        self.interval = node.options.heartbeat_interval
        self.membership = Membership(silence=SILENCE_HEARTBEATS * self.interval)
        #: Set once the membership has been heard (see ``new_query``).
        self.settled = anyio.Event()

    def on_command(self, command: Command) -> None:
        """A ``hello``, ``beat``, ``leave`` or ``who`` from another node."""
        node = self._node
        if command.op == "leave":
            if self.membership.leave(command.origin):
                node.emit("member_left", node=command.origin)
            self._replay.forget(command.origin)
            return
        if command.op != "who" and self.membership.beat(command.origin, command.interval or self.interval):
            node.emit("member_joined", node=command.origin)
        if command.op == "beat" and command.data is not None:
            self._learn_silent(command)
        if command.op in ("hello", "who") and not node.publish_only:
            # Answer a newcomer (or a roll call) at once, so it knows the membership
            # before the next heartbeat. A roll call's asker (the admin CLI) does not
            # join the membership.
            node.tasks_or_raise().start_soon(self.beat, "beat", True)

    def _learn_silent(self, command: Command) -> None:
        """An answer to this node's hello names the nodes its sender expects. This node was
        away (starting, reconnecting) and may never have heard of some: one that fell
        silent (paused, cut off) just before may hold sockets, so it is expected too."""
        silent = decode_silent(command.data)
        if silent is None:
            self._node.drop("malformed", f"a heartbeat from {command.origin} lists no valid silent nodes")
            return
        for node, left in silent.items():
            if node != self._node.node_id and self.membership.learn_silent(node, left):
                logger.debug("%s expects node %s, not heard here: expecting it too", command.origin, node)

    async def beat(self, op: Literal["hello", "beat", "who"], answer: bool = False) -> None:
        silent = encode_silent(self.membership.windows()) if answer else None
        with suppress(TransportError):
            command = Command(op, self._node.node_id, interval=self.interval, data=silent)
            await self._publish(self._node.names.control, command)

    async def greet(self) -> None:
        """Ask the others to answer at once: ``hello`` (a node), ``who`` (publish-only)."""
        await self.beat("who" if self._node.publish_only else "hello")

    async def leave(self) -> None:
        await self._publish(self._node.names.control, Command("leave", self._node.node_id))

    async def run_heartbeat(self) -> None:
        node = self._node
        interval = self.interval
        woke = time.monotonic()
        while True:
            if node.connected:
                await self.beat("beat")
                # Silence is measured only while this node can hear: not while its broker
                # connection is down (the recovery moves the windows on by the outage),
                # nor while the process was paused or starved (the lateness of this loop).
                self.expire()
            node.drops.flush()
            await anyio.sleep(interval)
            now = time.monotonic()
            if now - woke > 3 * interval:
                self.membership.shift(now - woke - interval)
            woke = now

    def expire(self) -> None:
        """Nodes whose heartbeats stopped leave the membership (``member_left``, once);
        their replay windows are kept while they may still come back."""
        silent, forgotten = self.membership.expire()
        for node in silent:
            logger.info("node %s fell silent without a goodbye", node)
            self._node.emit("member_left", node=node)
        for node in forgotten:
            self._replay.forget(node)

    async def new_query(self, timeout: float | None) -> Query:
        """A question to every node expected to answer. A node that just started (or
        whose broker lost its data) first waits to hear the membership (answers to its
        hello come at once), within ``timeout``; if it still has not, the answer can
        only be incomplete."""
        settled = self.settled
        if not settled.is_set():
            with anyio.move_on_after(self._node.options.confirm_timeout if timeout is None else timeout):
                await settled.wait()
        return Query(self.membership.expected(), known=settled.is_set())

    def unsettle(self) -> None:
        """The membership must be heard again (start, data loss): questions wait for it."""
        if self.settled.is_set():
            self.settled = anyio.Event()
        if self._node.tasks is not None:
            self._node.tasks.start_soon(self._settle, self.settled)

    async def _settle(self, settled: anyio.Event) -> None:
        await anyio.sleep(min(self.interval, SETTLE_MAX))
        settled.set()
