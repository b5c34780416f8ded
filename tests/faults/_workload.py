"""The workload: users with sessions and sockets on every node, and every verb, at once.

Real websocket clients connect and leave (several sessions, several sockets each, on
every node); ``close_all`` (with and without ``confirm``), ``revoke``, ``rotate``,
``send_all`` and ``count`` are called on random nodes; revoked session ids try to
connect again (probes). Every call and every socket is recorded in the history with
its times; the sockets are kept as :class:`Tracked` for the checker. Choices come from
the seed; which of them meet which fault depends on timing.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.cluster._clients import Browser, Clients, Socket
from tests.cluster._cluster import Cluster
from tests.faults._history import Entry, History

__all__ = ("Session", "Tracked", "Workload")

_HELLO_TIMEOUT = 30.0
_IN_FLIGHT = 16
_USERS = 5
_ACTIONS = {
    "login": 14,
    "connect": 14,
    "leave": 10,
    "close": 10,
    "confirm-close": 6,
    "revoke": 5,
    "rotate": 5,
    "send": 7,
    "count": 7,
    "probe": 8,
}


@dataclass
class Session:
    """A browser and the user it logged in as."""

    browser: Browser
    user: str

    @property
    def keys(self) -> tuple[str, str]:
        return self.browser.session_id, f"user:{self.user}"


@dataclass
class Tracked:
    """One websocket the workload opened (registered or not)."""

    socket: Socket
    node: int
    keys: tuple[str, str]
    connect: Entry
    #: The revoke or rotate whose key this socket tried to register again.
    probe_of: Entry | None = None
    #: When the client itself closed it (history time), if it did.
    left_at: float | None = None

    @property
    def node_id(self) -> str:
        """The registry node that holds it (its handle is ``<node id>.<n>``)."""
        return self.socket.handle.rpartition(".")[0]


@dataclass
class Revoked:
    """A session id revoked by ``entry`` (a revoke or a rotate), kept to probe with: a
    browser holding a copy of the session's cookie from before the call."""

    browser: Browser
    user: str
    entry: Entry


class Workload:
    """Drives the clients and the verbs of one run."""

    def __init__(self, cluster: Cluster, clients: Clients, history: History, seed: int) -> None:
        self.cluster = cluster
        self.clients = clients
        self.history = history
        self.rng = random.Random(f"workload:{seed}")
        self.users = [f"u{index}-{seed % 10_000}" for index in range(_USERS)]
        self.sessions: list[Session] = []
        self.revoked: list[Revoked] = []
        self.sockets: list[Tracked] = []
        self._slots = asyncio.Semaphore(_IN_FLIGHT)
        self._sent = 0

    # ------------------------------------------------------------------ the loop
    async def run(self, duration: float) -> None:
        """Start actions until ``duration`` (history time); return when all are done."""
        names = list(_ACTIONS)
        async with asyncio.TaskGroup() as actions:
            while self.history.now() < duration:
                name = self.rng.choices(names, [_ACTIONS[name] for name in names])[0]
                node = self.rng.randrange(3)
                pick = self.rng.random()
                await self._slots.acquire()
                actions.create_task(self._act(name, node, pick))
                await asyncio.sleep(self.rng.uniform(0.02, 0.15))

    async def _act(self, name: str, node: int, pick: float) -> None:
        try:
            await getattr(self, "_" + name.replace("-", "_"))(node, pick)
        finally:
            self._slots.release()

    def _session(self, pick: float) -> Session | None:
        return self.sessions[int(pick * len(self.sessions))] if self.sessions else None

    # ------------------------------------------------------------------ actions
    async def _login(self, node: int, pick: float) -> None:
        session = Session(self.clients.browser(), self.users[int(pick * len(self.users))])
        entry, status, body = await self.call(
            "login", node, session.browser, "POST", "/login", user=session.user
        )
        if status != 200:
            return
        session.browser.session_id = entry.detail["key"] = str(body["session"])
        self.sessions.append(session)
        for _ in range(1 + int(pick * 7) % 3):
            await self.connect(session, self.rng.randrange(3))

    async def _connect(self, node: int, pick: float) -> None:
        if (session := self._session(pick)) is not None:
            await self.connect(session, node)

    async def _leave(self, node: int, pick: float) -> None:
        open_sockets = [
            tracked
            for tracked in self.sockets
            if tracked.left_at is None and not tracked.socket.closed.is_set()
        ]
        if open_sockets:
            await self.leave(open_sockets[int(pick * len(open_sockets))])

    async def _close(self, node: int, pick: float, confirm: bool = False) -> None:
        if (session := self._session(pick)) is None:
            return
        key = session.keys[int(pick * 1000) % 2]
        browser = self.clients.browser()
        if confirm:
            await self.call("close", node, browser, "POST", "/close", key=key, confirm="1", timeout="2")
        else:
            await self.call("close", node, browser, "POST", "/close", key=key)

    async def _confirm_close(self, node: int, pick: float) -> None:
        await self._close(node, pick, confirm=True)

    def _snapshot(self, session: Session) -> Browser:
        """A browser with a copy of ``session``'s cookie (its id as it is now)."""
        copy = self.clients.browser()
        copy.cookies, copy.session_id = dict(session.browser.cookies), session.browser.session_id
        return copy

    async def _revoke(self, node: int, pick: float) -> None:
        if (session := self._session(pick)) is None:
            return
        self.sessions.remove(session)
        before = self._snapshot(session)
        browser = self.clients.browser()
        entry, status, _ = await self.call(
            "revoke", node, browser, "POST", "/revoke", key=before.session_id, ttl="600"
        )
        if status == 200:
            self.revoked.append(Revoked(before, session.user, entry))

    async def _rotate(self, node: int, pick: float) -> None:
        if (session := self._session(pick)) is None:
            return
        before = self._snapshot(session)
        entry, status, body = await self.call(
            "rotate", node, session.browser, "POST", "/rotate", key=before.session_id
        )
        if status == 200:
            session.browser.session_id = str(body["session"])
            entry.detail["new_key"] = session.browser.session_id
            self.revoked.append(Revoked(before, session.user, entry))

    async def _send(self, node: int, pick: float) -> None:
        if (session := self._session(pick)) is not None:
            self._sent += 1
            key = session.keys[int(pick * 1000) % 2]
            await self.call(
                "send", node, self.clients.browser(), "POST", "/send", key=key, data=f"m{self._sent}"
            )

    async def _count(self, node: int, pick: float) -> None:
        if (session := self._session(pick)) is not None:
            key = session.keys[int(pick * 1000) % 2]
            await self.call("count", node, self.clients.browser(), "GET", "/count", key=key, timeout="2")

    async def _probe(self, node: int, pick: float) -> None:
        if self.revoked:
            revoked = self.revoked[int(pick * len(self.revoked))]
            await self.connect(Session(revoked.browser, revoked.user), node, probe_of=revoked.entry)

    # ------------------------------------------------------------------ storms
    async def pool_storm(self, node: int, calls: int) -> str:
        """Hundreds of concurrent closes on one node (most of keys nobody holds)."""
        browser = self.clients.browser()

        async def one(index: int) -> Entry:
            session = self._session(self.rng.random()) if index % 10 == 0 else None
            key = (
                session.keys[index % 2] if session is not None else f"storm-{self.history.now():.3f}-{index}"
            )
            entry, _, _ = await self.call("close", node, browser, "POST", "/close", storm=True, key=key)
            return entry

        entries = await asyncio.gather(*(one(index) for index in range(calls)))
        queued = sum(1 for entry in entries if entry.answer.get("queued"))
        failed = sum(1 for entry in entries if entry.detail.get("status") != 200)
        return f"{calls} closes: {queued} queued, {failed} failed"

    async def connect_storm(self, node: int, sockets: int) -> str:
        """Many sessions connect to one node at once, then all leave."""
        sessions = [
            Session(self.clients.browser(), f"storm-{self.history.now():.2f}") for _ in range(sockets // 3)
        ]
        logins = await asyncio.gather(
            *(
                self.call("login", node, session.browser, "POST", "/login", user=session.user)
                for session in sessions
            )
        )
        ready = []
        for session, (_, status, body) in zip(sessions, logins, strict=True):
            if status == 200:
                session.browser.session_id = str(body["session"])
                ready.append(session)
        results = await asyncio.gather(*(self.connect(session, node) for session in ready for _ in range(3)))
        opened = [tracked for tracked in results if tracked is not None]
        await asyncio.sleep(0.3)
        await asyncio.gather(*(self.leave(tracked) for tracked in opened))
        registered = sum(1 for tracked in opened if tracked.socket.handle)
        return f"{len(opened)} sockets, {registered} registered, all left"

    # ------------------------------------------------------------------ clients
    async def connect(self, session: Session, node: int, *, probe_of: Entry | None = None) -> Tracked | None:
        """Open a websocket and wait until it is registered or closed (``None``: refused)."""
        keys = session.keys
        what = "probe" if probe_of is not None else "connect"
        detail: dict[str, Any] = {"key": keys[0]}
        if probe_of is not None:
            detail["revoked_by"] = f"#{probe_of.number}"
        entry = self.history.begin("workload", what, f"node{node + 1}", **detail)
        try:
            result = await session.browser.try_connect(node)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self.history.finish(entry, f"error {type(error).__name__}", failed=True)
            return None
        if not isinstance(result, Socket):
            self.history.finish(entry, f"refused {result}", refused=result)
            return None
        tracked = Tracked(result, node, keys, entry, probe_of)
        self.sockets.append(tracked)
        try:
            await asyncio.wait_for(result.hello.wait(), _HELLO_TIMEOUT)
        except TimeoutError:
            self.history.finish(entry, "no hello", failed=True)
            return tracked
        if result.handle:
            self.history.finish(entry, f"registered {result.handle}", handle=result.handle)
        else:
            self.history.finish(entry, f"closed {result.code} before registering")
        return tracked

    async def leave(self, tracked: Tracked) -> None:
        if tracked.left_at is None and not tracked.socket.closed.is_set():
            tracked.left_at = self.history.now()
            await tracked.socket.close()

    async def leave_all(self) -> None:
        """Every client leaves (before the "nothing leaks" check)."""
        await asyncio.gather(*(self.leave(tracked) for tracked in self.sockets))
        await self.clients.close_all_sockets()

    # ------------------------------------------------------------------ verbs
    async def call(
        self,
        what: str,
        node: int,
        browser: Browser,
        method: str,
        path: str,
        *,
        storm: bool = False,
        **params: str,
    ) -> tuple[Entry, int | None, Any]:
        """One HTTP call to node ``node``, recorded: the entry, the status and the body."""
        shown = {name: value for name, value in params.items() if name in ("key", "confirm", "user")}
        entry = self.history.begin(
            "workload", what, f"node{node + 1}", **shown, **({"storm": True} if storm else {})
        )
        try:
            status, body = await browser.request(method, node, path, **params)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self.history.finish(entry, f"error {type(error).__name__}", failed=True)
            return entry, None, None
        entry.detail["status"] = status
        if status != 200:
            self.history.finish(entry, f"HTTP {status} {str(body)[:80]}")
            return entry, status, body
        if isinstance(body, dict):
            entry.answer = body  # a report, or a rotate's new id and whether it was queued
        if isinstance(body, dict) and "closed_here" in body:
            summary = " ".join(
                f"{name}={body[name]}"
                for name in ("closed_here", "queued", "complete", "total")
                if body.get(name)
            )
            self.history.finish(entry, f"200 {summary} nodes={sorted(body.get('nodes') or {})}")
        else:
            self.history.finish(entry, f"200 {body}" if what in ("count", "rotate") else "200")
        return entry, status, body
