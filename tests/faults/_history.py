"""The history of one campaign run: every fault and every verb, with its times.

Times are seconds since the run started (``time.monotonic()`` based). A fault or a
verb is an :class:`Entry` with a start and, once it is over, an end; the checker reads
the history to decide which outcome each invariant allows, and a violation prints the
entries that led to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ("BROKER_FAULTS", "RECONNECT", "Entry", "History")

#: How long after a broker fault ends a node may still be reconnecting (its reconnect delay
#: is 0.2 s; the rest is for a loaded machine).
RECONNECT = 2.0
#: Faults that may keep a node from the broker (its commands queue, its marker reads fail).
BROKER_FAULTS = frozenset({"broker-kill", "broker-pause", "nats-failover"})


@dataclass
class Entry:
    """One fault or one call, from ``start`` to ``end`` (``None`` while running)."""

    number: int
    actor: str  # "nemesis" or "workload"
    what: str  # "broker-kill", "close", "connect", ...
    target: str  # "broker", "node2", "n1" (a NATS server)...
    start: float
    end: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    #: What the call answered (a close report...), for the checker; not printed.
    answer: dict[str, Any] = field(default_factory=dict)

    def overlaps(self, start: float, end: float) -> bool:
        """Whether this entry ran at any time within ``[start, end]``."""
        return self.start <= end and (self.end is None or self.end >= start)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def line(self) -> str:
        end = "   ...  " if self.end is None else f"{self.end:8.3f}"
        detail = " ".join(f"{name}={value}" for name, value in self.detail.items())
        outcome = f" -> {self.outcome}" if self.outcome else ""
        head = f"#{self.number:<4} {self.start:8.3f} {end} {self.actor:8} {self.what:16} {self.target:7}"
        return f"{head} {detail}{outcome}"


class History:
    """The ordered log of a run."""

    def __init__(self, seed: int, kind: str) -> None:
        self.seed = seed
        self.kind = kind
        self.origin = time.monotonic()
        self.entries: list[Entry] = []

    def now(self) -> float:
        return time.monotonic() - self.origin

    def at(self, monotonic: float | None) -> float | None:
        """A ``time.monotonic()`` reading in history time."""
        return None if monotonic is None else monotonic - self.origin

    def begin(self, actor: str, what: str, target: str, **detail: Any) -> Entry:
        entry = Entry(len(self.entries) + 1, actor, what, target, self.now(), detail=dict(detail))
        self.entries.append(entry)
        return entry

    def finish(self, entry: Entry, outcome: str = "", **detail: Any) -> Entry:
        entry.end = self.now()
        entry.outcome = outcome
        entry.detail.update(detail)
        return entry

    def note(self, actor: str, what: str, target: str, outcome: str = "", **detail: Any) -> Entry:
        """An instant event (a skipped fault, a phase of the run)."""
        return self.finish(self.begin(actor, what, target, **detail), outcome)

    # ------------------------------------------------------------------ queries
    def faults(self, *names: str, target: str | None = None) -> Iterator[Entry]:
        """Faults that really ran (not skipped), optionally of some kinds or one target."""
        for entry in self.entries:
            if entry.actor != "nemesis" or entry.outcome == "skipped":
                continue
            if names and entry.what not in names:
                continue
            if target is not None and entry.target != target:
                continue
            yield entry

    def data_losses(self) -> list[Entry]:
        """Broker restarts that lost the broker's data."""
        return [entry for entry in self.faults("broker-kill") if not entry.detail.get("data_kept", True)]

    def node_disrupted(self, node: str, start: float, end: float) -> bool:
        """Whether ``node`` was paused, killed or restarting at some time in ``[start, end]``."""
        return any(
            entry.overlaps(start, end) for entry in self.faults("node-pause", "node-kill", target=node)
        )

    def node_killed_after(self, node: str, start: float, until: float | None = None) -> bool:
        """Whether ``node`` was down at ``start`` or killed later (before ``until``)."""
        return any(
            (entry.end is None or entry.end >= start) and (until is None or entry.start <= until)
            for entry in self.faults("node-kill", target=node)
        )

    def broker_disrupted(self, node: str, start: float, end: float) -> bool:
        """Whether ``node``'s broker link was down or frozen at some time in ``[start, end]``,
        or had not been back for :data:`RECONNECT` seconds (a node reconnects, resubscribes
        and reconciles some time after the fault is healed)."""
        faults = [*self.faults(*BROKER_FAULTS), *self.faults("node-cut", target=node)]
        return any(entry.overlaps(start - RECONNECT, end) for entry in faults)

    def silent_since(self, node: str, at: float, gap: float = 0.3) -> float:
        """When ``node`` last beat before ``at``, as far as the history knows: the start of
        the unbroken run of its pauses, kills, cuts, broker faults and the times the watch
        saw it without a broker connection (``away``) that covers ``at`` (``at`` itself
        when none does). Runs less than ``gap`` apart count as one."""
        spans = sorted(
            (entry.start, entry.end if entry.end is not None else at)
            for entry in [
                *self.faults("node-pause", "node-kill", "node-cut", target=node),
                *self.faults(*BROKER_FAULTS),
                *(e for e in self.entries if e.actor == "watch" and e.what == "away" and e.target == node),
            ]
            if entry.start <= at
        )
        since = at
        for start, end in reversed(spans):  # newest start first; ``since`` only moves back
            if end + gap >= since and start < since:
                since = start
        return since

    # ------------------------------------------------------------------ printing
    def replay(self, test_id: str = "") -> str:
        """The command that runs this seed again (``test_id``: the pytest node id)."""
        return f"SESSIONWS_FAULT_SEED={self.seed} .venv/bin/python -m pytest '{test_id or 'tests/faults'}'"

    def render(self, entries: Iterable[Entry] | None = None, limit: int = 5000) -> str:
        """The history as text (the verbs of pool storms are summarised by their fault)."""
        chosen = [
            entry for entry in (self.entries if entries is None else entries) if not entry.detail.get("storm")
        ]
        lines = [
            f"history of {self.kind} seed {self.seed} ({len(chosen)} entries; times in s since start)",
            "#     start    end      actor    what             target  detail -> outcome",
        ]
        lines += [entry.line() for entry in chosen[:limit]]
        if len(chosen) > limit:
            lines.append(f"... {len(chosen) - limit} more")
        return "\n".join(lines)
