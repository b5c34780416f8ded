"""``session_ws_middleware``: make sure the session has an id before its first websocket.

Browsers such as Safari ignore ``Set-Cookie`` on a websocket upgrade, so the id must
reach the browser on an ordinary response first — typically the page that opens the
websocket. Place the middleware after (inside) aiohttp-session's, which saves the
session on the response::

    app = web.Application(middlewares=[session_middleware(storage), session_ws_middleware])

Used bare, it ensures the id on every request (as ``aiohttp_session_ws`` did). Called
with ``paths=`` and/or ``when=``, it returns a middleware limited to those requests,
so static files, health checks and API calls do not mint sessions::

    session_ws_middleware(paths=["/", "/rooms/{room}"])
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import overload

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._app import ensure_id
from ._session import id_changed, save_session_on

__all__ = ("session_ws_middleware",)


@overload
def session_ws_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]: ...


@overload
def session_ws_middleware(
    *, paths: Iterable[str] | None = None, when: Callable[[web.Request], bool] | None = None
) -> Middleware: ...


@web.middleware
def session_ws_middleware(
    request: web.Request | None = None,
    handler: Handler | None = None,
    *,
    paths: Iterable[str] | None = None,
    when: Callable[[web.Request], bool] | None = None,
) -> Awaitable[web.StreamResponse] | Middleware:
    """Ensure the session-ws id before the handler runs (see the module's docstring).

    ``paths``: URL paths or route patterns as registered (``"/rooms/{room}"``), matched
    exactly. ``when``: a predicate on the request. With both, either one selects.
    """
    if request is not None:
        if handler is None or paths is not None or when is not None:
            raise TypeError("use session_ws_middleware as a middleware, or call it with paths=/when=")
        return _ensure_then(request, handler)
    if handler is not None:
        raise TypeError("session_ws_middleware(paths=..., when=...) takes keyword arguments only")
    if paths is None and when is None:
        raise TypeError("session_ws_middleware() needs paths= or when= (or use it bare, uncalled)")
    if isinstance(paths, str):
        raise TypeError('paths must be a collection of paths, e.g. paths=["/"], not a str')
    selected = frozenset(paths or ())
    for path in selected:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"paths must be URL paths or route patterns starting with '/', not {path!r}")
    if when is not None and not callable(when):
        raise TypeError(f"when must be a callable taking the request, not {type(when).__name__}")

    def wanted(request: web.Request) -> bool:
        if selected:
            if request.path in selected:
                return True
            resource = request.match_info.route.resource
            if resource is not None and resource.canonical in selected:
                return True
        return when is not None and bool(when(request))

    @web.middleware
    async def limited_session_ws_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if wanted(request):
            return await _ensure_then(request, handler)
        return await handler(request)

    return limited_session_ws_middleware


async def _ensure_then(request: web.Request, handler: Handler) -> web.StreamResponse:
    await ensure_id(request)
    response = await handler(request)
    if id_changed(request) and not isinstance(response, web.Response) and not response.prepared:
        # aiohttp-session saves sessions on plain responses only; a FileResponse page
        # would otherwise never deliver the id it was meant to deliver.
        await save_session_on(request, response)
    return response
