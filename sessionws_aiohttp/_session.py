"""The aiohttp-session side: a new id's cookie on the 101 response.

aiohttp-session's middleware saves a changed session on plain responses only, never
on a websocket's 101. So the adapter notes when a request changed its session-ws id
(the middleware minting one, ``new_session_ws_id``, ``rotate_session_ws_id``...) and
``session_ws`` then saves the session on the upgrade response itself, through the
storage's public ``save_session``.
"""

from __future__ import annotations

import aiohttp_session
from aiohttp import web

__all__ = ("id_changed", "note_id_changed", "save_session_on")

_ID_CHANGED_KEY = web.RequestKey("sessionws_id_changed", bool)


def note_id_changed(request: web.Request) -> None:
    """Remember that this request gave its session a new id (or removed it)."""
    request[_ID_CHANGED_KEY] = True


def id_changed(request: web.Request) -> bool:
    return request.get(_ID_CHANGED_KEY) is True


async def save_session_on(request: web.Request, response: web.StreamResponse) -> None:
    """Save the request's session on ``response`` (a no-op without aiohttp-session).

    Browsers such as Safari ignore cookies on the upgrade: ensure the id earlier,
    with ``session_ws_middleware`` on the page's route.
    """
    storage = request.get(aiohttp_session.STORAGE_KEY)
    if isinstance(storage, aiohttp_session.AbstractStorage):
        session = await aiohttp_session.get_session(request)
        await storage.save_session(request, response, session)
