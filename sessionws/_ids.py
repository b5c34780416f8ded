"""The stock id provider: the session-ws id lives under a key of the user's session."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Generic, TypeVar, cast

__all__ = ("IdFactory", "SessionKeyIdProvider", "default_id_factory", "normalize_id_factory")

RequestT = TypeVar("RequestT")

#: A sync or async callable making a new id for a request.
IdFactory = Callable[[RequestT], str] | Callable[[RequestT], Awaitable[str]]

DEFAULT_SESSION_KEY = "sessionws_id"


def default_id_factory(request: object) -> str:
    """128 bits of randomness, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def check_id(value: object, *, source: str) -> str:
    """Return ``value`` if it is a usable id, else raise a clear ``TypeError``/``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(f"{source} must return a str id, but returned {type(value).__name__}: {value!r:.60}")
    if not value:
        raise ValueError(f"{source} returned an empty id; ids must be non-empty strings")
    return value


def _check_takes_the_request(factory: Callable[..., object], source: str) -> None:
    """Refuse, at construction, a factory that cannot be called with the request.

    Otherwise the mistake (``id_factory=lambda: uuid.uuid4().hex``) would surface as a
    500 on the first request that needs an id.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        signature.bind(object())
    except TypeError:
        raise TypeError(
            f"{source}{signature} cannot be called with the request: an id factory takes the "
            "request as its one argument and returns a str, e.g. "
            "id_factory=lambda request: uuid.uuid4().hex"
        ) from None


def normalize_id_factory(factory: IdFactory[RequestT]) -> Callable[[RequestT], Awaitable[str]]:
    """Turn a sync or async id factory into one async callable, once.

    The factory takes the request as its one argument; one that cannot be called so
    raises ``TypeError`` here. Its kind is decided here, at construction, not sniffed on every call;
    a sync factory that returns an awaitable is still awaited, so wrappers such as
    ``functools.partial`` of a coroutine function work too. Results are checked.
    """
    if not callable(factory):
        raise TypeError(f"id_factory must be callable, not {type(factory).__name__}")
    name = getattr(factory, "__qualname__", repr(factory))
    source = f"id_factory {name}"
    _check_takes_the_request(factory, source)
    if inspect.iscoroutinefunction(factory) or inspect.iscoroutinefunction(
        getattr(factory, "__call__", None)  # noqa: B004 - instances with an async __call__
    ):
        async_factory = cast(Callable[[RequestT], Awaitable[str]], factory)

        async def call_async(request: RequestT) -> str:
            return check_id(await async_factory(request), source=source)

        return call_async

    def_factory = cast(Callable[[RequestT], Any], factory)

    async def call_sync(request: RequestT) -> str:
        value = def_factory(request)
        if inspect.isawaitable(value):
            value = await value
        return check_id(value, source=source)

    return call_sync


class SessionKeyIdProvider(Generic[RequestT]):
    """Keep the id in the request's session under ``session_key``.

    ``get_session`` maps a request to its session (a mutable mapping): the adapters
    pass aiohttp-session's ``get_session`` or Starlette's ``request.session``.
    ``id_factory`` makes new ids; sync and async factories both work, and a factory
    returning ``None``, ``""`` or a non-string raises a clear error instead of
    registering sockets under junk.
    """

    def __init__(
        self,
        get_session: Callable[[RequestT], Awaitable[MutableMapping[str, Any]]],
        *,
        id_factory: IdFactory[RequestT] = default_id_factory,
        session_key: str = DEFAULT_SESSION_KEY,
    ) -> None:
        if not isinstance(session_key, str) or not session_key:
            raise ValueError("session_key must be a non-empty string")
        self._get_session = get_session
        self._make_id = normalize_id_factory(id_factory)
        self.session_key = session_key

    async def get_id(self, request: RequestT) -> str | None:
        session = await self._get_session(request)
        value = session.get(self.session_key)
        return value if isinstance(value, str) and value else None

    async def new_id(self, request: RequestT) -> str:
        new = await self._make_id(request)
        session = await self._get_session(request)
        session[self.session_key] = new
        return new

    async def delete_id(self, request: RequestT) -> None:
        session = await self._get_session(request)
        session.pop(self.session_key, None)

    async def ensure_id(self, request: RequestT) -> str:
        current = await self.get_id(request)
        return current if current is not None else await self.new_id(request)
