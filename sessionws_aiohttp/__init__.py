"""sessionws for aiohttp: a drop-in for ``aiohttp_session_ws``, cluster-wide.

::

    from sessionws import SessionRegistry
    from sessionws_aiohttp import session_ws, session_ws_middleware, setup

    app = web.Application(middlewares=[session_middleware(storage), session_ws_middleware])
    setup(app, SessionRegistry("redis://localhost:6379/0"))
"""

from __future__ import annotations

try:
    import aiohttp  # noqa: F401
    import aiohttp_session  # noqa: F401
except ModuleNotFoundError as error:  # name the fix, as the transports do
    raise ImportError(
        f"sessionws_aiohttp needs aiohttp and aiohttp-session ({error.name} is missing): "
        "pip install 'sessionws[aiohttp]'"
    ) from error

from ._app import get_registry, setup
from ._compat import SessionWSRegistry
from ._connection import AiohttpConnection
from ._middleware import session_ws_middleware
from ._verbs import (
    broadcast_ws,
    close_all_session_ws,
    close_all_ws,
    close_handle_ws,
    count_session_ws,
    count_ws,
    delete_session_ws_id,
    ensure_session_ws_id,
    get_session_ws_id,
    members_session_ws,
    members_ws,
    new_session_ws_id,
    revoke_session_ws,
    revoke_ws,
    rotate_session_ws_id,
    schedule_close_all_session_ws,
    schedule_close_all_ws,
    send_session_ws,
    send_to_ws,
    send_ws,
)
from ._websocket import add_keys_ws, get_ws_handle, remove_keys_ws, session_ws, set_data_ws

__all__ = (
    "AiohttpConnection",
    "SessionWSRegistry",
    "add_keys_ws",
    "broadcast_ws",
    "close_all_session_ws",
    "close_all_ws",
    "close_handle_ws",
    "count_session_ws",
    "count_ws",
    "delete_session_ws_id",
    "ensure_session_ws_id",
    "get_registry",
    "get_session_ws_id",
    "get_ws_handle",
    "members_session_ws",
    "members_ws",
    "new_session_ws_id",
    "remove_keys_ws",
    "revoke_session_ws",
    "revoke_ws",
    "rotate_session_ws_id",
    "schedule_close_all_session_ws",
    "schedule_close_all_ws",
    "send_session_ws",
    "send_to_ws",
    "send_ws",
    "session_ws",
    "session_ws_middleware",
    "set_data_ws",
    "setup",
)

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
