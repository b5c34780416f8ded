"""aiohttp's ``WebSocketResponse`` as the core's ``Connection``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sessionws import validate_close

__all__ = ("AiohttpConnection",)


class AiohttpConnection:
    """Wrap a prepared :class:`aiohttp.web.WebSocketResponse` for the registry.

    ``close`` on a socket that is already closed (or was never prepared) does
    nothing. ``send`` sends text frames for ``str`` and binary frames for ``bytes``;
    sending to a closed socket raises aiohttp's error, which the registry logs.
    """

    __slots__ = ("websocket",)

    def __init__(self, websocket: web.WebSocketResponse[Any]) -> None:
        if not isinstance(websocket, web.WebSocketResponse):
            raise TypeError(f"expected an aiohttp WebSocketResponse, not {type(websocket).__name__}")
        self.websocket = websocket

    def __repr__(self) -> str:
        state = "closed" if self.websocket.closed else "open"
        return f"<AiohttpConnection {state}>"

    async def close(self, code: int, reason: str) -> None:
        validate_close(code, reason)
        websocket = self.websocket
        if websocket.closed or not websocket.prepared:
            return
        await websocket.close(code=code, message=reason.encode("utf-8"))

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.websocket.send_str(data)
        elif isinstance(data, bytes):
            await self.websocket.send_bytes(data)
        else:
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
