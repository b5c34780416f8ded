"""Chat rooms on Starlette: join and leave, group sends, direct messages, broadcast, who is online.

    pip install 'sessionws[starlette,redis]' uvicorn
    python examples/rooms/app.py --port 8001                      # one node, memory transport
    python examples/rooms/app.py --port 8001 --broker redis://127.0.0.1:6379/0 --secret S
    python examples/rooms/app.py --port 8002 --broker redis://127.0.0.1:6379/0 --secret S

Open ``http://127.0.0.1:8001/`` (it gives the browser its session cookie), then a socket
``ws://127.0.0.1:8001/ws?name=alice``; every node of one broker and ``--secret`` serves the
same rooms. The socket is registered under the session's id, with ``{"name": ...}`` as its
data; it greets with ``{"type": "welcome", "id": <its handle id>}`` and then takes JSON
messages:

* ``{"type": "join", "room": "lobby"}`` / ``{"type": "leave", "room": "lobby"}``: add or
  remove the key ``room:lobby`` (``add_keys_ws`` / ``remove_keys_ws``). After each join and
  leave (and when a socket in the room goes away), the room gets its member list
  (``members_ws``): ``{"type": "members", "room": "lobby", "members": [{"id": ..., "name": ...}]}``.
* ``{"type": "say", "room": "lobby", "text": "..."}``: to every socket of the room on every
  node (``send_ws``, confirmed: the sender learns how many sockets it reached).
* ``{"type": "direct", "to": "<handle id>", "text": "..."}``: to that one socket, wherever it
  is (``send_to_ws``); the sender learns whether it was ``found``.
* ``{"type": "broadcast", "text": "..."}``: to every socket of every node (``broadcast_ws``).
* ``{"type": "who", "room": "lobby"}``: the member list, to the asker only (as ``"type": "who"``).

Bad messages get ``{"type": "error", "error": ...}``; the socket stays open. The name is
whatever the client says: a real app takes it from its login.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionws import Handle, KeyRevokedError, SessionRegistry
from sessionws_starlette import (
    SessionWSMiddleware,
    add_keys_ws,
    broadcast_ws,
    members_ws,
    remove_keys_ws,
    send_to_ws,
    send_ws,
    session_ws,
    sessionws_lifespan,
)

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TEXT = 2000
#: Rooms one socket may be in at once (each is a key of the socket).
MAX_ROOMS = 20

PAGE = """<!doctype html>
<meta charset="utf-8"><title>rooms</title>
<p>name <input id="name" value="alice"> <button onclick="connect()">connect</button>
room <input id="room" value="lobby">
<button onclick="send({type: 'join', room: room.value})">join</button>
<button onclick="send({type: 'leave', room: room.value})">leave</button></p>
<p><input id="text" value="hi"> <button onclick="send({type: 'say', room: room.value, text: text.value})">
to the room</button> <button onclick="send({type: 'broadcast', text: text.value})">to everyone</button>
to socket <input id="to"> <button onclick="send({type: 'direct', to: to.value, text: text.value})">
direct</button></p>
<pre id="log"></pre>
<script>
let socket;
function connect() {
  const url = location.origin.replace("http", "ws") + "/ws?name=" + encodeURIComponent(name.value);
  socket = new WebSocket(url);
  socket.onmessage = (event) => { log.textContent += event.data + "\\n"; };
  socket.onclose = (event) => { log.textContent += "closed " + event.code + "\\n"; };
}
function send(message) { socket.send(JSON.stringify(message)); }
</script>
"""


def room_key(room: str) -> str:
    return f"room:{room}"


async def rooms_socket(websocket: WebSocket) -> None:
    """One socket: registered under its session's id while it is open, in the rooms it joins."""
    name = websocket.query_params.get("name", "")
    if not NAME.fullmatch(name):
        # Closed before the accept: the client sees HTTP 403.
        await websocket.close(code=1008, reason="pass ?name= (1-32 letters, digits, '_', '.' or '-')")
        return
    rooms: list[str] = []
    async with session_ws(websocket, data={"name": name}) as handle:
        await websocket.send_json({"type": "welcome", "id": handle.id, "name": name})
        while True:
            received = await websocket.receive()
            if received["type"] == "websocket.disconnect":
                break
            answer = await _answer(websocket, handle, received.get("text"))
            if handle.closing:  # closed by the registry (a logout elsewhere) meanwhile
                break
            await websocket.send_json(answer)
        rooms = _rooms_of(handle)
    # The socket is unregistered: the rooms it was in see it gone.
    for room in rooms:
        await announce_members(websocket, room)


async def _answer(websocket: WebSocket, handle: Handle, text: str | None) -> dict[str, Any]:
    try:
        if text is None:
            raise ValueError("send JSON text frames")
        message = json.loads(text)
        if not isinstance(message, dict):
            raise ValueError("a message must be a JSON object")
        return await _handle(websocket, handle, message)
    except (ValueError, KeyRevokedError) as error:
        logger.info("refused a message of %s: %s", handle.id, error)
        return {"type": "error", "error": str(error)}


async def _handle(websocket: WebSocket, handle: Handle, message: dict[str, Any]) -> dict[str, Any]:
    kind = message.get("type")
    name = _name_of(handle.data)
    if kind == "join":
        room = _room(message.get("room"))
        if room not in _rooms_of(handle) and len(_rooms_of(handle)) >= MAX_ROOMS:
            raise ValueError(f"a socket may be in at most {MAX_ROOMS} rooms: leave one first")
        await add_keys_ws(websocket, room_key(room))
        await announce_members(websocket, room)
        return {"type": "joined", "room": room}
    if kind == "leave":
        room = _room(message.get("room"))
        await remove_keys_ws(websocket, room_key(room))
        await announce_members(websocket, room)
        return {"type": "left", "room": room}
    if kind == "say":
        room = _room(message.get("room"))
        if room not in _rooms_of(handle):
            raise ValueError(f"join {room!r} before saying something there")
        payload = {"type": "message", "room": room, "from": name, "from_id": handle.id}
        payload["text"] = _text(message.get("text"))
        report = await send_ws(websocket, room_key(room), json.dumps(payload), confirm=True)
        return {"type": "sent", "room": room, "sockets": report.total, "complete": report.complete}
    if kind == "direct":
        to = message.get("to")
        if not isinstance(to, str):
            raise ValueError("'to' must be the id of a socket (from a member list)")
        payload = {"type": "direct", "from": name, "from_id": handle.id, "text": _text(message.get("text"))}
        delivered = await send_to_ws(websocket, to, json.dumps(payload))  # ValueError for a malformed id
        return {"type": "delivered", "to": to, "found": delivered.found, "complete": delivered.complete}
    if kind == "broadcast":
        payload = {
            "type": "broadcast",
            "from": name,
            "from_id": handle.id,
            "text": _text(message.get("text")),
        }
        await broadcast_ws(websocket, json.dumps(payload))
        return {"type": "broadcast_sent"}
    if kind == "who":
        return {**await member_list(websocket, _room(message.get("room"))), "type": "who"}
    raise ValueError(f"unknown message type {kind!r}: use join, leave, say, direct, broadcast or who")


async def member_list(websocket: WebSocket, room: str) -> dict[str, Any]:
    """Who is in ``room``, on every node: each socket's id and name."""
    listing = await members_ws(websocket, room_key(room))
    members = sorted(
        ({"id": member.handle_id, "name": _name_of(member.data)} for member in listing.members),
        key=lambda member: (member["name"] or "", member["id"] or ""),
    )
    return {"type": "members", "room": room, "members": members, "complete": listing.complete}


async def announce_members(websocket: WebSocket, room: str) -> None:
    """Send ``room`` its member list."""
    await send_ws(websocket, room_key(room), json.dumps(await member_list(websocket, room)))


def _rooms_of(handle: Handle) -> list[str]:
    return [key.removeprefix("room:") for key in handle.keys if key.startswith("room:")]


def _name_of(data: object) -> str | None:
    # Data comes from the client's socket: do not trust its shape.
    name = data.get("name") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) else None


def _room(value: object) -> str:
    if not isinstance(value, str) or not ROOM.fullmatch(value):
        raise ValueError("a room name is 1-32 letters, digits, '_' or '-'")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ValueError(f"text must be a string of 1-{MAX_TEXT} characters")
    return value


def create_app(broker: str = "memory://", *, secret: str = "change me") -> Starlette:
    """The rooms app, with a registry on ``broker`` (a transport URL)."""
    registry = SessionRegistry(broker)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def health(request: Request) -> Response:
        return JSONResponse({"healthy": registry.healthy, "node": registry.node_id})

    return Starlette(
        routes=[Route("/", page), Route("/health", health), WebSocketRoute("/ws", rooms_socket)],
        middleware=[
            # The signed session cookie, good on every node with the same secret; inside it,
            # the session-ws id is given on the page, before the first socket.
            Middleware(SessionMiddleware, secret_key=secret, session_cookie="rooms_session"),
            Middleware(SessionWSMiddleware, paths=["/"]),
        ],
        lifespan=sessionws_lifespan(registry),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Chat rooms with presence (Starlette).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--broker", default="memory://", help="transport URL (default: memory://)")
    parser.add_argument(
        "--secret", default=os.environ.get("ROOMS_SECRET", "change me"), help="shared by every node"
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(arguments.broker, secret=arguments.secret)
    uvicorn.run(app, host=arguments.host, port=arguments.port, log_level="info")


if __name__ == "__main__":
    main()
