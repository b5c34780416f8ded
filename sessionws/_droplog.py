"""Dropped broker messages: every one counted, few logged.

Someone who can publish on the broker can send thousands of bad messages a second;
one log line each would flood the node's logs. Per interval, the first few drops
of each reason are logged in full; the rest are only counted, and one summary line
per interval gives those counts. ``stats()`` counts every drop either way.
"""

from __future__ import annotations

import logging
import time

__all__ = ("DropLog",)


class DropLog:
    """Counts drops by reason and logs them at a bounded rate."""

    def __init__(self, logger: logging.Logger, *, first: int = 5, interval: float = 60.0) -> None:
        self._logger = logger
        self._first = first
        self._interval = interval
        self.counts: dict[str, int] = {}
        self._logged: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._window_start = time.monotonic()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def drop(self, reason: str, detail: str = "") -> None:
        """Count one dropped message; log it if this interval has not logged enough."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.flush()
        logged = self._logged.get(reason, 0)
        if logged < self._first:
            self._logged[reason] = logged + 1
            self._logger.warning("dropped a broker message (%s)%s", reason, f": {detail}" if detail else "")
        else:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1

    def flush(self, now: float | None = None) -> None:
        """End the interval if it is over: one summary line for what was not logged."""
        now = time.monotonic() if now is None else now
        if now - self._window_start < self._interval:
            return
        if self._suppressed:
            summary = ", ".join(f"{reason}: {count}" for reason, count in sorted(self._suppressed.items()))
            self._logger.warning(
                "dropped %d more broker messages in the last %.0f s (%s)",
                sum(self._suppressed.values()),
                now - self._window_start,
                summary,
            )
        self._window_start = now
        self._logged.clear()
        self._suppressed.clear()
