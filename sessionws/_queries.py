"""Confirmed closes and counts: questions to every live node, and their answers."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from sessionws._handles import KeyState

__all__ = ("Queries", "Query", "decode_members", "encode_members")


class Query:
    """One question, waiting for every expected node's answer.

    ``expected`` is the live membership when it was asked; ``receivers`` (where the
    broker reports how many received the question) adds nodes not yet in the
    membership. Complete when both are satisfied.
    """

    __slots__ = ("answers", "details", "done", "expected", "known", "observers", "receivers")

    def __init__(self, expected: frozenset[str], *, known: bool = True) -> None:
        self.expected = expected
        #: False when the asker had not yet heard the membership (it just started, or
        #: the broker lost its data): then no answer can make the question complete.
        self.known = known
        self.receivers: int | None = None
        self.answers: dict[str, int] = {}
        #: What answers carried besides their count (presence: the members' list).
        self.details: dict[str, str] = {}
        self.observers: set[str] = set()
        self.done = anyio.Event()

    def answer(self, node: str, count: int, *, observer: bool = False, detail: str | None = None) -> None:
        """Record a node's answer; an observer (a publish-only registry, such as the
        admin CLI) counts as a receiver that answered, but holds no sockets."""
        if observer:
            self.observers.add(node)
        else:
            self.answers[node] = count
            if detail is not None:
                self.details[node] = detail
        self.check()

    def expect_receivers(self, receivers: int | None) -> None:
        if receivers is not None:
            # Every registry reads the control channel, the asker included.
            self.receivers = max(0, receivers - 1)
        self.check()

    def check(self) -> None:
        if self.complete:
            self.done.set()

    @property
    def complete(self) -> bool:
        if not self.known or not self.expected.issubset(self.answers):
            return False
        return self.receivers is None or len(self.answers) + len(self.observers) >= self.receivers

    @property
    def missing(self) -> frozenset[str]:
        # ``frozenset - dict_keys`` would give a plain set.
        return self.expected.difference(self.answers)


class Queries:
    """Open questions by token; a question is forgotten after ``keep`` seconds."""

    def __init__(self, keep: float) -> None:
        self._keep = keep
        self._open: dict[str, Query] = {}

    def open(self, query: Query, tasks: TaskGroup) -> str:
        token = secrets.token_hex(8)
        self._open[token] = query
        tasks.start_soon(self._expire, token)
        return token

    def answer(
        self, token: str, node: str, count: int, *, observer: bool = False, detail: str | None = None
    ) -> None:
        query = self._open.get(token)
        if query is not None:
            query.answer(node, count, observer=observer, detail=detail)

    async def _expire(self, token: str) -> None:
        try:
            with anyio.move_on_after(self._keep):
                await self._open[token].done.wait()
        finally:
            self._open.pop(token, None)

    def release_all(self) -> None:
        """Wake every waiter (shutdown)."""
        for query in self._open.values():
            query.done.set()


def encode_members(state: KeyState | None, limit: int | None, max_payload: int) -> tuple[int, str]:
    """This node's sockets of a key, as the JSON list a ``members`` reply carries (cut
    to ``limit`` and to what one broker message can hold), and how many there are."""
    handles = sorted(
        (handle for handle in (state.handles if state is not None else ()) if not handle.closing),
        key=lambda handle: handle.number,
    )
    listing = [{"h": handle.id, "k": list(handle.keys), "d": handle.data} for handle in handles[:limit]]
    text = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
    budget = max_payload // 2
    while len(text.encode("utf-8")) > budget and listing:
        listing = listing[: len(listing) // 2]
        text = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
    return len(handles), text


def decode_members(listing: str) -> list[tuple[str, tuple[str, ...], Mapping[str, Any] | None]]:
    """Decode a ``members`` answer; what does not fit the shape is left out."""
    try:
        entries = json.loads(listing)
    except (ValueError, RecursionError):
        return []
    result: list[tuple[str, tuple[str, ...], Mapping[str, Any] | None]] = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        handle_id, keys, data = entry.get("h"), entry.get("k"), entry.get("d")
        if not isinstance(handle_id, str) or not isinstance(keys, list):
            continue
        if not all(isinstance(key, str) for key in keys) or not (data is None or isinstance(data, dict)):
            continue
        result.append((handle_id, tuple(keys), data))
    return result
