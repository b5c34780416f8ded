"""A chat whose websockets log in after they connect (aiohttp, one or more nodes).

    pip install 'sessionws[aiohttp,redis]' cryptography
    python examples/chat/app.py --port 8001                      # one node, memory transport
    python examples/chat/app.py --port 8001 --broker redis://127.0.0.1:6379/0 --secret S
    python examples/chat/app.py --port 8002 --broker redis://127.0.0.1:6379/0 --secret S
    python examples/chat/worker.py --broker redis://127.0.0.1:6379/0 --to alice "hello"

Open ``http://127.0.0.1:8001/`` (it gives the browser its session cookie and a page with a
socket). The socket is registered under the session's id when it connects; it then logs
in over the socket itself::

    {"type": "auth", "user": "alice", "token": "<hex HMAC-SHA256 of 'alice' keyed with the secret>"}

and the server adds the key ``user:alice`` to it (``add_keys_ws``), so everything sent to
``user:alice`` reaches it, on whichever node it is. Logging in again as someone else
removes the old user's key first: a socket belongs to one user at a time and gets each
message once. ``{"type": "say", "to": "bob", "text": "..."}`` sends to every socket of bob;
``worker.py``, a separate process with a publish-only registry, does the same from outside
the web app (a bot, a job queue's consumer).

The token stands in for your own credentials: a real app checks a password, a signed
login token or an OAuth code here. Every node (and the worker) must use the same broker
and ``--secret`` (it also keys the encrypted session cookie, so a cookie is good on every
node).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
from typing import Any

import aiohttp_session
from aiohttp import WSMsgType, web
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from sessionws import Handle, KeyRevokedError, SessionRegistry
from sessionws_aiohttp import (
    add_keys_ws,
    get_registry,
    get_ws_handle,
    remove_keys_ws,
    send_ws,
    session_ws,
    session_ws_middleware,
    set_data_ws,
    setup,
)

logger = logging.getLogger(__name__)

#: User names: what may follow ``user:`` in a key.
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TEXT = 2000

PAGE = """<!doctype html>
<meta charset="utf-8"><title>chat</title>
<p>user <input id="user" value="alice"> token <input id="token" size="70">
<button onclick="send({type: 'auth', user: user.value, token: token.value})">log in</button></p>
<p>to <input id="to" value="bob"> <input id="text" value="hi">
<button onclick="send({type: 'say', to: to.value, text: text.value})">send</button></p>
<pre id="log"></pre>
<script>
const socket = new WebSocket(location.origin.replace("http", "ws") + "/ws");
socket.onmessage = (event) => { log.textContent += event.data + "\\n"; };
socket.onclose = (event) => { log.textContent += "closed " + event.code + "\\n"; };
function send(message) { socket.send(JSON.stringify(message)); }
</script>
"""


def user_token(secret: str, user: str) -> str:
    """The login token of ``user``: hex HMAC-SHA256 of the name, keyed with the app's secret."""
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


def user_key(user: str) -> str:
    """The key every socket of ``user`` is registered under once logged in."""
    return f"user:{user}"


SECRET_KEY = web.AppKey("chat_secret", str)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def health(request: web.Request) -> web.Response:
    registry = get_registry(request)
    return web.json_response({"healthy": registry.healthy, "node": registry.node_id})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """One chat socket: registered under the session's id, then under its user's key."""
    async with session_ws(request) as ws:
        handle = get_ws_handle(ws)
        await ws.send_json({"type": "hello", "id": handle.id})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                request_body = json.loads(message.data)
                if not isinstance(request_body, dict):
                    raise ValueError("a message must be a JSON object")
                answer = await _handle(request, handle, request_body)
            except (ValueError, KeyError, TypeError) as error:
                logger.info("refused a message of %s: %s", handle.id, error)
                answer = {"type": "error", "error": str(error)}
            if handle.closing:  # a close (say, a revoke of the user) raced the message
                break
            await ws.send_json(answer)
    return ws


async def _handle(request: web.Request, handle: Handle, message: dict[str, Any]) -> dict[str, Any]:
    kind = message.get("type")
    if kind == "auth":
        user = _user_name(message.get("user"))
        token = message.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(
            token, user_token(request.app[SECRET_KEY], user)
        ):
            raise ValueError("bad token: log in with your user name and its token")
        current = _user_of(handle)
        if current != user:
            # One user per socket: leave the old user's key before joining the new one, so
            # the socket never holds both (it would get the messages of each).
            if current is not None:
                await remove_keys_ws(request, user_key(current))
                await set_data_ws(request, None)
            try:
                await add_keys_ws(request, user_key(user))
            except KeyRevokedError:
                raise ValueError(f"{user} was logged out everywhere: get a new token") from None
            await set_data_ws(request, {"user": user})
        return {"type": "authed", "user": user, "id": handle.id}
    if kind == "say":
        sender = _user_of(handle)
        if sender is None:
            raise ValueError("log in first: send {'type': 'auth', 'user': ..., 'token': ...}")
        to = _user_name(message.get("to"))
        text = _text(message.get("text"))
        report = await send_ws(
            request,
            user_key(to),
            json.dumps({"type": "message", "from": sender, "to": to, "text": text}),
            confirm=True,
        )
        return {"type": "sent", "to": to, "sockets": report.total, "complete": report.complete}
    raise ValueError(f"unknown message type {kind!r}: use 'auth' or 'say'")


def _user_of(handle: Handle) -> str | None:
    data = handle.data
    user = data.get("user") if data is not None else None
    return user if isinstance(user, str) else None


def _user_name(value: object) -> str:
    if not isinstance(value, str) or not USER_NAME.fullmatch(value):
        raise ValueError("a user name is 1-64 letters, digits, '_', '.' or '-'")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ValueError(f"text must be a string of 1-{MAX_TEXT} characters")
    return value


def create_app(broker: str = "memory://", *, secret: str = "change me") -> web.Application:
    """The chat app, with a registry on ``broker`` (a transport URL)."""
    # The cookie is encrypted with a key derived from the secret, so every node reads it.
    cookie_key = hashlib.sha256(b"chat cookie:" + secret.encode()).digest()
    storage = EncryptedCookieStorage(cookie_key, cookie_name="chat_session", httponly=True, samesite="Lax")
    app = web.Application(
        middlewares=[aiohttp_session.session_middleware(storage), session_ws_middleware(paths=["/"])]
    )
    app[SECRET_KEY] = secret
    setup(app, SessionRegistry(broker))
    app.router.add_get("/", page)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", websocket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The in-band login chat (aiohttp).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--broker", default="memory://", help="transport URL (default: memory://)")
    parser.add_argument(
        "--secret", default=os.environ.get("CHAT_SECRET", "change me"), help="shared by every node"
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(
        create_app(arguments.broker, secret=arguments.secret), host=arguments.host, port=arguments.port
    )


if __name__ == "__main__":
    main()
