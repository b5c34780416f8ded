"""``SessionWSMiddleware``: make sure a session has its id before its first websocket.

Browsers such as Safari ignore ``Set-Cookie`` on a websocket upgrade, and Starlette's
``SessionMiddleware`` writes its cookie only on HTTP responses, so the id must be
created by an HTTP request (the page) before the websocket connects. Pure ASGI: it
does not wrap responses or buffer bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionws_starlette._state import get_id_provider

__all__ = ("EPHEMERAL_SCOPE_KEY", "SessionWSMiddleware")

#: Set to ``True`` in a websocket's scope when its id was minted for it alone.
EPHEMERAL_SCOPE_KEY = "sessionws.ephemeral_id"


class SessionWSMiddleware:
    """Ensure the session-ws id on HTTP requests; list it after (inside) ``SessionMiddleware``::

        middleware=[
            Middleware(SessionMiddleware, secret_key=...),       # outside: loads and saves the cookie
            Middleware(SessionWSMiddleware, paths=["/", "/app/{rest:path}"]),  # inside: sees the session
        ]

    ``paths``: where it acts (default: everywhere), so static files and health checks do
    not mint sessions. Each is a path pattern in Starlette's routing syntax, matched
    against the whole path: ``"/"`` is the home page only, ``"/rooms/{room}"`` one
    segment, ``"/app/{rest:path}"`` everything under ``/app/``.

    ``ephemeral_ids``: a websocket (on those paths) whose session has no id normally
    gets refused by :func:`session_ws` with 1008; with ``ephemeral_ids=True`` it gets an id
    minted for it alone instead (not saved in the cookie, so closing "the session"
    from an HTTP request cannot reach it; ``scope["sessionws.ephemeral_id"]`` is true).
    """

    def __init__(
        self, app: ASGIApp, *, paths: Iterable[str] | None = None, ephemeral_ids: bool = False
    ) -> None:
        self.app = app
        self.ephemeral_ids = ephemeral_ids
        self._patterns: tuple[re.Pattern[str], ...] | None = None
        if paths is not None:
            if isinstance(paths, str):
                raise TypeError("paths must be a collection of path patterns, e.g. paths=['/'], not a str")
            self._patterns = tuple(_compile(path) for path in paths)

    def covers(self, path: str) -> bool:
        """Whether the middleware acts on requests for ``path``."""
        if self._patterns is None:
            return True
        return any(pattern.match(path) for pattern in self._patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket") and self.covers(_route_path(scope)):
            connection: HTTPConnection = HTTPConnection(scope)
            ids = get_id_provider(connection)
            if kind == "http":
                await ids.ensure_id(connection)
            elif self.ephemeral_ids and await ids.get_id(connection) is None:
                await ids.new_id(connection)
                scope[EPHEMERAL_SCOPE_KEY] = True
        await self.app(scope, receive, send)


def _compile(path: object) -> re.Pattern[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"paths are URL path patterns starting with '/', not {path!r}")
    try:
        return compile_path(path)[0]
    except (AssertionError, ValueError) as error:  # Starlette asserts on unknown convertors
        raise ValueError(f"bad path pattern {path!r}: {error}") from None


def _route_path(scope: Scope) -> str:
    """The path as routes see it: without the ``root_path`` an app is mounted under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("", "/"):
        return path[len(root_path) :] or "/"
    return path
