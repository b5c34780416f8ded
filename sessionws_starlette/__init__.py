"""sessionws for Starlette and FastAPI: websockets tied to the session, closed on demand.

``pip install sessionws[starlette]``. Run the registry with
``lifespan=sessionws_lifespan(registry)``, list ``SessionWSMiddleware`` inside
``SessionMiddleware``, and open websockets with ``async with session_ws(websocket):``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ModuleNotFoundError as error:  # name the fix, as the transports do
    raise ImportError(
        f"sessionws_starlette needs Starlette ({error.name} is missing): pip install 'sessionws[starlette]'"
    ) from error

from sessionws_starlette._middleware import EPHEMERAL_SCOPE_KEY, SessionWSMiddleware
from sessionws_starlette._state import (
    GUARD_STATE_KEY,
    ID_PROVIDER_STATE_KEY,
    REGISTRY_STATE_KEY,
    RunnableRegistry,
    get_guard,
    get_id_provider,
    get_registry,
    sessionws_lifespan,
    starlette_session,
)
from sessionws_starlette._verbs import (
    AfterResponse,
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
from sessionws_starlette._websocket import (
    HANDLE_SCOPE_KEY,
    MISSING_ID_REASON,
    StarletteConnection,
    add_keys_ws,
    get_ws_handle,
    remove_keys_ws,
    session_ws,
    set_data_ws,
)

__all__ = (
    "EPHEMERAL_SCOPE_KEY",
    "GUARD_STATE_KEY",
    "HANDLE_SCOPE_KEY",
    "ID_PROVIDER_STATE_KEY",
    "MISSING_ID_REASON",
    "REGISTRY_STATE_KEY",
    "AfterResponse",
    "RunnableRegistry",
    "SessionWSMiddleware",
    "StarletteConnection",
    "add_keys_ws",
    "broadcast_ws",
    "close_all_session_ws",
    "close_all_ws",
    "close_handle_ws",
    "count_session_ws",
    "count_ws",
    "delete_session_ws_id",
    "ensure_session_ws_id",
    "get_guard",
    "get_id_provider",
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
    "sessionws_lifespan",
    "set_data_ws",
    "starlette_session",
)

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
