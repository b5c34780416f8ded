"""``setup(app, registry)``: tie a registry to an aiohttp application's lifetime.

The registry runs inside one owner task for the whole life of the app (started in
``cleanup_ctx``, stopped in its cleanup), so it is entered and left in the same
task however the server drives startup and cleanup (``run_app``, ``AppRunner``,
test fixtures that run them in different tasks). Sockets are closed with 1001 in
``on_shutdown``, before aiohttp waits for the handlers; the broker stays connected
until cleanup, so closes issued during shutdown still reach the other nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp_session
import anyio
import anyio.abc
from aiohttp import web

from sessionws import (
    CLOSE_SHUTDOWN,
    DEFAULT_MAX_SOCKETS_PER_SESSION,
    IdProvider,
    NotConfiguredError,
    SessionKeyIdProvider,
    SessionRegistry,
    WebSocketGuard,
)

from ._compat import SessionWSRegistry
from ._session import note_id_changed

__all__ = ("AppState", "ensure_id", "get_registry", "new_id", "setup", "state_of")

logger = logging.getLogger("sessionws.aiohttp")

#: How long cleanup waits for closes scheduled by the last responses.
_DRAIN_TIMEOUT = 10.0
#: How long a scheduled close waits for its response to be written out; a
#: keep-alive connection the handler did not mark ``force_close`` ends the wait.
_RESPONSE_TIMEOUT = 30.0

_SETUP_HINT = (
    "call sessionws_aiohttp.setup(app, registry) on the application (or a parent "
    "application) before it starts"
)


class _Lifetime:
    """The owner task of the registry and of closes scheduled after responses."""

    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry
        self._task: asyncio.Task[None] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pending = 0
        self._idle = asyncio.Event()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this application's sessionws registry is already running")
        self._started, self._stopping = asyncio.Event(), asyncio.Event()
        self._task = task = asyncio.create_task(self._run(), name="sessionws registry")
        task.add_done_callback(self._ended)
        started = asyncio.ensure_future(self._started.wait())
        try:
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if task.done():
            task.result()  # raises what went wrong entering the registry
            raise RuntimeError("the sessionws registry stopped during startup")

    async def _run(self) -> None:
        # Plain nesting, no AsyncExitStack: a second SIGTERM during aiohttp's shutdown
        # cancels this task while it unwinds, and contextlib's exception-context fixing
        # was seen looping forever on the resulting exception chain.
        if self.registry.running:  # its owner entered it (several apps may share one)
            await self._serve()
        else:
            async with self.registry:
                await self._serve()

    async def _serve(self) -> None:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            self._started.set()
            await self._stopping.wait()
            with anyio.move_on_after(_DRAIN_TIMEOUT):
                while self._pending:
                    self._idle.clear()
                    await self._idle.wait()
            if self._pending:
                logger.warning("cancelling %d scheduled closes at cleanup", self._pending)
            tasks.cancel_scope.cancel()
        self._tasks = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        stopped_early = self._started.is_set() and not self._stopping.is_set()
        if stopped_early and not task.cancelled() and task.exception() is not None:
            logger.error("the registry stopped while the app runs", exc_info=task.exception())

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        self._stopping.set()
        self._task = None
        await task

    def after_response(
        self, request: web.BaseRequest, action: Callable[[], Awaitable[object]], what: str = "close"
    ) -> None:
        """Run ``action`` once ``request``'s connection has written its response out
        (``what`` names it in the log if it fails)."""
        tasks = self._tasks
        if tasks is None:
            raise NotConfiguredError(f"the application is not running; {_SETUP_HINT}")
        self._pending += 1
        tasks.start_soon(self._run_after, request.task, action, what)

    async def _run_after(
        self, connection: asyncio.Task[None], action: Callable[[], Awaitable[object]], what: str
    ) -> None:
        try:
            # asyncio.wait never cancels what it waits for (awaiting the task would).
            await asyncio.wait({connection}, timeout=_RESPONSE_TIMEOUT)
            await action()
        except Exception:
            logger.exception("the %s scheduled after a response failed", what)
        finally:
            self._pending -= 1
            self._idle.set()


@dataclass(frozen=True, slots=True)
class AppState:
    """What ``setup`` stores in the application."""

    registry: SessionRegistry
    id_provider: IdProvider[web.Request]
    lifetime: _Lifetime
    guard: WebSocketGuard


STATE_KEY = web.AppKey("sessionws_aiohttp", AppState)


def setup(
    app: web.Application,
    registry: SessionRegistry | SessionWSRegistry,
    *,
    id_provider: IdProvider[web.Request] | None = None,
    allowed_origins: str | Iterable[str] | None = None,
    trust_forwarded: bool = False,
    require_origin: bool = False,
    max_sockets_per_session: int | None = DEFAULT_MAX_SOCKETS_PER_SESSION,
) -> None:
    """Store ``registry`` in ``app`` and tie it to the app's lifetime.

    ``registry`` is a :class:`~sessionws.SessionRegistry` (any transport URL) or the
    compatibility :class:`SessionWSRegistry`. ``id_provider`` says where a request's
    session-ws id lives; the default keeps it in the aiohttp-session session under
    ``"sessionws_id"`` (``SessionWSRegistry`` brings its own, with the old key).
    Sub-applications find the registry of their parent.

    Before an upgrade, ``session_ws`` refuses with 403 an ``Origin`` that is not
    allowed: by default anything but the request's own origin; ``allowed_origins``
    lists others (``"https://*.example.com"``), ``"*"`` allows any;
    ``trust_forwarded=True`` reads the own origin from the proxy's ``Forwarded`` /
    ``X-Forwarded-*`` headers; ``require_origin=True`` also refuses upgrades without
    ``Origin``. It refuses with 429 a socket beyond ``max_sockets_per_session`` of one
    session id on this node (``None``: no cap). See :class:`~sessionws.WebSocketGuard`.
    """
    if not isinstance(app, web.Application):
        raise TypeError(f"setup needs an aiohttp web.Application, not {type(app).__name__}")
    if STATE_KEY in app:
        raise RuntimeError("sessionws_aiohttp.setup was already called for this application")
    provider: IdProvider[web.Request]
    if isinstance(registry, SessionWSRegistry):
        if id_provider is not None:
            raise TypeError(
                "SessionWSRegistry brings its own id provider: pass id_factory= and session_key= "
                "to SessionWSRegistry, or use a SessionRegistry with id_provider="
            )
        core, provider = registry.registry, registry.id_provider
    elif isinstance(registry, SessionRegistry):
        core = registry
        if id_provider is None:
            id_provider = SessionKeyIdProvider[web.Request](aiohttp_session.get_session)
        provider = id_provider
    else:
        raise TypeError(
            f"registry must be a SessionRegistry or SessionWSRegistry, not {type(registry).__name__}"
        )
    guard = WebSocketGuard(
        allowed_origins=allowed_origins,
        trust_forwarded=trust_forwarded,
        require_origin=require_origin,
        max_sockets_per_session=max_sockets_per_session,
    )
    state = AppState(core, provider, _Lifetime(core), guard)
    app[STATE_KEY] = state

    async def run_registry(app: web.Application) -> AsyncIterator[None]:
        await state.lifetime.start()
        try:
            yield
        finally:
            await state.lifetime.stop()

    async def close_sockets(app: web.Application) -> None:
        if core.running:
            closed = await core.close_local(code=CLOSE_SHUTDOWN, reason="server shutting down")
            logger.info("closed %d websockets at shutdown", closed)

    app.cleanup_ctx.append(run_registry)
    app.on_shutdown.append(close_sockets)


def state_of(request_or_app: web.Request | web.Application) -> AppState:
    """The state ``setup`` stored, found through ``config_dict`` (sub-apps see their parent's)."""
    if isinstance(request_or_app, web.Application):
        state = request_or_app.get(STATE_KEY)
    elif isinstance(request_or_app, web.Request):
        state = request_or_app.config_dict.get(STATE_KEY)
    else:
        raise TypeError(
            f"expected an aiohttp web.Request or web.Application, not {type(request_or_app).__name__}"
        )
    if state is None:
        raise NotConfiguredError(f"sessionws is not set up for this application: {_SETUP_HINT}")
    return state


def get_registry(request_or_app: web.Request | web.Application) -> SessionRegistry:
    """The :class:`~sessionws.SessionRegistry` of this request's (or app's) application."""
    return state_of(request_or_app).registry


async def new_id(request: web.Request) -> str:
    """A fresh id for the request's session, remembered as a change of this request."""
    value = await state_of(request).id_provider.new_id(request)
    note_id_changed(request)
    return value


async def ensure_id(request: web.Request) -> str:
    """The request's id, made (and remembered as a change) when missing."""
    current = await state_of(request).id_provider.get_id(request)
    return current if current is not None else await new_id(request)
