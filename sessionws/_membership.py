"""Who else is in the cluster (heartbeats), and which commands were already applied."""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict

__all__ = ("Membership", "ReplayGuard", "decode_silent", "encode_silent")

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
