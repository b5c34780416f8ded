"""The keys this node knows are revoked, and until when (a bounded cache).

The broker's revoke markers are the truth; this cache answers ``is_revoked`` and
checks registrations without a broker round trip, keeps answering while the broker
is away, and lets a node write back the revocations a broker lost with its data.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from sessionws._handles import KeyState

__all__ = ("REVOKED_CACHE_SIZE", "Revocation", "Revocations")

REVOKED_CACHE_SIZE = 100_000

#: (monotonic expiry, close code, reason)
Revocation = tuple[float, int, str]


class Revocations:
    """Revoked key hashes, the oldest forgotten first past ``size`` entries."""

    def __init__(
        self, by_hash: dict[str, KeyState], default_ttl: float, size: int = REVOKED_CACHE_SIZE
    ) -> None:
        self._by_hash = by_hash
        self.default_ttl = default_ttl
        self._size = size
        self._entries: OrderedDict[str, Revocation] = OrderedDict()

    def remember(self, key_hash: str, ttl: float, code: int, reason: str) -> None:
        state = self._by_hash.get(key_hash)
        if state is not None:
            state.closed_before = True  # registrations of this key check the revocation
        entries = self._entries
        entries[key_hash] = (time.monotonic() + ttl, code, reason)
        entries.move_to_end(key_hash)
        while len(entries) > self._size:
            entries.popitem(last=False)

    def remember_marker(self, key_hash: str, expires: float | None, code: int, reason: str) -> None:
        """A revoke read from the broker: remembered for the time its marker has left."""
        self.remember(key_hash, self.ttl_left(expires), code, reason)

    def in_force(self, key_hash: str, now: float | None = None) -> Revocation | None:
        """The revocation of ``key_hash`` if it has not expired (by ``now``)."""
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] > (time.monotonic() if now is None else now):
            return entry
        return None

    def all_in_force(self) -> list[tuple[str, Revocation]]:
        now = time.monotonic()
        return [(key_hash, entry) for key_hash, entry in self._entries.items() if entry[0] > now]

    def ttl_left(self, expires: float | None) -> float:
        # The revoke marker carries its expiry (wall clock, only to size the local
        # cache; ordering never depends on clocks).
        return self.default_ttl if expires is None else max(0.0, expires - time.time())
