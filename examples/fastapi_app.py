"""sessionws with FastAPI: every websocket of a session closes when it logs out, on every node.

    pip install 'sessionws[starlette]' fastapi uvicorn websockets  # uvicorn needs a websocket library
    python examples/fastapi_app.py                      # one node, memory transport
    SESSIONWS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_app:app --port 8001

Try it: ``GET /`` gives the session its id (the cookie), ``POST /login?user=alice`` logs in,
open ``ws://127.0.0.1:8000/ws`` with that cookie in one or more tabs or nodes, then
``POST /logout`` — every one of them closes right after the logout response.

The sessionws parts:

* ``lifespan=sessionws_lifespan(registry, lifespan)`` runs the registry for the app's
  lifetime, around your own lifespan, and hands it to every request (lifespan state);
* ``SessionWSMiddleware`` inside ``SessionMiddleware`` gives each session its id on
  ordinary pages, before the first websocket (browsers ignore cookies on the upgrade);
* ``session_ws(websocket)`` accepts and registers the websocket; here it is wrapped in a
  dependency that yields the handle, so the socket is unregistered when the endpoint ends;
* ``get_registry`` and ``ensure_session_ws_id`` are dependencies as they are.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, Request, WebSocket
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware

from sessionws import Handle, Registry, SessionRegistry
from sessionws_starlette import (
    SessionWSMiddleware,
    close_all_ws,
    count_session_ws,
    ensure_session_ws_id,
    get_registry,
    rotate_session_ws_id,
    schedule_close_all_session_ws,
    send_session_ws,
    session_ws,
    sessionws_lifespan,
)

RegistryDep = Annotated[Registry, Depends(get_registry)]
SessionWSId = Annotated[str, Depends(ensure_session_ws_id)]


async def session_socket(websocket: WebSocket) -> AsyncIterator[Handle]:
    """The endpoint's websocket, accepted and registered under the session's id and user."""
    user = websocket.session.get("user")
    async with session_ws(websocket, keys=[f"user:{user}"] if user else []) as handle:
        yield handle


SessionSocket = Annotated[Handle, Depends(session_socket)]


def create_app(transport: str = "memory://", *, secret_key: str = "change me", **options: Any) -> FastAPI:
    """The app, with its own registry on ``transport`` (``options`` go to the registry)."""
    registry = SessionRegistry(transport, **options)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Your own startup and shutdown; the state you yield is kept.
        yield {"started_by": "the example's lifespan"}

    app = FastAPI(
        lifespan=sessionws_lifespan(registry, lifespan),
        middleware=[
            # Order matters: SessionMiddleware outside (it loads and saves the cookie),
            # SessionWSMiddleware inside (it sees request.session). Static files and
            # health checks are left out, so they do not mint sessions.
            Middleware(SessionMiddleware, secret_key=secret_key),
            Middleware(SessionWSMiddleware, paths=["/", "/login"]),
        ],
    )

    @app.get("/")
    async def home(request: Request, session_ws_id: SessionWSId) -> dict[str, Any]:
        return {"session_ws_id": session_ws_id, "user": request.session.get("user")}

    @app.post("/login")
    async def login(request: Request, user: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
        request.session["user"] = user
        # A new id for the logged-in session; sockets of the old one close once this
        # response (with the new cookie) is out, and the old id is refused from now on.
        new_id = await rotate_session_ws_id(request, background_tasks)
        return {"user": user, "session_ws_id": new_id}

    @app.post("/logout")
    async def logout(request: Request, background_tasks: BackgroundTasks) -> dict[str, bool]:
        # FastAPI: pass the BackgroundTasks parameter (not a Response) to run after the response.
        await schedule_close_all_session_ws(request, background_tasks)
        request.session.clear()
        return {"logged_out": True}

    @app.post("/logout-everywhere")
    async def logout_everywhere(request: Request) -> dict[str, int]:
        """Close every websocket of this user, in every session (a password change)."""
        user = request.session.get("user")
        if not user:
            return {"closed": 0}
        report = await close_all_ws(request, f"user:{user}", code=4001, reason="signed out everywhere")
        return {"closed": report.closed_here}

    @app.post("/notify")
    async def notify(request: Request, text: str) -> dict[str, bool]:
        await send_session_ws(request, text)
        return {"sent": True}

    @app.get("/sockets")
    async def sockets(request: Request) -> dict[str, Any]:
        total, complete = await count_session_ws(request)
        return {"total": total, "complete": complete}

    @app.get("/health")
    async def health(registry: RegistryDep) -> dict[str, bool]:
        return {"healthy": registry.healthy}

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket, handle: SessionSocket) -> None:
        await websocket.send_json({"handle": handle.id, "user": websocket.session.get("user")})
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo {text}")

    return app


app = create_app(
    os.environ.get("SESSIONWS_URL", "memory://"),
    secret_key=os.environ.get("SESSION_SECRET", "change me"),
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
