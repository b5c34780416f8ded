"""The adapters' verbs, written once and framework-neutral.

Each adapter's public verb is a thin, typed wrapper: it finds the registry, a getter
of the request's session-ws id and, for the verbs that act after the response, a
scheduler, and calls the function here. So every adapter checks arguments in the same
order (all of them before anything is read or changed, whether or not the session has
an id), answers a session without an id the same way, and offers the same options.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from sessionws._codes import validate_close
from sessionws._data import check_data
from sessionws._handles import Handle
from sessionws._protocols import Registry
from sessionws._registration import check_key, check_key_count
from sessionws._reports import CloseReport, Count, Members, SendReport

__all__ = (
    "IdGetter",
    "Schedule",
    "Work",
    "add_keys",
    "check_socket",
    "check_ttl",
    "close_all_session",
    "count_session",
    "first_revoked",
    "members_session",
    "remove_keys",
    "revoke_session",
    "rotate_id",
    "schedule_close_all",
    "schedule_close_all_session",
    "send_session",
    "socket_keys",
)

T = TypeVar("T")

#: Reads the request's session-ws id (``None`` when the session has none).
IdGetter = Callable[[], Awaitable[str | None]]
#: Work to run once the response has been sent.
Work = Callable[[], Awaitable[object]]
#: Runs ``Work`` after the response (the ``str`` names it in the log if it fails). An
#: adapter builds one from the response it was given, checking the response's type then.
Schedule = Callable[[Work, str], None]


# ---------------------------------------------------------------------- checks
def check_ttl(ttl: float | None) -> None:
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0):
        raise ValueError(f"ttl must be None or a positive number of seconds, not {ttl!r}")


def _key_tuple(keys: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        return (check_key(keys),)
    if not isinstance(keys, Iterable):
        raise TypeError(f"keys must be a str or an iterable of str, not {type(keys).__name__}")
    return tuple(check_key(key) for key in keys)


def check_socket(
    keys: str | Iterable[str], data: Mapping[str, Any] | None
) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """A new socket's extra ``keys`` (a ``str`` is one key; no repeats; with the session's
    id at most :data:`MAX_KEYS_PER_SOCKET`) and a checked copy of its ``data``: checked
    before anything is read or changed, so bad ones fail before the upgrade."""
    extra = tuple(dict.fromkeys(_key_tuple(keys)))
    check_key_count(len(extra) + 1)
    return extra, None if data is None else check_data(data)


def socket_keys(session_id: str, extra: tuple[str, ...]) -> tuple[str, ...]:
    """The keys to register a socket under: its session's id first, then ``extra``."""
    return tuple(dict.fromkeys((session_id, *extra)))


async def first_revoked(registry: Registry, keys: Iterable[str]) -> str | None:
    """The first of ``keys`` that is revoked, if any (ask before the upgrade: 403)."""
    for key in keys:
        if await registry.is_revoked(key):
            return key
    return None


# ---------------------------------------------------------------------- one socket
async def add_keys(registry: Registry, handle: Handle, keys: str | Iterable[str]) -> None:
    """``registry.add_keys`` (which keeps the socket within :data:`MAX_KEYS_PER_SOCKET`);
    no keys: nothing to do."""
    wanted = _key_tuple(keys)
    if wanted:
        await registry.add_keys(handle, wanted)


async def remove_keys(registry: Registry, handle: Handle, keys: str | Iterable[str]) -> None:
    """``registry.remove_keys``; no keys: nothing to do."""
    unwanted = _key_tuple(keys)
    if unwanted:
        await registry.remove_keys(handle, unwanted)


# ---------------------------------------------------------------------- the session's sockets
async def _for_session(session_id: IdGetter, nothing: T, verb: Callable[[str], Awaitable[T]]) -> T:
    """``verb`` of the session's id; ``nothing`` when the session has none (its arguments
    were checked before)."""
    key = await session_id()
    return nothing if key is None else await verb(key)


async def close_all_session(
    registry: Registry,
    session_id: IdGetter,
    *,
    code: int,
    reason: str,
    exclude: Handle | str | None,
    confirm: bool,
    timeout: float | None,
    strict: bool,
) -> CloseReport:
    validate_close(code, reason)
    return await _for_session(
        session_id,
        CloseReport(0),
        lambda key: registry.close_all(
            key, code=code, reason=reason, exclude=exclude, confirm=confirm, timeout=timeout, strict=strict
        ),
    )


async def revoke_session(
    registry: Registry,
    session_id: IdGetter,
    *,
    ttl: float | None,
    code: int,
    reason: str,
    confirm: bool,
    timeout: float | None,
    strict: bool,
) -> CloseReport:
    validate_close(code, reason)
    check_ttl(ttl)
    return await _for_session(
        session_id,
        CloseReport(0),
        lambda key: registry.revoke(
            key, ttl=ttl, code=code, reason=reason, confirm=confirm, timeout=timeout, strict=strict
        ),
    )


async def send_session(
    registry: Registry,
    session_id: IdGetter,
    data: str | bytes,
    *,
    exclude: Handle | str | None,
    confirm: bool,
    timeout: float | None,
    strict: bool,
) -> SendReport:
    if not isinstance(data, str | bytes):
        raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
    return await _for_session(
        session_id,
        SendReport(0),
        lambda key: registry.send_all(
            key, data, exclude=exclude, confirm=confirm, timeout=timeout, strict=strict
        ),
    )


async def count_session(registry: Registry, session_id: IdGetter, *, timeout: float | None) -> Count:
    return await _for_session(session_id, Count(0, True), lambda key: registry.count(key, timeout=timeout))


async def members_session(
    registry: Registry, session_id: IdGetter, *, limit: int | None, timeout: float | None
) -> Members:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError("limit must be None or a positive int")
    return await _for_session(
        session_id, Members((), True), lambda key: registry.members(key, limit=limit, timeout=timeout)
    )


# ---------------------------------------------------------------------- after the response
def schedule_close_all(registry: Registry, schedule: Schedule, key: str, *, code: int, reason: str) -> None:
    """Close every socket of ``key`` once the response is sent; the arguments are checked
    now, in the handler, rather than later in the background."""
    validate_close(code, reason)
    _schedule_close(registry, schedule, check_key(key), code, reason)


def _schedule_close(registry: Registry, schedule: Schedule, key: str, code: int, reason: str) -> None:
    async def close() -> None:
        await registry.close_all(key, code=code, reason=reason)

    schedule(close, "close-all")


async def schedule_close_all_session(
    registry: Registry, session_id: IdGetter, schedule: Schedule, *, code: int, reason: str
) -> None:
    """The id is read now, so the handler may clear the session or assign a new id next."""
    validate_close(code, reason)
    key = await session_id()
    if key is not None:
        _schedule_close(registry, schedule, key, code, reason)


async def rotate_id(
    registry: Registry,
    session_id: IdGetter,
    new_id: Callable[[], Awaitable[str]],
    schedule: Schedule | None,
    *,
    code: int,
    reason: str,
    ttl: float | None,
) -> str:
    """Give the session a new id and revoke the old one: now, or once the response
    (carrying the new id's cookie) has been sent when ``schedule`` is given."""
    validate_close(code, reason)
    check_ttl(ttl)
    old = await session_id()
    new = await new_id()
    if old is not None and old != new:

        async def revoke_old() -> None:
            await registry.revoke(old, ttl=ttl, code=code, reason=reason)

        if schedule is None:
            await revoke_old()
        else:
            schedule(revoke_old, "revoke of a rotated id")
    return new
