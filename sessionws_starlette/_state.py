"""Where a Starlette app keeps its registry and id provider: lifespan state, or ``app.state``.

``sessionws_lifespan`` runs the registry for as long as the app runs and hands it to
every request through lifespan state (a shallow copy of the state lands in each
request's scope, mounted sub-apps included). Apps whose server runs no lifespan set
``app.state.sessionws_registry`` and run ``async with registry:`` themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Protocol, TypeVar

from starlette.requests import HTTPConnection

from sessionws import (
    CLOSE_SHUTDOWN,
    DEFAULT_MAX_SOCKETS_PER_SESSION,
    IdFactory,
    IdProvider,
    NotConfiguredError,
    Registry,
    SessionKeyIdProvider,
    SessionRegistry,
    WebSocketGuard,
    default_id_factory,
)

__all__ = (
    "GUARD_STATE_KEY",
    "ID_PROVIDER_STATE_KEY",
    "REGISTRY_STATE_KEY",
    "RunnableRegistry",
    "get_guard",
    "get_id_provider",
    "get_registry",
    "sessionws_lifespan",
    "starlette_session",
)

#: The lifespan-state key (and ``app.state`` attribute) holding the registry.
REGISTRY_STATE_KEY = "sessionws_registry"
#: The lifespan-state key (and ``app.state`` attribute) holding the id provider.
ID_PROVIDER_STATE_KEY = "sessionws_id_provider"
#: The lifespan-state key (and ``app.state`` attribute) holding the :class:`~sessionws.WebSocketGuard`.
GUARD_STATE_KEY = "sessionws_guard"

AppT = TypeVar("AppT")


class RunnableRegistry(Registry, Protocol):
    """A :class:`~sessionws.Registry` that is also run as an async context manager
    (:class:`~sessionws.SessionRegistry` is one)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None: ...


async def starlette_session(connection: HTTPConnection) -> MutableMapping[str, Any]:
    """The session of a Starlette request or websocket, for :class:`~sessionws.SessionKeyIdProvider`."""
    if "session" not in connection.scope:
        raise NotConfiguredError(
            "sessionws keeps its id in the session, but this request has none: add "
            "Middleware(SessionMiddleware, secret_key=...) to your app, listed before (outside) "
            "Middleware(SessionWSMiddleware)"
        )
    return connection.session


_DEFAULT_ID_PROVIDER: IdProvider[HTTPConnection] = SessionKeyIdProvider(starlette_session)
#: For apps that configure none: own origin only, 100 sockets per session and node.
_DEFAULT_GUARD = WebSocketGuard()


def sessionws_lifespan(
    # SessionRegistry is named too: its ``revoke`` lacks the protocol's ``exclude``.
    registry: RunnableRegistry | SessionRegistry,
    lifespan: Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any] | None]] | None = None,
    *,
    id_provider: IdProvider[HTTPConnection] | None = None,
    session_key: str | None = None,
    id_factory: IdFactory[HTTPConnection] | None = None,
    allowed_origins: str | Iterable[str] | None = None,
    trust_forwarded: bool = False,
    require_origin: bool = False,
    max_sockets_per_session: int | None = DEFAULT_MAX_SOCKETS_PER_SESSION,
) -> Callable[[AppT], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan that runs ``registry`` for the app's lifetime, around your own ``lifespan``.

    ``Starlette(..., lifespan=sessionws_lifespan(registry, my_lifespan))`` (FastAPI alike).
    Startup enters the registry, then your lifespan (so it may use the registry); the
    state your lifespan yields is kept, with ``sessionws_registry`` and
    ``sessionws_id_provider`` added. Shutdown closes this node's sockets with 1001, then
    leaves your lifespan, then the registry. (uvicorn closes open websockets with 1012
    itself before the lifespan shuts down, so under uvicorn the 1001 close reaches only
    sockets the server left open.)

    The id lives in the session under ``session_key`` (default ``"sessionws_id"``), made by
    ``id_factory``; or pass your own ``id_provider`` (e.g. ids from a JWT) instead.

    Before the accept, ``session_ws`` refuses an ``Origin`` that is not allowed (403): by
    default anything but the request's own origin; ``allowed_origins`` lists others
    (``"https://*.example.com"``), ``"*"`` allows any; ``trust_forwarded=True`` reads the
    own origin from the proxy's ``Forwarded``/``X-Forwarded-*`` headers; ``require_origin=True``
    also refuses upgrades without ``Origin``. It refuses a socket beyond
    ``max_sockets_per_session`` of one session id on this node (429; ``None``: no cap).
    See :class:`~sessionws.WebSocketGuard` (state key ``sessionws_guard``).
    """
    if id_provider is not None and (session_key is not None or id_factory is not None):
        raise ValueError("pass either id_provider, or session_key/id_factory for the stock provider")
    if id_provider is not None:
        provider = id_provider
    elif session_key is None and id_factory is None:
        provider = _DEFAULT_ID_PROVIDER
    else:
        provider = SessionKeyIdProvider(
            starlette_session,
            id_factory=default_id_factory if id_factory is None else id_factory,
            session_key="sessionws_id" if session_key is None else session_key,
        )
    guard = WebSocketGuard(
        allowed_origins=allowed_origins,
        trust_forwarded=trust_forwarded,
        require_origin=require_origin,
        max_sockets_per_session=max_sockets_per_session,
    )
    for name in ("__aenter__", "__aexit__", "close_all", "register"):
        if not hasattr(registry, name):
            raise TypeError(
                f"sessionws_lifespan needs a registry such as sessionws.SessionRegistry, "
                f"not {type(registry).__name__}"
            )

    @asynccontextmanager
    async def run(app: AppT) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(registry)
            user_state = await stack.enter_async_context(lifespan(app)) if lifespan is not None else None
            # Close sockets before the user's teardown, so handlers still have what they use.
            stack.push_async_callback(
                registry.close_local, code=CLOSE_SHUTDOWN, reason="server shutting down"
            )
            yield {
                **(user_state or {}),
                REGISTRY_STATE_KEY: registry,
                ID_PROVIDER_STATE_KEY: provider,
                GUARD_STATE_KEY: guard,
            }

    return run


def _lookup(connection: HTTPConnection, name: str) -> Any:
    state = connection.scope.get("state")
    if isinstance(state, Mapping) and name in state:
        return state[name]
    app = connection.scope.get("app")
    return getattr(getattr(app, "state", None), name, None)


def get_registry(connection: HTTPConnection) -> Registry:
    """The app's registry, from lifespan state or ``app.state``.

    Also a FastAPI dependency: ``registry: Annotated[Registry, Depends(get_registry)]``.
    """
    registry = _lookup(connection, REGISTRY_STATE_KEY)
    if registry is None:
        raise NotConfiguredError(
            "sessionws is not set up for this app: add lifespan=sessionws_lifespan(registry) to your "
            "app (it wraps your own lifespan: sessionws_lifespan(registry, your_lifespan)), or set "
            "app.state.sessionws_registry = registry and run `async with registry:` yourself"
        )
    return registry  # type: ignore[no-any-return]


def get_guard(connection: HTTPConnection) -> WebSocketGuard:
    """The app's websocket guard (origin check, socket cap): from lifespan state or
    ``app.state.sessionws_guard``, else the default one."""
    guard = _lookup(connection, GUARD_STATE_KEY)
    if guard is None:
        return _DEFAULT_GUARD
    if not isinstance(guard, WebSocketGuard):
        raise TypeError(f"{GUARD_STATE_KEY} must be a sessionws.WebSocketGuard, not {type(guard).__name__}")
    return guard


def get_id_provider(connection: HTTPConnection) -> IdProvider[HTTPConnection]:
    """The app's id provider (the stock session-key provider unless configured)."""
    provider = _lookup(connection, ID_PROVIDER_STATE_KEY)
    return _DEFAULT_ID_PROVIDER if provider is None else provider
